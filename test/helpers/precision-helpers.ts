// Bounds that follow the precision actually computed (README "Precision", ARCHITECTURE.md):
// flash-attention's way, an engine result is held to a small multiple of the error that a
// reference computing at the same precision makes,
//   err(engine vs golden) <= FACTOR * err(reference at the engine's precision vs golden) (+ a floor),
// so that one test holds for 'fp32', 'bf16' and 'auto' on every ISA, and stays tight for each.
// Model tests take the reference from test/helpers/oracle.ts (cached: one oracle run per fixture
// and preset per test file); kernel tests from contractProduct (test/helpers/helpers.ts), per
// product.
import * as path from 'node:path'
import type { Test } from 'tap'
import type { kernels } from '../../lib/index'
import { contractProduct, maskedRelErr, relErr, roundBf16, roundsToBf16 } from './helpers'
import * as oracle from './oracle'
import { MAP_S, MAP_U, kvSize, lseSize, qSize, type AdamHyper, type AttentionShape, type LoraProblem, type Pairing, type Q8 } from './reference'

/**
 * How far an engine may be from the golden, in multiples of the same-precision reference's own
 * error: the two make roundings of the same kind and size, so their errors are alike; 3 leaves
 * room for the luck of the draw (the ratios measured in these tests are 0.3 to 1.2) and still
 * fails an engine that computes at a coarser precision than the one asked for (bf16 errors are
 * ~1e4 x f32's).
 */
export const FACTOR = 3

/**
 * The floor of a loss bound, relative: the goldens store the float64 loss as f32 (a relative
 * rounding of up to 2^-24), and the engine's loss is a mean of f32 per-token terms, so an exact
 * oracle and an f32 engine may both sit a few f32 ulps away from it; 2^-22 is four of them.
 * Without it a bound scaled from an oracle error that happens to be ~0 would ask for the
 * impossible.
 */
export const LOSS_FLOOR = 2 ** -22

/**
 * The oracle preset that rounds what (isa, precision) rounds, read off the tests' own statement
 * of the contract (roundsToBf16): 'bf16' -> bf16 (every product), 'fp32' -> fp32, 'auto' ->
 * bf16Weights on avx512bf16 (a product with a bf16-stored weight rounds, f32 x f32 does not),
 * fp32 elsewhere. `weightsBf16: false` is for a model whose weights are held as f32 (an f32
 * mergeAdapter): its hidden states then come from f32 x f32 products only, which round at
 * 'bf16' alone. (The oracle labels every model weight 'bf16', so that case maps to a preset
 * that rounds no weight product unless every product rounds; only hidden states may be compared.)
 */
export function oraclePrecision(isa: kernels.Isa, precision: kernels.Precision, weightsBf16 = true): oracle.Precision {
  if (roundsToBf16(precision, isa, false, false)) return oracle.bf16
  if (weightsBf16 && roundsToBf16(precision, isa, false, true)) return oracle.bf16Weights
  return oracle.fp32
}

/**
 * Asserts err <= FACTOR * scale + floor and says so with both numbers. `scale` is the
 * same-precision reference's error (or difference) for the same quantity.
 */
export function withinBound(t: Test, what: string, err: number, scale: number, floor = 0): boolean {
  const bound = FACTOR * scale + floor
  const ok = err <= bound
  t.ok(ok, `${what}: ${err.toExponential(2)} <= ${FACTOR} x ${scale.toExponential(2)}${floor ? ` + ${floor.toExponential(1)}` : ''}`)
  return ok
}

// ---- the golden fixtures and the oracle's results on them, computed once per test file ----------

export const FIXTURES = path.join(__dirname, '..', 'fixtures')
export type FixtureName = 'ernie-tiny' | 'ernie-tiny-paddle' | 'qwen3-tiny'

const fixtures = new Map<string, oracle.Fixture>()
/** A fixture as the oracle reads it (config, float64 weights, golden batch and tensors, the golden adapter). */
export function fixture(name: FixtureName): oracle.Fixture {
  let f = fixtures.get(name)
  if (!f) fixtures.set(name, (f = oracle.loadFixture(path.join(FIXTURES, name))))
  return f
}

/** The golden batch as the engine takes it ([B, T] typed arrays), and its mask. */
export function goldenInput(name: FixtureName) {
  const { batch } = fixture(name)
  const shape: [number, number] = [batch.batch, batch.seq]
  const mask = Int32Array.from(batch.attentionMask!)
  return { input: { inputIds: { data: Int32Array.from(batch.inputIds), shape }, attentionMask: { data: mask, shape } }, mask, shape }
}

