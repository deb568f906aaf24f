// A float64 oracle of the whole ERNIE-4.5 / Qwen3 decoder (llm.c's CPU-oracle idea): forward,
// next-token loss and a hand-written backward, plain TypeScript, written from the maths in
// ../shared/fixtures/README.md ("Architecture facts") and the package README, never from the
// engine's outputs. A module, not a test file (tap runs only *.test.ts); test/model/oracle.test.ts
// checks it against the fixtures' independent Python float64 goldens.
//
// Every call takes a Precision (default `exact`) that can make the oracle simulate an engine's
// rounding, so that tests can bound the engine's error by a multiple of a same-precision
// reference's error (flash-attention's style):
//   err(engine vs golden) <= 3 * err(oracle at the engine's precision vs golden)
//
// Shapes: a batch has B rows of T tokens; per-token tensors are row-major [B * T, width] with
// token (b, t) at row b * T + t. Weights use Hugging Face names and orientation ([out, in]).
import * as fs from 'node:fs'
import * as path from 'node:path'
import { fromBf16Bits, readSafetensorsForTest, tensorValues, toBf16Bits } from './helpers'

// ---- precision --------------------------------------------------------------------------------

/** How the engine stores a matrix product's operand: activations, gradients and LoRA A/B are f32; the model's weights are bf16. */
export type Stored = 'f32' | 'bf16'

/**
 * What the oracle rounds, to simulate an engine of that precision.
 * - f32: every arithmetic result is rounded to f32 (Math.fround): matrix products accumulate
 *   sequentially in f32 with one rounding per multiply-add (an FMA), element-wise ops, norms,
 *   RoPE, softmax and attention round each step; exp/log/sqrt/sin/cos are computed in float64
 *   and their result rounded. false: plain float64 throughout. (The inputs, weights and adapter,
 *   are taken as given: in f32 mode they should be f32 values, as the engine's are; the
 *   fixtures' bf16 weights and f32 adapters are.)
 * - bf16Product(aStored, bStored): for each matrix product, given how its two operands are
 *   stored in the engine, whether the engine rounds BOTH operands to bf16 (round to nearest
 *   even) before multiplying. A product's scale factor (LoRA's alpha / r) is applied to its
 *   first operand before that rounding. Attention's products (q.k, p.v and their gradients'
 *   products) have two f32-stored operands: bf16Product('f32', 'f32') says whether they round.
 *   Norms, RoPE, SwiGLU and softmax are never bf16-rounded.
 */
export interface Precision {
  name: string
  f32: boolean
  bf16Product: (aStored: Stored, bStored: Stored) => boolean
}

/** float64 everywhere: the oracle proper (what the goldens are). */
export const exact: Precision = { name: 'exact', f32: false, bf16Product: () => false }
/** An f32 engine: f32 arithmetic, f32 FMA products. */
export const fp32: Precision = { name: 'fp32', f32: true, bf16Product: () => false }
/** Every matrix product on bf16 operands (both rounded), accumulated in f32. */
export const bf16: Precision = { name: 'bf16', f32: true, bf16Product: () => true }
/** bf16 products where an operand is a bf16-stored weight; f32 x f32 products (LoRA, weight gradients) stay f32. */
export const bf16Weights: Precision = { name: 'bf16Weights', f32: true, bf16Product: (a, b) => a === 'bf16' || b === 'bf16' }
export const PRECISIONS = { exact, fp32, bf16, bf16Weights } as const

type Round = (x: number) => number
const identity: Round = (x) => x
/** The rounding every arithmetic result goes through: Math.fround in f32 mode, none in exact mode. */
function rounder(p: Precision): Round {
  return p.f32 ? Math.fround : identity
}

/** Rounds to bf16 (nearest even) through helpers' bit conversion; a float64 value goes through f32 first. */
function roundBf16(values: Float64Array): Float64Array {
  const out = new Float64Array(values.length)
  for (let i = 0; i < values.length; i++) out[i] = fromBf16Bits(toBf16Bits(values[i]))
  return out
}

// ---- matrices ---------------------------------------------------------------------------------

/** A row-major matrix of float64 values. */
export interface Mat {
  rows: number
  cols: number
  data: Float64Array
}

export function mat(rows: number, cols: number, data: Float64Array = new Float64Array(rows * cols)): Mat {
  if (data.length !== rows * cols) throw new Error(`mat: ${data.length} values for [${rows}, ${cols}]`)
  return { rows, cols, data }
}

export function transpose(a: Mat): Mat {
  const out = mat(a.cols, a.rows)
  for (let i = 0; i < a.rows; i++) for (let j = 0; j < a.cols; j++) out.data[j * a.rows + i] = a.data[i * a.cols + j]
  return out
}

/**
 * THE matrix product, through which every product of the model goes (so the precision applies
 * uniformly): C[i, j] = sum_p a[i, p] * b[j, p], i.e. C = a . b^T, a [m, k], b [n, k] (the
 * layout of x W^T with W [out, in]; callers transpose for other products).
 * bf16: both operands rounded to bf16 first, when p.bf16Product says so for their storage.
 * f32: accumulated in order p = 0..k-1, each multiply-add rounded once (an FMA: the product of
 * two f32 values is exact in float64).
 */
export function matmul(a: Mat, aStored: Stored, b: Mat, bStored: Stored, p: Precision): Mat {
  if (a.cols !== b.cols) throw new Error(`matmul: [${a.rows}, ${a.cols}] . [${b.rows}, ${b.cols}]^T`)
  const m = a.rows, n = b.rows, k = a.cols
  const bf = p.bf16Product(aStored, bStored)
  const B = bf ? roundBf16(b.data) : b.data
  // a's rows go four at a time (zero rows pad the last four), sharing each load of b's row:
  // twice as fast in V8, and every C[i, j] is still its own sum taken in order.
  const A = new Float64Array(Math.ceil(m / 4) * 4 * k)
  A.set(bf ? roundBf16(a.data) : a.data)
  const C = new Float64Array(m * n)
  const store = (i: number, j: number, s0: number, s1: number, s2: number, s3: number) => {
    C[i * n + j] = s0
    if (i + 1 < m) C[(i + 1) * n + j] = s1
    if (i + 2 < m) C[(i + 2) * n + j] = s2
    if (i + 3 < m) C[(i + 3) * n + j] = s3
  }
  for (let i = 0; i < m; i += 4)
    for (let j = 0; j < n; j++) {
      const a0 = i * k, a1 = a0 + k, a2 = a1 + k, a3 = a2 + k, bj = j * k
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0
      // Two copies of the loop so that the exact one pays no rounding call.
      if (p.f32)
        for (let q = 0; q < k; q++) {
          const y = B[bj + q]
          s0 = Math.fround(s0 + A[a0 + q] * y)
          s1 = Math.fround(s1 + A[a1 + q] * y)
          s2 = Math.fround(s2 + A[a2 + q] * y)
          s3 = Math.fround(s3 + A[a3 + q] * y)
        }
      else
        for (let q = 0; q < k; q++) {
          const y = B[bj + q]
          s0 += A[a0 + q] * y
          s1 += A[a1 + q] * y
          s2 += A[a2 + q] * y
          s3 += A[a3 + q] * y
        }
      store(i, j, s0, s1, s2, s3)
    }
  return mat(m, n, C)
}

