// Learning-rate schedules against transformers' formulas, and the named-parameter optimisers
// against float64 references (AdamW, SGD with momentum), 8-bit AdamW's state layout, bf16
// compute copies, and exact continuation through state() / loadState().
import t from 'tap'
import { createSchedule, Optimizer, warmupStepsOf, type OptimizerKind, type OptimizerStateMeta } from '../../lib/train/index'
import { setNumThreads } from '../../lib/kernels/index'
import { randomF32, relErr, toBf16 } from '../helpers/helpers'
import { refAdamw, refSgd, type AdamHyper } from '../helpers/reference'

setNumThreads(1)

// transformers/optimization.py, written out again here.
function hfFactor(kind: string, step: number, warmup: number, total: number, cycles = 0.5): number {
  if (kind === 'constant') return step < warmup ? step / Math.max(1.0, warmup) : 1.0
  if (step < warmup) return step / Math.max(1, warmup)
  if (kind === 'linear') return Math.max(0.0, (total - step) / Math.max(1, total - warmup))
  const progress = (step - warmup) / Math.max(1, total - warmup)
  return Math.max(0.0, 0.5 * (1.0 + Math.cos(Math.PI * cycles * 2.0 * progress)))
}

t.test('schedules follow transformers: constant, linear, cosine with warmup steps or ratio', async (t) => {
  const lr = 3e-4
  for (const kind of ['constant', 'linear', 'cosine'] as const)
    for (const total of [1, 7, 100])
      for (const warm of [{}, { warmupSteps: 3 }, { warmupRatio: 0.1 }, { warmupRatio: 0.5 }]) {
        const s = createSchedule({ kind, lr, totalSteps: total, ...warm })
        const warmup = 'warmupSteps' in warm ? warm.warmupSteps! : 'warmupRatio' in warm ? Math.ceil(total * warm.warmupRatio!) : 0
        t.equal(s.warmupSteps, warmup)
        let worst = 0
        for (let step = 0; step <= total + 2; step++) worst = Math.max(worst, Math.abs(s.at(step) - lr * hfFactor(kind, step, warmup, total)))
        t.ok(worst <= 1e-15, `${kind}, ${total} steps, ${JSON.stringify(warm)}: max deviation ${worst}`)
      }
  // a few values by hand
  const lin = createSchedule({ kind: 'linear', lr: 1, totalSteps: 110, warmupSteps: 10 })
  t.same([0, 5, 10, 60, 110, 200].map((s) => lin.at(s)), [0, 0.5, 1, 0.5, 0, 0])
  const cos = createSchedule({ kind: 'cosine', lr: 2, totalSteps: 20, warmupRatio: 0.05 })
  t.equal(cos.warmupSteps, 1)
  t.equal(cos.at(0), 0)
  t.equal(cos.at(1), 2)
  t.ok(Math.abs(cos.at(10.5) - 1) < 1e-12, 'half way down the cosine: half the rate')
  t.equal(cos.at(20), 0)
  const twoWaves = createSchedule({ kind: 'cosine', lr: 1, totalSteps: 100, numCycles: 1 })
  t.ok(Math.abs(twoWaves.at(50)) < 1e-12 && Math.abs(twoWaves.at(100) - 1) < 1e-12, 'numCycles 1: down and back up')
  t.equal(createSchedule({ kind: 'constant', lr: 0.1, totalSteps: 10 }).at(9), 0.1)
  t.equal(warmupStepsOf({ totalSteps: 95, warmupRatio: 0.1 }), 10, 'ceil(ratio * total)')
  t.equal(warmupStepsOf({ totalSteps: 95, warmupSteps: 4, warmupRatio: 0.5 }), 4, 'warmupSteps wins')

  t.throws(() => createSchedule({ kind: 'step' as 'linear', lr: 1, totalSteps: 1 }), RangeError)
  t.throws(() => createSchedule({ lr: -1, totalSteps: 1 }), RangeError)
  t.throws(() => createSchedule({ lr: 1, totalSteps: 1.5 }), RangeError)
  t.throws(() => createSchedule({ lr: 1, totalSteps: 10, warmupRatio: 2 }), RangeError)
  t.throws(() => createSchedule({ lr: 1, totalSteps: 10, warmupSteps: -1 }), RangeError)
  const params = new Map([['w', new Float32Array(4)]])
  t.throws(() => new Optimizer(params, { beta1: 1 }), { name: 'RangeError', message: /beta1 must be a number in \[0, 1\)/ })
  t.throws(() => new Optimizer(params, { beta2: -0.1 }), { name: 'RangeError', message: /beta2/ })
  t.throws(() => new Optimizer(params, { eps: 0 }), { name: 'RangeError', message: /eps must be a positive number/ })
})

