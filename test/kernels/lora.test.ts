// LoRA linear layer, y = x W^T + scale (x A^T) B^T: forward and backward on every (ISA,
// precision), each product held to the precision contract (README "Precision") the way
// test/kernels/gemm.test.ts holds the GEMM: its operands rounded to bf16 or not as roundsToBf16
// says for their storage (x W^T follows W's dtype; x A^T, u B^T and the gradients' products are f32
// x f32, so under 'auto' on avx512bf16 they stay f32 while a bf16 W's product rounds), the float64
// product of those operands as the reference, within 3x the error of the same operands summed
// in f32, + 2^-24. Finite differences check the gradients' maths at fp32.
import t from 'tap'
import { kernels } from '../../lib/index'
import { firstNaN, forEachIsaAndPrecision, nanFilled, randomF32, relErr, roundsToBf16, toBf16, valuesOf } from '../helpers/helpers'
import { loraKeep, refLoraBackward, refLoraForward, type LoraProblem } from '../helpers/reference'
import { checkContract, contractRef, type At } from '../helpers/precision-helpers'

interface Problem {
  m: number
  n: number
  k: number
  r: number
  scale: number
  x: Float32Array
  w: Float32Array | Uint16Array
  a: Float32Array
  b: Float32Array
}

function problem(m: number, n: number, k: number, r: number, seed: number, bf16: boolean): Problem {
  const w = randomF32(n * k, seed + 1, 0.5)
  return {
    m, n, k, r, scale: 16 / r,
    x: randomF32(m * k, seed),
    w: bf16 ? toBf16(w) : w,
    a: randomF32(r * k, seed + 2, 0.5),
    b: randomF32(n * r, seed + 3, 0.5),
  }
}

// The problem as the float64 references take it (a bf16 W decoded); x, A and B replaceable.
function values(p: Problem, x = valuesOf(p.x), a = valuesOf(p.a), b = valuesOf(p.b)): LoraProblem {
  return { m: p.m, n: p.n, k: p.k, r: p.r, scale: p.scale, x, w: valuesOf(p.w), a, b }
}

function call(p: Problem) {
  return { m: p.m, n: p.n, k: p.k, rank: p.r, scale: p.scale, x: p.x, weight: p.w, loraA: p.a, loraB: p.b, u: new Float32Array(p.m * p.r) }
}

/** Element (i, p) of a row-major matrix with rows of `ld`; `atT`: of its transpose. */
const at = (v: ArrayLike<number>, ld: number): At => (i, p) => v[i * ld + p]
const atT = (v: ArrayLike<number>, ld: number): At => (i, p) => v[p * ld + i]

/**
 * g = dout B [m, r], the intermediate the backward multiplies by x (dA) and A (dx). The kernel
 * forms it with the GEMM and does not return it; the same GEMM call gives the same values (each
 * element is summed in the same order whatever else runs), and it is held to the contract here
 * too. (From a float64 g instead, an f32 difference in one element can flip its bf16 rounding
 * and move a bf16 product by a bf16 ulp, which no f32 bound allows.)
 */
function gOf(t: Parameters<typeof checkContract>[0], what: string, p: Problem, dout: Float32Array, precision: kernels.Precision, roundF32: boolean): Float32Array {
  const g = nanFilled(p.m * p.r)
  kernels.sync.gemm({ c: g, m: p.m, n: p.r, segments: [{ a: dout, b: p.b, k: p.n, bLayout: 'kn' }], precision })
  checkContract(t, `${what} g = dout B`, g, contractRef(p.m, p.r, [{ k: p.n, a: at(dout, p.n), b: atT(p.b, p.r), round: roundF32 }]))
  return g
}