/** a + b, element-wise. */
export function add(a: Mat, b: Mat, p: Precision): Mat {
  if (a.data.length !== b.data.length) throw new Error('add: shapes differ')
  const rd = rounder(p)
  const out = mat(a.rows, a.cols)
  for (let i = 0; i < out.data.length; i++) out.data[i] = rd(a.data[i] + b.data[i])
  return out
}

/** s * a, element-wise. */
export function scaled(a: Mat, s: number, p: Precision): Mat {
  const rd = rounder(p)
  const out = mat(a.rows, a.cols)
  for (let i = 0; i < out.data.length; i++) out.data[i] = rd(s * a.data[i])
  return out
}

/** The same values seen as [rows, cols]. */
function reshaped(a: Mat, rows: number, cols: number): Mat {
  return mat(rows, cols, a.data)
}

/** [tokens, heads * headDim] seen as [tokens * heads, headDim]: one row per head (for Qwen3's q/k norms). */
function perHead(a: Mat, headDim: number): Mat {
  return reshaped(a, (a.rows * a.cols) / headDim, headDim)
}

// ---- model description ------------------------------------------------------------------------

export interface OracleConfig {
  model_type: 'ernie4_5' | 'qwen3'
  hidden_size: number
  intermediate_size: number
  num_hidden_layers: number
  num_attention_heads: number
  num_key_value_heads: number
  head_dim: number
  rms_norm_eps: number
  rope_theta: number
  vocab_size: number
}

/** Weights by HF name, [out, in] for projections; the LM head is tied to model.embed_tokens.weight. */
export type Weights = Map<string, Float64Array>

/** The seven projections LoRA may adapt, and their module paths inside a layer. */
export const PROJECTIONS = ['q', 'k', 'v', 'o', 'gate', 'up', 'down'] as const
export type Projection = (typeof PROJECTIONS)[number]
const MODULE: Record<Projection, string> = {
  q: 'self_attn.q_proj',
  k: 'self_attn.k_proj',
  v: 'self_attn.v_proj',
  o: 'self_attn.o_proj',
  gate: 'mlp.gate_proj',
  up: 'mlp.up_proj',
  down: 'mlp.down_proj',
}

export const weightName = (layer: number, proj: Projection) => `model.layers.${layer}.${MODULE[proj]}.weight`
/** The PEFT name of a LoRA tensor (as in adapter_model.safetensors, and the goldens after `lora.` / `grad.`). */
export const loraName = (layer: number, proj: Projection, which: 'A' | 'B') =>
  `base_model.model.model.layers.${layer}.${MODULE[proj]}.lora_${which}.weight`

/**
 * A LoRA adapter: y = x W^T + scale * (x A^T) B^T, A [r, in], B [out, r], scale = alpha / r
 * (PEFT). `tensors` holds A and B by PEFT name (loraName) for the projections it adapts; any
 * subset of layers and projections.
 */
export interface OracleAdapter {
  scale: number
  tensors: Map<string, Float64Array>
}

/** [out, in] of a projection's weight. */
export function projectionShape(c: OracleConfig, proj: Projection): [number, number] {
  const H = c.hidden_size, I = c.intermediate_size, q = c.num_attention_heads * c.head_dim, kv = c.num_key_value_heads * c.head_dim
  return ({ q: [q, H], k: [kv, H], v: [kv, H], o: [H, q], gate: [I, H], up: [I, H], down: [H, I] } as const)[proj] as [number, number]
}

/**
 * A batch: B rows of T tokens, row-major. attentionMask: 1 real, 0 padding (either side;
 * default all real). segmentIds: packed documents, a run of equal ids being one document.
 * labels: unshifted as in HF and the engine (position t predicts labels[t + 1]), -100 ignored.
 */
export interface OracleBatch {
  batch: number
  seq: number
  inputIds: ArrayLike<number>
  attentionMask?: ArrayLike<number>
  segmentIds?: ArrayLike<number>
  labels?: ArrayLike<number>
}

export interface OracleOptions {
  adapter?: OracleAdapter
  precision?: Precision
}

/** Everything a call needs, resolved once. */
interface Ctx {
  c: OracleConfig
  w: Weights
  adapter?: OracleAdapter
  p: Precision
  layout: BatchLayout
}

function context(c: OracleConfig, w: Weights, batch: OracleBatch, o: OracleOptions): Ctx {
  return { c, w, adapter: o.adapter, p: o.precision ?? exact, layout: batchLayout(batch) }
}

function weight(ctx: Ctx, name: string): Float64Array {
  const v = ctx.w.get(name)
  if (!v) throw new Error(`oracle: no weight "${name}"`)
  return v
}

function projectionWeight(ctx: Ctx, layer: number, proj: Projection): Mat {
  const [out, inp] = projectionShape(ctx.c, proj)
  return mat(out, inp, weight(ctx, weightName(layer, proj)))
}

function embedding(ctx: Ctx): Mat {
  return mat(ctx.c.vocab_size, ctx.c.hidden_size, weight(ctx, 'model.embed_tokens.weight'))
}