const memo = new Map<string, unknown>()
/** Computes once per key in this process. */
export function cached<T>(key: string, compute: () => T): T {
  if (!memo.has(key)) memo.set(key, compute())
  return memo.get(key) as T
}

/** The oracle's base forward (no adapter) on the golden batch at a preset. */
export function oracleBase(name: FixtureName, p: oracle.Precision) {
  const f = fixture(name)
  return cached(`base|${name}|${p.name}`, () => oracle.forward(f.config, f.weights, f.batch, { precision: p }))
}

/** The oracle's forward, loss and every gradient with the golden adapter, on the golden batch at a preset. */
export function oracleLora(name: FixtureName, p: oracle.Precision) {
  const f = fixture(name)
  return cached(`lora|${name}|${p.name}`, () => oracle.lossAndGrad(f.config, f.weights, f.batch, { precision: p, adapter: f.adapter }))
}

/** ||out - golden|| / ||golden|| over the golden batch's real tokens, rows of `width` values. */
export function goldenErr(name: FixtureName, out: ArrayLike<number>, golden: string, width: number): number {
  const f = fixture(name)
  return maskedRelErr(out, f.golden.get(golden)!, f.batch.attentionMask!, width)
}

/** The relative error of a loss. */
export function lossErr(got: number, want: number): number {
  return Math.abs(got - want) / Math.abs(want)
}

// ---- kernels: references of the contract's products ---------------------------------------------

/** Element (row, p) of a product's operand. */
export type At = (row: number, p: number) => number

/**
 * One product added into C: C[i, j] += scale * sum_p a(i, p) b(j, p), both operands rounded to
 * bf16 (a after its scale) when `round` (from roundsToBf16 for the two operands' storage).
 */
export interface Term {
  k: number
  a: At
  b: At
  scale?: number
  round: boolean
}

/** `exact`: the contract's products summed in float64; `f32`: the same operands summed in f32 (a same-precision reference). */
export interface ContractRef {
  exact: Float64Array
  f32: Float64Array
}

/** C[m, n] = c0 + the terms, as the contract rounds each (contractProduct), exact and f32-summed. */
export function contractRef(m: number, n: number, terms: Term[], c0?: ArrayLike<number>): ContractRef {
  const ref = { exact: new Float64Array(m * n), f32: new Float64Array(m * n) }
  if (c0) for (let i = 0; i < m * n; i++) ref.exact[i] = ref.f32[i] = c0[i]
  const rows = Array.from({ length: m }, (_, i) => i)
  for (const s of terms) contractProduct(rows, n, s.k, s.a, s.b, s.scale ?? 1, s.round, ref)
  return ref
}

function norm(v: ArrayLike<number>): number {
  let s = 0
  for (let i = 0; i < v.length; i++) s += v[i] * v[i]
  return Math.sqrt(s)
}

/**
 * Checks a kernel's output against the contract (gemm.test.ts's bound): its relative error
 * from the exact product of the rounded operands at most 3x the f32 reference's, + 2^-24 (one
 * f32 rounding of the result). `allowance` (absolute, per element) widens it where the contract
 * leaves the product open: an f32 intermediate operand rounded to bf16 (see loss.test.ts).
 * Reports only failures, returning whether it held.
 */
export function checkContract(t: Test, what: string, out: ArrayLike<number>, ref: ContractRef, allowance?: ArrayLike<number>): boolean {
  const err = relErr(out, ref.exact)
  const allow = allowance ? norm(allowance) / (norm(ref.exact) || 1) : 0
  const bound = FACTOR * relErr(ref.f32, ref.exact) + allow + 2 ** -24
  if (err <= bound) return true
  t.fail(`${what}: relative error ${err.toExponential(2)} > ${bound.toExponential(2)} (${FACTOR}x the f32 reference's${allowance ? ` + ${allow.toExponential(1)} for rounded intermediates` : ''} + 2^-24)`)
  return false
}

