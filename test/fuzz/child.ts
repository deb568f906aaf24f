// A batch of fuzz cases in one process (started by runner.ts): each case's input is written to its
// own directory, fed to what reads it (a model load and a forward, a training run, a classifier
// load and a prediction), and reported as one JSON line on stdout: a 'start' line before it runs
// (so that a crash or a hang is pinned on it) and a 'done' line with its outcome after.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier, ErnieModel } from '../../lib/index'
import type { FuzzCase, Target } from './case'
import { FIXTURES } from './fixtures'
import { generateCase } from './generate'

export interface BatchArgs {
  seed: number
  /** Case ids to run, in order. */
  ids: number[]
  classifierDir: string
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

let shared: ErnieModel | undefined
async function sharedModel(): Promise<ErnieModel> {
  shared ??= await ErnieModel.fromPretrained(path.join(FIXTURES, 'ernie-tiny'))
  return shared
}

function write(dir: string, files: Record<string, string | Uint8Array | null>): void {
  for (const [name, content] of Object.entries(files)) {
    const file = path.join(dir, name)
    if (content === null) fs.rmSync(file, { force: true })
    else fs.writeFileSync(file, content)
  }
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
async function run(target: Target, dir: string, classifierDir: string): Promise<string | undefined> {
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
    fs.writeFileSync(file, target.content)
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
  for (const f of fs.readdirSync(classifierDir)) fs.copyFileSync(path.join(classifierDir, f), path.join(dir, f))
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
    const detail = await run(c.target, dir, args.classifierDir)
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
