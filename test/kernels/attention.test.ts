// Fused causal attention against a float64 reference (naive softmax attention, in
// test/helpers/reference.ts), forward and backward, on every ISA this CPU supports, at sizes that
// are not multiples of any tile (1, 7, 67, 150, 200 rows; head dims 5, 24, 128), with GQA, tq < tk,
// padding and packed documents (keyStart); at 'fp32' (the default: attention's operands are f32,
// so 'auto' is 'fp32') within f32 bounds, at 'bf16' within 3x the error of a reference rounding
// the same operands (test/helpers/precision-helpers.ts, attentionAt).
import t from 'tap'
import { kernels } from '../../lib/index'
import { firstNaN, forEachIsa, loopTurnsDuring, nanFilled, numericGrad, randomF32, relErr } from '../helpers/helpers'
import { FACTOR, arith, attentionAt } from '../helpers/precision-helpers'
import { kvSize, lseSize, qSize, refAttentionBackward, refAttentionForward, type AttentionShape } from '../helpers/reference'

interface Inputs {
  q: Float32Array
  k: Float32Array
  v: Float32Array
}

function makeInputs(s: AttentionShape, seed: number): Inputs {
  // q spread wider than k, so that some rows' softmax is peaked rather than near uniform.
  return { q: randomF32(qSize(s), seed, 2), k: randomF32(kvSize(s), seed + 1), v: randomF32(kvSize(s), seed + 2) }
}

// ---- running the kernels -----------------------------------------------------------------------
function forward(s: AttentionShape, x: Inputs, precision?: kernels.Precision) {
  const out = nanFilled(qSize(s))
  const lse = nanFilled(lseSize(s))
  kernels.sync.attentionForward({ ...s, ...x, out, lse, precision })
  return { out, lse }
}

function backward(s: AttentionShape, x: Inputs, fwd: { out: Float32Array; lse: Float32Array }, dout: Float32Array, precision?: kernels.Precision) {
  const dq = nanFilled(qSize(s))
  const dk = nanFilled(kvSize(s))
  const dv = nanFilled(kvSize(s))
  kernels.sync.attentionBackward({ ...s, ...x, ...fwd, dout, dq, dk, dv, precision })
  return { dq, dk, dv }
}

// lse: -Infinity exactly where the reference has it, relative error elsewhere.
function lseError(got: Float32Array, ref: Float64Array): number {
  const g: number[] = []
  const r: number[] = []
  for (let i = 0; i < ref.length; i++) {
    if (ref[i] === -Infinity || got[i] === -Infinity) {
      if (got[i] !== ref[i]) return Infinity
    } else {
      g.push(got[i])
      r.push(ref[i])
    }
  }
  return relErr(g, r)
}

function describe(s: AttentionShape): string {
  const mask = s.keyMask ? ` mask:${s.keyMask.constructor.name}` : ''
  const packed = s.keyStart ? ' packed' : ''
  return `B${s.batch} tq${s.tq} tk${s.tk} H${s.heads}/KV${s.kvHeads} D${s.headDim}${s.scale ? ` scale${s.scale}` : ''}${mask}${packed}`
}

// keyMask [batch, tk] from each sequence's (first real, end) key range.
function maskOf<T extends Int32Array | Uint8Array>(make: (n: number) => T, tk: number, ranges: [number, number][]): T {
  const m = make(ranges.length * tk)
  ranges.forEach(([from, to], b) => {
    for (let j = from; j < to; j++) m[b * tk + j] = 1
  })
  return m
}

// keyStart [batch, tq] for rows packed with documents of these lengths (queries over a KV cache:
// the last tq of the tk positions).
function packedStarts(tq: number, tk: number, docs: number[][]): Int32Array {
  const starts = new Int32Array(docs.length * tq)
  docs.forEach((lengths, b) => {
    let j = 0
    for (const len of lengths) {
      for (let p = j; p < j + len; p++) if (p >= tk - tq) starts[b * tq + p - (tk - tq)] = j
      j += len
    }
    if (j !== tk) throw new Error('document lengths must add up to tk')
  })
  return starts
}

const FWD_BOUND = 1e-5
const BWD_BOUND = 1e-5