// ---- same-precision references of the op set (test/kernels/backend-ops.test.ts) -----------------
// The ops of reference.ts computed again the way a backend computing at `precision` would: each
// arithmetic result rounded to f32 (`f`) and, at 'bf16', each matrix product's operands rounded
// to bf16 first (`r`; a scaled operand after its scale), the products summed in f32. Their error
// from the float64 reference is the scale of the bound a backend is held to,
//   relErr(backend, float64) <= FACTOR * relErr(same-precision reference, float64) + floor,
// the flash-attention way (this file's header). They are written from the same maths as the
// float64 references, not from any kernel: they make roundings of the same kind and size as a
// backend does, not the same roundings.

export type OpPrecision = 'fp32' | 'bf16'

/** The roundings of a precision: `f` of every arithmetic result, `r` of a matrix product's operands. */
export interface Arith {
  f: (x: number) => number
  r: (x: number) => number
}

const ARITH: Record<OpPrecision, Arith> = {
  fp32: { f: Math.fround, r: Math.fround },
  bf16: { f: Math.fround, r: (x) => roundBf16(Math.fround(x)) },
}
export function arith(precision: OpPrecision): Arith {
  return ARITH[precision]
}

/** C[m, n] = sum_p (scale A(i, p)) B(j, p) at `ar`: A after its scale and B rounded by r, each product and sum by f. */
export function matmulAt(ar: Arith, m: number, n: number, k: number, a: At, b: At, scale = 1): Float64Array {
  const { f, r } = ar
  const bv = new Float64Array(n * k)
  for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) bv[j * k + p] = r(b(j, p))
  const av = new Float64Array(k)
  const c = new Float64Array(m * n)
  for (let i = 0; i < m; i++) {
    for (let p = 0; p < k; p++) av[p] = r(f(scale * a(i, p)))
    for (let j = 0; j < n; j++) {
      let acc = 0
      for (let p = 0; p < k; p++) acc = f(acc + f(av[p] * bv[j * k + p]))
      c[i * n + j] = acc
    }
  }
  return c
}

/** a + b elementwise, each sum rounded by f (b may be shorter: missing terms are 0). */
function addAt(ar: Arith, a: ArrayLike<number>, b: ArrayLike<number>): Float64Array {
  return Float64Array.from(a, (x, i) => ar.f(x + (b[i] ?? 0)))
}

/** The GEMM: C = alpha * sum over segments of scale_s A_s B_s^T (+ c0), each segment its own product. */
export function gemmAt(ar: Arith, m: number, n: number, segments: { k: number; a: At; b: At; scale?: number }[], alpha = 1, c0?: ArrayLike<number>): Float64Array {
  let c: Float64Array = new Float64Array(m * n)
  for (const s of segments) c = addAt(ar, c, matmulAt(ar, m, n, s.k, s.a, s.b, alpha * (s.scale ?? 1)))
  return c0 ? addAt(ar, c0, c) : c
}

/**
 * Attention forward (and backward, with dout) as refAttentionForward / refAttentionBackward
 * state it, with the softmax in the log2 domain as flash attention computes it (exp2 of f32
 * arguments, the lse kept in natural log). The forward's scores are (c q).k with c = scale
 * log2(e) (q after its scale, as a product's operand); the backward recomputes p from the lse
 * and c (q.k), as the kernels do (the two disagree by the rounding of c q, which a peaked softmax
 * turns into an error of p that the backward sees). q.k, e.v (e: the unnormalised
 * exponentials), dout.v, p.dout, ds.k and ds.q are the products (operands rounded by r);
 * delta = dout.out and ds are f32.
 */
