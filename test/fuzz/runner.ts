// Runs fuzz cases in child processes (child.ts), a batch each, a few at once, and judges them:
// no crash (a child killed by a signal or exiting mid-batch), no hang (a batch past its time),
// no silent acceptance (a 'reject' case that loaded, an 'accept' case computing non-finite
// numbers) and every rejection a typed error naming its file. A crash or hang is pinned on the
// case that had started and not finished; the rest of its batch runs in a new child.
import { spawn } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'

import { ErnieClassifier } from '../../lib/index'
import type { HfClassifierKind } from './case'
import type { BatchArgs, CaseReport } from './child'
import { FIXTURES, trainingLines } from './fixtures'

const CHILD = path.join(__dirname, 'child.ts')
// A child that has not started its first case by then is stuck before the cases (a hang too).
const STARTUP_TIMEOUT_MS = 300_000

export interface FuzzOptions {
  seed: number
  count: number
  /** Cases per child process (default 50). */
  batchSize?: number
  /** Children at once (default 2). */
  jobs?: number
  /**
   * A batch whose cases are still running this long after its first one started is killed, and
   * the case in flight reported as a hang (default 120 s; a batch takes a few seconds).
   */
  batchTimeoutMs?: number
  /** Called after each batch with the cases done so far. */
  onProgress?: (done: number, total: number) => void
}

export interface Failure {
  id: number
  family: string
  what: string
  problem: string
}

export interface FuzzRun {
  reports: CaseReport[]
  failures: Failure[]
  /** Cases that crashed or hung (also in failures). */
  crashes: Failure[]
  hangs: Failure[]
}

/** The node arguments that load TypeScript, as this process was started (tap's loader), or the loader itself. */
function loaderArgs(): string[] {
  const own = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  return own.length > 0 ? own : ['--import=@tapjs/typescript/import']
}

/** A classifier saved once per run: method 'head' on ernie-tiny, trained on a few fixture records. */
export async function saveBaseClassifier(dir: string): Promise<void> {
  const lines = trainingLines()
  const data = [...lines.filter((l) => l.label === 0).slice(0, 6), ...lines.filter((l) => l.label === 1).slice(0, 6)]
  const clf = new ErnieClassifier({ model: path.join(FIXTURES, 'ernie-tiny'), method: 'head', seed: 7 })
  try {
    await clf.fit(data, { epochs: 5 })
    await clf.save(dir)
  } finally {
    await clf.dispose()
  }
}

/**
 * A classifier saved with method `kind` on ernie-tiny, then stripped to its Hugging Face form (the
 * files transformers / PEFT read: config.json, the weights or the adapter, the tokenizer):
 * classifier.json and this package's own head file removed.
 */
export async function saveHfClassifier(kind: HfClassifierKind, dir: string): Promise<void> {
  const lines = trainingLines()
  const data = [...lines.filter((l) => l.label === 0).slice(0, 4), ...lines.filter((l) => l.label === 1).slice(0, 4)]
  const clf = new ErnieClassifier({ model: path.join(FIXTURES, 'ernie-tiny'), method: kind, seed: 7 })
  try {
    await clf.fit(data, { epochs: 1 })
    await clf.save(dir)
  } finally {
    await clf.dispose()
  }
  for (const f of ['classifier.json', 'head.safetensors', 'report.html']) fs.rmSync(path.join(dir, f), { force: true })
}

/**
 * Whether a rejection is what the spec asks: an error with an ERR_ code (or the io layer's
 * FileError, whose EISDIR is Node's own code for a directory in a file's place) whose message
 * names the file (or argument).
 */
function typedAndNamed(r: CaseReport): string | undefined {
  const e = r.error!
  if (typeof e.code !== 'string' || !(e.code.startsWith('ERR_') || (e.name === 'FileError' && e.code === 'EISDIR'))) return `untyped error (${e.name}, code ${JSON.stringify(e.code)}): ${e.message}`
  if (!r.named) return `${e.code} does not name the file: ${e.message}`
  return undefined
}

/** What is wrong with a case's outcome given its verdict, or undefined. */
export function judge(r: CaseReport): string | undefined {
  if (r.outcome === 'garbage') return `${r.verdict === 'reject' ? 'silent acceptance' : 'loaded'} with a bad result: ${r.detail}`
  if (r.verdict === 'reject') return r.outcome === 'accepted' ? 'silent acceptance: loaded and computed' : typedAndNamed(r)
  if (r.verdict === 'accept') return r.outcome === 'rejected' ? `a harmless variant refused: ${r.error!.name} ${String(r.error!.code)}: ${r.error!.message}` : undefined
  return r.outcome === 'rejected' ? typedAndNamed(r) : undefined
}

interface BatchResult {
  reports: CaseReport[]
  /** The case that crashed or hung, with what happened; the ids after it did not run. */
  stopped?: { id: number; family: string; what: string; problem: string; kind: 'crash' | 'hang' }
}

