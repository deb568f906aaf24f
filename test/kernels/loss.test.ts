// Chunked cross-entropy through a tied head on every (ISA, precision), against the precision
// contract (README "Precision"), with finite differences for both gradients. Its three products,
// logits = h W^T, dhidden = dlogits W and dweight = dlogits^T h, round their operands to bf16
// or not as roundsToBf16 says (the first two follow W's dtype; the third is f32 x f32, so under
// 'auto' on avx512bf16 it stays f32 while a bf16 W's two round); everything between them
// (softmax, log-sum-exp, the loss) is f32. Sizes are chosen so that vocab chunks and row tiles
// both come out ragged.
import t, { type Test } from 'tap'
import { kernels } from '../../lib/index'
import { firstNaN, forEachIsa, forEachIsaAndPrecision, nanFilled, numericGrad, randomF32, relErr, rng, roundBf16, roundsToBf16, toBf16, valuesOf } from '../helpers/helpers'
import { refCrossEntropy } from '../helpers/reference'
import { FACTOR, cached, checkContract, type ContractRef } from '../helpers/precision-helpers'

function randomTargets(T: number, V: number, seed: number, ignoredFraction: number): Int32Array {
  const r = rng(seed)
  const out = new Int32Array(T)
  for (let i = 0; i < T; i++) out[i] = r() < ignoredFraction ? (r() < 0.5 ? -100 : -1) : Math.floor(r() * V)
  return out
}

interface CeRef {
  count: number
  /** The loss and lossSum from the contract's logits in float64 (exact) and in f32 (a same-precision reference). */
  loss: { exact: number; f32: number }
  lossSum: { exact: number; f32: number }
  /** One f32 rounding of each term the loss sums (each row's log-sum-exp and target logit are f32 in the kernel), relative to lossSum. */
  lossFloor: number
  dhidden: ContractRef
  dweight: ContractRef
  /** Per element, how far a bf16 rounding of an f32 dlogit may move each gradient (see below). */
  allowDhidden: Float64Array
  allowDweight: Float64Array
}

const bits = (x: number) => roundBf16(x)

/**
 * The kernel's outputs as the contract defines them. `roundHead`: logits and dhidden round
 * their operands (h, W, dlogits) to bf16; `roundDweight`: dweight's (dlogits, h). `exact` takes
 * the rounded operands in float64 throughout; `f32` computes the logits, softmax and products in
 * f32 (one rounding per step), the same-precision reference.
 *
 * dlogits are an f32 intermediate that a bf16 product rounds again. Where an exact dlogit lies
 * within the kernel's f32 error of a bf16 rounding boundary, the kernel may round it to the other
 * neighbour, one bf16 ulp away: the contract fixes that product only up to this. Such elements are
 * found from the softmax's f32 error, which is relative and nearly uniform across a row (the
 * logits' f32 sums, the log-sum-exp): FACTOR x the reference's largest relative error of p in the
 * row, + 2^-21 (the kernel's vectorized exp and its f32 steps, a few ulps). Each one may move
 * dhidden by one ulp times |W| and dweight by one ulp times |h|: that is the allowance.
 */