/** The adapter's A [r, in] and B [out, r] for a projection, or undefined when it does not adapt it. */
function loraOf(ctx: Ctx, layer: number, proj: Projection): { A: Mat; B: Mat; scale: number } | undefined {
  const a = ctx.adapter?.tensors.get(loraName(layer, proj, 'A'))
  const b = ctx.adapter?.tensors.get(loraName(layer, proj, 'B'))
  if (!a && !b) return undefined
  if (!a || !b) throw new Error(`oracle: layer ${layer} ${proj}: LoRA A and B must come together`)
  const [out, inp] = projectionShape(ctx.c, proj)
  const r = a.length / inp
  return { A: mat(r, inp, a), B: mat(out, r, b), scale: ctx.adapter!.scale }
}

// ---- batch layout: positions, visible keys, targets -------------------------------------------

interface BatchLayout {
  B: number
  T: number
  inputIds: ArrayLike<number>
  /** [B * T]: RoPE position of each token. */
  positions: Int32Array
  /** [B * T]: 1 where the token is real (a key attention may read). */
  real: Uint8Array
  /** [B * T]: the first token of the document the token belongs to (0 without segments). */
  docStart: Int32Array
  /** [B * T]: the token each position predicts, -1 when none. */
  targets: Int32Array
}

/**
 * Positions count the real tokens of a row from 0 (so left and right padding give the same
 * positions to real tokens), restarting at 0 at each document's first token. A padding token
 * takes the position of the real token before it (0 when none): its output is unspecified, and
 * this is only so that it is finite and the same as the engine's.
 */
function batchLayout(batch: OracleBatch): BatchLayout {
  const { batch: B, seq: T, attentionMask: mask, segmentIds: seg } = batch
  if (batch.inputIds.length !== B * T) throw new Error(`oracle: ${batch.inputIds.length} input ids for [${B}, ${T}]`)
  const positions = new Int32Array(B * T), real = new Uint8Array(B * T), docStart = new Int32Array(B * T)
  for (let b = 0; b < B; b++) {
    let pos = 0, start = 0
    for (let t = 0; t < T; t++) {
      const i = b * T + t
      if (seg && t > 0 && seg[i] !== seg[i - 1]) {
        start = t // a new document
        pos = 0
      }
      real[i] = !mask || mask[i] !== 0 ? 1 : 0
      docStart[i] = start
      positions[i] = real[i] ? pos++ : Math.max(pos - 1, 0)
    }
  }
  return { B, T, inputIds: batch.inputIds, positions, real, docStart, targets: nextTokenTargets(batch, real) }
}

/**
 * Position t predicts the token at t + 1. With labels: labels[t + 1], ignored when negative
 * (-100), whatever the mask says (a collator marks padding -100). Without labels: the next input
 * id when that token is real. The last position of a row predicts nothing. Segment ids play no
 * part: without labels a document's last token predicts the next one's first (packDocuments
 * gives labels with -100 there).
 */
function nextTokenTargets(batch: OracleBatch, real: Uint8Array): Int32Array {
  const { batch: B, seq: T, labels } = batch
  const targets = new Int32Array(B * T).fill(-1)
  for (let b = 0; b < B; b++)
    for (let t = 0; t + 1 < T; t++) {
      const next = b * T + t + 1
      const y = labels ? labels[next] : real[next] ? batch.inputIds[next] : -1
      targets[b * T + t] = y >= 0 ? y : -1
    }
  return targets
}

/** Causal, not padding, same document: may query token (b, i) read key (b, j)? */
function sees(L: BatchLayout, b: number, i: number, j: number): boolean {
  return j <= i && L.real[b * L.T + j] === 1 && j >= L.docStart[b * L.T + i]
}

// ---- element-wise pieces ----------------------------------------------------------------------

/** RMSNorm per row: y = x * r * w, r = 1 / sqrt(mean(x^2) + eps). Returns r per row for the backward. */
export function rmsnorm(x: Mat, w: ArrayLike<number>, eps: number, p: Precision): { y: Mat; rstd: Float64Array } {
  const rd = rounder(p)
  const { rows, cols } = x
  const y = mat(rows, cols), rstd = new Float64Array(rows)
  for (let r = 0; r < rows; r++) {
    const o = r * cols
    let ss = 0
    for (let i = 0; i < cols; i++) ss = rd(ss + x.data[o + i] * x.data[o + i])
    rstd[r] = rd(1 / Math.sqrt(rd(rd(ss / cols) + eps)))
    for (let i = 0; i < cols; i++) y.data[o + i] = rd(rd(x.data[o + i] * rstd[r]) * w[i])
  }
  return { y, rstd }
}

/**
 * Gradients of sum(dy * y) for y = x r w: dw_i = sum_rows dy_i x_i r, and
 * dx_i = r w_i dy_i - x_i r^3 (sum_j dy_j w_j x_j) / dim (the second term from r's dependence on x).
 */
export function rmsnormBackward(dy: Mat, x: Mat, w: ArrayLike<number>, rstd: Float64Array, p: Precision): { dx: Mat; dw: Float64Array } {
  const rd = rounder(p)
  const { rows, cols } = x
  const dx = mat(rows, cols), dw = new Float64Array(cols)
  for (let r = 0; r < rows; r++) {
    const o = r * cols, rs = rstd[r]
    let s = 0
    for (let i = 0; i < cols; i++) s = rd(s + rd(dy.data[o + i] * w[i]) * x.data[o + i])
    const c = rd(rd(rd(rs * rs) * rs) * rd(s / cols))
    for (let i = 0; i < cols; i++) {
      dx.data[o + i] = rd(rd(rd(rs * w[i]) * dy.data[o + i]) - x.data[o + i] * c)
      dw[i] = rd(dw[i] + rd(dy.data[o + i] * x.data[o + i]) * rs)
    }
  }
  return { dx, dw }
}

/**
 * RoPE on x [tokens, heads * headDim]: in every head, pair i (adjacent (2i, 2i+1) for
 * ERNIE-4.5, halves (i, i + headDim/2) for Qwen3) rotated by pos * theta^(-2i/headDim).
 * `inverse` rotates back, which is also the backward (a rotation's transpose is its inverse).
 */
