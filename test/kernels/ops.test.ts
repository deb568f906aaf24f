// The decoder's row ops (RMSNorm, RoPE, SwiGLU, embedding) against float64 references (those in
// test/helpers/reference.ts, the embedding's here), on every ISA this CPU supports, at sizes that
// are not multiples of any vector width.
// Each backward is checked against the analytic float64 gradient, and that gradient against
// central differences (of the float64 reference, and of the kernel's own f32 forward).
import t, { type Test } from 'tap'
import { kernels } from '../../lib/index'
import { firstNaN, forEachIsa, nanFilled, numericGrad, randomF32, relErr, rng, toBf16, valuesOf } from '../helpers/helpers'
import { refRmsnorm, refRmsnormBackward, refRope, refSwiglu } from '../helpers/reference'

type Weight = Float32Array | Uint16Array

const DIMS = [1, 7, 130, 1027]
const ROWS = [1, 5, 77]

/**
 * Fails unless every element was written and ||out - ref|| / ||scale|| <= bound. `scale`
 * (default: ref) is the size of the terms the result is made of, where they cancel.
 */
function close(t: Test, what: string, out: ArrayLike<number>, ref: ArrayLike<number>, bound: number, scale?: ArrayLike<number>): void {
  const nan = firstNaN(out)
  if (nan >= 0) {
    t.fail(`${what}: element ${nan} not written`)
    return
  }
  const err = scale ? norm(Array.from(ref, (r, i) => out[i] - r)) / (norm(scale) || 1) : relErr(out, ref)
  t.ok(err <= bound, `${what}: relative error ${err.toExponential(2)} <= ${bound}`)
}

function norm(a: ArrayLike<number>): number {
  let s = 0
  for (let i = 0; i < a.length; i++) s += a[i] * a[i]
  return Math.sqrt(s)
}

function bitwiseEqual(a: Float32Array, b: Float32Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength))
}

/** Central differences through an f32 kernel: the step actually taken is what f32 can represent. */
function numericGradF32(v: Float32Array, loss: () => number, h: number): Float64Array {
  const g = new Float64Array(v.length)
  for (let i = 0; i < v.length; i++) {
    const v0 = v[i]
    v[i] = v0 + h
    const hi = v[i]
    const up = loss()
    v[i] = v0 - h
    const lo = v[i]
    const down = loss()
    v[i] = v0
    g[i] = (up - down) / (hi - lo)
  }
  return g
}

function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let s = 0
  for (let i = 0; i < a.length; i++) s += a[i] * b[i]
  return s
}

// ---------------------------------------------------------------- RMSNorm

function makeWeight(dim: number, seed: number, bf16: boolean): Weight {
  const w = randomF32(dim, seed, 1.5)
  return bf16 ? toBf16(w) : w
}

t.test('rmsnormForward matches float64 (f32 and bf16 weights)', async (t) => {
  await forEachIsa(async (isa) => {
    let seed = 100
    for (const rows of ROWS)
      for (const dim of DIMS)
        for (const bf16 of [false, true]) {
          const eps = 1e-5
          const x = randomF32(rows * dim, seed++, 2)
          const weight = makeWeight(dim, seed++, bf16)
          const out = nanFilled(rows * dim)
          const rstd = nanFilled(rows)
          kernels.sync.rmsnormForward({ x, weight, rows, dim, eps, out, rstd })
          const ref = refRmsnorm(x, valuesOf(weight), rows, dim, eps)
          const what = `${isa} rows=${rows} dim=${dim} w:${bf16 ? 'bf16' : 'f32'}`
          close(t, `${what} out`, out, ref.y, 1e-6)
          close(t, `${what} rstd`, rstd, ref.rstd, 1e-6)
        }
  })
})

t.test('rmsnormForward in place (out === x) gives the out-of-place result', async (t) => {
  await forEachIsa(async (isa) => {
    const rows = 77, dim = 1027
    const x = randomF32(rows * dim, 7)
    const weight = makeWeight(dim, 8, true)
    const out = nanFilled(rows * dim)
    kernels.sync.rmsnormForward({ x, weight, rows, dim, eps: 1e-6, out })
    const inPlace = Float32Array.from(x)
    const rstd = nanFilled(rows)
    kernels.sync.rmsnormForward({ x: inPlace, weight, rows, dim, eps: 1e-6, out: inPlace, rstd })
    t.ok(bitwiseEqual(inPlace, out), `${isa}: in place equals out of place`)
    t.equal(firstNaN(rstd), -1, `${isa}: rstd written`)
  })
})