t.test("forward: u = x A^T and y = x W^T + scale u B^T are the contract's products (f32 and bf16 W, every precision)", async (t) => {
  await forEachIsaAndPrecision(async (isa, precision) => {
    const ff = roundsToBf16(precision, isa, false, false)
    const failures = t.counts.fail
    for (const [m, n, k, r] of [[1, 1, 1, 1], [37, 29, 51, 4], [130, 70, 300, 16]]) {
      for (const bf16 of [false, true]) {
        const p = problem(m, n, k, r, m + n, bf16)
        const out = nanFilled(m * n), u = nanFilled(m * r)
        kernels.sync.loraForward({ ...call(p), u, out, precision })
        const what = `${isa} ${precision} ${m}x${n}x${k} r=${r} W ${bf16 ? 'bf16' : 'f32'}`
        if (firstNaN(out) >= 0 || firstNaN(u) >= 0) t.fail(`${what}: an element not written`)
        const x = valuesOf(p.x), w = valuesOf(p.w)
        checkContract(t, `${what} u`, u, contractRef(m, r, [{ k, a: at(x, k), b: at(valuesOf(p.a), k), round: ff }]))
        // y from the kernel's own u (an output): a second product on it, rounded as u B^T says.
        const y = contractRef(m, n, [
          { k, a: at(x, k), b: at(w, k), round: roundsToBf16(precision, isa, false, bf16) },
          { k: r, a: at(u, r), b: at(valuesOf(p.b), r), scale: p.scale, round: ff },
        ])
        checkContract(t, `${what} y`, out, y)
      }
    }
    if (t.counts.fail === failures) t.pass(`${isa} ${precision}: u and y as the contract says (x A^T, u B^T ${ff ? 'rounded' : 'f32'})`)
  })
})

t.test("backward: dB, dA and dx are the contract's products, and accumulate (f32 and bf16 W, every precision)", async (t) => {
  await forEachIsaAndPrecision(async (isa, precision) => {
    const ff = roundsToBf16(precision, isa, false, false)
    const failures = t.counts.fail
    for (const [m, n, k, r] of [[3, 5, 7, 2], [45, 33, 70, 8]]) {
      for (const bf16 of [false, true]) {
        const p = problem(m, n, k, r, 7 * m, bf16)
        const what = `${isa} ${precision} ${m}x${n}x${k} r=${r} W ${bf16 ? 'bf16' : 'f32'}`
        const R = randomF32(m * n, 99)
        const base = call(p)
        kernels.sync.loraForward({ ...base, out: new Float32Array(m * n), precision })
        const dx = nanFilled(m * k), dA = new Float32Array(r * k), dB = new Float32Array(n * r)
        kernels.sync.loraBackward({ ...base, dout: R, dx, dA, dB, precision })
        if (firstNaN(dx) >= 0) t.fail(`${what}: a dx element not written`)
        const g = gOf(t, what, p, R, precision, ff)
        const x = valuesOf(p.x), w = valuesOf(p.w), a = valuesOf(p.a)
        // dB = scale dout^T u, dA = scale g^T x, dx = dout W + scale g A (dB and dA added to, dx on request)
        const dBTerms = [{ k: m, a: atT(R, n), b: atT(base.u, r), scale: p.scale, round: ff }]
        const dATerms = [{ k: m, a: atT(g, r), b: atT(x, k), scale: p.scale, round: ff }]
        const dxTerms = [
          { k: n, a: at(R, n), b: atT(w, k), round: roundsToBf16(precision, isa, false, bf16) },
          { k: r, a: at(g, r), b: atT(a, k), scale: p.scale, round: ff },
        ]
        checkContract(t, `${what} dB`, dB, contractRef(n, r, dBTerms))
        checkContract(t, `${what} dA`, dA, contractRef(r, k, dATerms))
        checkContract(t, `${what} dx`, dx, contractRef(m, k, dxTerms))
        const [dA1, dB1, dx1] = [dA.slice(), dB.slice(), dx.slice()]
        kernels.sync.loraBackward({ ...base, dout: R, dx, dxAccumulate: true, dA, dB, precision })
        checkContract(t, `${what} dB accumulates`, dB, contractRef(n, r, dBTerms, dB1))
        checkContract(t, `${what} dA accumulates`, dA, contractRef(r, k, dATerms, dA1))
        checkContract(t, `${what} dx accumulates on request`, dx, contractRef(m, k, dxTerms, dx1))
      }
    }
    if (t.counts.fail === failures) t.pass(`${isa} ${precision}: dB, dA, dx as the contract says (f32 x f32 products ${ff ? 'rounded' : 'f32'})`)
  })
})