export function attentionAt(ar: Arith, s: AttentionShape, q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, dout?: ArrayLike<number>) {
  const { f, r } = ar
  const { batch, tq, tk, heads, kvHeads, headDim: D } = s
  const LOG2E = f(Math.LOG2E), LN2 = f(Math.LN2)
  const scale = f(s.scale ?? 1 / Math.sqrt(D))
  const c = f(scale * LOG2E)
  const group = heads / kvHeads
  const out = new Float64Array(qSize(s)), lse = new Float64Array(lseSize(s))
  const dq = new Float64Array(qSize(s)), dk = new Float64Array(kvSize(s)), dv = new Float64Array(kvSize(s))
  const S = new Float64Array(tk), S2 = new Float64Array(tk), E = new Float64Array(tk), seen = new Uint8Array(tk)
  const visible = (b: number, i: number, j: number) =>
    (!s.keyMask || s.keyMask[b * tk + j] !== 0) && (!s.keyStart || j >= s.keyStart[b * tq + i])
  for (let b = 0; b < batch; b++)
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / group)
      for (let i = 0; i < tq; i++) {
        const qo = ((b * tq + i) * heads + h) * D
        const lo = (b * heads + h) * tq + i
        const last = i + tk - tq
        let m = -Infinity
        for (let j = 0; j <= last; j++) {
          seen[j] = visible(b, i, j) ? 1 : 0
          if (!seen[j]) continue
          const ko = ((b * tk + j) * kvHeads + kvh) * D
          let s2 = 0
          for (let d = 0; d < D; d++) s2 = f(s2 + f(r(f(c * q[qo + d])) * r(k[ko + d])))
          S2[j] = s2
          m = Math.max(m, s2)
          if (!dout) continue
          let dot = 0
          for (let d = 0; d < D; d++) dot = f(dot + f(r(q[qo + d]) * r(k[ko + d])))
          S[j] = dot
        }
        if (m === -Infinity) {
          lse[lo] = -Infinity
          continue
        }
        let l = 0
        for (let j = 0; j <= last; j++) if (seen[j]) l = f(l + (E[j] = f(2 ** f(S2[j] - m))))
        const L = f(f(m + f(Math.log2(l))) * LN2)
        lse[lo] = L
        for (let d = 0; d < D; d++) {
          let acc = 0
          for (let j = 0; j <= last; j++) if (seen[j]) acc = f(acc + f(r(E[j]) * r(v[((b * tk + j) * kvHeads + kvh) * D + d])))
          out[qo + d] = f(acc / l)
        }
        if (!dout) continue
        const L2 = f(L * LOG2E)
        let delta = 0
        for (let d = 0; d < D; d++) delta = f(delta + f(dout[qo + d] * out[qo + d]))
        for (let j = 0; j <= last; j++) {
          if (!seen[j]) continue
          const ko = ((b * tk + j) * kvHeads + kvh) * D
          const P = f(2 ** f(S[j] * c - L2))
          let dp = 0
          for (let d = 0; d < D; d++) dp = f(dp + f(r(dout[qo + d]) * r(v[ko + d])))
          const ds = r(f(scale * f(P * f(dp - delta))))
          const p = r(P)
          for (let d = 0; d < D; d++) {
            dv[ko + d] = f(dv[ko + d] + f(p * r(dout[qo + d])))
            dq[qo + d] = f(dq[qo + d] + f(ds * r(k[ko + d])))
            dk[ko + d] = f(dk[ko + d] + f(ds * r(q[qo + d])))
          }
        }
      }
    }
  return { out, lse, dq, dk, dv }
}

/** reference.ts's LoRA problem, with dropout on the adapter's input given as `keep`/`keepScale`. */
export interface LoraAtProblem extends Omit<LoraProblem, 'xd'> {
  keep?: (i: number) => boolean
  keepScale?: number
}

/** y = x W^T + s (xd A^T) B^T and u = xd A^T; with dy, dB = s dy^T u, dA = s g^T xd, dx = dy W + s g A (masked), g = dy B. */
export function loraAt(ar: Arith, p: LoraAtProblem, dy?: ArrayLike<number>) {
  const { f } = ar
  const { m, n, k, r, scale, x, w, a, b } = p
  const ks = p.keepScale ?? 1
  const xd = p.keep ? Float64Array.from(x, (v, i) => (p.keep!(i) ? f(v * ks) : 0)) : Float64Array.from(x)
  const u = matmulAt(ar, m, r, k, (i, c) => xd[i * k + c], (q, c) => a[q * k + c])
  const y = addAt(ar, matmulAt(ar, m, n, k, (i, c) => x[i * k + c], (j, c) => w[j * k + c]), matmulAt(ar, m, n, r, (i, q) => u[i * r + q], (j, q) => b[j * r + q], scale))
  if (!dy) return { u, y }
  const g = matmulAt(ar, m, r, n, (i, j) => dy[i * n + j], (q, j) => b[j * r + q])
  const dB = matmulAt(ar, n, r, m, (j, i) => dy[i * n + j], (q, i) => u[i * r + q], scale)
  const dA = matmulAt(ar, r, k, m, (q, i) => g[i * r + q], (c, i) => xd[i * k + c], scale)
  const base = matmulAt(ar, m, k, n, (i, j) => dy[i * n + j], (c, j) => w[j * k + c])
  const path = matmulAt(ar, m, k, r, (i, q) => g[i * r + q], (c, q) => a[q * k + c], scale)
  const dx = Float64Array.from(base, (v, i) => (p.keep && !p.keep(i) ? v : f(v + f(path[i] * ks))))
  return { u, y, dx, dA, dB }
}