t.test('rmsnormBackward matches the float64 gradient; dx accumulate, dweight adds', async (t) => {
  await forEachIsa(async (isa) => {
    let seed = 300
    for (const rows of ROWS)
      for (const dim of DIMS)
        for (const bf16 of [false, true]) {
          const eps = 1e-6
          const accumulate = (rows + dim) % 2 === 0 ? bf16 : !bf16 // both modes at every size
          const x = randomF32(rows * dim, seed++, 2)
          const weight = makeWeight(dim, seed++, bf16)
          const dout = randomF32(rows * dim, seed++)
          const rstd = nanFilled(rows)
          kernels.sync.rmsnormForward({ x, weight, rows, dim, eps, out: nanFilled(rows * dim), rstd })
          const dx0 = randomF32(rows * dim, seed++)
          const dw0 = randomF32(dim, seed++)
          const dx = accumulate ? Float32Array.from(dx0) : nanFilled(rows * dim)
          const dweight = Float32Array.from(dw0)
          kernels.sync.rmsnormBackward({ dout, x, weight, rstd, rows, dim, dx, dweight, accumulate })
          const ref = refRmsnormBackward(dout, x, valuesOf(weight), rows, dim, eps)
          const what = `${isa} rows=${rows} dim=${dim} w:${bf16 ? 'bf16' : 'f32'} accumulate=${accumulate}`
          // Compare the increments: dx0 and dw0 are O(1) and would hide errors in them.
          const dxInc = accumulate ? dx.map((v, i) => v - dx0[i]) : dx
          close(t, `${what} dx`, dxInc, ref.dx, 1e-5, ref.dxScale)
          close(t, `${what} dweight`, dweight.map((v, i) => v - dw0[i]), ref.dw, 1e-5)
        }
  })
})

t.test('rmsnorm: the analytic gradient agrees with central differences', async (t) => {
  const rows = 3, dim = 7, eps = 1e-5
  const c = randomF32(rows * dim, 41) // loss = sum(c * y)
  // float64 reference: tight
  {
    const x = Float64Array.from(randomF32(rows * dim, 42))
    const w = Float64Array.from(randomF32(dim, 43))
    const loss = () => dot(c, refRmsnorm(x, w, rows, dim, eps).y)
    const ref = refRmsnormBackward(c, x, w, rows, dim, eps)
    close(t, 'float64 dx vs differences', numericGrad(x, loss, 1e-6), ref.dx, 1e-7)
    close(t, 'float64 dw vs differences', numericGrad(w, loss, 1e-6), ref.dw, 1e-7)
  }
  // the kernels themselves: the backward against differences of the f32 forward
  await forEachIsa(async (isa) => {
    const x = randomF32(rows * dim, 44)
    const weight = randomF32(dim, 45)
    const out = new Float32Array(rows * dim)
    const loss = () => {
      kernels.sync.rmsnormForward({ x, weight, rows, dim, eps, out })
      return dot(c, out)
    }
    const rstd = new Float32Array(rows)
    kernels.sync.rmsnormForward({ x, weight, rows, dim, eps, out, rstd })
    const dx = nanFilled(rows * dim)
    const dweight = new Float32Array(dim)
    kernels.sync.rmsnormBackward({ dout: c, x, weight, rstd, rows, dim, dx, dweight })
    close(t, `${isa} dx vs differences of the kernel`, dx, numericGradF32(x, loss, 4e-3), 2e-3)
    close(t, `${isa} dweight vs differences of the kernel`, dweight, numericGradF32(weight, loss, 4e-3), 2e-3)
  })
})

t.test("Qwen3's per-head q_norm / k_norm: rows = B*T*heads, dim = head_dim", async (t) => {
  const B = 2, T = 5, H = 3, D = 128, eps = 1e-6
  const q = randomF32(B * T * H * D, 51, 3) // [B, T, H, D] as the q projection leaves it
  const weight = makeWeight(D, 52, true)
  const w = valuesOf(weight)
  const dout = randomF32(B * T * H * D, 53)
  // Reference written per (b, t, h), independently of the flattening the op relies on.
  const refY = new Float64Array(q.length)
  const refDx = new Float64Array(q.length)
  const refDw = new Float64Array(D)
  for (let b = 0; b < B; b++)
    for (let s = 0; s < T; s++)
      for (let h = 0; h < H; h++) {
        const base = ((b * T + s) * H + h) * D
        const head = q.subarray(base, base + D)
        const g = dout.subarray(base, base + D)
        refY.set(refRmsnorm(head, w, 1, D, eps).y, base)
        const bw = refRmsnormBackward(g, head, w, 1, D, eps)
        refDx.set(bw.dx, base)
        for (let i = 0; i < D; i++) refDw[i] += bw.dw[i]
      }
  await forEachIsa(async (isa) => {
    const rows = B * T * H
    const out = nanFilled(q.length)
    const rstd = nanFilled(rows)
    kernels.sync.rmsnormForward({ x: q, weight, rows, dim: D, eps, out, rstd })
    close(t, `${isa} q_norm forward`, out, refY, 1e-6)
    const dx = nanFilled(q.length)
    const dweight = new Float32Array(D)
    kernels.sync.rmsnormBackward({ dout, x: q, weight, rstd, rows, dim: D, dx, dweight })
    close(t, `${isa} q_norm dx`, dx, refDx, 1e-5)
    close(t, `${isa} q_norm dweight (summed over tokens and heads)`, dweight, refDw, 1e-5)
  })
})

