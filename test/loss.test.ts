// Chunked cross-entropy through a tied head against a float64 reference (test/reference.ts),
// with finite differences for both gradients, on every ISA this CPU supports. Sizes are chosen
// so that vocab chunks and row tiles both come out ragged.
import t from 'tap'
import { kernels } from '../lib/index'
import { firstNaN, forEachIsa, nanFilled, numericGrad, randomF32, relErr, rng, toBf16, valuesOf } from './helpers'
import { refCrossEntropy } from './reference'

function randomTargets(T: number, V: number, seed: number, ignoredFraction: number): Int32Array {
  const r = rng(seed)
  const out = new Int32Array(T)
  for (let i = 0; i < T; i++) out[i] = r() < ignoredFraction ? (r() < 0.5 ? -100 : -1) : Math.floor(r() * V)
  return out
}

// On AVX512_BF16 a bf16 weight's GEMMs multiply bf16 pairs (the other operand rounded to bf16
// too); an f32 weight's take the f32 path there as everywhere.
function bound(isa: string, bf16Weight: boolean): number {
  return bf16Weight ? (isa === 'avx512bf16' ? 1e-2 : 3e-5) : 2e-5
}

interface Case {
  T: number
  H: number
  V: number
  chunk?: number
  rowTile?: number
  ignored: number
}

const cases: Case[] = [
  { T: 7, H: 9, V: 50, chunk: 16, ignored: 0.3 }, // several chunks, a ragged last one
  { T: 37, H: 45, V: 300, chunk: 64, rowTile: 16, ignored: 0.25 }, // ragged row tiles, gathered rows
  { T: 40, H: 33, V: 129, chunk: 128, rowTile: 13, ignored: 0 }, // contiguous tiles, a one-row last chunk
  { T: 150, H: 70, V: 1100, ignored: 0.1 }, // defaults: one chunk, one tile, multi-tile GEMMs
]

t.test('loss, dhidden and dweight match float64 (f32 and bf16 weight)', async (t) => {
  await forEachIsa(async (isa) => {
    let seed = 100
    for (const c of cases) {
      for (const bf16 of [false, true]) {
        const { T, H, V } = c
        const hidden = randomF32(T * H, seed++, 1.5)
        const wf = randomF32(V * H, seed++, 1)
        const weight = bf16 ? toBf16(wf) : wf
        const targets = randomTargets(T, V, seed++, c.ignored)
        const dweight0 = randomF32(V * H, seed++, 0.1)
        const dhidden = nanFilled(T * H)
        const dweight = Float32Array.from(dweight0)
        const res = kernels.sync.crossEntropy({ hidden, weight, targets, tokens: T, hiddenSize: H, vocab: V, chunk: c.chunk, rowTile: c.rowTile, dhidden, dweight })
        const ref = refCrossEntropy(valuesOf(hidden), valuesOf(weight), targets, T, H, V)
        const what = `${isa} T=${T} H=${H} V=${V} chunk=${c.chunk ?? 'default'} rowTile=${c.rowTile ?? 'default'} ${bf16 ? 'bf16' : 'f32'}`
        t.equal(res.count, ref.count, `${what}: count`)
        const lossErr = Math.abs(res.loss - ref.loss) / ref.loss
        t.ok(lossErr <= bound(isa, bf16) / 4, `${what}: loss ${res.loss} vs ${ref.loss}`)
        t.ok(Math.abs(res.lossSum - ref.lossSum) <= (bound(isa, bf16) / 4) * ref.lossSum, `${what}: lossSum`)
        t.equal(firstNaN(dhidden), -1, `${what}: every dhidden element written`)
        const dhErr = relErr(dhidden, ref.dhidden)
        t.ok(dhErr <= bound(isa, bf16), `${what}: dhidden relative error ${dhErr.toExponential(2)}`)
        const dwAdded = dweight.map((x, i) => x - dweight0[i])
        const dwErr = relErr(dwAdded, ref.dweight)
        t.ok(dwErr <= bound(isa, bf16), `${what}: dweight (added) relative error ${dwErr.toExponential(2)}`)
        let zeroRows = true
        for (let i = 0; i < T; i++) if (targets[i] < 0) for (let k = 0; k < H; k++) zeroRows &&= dhidden[i * H + k] === 0
        t.ok(zeroRows, `${what}: ignored rows have a zero dhidden`)
      }
    }
  })
})

t.test('every row length from 1 to 33 (each vector tail of the row passes)', async (t) => {
  const T = 4, H = 5, V = 70
  const hidden = randomF32(T * H, 61, 1.5), weight = randomF32(V * H, 62, 1)
  const targets = Int32Array.from([3, 69, 33, 0])
  const ref = refCrossEntropy(valuesOf(hidden), valuesOf(weight), targets, T, H, V)
  await forEachIsa((isa) => {
    let lossOk = true, worst = 0
    for (let chunk = 1; chunk <= 33; chunk++) {
      const dhidden = nanFilled(T * H)
      const res = kernels.sync.crossEntropy({ hidden, weight, targets, tokens: T, hiddenSize: H, vocab: V, chunk, dhidden })
      lossOk &&= Math.abs(res.loss - ref.loss) <= (bound(isa, false) / 4) * ref.loss
      worst = Math.max(worst, relErr(dhidden, ref.dhidden))
    }
    t.ok(lossOk, `${isa}: loss at every chunk size`)
    t.ok(worst <= bound(isa, false), `${isa}: worst dhidden relative error ${worst.toExponential(2)}`)
  })
})

