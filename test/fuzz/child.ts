// A batch of fuzz cases in one process (started by runner.ts): each case's input is written to its
// own directory, fed to what reads it (a model load and a forward, a training run, a classifier
// load and a prediction), and reported as one JSON line on stdout: a 'start' line before it runs
// (so that a crash or a hang is pinned on it) and a 'done' line with its outcome after.
import { spawnSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier, ErnieModel, LoraAdapter, Tokenizer } from '../../lib/index'
import type { FileContent, FuzzCase, HfClassifierKind, Target } from './case'
import { ADAPTER_DIR, FIXTURES, tokenizerFiles } from './fixtures'
import { generateCase } from './generate'

export interface BatchArgs {
  seed: number
  /** Case ids to run, in order. */
  ids: number[]
  classifierDir: string
  /** The run's saved classifiers in their Hugging Face form only. */
  hfClassifierDirs: Record<HfClassifierKind, string>
  workDir: string
}

export type Outcome = 'accepted' | 'rejected' | 'garbage'

export interface CaseReport {
  event: 'done'
  id: number
  family: FuzzCase['family']
  verdict: FuzzCase['verdict']
  what: string
  why?: string
  outcome: Outcome
  /** The error thrown (rejected). */
  error?: { name: string; code: unknown; message: string }
  /** Whether the message contains one of the case's names. */
  named?: boolean
  /** What was wrong with an accepted input's result (garbage). */
  detail?: string
  ms: number
}

const PROBE_IDS = [1, 5, 6, 7, 8, 2]
const TEXTS = ['房间很干净，服务也周到', '太差了，不推荐']
// Text for the tokenizer cases: CJK, Latin, digits, spaces, emoji, special tokens written out.
const TOKENIZER_TEXTS = [...TEXTS, ' hello  world 123 😈 <s>x</s> <unk> <|begin_of_sentence|>', '']

let shared: ErnieModel | undefined
async function sharedModel(): Promise<ErnieModel> {
  shared ??= await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'))
  return shared
}

function write(dir: string, files: Record<string, FileContent | null>): void {
  for (const [name, content] of Object.entries(files)) {
    const file = path.join(dir, name)
    fs.rmSync(file, { force: true, recursive: true })
    if (content === null) continue
    if (typeof content === 'string' || content instanceof Uint8Array) fs.writeFileSync(file, content)
    else if (content.special === 'directory') fs.mkdirSync(file)
    else if (content.special === 'symlink') fs.symlinkSync(content.to, file)
    else {
      const made = spawnSync('mkfifo', [file])
      if (made.status !== 0) throw new Error(`fuzz: mkfifo ${file} failed: ${made.error?.message ?? made.stderr}`)
    }
  }
}

function copyDir(from: string, to: string, except: readonly string[] = []): void {
  for (const f of fs.readdirSync(from)) if (!except.includes(f)) fs.copyFileSync(path.join(from, f), path.join(to, f))
}

/** What is wrong with a loaded tokenizer's encodings of TOKENIZER_TEXTS: ids outside its vocabulary, text lost, lone surrogates. */
function tokenizerProblem(tok: Tokenizer): string | undefined {
  for (const text of TOKENIZER_TEXTS) {
    for (const addSpecialTokens of [false, true]) {
      const ids = tok.encode(text, { addSpecialTokens })
      const bad = ids.find((id) => !Number.isInteger(id) || id < 0 || id >= tok.vocabSize)
      if (bad !== undefined) return `${JSON.stringify(text)} encodes to id ${bad}, outside 0..${tok.vocabSize - 1}`
      if (text.trim() !== '' && ids.length === 0) return `${JSON.stringify(text)} encodes to nothing`
      const back = tok.decode(ids)
      if (typeof back !== 'string' || /\p{Cs}/u.test(back)) return `${JSON.stringify(text)} decodes to ${JSON.stringify(back)}`
    }
  }
  return undefined
}

function firstNonFinite(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i])) return i
  return -1
}

function checkPredictions(preds: Array<{ label: string; score: number; scores: Record<string, number> }>, labels: string[]): string | undefined {
  for (const p of preds) {
    const values = Object.values(p.scores)
    if (!labels.includes(p.label)) return `label ${JSON.stringify(p.label)} is not a class (${labels.join(', ')})`
    if (!values.every((v) => Number.isFinite(v) && v >= 0 && v <= 1) || !(p.score >= 0 && p.score <= 1)) return `scores ${JSON.stringify(p.scores)}`
  }
  return undefined
}