t.test('rmsnormBackward: dweight is bitwise the same for any thread count', async (t) => {
  const defaultThreads = kernels.numThreads()
  const rows = 301, dim = 1027
  const x = randomF32(rows * dim, 61)
  const weight = makeWeight(dim, 62, false)
  const dout = randomF32(rows * dim, 63)
  const rstd = new Float32Array(rows)
  kernels.sync.rmsnormForward({ x, weight, rows, dim, eps: 1e-5, out: new Float32Array(rows * dim), rstd })
  const results: Float32Array[] = []
  try {
    for (const threads of [1, 2, 3]) {
      kernels.setNumThreads(threads)
      const dweight = randomF32(dim, 64)
      kernels.sync.rmsnormBackward({ dout, x, weight, rstd, rows, dim, dx: new Float32Array(rows * dim), dweight })
      results.push(dweight)
    }
  } finally {
    kernels.setNumThreads(defaultThreads)
  }
  t.ok(bitwiseEqual(results[0], results[1]), '1 thread vs 2')
  t.ok(bitwiseEqual(results[0], results[2]), '1 thread vs 3')
})

// ---------------------------------------------------------------- RoPE

function randomPositions(n: number, seed: number, max: number): Int32Array {
  const r = rng(seed)
  return Int32Array.from({ length: n }, () => Math.floor(r() * max))
}

const HEAD_DIMS = [2, 10, 130, 1026]

t.test('ropeForward / ropeBackward match float64, both pairings', async (t) => {
  await forEachIsa(async (isa) => {
    let seed = 500
    for (const pairing of ['adjacent', 'half'] as const)
      for (const rows of ROWS)
        for (const headDim of HEAD_DIMS)
          for (const heads of [1, 3]) {
            if (rows * heads * headDim > 120000) continue // keep the float64 reference quick
            const theta = pairing === 'adjacent' ? 500000 : 1000000
            const positions = randomPositions(rows, seed++, 4096)
            const x = randomF32(rows * heads * headDim, seed++)
            const out = nanFilled(x.length)
            kernels.sync.ropeForward({ x, positions, heads, headDim, theta, pairing, out })
            const what = `${isa} ${pairing} rows=${rows} heads=${heads} headDim=${headDim}`
            close(t, `${what} forward`, out, refRope(x, positions, heads, headDim, theta, pairing), 1e-6)
            const dx = nanFilled(x.length)
            kernels.sync.ropeBackward({ dout: x, positions, heads, headDim, theta, pairing, dx })
            close(t, `${what} backward`, dx, refRope(x, positions, heads, headDim, theta, pairing, true), 1e-6)
          }
  })
})

t.test('RoPE stays accurate at positions up to 131072 (angles in double)', async (t) => {
  const positions = Int32Array.from([0, 1, 4097, 65537, 100003, 131071, 131072])
  const heads = 2, headDim = 128
  const x = randomF32(positions.length * heads * headDim, 71)
  await forEachIsa(async (isa) => {
    for (const pairing of ['adjacent', 'half'] as const)
      for (const theta of [10000, 500000, 1000000]) {
        const out = nanFilled(x.length)
        kernels.sync.ropeForward({ x, positions, heads, headDim, theta, pairing, out })
        const ref = refRope(x, positions, heads, headDim, theta, pairing)
        let worst = 0
        for (let i = 0; i < x.length; i++) worst = Math.max(worst, Math.abs(out[i] - ref[i]))
        // |x| < 1: f32 rounding gives ~1e-7; an f32 angle at 131072 would be off by ~4e-3.
        t.ok(worst <= 1e-6, `${isa} ${pairing} theta=${theta}: max error ${worst.toExponential(2)}`)
      }
  })
})