t.test('gradients agree with finite differences', async (t) => {
  const T = 7, H = 9, V = 50, chunk = 16
  const hidden = randomF32(T * H, 7, 1)
  const weight = randomF32(V * H, 8, 1)
  const targets = Int32Array.from([3, -100, 49, 0, 17, 16, -1])
  const h64 = valuesOf(hidden), w64 = valuesOf(weight)
  const ref = refCrossEntropy(h64, w64, targets, T, H, V)

  // 1. The reference's analytic gradients against central differences of its own float64 loss.
  const eps = 1e-6
  const refLoss = () => refCrossEntropy(h64, w64, targets, T, H, V).loss
  const fdH = numericGrad(h64, refLoss, eps), fdW = numericGrad(w64, refLoss, eps)
  t.ok(relErr(ref.dhidden, fdH) < 1e-7, `reference dhidden vs float64 finite differences: ${relErr(ref.dhidden, fdH).toExponential(2)}`)
  t.ok(relErr(ref.dweight, fdW) < 1e-7, `reference dweight vs float64 finite differences: ${relErr(ref.dweight, fdW).toExponential(2)}`)

  // 2. The kernel's gradients against central differences of the kernel's own f32 forward.
  await forEachIsa((isa) => {
    const loss = (h: Float32Array, w: Float32Array) =>
      kernels.sync.crossEntropy({ hidden: h, weight: w, targets, tokens: T, hiddenSize: H, vocab: V, chunk }).loss
    const dhidden = nanFilled(T * H), dweight = new Float32Array(V * H)
    kernels.sync.crossEntropy({ hidden, weight, targets, tokens: T, hiddenSize: H, vocab: V, chunk, dhidden, dweight })
    const step = 1e-2
    const h = Float32Array.from(hidden), w = Float32Array.from(weight)
    const kfdH = numericGrad(h, () => loss(h, w), step), kfdW = numericGrad(w, () => loss(h, w), step)
    // f32 loss noise (~1e-7 of ~4) over 2e-2, plus O(step^2) truncation: about 1e-5 here. The
    // weight is f32, so avx512bf16 takes the f32 GEMM too.
    const tol = 1e-3
    t.ok(relErr(dhidden, kfdH) < tol, `${isa}: dhidden vs finite differences of the kernel: ${relErr(dhidden, kfdH).toExponential(2)}`)
    t.ok(relErr(dweight, kfdW) < tol, `${isa}: dweight vs finite differences of the kernel: ${relErr(dweight, kfdW).toExponential(2)}`)
  })
})

t.test('gradScale, forward-only calls and the async form', async (t) => {
  const T = 33, H = 20, V = 77
  const hidden = randomF32(T * H, 31, 1), weight = toBf16(randomF32(V * H, 32, 1))
  const targets = randomTargets(T, V, 33, 0.2)
  const ref = refCrossEntropy(valuesOf(hidden), valuesOf(weight), targets, T, H, V, 0.5)
  await forEachIsa(async (isa) => {
    const dhidden = nanFilled(T * H), dweight = new Float32Array(V * H)
    const base = { hidden, weight, targets, tokens: T, hiddenSize: H, vocab: V, chunk: 20 }
    const res = kernels.sync.crossEntropy({ ...base, dhidden, dweight, gradScale: 0.5 })
    t.ok(relErr(dhidden, ref.dhidden) <= bound(isa, true), `${isa}: dhidden of 0.5 * lossSum`)
    t.ok(relErr(dweight, ref.dweight) <= bound(isa, true), `${isa}: dweight of 0.5 * lossSum`)
    const fwd = kernels.sync.crossEntropy(base)
    t.equal(fwd.lossSum, res.lossSum, `${isa}: a forward-only call gives the same loss`)
    t.equal(fwd.count, ref.count)
    const dh2 = nanFilled(T * H)
    const onlyDh = kernels.sync.crossEntropy({ ...base, dhidden: dh2, gradScale: 0.5 })
    t.equal(onlyDh.lossSum, res.lossSum)
    t.same(Array.from(dh2), Array.from(dhidden), `${isa}: dhidden alone equals dhidden with dweight`)
    const p = kernels.crossEntropy({ ...base })
    t.type(p, Promise)
    t.same(await p, fwd, `${isa}: the async form gives the same result`)
  })
})