t.test('backward agrees with central finite differences of the float64 forward (fp32)', async (t) => {
  // Finite differences need the smooth function, not its bf16-rounded steps: the gradients'
  // maths is checked at fp32, whose products are f32 FMA on every ISA.
  const p = problem(4, 3, 5, 2, 5, false)
  const R = randomF32(4 * 3, 17)
  const base = call(p)
  kernels.sync.loraForward({ ...base, out: new Float32Array(12), precision: 'fp32' })
  const dx = new Float32Array(20), dA = new Float32Array(10), dB = new Float32Array(6)
  kernels.sync.loraBackward({ ...base, dout: R, dx, dA, dB, precision: 'fp32' })
  const loss = (x: Float64Array, a: Float64Array, b: Float64Array) => refLoraForward(values(p, x, a, b)).y.reduce((s, v, i) => s + v * R[i], 0)
  const h = 1e-6
  const check = (name: string, which: 0 | 1 | 2, got: Float32Array) => {
    const vals = [valuesOf(p.x), valuesOf(p.a), valuesOf(p.b)]
    const fd = new Float64Array(got.length)
    for (let i = 0; i < got.length; i++) {
      const plus = vals.map((v) => Float64Array.from(v)), minus = vals.map((v) => Float64Array.from(v))
      plus[which][i] += h
      minus[which][i] -= h
      fd[i] = (loss(plus[0], plus[1], plus[2]) - loss(minus[0], minus[1], minus[2])) / (2 * h)
    }
    const err = relErr(got, fd)
    t.ok(err < 1e-5, `${name} vs finite differences: ${err.toExponential(2)}`)
  }
  check('dx', 0, dx)
  check('dA', 1, dA)
  check('dB', 2, dB)
})

t.test('bad arguments name the field', async (t) => {
  const p = problem(2, 3, 4, 2, 1, false)
  const base = call(p)
  t.throws(() => kernels.sync.loraForward({ ...base, out: new Float32Array(5) }), { name: 'RangeError', message: /loraForward: 'out' has 5 elements, expected m \* n = 6/ })
  t.throws(() => kernels.sync.loraForward({ ...base, loraA: new Float32Array(7), out: new Float32Array(6) }), { name: 'RangeError', message: /'loraA' has 7 elements, expected rank \* k = 8/ })
  t.throws(() => kernels.sync.loraForward({ ...base, rank: 0, out: new Float32Array(6) }), { name: 'RangeError', message: /'rank' must be in \[1, 4096\]/ })
  t.throws(() => kernels.sync.loraForward({ ...base, scale: 'x' as unknown as number, out: new Float32Array(6) }), { name: 'TypeError', message: /'scale' must be a number/ })
  t.throws(() => kernels.sync.loraForward({ ...base, out: base.x.subarray(0, 6) }), { name: 'RangeError', message: /must not share memory/ })
  await t.rejects(kernels.loraBackward({ ...base, dout: new Float32Array(6), dA: new Float32Array(8), dB: new Float32Array(5) }), { name: 'RangeError', message: /'dB' has 5 elements/ })
})