t.test('RoPE: backward(forward(x)) == x, in place, and the same as with out', async (t) => {
  await forEachIsa(async (isa) => {
    for (const pairing of ['adjacent', 'half'] as const) {
      const rows = 77, heads = 3, headDim = 130, theta = 10000
      const positions = randomPositions(rows, 81, 131073)
      const x = randomF32(rows * heads * headDim, 82)
      const out = nanFilled(x.length)
      kernels.sync.ropeForward({ x, positions, heads, headDim, theta, pairing, out })
      const inPlace = Float32Array.from(x)
      kernels.sync.ropeForward({ x: inPlace, positions, heads, headDim, theta, pairing })
      t.ok(bitwiseEqual(inPlace, out), `${isa} ${pairing}: in place (out omitted) equals out`)
      const viaOut = Float32Array.from(x)
      kernels.sync.ropeForward({ x: viaOut, positions, heads, headDim, theta, pairing, out: viaOut })
      t.ok(bitwiseEqual(viaOut, out), `${isa} ${pairing}: out === x equals out`)
      kernels.sync.ropeBackward({ dout: inPlace, positions, heads, headDim, theta, pairing })
      close(t, `${isa} ${pairing}: backward(forward(x)) == x`, inPlace, x, 1e-6)
    }
  })
})

t.test('RoPE: backward agrees with central differences of the forward', async (t) => {
  // loss = sum(c * rope(x)) is linear in x, so differences are exact up to f32 rounding.
  const rows = 3, heads = 2, headDim = 6, theta = 10000
  const positions = Int32Array.from([0, 5, 1000])
  const c = randomF32(rows * heads * headDim, 91)
  await forEachIsa(async (isa) => {
    for (const pairing of ['adjacent', 'half'] as const) {
      const x = randomF32(rows * heads * headDim, 92)
      const out = new Float32Array(x.length)
      const loss = () => {
        kernels.sync.ropeForward({ x, positions, heads, headDim, theta, pairing, out })
        return dot(c, out)
      }
      const dx = nanFilled(x.length)
      kernels.sync.ropeBackward({ dout: c, positions, heads, headDim, theta, pairing, dx })
      close(t, `${isa} ${pairing}`, dx, numericGradF32(x, loss, 0.25), 1e-5)
    }
  })
})

// ---------------------------------------------------------------- SwiGLU

/** Gate values over silu's whole range, with extremes where a naive exp overflows. */
function gateValues(n: number, seed: number): Float32Array {
  const g = randomF32(n, seed, 12)
  const extremes = [-1e4, 1e4, -1e30, 1e30, -104, -100, -95, -89, 89, -87.5, 87.5, -20, 20, 0, -1e-30]
  for (let i = 0; i < Math.min(n, extremes.length); i++) g[(i * 7919) % n] = extremes[i]
  return g
}

// Per element, since the extremes give outputs spanning many orders of magnitude: within
// rel * scale (default |ref|), or 1e-41 where the result is subnormal in f32.
function elementwiseClose(t: Test, what: string, out: Float32Array, ref: Float64Array, rel: number, scale?: Float64Array): void {
  for (let i = 0; i < ref.length; i++) {
    const tol = rel * (scale ? scale[i] : Math.abs(ref[i])) + 1e-41
    if (!(Math.abs(out[i] - ref[i]) <= tol)) {
      t.fail(`${what}: element ${i} is ${out[i]}, expected ${ref[i]}`)
      return
    }
  }
  t.pass(`${what}: every element within ${rel} (relative)`)
}