function runBatch(args: BatchArgs, timeoutMs: number): Promise<BatchResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...loaderArgs(), CHILD, JSON.stringify(args)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, HF_HUB_OFFLINE: '1', TS_NODE_TRANSPILE_ONLY: '1' },
    })
    const reports: CaseReport[] = []
    let started: { id: number; family: string; what: string } | undefined
    let ended = false
    let out = ''
    let stderr = ''
    let timedOut = false
    const kill = () => {
      timedOut = true
      child.kill('SIGKILL')
    }
    // loading TypeScript and the library takes seconds on a busy machine: the batch's clock starts with its first case
    let timer = setTimeout(kill, STARTUP_TIMEOUT_MS)
    child.stdout.setEncoding('utf8')
    child.stdout.on('data', (d: string) => {
      out += d
      let nl
      while ((nl = out.indexOf('\n')) >= 0) {
        const line = out.slice(0, nl)
        out = out.slice(nl + 1)
        if (!line.startsWith('{')) continue // a library's own output
        const msg = JSON.parse(line)
        if (msg.event === 'start') {
          if (started === undefined && reports.length === 0) {
            clearTimeout(timer)
            timer = setTimeout(kill, timeoutMs)
          }
          started = msg
        }
        else if (msg.event === 'done') {
          reports.push(msg)
          started = undefined
        } else if (msg.event === 'end') ended = true
      }
    })
    child.stderr.setEncoding('utf8')
    child.stderr.on('data', (d: string) => (stderr = (stderr + d).slice(-4000)))
    child.on('error', reject)
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      if (ended && code === 0) return resolve({ reports })
      // the case in flight, or (between cases) the next one
      const doneIds = new Set(reports.map((r) => r.id))
      const id = started?.id ?? args.ids.find((i) => !doneIds.has(i))
      if (id === undefined) return resolve({ reports })
      const how = timedOut ? `no result after ${timeoutMs} ms (a hang)` : signal ? `killed by ${signal}` : `exited with code ${code} mid-batch`
      resolve({
        reports,
        stopped: { id, family: started?.family ?? '?', what: started?.what ?? '?', problem: `${how}; stderr: ${stderr.trim().slice(-1500)}`, kind: timedOut ? 'hang' : 'crash' },
      })
    })
  })
}

/** Runs `count` cases (ids 0..count-1) of `seed` and judges each. */
export async function runFuzz(o: FuzzOptions): Promise<FuzzRun> {
  const batchSize = o.batchSize ?? 50
  const jobs = o.jobs ?? 2
  const timeoutMs = o.batchTimeoutMs ?? 120_000
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-fuzz-'))
  try {
    const classifierDir = path.join(root, 'classifier')
    await saveBaseClassifier(classifierDir)
    const hfClassifierDirs = { lora: path.join(root, 'hf-lora'), full: path.join(root, 'hf-full') }
    for (const kind of ['lora', 'full'] as const) await saveHfClassifier(kind, hfClassifierDirs[kind])
    const queue: number[][] = []
    for (let i = 0; i < o.count; i += batchSize) queue.push(Array.from({ length: Math.min(batchSize, o.count - i) }, (_, k) => i + k))
    const reports: CaseReport[] = []
    const crashes: Failure[] = []
    const hangs: Failure[] = []
    let batchNo = 0
    const worker = async () => {
      for (let ids = queue.shift(); ids; ids = queue.shift()) {
        const workDir = path.join(root, `batch-${batchNo++}`)
        while (ids.length > 0) {
          const r = await runBatch({ seed: o.seed, ids, classifierDir, hfClassifierDirs, workDir }, timeoutMs)
          reports.push(...r.reports)
          if (!r.stopped) break
          const { kind, ...failure } = r.stopped
          ;(kind === 'hang' ? hangs : crashes).push(failure)
          ids = ids.slice(ids.indexOf(r.stopped.id) + 1)
        }
        fs.rmSync(workDir, { recursive: true, force: true })
        o.onProgress?.(reports.length + crashes.length + hangs.length, o.count)
      }
    }
    await Promise.all(Array.from({ length: jobs }, worker))
    reports.sort((a, b) => a.id - b.id)
    const failures: Failure[] = [...crashes, ...hangs]
    for (const r of reports) {
      const problem = judge(r)
      if (problem) failures.push({ id: r.id, family: r.family, what: r.what, problem })
    }
    failures.sort((a, b) => a.id - b.id)
    return { reports, failures, crashes, hangs }
  } finally {
    fs.rmSync(root, { recursive: true, force: true })
  }
}

/** Counts by family and outcome (and verdict), for reports. */
export function summarize(run: FuzzRun): Record<string, Record<string, number>> {
  const table: Record<string, Record<string, number>> = {}
  const add = (family: string, key: string) => {
    table[family] ??= {}
    table[family][key] = (table[family][key] ?? 0) + 1
  }
  for (const r of run.reports) add(r.family, `${r.verdict}->${r.outcome}`)
  for (const f of run.crashes) add(f.family, 'crash')
  for (const f of run.hangs) add(f.family, 'hang')
  return table
}