// Two awkward sizes; the norm weight gets no decay.
const SIZES: Record<string, number> = { 'model.layers.0.mlp.up_proj.weight': 1237, 'model.layers.0.input_layernorm.weight': 37 }

function makeParams(seed: number) {
  return new Map(Object.entries(SIZES).map(([n, size], i) => [n, randomF32(size, seed + i, 0.5)]))
}
function gradsFor(step: number) {
  return new Map(Object.entries(SIZES).map(([n, size], i) => [n, randomF32(size, 1000 * step + i, 0.1 * (i + 1))]))
}

// The AdamW test's hyperparameters: the beta2 it sets (0.99), torch's defaults otherwise.
const adam = (lr: number, weightDecay: number): AdamHyper => ({ lr, beta1: 0.9, beta2: 0.99, eps: 1e-8, weightDecay })

t.test('AdamW matches torch.optim.AdamW in float64, with no decay on norms, and refreshes bf16 copies', async (t) => {
  const params = makeParams(1)
  const copies = new Map([...params].map(([n, p]) => [n, new Uint16Array(p.length)]))
  const ref = new Map([...params].map(([n, p]) => [n, { p: Float64Array.from(p), m: new Float64Array(p.length), v: new Float64Array(p.length) }]))
  const opt = new Optimizer(params, { kind: 'adamw', weightDecay: 0.1, beta2: 0.99 }, copies)
  t.same(opt.names, Object.keys(SIZES).sort())
  for (let step = 1; step <= 5; step++) {
    const lr = 1e-2 / step
    const grads = gradsFor(step)
    await opt.step(grads, lr)
    for (const [n, r] of ref) refAdamw(r.p, grads.get(n)!, r.m, r.v, adam(lr, n.includes('norm') ? 0 : 0.1), step)
  }
  t.equal(opt.stepCount, 5)
  for (const [n, p] of params) {
    const err = relErr(p, ref.get(n)!.p)
    t.ok(err < 1e-6, `${n}: relative error ${err.toExponential(2)}`)
    t.same(Array.from(copies.get(n)!), Array.from(toBf16(p)), `${n}: bf16 copy is the rounded parameter`)
  }
  // decay really was skipped on the norm: with decay the result differs
  const decayed = Float64Array.from(makeParams(1).get('model.layers.0.input_layernorm.weight')!)
  const m = new Float64Array(37), v = new Float64Array(37)
  for (let step = 1; step <= 5; step++) refAdamw(decayed, gradsFor(step).get('model.layers.0.input_layernorm.weight')!, m, v, adam(1e-2 / step, 0.1), step)
  t.ok(relErr(params.get('model.layers.0.input_layernorm.weight')!, decayed) > 1e-5, 'the norm would differ with decay')
})

t.test('SGD with momentum matches torch.optim.SGD in float64', async (t) => {
  const params = makeParams(2)
  const ref = new Map([...params].map(([n, p]) => [n, { p: Float64Array.from(p), b: new Float64Array(p.length) }]))
  const opt = new Optimizer(params, { kind: 'sgd', momentum: 0.9, weightDecay: 0.01, noDecay: () => false })
  for (let step = 1; step <= 4; step++) {
    const grads = gradsFor(step)
    await opt.step(grads, 0.05)
    for (const [n, r] of ref) refSgd(r.p, grads.get(n)!, r.b, { lr: 0.05, momentum: 0.9, weightDecay: 0.01 })
  }
  for (const [n, p] of params) t.ok(relErr(p, ref.get(n)!.p) < 1e-6, `${n}`)
  t.equal(opt.state().meta.params[0].state, 'momentum')
  const plain = new Optimizer(makeParams(2), { kind: 'sgd' })
  t.equal(plain.state().meta.params[0].state, 'none', 'no momentum: no state')
  t.equal(plain.stateBytes, 0)
})

