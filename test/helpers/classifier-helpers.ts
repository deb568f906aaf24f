// Shared pieces of the classifier tests: fixture paths, a tiny random model with the ernie-tiny
// tokenizer, and the ChnSentiCorp slice's texts.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { main, type CliIo } from '../../lib/cli/main'
import { ErnieClassifier } from '../../lib/classifier/classifier'
import { ErnieModel } from '../../lib/model/index'

export const FIXTURES = path.join(__dirname, '..', 'fixtures')
export const TINY = path.join(FIXTURES, 'ernie-tiny')
export const DATA = path.join(FIXTURES, 'chnsenticorp')
export const TRAIN = path.join(DATA, 'train.tsv')
export const DEV = path.join(DATA, 'dev.tsv')
export const TEST = path.join(DATA, 'test.tsv')

/** Texts that must behave: emoji only, whitespace only, empty, very long, mixed scripts. */
export const ODD_TEXTS = ['😀😀😀', '   \t ', '', '房间'.repeat(2000), 'The room was great 房间很干净!', '这家酒店的服务很好', '房间很脏，不推荐']

/** A fresh temporary directory, removed when the test ends. */
export function tempDir(t: { teardown(fn: () => void): void }, prefix = 'ernie-clf-'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** A head classifier on ernie-tiny fitted one epoch on `data` and saved in a temporary `saved` (the caller disposes it). */
export async function savedTinyClassifier(
  t: { teardown(fn: () => void): void },
  data: { text: string; label: number }[],
): Promise<{ dir: string; saved: string; clf: ErnieClassifier }> {
  const dir = tempDir(t)
  const saved = path.join(dir, 'saved')
  const clf = new ErnieClassifier({ model: TINY, method: 'head' })
  await clf.fit(data, { epochs: 1 })
  await clf.save(saved)
  return { dir, saved, clf }
}

/** The texts and 0/1 labels of a fixture TSV (label<TAB>text_a with a header). */
export function readTsv(file: string): { texts: string[]; labels: number[] } {
  const rows = fs.readFileSync(file, 'utf8').trim().split('\n').slice(1)
  return { texts: rows.map((r) => r.slice(r.indexOf('\t') + 1)), labels: rows.map((r) => Number(r.slice(0, r.indexOf('\t')))) }
}

/** A randomly initialised one-layer ERNIE-4.5 with ernie-tiny's vocabulary (pass tokenizer: TINY). */
export function tinyRandomModel(seed = 1, hidden = 32): ErnieModel {
  return ErnieModel.random(
    {
      hidden_size: hidden,
      intermediate_size: hidden * 2,
      num_hidden_layers: 1,
      num_attention_heads: 2,
      num_key_value_heads: 1,
      head_dim: hidden / 2,
      vocab_size: 6016,
      rms_norm_eps: 1e-5,
      rope_theta: 500000,
      tie_word_embeddings: true,
      model_type: 'ernie4_5',
      architectures: ['Ernie4_5ForCausalLM'],
    },
    { seed },
  )
}

/** The majority class's share of a labelled set (the accuracy of always guessing it). */
export function majorityShare(labels: number[]): number {
  const counts = new Map<number, number>()
  for (const y of labels) counts.set(y, (counts.get(y) ?? 0) + 1)
  return Math.max(...counts.values()) / labels.length
}

/**
 * The label distribution's entropy (nats): the loss of the best prediction that ignores the text
 * (the labels' own frequencies). A classifier whose mean loss is not below it has learned nothing.
 */
export function labelEntropy(labels: number[]): number {
  const counts = new Map<number, number>()
  for (const y of labels) counts.set(y, (counts.get(y) ?? 0) + 1)
  return -[...counts.values()].reduce((h, c) => h + (c / labels.length) * Math.log(c / labels.length), 0)
}

export interface CliRun {
  code: number | null
  stdout: string
  stderr: string
}

/**
 * Runs the command line in a child process (the TypeScript sources, through tap's loader), as a
 * user would: `input` is written to its stdin; `bin` may point at a copy of the package.
 */
export function runCli(args: string[], options: { input?: string; bin?: string; cwd?: string } = {}): Promise<CliRun> {
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  const bin = options.bin ?? path.join(__dirname, '..', '..', 'lib', 'cli', 'bin.ts')
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...loader, bin, ...args], { stdio: ['pipe', 'pipe', 'pipe'], cwd: options.cwd })
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (d) => (stdout += d))
    child.stderr.on('data', (d) => (stderr += d))
    child.on('error', reject)
    child.on('close', (code) => resolve({ code, stdout, stderr }))
    child.stdin.end(options.input ?? '')
  })
}

/** Runs the command line's main() in this process, capturing what it prints. */
export async function runMain(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  let stdout = ''
  let stderr = ''
  const io: CliIo = { stdout: { write: (x: string) => (stdout += x) }, stderr: { write: (x: string) => (stderr += x) }, stdin: process.stdin }
  const code = await main(args, io)
  return { code, stdout, stderr }
}
