// GEMM against float64 references of the precision contract (README "Precision"): every layout
// and dtype, every precision, on every ISA this CPU supports, at sizes that are not multiples of
// any tile or block (K past KC, N past a tile, M past MC). Each case is held to the product the
// contract defines (operands rounded to bf16 or not, per segment), within 3x the error of a
// same-precision reference that sums those operands in f32 (flash-attention's way of bounding).
import t, { type Test } from 'tap'
import { kernels } from '../../lib/index'
import {
  contractProduct,
  firstNaN,
  forEachIsaAndPrecision,
  loopTurnsDuring,
  nanFilled,
  randomF32,
  relErr,
  roundsToBf16,
  toBf16,
  valuesOf,
} from '../helpers/helpers'

type Operand = Float32Array | Uint16Array

function makeOperand(rows: number, k: number, seed: number, bf16: boolean): Operand {
  const v = randomF32(rows * k, seed)
  return bf16 ? toBf16(v) : v
}

// Element (r, p) of a logical [rows, k] operand stored plain ([rows, k]) or transposed ([k, rows]).
function accessor(values: Float64Array, rows: number, k: number, transposed: boolean) {
  return transposed ? (r: number, p: number) => values[p * rows + r] : (r: number, p: number) => values[r * k + p]
}

// The rows of C the reference checks: all of a small C; of a large one, the first 64 (every row
// position in every ISA's micro-tile and the first row block's edge), the last 40, and a spread
// between (the kernel writes every row: firstNaN checks them all).
function checkedRows(m: number): number[] {
  if (m <= 160) return Array.from({ length: m }, (_, i) => i)
  const rows = new Set<number>()
  for (let i = 0; i < 64; i++) rows.add(i)
  for (let i = m - 40; i < m; i++) rows.add(i)
  for (let i = 64; i < m - 40; i += Math.ceil(m / 50)) rows.add(i)
  return [...rows].sort((a, b) => a - b)
}

interface Segment {
  a: Operand
  b: Operand
  k: number
  aLayout?: 'mk' | 'km'
  bLayout?: 'nk' | 'kn'
  scale?: number
}

// The contract's product for (isa, precision): alpha * sum of the segments (+ c0), on the rows
// checkedRows picks, and its same-precision reference. Each depends on the ISA and precision
// only through which segments round, so callers may reuse one for every pair that rounds alike.
function contractRef(isa: kernels.Isa, precision: kernels.Precision, m: number, n: number, segments: Segment[], alpha = 1, c0?: Float32Array) {
  const rows = checkedRows(m)
  const ref = { exact: new Float64Array(rows.length * n), f32: new Float64Array(rows.length * n) }
  if (c0) rows.forEach((i, r) => {
    for (let j = 0; j < n; j++) ref.exact[r * n + j] = ref.f32[r * n + j] = c0[i * n + j]
  })
  for (const s of segments) {
    const round = roundsToBf16(precision, isa, s.a instanceof Uint16Array, s.b instanceof Uint16Array)
    contractProduct(rows, n, s.k, accessor(valuesOf(s.a), m, s.k, s.aLayout === 'km'), accessor(valuesOf(s.b), n, s.k, s.bLayout === 'kn'), alpha * (s.scale ?? 1), round, ref)
  }
  return { rows, ...ref }
}

// Checks C against the contract's product within 3x the same-precision reference's error.
function checkGemm(t: Test, what: string, m: number, n: number, c: Float32Array, ref: ReturnType<typeof contractRef>): void {
  const out = new Float64Array(ref.rows.length * n)
  ref.rows.forEach((i, r) => {
    for (let j = 0; j < n; j++) out[r * n + j] = c[i * n + j]
  })
  const nan = firstNaN(c)
  if (nan >= 0) t.fail(`${what}: element ${nan} not written`)
  const err = relErr(out, ref.exact)
  const bound = 3 * relErr(ref.f32, ref.exact) + 2 ** -24
  if (!(err <= bound)) t.fail(`${what}: relative error ${err.toExponential(2)} > ${bound.toExponential(2)} (3x an f32 sum of the same operands)`)
}