// The forward packs x once for u = x A^T and y, the backward dy once for g = dy B and dx (cpu
// SharedPackedA): the products must be those of the same GEMMs run apart, bit for bit, over shapes
// where the GEMM takes each of its paths with the shared blocks (row blocks on few columns, then
// tiles over several K slices and several chunks of rows, the last block ragged or joined to the
// one before; 4100 rows: past the f32 packing's chunk).
t.test('x and dy packed once per call: the same bits as the products run apart, on every GEMM path', async (t) => {
  await forEachIsaAndPrecision(async (isa, precision) => {
    const failures = t.counts.fail
    for (const [m, n, k, r] of [[2000, 300, 1100, 16], [1934, 300, 1100, 16], [4100, 300, 300, 8], [300, 40, 70, 4]]) {
      const p = problem(m, n, k, r, 11, true)
      const what = `${isa} ${precision} ${m}x${n}x${k} r=${r}`
      const base = call(p)
      const y = new Float32Array(m * n)
      kernels.sync.loraForward({ ...base, out: y, precision })
      const u = new Float32Array(m * r), yApart = new Float32Array(m * n)
      kernels.sync.gemm({ c: u, m, n: r, segments: [{ a: p.x, b: p.a, k }], precision })
      kernels.sync.gemm({ c: yApart, m, n, segments: [{ a: p.x, b: p.w, k }, { a: u, b: p.b, k: r, scale: p.scale }], precision })
      const dout = randomF32(m * n, 5)
      const dx = new Float32Array(m * k)
      kernels.sync.loraBackward({ ...base, dout, dx, dA: new Float32Array(r * k), dB: new Float32Array(n * r), precision })
      const g = new Float32Array(m * r), dxApart = new Float32Array(m * k)
      kernels.sync.gemm({ c: g, m, n: r, segments: [{ a: dout, b: p.b, k: n, bLayout: 'kn' }], precision })
      kernels.sync.gemm({ c: dxApart, m, n: k, segments: [{ a: dout, b: p.w, k: n, bLayout: 'kn' }, { a: g, b: p.a, k: r, bLayout: 'kn', scale: p.scale }], precision })
      for (const [name, got, want] of [['u', base.u, u], ['y', y, yApart], ['dx', dx, dxApart]] as const) {
        const i = got.findIndex((v, j) => !Object.is(v, want[j]))
        if (i >= 0) t.fail(`${what} ${name}[${i}] = ${got[i]}, apart ${want[i]}`)
      }
    }
    if (t.counts.fail === failures) t.pass(`${isa} ${precision}: u, y and dx as their GEMMs apart`)
  })
})