function ceReference(h: Float64Array, w: Float64Array, targets: Int32Array, T: number, H: number, V: number, roundHead: boolean, roundDweight: boolean, dweight0?: Float32Array, gradScale?: number): CeRef {
  const f = Math.fround
  let count = 0
  for (let i = 0; i < T; i++) if (targets[i] >= 0) count++
  const s = gradScale ?? (count ? 1 / count : 0)
  const sf = f(s)
  const wl = roundHead ? w.map(bits) : w
  const dh = { exact: new Float64Array(T * H), f32: new Float64Array(T * H) }
  const dw = { exact: new Float64Array(V * H), f32: new Float64Array(V * H) }
  if (dweight0) for (let i = 0; i < V * H; i++) dw.exact[i] = dw.f32[i] = dweight0[i]
  const dwAcc = new Float64Array(V * H) // the f32 reference's dweight sums, over rows in order
  const allowDh = new Float64Array(T * H), allowDw = new Float64Array(V * H)
  const le = new Float64Array(V), lf = new Float64Array(V), pe = new Float64Array(V), de = new Float64Array(V), df = new Float64Array(V)
  const hl = new Float64Array(H), hw = new Float64Array(H)
  let sumE = 0, sumF = 0, terms = 0
  for (let i = 0; i < T; i++) {
    const y = targets[i]
    if (y < 0) continue
    for (let c = 0; c < H; c++) {
      hl[c] = roundHead ? bits(h[i * H + c]) : h[i * H + c]
      hw[c] = roundDweight ? bits(h[i * H + c]) : h[i * H + c]
    }
    let maxE = -Infinity, maxF = -Infinity
    for (let v = 0; v < V; v++) {
      let a = 0, b = 0
      for (let c = 0; c < H; c++) {
        const prod = hl[c] * wl[v * H + c]
        a += prod
        b = f(b + prod)
      }
      le[v] = a
      lf[v] = b
      maxE = Math.max(maxE, a)
      maxF = Math.max(maxF, b)
    }
    let se = 0, sF = 0
    for (let v = 0; v < V; v++) {
      se += Math.exp(le[v] - maxE)
      sF = f(sF + f(Math.exp(f(lf[v] - maxF))))
    }
    const lseE = maxE + Math.log(se), lseF = f(maxF + Math.log(sF))
    sumE += lseE - le[y]
    sumF += lseF - lf[y]
    terms += Math.abs(lseE) + Math.abs(le[y])
    let rho = 0
    for (let v = 0; v < V; v++) {
      pe[v] = Math.exp(le[v] - lseE)
      const pf = f(Math.exp(f(lf[v] - lseF)))
      rho = Math.max(rho, Math.abs(pf - pe[v]) / pe[v])
      de[v] = pe[v] * s - (v === y ? s : 0)
      df[v] = v === y ? f(f(pf * sf) - sf) : f(pf * sf)
    }
    // dhidden[i] = R(d) . W, dweight[v] += R'(d_v) h_i
    const rdH = (x: number) => (roundHead ? bits(x) : x), rdW = (x: number) => (roundDweight ? bits(x) : x)
    for (let c = 0; c < H; c++) {
      let a = 0, b = 0
      for (let v = 0; v < V; v++) {
        a += rdH(de[v]) * wl[v * H + c]
        b = f(b + rdH(df[v]) * wl[v * H + c])
      }
      dh.exact[i * H + c] = a
      dh.f32[i * H + c] = b
    }
    for (let v = 0; v < V; v++) {
      const dE = rdW(de[v]), dF = rdW(df[v])
      for (let c = 0; c < H; c++) {
        dw.exact[v * H + c] += dE * hw[c]
        dwAcc[v * H + c] = f(dwAcc[v * H + c] + dF * hw[c])
      }
    }
    if (roundHead || roundDweight) {
      for (let v = 0; v < V; v++) {
        const win = (FACTOR * rho + 2 ** -21) * pe[v] * s + 2 ** -24 * Math.abs(de[v])
        const r0 = bits(de[v]), lo = bits(de[v] - win), hi = bits(de[v] + win)
        const ulp = Math.max(Math.abs(lo - r0), Math.abs(hi - r0))
        if (ulp === 0) continue
        if (roundHead) for (let c = 0; c < H; c++) allowDh[i * H + c] += ulp * Math.abs(wl[v * H + c])
        if (roundDweight) for (let c = 0; c < H; c++) allowDw[v * H + c] += ulp * Math.abs(hw[c])
      }
    }
  }
  for (let j = 0; j < V * H; j++) dw.f32[j] += dwAcc[j]
  return {
    count,
    loss: { exact: count ? sumE / count : 0, f32: count ? sumF / count : 0 },
    lossSum: { exact: sumE, f32: sumF },
    lossFloor: sumE ? (2 ** -24 * terms) / Math.abs(sumE) : 0,
    dhidden: dh,
    dweight: dw,
    allowDhidden: allowDh,
    allowDweight: allowDw,
  }
}