export function rope(x: Mat, positions: Int32Array, headDim: number, theta: number, pairing: 'adjacent' | 'half', inverse: boolean, p: Precision): Mat {
  const rd = rounder(p)
  const heads = x.cols / headDim
  const out = mat(x.rows, x.cols)
  for (let r = 0; r < x.rows; r++)
    for (let i = 0; i < headDim / 2; i++) {
      const angle = (inverse ? -1 : 1) * positions[r] * Math.pow(theta, (-2 * i) / headDim)
      const c = rd(Math.cos(angle)), s = rd(Math.sin(angle))
      const p0 = pairing === 'adjacent' ? 2 * i : i
      const p1 = pairing === 'adjacent' ? 2 * i + 1 : i + headDim / 2
      for (let h = 0; h < heads; h++) {
        const o = (r * heads + h) * headDim
        const a = x.data[o + p0], b = x.data[o + p1]
        out.data[o + p0] = rd(a * c - rd(b * s))
        out.data[o + p1] = rd(a * s + rd(b * c))
      }
    }
  return out
}

const sigmoid = (g: number) => 1 / (1 + Math.exp(-g))

/** SwiGLU: silu(gate) * up, silu(g) = g * sigmoid(g). */
export function swiglu(gate: Mat, up: Mat, p: Precision): Mat {
  const rd = rounder(p)
  const out = mat(gate.rows, gate.cols)
  for (let i = 0; i < out.data.length; i++) {
    const g = gate.data[i]
    out.data[i] = rd(rd(g * rd(sigmoid(g))) * up.data[i])
  }
  return out
}

/** d/dgate = dy * up * s * (1 + g (1 - s)), d/dup = dy * silu(g), s = sigmoid(g). */
export function swigluBackward(dy: Mat, gate: Mat, up: Mat, p: Precision): { dgate: Mat; dup: Mat } {
  const rd = rounder(p)
  const dgate = mat(gate.rows, gate.cols), dup = mat(gate.rows, gate.cols)
  for (let i = 0; i < dy.data.length; i++) {
    const g = gate.data[i], s = rd(sigmoid(g))
    dup.data[i] = rd(dy.data[i] * rd(g * s))
    dgate.data[i] = rd(rd(dy.data[i] * up.data[i]) * rd(s * rd(1 + rd(g * rd(1 - s)))))
  }
  return { dgate, dup }
}

// ---- attention --------------------------------------------------------------------------------
// q [tokens, heads * D], k and v [tokens, kvHeads * D]; query head h reads kv head
// floor(h / (heads / kvHeads)) (GQA). The scores are scale * q.k with scale = 1/sqrt(D). When its
// products round (attentionRound), as the engine states it (backend/ops.h, AttentionArgs): the
// forward's (c q).k with c = scale log2(e) and e.v with e the unnormalised exponentials (relative
// to the row's maximum), and the backward's q.k, dout.v, p.dout, ds.k and ds.q take bf16-rounded
// operands.

/** The rounding of attention's product operands at precision p: bf16 or none. */
function attentionRound(p: Precision): Round {
  return p.bf16Product('f32', 'f32') ? (x) => fromBf16Bits(toBf16Bits(x)) : identity
}

interface AttentionSaved {
  q: Mat
  k: Mat
  v: Mat
  out: Mat
  /** [B * heads * T]: log-sum-exp of each query row's scores (-Infinity when it sees no key). */
  lse: Float64Array
}

/** p_j = softmax_j(scale q_i . k_j) over the keys query i sees; out_i = sum_j p_j v_j (0 when it sees none). */
function attentionForward(c: OracleConfig, L: BatchLayout, q: Mat, k: Mat, v: Mat, p: Precision): AttentionSaved {
  const rd = rounder(p), r = attentionRound(p)
  const { B, T } = L
  const H = c.num_attention_heads, KV = c.num_key_value_heads, D = c.head_dim, group = H / KV
  const scale = rd(1 / Math.sqrt(D))
  const out = mat(q.rows, q.cols), lse = new Float64Array(B * H * T)
  const scores = new Float64Array(T)
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / group)
      for (let i = 0; i < T; i++) {
        const qo = ((b * T + i) * H + h) * D
        let max = -Infinity
        for (let j = 0; j < T; j++) {
          if (!sees(L, b, i, j)) continue
          const ko = ((b * T + j) * KV + kvh) * D
          let dot = 0
          if (r === identity) {
            for (let d = 0; d < D; d++) dot = rd(dot + q.data[qo + d] * k.data[ko + d])
            scores[j] = rd(scale * dot)
          } else {  // in log2 units, as the engine forms them: (c q).k with c = scale log2(e)
            const c2 = rd(scale * rd(Math.LOG2E))
            for (let d = 0; d < D; d++) dot = rd(dot + r(rd(c2 * q.data[qo + d])) * r(k.data[ko + d]))
            scores[j] = rd(dot * rd(Math.LN2))
          }
          max = Math.max(max, scores[j])
        }
        const lo = (b * H + h) * T + i
        if (max === -Infinity) {
          lse[lo] = -Infinity
          continue
        }
        let sum = 0
        for (let j = 0; j < T; j++) if (sees(L, b, i, j)) sum = rd(sum + rd(Math.exp(rd(scores[j] - max))))
        lse[lo] = rd(max + rd(Math.log(sum)))
        for (let j = 0; j < T; j++) {
          if (!sees(L, b, i, j)) continue
          const vo = ((b * T + j) * KV + kvh) * D
          if (r === identity) {
            const pj = rd(Math.exp(rd(scores[j] - lse[lo])))
            for (let d = 0; d < D; d++) out.data[qo + d] = rd(out.data[qo + d] + pj * v.data[vo + d])
          } else {  // e_j / sum, e_j rounded as the product's operand
            const ej = r(rd(Math.exp(rd(scores[j] - max))))
            for (let d = 0; d < D; d++) out.data[qo + d] = rd(out.data[qo + d] + rd(ej * r(v.data[vo + d])))
          }
        }
        if (r !== identity) for (let d = 0; d < D; d++) out.data[qo + d] = rd(out.data[qo + d] / sum)
      }
    }
  return { q, k, v, out, lse }
}

/**
 * The gradient of sum(dout * out), by hand. With p_ij = exp(s_ij - lse_i):
 *   dv_j = sum_i p_ij dout_i,  dp_ij = dout_i . v_j,  ds_ij = p_ij (dp_ij - dout_i . out_i),
 *   dq_i = scale sum_j ds_ij k_j,  dk_j = scale sum_i ds_ij q_i
 * (the query heads of a GQA group add into the same dk, dv).
 */
