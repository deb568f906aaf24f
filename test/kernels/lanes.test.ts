// The turns inference forwards take at the cores (lib/util/turns.ts), and the native lane
// threads single-threaded forwards run on (native/cpu/lanes.h, native/addon/lane_job.cc): order,
// capacity, results identical to forwards run one at a time, and a process that exits cleanly
// with lane jobs in flight or done.
import { spawn } from 'node:child_process'
import * as path from 'node:path'
import { Worker } from 'node:worker_threads'
import t from 'tap'

import { ErnieModel, kernels } from '../../lib/index'
import { bundledModelDir } from '../../lib/classifier/bundled'
import { Turns } from '../../lib/util/turns'

const tick = (ms: number) => new Promise((r) => setTimeout(r, ms))

t.test('Turns: never more held than there are, granted in the order asked, a whole-pool call waiting for all', async (t) => {
  const lanes = new Turns(() => 3)
  let held = 0
  let most = 0
  const order: string[] = []
  const job = (name: string, want: number, ms: number) =>
    lanes.hold(want, async () => {
      order.push(name)
      held += Math.min(want, 3)
      most = Math.max(most, held)
      await tick(ms)
      held -= Math.min(want, 3)
      return name
    })
  const results = await Promise.all([job('a', 1, 30), job('b', 1, 10), job('c', 1, 10), job('all', Infinity, 5), job('d', 1, 1), job('e', 2, 1)])
  t.same(results, ['a', 'b', 'c', 'all', 'd', 'e'], 'each caller gets its own result')
  t.equal(most, 3, 'never more than 3 lanes held')
  t.same(order, ['a', 'b', 'c', 'all', 'd', 'e'], 'started in the order asked: d waits behind the whole-pool call')
  t.equal(lanes.waiting, 0)
})

t.test('Turns: an error is passed on and frees the lane', async (t) => {
  const lanes = new Turns(() => 1)
  await t.rejects(
    lanes.hold(1, async () => {
      throw new Error('boom')
    }),
    { message: 'boom' },
  )
  t.equal(await lanes.hold(1, async () => 7), 7, 'the lane was freed')
})

t.test('native lanes: many single-threaded forwards at once give, bit for bit, what each gives alone', async (t) => {
  const model = await ErnieModel.fromPretrained(bundledModelDir()!)
  t.teardown(() => model.dispose())
  const calls = 3 * kernels.numThreads() + 1 // more than the lanes: some queue natively
  const inputs = Array.from({ length: calls }, (_, i) => {
    const B = 1 + (i % 3)
    const T = 5 + ((i * 7) % 23)
    const data = Int32Array.from({ length: B * T }, (_, k) => 3 + ((k * 31 + i * 17) % 7000))
    return { inputIds: { data, shape: [B, T] as [number, number] } }
  })
  const alone: Float32Array[] = []
  for (const input of inputs) alone.push((await model.forward(input, { output: ['pooled'], singleThread: true })).pooled!)
  const together = await Promise.all(inputs.map((input) => model.forward(input, { output: ['pooled'], singleThread: true })))
  together.forEach((r, i) => t.same(r.pooled, alone[i], `call ${i}`))
  t.ok(
    alone.every((p) => p.every(Number.isFinite) && p.some((v) => v !== 0)),
    'real, non-zero outputs',
  )
})

/** Runs a child node script (its source) with the package built beside it; resolves with how it ended. */
function runChild(source: string): Promise<{ code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; ms: number }> {
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  const started = Date.now()
  const child = spawn(process.execPath, [...loader, '-e', source], { stdio: ['ignore', 'pipe', 'pipe'], cwd: path.join(__dirname, '..', '..') })
  let stdout = ''
  let stderr = ''
  child.stdout.on('data', (d) => (stdout += d))
  child.stderr.on('data', (d) => (stderr += d))
  const timer = setTimeout(() => child.kill('SIGKILL'), 60_000)
  return new Promise((resolve) =>
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({ code, signal, stdout, stderr, ms: Date.now() - started })
    }),
  )
}

const CHILD_PRELUDE = `
const { ErnieModel } = require('./lib/index')
const { bundledModelDir } = require('./lib/classifier/bundled')
const forwards = (model, n) => Array.from({ length: n }, (_, i) =>
  model.forward({ inputIds: [Array.from({ length: 40 + i }, (_, k) => 5 + k)] }, { output: ['pooled'], singleThread: true }))
`

t.test('lane jobs keep the process alive until they are answered, and not after', async (t) => {
  // nothing else holds the event loop while the forwards run: they must, and must stop holding it
  const r = await runChild(`${CHILD_PRELUDE}
ErnieModel.fromPretrained(bundledModelDir()).then((model) =>
  Promise.all(forwards(model, 12)).then((outs) => console.log('answered', outs.length)))
`)
  t.same({ code: r.code, signal: r.signal }, { code: 0, signal: null }, `exit 0 (${r.ms} ms) ${r.stderr}`)
  t.equal(r.stdout.trim(), 'answered 12', 'every forward answered before the process ended')
})

t.test('process.exit with lane jobs running and queued ends cleanly', async (t) => {
  const r = await runChild(`${CHILD_PRELUDE}
ErnieModel.fromPretrained(bundledModelDir()).then((model) => {
  const calls = forwards(model, 40)
  calls[0].then(() => process.exit(0))
})
`)
  t.same({ code: r.code, signal: r.signal }, { code: 0, signal: null }, `exit 0, no crash ${r.stderr}`)
})

t.test('worker threads terminated while their forwards run (lanes and libuv\'s pool): the process carries on, the main thread\'s calls still answer', async (t) => {
  // Before: node-addon-api threw out of the completion callback of a stopping environment, and the process aborted.
  const model = await ErnieModel.fromPretrained(bundledModelDir()!)
  t.teardown(() => model.dispose())
  for (const singleThread of [true, false])
    for (let i = 0; i < 4; i++) {
      const worker = new Worker(path.join(__dirname, 'lanes-worker.ts'), { workerData: { singleThread } })
      const fromWorker = await new Promise<number[]>((resolve, reject) => {
        worker.once('message', resolve)
        worker.once('error', reject)
      })
      await tick(3 * i) // 40 forwards queued or running, some answered
      await worker.terminate()
      const here = await model.forward({ inputIds: [[5, 6, 7, 8]] }, { output: ['pooled'], singleThread })
      t.same(Array.from(here.pooled!), fromWorker, `${singleThread ? 'lanes' : 'pool'}, worker ${i} terminated after ${3 * i} ms: the worker's answer here, bit for bit`)
    }
})