t.test('swigluForward / swigluBackward match float64, split and fused forms', async (t) => {
  await forEachIsa(async (isa) => {
    let seed = 700
    for (const rows of ROWS)
      for (const dim of DIMS) {
        const n = rows * dim
        const gate = gateValues(n, seed++)
        const up = randomF32(n, seed++, 2)
        const dout = randomF32(n, seed++)
        const { out: refOut, dgate: refDgate, dup: refDup } = refSwiglu(gate, up, dout)
        // silu' = s (1 + g (1 - s)) crosses zero near g = -1.28: f32 is accurate there only
        // relative to the size of its terms.
        const dgateScale = new Float64Array(n)
        for (let i = 0; i < n; i++) {
          const g = gate[i], s = 1 / (1 + Math.exp(-g))
          dgateScale[i] = Math.abs(dout[i] * up[i]) * s * (1 + Math.abs(g) * (1 - s))
        }
        const what = `${isa} rows=${rows} dim=${dim}`
        // split form over all n elements
        const out = nanFilled(n)
        kernels.sync.swigluForward({ gate, up, out })
        elementwiseClose(t, `${what} split forward`, out, refOut, 2e-6)
        const dgate = nanFilled(n), dup = nanFilled(n)
        kernels.sync.swigluBackward({ dout, gate, up, dgate, dup })
        elementwiseClose(t, `${what} split dgate`, dgate, refDgate, 4e-6, dgateScale)
        elementwiseClose(t, `${what} split dup`, dup, refDup, 2e-6)
        // fused form: row r of gateUp is gate row r, then up row r
        const gateUp = new Float32Array(2 * n)
        for (let r = 0; r < rows; r++) {
          gateUp.set(gate.subarray(r * dim, (r + 1) * dim), 2 * r * dim)
          gateUp.set(up.subarray(r * dim, (r + 1) * dim), (2 * r + 1) * dim)
        }
        const fusedOut = nanFilled(n)
        kernels.sync.swigluForward({ gateUp, rows, dim, out: fusedOut })
        elementwiseClose(t, `${what} fused forward`, fusedOut, refOut, 2e-6)
        const dgateUp = nanFilled(2 * n)
        kernels.sync.swigluBackward({ dout, gateUp, rows, dim, dgateUp })
        const refDgateUp = new Float64Array(2 * n), scaleDgateUp = new Float64Array(2 * n)
        for (let r = 0; r < rows; r++) {
          refDgateUp.set(refDgate.subarray(r * dim, (r + 1) * dim), 2 * r * dim)
          refDgateUp.set(refDup.subarray(r * dim, (r + 1) * dim), (2 * r + 1) * dim)
          scaleDgateUp.set(dgateScale.subarray(r * dim, (r + 1) * dim), 2 * r * dim)
          scaleDgateUp.set(refDup.subarray(r * dim, (r + 1) * dim).map(Math.abs), (2 * r + 1) * dim)
        }
        elementwiseClose(t, `${what} fused dgateUp`, dgateUp, refDgateUp, 4e-6, scaleDgateUp)
      }
  })
})

t.test('swiglu: the analytic gradient agrees with central differences', async (t) => {
  const n = 9
  const c = randomF32(n, 801)
  {
    const g = Float64Array.from(randomF32(n, 802, 6))
    const u = Float64Array.from(randomF32(n, 803, 2))
    const loss = () => dot(c, refSwiglu(g, u).out)
    const ref = refSwiglu(g, u, c)
    close(t, 'float64 dgate vs differences', numericGrad(g, loss, 1e-6), ref.dgate, 1e-7)
    close(t, 'float64 dup vs differences', numericGrad(u, loss, 1e-6), ref.dup, 1e-7)
  }
  await forEachIsa(async (isa) => {
    const gate = randomF32(n, 804, 6), up = randomF32(n, 805, 2)
    const out = new Float32Array(n)
    const loss = () => {
      kernels.sync.swigluForward({ gate, up, out })
      return dot(c, out)
    }
    const dgate = nanFilled(n), dup = nanFilled(n)
    kernels.sync.swigluBackward({ dout: c, gate, up, dgate, dup })
    close(t, `${isa} dgate vs differences of the kernel`, dgate, numericGradF32(gate, loss, 4e-3), 2e-3)
    close(t, `${isa} dup vs differences of the kernel`, dup, numericGradF32(up, loss, 4e-3), 2e-3)
  })
})

// ---------------------------------------------------------------- embedding

function randomIds(n: number, vocab: number, seed: number): Int32Array {
  const r = rng(seed)
  const ids = Int32Array.from({ length: n }, () => Math.floor(r() * vocab))
  if (n > 2) ids[n - 1] = ids[0] // a repeated id at least once
  return ids
}

t.test('embeddingForward copies rows exactly (f32 and bf16 tables)', async (t) => {
  await forEachIsa(async (isa) => {
    let seed = 900
    for (const n of ROWS)
      for (const dim of DIMS)
        for (const bf16 of [false, true]) {
          const vocab = 53
          const values = randomF32(vocab * dim, seed++)
          const table = bf16 ? toBf16(values) : values
          const tableValues = valuesOf(table)
          const ids = randomIds(n, vocab, seed++)
          ids[0] = vocab - 1 // the last row too
          const out = nanFilled(n * dim)
          kernels.sync.embeddingForward({ ids, table, vocab, dim, out })
          let bad = -1
          for (let k = 0; k < n && bad < 0; k++)
            for (let j = 0; j < dim; j++)
              if (out[k * dim + j] !== tableValues[ids[k] * dim + j]) {
                bad = k
                break
              }
          t.equal(bad, -1, `${isa} n=${n} dim=${dim} ${bf16 ? 'bf16' : 'f32'}: every row is the table's row`)
        }
  })
})