t.test('all-ignored batch and zero tokens', async (t) => {
  const T = 5, H = 6, V = 9
  const hidden = randomF32(T * H, 41), weight = randomF32(V * H, 42)
  const targets = new Int32Array(T).fill(-100)
  const dhidden = nanFilled(T * H), dweight = randomF32(V * H, 43)
  const before = Array.from(dweight)
  const res = kernels.sync.crossEntropy({ hidden, weight, targets, tokens: T, hiddenSize: H, vocab: V, dhidden, dweight })
  t.same(res, { loss: 0, count: 0, lossSum: 0 })
  t.ok(dhidden.every((x) => x === 0), 'dhidden is all zero')
  t.same(Array.from(dweight), before, 'dweight is untouched')
  const empty = kernels.sync.crossEntropy({
    hidden: new Float32Array(0), weight, targets: new Int32Array(0), tokens: 0, hiddenSize: H, vocab: V, dhidden: new Float32Array(0),
  })
  t.same(empty, { loss: 0, count: 0, lossSum: 0 })
})

t.test('a non-finite hidden state gives a non-finite loss', async (t) => {
  const T = 3, H = 4, V = 20
  const hidden = randomF32(T * H, 51), weight = randomF32(V * H, 52)
  hidden[5] = NaN
  await forEachIsa((isa) => {
    const res = kernels.sync.crossEntropy({ hidden, weight, targets: Int32Array.from([1, 2, 3]), tokens: T, hiddenSize: H, vocab: V, chunk: 8 })
    t.ok(Number.isNaN(res.loss), `${isa}: loss is NaN`)
  })
})

t.test('bad arguments throw typed errors naming the argument', async (t) => {
  const T = 3, H = 4, V = 10
  const ok = {
    hidden: new Float32Array(T * H), weight: new Float32Array(V * H), targets: Int32Array.from([0, 9, -100]),
    tokens: T, hiddenSize: H, vocab: V,
  }
  const call = (o: Record<string, unknown>) => () => kernels.sync.crossEntropy({ ...ok, ...o } as kernels.CrossEntropyOptions)
  t.doesNotThrow(call({}))
  t.throws(call({ targets: Int32Array.from([0, 10, 1]) }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /'targets\[1\]' is 10, must be < vocab = 10/ })
  t.throws(call({ targets: Float32Array.from([0, 1, 2]) }), { name: 'TypeError', message: /'targets' must be an Int32Array, got Float32Array/ })
  t.throws(call({ targets: new Int32Array(2) }), { name: 'RangeError', message: /'targets' has 2 elements, expected tokens = 3/ })
  t.throws(call({ hidden: new Float32Array(11) }), { name: 'RangeError', message: /'hidden' has 11 elements, expected tokens \* hiddenSize = 12/ })
  t.throws(call({ hidden: new Uint16Array(12) }), { name: 'TypeError', message: /'hidden' must be a Float32Array/ })
  t.throws(call({ weight: new Float64Array(V * H) }), { name: 'TypeError', message: /'weight' must be a Float32Array or a Uint16Array/ })
  t.throws(call({ weight: new Float32Array(V * H - 1) }), { name: 'RangeError', message: /'weight' has 39 elements, expected vocab \* hiddenSize = 40/ })
  t.throws(call({ dhidden: new Float32Array(5) }), { name: 'RangeError', message: /'dhidden' has 5 elements/ })
  t.throws(call({ dweight: new Float32Array(V * H + 1) }), { name: 'RangeError', message: /'dweight' has 41 elements/ })
  t.throws(call({ dweight: new Uint16Array(V * H) }), { name: 'TypeError', message: /'dweight' must be a Float32Array/ })
  t.throws(call({ vocab: 0 }), { name: 'RangeError', message: /'vocab' must be in/ })
  t.throws(call({ hiddenSize: 0 }), { name: 'RangeError', message: /'hiddenSize' must be in/ })
  t.throws(call({ chunk: 0 }), { name: 'RangeError', message: /'chunk' must be in/ })
  t.throws(call({ rowTile: 1.5 }), { name: 'RangeError', message: /'rowTile' must be an integer/ })
  t.throws(call({ gradScale: 'x' }), { name: 'TypeError', message: /'gradScale' must be a number/ })
  t.throws(call({ gradScale: NaN }), { name: 'RangeError', message: /'gradScale' must be finite/ })
  const big = { tokens: 300, targets: new Int32Array(300).fill(-100), vocab: 1 << 20, hiddenSize: 1, hidden: new Float32Array(300), weight: new Float32Array(1 << 20), chunk: 1 << 20 }
  t.throws(call(big), {
    name: 'RangeError', message: /'rowTile' \* 'chunk' must be at most 2\^28/,
  })
  t.doesNotThrow(call({ ...big, rowTile: 3 }), 'a smaller row tile fits')
  const buf = new Float32Array(T * H * 2)
  t.throws(call({ hidden: buf.subarray(0, T * H), dhidden: buf.subarray(T * H - 1, 2 * T * H - 1) }), { name: 'RangeError', message: /'dhidden' and 'hidden' must not share memory/ })
  const wbuf = new Float32Array(V * H + T * H)
  t.throws(call({ weight: wbuf.subarray(0, V * H), dweight: wbuf.subarray(0, V * H) }), { name: 'RangeError', message: /'dweight' and 'weight' must not share memory/ })
  await t.rejects(kernels.crossEntropy({ ...ok, targets: Int32Array.from([0, 1, 99]) }), { name: 'RangeError', message: /'targets\[2\]'/ })
})