const shapes: [number, number, number][] = [
  [1, 1, 1],
  [7, 13, 5],
  [37, 45, 29],
  [131, 67, 500], // few rows (one region, A packed per thread), two K slices
  [350, 33, 40], // several row blocks, the rows past the whole ones a block of their own (AVX2: 110, generic: 94) or joined to the last (AVX-512: 112, 112, 126); a tile of one vector's width
  [300, 45, 900], // the shared-slices path over three or four K slices (f32 formats)
  [40, 70, 2100], // few rows over three K slices of every format, the last one ragged and odd
  [300, 40, 1100], // few columns (one column block: A packed and used by one thread) over two K slices of every format (bf16's KC is 1024)
  [350, 130, 1100], // shared slices (three row blocks, two column blocks) over several K slices
  [300, 500, 40], // few tiles of 256 columns: narrower ones
  [9, 3100, 17], // many column tiles, the last one ragged
  [11000, 20, 30], // rows past the 4 MB packing budget: several row chunks on every ISA
  [250, 11000, 8], // columns past it
]

t.test("C = A . B^T is the contract's product for every layout, dtype and precision", async (t) => {
  let seed = 1
  for (const [m, n, k] of shapes) {
    for (const aLayout of ['mk', 'km'] as const)
      for (const bLayout of ['nk', 'kn'] as const)
        for (const aBf16 of [false, true])
          for (const bBf16 of [false, true]) {
            const segments = [{ a: makeOperand(m, k, seed++, aBf16), b: makeOperand(n, k, seed++, bBf16), k, aLayout, bLayout }]
            // one reference for the pairs that round, one for those that do not
            const refs = new Map<boolean, ReturnType<typeof contractRef>>()
            await forEachIsaAndPrecision((isa, precision) => {
              const round = roundsToBf16(precision, isa, aBf16, bBf16)
              if (!refs.has(round)) refs.set(round, contractRef(isa, precision, m, n, segments))
              const c = nanFilled(m * n)
              kernels.sync.gemm({ c, m, n, segments, precision })
              checkGemm(t, `${isa} ${precision} ${m}x${n}x${k} ${aLayout}/${bLayout} a:${aBf16 ? 'bf16' : 'f32'} b:${bBf16 ? 'bf16' : 'f32'}`, m, n, c, refs.get(round)!)
            })
          }
    t.pass(`${m}x${n}x${k}: every layout, dtype, ISA and precision as the contract says`)
  }
})

t.test('a bf16 product differs from the fp32 one by bf16 rounding: the precisions are not the same computation', async (t) => {
  // 64 x 64 x 256 with f32 operands: 'bf16' rounds both, so it sits ~2^-9 relative from 'fp32'
  const m = 64, n = 64, k = 256
  const a = randomF32(m * k, 41), b = randomF32(n * k, 42)
  const fp32 = nanFilled(m * n), bf16 = nanFilled(m * n)
  kernels.sync.gemm({ c: fp32, m, n, segments: [{ a, b, k }], precision: 'fp32' })
  kernels.sync.gemm({ c: bf16, m, n, segments: [{ a, b, k }], precision: 'bf16' })
  const apart = relErr(bf16, fp32)
  t.ok(apart > 1e-4 && apart < 1e-2, `bf16 vs fp32: ${apart.toExponential(2)} apart`)
})

t.test('any pool size, also one larger than the product has tiles', async (t) => {
  // 300 x 40: three row blocks of one narrow tile each, so a pool of four runs three parts
  const before = kernels.numThreads()
  try {
    const cases = [[1, 300, 40, 500], [4, 300, 40, 500], [3, 700, 300, 800], [2, 300, 40, 500]] as const
    for (const [threads, m, n, k] of cases) {
      kernels.setNumThreads(threads)
      const a = makeOperand(m, k, 31, false), b = makeOperand(n, k, 32, true)
      const c = nanFilled(m * n)
      kernels.sync.gemm({ c, m, n, segments: [{ a, b, k }], precision: 'auto' })
      const failures = t.counts.fail
      checkGemm(t, `${threads} threads, ${m}x${n}x${k}`, m, n, c, contractRef(kernels.activeIsa(), 'auto', m, n, [{ a, b, k }]))
      if (t.counts.fail === failures) t.pass(`${threads} threads, ${m}x${n}x${k}: as the contract says`)
    }
  } finally {
    kernels.setNumThreads(before)
  }
})