t.test('embeddingBackward scatter-adds into dtable, repeated ids included', async (t) => {
  await forEachIsa(async (isa) => {
    let seed = 1000
    for (const n of ROWS)
      for (const dim of DIMS) {
        const vocab = 41
        const ids = randomIds(n, vocab, seed++)
        const dout = randomF32(n * dim, seed++)
        const dtable0 = randomF32(vocab * dim, seed++)
        const dtable = Float32Array.from(dtable0)
        kernels.sync.embeddingBackward({ ids, dout, dtable, vocab, dim })
        const inc = new Float64Array(vocab * dim)
        for (let k = 0; k < n; k++) for (let j = 0; j < dim; j++) inc[ids[k] * dim + j] += dout[k * dim + j]
        const what = `${isa} n=${n} dim=${dim}`
        close(t, `${what} increments`, dtable.map((v, i) => v - dtable0[i]), inc, 1e-6)
        const used = new Set(ids)
        let touched = -1
        for (let v = 0; v < vocab && touched < 0; v++)
          if (!used.has(v))
            for (let j = 0; j < dim; j++) if (!Object.is(dtable[v * dim + j], dtable0[v * dim + j])) touched = v
        t.equal(touched, -1, `${what}: rows of absent ids untouched`)
      }
  })
})

t.test('embedding: backward agrees with central differences, and is reproducible across threads', async (t) => {
  const vocab = 5, dim = 3
  const ids = Int32Array.from([4, 0, 4, 2, 4, 0])
  const c = randomF32(ids.length * dim, 1101)
  const table = randomF32(vocab * dim, 1102)
  const out = new Float32Array(ids.length * dim)
  const loss = () => {
    kernels.sync.embeddingForward({ ids, table, vocab, dim, out })
    return dot(c, out)
  }
  const dtable = new Float32Array(vocab * dim)
  kernels.sync.embeddingBackward({ ids, dout: c, dtable, vocab, dim })
  close(t, 'dtable vs differences of the forward', dtable, numericGradF32(table, loss, 0.25), 1e-6)

  const defaultThreads = kernels.numThreads()
  const n = 300, D = 1027, V = 37
  const bigIds = randomIds(n, V, 1103)
  const dout = randomF32(n * D, 1104)
  const results: Float32Array[] = []
  try {
    for (const threads of [1, 3]) {
      kernels.setNumThreads(threads)
      const dt = randomF32(V * D, 1105)
      kernels.sync.embeddingBackward({ ids: bigIds, dout, dtable: dt, vocab: V, dim: D })
      results.push(dt)
    }
  } finally {
    kernels.setNumThreads(defaultThreads)
  }
  t.ok(bitwiseEqual(results[0], results[1]), '1 thread vs 3: bitwise equal')
})

// ---------------------------------------------------------------- async and errors

t.test('empty inputs are no-ops', async (t) => {
  const e = new Float32Array(0)
  const w = Float32Array.from([1, 2, 3])
  t.doesNotThrow(() => kernels.sync.rmsnormForward({ x: e, weight: w, rows: 0, dim: 3, eps: 1e-5, out: e, rstd: new Float32Array(0) }))
  t.doesNotThrow(() => kernels.sync.rmsnormBackward({ dout: e, x: e, weight: w, rows: 0, dim: 3, rstd: e, dx: e, dweight: new Float32Array(3) }))
  t.doesNotThrow(() => kernels.sync.ropeForward({ x: e, positions: new Int32Array(0), heads: 2, headDim: 4, theta: 1e4, pairing: 'half' }))
  t.doesNotThrow(() => kernels.sync.swigluForward({ gate: e, up: new Float32Array(0), out: new Float32Array(0) }))
  t.doesNotThrow(() => kernels.sync.swigluBackward({ dout: e, gate: new Float32Array(0), up: new Float32Array(0), dgate: new Float32Array(0), dup: new Float32Array(0) }))
  const dtable = Float32Array.from([1, 2, 3, 4])
  kernels.sync.embeddingBackward({ ids: new Int32Array(0), dout: e, dtable, vocab: 2, dim: 2 })
  t.same(Array.from(dtable), [1, 2, 3, 4], 'embeddingBackward with no ids leaves dtable')
})