function attentionBackward(c: OracleConfig, L: BatchLayout, s: AttentionSaved, dout: Mat, p: Precision): { dq: Mat; dk: Mat; dv: Mat } {
  const rd = rounder(p), r = attentionRound(p)
  const { B, T } = L
  const H = c.num_attention_heads, KV = c.num_key_value_heads, D = c.head_dim, group = H / KV
  const scale = rd(1 / Math.sqrt(D))
  const { q, k, v, out, lse } = s
  const dq = mat(q.rows, q.cols), dk = mat(k.rows, k.cols), dv = mat(v.rows, v.cols)
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++) {
      const kvh = Math.floor(h / group)
      for (let i = 0; i < T; i++) {
        const l = lse[(b * H + h) * T + i]
        if (l === -Infinity) continue
        const qo = ((b * T + i) * H + h) * D
        let delta = 0
        for (let d = 0; d < D; d++) delta = rd(delta + dout.data[qo + d] * out.data[qo + d])
        for (let j = 0; j < T; j++) {
          if (!sees(L, b, i, j)) continue
          const ko = ((b * T + j) * KV + kvh) * D
          let dot = 0, dp = 0
          for (let d = 0; d < D; d++) {
            dot = rd(dot + r(q.data[qo + d]) * r(k.data[ko + d]))
            dp = rd(dp + r(dout.data[qo + d]) * r(v.data[ko + d]))
          }
          const pij = rd(Math.exp(rd(rd(scale * dot) - l)))
          const ds = r(rd(scale * rd(pij * rd(dp - delta))))
          const pr = r(pij)
          for (let d = 0; d < D; d++) {
            dv.data[ko + d] = rd(dv.data[ko + d] + pr * r(dout.data[qo + d]))
            dq.data[qo + d] = rd(dq.data[qo + d] + ds * r(k.data[ko + d]))
            dk.data[ko + d] = rd(dk.data[ko + d] + ds * r(q.data[qo + d]))
          }
        }
      }
    }
  return { dq, dk, dv }
}

// ---- projections (+ LoRA) ---------------------------------------------------------------------

interface ProjectionSaved {
  layer: number
  proj: Projection
  x: Mat
  /** x A^T, when the adapter adapts this projection. */
  u?: Mat
}

/** y = x W^T (+ scale (x A^T) B^T with LoRA). */
function projectionForward(ctx: Ctx, layer: number, proj: Projection, x: Mat): { y: Mat; saved: ProjectionSaved } {
  const y = matmul(x, 'f32', projectionWeight(ctx, layer, proj), 'bf16', ctx.p)
  const lora = loraOf(ctx, layer, proj)
  if (!lora) return { y, saved: { layer, proj, x } }
  const u = matmul(x, 'f32', lora.A, 'f32', ctx.p) // LoRA down
  const up = matmul(scaled(u, lora.scale, ctx.p), 'f32', lora.B, 'f32', ctx.p) // LoRA up, on (scale u)
  return { y: add(y, up, ctx.p), saved: { layer, proj, x, u } }
}

/**
 * Given dy = dL/dy, adds dW (= dy^T x) and, with LoRA, dB (= scale dy^T u) and dA
 * (= scale (dy B)^T x) into grads; returns dx = dy W + scale (dy B) A.
 */
function projectionBackward(ctx: Ctx, s: ProjectionSaved, dy: Mat, grads: Map<string, Float64Array>): Mat {
  const { p } = ctx
  const W = projectionWeight(ctx, s.layer, s.proj)
  let dx = matmul(dy, 'f32', transpose(W), 'bf16', p)
  const dyT = transpose(dy), xT = transpose(s.x)
  addGrad(grads, weightName(s.layer, s.proj), matmul(dyT, 'f32', xT, 'f32', p).data, p)
  const lora = loraOf(ctx, s.layer, s.proj)
  if (!lora) return dx
  const g = matmul(dy, 'f32', transpose(lora.B), 'f32', p) // dy B [tokens, r]
  const sg = scaled(g, lora.scale, p)
  addGrad(grads, loraName(s.layer, s.proj, 'B'), matmul(transpose(scaled(dy, lora.scale, p)), 'f32', transpose(s.u!), 'f32', p).data, p)
  addGrad(grads, loraName(s.layer, s.proj, 'A'), matmul(transpose(sg), 'f32', xT, 'f32', p).data, p)
  dx = add(dx, matmul(sg, 'f32', transpose(lora.A), 'f32', p), p)
  return dx
}

/** grads[name] += g (a weight used twice, the tied embedding, gets both contributions). */
function addGrad(grads: Map<string, Float64Array>, name: string, g: Float64Array, p: Precision): void {
  const have = grads.get(name)
  if (!have) return void grads.set(name, g)
  const rd = rounder(p)
  for (let i = 0; i < g.length; i++) have[i] = rd(have[i] + g[i])
}

// ---- decoder layer ----------------------------------------------------------------------------

interface LayerSaved {
  x: Mat
  rstd1: Float64Array
  q: ProjectionSaved
  k: ProjectionSaved
  v: ProjectionSaved
  /** Qwen3: q and k before their per-head norm, and the norms' rstd. */
  qRaw?: Mat
  kRaw?: Mat
  qRstd?: Float64Array
  kRstd?: Float64Array
  attention: AttentionSaved
  o: ProjectionSaved
  x2: Mat
  rstd2: Float64Array
  gate: ProjectionSaved
  up: ProjectionSaved
  gateOut: Mat
  upOut: Mat
  down: ProjectionSaved
}

const layerWeight = (ctx: Ctx, layer: number, name: string) => weight(ctx, `model.layers.${layer}.${name}.weight`)
const pairing = (c: OracleConfig) => (c.model_type === 'qwen3' ? 'half' : 'adjacent')