const shapes: AttentionShape[] = [
  { batch: 1, tq: 1, tk: 1, heads: 1, kvHeads: 1, headDim: 5 },
  { batch: 2, tq: 7, tk: 7, heads: 2, kvHeads: 1, headDim: 24 },
  { batch: 1, tq: 67, tk: 67, heads: 8, kvHeads: 1, headDim: 24 },
  { batch: 1, tq: 150, tk: 150, heads: 2, kvHeads: 2, headDim: 128 },
  { batch: 1, tq: 200, tk: 200, heads: 2, kvHeads: 1, headDim: 5, scale: 0.9 },
  { batch: 2, tq: 150, tk: 150, heads: 4, kvHeads: 2, headDim: 24 },
  // queries over a KV cache: the last tq of tk positions
  { batch: 2, tq: 5, tk: 67, heads: 4, kvHeads: 2, headDim: 24 },
  { batch: 1, tq: 1, tk: 150, heads: 8, kvHeads: 1, headDim: 128 },
  { batch: 1, tq: 67, tk: 200, heads: 2, kvHeads: 1, headDim: 24 },
  // padding: right-padded, left-padded (its first rows see no key), fully masked, unpadded
  { batch: 4, tq: 67, tk: 67, heads: 2, kvHeads: 1, headDim: 24, keyMask: maskOf((n) => new Uint8Array(n), 67, [[0, 40], [10, 67], [0, 0], [0, 67]]) },
  { batch: 2, tq: 150, tk: 150, heads: 4, kvHeads: 2, headDim: 128, keyMask: maskOf((n) => new Int32Array(n), 150, [[0, 101], [0, 0]]) },
  { batch: 2, tq: 30, tk: 150, heads: 2, kvHeads: 2, headDim: 5, keyMask: maskOf((n) => new Int32Array(n), 150, [[0, 97], [60, 150]]) },
  // packed documents: boundaries inside and across tiles, one-token documents, with padding at the end
  { batch: 2, tq: 150, tk: 150, heads: 4, kvHeads: 2, headDim: 24, keyStart: packedStarts(150, 150, [[1, 40, 2, 90, 17], [150]]) },
  { batch: 3, tq: 200, tk: 200, heads: 2, kvHeads: 1, headDim: 128, keyStart: packedStarts(200, 200, [[63, 65, 72], [1, 1, 198], [100, 100]]) },
  { batch: 2, tq: 67, tk: 67, heads: 2, kvHeads: 1, headDim: 5, keyStart: packedStarts(67, 67, [[20, 20, 27], [30, 37]]), keyMask: maskOf((n) => new Uint8Array(n), 67, [[0, 60], [0, 67]]) },
  { batch: 1, tq: 30, tk: 150, heads: 2, kvHeads: 2, headDim: 24, keyStart: packedStarts(30, 150, [[100, 35, 15]]) },
]

t.test('forward matches float64 softmax attention, every element written', async (t) => {
  await forEachIsa(async (isa) => {
    let seed = 100
    for (const s of shapes) {
      const x = makeInputs(s, (seed += 3))
      const got = forward(s, x)
      const ref = refAttentionForward(s, x.q, x.k, x.v)
      const what = `${isa} ${describe(s)}`
      t.equal(firstNaN(got.out), -1, `${what}: out fully written`)
      t.equal(firstNaN(got.lse), -1, `${what}: lse fully written`)
      const errOut = relErr(got.out, ref.out)
      const errLse = lseError(got.lse, ref.lse)
      t.ok(errOut <= FWD_BOUND, `${what}: out relative error ${errOut.toExponential(2)}`)
      t.ok(errLse <= FWD_BOUND, `${what}: lse relative error ${errLse.toExponential(2)}`)
    }
  })
})