/** RMSNorm at f32: y, rstd; with dout, dx and dw (the weight's gradient over all rows). */
export function rmsnormAt(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, dim: number, eps: number, dout?: ArrayLike<number>) {
  const f = Math.fround
  const y = new Float64Array(rows * dim), rstd = new Float64Array(rows), dx = new Float64Array(rows * dim), dw = new Float64Array(dim)
  for (let r = 0; r < rows; r++) {
    const o = r * dim
    let ss = 0
    for (let i = 0; i < dim; i++) ss = f(ss + f(x[o + i] * x[o + i]))
    const rs = f(1 / f(Math.sqrt(f(f(ss / dim) + eps))))
    rstd[r] = rs
    for (let i = 0; i < dim; i++) y[o + i] = f(f(x[o + i] * rs) * w[i])
    if (!dout) continue
    let s = 0
    for (let i = 0; i < dim; i++) s = f(s + f(f(dout[o + i] * w[i]) * x[o + i]))
    const c = f(f(f(rs * f(rs * rs)) * s) / dim)
    for (let i = 0; i < dim; i++) {
      dx[o + i] = f(f(f(rs * w[i]) * dout[o + i]) - f(x[o + i] * c))
      dw[i] = f(dw[i] + f(f(dout[o + i] * x[o + i]) * rs))
    }
  }
  return { y, rstd, dx, dw }
}

/** RoPE at f32: the angles in double (as the kernels take them), their cosines and sines rounded to f32. */
export function ropeAt(x: ArrayLike<number>, positions: Int32Array, heads: number, headDim: number, theta: number, pairing: Pairing, inverse = false): Float64Array {
  const f = Math.fround
  const out = new Float64Array(x.length)
  for (let row = 0; row < positions.length; row++)
    for (let i = 0; i < headDim / 2; i++) {
      const angle = (inverse ? -1 : 1) * positions[row] * Math.pow(theta, (-2 * i) / headDim)
      const c = f(Math.cos(angle)), s = f(Math.sin(angle))
      const [p0, p1] = pairing === 'adjacent' ? [2 * i, 2 * i + 1] : [i, i + headDim / 2]
      for (let h = 0; h < heads; h++) {
        const base = (row * heads + h) * headDim
        const a = x[base + p0], b = x[base + p1]
        out[base + p0] = f(f(a * c) - f(b * s))
        out[base + p1] = f(f(a * s) + f(b * c))
      }
    }
  return out
}

/** SwiGLU at f32: out = silu(g) u; with dout, dgate = dout u s (1 + g (1 - s)) and dup = dout silu(g). */
export function swigluAt(gate: ArrayLike<number>, up: ArrayLike<number>, dout?: ArrayLike<number>) {
  const f = Math.fround
  const n = gate.length
  const out = new Float64Array(n), dgate = new Float64Array(n), dup = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    const g = gate[i], s = f(1 / (1 + Math.exp(-g))), silu = f(g * s)
    out[i] = f(silu * up[i])
    if (!dout) continue
    dup[i] = f(dout[i] * silu)
    dgate[i] = f(f(dout[i] * up[i]) * f(s * f(1 + f(g * f(1 - s)))))
  }
  return { out, dgate, dup }
}

/** dtable0 with row ids[k] += dout[k], one f32 addition at a time. */
export function embeddingBackwardAt(ids: Int32Array, dout: ArrayLike<number>, dtable0: ArrayLike<number>, dim: number): Float64Array {
  const t = Float64Array.from(dtable0)
  for (let k = 0; k < ids.length; k++) for (let j = 0; j < dim; j++) t[ids[k] * dim + j] = Math.fround(t[ids[k] * dim + j] + dout[k * dim + j])
  return t
}

/**
 * Cross-entropy through the head: logits = h W^T, dhidden = dlogits W and dweight = dlogits^T h
 * are the products; the softmax, the loss terms and dlogits are f32, the loss summed in double.
 * `terms`: the sum of |lse| + |target logit| over the counted rows (the size of what the loss sums).
 */