/** |got - exact| <= FACTOR |f32 - exact| + the floor, relative to |exact|. */
function checkLoss(t: Test, what: string, got: number, ref: { exact: number; f32: number }, floor: number): boolean {
  const err = Math.abs(got - ref.exact) / Math.abs(ref.exact)
  const bound = (FACTOR * Math.abs(ref.f32 - ref.exact)) / Math.abs(ref.exact) + floor
  if (err <= bound) return true
  t.fail(`${what}: ${got} vs ${ref.exact}, relative error ${err.toExponential(2)} > ${bound.toExponential(2)}`)
  return false
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

t.test("the contract's reference, rounding nothing, is refCrossEntropy (test/helpers/reference.ts)", async (t) => {
  let seed = 500
  for (const c of cases) {
    const { T, H, V } = c
    const h = valuesOf(randomF32(T * H, seed++, 1.5)), w = valuesOf(randomF32(V * H, seed++, 1))
    const targets = randomTargets(T, V, seed++, c.ignored)
    const mine = ceReference(h, w, targets, T, H, V, false, false)
    const ref = refCrossEntropy(h, w, targets, T, H, V)
    t.ok(Math.abs(mine.loss.exact - ref.loss) <= 1e-13 * ref.loss && relErr(mine.dhidden.exact, ref.dhidden) < 1e-13 && relErr(mine.dweight.exact, ref.dweight) < 1e-13, `T=${T} H=${H} V=${V}: loss, dhidden, dweight`)
  }
})

t.test("loss, dhidden and dweight are the contract's (f32 and bf16 weight, every precision)", async (t) => {
  await forEachIsaAndPrecision(async (isa, precision) => {
    let seed = 100
    const failures = t.counts.fail
    for (const [ci, c] of cases.entries()) {
      for (const bf16 of [false, true]) {
        const { T, H, V } = c
        const hidden = randomF32(T * H, seed++, 1.5)
        const wf = randomF32(V * H, seed++, 1)
        const weight = bf16 ? toBf16(wf) : wf
        const targets = randomTargets(T, V, seed++, c.ignored)
        const dweight0 = randomF32(V * H, seed++, 0.1)
        const dhidden = nanFilled(T * H)
        const dweight = Float32Array.from(dweight0)
        const res = kernels.sync.crossEntropy({ hidden, weight, targets, tokens: T, hiddenSize: H, vocab: V, chunk: c.chunk, rowTile: c.rowTile, dhidden, dweight, precision })
        const roundHead = roundsToBf16(precision, isa, false, bf16), roundDweight = roundsToBf16(precision, isa, false, false)
        const ref = cached(`ce|${ci}|${bf16}|${roundHead}|${roundDweight}`, () =>
          ceReference(valuesOf(hidden), valuesOf(weight), targets, T, H, V, roundHead, roundDweight, dweight0))
        const what = `${isa} ${precision} T=${T} H=${H} V=${V} chunk=${c.chunk ?? 'default'} rowTile=${c.rowTile ?? 'default'} ${bf16 ? 'bf16' : 'f32'}`
        if (res.count !== ref.count) t.fail(`${what}: count ${res.count} vs ${ref.count}`)
        checkLoss(t, `${what}: loss`, res.loss, ref.loss, ref.lossFloor)
        checkLoss(t, `${what}: lossSum`, res.lossSum, ref.lossSum, ref.lossFloor)
        if (firstNaN(dhidden) >= 0) t.fail(`${what}: a dhidden element not written`)
        checkContract(t, `${what}: dhidden`, dhidden, ref.dhidden, roundHead ? ref.allowDhidden : undefined)
        checkContract(t, `${what}: dweight (added to)`, dweight, ref.dweight, roundDweight ? ref.allowDweight : undefined)
        let zeroRows = true
        for (let i = 0; i < T; i++) if (targets[i] < 0) for (let k = 0; k < H; k++) zeroRows &&= dhidden[i * H + k] === 0
        if (!zeroRows) t.fail(`${what}: an ignored row has a non-zero dhidden`)
      }
    }
    if (t.counts.fail === failures) t.pass(`${isa} ${precision}: loss, dhidden and dweight as the contract says, ignored rows zero`)
  })
})

t.test('every row length from 1 to 33 (each vector tail of the row passes)', async (t) => {
  // chunk = the row length the row passes see: every tail of a 16- and an 8-lane vector loop
  const T = 4, H = 5, V = 70
  const hidden = randomF32(T * H, 61, 1.5), weight = randomF32(V * H, 62, 1)
  const targets = Int32Array.from([3, 69, 33, 0])
  const ref = ceReference(valuesOf(hidden), valuesOf(weight), targets, T, H, V, false, false)
  await forEachIsa((isa) => {
    const failures = t.counts.fail
    for (let chunk = 1; chunk <= 33; chunk++) {
      const dhidden = nanFilled(T * H)
      const res = kernels.sync.crossEntropy({ hidden, weight, targets, tokens: T, hiddenSize: H, vocab: V, chunk, dhidden, precision: 'fp32' })
      checkLoss(t, `${isa} chunk ${chunk}: loss`, res.loss, ref.loss, ref.lossFloor)
      checkContract(t, `${isa} chunk ${chunk}: dhidden`, dhidden, ref.dhidden)
    }
    if (t.counts.fail === failures) t.pass(`${isa}: loss and dhidden at every chunk size from 1 to 33`)
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
  // At fp32 (finite differences need the smooth function, not bf16-rounded steps).
  await forEachIsa((isa) => {
    const loss = (h: Float32Array, w: Float32Array) =>
      kernels.sync.crossEntropy({ hidden: h, weight: w, targets, tokens: T, hiddenSize: H, vocab: V, chunk, precision: 'fp32' }).loss
    const dhidden = nanFilled(T * H), dweight = new Float32Array(V * H)
    kernels.sync.crossEntropy({ hidden, weight, targets, tokens: T, hiddenSize: H, vocab: V, chunk, dhidden, dweight, precision: 'fp32' })
    const step = 1e-2
    const h = Float32Array.from(hidden), w = Float32Array.from(weight)
    const kfdH = numericGrad(h, () => loss(h, w), step), kfdW = numericGrad(w, () => loss(h, w), step)
    // f32 loss noise (~1e-7 of ~4) over 2e-2, plus O(step^2) truncation: about 1e-5 here.
    const tol = 1e-3
    t.ok(relErr(dhidden, kfdH) < tol, `${isa}: dhidden vs finite differences of the kernel: ${relErr(dhidden, kfdH).toExponential(2)}`)
    t.ok(relErr(dweight, kfdW) < tol, `${isa}: dweight vs finite differences of the kernel: ${relErr(dweight, kfdW).toExponential(2)}`)
  })
})

t.test('gradScale, forward-only calls and the async form (every precision)', async (t) => {
  const T = 33, H = 20, V = 77
  const hidden = randomF32(T * H, 31, 1), weight = toBf16(randomF32(V * H, 32, 1))
  const targets = randomTargets(T, V, 33, 0.2)
  await forEachIsaAndPrecision(async (isa, precision) => {
    const roundHead = roundsToBf16(precision, isa, false, true), roundDweight = roundsToBf16(precision, isa, false, false)
    const ref = cached(`gradScale|${roundHead}|${roundDweight}`, () => ceReference(valuesOf(hidden), valuesOf(weight), targets, T, H, V, roundHead, roundDweight, undefined, 0.5))
    const what = `${isa} ${precision}`
    const dhidden = nanFilled(T * H), dweight = new Float32Array(V * H)
    const base = { hidden, weight, targets, tokens: T, hiddenSize: H, vocab: V, chunk: 20, precision }
    const res = kernels.sync.crossEntropy({ ...base, dhidden, dweight, gradScale: 0.5 })
    t.ok(checkContract(t, `${what}: dhidden of 0.5 * lossSum`, dhidden, ref.dhidden, roundHead ? ref.allowDhidden : undefined), `${what}: dhidden of 0.5 * lossSum`)
    t.ok(checkContract(t, `${what}: dweight of 0.5 * lossSum`, dweight, ref.dweight, roundDweight ? ref.allowDweight : undefined), `${what}: dweight of 0.5 * lossSum`)
    const fwd = kernels.sync.crossEntropy(base)
    t.equal(fwd.lossSum, res.lossSum, `${what}: a forward-only call gives the same loss`)
    t.equal(fwd.count, ref.count)
    const dh2 = nanFilled(T * H)
    const onlyDh = kernels.sync.crossEntropy({ ...base, dhidden: dh2, gradScale: 0.5 })
    t.equal(onlyDh.lossSum, res.lossSum)
    t.same(Array.from(dh2), Array.from(dhidden), `${what}: dhidden alone equals dhidden with dweight`)
    const p = kernels.crossEntropy({ ...base })
    t.type(p, Promise)
    t.same(await p, fwd, `${what}: the async form gives the same result`)
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
  await forEachIsaAndPrecision((isa, precision) => {
    const res = kernels.sync.crossEntropy({ hidden, weight, targets: Int32Array.from([1, 2, 3]), tokens: T, hiddenSize: H, vocab: V, chunk: 8, precision })
    t.ok(Number.isNaN(res.loss), `${isa} ${precision}: loss is NaN`)
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