/** x + attention(norm(x)), then + mlp(norm(.)): one pre-norm decoder layer. */
function layerForward(ctx: Ctx, layer: number, x: Mat): { y: Mat; saved: LayerSaved } {
  const { c, p, layout } = ctx
  const D = c.head_dim, eps = c.rms_norm_eps
  // Attention block.
  const n1 = rmsnorm(x, layerWeight(ctx, layer, 'input_layernorm'), eps, p)
  const q = projectionForward(ctx, layer, 'q', n1.y)
  const k = projectionForward(ctx, layer, 'k', n1.y)
  const v = projectionForward(ctx, layer, 'v', n1.y)
  let qh = q.y, kh = k.y
  let qRstd: Float64Array | undefined, kRstd: Float64Array | undefined
  if (c.model_type === 'qwen3') {
    // Per-head RMSNorm of q and k (each head's D values a row), before RoPE.
    const qn = rmsnorm(perHead(q.y, D), layerWeight(ctx, layer, 'self_attn.q_norm'), eps, p)
    const kn = rmsnorm(perHead(k.y, D), layerWeight(ctx, layer, 'self_attn.k_norm'), eps, p)
    qh = reshaped(qn.y, q.y.rows, q.y.cols)
    kh = reshaped(kn.y, k.y.rows, k.y.cols)
    qRstd = qn.rstd
    kRstd = kn.rstd
  }
  const qr = rope(qh, layout.positions, D, c.rope_theta, pairing(c), false, p)
  const kr = rope(kh, layout.positions, D, c.rope_theta, pairing(c), false, p)
  const attention = attentionForward(c, layout, qr, kr, v.y, p)
  const o = projectionForward(ctx, layer, 'o', attention.out)
  const x2 = add(x, o.y, p)
  // MLP block.
  const n2 = rmsnorm(x2, layerWeight(ctx, layer, 'post_attention_layernorm'), eps, p)
  const gate = projectionForward(ctx, layer, 'gate', n2.y)
  const up = projectionForward(ctx, layer, 'up', n2.y)
  const down = projectionForward(ctx, layer, 'down', swiglu(gate.y, up.y, p))
  const y = add(x2, down.y, p)
  const saved: LayerSaved = {
    x, rstd1: n1.rstd, q: q.saved, k: k.saved, v: v.saved, attention, o: o.saved,
    x2, rstd2: n2.rstd, gate: gate.saved, up: up.saved, gateOut: gate.y, upOut: up.y, down: down.saved,
  }
  if (c.model_type === 'qwen3') Object.assign(saved, { qRaw: q.y, kRaw: k.y, qRstd, kRstd })
  return { y, saved }
}

/** dL/dx of a layer from dL/dy, adding the layer's weight gradients into grads (the forward in reverse). */
function layerBackward(ctx: Ctx, layer: number, s: LayerSaved, dy: Mat, grads: Map<string, Float64Array>): Mat {
  const { c, p, layout } = ctx
  const D = c.head_dim
  const name = (n: string) => `model.layers.${layer}.${n}.weight`
  // MLP block: y = x2 + down(swiglu(gate(n2), up(n2))).
  const dAct = projectionBackward(ctx, s.down, dy, grads)
  const { dgate, dup } = swigluBackward(dAct, s.gateOut, s.upOut, p)
  const dn2 = add(projectionBackward(ctx, s.gate, dgate, grads), projectionBackward(ctx, s.up, dup, grads), p)
  const post = rmsnormBackward(dn2, s.x2, layerWeight(ctx, layer, 'post_attention_layernorm'), s.rstd2, p)
  addGrad(grads, name('post_attention_layernorm'), post.dw, p)
  const dx2 = add(dy, post.dx, p)
  // Attention block: x2 = x + o(attention(rope(q), rope(k), v)).
  const dAtt = projectionBackward(ctx, s.o, dx2, grads)
  const { dq, dk, dv } = attentionBackward(c, layout, s.attention, dAtt, p)
  let dqh = rope(dq, layout.positions, D, c.rope_theta, pairing(c), true, p)
  let dkh = rope(dk, layout.positions, D, c.rope_theta, pairing(c), true, p)
  if (c.model_type === 'qwen3') {
    const qn = rmsnormBackward(perHead(dqh, D), perHead(s.qRaw!, D), layerWeight(ctx, layer, 'self_attn.q_norm'), s.qRstd!, p)
    const kn = rmsnormBackward(perHead(dkh, D), perHead(s.kRaw!, D), layerWeight(ctx, layer, 'self_attn.k_norm'), s.kRstd!, p)
    addGrad(grads, name('self_attn.q_norm'), qn.dw, p)
    addGrad(grads, name('self_attn.k_norm'), kn.dw, p)
    dqh = reshaped(qn.dx, dqh.rows, dqh.cols)
    dkh = reshaped(kn.dx, dkh.rows, dkh.cols)
  }
  const dn1 = add(add(projectionBackward(ctx, s.q, dqh, grads), projectionBackward(ctx, s.k, dkh, grads), p), projectionBackward(ctx, s.v, dv, grads), p)
  const inp = rmsnormBackward(dn1, s.x, layerWeight(ctx, layer, 'input_layernorm'), s.rstd1, p)
  addGrad(grads, name('input_layernorm'), inp.dw, p)
  return add(dx2, inp.dx, p)
}

// ---- the whole model --------------------------------------------------------------------------

interface ModelSaved {
  layers: LayerSaved[]
  /** The last layer's output, before the final norm. */
  last: Mat
  finalRstd: Float64Array
  hidden: Mat
  logits: Mat
}

function embed(ctx: Ctx): Mat {
  const { c, layout } = ctx
  const H = c.hidden_size, E = embedding(ctx).data
  const x = mat(layout.B * layout.T, H)
  for (let i = 0; i < x.rows; i++) {
    const id = layout.inputIds[i]
    if (!(Number.isInteger(id) && id >= 0 && id < c.vocab_size)) throw new Error(`oracle: input id ${id} at ${i} is outside the vocabulary`)
    x.data.set(E.subarray(id * H, (id + 1) * H), i * H)
  }
  return x
}

function modelForward(ctx: Ctx): ModelSaved {
  let x = embed(ctx)
  const layers: LayerSaved[] = []
  for (let l = 0; l < ctx.c.num_hidden_layers; l++) {
    const r = layerForward(ctx, l, x)
    layers.push(r.saved)
    x = r.y
  }
  const fin = rmsnorm(x, weight(ctx, 'model.norm.weight'), ctx.c.rms_norm_eps, ctx.p)
  const logits = matmul(fin.y, 'f32', embedding(ctx), 'bf16', ctx.p) // tied LM head: hidden . E^T
  return { layers, last: x, finalRstd: fin.rstd, hidden: fin.y, logits }
}