t.test("at 'bf16' the products' operands are rounded: within 3x a same-precision reference's error, and not f32's", async (t) => {
  // The lower bound (a tenth of the reference's error) checks that the rounding happens at all: an
  // f32 result is ~1000x closer to the float64 one.
  const FLOOR = 2 ** -22
  const check = (what: string, got: ArrayLike<number>, golden: ArrayLike<number>, same: ArrayLike<number>) => {
    const err = relErr(got, golden), ref = relErr(same, golden)
    t.ok(firstNaN(got) === -1 && err <= FACTOR * ref + FLOOR && err >= ref / 10, `${what}: relative error ${err.toExponential(2)}, the same-precision reference's ${ref.toExponential(2)}`)
  }
  await forEachIsa(async (isa) => {
    let seed = 1300
    for (const s of shapes) {
      const x = makeInputs(s, (seed += 4))
      const dout = randomF32(qSize(s), seed + 3)
      const what = `${isa} ${describe(s)}`
      const fwd = forward(s, x, 'bf16')
      const golden = refAttentionBackward(s, x.q, x.k, x.v, dout)
      const goldenFwd = refAttentionForward(s, x.q, x.k, x.v)
      const same = attentionAt(arith('bf16'), s, x.q, x.k, x.v, dout)
      check(`${what}: out`, fwd.out, goldenFwd.out, same.out)
      t.ok(lseError(fwd.lse, goldenFwd.lse) <= FACTOR * lseError(Float32Array.from(same.lse), goldenFwd.lse) + FLOOR, `${what}: lse`)
      const got = backward(s, x, fwd, dout, 'bf16')
      for (const name of ['dq', 'dk', 'dv'] as const) check(`${what}: ${name}`, got[name], golden[name], same[name])
    }
  })
})

t.test("'auto' is 'fp32' for attention (its operands are f32 activations), bit for bit", async (t) => {
  const s = shapes[3]
  const x = makeInputs(s, 1400)
  const dout = randomF32(qSize(s), 1401)
  await forEachIsa(async (isa) => {
    const fp32 = forward(s, x, 'fp32'), auto = forward(s, x, 'auto')
    t.ok(fp32.out.every((v, i) => Object.is(v, auto.out[i])) && fp32.lse.every((v, i) => Object.is(v, auto.lse[i])), `${isa}: forward`)
    const a = backward(s, x, fp32, dout, 'fp32'), b = backward(s, x, fp32, dout, 'auto')
    t.ok((['dq', 'dk', 'dv'] as const).every((n) => a[n].every((v, i) => Object.is(v, b[n][i]))), `${isa}: backward`)
  })
})

t.test('rows that see no key give out = 0 and lse = -Infinity', async (t) => {
  // batch 0 left-padded by 3 (rows 0..2 see only padding), batch 1 all padding.
  const s: AttentionShape = { batch: 2, tq: 9, tk: 9, heads: 2, kvHeads: 1, headDim: 6, keyMask: maskOf((n) => new Uint8Array(n), 9, [[3, 9], [0, 0]]) }
  await forEachIsa(async (isa) => {
    const x = makeInputs(s, 7)
    const got = forward(s, x)
    for (let b = 0; b < 2; b++)
      for (let h = 0; h < 2; h++)
        for (let i = 0; i < 9; i++) {
          const empty = b === 1 || i < 3
          const lse = got.lse[(b * 2 + h) * 9 + i]
          const row = Array.from(got.out.subarray(((b * 9 + i) * 2 + h) * 6, ((b * 9 + i) * 2 + h + 1) * 6))
          if (empty) {
            t.equal(lse, -Infinity, `${isa} b${b} h${h} row ${i}: lse`)
            t.same(row, [0, 0, 0, 0, 0, 0], `${isa} b${b} h${h} row ${i}: out`)
          } else {
            t.ok(Number.isFinite(lse) && row.every(Number.isFinite), `${isa} b${b} h${h} row ${i}: finite`)
          }
        }
    // Their gradients are zero, and no NaN leaks into the others.
    const dout = randomF32(qSize(s), 8)
    const g = backward(s, x, got, dout)
    for (const [name, arr] of Object.entries(g)) t.equal(firstNaN(arr), -1, `${isa}: ${name} has no NaN`)
    const ref = refAttentionBackward(s, x.q, x.k, x.v, dout)
    t.ok(relErr(g.dq, ref.dq) <= BWD_BOUND && relErr(g.dk, ref.dk) <= BWD_BOUND && relErr(g.dv, ref.dv) <= BWD_BOUND, `${isa}: gradients match`)
  })
})