t.test('dropout on the adapter input: the products take the dropped input (every precision); gradients vs finite differences (fp32)', async (t) => {
  const [m, n, k, r, p, seed] = [9, 7, 13, 3, 0.3, 12345]
  const prob = problem(m, n, k, r, 77, false)
  const xs = valuesOf(prob.x)
  // The adapter's input after the engine's mask: kept elements times 1 / (1 - p), in f32 as the
  // kernel computes them (float32 dropout, its scale and the product each rounded to f32).
  const f = Math.fround
  const keepScale = f(1 / f(1 - f(p)))
  const keep = (i: number) => loraKeep(BigInt(seed), i, f(p))
  const drop = (xv: Float64Array) => Float64Array.from(xv, (v, i) => (loraKeep(BigInt(seed), i, p) ? v / (1 - p) : 0))
  const xd = Float64Array.from(xs, (v, i) => (keep(i) ? f(v * keepScale) : 0))
  const kept = xd.filter((v, i) => xs[i] !== 0 && v !== 0).length
  t.ok(kept > 0.5 * m * k && kept < 0.9 * m * k, `about 70% kept (${kept} of ${m * k})`)
  const base = { ...call(prob), dropout: p, seed }
  const R = randomF32(m * n, 5)
  const w = valuesOf(prob.w), a = valuesOf(prob.a), b = valuesOf(prob.b)

  await forEachIsaAndPrecision(async (isa, precision) => {
    const ff = roundsToBf16(precision, isa, false, false), rw = roundsToBf16(precision, isa, false, false) // W is f32 here
    const what = `${isa} ${precision}`
    const failures = t.counts.fail
    const out = nanFilled(m * n)
    kernels.sync.loraForward({ ...base, out, precision })
    // u = drop(x) A^T; y = x W^T + s u B^T (the base product on x itself)
    checkContract(t, `${what} u`, base.u, contractRef(m, r, [{ k, a: at(xd, k), b: at(a, k), round: ff }]))
    checkContract(t, `${what} y`, out, contractRef(m, n, [{ k, a: at(xs, k), b: at(w, k), round: rw }, { k: r, a: at(base.u, r), b: at(b, r), scale: prob.scale, round: ff }]))
    const dx = nanFilled(m * k), dA = new Float32Array(r * k), dB = new Float32Array(n * r)
    kernels.sync.loraBackward({ ...base, dout: R, dx, dA, dB, precision })
    const g = gOf(t, what, prob, R, precision, ff)
    checkContract(t, `${what} dB`, dB, contractRef(n, r, [{ k: m, a: atT(R, n), b: atT(base.u, r), scale: prob.scale, round: ff }]))
    checkContract(t, `${what} dA = s g^T drop(x)`, dA, contractRef(r, k, [{ k: m, a: atT(g, r), b: atT(xd, k), scale: prob.scale, round: ff }]))
    // dx = dout W + the adapter's path s g A through the mask: the two products apart, then the
    // kept elements' path times keepScale added in f32.
    const baseDx = contractRef(m, k, [{ k: n, a: at(R, n), b: atT(w, k), round: rw }])
    const path = contractRef(m, k, [{ k: r, a: at(g, r), b: atT(a, k), scale: prob.scale, round: ff }])
    const ref = { exact: new Float64Array(m * k), f32: new Float64Array(m * k) }
    for (let i = 0; i < m * k; i++) {
      ref.exact[i] = baseDx.exact[i] + (keep(i) ? path.exact[i] * keepScale : 0)
      ref.f32[i] = f(baseDx.f32[i] + (keep(i) ? f(path.f32[i] * keepScale) : 0))
    }
    checkContract(t, `${what} dx`, dx, ref)
    if (t.counts.fail === failures) t.pass(`${what}: u, y, dB, dA and dx with dropout as the contract says`)
  })

  // The gradients' maths, by central differences of the float64 forward (fp32: the smooth function).
  const ua = new Float32Array(m * r)
  const ref = refLoraForward({ ...values(prob), xd: drop(xs) }).y
  const out = nanFilled(m * n)
  kernels.sync.loraForward({ ...base, u: ua, out, precision: 'fp32' })
  t.ok(relErr(out, ref) < 2e-5, 'fp32 forward vs the float64 reference')
  const dx = new Float32Array(m * k), dA = new Float32Array(r * k), dB = new Float32Array(n * r)
  kernels.sync.loraBackward({ ...base, u: ua, dout: R, dx, dA, dB, precision: 'fp32' })
  const loss = (xv: Float64Array, av: Float64Array) =>
    refLoraForward({ ...values(prob, xv, av), xd: drop(xv) }).y.reduce((s, v, i) => s + v * R[i], 0)
  const h = 1e-6
  const fdx = new Float64Array(m * k), fdA = new Float64Array(r * k)
  for (let i = 0; i < m * k; i++) {
    const up = Float64Array.from(xs), dn = Float64Array.from(xs)
    up[i] += h
    dn[i] -= h
    fdx[i] = (loss(up, a) - loss(dn, a)) / (2 * h)
  }
  for (let i = 0; i < r * k; i++) {
    const up = Float64Array.from(a), dn = Float64Array.from(a)
    up[i] += h
    dn[i] -= h
    fdA[i] = (loss(xs, up) - loss(xs, dn)) / (2 * h)
  }
  t.ok(relErr(dx, fdx) < 1e-5, `dx with dropout vs finite differences: ${relErr(dx, fdx).toExponential(2)}`)
  t.ok(relErr(dA, fdA) < 1e-5, `dA with dropout vs finite differences: ${relErr(dA, fdA).toExponential(2)}`)
  t.throws(() => kernels.sync.loraForward({ ...base, dropout: 1, out }), { name: 'RangeError', message: /'dropout' must be in \[0, 1\)/ })
})