t.test('8-bit AdamW: small tensors keep fp32 moments (identical to AdamW), large ones 8-bit blocks', async (t) => {
  const sizes = { small: 4095, large: 9000 }
  const mk = () => new Map(Object.entries(sizes).map(([n, s], i) => [n, randomF32(s, 7 + i, 0.5)]))
  const p8 = mk(), p32 = mk()
  const o8 = new Optimizer(p8, { kind: 'adamw8bit', weightDecay: 0.01 })
  const o32 = new Optimizer(p32, { kind: 'adamw', weightDecay: 0.01 })
  const meta = o8.state().meta
  t.same(meta.params.map((p) => p.state), ['8bit', 'f32'], 'large: 8-bit, small (< 4096): fp32')
  t.equal(o8.stateBytes, 2 * 9000 + 2 * 4 * Math.ceil(9000 / 256) + 2 * 4 * 4095)
  for (let step = 1; step <= 6; step++) {
    const grads = new Map(Object.entries(sizes).map(([n, s], i) => [n, randomF32(s, 100 * step + i, 0.01)]))
    await o8.step(grads, 1e-3)
    await o32.step(grads, 1e-3)
  }
  t.same(Array.from(p8.get('small')!), Array.from(p32.get('small')!), 'the small tensor steps exactly as AdamW')
  const start = randomF32(9000, 8, 0.5)
  const moved8 = p8.get('large')!.map((x, i) => x - start[i]), moved32 = p32.get('large')!.map((x, i) => x - start[i])
  const err = relErr(moved8, moved32)
  t.ok(err > 0 && err < 0.05, `the large tensor's update is within 5% of AdamW's (${err.toExponential(2)}), not identical`)
  t.throws(() => new Optimizer(p8, { kind: 'adamw8bit', blockSize: 0 }), RangeError)
})

t.test('state() / loadState() continue a run bit for bit', async (t) => {
  for (const kind of ['adamw', 'adamw8bit', 'sgd'] as OptimizerKind[]) {
    const options = { kind, momentum: 0.8, weightDecay: 0.02, minBlockedSize: 1000 }
    const a = makeParams(3)
    const optA = new Optimizer(a, options)
    for (let s = 1; s <= 3; s++) await optA.step(gradsFor(s), 1e-2)
    // snapshot: copies of the parameters and of the state tensors
    const savedParams = new Map([...a].map(([n, p]) => [n, Float32Array.from(p)]))
    const { tensors, meta } = optA.state()
    const savedState = new Map(Object.entries(tensors).map(([n, x]) => [n, (x.data as Float32Array | Uint8Array).slice()]))
    const savedMeta: OptimizerStateMeta = JSON.parse(JSON.stringify(meta))
    for (let s = 4; s <= 5; s++) await optA.step(gradsFor(s), 1e-2)

    const b = savedParams
    const optB = new Optimizer(b, options)
    optB.loadState(savedMeta, (n) => savedState.get(n))
    t.equal(optB.stepCount, 3)
    for (let s = 4; s <= 5; s++) await optB.step(gradsFor(s), 1e-2)
    for (const [n, p] of a) t.ok(Buffer.from(p.buffer).equals(Buffer.from(b.get(n)!.buffer)), `${kind}: ${n} identical after resuming`)
  }
})

t.test('loadState refuses state from another optimiser or other parameters', async (t) => {
  const opt = new Optimizer(makeParams(4), { kind: 'adamw' })
  const { tensors, meta } = opt.state()
  const get = (n: string) => tensors[n]?.data
  t.throws(() => new Optimizer(makeParams(4), { kind: 'sgd', momentum: 0.9 }).loadState(meta, get), { code: 'ERR_CHECKPOINT', message: /saved by a adamw optimizer/ })
  const other = new Map([['x', new Float32Array(5)]])
  t.throws(() => new Optimizer(other).loadState(meta, get), { code: 'ERR_CHECKPOINT', message: /no state for parameter "x"/ })
  const first = meta.params[0].name
  t.throws(() => opt.loadState(meta, (n) => (n.startsWith(first) ? undefined : get(n))), { code: 'ERR_CHECKPOINT', message: /missing tensor/ })
  t.throws(() => opt.loadState(meta, (n) => (n.startsWith(first) ? new Float32Array(3) : get(n))), { code: 'ERR_CHECKPOINT', message: /must be a Float32Array of/ })
  t.throws(() => new Optimizer(new Map()), TypeError)
  t.throws(() => new Optimizer(makeParams(4), { kind: 'lion' as OptimizerKind }), RangeError)
  await t.rejects(opt.step(new Map(), NaN), RangeError)
  await t.rejects(opt.step(new Map([[first, new Float32Array(2)]]), 1e-3), { message: /gradient of .* has 2 elements/ })
})