/**
 * Mean cross-entropy over the positions with a target, and (withGrad) dL/dlogits =
 * (softmax - onehot) / count. Each position's loss is rounded like the rest; their sum is kept
 * in float64 (the engine reports a double).
 */
function crossEntropy(logits: Mat, targets: Int32Array, p: Precision, withGrad: boolean): { loss: number; count: number; dlogits: Mat } {
  const rd = rounder(p)
  const V = logits.cols
  const dlogits = mat(withGrad ? logits.rows : 0, V)
  let count = 0
  for (const y of targets) if (y >= 0) count++
  const gradScale = rd(count ? 1 / count : 0)
  let sum = 0
  for (let i = 0; i < logits.rows; i++) {
    const y = targets[i]
    if (y < 0) continue
    const row = logits.data.subarray(i * V, (i + 1) * V)
    let max = -Infinity
    for (let v = 0; v < V; v++) max = Math.max(max, row[v])
    let se = 0
    for (let v = 0; v < V; v++) se = rd(se + rd(Math.exp(rd(row[v] - max))))
    const lse = rd(max + rd(Math.log(se)))
    sum += rd(lse - row[y])
    if (withGrad)
      for (let v = 0; v < V; v++) dlogits.data[i * V + v] = rd(rd(rd(Math.exp(rd(row[v] - lse))) - (v === y ? 1 : 0)) * gradScale)
  }
  return { loss: count ? sum / count : 0, count, dlogits }
}

/** The backward of modelForward from dL/dlogits: every base weight's and adapter tensor's gradient. */
function modelBackward(ctx: Ctx, s: ModelSaved, dlogits: Mat): Map<string, Float64Array> {
  const { c, p, layout } = ctx
  const grads = new Map<string, Float64Array>()
  const E = embedding(ctx)
  // LM head (tied): logits = hidden . E^T, so dhidden = dlogits . E and dE = dlogits^T . hidden.
  const dhidden = matmul(dlogits, 'f32', transpose(E), 'bf16', p)
  addGrad(grads, 'model.embed_tokens.weight', matmul(transpose(dlogits), 'f32', transpose(s.hidden), 'f32', p).data, p)
  const fin = rmsnormBackward(dhidden, s.last, weight(ctx, 'model.norm.weight'), s.finalRstd, p)
  addGrad(grads, 'model.norm.weight', fin.dw, p)
  let dx = fin.dx
  for (let l = c.num_hidden_layers - 1; l >= 0; l--) dx = layerBackward(ctx, l, s.layers[l], dx, grads)
  // Embedding lookup: each token's row of E receives its dx row.
  const H = c.hidden_size
  const dLookup = new Float64Array(E.data.length)
  const rd = rounder(p)
  for (let i = 0; i < dx.rows; i++) {
    const o = layout.inputIds[i] * H
    for (let j = 0; j < H; j++) dLookup[o + j] = rd(dLookup[o + j] + dx.data[i * H + j])
  }
  addGrad(grads, 'model.embed_tokens.weight', dLookup, p)
  return grads
}

// ---- public calls -----------------------------------------------------------------------------

/** hidden [B * T, hidden_size] (after the final RMSNorm) and logits [B * T, vocab_size]. */
export function forward(c: OracleConfig, w: Weights, batch: OracleBatch, o: OracleOptions = {}): { hidden: Float64Array; logits: Float64Array } {
  const s = modelForward(context(c, w, batch, o))
  return { hidden: s.hidden.data, logits: s.logits.data }
}

/** The mean next-token cross-entropy (see OracleBatch for the targets) and how many positions it averages. */
export function loss(c: OracleConfig, w: Weights, batch: OracleBatch, o: OracleOptions = {}): { loss: number; count: number } {
  const ctx = context(c, w, batch, o)
  const { loss, count } = crossEntropy(modelForward(ctx).logits, ctx.layout.targets, ctx.p, false)
  return { loss, count }
}

/**
 * The loss and its gradient with respect to every parameter: base weights by HF name ([out,
 * in]; the tied embedding gets the lookup's and the LM head's parts, summed; norm weights;
 * Qwen3's q_norm/k_norm), and with an adapter every LoRA A and B by PEFT name. Also the
 * forward's hidden states and logits.
 */
export function lossAndGrad(
  c: OracleConfig,
  w: Weights,
  batch: OracleBatch,
  o: OracleOptions = {},
): { loss: number; count: number; grads: Map<string, Float64Array>; hidden: Float64Array; logits: Float64Array } {
  const ctx = context(c, w, batch, o)
  const s = modelForward(ctx)
  const { loss, count, dlogits } = crossEntropy(s.logits, ctx.layout.targets, ctx.p, true)
  const grads = modelBackward(ctx, s, dlogits)
  return { loss, count, grads, hidden: s.hidden.data, logits: s.logits.data }
}

// ---- fixtures ---------------------------------------------------------------------------------

export interface Fixture {
  config: OracleConfig
  weights: Weights
  /** The goldens' adapter (PEFT names, scale = lora_alpha / r); undefined where the golden has none. */
  adapter?: OracleAdapter
  /** The golden batch (input_ids, attention_mask). */
  batch: OracleBatch
  /** Every golden tensor as float64, by its name in golden.safetensors (base.hidden, grad.<name>, ...). */
  golden: Map<string, Float64Array>
}

export function readConfig(dir: string): OracleConfig {
  const j = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'))
  if (j.model_type !== 'ernie4_5' && j.model_type !== 'qwen3') throw new Error(`${dir}: model_type ${j.model_type}`)
  if (j.tie_word_embeddings === false) throw new Error(`${dir}: the oracle only knows the tied LM head`)
  return {
    model_type: j.model_type,
    hidden_size: j.hidden_size,
    intermediate_size: j.intermediate_size,
    num_hidden_layers: j.num_hidden_layers,
    num_attention_heads: j.num_attention_heads,
    num_key_value_heads: j.num_key_value_heads ?? j.num_attention_heads,
    head_dim: j.head_dim ?? j.hidden_size / j.num_attention_heads,
    rms_norm_eps: j.rms_norm_eps,
    rope_theta: j.rope_theta,
    vocab_size: j.vocab_size,
  }
}