t.test('alpha, accumulate and several K-segments (the fused LoRA form), each segment at its own precision', async (t) => {
  await forEachIsaAndPrecision(async (isa, precision) => {
    // m = 53 takes the few-rows schedule, m = 300 the shared-slices one. Under 'auto' on
    // avx512bf16 the bf16 weight's segment is a bf16 product and the f32 LoRA one stays f32.
    for (const m of [53, 300]) {
      const n = 70, k = 91, r = 5
      const x = randomF32(m * k, 11), w = toBf16(randomF32(n * k, 12))
      const u = randomF32(m * r, 13), bl = randomF32(n * r, 14)
      const c0 = randomF32(m * n, 15)
      const c = Float32Array.from(c0)
      const segments = [{ a: x, b: w, k }, { a: u, b: bl, k: r, scale: 3 }]
      kernels.sync.gemm({ c, m, n, alpha: 0.5, accumulate: true, segments, precision })
      const failures = t.counts.fail
      checkGemm(t, `${isa} ${precision} m=${m}`, m, n, c, contractRef(isa, precision, m, n, segments, 0.5, c0))
      if (t.counts.fail === failures) t.pass(`${isa} ${precision} m=${m}: each segment as the contract says`)
    }
  })
})

t.test('precision: ERNIE_PRECISION is the default, and a bad value names itself', async (t) => {
  const m = 16, n = 16, k = 64
  const a = randomF32(m * k, 51), b = randomF32(n * k, 52)
  const viaEnv = nanFilled(m * n), explicit = nanFilled(m * n)
  const saved = process.env.ERNIE_PRECISION
  try {
    process.env.ERNIE_PRECISION = 'bf16'
    kernels.sync.gemm({ c: viaEnv, m, n, segments: [{ a, b, k }] })
    kernels.sync.gemm({ c: explicit, m, n, segments: [{ a, b, k }], precision: 'bf16' })
    t.same(Array.from(viaEnv), Array.from(explicit), 'ERNIE_PRECISION=bf16 is precision bf16')
    process.env.ERNIE_PRECISION = 'half'
    t.throws(() => kernels.sync.gemm({ c: viaEnv, m, n, segments: [{ a, b, k }] }), { name: 'RangeError', message: /ERNIE_PRECISION must be 'fp32', 'bf16' or 'auto', got "half"/ })
  } finally {
    if (saved === undefined) delete process.env.ERNIE_PRECISION
    else process.env.ERNIE_PRECISION = saved
  }
  t.throws(() => kernels.sync.gemm({ c: viaEnv, m, n, segments: [{ a, b, k }], precision: 'tf32' as never }), { name: 'RangeError', message: /precision must be 'fp32', 'bf16' or 'auto', got "tf32"/ })
  t.equal(kernels.precisionInForce('fp32'), 'fp32')
  t.equal(kernels.precisionInForce('bf16'), 'bf16')
  t.equal(kernels.precisionInForce('auto'), kernels.activeIsa() === 'avx512bf16' ? 'bf16' : 'fp32', "'auto' is bf16 exactly where the ISA has a bf16 dot product")
})

t.test('k = 0 gives zeros, or leaves C when accumulating', async (t) => {
  const c = nanFilled(6)
  kernels.sync.gemm({ c, m: 2, n: 3, segments: [{ a: new Float32Array(0), b: new Float32Array(0), k: 0 }] })
  t.same(Array.from(c), [0, 0, 0, 0, 0, 0])
  const d = Float32Array.from([1, 2, 3, 4, 5, 6])
  kernels.sync.gemm({ c: d, m: 2, n: 3, accumulate: true, segments: [{ a: new Float32Array(0), b: new Float32Array(0), k: 0 }] })
  t.same(Array.from(d), [1, 2, 3, 4, 5, 6])
})