t.test('backward matches the float64 reference gradient, every element written', async (t) => {
  await forEachIsa(async (isa) => {
    let seed = 500
    for (const s of shapes) {
      const x = makeInputs(s, (seed += 4))
      const dout = randomF32(qSize(s), seed + 3)
      const fwd = forward(s, x)
      const got = backward(s, x, fwd, dout)
      const ref = refAttentionBackward(s, x.q, x.k, x.v, dout)
      const what = `${isa} ${describe(s)}`
      for (const name of ['dq', 'dk', 'dv'] as const) {
        t.equal(firstNaN(got[name]), -1, `${what}: ${name} fully written`)
        const err = relErr(got[name], ref[name])
        t.ok(err <= BWD_BOUND, `${what}: ${name} relative error ${err.toExponential(2)}`)
      }
    }
  })
})

t.test('backward is correct for any thread count (dq partials per key-tile chunk)', async (t) => {
  // One (batch, kv head) pair over 1, 2 and 3 threads: the work splits across key tiles, and
  // the chunks' dq partials are summed.
  const s: AttentionShape = { batch: 1, tq: 200, tk: 200, heads: 3, kvHeads: 1, headDim: 24 }
  const x = makeInputs(s, 900)
  const dout = randomF32(qSize(s), 903)
  const ref = refAttentionBackward(s, x.q, x.k, x.v, dout)
  const before = kernels.numThreads()
  try {
    for (const threads of [1, 3, 2]) {
      kernels.setNumThreads(threads)
      const got = backward(s, x, forward(s, x), dout)
      for (const name of ['dq', 'dk', 'dv'] as const) {
        const err = relErr(got[name], ref[name])
        t.ok(firstNaN(got[name]) === -1 && err <= BWD_BOUND, `${threads} threads: ${name} relative error ${err.toExponential(2)}`)
      }
    }
  } finally {
    kernels.setNumThreads(before)
  }
})

t.test('the hand-derived reference gradient agrees with float64 central differences', async (t) => {
  // L = sum(out * R). Every coordinate of q, k and v, at a size small enough to do so.
  const s: AttentionShape = { batch: 2, tq: 4, tk: 5, heads: 4, kvHeads: 2, headDim: 3, keyMask: maskOf((n) => new Uint8Array(n), 5, [[0, 5], [1, 4]]) }
  const x = makeInputs(s, 41)
  const R = randomF32(qSize(s), 44)
  const loss = (q: Float64Array, k: Float64Array, v: Float64Array) => {
    const { out } = refAttentionForward(s, q, k, v)
    let sum = 0
    for (let i = 0; i < out.length; i++) sum += out[i] * R[i]
    return sum
  }
  const base = { q: Float64Array.from(x.q), k: Float64Array.from(x.k), v: Float64Array.from(x.v) }
  const grad = refAttentionBackward(s, base.q, base.k, base.v, R)
  const h = 1e-5
  for (const [name, gname] of [['q', 'dq'], ['k', 'dk'], ['v', 'dv']] as const) {
    const fd = numericGrad(base[name], () => loss(base.q, base.k, base.v), h)
    const err = relErr(grad[gname], fd)
    t.ok(err <= 1e-8, `${gname}: relative error ${err.toExponential(2)} against central differences`)
  }
})

t.test("the kernels' gradient agrees with central differences of the kernels' own forward", async (t) => {
  // In f32: a step of 1e-2 keeps the rounding of L (~1e-7 relative) and the O(h^2) truncation
  // both near 1e-4 of the gradient's size, hence the 2e-3 bound.
  const s: AttentionShape = { batch: 1, tq: 6, tk: 9, heads: 2, kvHeads: 1, headDim: 5, keyMask: maskOf((n) => new Int32Array(n), 9, [[1, 9]]) }
  await forEachIsa(async (isa) => {
    const x = makeInputs(s, 61)
    const R = randomF32(qSize(s), 64)
    const loss = () => {
      const { out } = forward(s, x)
      let sum = 0
      for (let i = 0; i < out.length; i++) sum += out[i] * R[i]
      return sum
    }
    const got = backward(s, x, forward(s, x), R)
    const h = 1e-2
    for (const [name, gname] of [['q', 'dq'], ['k', 'dk'], ['v', 'dv']] as const) {
      const fd = numericGrad(x[name], loss, h)
      const err = relErr(got[gname], fd)
      t.ok(err <= 2e-3, `${isa} ${gname}: relative error ${err.toExponential(2)} against central differences`)
    }
  })
})