/** A checkpoint's weights as float64 (BF16 decoded exactly), in the HF layout (a Paddle one converted). */
export function readWeights(dir: string, c: OracleConfig): Weights {
  const w: Weights = new Map()
  for (const [name, t] of readSafetensorsForTest(path.join(dir, 'model.safetensors'))) w.set(name, tensorValues(t))
  return [...w.keys()].some((n) => n.startsWith('ernie.')) ? fromPaddle(w, c) : w
}

/**
 * ERNIEKit / Paddle layout -> HF: `ernie.` -> `model.`; linear weights stored [in, out] are
 * transposed; the fused qkv_proj (q | k | v along the output axis) and up_gate_proj (gate first)
 * are split. Norms and the embedding keep their shapes.
 */
function fromPaddle(src: Weights, c: OracleConfig): Weights {
  const w: Weights = new Map()
  const H = c.hidden_size
  const get = (n: string) => src.get(n) ?? (() => { throw new Error(`Paddle checkpoint: no ${n}`) })()
  const outRows = (v: Float64Array) => transpose(mat(H, v.length / H, v)).data // [H, out] -> [out, H]
  for (const [name, v] of src) {
    const m = /^ernie\.layers\.(\d+)\.(.*)$/.exec(name)
    if (!m) w.set(name.replace(/^ernie\./, 'model.'), v)
    else if (!m[2].endsWith('proj.weight')) w.set(`model.layers.${m[1]}.${m[2]}`, v)
  }
  for (let l = 0; l < c.num_hidden_layers; l++) {
    const pre = `ernie.layers.${l}`
    const qkv = outRows(get(`${pre}.self_attn.qkv_proj.weight`)) // [(Hq + 2 KV) D, H]
    const q = projectionShape(c, 'q')[0] * H, kv = projectionShape(c, 'k')[0] * H
    w.set(weightName(l, 'q'), qkv.slice(0, q))
    w.set(weightName(l, 'k'), qkv.slice(q, q + kv))
    w.set(weightName(l, 'v'), qkv.slice(q + kv, q + 2 * kv))
    const gu = outRows(get(`${pre}.mlp.up_gate_proj.weight`)) // [2 I, H], gate first
    const I = c.intermediate_size * H
    w.set(weightName(l, 'gate'), gu.slice(0, I))
    w.set(weightName(l, 'up'), gu.slice(I, 2 * I))
    const [oOut, oIn] = projectionShape(c, 'o'), [dOut, dIn] = projectionShape(c, 'down')
    w.set(weightName(l, 'o'), transpose(mat(oIn, oOut, get(`${pre}.self_attn.o_proj.weight`))).data)
    w.set(weightName(l, 'down'), transpose(mat(dIn, dOut, get(`${pre}.mlp.down_proj.weight`))).data)
  }
  return w
}

/**
 * A fixture directory (test/fixtures/ernie-tiny, ernie-tiny-paddle, qwen3-tiny): config,
 * weights (HF names), the golden batch and tensors, and the golden adapter (golden.safetensors'
 * `lora.<PEFT name>` tensors; scale from adapter/adapter_config.json, else the README's r = 4,
 * alpha = 8).
 */
export function loadFixture(dir: string): Fixture {
  const config = readConfig(dir)
  const weights = readWeights(dir, config)
  const golden = new Map<string, Float64Array>()
  const stored = readSafetensorsForTest(path.join(dir, 'golden.safetensors'))
  for (const [name, t] of stored) golden.set(name, tensorValues(t))
  const [B, T] = stored.get('input_ids')!.shape
  const batch: OracleBatch = { batch: B, seq: T, inputIds: stored.get('input_ids')!.raw, attentionMask: stored.get('attention_mask')!.raw }
  const tensors = new Map<string, Float64Array>()
  for (const [name, v] of golden) if (name.startsWith('lora.base_model.')) tensors.set(name.slice('lora.'.length), v)
  let adapter: OracleAdapter | undefined
  if (tensors.size > 0) {
    const cfgFile = path.join(dir, 'adapter', 'adapter_config.json')
    const a = fs.existsSync(cfgFile) ? JSON.parse(fs.readFileSync(cfgFile, 'utf8')) : { r: 4, lora_alpha: 8 }
    adapter = { scale: a.lora_alpha / a.r, tensors }
  }
  return { config, weights, adapter, batch, golden }
}

// ---- per-sequence log-probabilities (DPO) ---------------------------------------------------------

/**
 * Scoring as the engine's forward `targets` define it: position t of a row predicts targets[t]
 * (negative: not scored). rowLogProbs[b] = sum over row b's scored positions of log p(target);
 * `loss` = sum_b rowWeights[b] * (-rowLogProbs[b]), and `grads` its gradient with respect to
 * every parameter (named as lossAndGrad's). Each position's -log p is rounded like the rest, a
 * row's sum kept in float64 (the engine reports doubles); dlogits = rowWeight * (softmax - onehot).
 */
export function weightedRows(
  c: OracleConfig,
  w: Weights,
  batch: OracleBatch,
  targets: ArrayLike<number>,
  rowWeights: ArrayLike<number>,
  o: OracleOptions = {},
): { rowLogProbs: Float64Array; loss: number; grads: Map<string, Float64Array> } {
  const ctx = context(c, w, batch, o)
  const rd = rounder(ctx.p)
  const s = modelForward(ctx)
  const { B, T } = ctx.layout
  const V = s.logits.cols
  const dlogits = mat(s.logits.rows, V)
  const rowLogProbs = new Float64Array(B)
  for (let i = 0; i < B * T; i++) {
    const y = targets[i]
    if (y < 0) continue
    const b = Math.floor(i / T)
    const row = s.logits.data.subarray(i * V, (i + 1) * V)
    let max = -Infinity
    for (let v = 0; v < V; v++) max = Math.max(max, row[v])
    let se = 0
    for (let v = 0; v < V; v++) se = rd(se + rd(Math.exp(rd(row[v] - max))))
    const lse = rd(max + rd(Math.log(se)))
    rowLogProbs[b] -= rd(lse - row[y])
    const scale = rd(rowWeights[b])
    for (let v = 0; v < V; v++) dlogits.data[i * V + v] = rd(rd(rd(Math.exp(rd(row[v] - lse))) - (v === y ? 1 : 0)) * scale)
  }
  let loss = 0
  for (let b = 0; b < B; b++) loss -= rowWeights[b] * rowLogProbs[b]
  return { rowLogProbs, loss, grads: modelBackward(ctx, s, dlogits) }
}