t.test('the async forms give the sync results', async (t) => {
  const rows = 77, dim = 1027
  const x = randomF32(rows * dim, 1201)
  const weight = makeWeight(dim, 1202, true)
  const a = nanFilled(rows * dim), b = nanFilled(rows * dim)
  const p = kernels.rmsnormForward({ x, weight, rows, dim, eps: 1e-5, out: a })
  t.type(p, Promise)
  await p
  kernels.sync.rmsnormForward({ x, weight, rows, dim, eps: 1e-5, out: b })
  t.ok(bitwiseEqual(a, b), 'rmsnormForward')
  const positions = randomPositions(rows, 1203, 1000)
  const rope = { positions, heads: 4, headDim: 64, theta: 1e4, pairing: 'half' as const }
  const r1 = randomF32(rows * 4 * 64, 1206), r2 = Float32Array.from(r1)
  await kernels.ropeForward({ ...rope, x: r1 })
  kernels.sync.ropeForward({ ...rope, x: r2 })
  t.ok(bitwiseEqual(r1, r2), 'ropeForward')
  const ids = randomIds(rows, 50, 1204)
  const table = randomF32(50 * 8, 1205)
  const e1 = nanFilled(rows * 8), e2 = nanFilled(rows * 8)
  await kernels.embeddingForward({ ids, table, vocab: 50, dim: 8, out: e1 })
  kernels.sync.embeddingForward({ ids, table, vocab: 50, dim: 8, out: e2 })
  t.ok(bitwiseEqual(e1, e2), 'embeddingForward')
  await t.rejects(kernels.swigluForward({ gate: new Float32Array(3), up: new Float32Array(2), out: new Float32Array(3) }), {
    name: 'RangeError',
  })
})