t.test('the async forms run off the JS thread and give the same results', async (t) => {
  const s: AttentionShape = { batch: 1, tq: 150, tk: 150, heads: 4, kvHeads: 2, headDim: 64 }
  const x = makeInputs(s, 70)
  const dout = randomF32(qSize(s), 73)
  const fwd = forward(s, x)
  const bwd = backward(s, x, fwd, dout)
  const out = nanFilled(qSize(s))
  const lse = nanFilled(lseSize(s))
  const p = kernels.attentionForward({ ...s, ...x, out, lse })
  t.type(p, Promise)
  await p
  t.same(Array.from(out), Array.from(fwd.out))
  t.same(Array.from(lse), Array.from(fwd.lse))
  const dq = nanFilled(qSize(s)), dk = nanFilled(kvSize(s)), dv = nanFilled(kvSize(s))
  await kernels.attentionBackward({ ...s, ...x, out, lse, dout, dq, dk, dv })
  t.same(Array.from(dq), Array.from(bwd.dq))
  t.same(Array.from(dk), Array.from(bwd.dk))
  t.same(Array.from(dv), Array.from(bwd.dv))
  t.ok(await loopTurnsDuring(() => kernels.attentionForward({ ...s, ...x, out, lse })), 'the event loop turns while the forward is in flight')
  t.ok(await loopTurnsDuring(() => kernels.attentionBackward({ ...s, ...x, out, lse, dout, dq, dk, dv })), 'and while the backward is')
})