export function crossEntropyAt(ar: Arith, h: ArrayLike<number>, w: ArrayLike<number>, targets: Int32Array, T: number, H: number, V: number, gradScale?: number) {
  const { f } = ar
  const rows: number[] = []
  for (let i = 0; i < T; i++) if (targets[i] >= 0) rows.push(i)
  const count = rows.length
  const s = f(gradScale ?? (count ? 1 / count : 0))
  const logits = matmulAt(ar, count, V, H, (i, c) => h[rows[i] * H + c], (v, c) => w[v * H + c])
  const dl = new Float64Array(count * V)
  let lossSum = 0, terms = 0
  rows.forEach((row, i) => {
    let max = -Infinity
    for (let v = 0; v < V; v++) max = Math.max(max, logits[i * V + v])
    let sum = 0
    for (let v = 0; v < V; v++) sum = f(sum + f(Math.exp(f(logits[i * V + v] - max))))
    const lse = f(max + f(Math.log(sum)))
    const target = targets[row]
    lossSum += f(lse - logits[i * V + target])
    terms += Math.abs(lse) + Math.abs(logits[i * V + target])
    for (let v = 0; v < V; v++) {
      const p = f(Math.exp(f(logits[i * V + v] - lse)))
      dl[i * V + v] = v === target ? f(f(p * s) - s) : f(p * s)
    }
  })
  const dh = matmulAt(ar, count, H, V, (i, v) => dl[i * V + v], (c, v) => w[v * H + c])
  const dhidden = new Float64Array(T * H)
  rows.forEach((row, i) => dhidden.set(dh.subarray(i * H, (i + 1) * H), row * H))
  const dweight = matmulAt(ar, V, H, count, (v, i) => dl[i * V + v], (c, i) => h[rows[i] * H + c])
  return { loss: count ? lossSum / count : 0, lossSum, count, terms, dhidden, dweight }
}

// AdamW's constants as adam_hyper (backend/ops.h) derives them: in double, rounded to f32 once.
function adamConstants(h: AdamHyper, step: number) {
  const f = Math.fround
  return {
    b1: f(h.beta1), b2: f(h.beta2), c1: f(1 - h.beta1), c2: f(1 - h.beta2), eps: f(h.eps),
    decay: f(1 - h.lr * h.weightDecay), stepSize: f(h.lr / (1 - h.beta1 ** step)), bias2: f(Math.sqrt(1 - h.beta2 ** step)),
  }
}

/** One AdamW step at f32 from (p0, m0, v0): the new params and moments. */
export function adamwAt(p0: ArrayLike<number>, g: ArrayLike<number>, m0: ArrayLike<number>, v0: ArrayLike<number>, h: AdamHyper, step: number) {
  const f = Math.fround
  const c = adamConstants(h, step)
  const n = p0.length
  const p = new Float64Array(n), m = new Float64Array(n), v = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    m[i] = f(f(c.b1 * m0[i]) + f(c.c1 * g[i]))
    v[i] = f(f(c.b2 * v0[i]) + f(f(c.c2 * g[i]) * g[i]))
    p[i] = f(f(p0[i] * c.decay) - f(f(c.stepSize * m[i]) / f(f(f(Math.sqrt(v[i])) / c.bias2) + c.eps)))
  }
  return { p, m, v }
}

/** One 8-bit AdamW step at f32: the old state dequantised, the update, the new absmax per block (before re-quantisation). */
export function adamw8bitAt(p0: ArrayLike<number>, g: ArrayLike<number>, m: Q8, v: Q8, bs: number, h: AdamHyper, step: number) {
  const f = Math.fround
  const n = p0.length
  const mOld = Float64Array.from(m.codes, (c, i) => f(MAP_S[c] * m.absmax[Math.floor(i / bs)]))
  const vOld = Float64Array.from(v.codes, (c, i) => f(MAP_U[c] * v.absmax[Math.floor(i / bs)]))
  const { p, m: m1, v: v1 } = adamwAt(p0, g, mOld, vOld, h, step)
  const blocks = Math.ceil(n / bs)
  const mAbs = new Float64Array(blocks), vAbs = new Float64Array(blocks)
  for (let i = 0; i < n; i++) {
    const b = Math.floor(i / bs)
    mAbs[b] = Math.max(mAbs[b], Math.abs(m1[i]))
    vAbs[b] = Math.max(vAbs[b], v1[i])
  }
  return { p, m1, v1, mAbs, vAbs }
}
