// GEMM against a float64 reference: every layout and dtype, on every ISA this CPU supports,
// at sizes that are not multiples of any tile or block (K past KC, N past a tile, M past MC).
import t from 'tap'
import { kernels } from '../lib/index'
import { firstNaN, forEachIsa, loopTurnsDuring, nanFilled, randomF32, refGemm, relErr, toBf16, valuesOf } from './helpers'

type Operand = Float32Array | Uint16Array

function makeOperand(rows: number, k: number, seed: number, bf16: boolean): Operand {
  const v = randomF32(rows * k, seed)
  return bf16 ? toBf16(v) : v
}

// Element (r, p) of a logical [rows, k] operand stored plain ([rows, k]) or transposed ([k, rows]).
function accessor(values: Float64Array, rows: number, k: number, transposed: boolean) {
  return transposed ? (r: number, p: number) => values[p * rows + r] : (r: number, p: number) => values[r * k + p]
}

// A bf16 weight (B) on the AVX512_BF16 path rounds A to bf16 too: allow for that.
function bound(isa: string, anyBf16: boolean): number {
  return isa === 'avx512bf16' && anyBf16 ? 1e-2 : 2e-5
}

const shapes: [number, number, number][] = [
  [1, 1, 1],
  [7, 13, 5],
  [37, 45, 29],
  [131, 67, 500], // few rows (one region, A packed per thread), two K slices
  [250, 33, 40], // several row blocks with a ragged last one
  [300, 45, 900], // the shared-slices path over three or four K slices
  [300, 500, 40], // few tiles of 256 columns: narrower ones
  [9, 3100, 17], // many column tiles, the last one ragged
  [11000, 20, 30], // rows past the 4 MB packing budget: several row chunks on every ISA
  [250, 11000, 8], // columns past it
]

t.test('C = A . B^T matches float64 for every layout and dtype', async (t) => {
  await forEachIsa(async (isa) => {
    let seed = 1
    for (const [m, n, k] of shapes) {
      for (const aLayout of ['mk', 'km'] as const)
        for (const bLayout of ['nk', 'kn'] as const)
          for (const aBf16 of [false, true])
            for (const bBf16 of [false, true]) {
              if (m * n * k > 200000 && (aLayout !== 'mk' || aBf16)) continue // keep the suite fast
              const a = makeOperand(m, k, seed++, aBf16)
              const b = makeOperand(n, k, seed++, bBf16)
              const c = nanFilled(m * n)
              kernels.sync.gemm({ c, m, n, segments: [{ a, b, k, aLayout, bLayout }] })
              const ref = refGemm(
                m,
                n,
                k,
                accessor(valuesOf(a), m, k, aLayout === 'km'),
                accessor(valuesOf(b), n, k, bLayout === 'kn'),
              )
              const what = `${isa} ${m}x${n}x${k} ${aLayout}/${bLayout} a:${aBf16 ? 'bf16' : 'f32'} b:${bBf16 ? 'bf16' : 'f32'}`
              const nan = firstNaN(c)
              if (nan >= 0) t.fail(`${what}: element ${nan} not written`)
              const err = relErr(c, ref)
              if (!(err <= bound(isa, bBf16))) t.fail(`${what}: relative error ${err}`)
            }
      t.pass(`${isa} ${m}x${n}x${k}: all layouts and dtypes within bounds`)
    }
  })
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
      kernels.sync.gemm({ c, m, n, segments: [{ a, b, k }] })
      const ref = refGemm(m, n, k, accessor(valuesOf(a), m, k, false), accessor(valuesOf(b), n, k, false))
      const err = relErr(c, ref)
      t.ok(firstNaN(c) === -1 && err <= bound(kernels.activeIsa(), true), `${threads} threads, ${m}x${n}x${k}: relative error ${err.toExponential(2)}`)
    }
  } finally {
    kernels.setNumThreads(before)
  }
})

t.test('alpha, accumulate and several K-segments (the fused LoRA form)', async (t) => {
  await forEachIsa(async (isa) => {
    // m = 53 takes the few-rows schedule, m = 300 the shared-slices one
    for (const m of [53, 300]) {
      const n = 70, k = 91, r = 5
      const x = randomF32(m * k, 11), w = toBf16(randomF32(n * k, 12))
      const u = randomF32(m * r, 13), bl = randomF32(n * r, 14)
      const c0 = randomF32(m * n, 15)
      const c = Float32Array.from(c0)
      kernels.sync.gemm({ c, m, n, alpha: 0.5, accumulate: true, segments: [{ a: x, b: w, k }, { a: u, b: bl, k: r }] })
      const base = refGemm(m, n, k, accessor(valuesOf(x), m, k, false), accessor(valuesOf(w), n, k, false))
      const lora = refGemm(m, n, r, accessor(valuesOf(u), m, r, false), accessor(valuesOf(bl), n, r, false))
      const ref = base.map((v, i) => c0[i] + 0.5 * (v + lora[i]))
      const err = relErr(c, ref)
      t.ok(err <= bound(isa, true), `${isa} m=${m}: relative error ${err.toExponential(2)}`)
    }
  })
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