t.test('bad arguments throw typed errors naming the argument', async (t) => {
  const call = (fn: (o: never) => void, o: unknown) => () => fn(o as never)
  const f = (n: number) => new Float32Array(n)
  const s = kernels.sync

  // RMSNorm
  const norm = { x: f(6), weight: f(3), rows: 2, dim: 3, eps: 1e-5, out: f(6) }
  t.throws(call(s.rmsnormForward, { ...norm, x: new Float64Array(6) }), { name: 'TypeError', code: 'ERR_INVALID_ARG_TYPE', message: /rmsnormForward: 'x' must be a Float32Array, got Float64Array/ })
  t.throws(call(s.rmsnormForward, { ...norm, weight: f(4) }), { name: 'RangeError', code: 'ERR_OUT_OF_RANGE', message: /'weight' has 4 elements, expected dim = 3/ })
  t.throws(call(s.rmsnormForward, { ...norm, weight: new Int32Array(3) }), { name: 'TypeError', message: /'weight' must be a Float32Array or a Uint16Array/ })
  t.throws(call(s.rmsnormForward, { ...norm, out: f(5) }), { name: 'RangeError', message: /'out' has 5 elements, expected rows \* dim = 6/ })
  t.throws(call(s.rmsnormForward, { ...norm, eps: undefined }), { name: 'TypeError', message: /'eps' must be a number/ })
  t.throws(call(s.rmsnormForward, { ...norm, eps: -1 }), { name: 'RangeError', message: /'eps' must be >= 0/ })
  t.throws(call(s.rmsnormForward, { ...norm, dim: 0 }), { name: 'RangeError', message: /'dim' must be in \[1,/ })
  t.throws(call(s.rmsnormForward, { ...norm, rstd: f(3) }), { name: 'RangeError', message: /'rstd' has 3 elements, expected rows = 2/ })
  const buf = f(8)
  t.throws(call(s.rmsnormForward, { ...norm, x: buf.subarray(0, 6), out: buf.subarray(2, 8) }), { name: 'RangeError', message: /'out' must be 'x' itself \(in place\) or not share memory with it/ })
  t.throws(call(s.rmsnormForward, { ...norm, out: buf.subarray(0, 6), rstd: buf.subarray(5, 7) }), { name: 'RangeError', message: /'out' and 'rstd' must not share memory/ })
  const back = { dout: f(6), x: f(6), weight: f(3), rstd: f(2), rows: 2, dim: 3, dx: f(6) }
  t.throws(call(s.rmsnormBackward, { ...back, rstd: f(6) }), { name: 'RangeError', message: /rmsnormBackward: 'rstd' has 6 elements, expected rows = 2/ })
  t.throws(call(s.rmsnormBackward, { ...back, dx: back.dout }), { name: 'RangeError', message: /'dx' and 'dout' must not share memory/ })
  t.throws(call(s.rmsnormBackward, { ...back, dweight: f(2) }), { name: 'RangeError', message: /'dweight' has 2 elements, expected dim = 3/ })
  t.throws(call(s.rmsnormBackward, { ...back, accumulate: 1 }), { name: 'TypeError', message: /'accumulate' must be a boolean/ })

  // RoPE
  const rope = { x: f(12), positions: Int32Array.from([0, 1]), heads: 3, headDim: 2, theta: 1e4, pairing: 'adjacent' }
  t.throws(call(s.ropeForward, { ...rope, headDim: 3, x: f(18) }), { name: 'RangeError', message: /ropeForward: 'headDim' must be even, got 3/ })
  t.throws(call(s.ropeForward, { ...rope, pairing: 'interleaved' }), { name: 'RangeError', message: /'pairing' must be 'adjacent' or 'half', got 'interleaved'/ })
  t.throws(call(s.ropeForward, { ...rope, pairing: undefined }), { name: 'TypeError', message: /'pairing' is required/ })
  t.throws(call(s.ropeForward, { ...rope, theta: 0 }), { name: 'RangeError', message: /'theta' must be positive/ })
  t.throws(call(s.ropeForward, { ...rope, x: f(10) }), { name: 'RangeError', message: /'x' has 10 elements, expected positions.length \* heads \* headDim = 12/ })
  t.throws(call(s.ropeForward, { ...rope, positions: Int32Array.from([0, -3]) }), { name: 'RangeError', message: /'positions'\[1\] = -3 is negative/ })
  t.throws(call(s.ropeForward, { ...rope, positions: Float32Array.from([0, 1]) }), { name: 'TypeError', message: /'positions' must be an Int32Array/ })
  t.throws(call(s.ropeForward, { ...rope, out: f(11) }), { name: 'RangeError', message: /'out' has 11 elements/ })
  t.throws(call(s.ropeBackward, { ...rope, x: undefined, dout: f(12), dx: new Uint16Array(12) }), { name: 'TypeError', message: /ropeBackward: 'dx' must be a Float32Array/ })

  // SwiGLU
  t.throws(call(s.swigluForward, { gate: f(4), up: f(3), out: f(4) }), { name: 'RangeError', message: /swigluForward: 'up' has 3 elements, expected the length of 'gate' = 4/ })
  t.throws(call(s.swigluForward, { gate: f(4), out: f(4) }), { name: 'TypeError', message: /'up' must be a Float32Array, got undefined/ })
  t.throws(call(s.swigluForward, { gateUp: f(8), gate: f(4), rows: 1, dim: 4, out: f(4) }), { name: 'TypeError', message: /either 'gate' and 'up', or 'gateUp'/ })
  t.throws(call(s.swigluForward, { gateUp: f(7), rows: 1, dim: 4, out: f(4) }), { name: 'RangeError', message: /'gateUp' has 7 elements, expected rows \* 2 \* dim = 8/ })
  const g = f(8)
  t.throws(call(s.swigluForward, { gate: g.subarray(0, 4), up: f(4), out: g.subarray(3, 7) }), { name: 'RangeError', message: /'out' and 'gate' must not share memory/ })
  t.throws(call(s.swigluBackward, { dout: f(4), gateUp: f(8), rows: 1, dim: 4 }), { name: 'TypeError', message: /swigluBackward: 'dgateUp' must be a Float32Array, got undefined/ })
  t.throws(call(s.swigluBackward, { dout: f(4), gate: f(4), up: f(4), dgate: f(4), dup: f(5) }), { name: 'RangeError', message: /'dup' has 5 elements, expected the length of 'dout' = 4/ })

  // Embedding
  const emb = { ids: Int32Array.from([0, 3, 50, -1]), table: f(50 * 2), vocab: 50, dim: 2, out: f(8) }
  t.throws(call(s.embeddingForward, emb), { name: 'RangeError', message: /embeddingForward: 'ids'\[2\] = 50 is outside \[0, vocab = 50\)/ })
  t.throws(call(s.embeddingForward, { ...emb, ids: Int32Array.from([0, -1]), out: f(4) }), { name: 'RangeError', message: /'ids'\[1\] = -1 is outside/ })
  t.throws(call(s.embeddingForward, { ...emb, ids: Uint32Array.from([0]) }), { name: 'TypeError', message: /'ids' must be an Int32Array, got Uint32Array/ })
  t.throws(call(s.embeddingForward, { ...emb, ids: Int32Array.from([0]), table: f(99) }), { name: 'RangeError', message: /'table' has 99 elements, expected vocab \* dim = 100/ })
  t.throws(call(s.embeddingBackward, { ids: Int32Array.from([1, 7]), dout: f(4), dtable: f(10), vocab: 5, dim: 2 }), { name: 'RangeError', message: /embeddingBackward: 'ids'\[1\] = 7 is outside \[0, vocab = 5\)/ })
  t.throws(call(s.embeddingBackward, { ids: Int32Array.from([1]), dout: f(2), dtable: new Uint16Array(10), vocab: 5, dim: 2 }), { name: 'TypeError', message: /'dtable' must be a Float32Array/ })
})