t.test('the async form runs off the JS thread and gives the same result', async (t) => {
  const m = 300, n = 200, k = 150
  const a = randomF32(m * k, 21), b = toBf16(randomF32(n * k, 22))
  const c1 = nanFilled(m * n), c2 = nanFilled(m * n)
  const p = kernels.gemm({ c: c1, m, n, segments: [{ a, b, k }] })
  t.type(p, Promise)
  await p
  t.ok(await loopTurnsDuring(() => kernels.gemm({ c: c1, m, n, segments: [{ a, b, k }] })), 'the event loop turns while a product is in flight')
  kernels.sync.gemm({ c: c2, m, n, segments: [{ a, b, k }] })
  t.same(Array.from(c1), Array.from(c2))
  // Two concurrent calls share the pool and both finish correctly.
  const c3 = nanFilled(m * n), c4 = nanFilled(m * n)
  await Promise.all([kernels.gemm({ c: c3, m, n, segments: [{ a, b, k }] }), kernels.gemm({ c: c4, m, n, segments: [{ a, b, k }] })])
  t.same(Array.from(c3), Array.from(c2))
  t.same(Array.from(c4), Array.from(c2))
})

t.test('bad arguments throw typed errors naming the argument', async (t) => {
  const a = new Float32Array(6), b = new Float32Array(6), c = new Float32Array(4)
  const call = (o: unknown) => () => kernels.sync.gemm(o as kernels.GemmOptions)
  t.throws(call(undefined), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /gemm: expected one options object/ })
  t.throws(call({ c: [0, 0, 0, 0], m: 2, n: 2, segments: [{ a, b, k: 3 }] }), { name: 'TypeError', message: /'c' must be a Float32Array, got an Array/ })
  t.throws(call({ c, m: 2, n: 2, segments: [{ a: new Float64Array(6), b, k: 3 }] }), { name: 'TypeError', message: /'segments\[0\]\.a' must be a Float32Array or a Uint16Array/ })
  t.throws(call({ c, m: 2, n: 2, segments: [{ a, b: new Float32Array(5), k: 3 }] }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /'segments\[0\]\.b' has 5 elements, expected n \* k = 6/ })
  t.throws(call({ c: new Float32Array(5), m: 2, n: 2, segments: [{ a, b, k: 3 }] }), { name: 'RangeError', message: /'c' has 5 elements/ })
  t.throws(call({ c, m: -1, n: 2, segments: [{ a, b, k: 3 }] }), { name: 'RangeError', message: /'m' must be in/ })
  t.throws(call({ c, m: 2.5, n: 2, segments: [{ a, b, k: 3 }] }), { name: 'RangeError', message: /'m' must be an integer/ })
  t.throws(call({ c, m: '2', n: 2, segments: [{ a, b, k: 3 }] }), { name: 'TypeError', message: /'m' must be an integer, got a string/ })
  t.throws(call({ c, m: 2, n: 2, segments: [] }), { name: 'RangeError', message: /'segments' must have 1 to 8 elements/ })
  t.throws(call({ c, m: 2, n: 2, segments: [{ a, b, k: 3, aLayout: 'nm' }] }), { name: 'RangeError', message: /'segments\[0\]\.aLayout' must be 'mk' or 'km'/ })
  const shared = new Float32Array(10)
  t.throws(call({ c: shared.subarray(0, 4), m: 2, n: 2, segments: [{ a: shared.subarray(2, 8), b, k: 3 }] }), { name: 'RangeError', message: /must not share memory/ })
  await t.rejects(kernels.gemm({ c, m: 2, n: 2, segments: [{ a, b: new Float32Array(1), k: 3 }] }), { name: 'RangeError' })
  t.throws(() => kernels.setIsa('sse9' as kernels.Isa), { name: 'RangeError', message: /unknown ISA 'sse9'/ })
})
