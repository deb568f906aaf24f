// LoRA linear layer: forward and backward against the float64 references in test/reference.ts
// and finite differences.
import t from 'tap'
import { kernels } from '../lib/index'
import { forEachIsa, nanFilled, firstNaN, randomF32, relErr, toBf16, valuesOf } from './helpers'
import { loraKeep, refLoraBackward, refLoraForward, type LoraProblem } from './reference'

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

t.test('forward matches float64 (f32 and bf16 base weights)', async (t) => {
  await forEachIsa(async (isa) => {
    for (const [m, n, k, r] of [[1, 1, 1, 1], [37, 29, 51, 4], [130, 70, 300, 16]]) {
      for (const bf16 of [false, true]) {
        const p = problem(m, n, k, r, m + n, bf16)
        const out = nanFilled(m * n)
        kernels.sync.loraForward({ ...call(p), out })
        t.equal(firstNaN(out), -1, 'every element written')
        const err = relErr(out, refLoraForward(values(p)).y)
        t.ok(err < (isa === 'avx512bf16' && bf16 ? 1e-2 : 2e-5), `${isa} ${m}x${n}x${k} r=${r} ${bf16 ? 'bf16' : 'f32'}: ${err.toExponential(2)}`)
      }
    }
  })
})

t.test('backward matches float64 gradients', async (t) => {
  await forEachIsa(async (isa) => {
    for (const [m, n, k, r] of [[3, 5, 7, 2], [45, 33, 70, 8]]) {
      const p = problem(m, n, k, r, 7 * m, false)
      const R = randomF32(m * n, 99)
      const base = call(p)
      kernels.sync.loraForward({ ...base, out: new Float32Array(m * n) })
      const dx = nanFilled(m * k), dA = new Float32Array(r * k), dB = new Float32Array(n * r)
      kernels.sync.loraBackward({ ...base, dout: R, dx, dA, dB })
      const ref = refLoraBackward(values(p), R)
      for (const [name, got, want] of [['dx', dx, ref.dx], ['dA', dA, ref.dA], ['dB', dB, ref.dB]] as const) {
        const err = relErr(got, want)
        t.ok(err < 2e-5, `${isa} ${m}x${n}x${k} r=${r} ${name}: ${err.toExponential(2)}`)
      }
      // dA and dB accumulate; dx accumulates on request
      kernels.sync.loraBackward({ ...base, dout: R, dx, dxAccumulate: true, dA, dB })
      t.ok(relErr(dA, ref.dA.map((v) => 2 * v)) < 2e-5, `${isa}: dA accumulates`)
      t.ok(relErr(dx, ref.dx.map((v) => 2 * v)) < 2e-5, `${isa}: dx accumulates`)
    }
  })
})

t.test('backward agrees with central finite differences of the float64 forward', async (t) => {
  const p = problem(4, 3, 5, 2, 5, false)
  const R = randomF32(4 * 3, 17)
  const base = call(p)
  kernels.sync.loraForward({ ...base, out: new Float32Array(12) })
  const dx = new Float32Array(20), dA = new Float32Array(10), dB = new Float32Array(6)
  kernels.sync.loraBackward({ ...base, dout: R, dx, dA, dB })
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

t.test('dropout on the adapter input: forward and backward match float64 with the same mask', async (t) => {
  const [m, n, k, r, p, seed] = [9, 7, 13, 3, 0.3, 12345]
  const prob = problem(m, n, k, r, 77, false)
  const xs = valuesOf(prob.x)
  // The adapter's input after the engine's mask: kept elements scaled by 1 / (1 - p).
  const drop = (xv: Float64Array) => Float64Array.from(xv, (v, i) => (loraKeep(BigInt(seed), i, p) ? v / (1 - p) : 0))
  const dropped = drop(xs)
  const kept = dropped.filter((v, i) => xs[i] !== 0 && v !== 0).length
  t.ok(kept > 0.5 * m * k && kept < 0.9 * m * k, `about 70% kept (${kept} of ${m * k})`)
  const base = { ...call(prob), dropout: p, seed }
  const out = nanFilled(m * n)
  kernels.sync.loraForward({ ...base, out })
  // y = x W^T + s (drop(x) A^T) B^T
  const a = valuesOf(prob.a)
  const ref = refLoraForward({ ...values(prob), xd: dropped }).y
  t.ok(relErr(out, ref) < 2e-5, 'forward')
  // gradients of sum(y * R), by central differences of the float64 forward above
  const R = randomF32(m * n, 5)
  const dx = new Float32Array(m * k), dA = new Float32Array(r * k), dB = new Float32Array(n * r)
  kernels.sync.loraBackward({ ...base, dout: R, dx, dA, dB })
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