/** Runs a case's target in `dir`; returns what is wrong with an accepted result, or undefined. Throws what loading throws. */
async function run(target: Target, dir: string, { classifierDir, hfClassifierDirs }: BatchArgs): Promise<string | undefined> {
  if (target.kind === 'model') {
    for (const f of ['config.json', 'model.safetensors']) fs.copyFileSync(path.join(FIXTURES, target.fixture, f), path.join(dir, f))
    write(dir, target.files)
    const model = await ErnieModel.fromPretrained(dir, { tokenizer: false })
    try {
      const { logits } = await model.forward({ inputIds: [PROBE_IDS.slice(0, target.probeLength)] }, { output: ['logits'] })
      const bad = firstNonFinite(logits!)
      return bad >= 0 ? `logit ${bad} is ${logits![bad]}` : undefined
    } finally {
      await model.dispose()
    }
  }
  if (target.kind === 'ids') {
    const model = await sharedModel()
    const { logits } = await model.forward({ inputIds: target.inputIds, attentionMask: target.attentionMask } as never, { output: ['logits'] })
    const bad = firstNonFinite(logits!)
    return bad >= 0 ? `logit ${bad} is ${logits![bad]}` : undefined
  }
  if (target.kind === 'data') {
    const file = path.join(dir, target.file)
    write(dir, { [target.file]: target.content })
    const clf = new ErnieClassifier({ model: await sharedModel(), method: 'head' })
    try {
      const result = await clf.fit(file, { epochs: 1 })
      const train = result.data.train
      if (train.examples !== target.examples || train.skipped.count !== 0)
        return `${train.examples} examples read and ${train.skipped.count} skipped, of ${target.examples} records`
      return checkPredictions(await clf.predict(TEXTS), clf.labels!)
    } finally {
      await clf.dispose()
    }
  }
  if (target.kind === 'adapter') {
    copyDir(ADAPTER_DIR, dir)
    write(dir, target.files)
    const model = await sharedModel()
    const adapter = await LoraAdapter.load(dir, model)
    try {
      const { logits } = await model.forward({ inputIds: [PROBE_IDS] }, { output: ['logits'], adapter })
      const bad = firstNonFinite(logits!)
      return bad >= 0 ? `logit ${bad} is ${logits![bad]}` : undefined
    } finally {
      adapter.dispose()
    }
  }
  if (target.kind === 'tokenizer') {
    for (const [name, content] of Object.entries(tokenizerFiles(target.form))) fs.writeFileSync(path.join(dir, name), content)
    write(dir, target.files)
    return tokenizerProblem(await Tokenizer.fromDirectory(dir))
  }
  if (target.kind === 'hf-classifier') copyDir(hfClassifierDirs[target.source], dir)
  else copyDir(classifierDir, dir)
  write(dir, target.files)
  const clf = await ErnieClassifier.load(dir)
  try {
    return checkPredictions(await clf.predict(TEXTS), clf.labels!)
  } finally {
    await clf.dispose()
  }
}

async function runCase(c: FuzzCase, args: BatchArgs): Promise<CaseReport> {
  const dir = path.join(args.workDir, `case-${c.id}`)
  fs.mkdirSync(dir, { recursive: true })
  const started = performance.now()
  const report = (r: Pick<CaseReport, 'outcome' | 'error' | 'named' | 'detail'>): CaseReport => ({
    event: 'done',
    id: c.id,
    family: c.family,
    verdict: c.verdict,
    what: c.what,
    ...(c.why ? { why: c.why } : {}),
    ...r,
    ms: Math.round(performance.now() - started),
  })
  try {
    const detail = await run(c.target, dir, args)
    return report(detail === undefined ? { outcome: 'accepted' } : { outcome: 'garbage', detail })
  } catch (e) {
    const err = e instanceof Error ? e : new Error(String(e))
    const names = c.target.kind === 'ids' ? c.names : c.names.map((n) => path.join(dir, n))
    return report({
      outcome: 'rejected',
      error: { name: err.name, code: (err as { code?: unknown }).code, message: err.message.slice(0, 600) },
      named: names.some((n) => err.message.includes(n)),
    })
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * The runner's own test (fuzz.test.ts) makes a child crash, exit or hang on given case ids, as a
 * bug would: ERNIE_FUZZ_SELFTEST='{"crash": id, "exit": id, "hang": id}'.
 */
async function misbehave(id: number): Promise<void> {
  const plan = JSON.parse(process.env.ERNIE_FUZZ_SELFTEST ?? '{}') as Record<string, number>
  if (plan.crash === id) process.kill(process.pid, 'SIGKILL')
  if (plan.exit === id) process.exit(0)
  if (plan.hang === id) await new Promise(() => setInterval(() => {}, 1000))
}

async function main(): Promise<void> {
  const args = JSON.parse(process.argv[2]) as BatchArgs
  for (const id of args.ids) {
    const c = generateCase(args.seed, id, args)
    process.stdout.write(JSON.stringify({ event: 'start', id, family: c.family, verdict: c.verdict, what: c.what }) + '\n')
    await misbehave(id)
    process.stdout.write(JSON.stringify(await runCase(c, args)) + '\n')
  }
  await shared?.dispose()
  process.stdout.write(JSON.stringify({ event: 'end' }) + '\n')
}

main().catch((e) => {
  process.stderr.write(`fuzz child: ${e instanceof Error ? e.stack : String(e)}\n`)
  process.exit(70)
})