t.test('bad arguments throw typed errors naming the argument', async (t) => {
  const s = { batch: 1, tq: 3, tk: 4, heads: 2, kvHeads: 1, headDim: 2 }
  const q = new Float32Array(12), k = new Float32Array(8), v = new Float32Array(8)
  const out = new Float32Array(12), lse = new Float32Array(6)
  const ok = { ...s, q, k, v, out, lse }
  const fwd = (o: unknown) => () => kernels.sync.attentionForward(o as kernels.AttentionForwardOptions)
  t.doesNotThrow(fwd(ok))
  t.throws(fwd(undefined), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /attentionForward: expected one options object/ })
  t.throws(fwd({ ...ok, q: Array.from(q) }), { name: 'TypeError', message: /'q' must be a Float32Array, got an Array/ })
  t.throws(fwd({ ...ok, v: new Float64Array(8) }), { name: 'TypeError', message: /'v' must be a Float32Array, got Float64Array/ })
  t.throws(fwd({ ...ok, q: new Float32Array(11) }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /'q' has 11 elements, expected batch \* tq \* heads \* headDim = 12/ })
  t.throws(fwd({ ...ok, k: new Float32Array(16) }), { name: 'RangeError', message: /'k' has 16 elements, expected batch \* tk \* kvHeads \* headDim = 8/ })
  t.throws(fwd({ ...ok, lse: new Float32Array(3) }), { name: 'RangeError', message: /'lse' has 3 elements, expected batch \* heads \* tq = 6/ })
  t.throws(fwd({ ...ok, out: undefined }), { name: 'TypeError', message: /'out' must be a Float32Array, got undefined/ })
  t.throws(fwd({ ...ok, kvHeads: 3 }), { name: 'RangeError', message: /'heads' \(2\) must be a multiple of 'kvHeads' \(3\)/ })
  t.throws(fwd({ ...ok, tq: 5 }), { name: 'RangeError', message: /'tq' \(5\) must not exceed 'tk' \(4\)/ })
  t.throws(fwd({ ...ok, headDim: 0 }), { name: 'RangeError', message: /'headDim' must be in \[1, / })
  t.throws(fwd({ ...ok, heads: 1.5 }), { name: 'RangeError', message: /'heads' must be an integer/ })
  t.throws(fwd({ ...ok, batch: '1' }), { name: 'TypeError', message: /'batch' must be an integer, got a string/ })
  t.throws(fwd({ ...ok, scale: 'x' }), { name: 'TypeError', message: /'scale' must be a number/ })
  t.throws(fwd({ ...ok, scale: NaN }), { name: 'RangeError', message: /'scale' must be finite/ })
  t.throws(fwd({ ...ok, precision: 'fp16' }), { name: 'RangeError', message: /precision must be 'fp32', 'bf16' or 'auto', got "fp16"/ })
  t.throws(fwd({ ...ok, keyMask: new Float32Array(4) }), { name: 'TypeError', message: /'keyMask' must be an Int32Array or a Uint8Array, got Float32Array/ })
  t.throws(fwd({ ...ok, keyMask: new Uint8Array(5) }), { name: 'RangeError', message: /'keyMask' has 5 elements, expected batch \* tk = 4/ })
  t.throws(fwd({ ...ok, keyMask: Int32Array.from([1, 1, 2, 0]) }), { name: 'RangeError', message: /'keyMask' must hold 0 \(padding\) or 1 \(real key\), got 2 at index 2/ })
  t.throws(fwd({ ...ok, keyStart: new Uint8Array(3) }), { name: 'TypeError', message: /'keyStart' must be an Int32Array, got Uint8Array/ })
  t.throws(fwd({ ...ok, keyStart: new Int32Array(2) }), { name: 'RangeError', message: /'keyStart' has 2 elements, expected batch \* tq = 3/ })
  t.throws(fwd({ ...ok, keyStart: Int32Array.from([0, 5, 1]) }), { name: 'RangeError', message: /'keyStart' must hold key positions in \[0, tk = 4\], got 5 at index 1/ })
  const shared = new Float32Array(24)
  t.throws(fwd({ ...ok, q: shared.subarray(0, 12), out: shared.subarray(6, 18) }), { name: 'RangeError', message: /'out' and 'q' must not share memory/ })
  t.throws(fwd({ ...ok, lse: out.subarray(0, 6) }), { name: 'RangeError', message: /'out' and 'lse' must not share memory/ })

  const dout = new Float32Array(12), dq = new Float32Array(12), dk = new Float32Array(8), dv = new Float32Array(8)
  const okb = { ...ok, dout, dq, dk, dv }
  const bwd = (o: unknown) => () => kernels.sync.attentionBackward(o as kernels.AttentionBackwardOptions)
  t.doesNotThrow(bwd(okb))
  t.throws(bwd({ ...okb, dout: undefined }), { name: 'TypeError', message: /attentionBackward: 'dout' must be a Float32Array, got undefined/ })
  t.throws(bwd({ ...okb, dk: new Float32Array(12) }), { name: 'RangeError', message: /'dk' has 12 elements, expected batch \* tk \* kvHeads \* headDim = 8/ })
  t.throws(bwd({ ...okb, lse: new Float32Array(12) }), { name: 'RangeError', message: /'lse' has 12 elements/ })
  t.throws(bwd({ ...okb, dv: dk }), { name: 'RangeError', message: /'dk' and 'dv' must not share memory/ })
  t.throws(bwd({ ...okb, dq: dout }), { name: 'RangeError', message: /'dq' and 'dout' must not share memory/ })
  t.throws(bwd({ ...okb, dk: k }), { name: 'RangeError', message: /'dk' and 'k' must not share memory/ })
  await t.rejects(kernels.attentionForward({ ...ok, v: new Float32Array(1) }), { name: 'RangeError', message: /'v' has 1 elements/ })
  await t.rejects(kernels.attentionBackward({ ...okb, dq: new Float32Array(1) }), { name: 'RangeError', message: /'dq' has 1 elements/ })
})

t.test('empty shapes are accepted and write nothing', async (t) => {
  const s = { batch: 0, tq: 0, tk: 0, heads: 2, kvHeads: 1, headDim: 4 }
  const e = new Float32Array(0)
  t.doesNotThrow(() => kernels.sync.attentionForward({ ...s, q: e, k: e, v: e, out: e, lse: e }))
  t.doesNotThrow(() => kernels.sync.attentionBackward({ ...s, q: e, k: e, v: e, out: e, lse: e, dout: e, dq: e, dk: e, dv: e }))
  // Keys but no queries: dk and dv are still written (zeros).
  const s2 = { batch: 1, tq: 0, tk: 3, heads: 1, kvHeads: 1, headDim: 2 }
  const k = randomF32(6, 1), v = randomF32(6, 2), dk = nanFilled(6), dv = nanFilled(6)
  kernels.sync.attentionBackward({ ...s2, q: e, k, v, out: e, lse: e, dout: e, dq: e, dk, dv })
  t.same(Array.from(dk), [0, 0, 0, 0, 0, 0])
  t.same(Array.from(dv), [0, 0, 0, 0, 0, 0])
})
