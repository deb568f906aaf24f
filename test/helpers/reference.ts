// float64 references of the kernels, one of each, shared by the CPU tests
// (test/kernels/attention.test.ts, ops.test.ts, lora.test.ts, loss.test.ts, optim.test.ts,
// trainer-optim.test.ts) and the tests of every backend (test/kernels/backend-ops.test.ts). A
// module of its own because a test file registers its tests when imported. Each is written from
// the maths in its comment, never from a kernel's output.

// ---- attention --------------------------------------------------------------------------------
import type { AttentionShape as KernelAttentionShape } from '../../lib/kernels/attention'

/** The kernels' shape and masks, without the arrays. */
export type AttentionShape = Omit<KernelAttentionShape, 'q' | 'k' | 'v'>

export const qSize = (s: AttentionShape) => s.batch * s.tq * s.heads * s.headDim
export const kvSize = (s: AttentionShape) => s.batch * s.tk * s.kvHeads * s.headDim
export const lseSize = (s: AttentionShape) => s.batch * s.heads * s.tq

// Key j is visible to query row i (causality aside): not padding, and not before the row's keyStart.
const keyOk = (s: AttentionShape, b: number, i: number, j: number) =>
  (!s.keyMask || s.keyMask[b * s.tk + j] !== 0) && (!s.keyStart || j >= s.keyStart[b * s.tq + i])

// For query row i of head h: scores s_j = scale q_i . k_j over the keys it sees (j <= i + tk - tq,
// keyMask 1, j >= keyStart_i); p = softmax(s); out_i = sum_j p_j v_j; lse_i = log sum_j exp(s_j).
// A row that sees no key: out 0, lse -inf.
export function refAttentionForward(s: AttentionShape, q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>) {
  const { batch, tq, tk, heads, kvHeads, headDim: D } = s
  const scale = s.scale ?? 1 / Math.sqrt(D)
  const group = heads / kvHeads
  const out = new Float64Array(qSize(s))
  const lse = new Float64Array(lseSize(s))
  const scores = new Float64Array(tk)
  for (let b = 0; b < batch; b++)
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / group)
      for (let i = 0; i < tq; i++) {
        const qo = ((b * tq + i) * heads + h) * D
        let m = -Infinity
        const last = i + tk - tq
        for (let j = 0; j <= last; j++) {
          if (!keyOk(s, b, i, j)) continue
          const ko = ((b * tk + j) * kvHeads + kvh) * D
          let dot = 0
          for (let d = 0; d < D; d++) dot += q[qo + d] * k[ko + d]
          scores[j] = scale * dot
          m = Math.max(m, scores[j])
        }
        const lo = (b * heads + h) * tq + i
        if (m === -Infinity) {
          lse[lo] = -Infinity
          continue
        }
        let sum = 0
        for (let j = 0; j <= last; j++) if (keyOk(s, b, i, j)) sum += Math.exp(scores[j] - m)
        lse[lo] = m + Math.log(sum)
        for (let j = 0; j <= last; j++) {
          if (!keyOk(s, b, i, j)) continue
          const p = Math.exp(scores[j] - lse[lo])
          const vo = ((b * tk + j) * kvHeads + kvh) * D
          for (let d = 0; d < D; d++) out[qo + d] += p * v[vo + d]
        }
      }
    }
  return { out, lse }
}

// The gradient of a loss L(out), derived by hand. With p_ij = exp(s_ij - lse_i):
//   dv_j  = sum_i p_ij dout_i
//   dp_ij = dout_i . v_j
//   ds_ij = dL/ds_ij = p_ij (dp_ij - sum_l p_il dp_il) = p_ij (dp_ij - dout_i . out_i)
//   dq_i  = scale sum_j ds_ij k_j,   dk_j = scale sum_i ds_ij q_i
// (GQA: the query heads of a group add into the same dk, dv rows.)
export function refAttentionBackward(s: AttentionShape, q: ArrayLike<number>, k: ArrayLike<number>, v: ArrayLike<number>, dout: ArrayLike<number>) {
  const { batch, tq, tk, heads, kvHeads, headDim: D } = s
  const scale = s.scale ?? 1 / Math.sqrt(D)
  const group = heads / kvHeads
  const { out, lse } = refAttentionForward(s, q, k, v)
  const dq = new Float64Array(qSize(s))
  const dk = new Float64Array(kvSize(s))
  const dv = new Float64Array(kvSize(s))
  for (let b = 0; b < batch; b++)
    for (let h = 0; h < heads; h++) {
      const kvh = Math.floor(h / group)
      for (let i = 0; i < tq; i++) {
        const l = lse[(b * heads + h) * tq + i]
        if (l === -Infinity) continue
        const qo = ((b * tq + i) * heads + h) * D
        let delta = 0
        for (let d = 0; d < D; d++) delta += dout[qo + d] * out[qo + d]
        for (let j = 0; j <= i + tk - tq; j++) {
          if (!keyOk(s, b, i, j)) continue
          const ko = ((b * tk + j) * kvHeads + kvh) * D
          let dot = 0
          let dp = 0
          for (let d = 0; d < D; d++) {
            dot += q[qo + d] * k[ko + d]
            dp += dout[qo + d] * v[ko + d]
          }
          const p = Math.exp(scale * dot - l)
          const ds = p * (dp - delta)
          for (let d = 0; d < D; d++) {
            dv[ko + d] += p * dout[qo + d]
            dq[qo + d] += scale * ds * k[ko + d]
            dk[ko + d] += scale * ds * q[qo + d]
          }
        }
      }
    }
  return { dq, dk, dv }
}

// ---- RMSNorm ----------------------------------------------------------------------------------
// y = x r w, r = (mean(x^2) + eps)^-1/2, per row.
export function refRmsnorm(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, dim: number, eps: number) {
  const y = new Float64Array(rows * dim)
  const rstd = new Float64Array(rows)
  for (let r = 0; r < rows; r++) {
    let ss = 0
    for (let i = 0; i < dim; i++) ss += x[r * dim + i] ** 2
    rstd[r] = 1 / Math.sqrt(ss / dim + eps)
    for (let i = 0; i < dim; i++) y[r * dim + i] = x[r * dim + i] * rstd[r] * w[i]
  }
  return { y, rstd }
}

// d/dx and d/dw of sum(dout * y), written out from y_i = w_i x_i r, r = (mean(x^2) + eps)^-1/2.
// dxScale is dx's first term alone: at small dim the two terms nearly cancel (at dim = 1,
// dx = r w g eps / (x^2 + eps)), and f32 can only be asked for accuracy relative to the terms.
export function refRmsnormBackward(dout: ArrayLike<number>, x: ArrayLike<number>, w: ArrayLike<number>, rows: number, dim: number, eps: number) {
  const { rstd } = refRmsnorm(x, w, rows, dim, eps)
  const dx = new Float64Array(rows * dim)
  const dxScale = new Float64Array(rows * dim)
  const dw = new Float64Array(dim)
  for (let r = 0; r < rows; r++) {
    const o = r * dim
    const rs = rstd[r]
    let s = 0
    for (let i = 0; i < dim; i++) s += dout[o + i] * w[i] * x[o + i]
    for (let i = 0; i < dim; i++) {
      dxScale[o + i] = rs * w[i] * dout[o + i]
      dx[o + i] = dxScale[o + i] - (x[o + i] * rs ** 3 * s) / dim
      dw[i] += dout[o + i] * x[o + i] * rs
    }
  }
  return { dx, dw, dxScale }
}

// ---- RoPE -------------------------------------------------------------------------------------
export type Pairing = 'adjacent' | 'half'

// Every head's pairs ((2i, 2i+1) or (i, i + headDim/2)) rotated by pos * theta^(-2i/headDim) (minus that when inverse).
export function refRope(x: ArrayLike<number>, positions: Int32Array, heads: number, headDim: number, theta: number, pairing: Pairing, inverse = false) {
  const out = new Float64Array(x.length)
  for (let r = 0; r < positions.length; r++)
    for (let i = 0; i < headDim / 2; i++) {
      const angle = (inverse ? -1 : 1) * positions[r] * Math.pow(theta, (-2 * i) / headDim)
      const c = Math.cos(angle), s = Math.sin(angle)
      const [p0, p1] = pairing === 'adjacent' ? [2 * i, 2 * i + 1] : [i, i + headDim / 2]
      for (let h = 0; h < heads; h++) {
        const base = (r * heads + h) * headDim
        const a = x[base + p0], b = x[base + p1]
        out[base + p0] = a * c - b * s
        out[base + p1] = a * s + b * c
      }
    }
  return out
}

// ---- SwiGLU -----------------------------------------------------------------------------------
const sigmoid = (g: number) => 1 / (1 + Math.exp(-g))
// out = silu(g) u; dgate = dout u s (1 + g (1 - s)), dup = dout g s, s = sigmoid(g).
export function refSwiglu(gate: ArrayLike<number>, up: ArrayLike<number>, dout?: ArrayLike<number>) {
  const n = gate.length
  const out = new Float64Array(n), dgate = new Float64Array(n), dup = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    const g = gate[i], s = sigmoid(g)
    out[i] = g * s * up[i]
    if (dout) {
      dup[i] = dout[i] * g * s
      dgate[i] = dout[i] * up[i] * s * (1 + g * (1 - s))
    }
  }
  return { out, dgate, dup }
}

// ---- LoRA -------------------------------------------------------------------------------------
export interface LoraProblem {
  m: number
  n: number
  k: number
  r: number
  scale: number
  x: ArrayLike<number>
  w: ArrayLike<number>
  a: ArrayLike<number>
  b: ArrayLike<number>
  /** The adapter's input after dropout (x itself without). */
  xd?: ArrayLike<number>
}

// y = x W^T + s (xd A^T) B^T; u = xd A^T.
export function refLoraForward(p: LoraProblem) {
  const { m, n, k, r, scale, x, w, a, b } = p
  const xd = p.xd ?? x
  const u = new Float64Array(m * r), y = new Float64Array(m * n)
  for (let i = 0; i < m; i++) {
    for (let q = 0; q < r; q++) for (let c = 0; c < k; c++) u[i * r + q] += xd[i * k + c] * a[q * k + c]
    for (let j = 0; j < n; j++) {
      let s = 0
      for (let c = 0; c < k; c++) s += x[i * k + c] * w[j * k + c]
      let l = 0
      for (let q = 0; q < r; q++) l += u[i * r + q] * b[j * r + q]
      y[i * n + j] = s + scale * l
    }
  }
  return { u, y }
}

// Gradients of sum(y * dy): g = dy B; dB = s dy^T u; dA = s g^T xd; dx = dy W + s (g A) masked as xd was
// (keep: whether input element i survived dropout, and keepScale its factor).
export function refLoraBackward(p: LoraProblem, dy: ArrayLike<number>, keep?: (i: number) => boolean, keepScale = 1) {
  const { m, n, k, r, scale, x, w, a, b } = p
  const xd = p.xd ?? x
  const u = new Float64Array(m * r), g = new Float64Array(m * r)
  for (let i = 0; i < m; i++)
    for (let q = 0; q < r; q++) {
      for (let c = 0; c < k; c++) u[i * r + q] += xd[i * k + c] * a[q * k + c]
      for (let j = 0; j < n; j++) g[i * r + q] += dy[i * n + j] * b[j * r + q]
    }
  const dx = new Float64Array(m * k), dA = new Float64Array(r * k), dB = new Float64Array(n * r)
  for (let i = 0; i < m; i++)
    for (let c = 0; c < k; c++) {
      let base = 0
      for (let j = 0; j < n; j++) base += dy[i * n + j] * w[j * k + c]
      let path = 0
      for (let q = 0; q < r; q++) path += scale * g[i * r + q] * a[q * k + c]
      const kept = keep ? keep(i * k + c) : true
      dx[i * k + c] = base + (kept ? path * keepScale : 0)
    }
  for (let q = 0; q < r; q++)
    for (let c = 0; c < k; c++) {
      let s = 0
      for (let i = 0; i < m; i++) s += g[i * r + q] * xd[i * k + c]
      dA[q * k + c] = scale * s
    }
  for (let j = 0; j < n; j++)
    for (let q = 0; q < r; q++) {
      let s = 0
      for (let i = 0; i < m; i++) s += dy[i * n + j] * u[i * r + q]
      dB[j * r + q] = scale * s
    }
  return { dx, dA, dB }
}

// The engine's dropout mask: splitmix64 of (seed xor splitmix64(i)), kept when >= p.
export function loraKeep(seed: bigint, i: number, p: number): boolean {
  const M = (1n << 64n) - 1n
  const mix = (x: bigint) => {
    x = (x + 0x9e3779b97f4a7c15n) & M
    x = ((x ^ (x >> 30n)) * 0xbf58476d1ce4e5b9n) & M
    x = ((x ^ (x >> 27n)) * 0x94d049bb133111ebn) & M
    return x ^ (x >> 31n)
  }
  return Number(mix(seed ^ mix(BigInt(i))) >> 11n) * 2 ** -53 >= p
}

// ---- embedding -------------------------------------------------------------------------------
// out[k] = table[ids[k]].
export function refEmbedding(ids: Int32Array, table: ArrayLike<number>, dim: number): Float64Array {
  const out = new Float64Array(ids.length * dim)
  for (let k = 0; k < ids.length; k++) for (let j = 0; j < dim; j++) out[k * dim + j] = table[ids[k] * dim + j]
  return out
}

// What the backward adds to dtable [vocab, dim]: row ids[k] gets dout[k], repeated ids summed.
export function refEmbeddingBackward(ids: Int32Array, dout: ArrayLike<number>, vocab: number, dim: number): Float64Array {
  const inc = new Float64Array(vocab * dim)
  for (let k = 0; k < ids.length; k++) for (let j = 0; j < dim; j++) inc[ids[k] * dim + j] += dout[k * dim + j]
  return inc
}

// ---- cross-entropy ----------------------------------------------------------------------------
// logits = h W^T; loss_t = lse_t - logit_t[target]; dlogits = (softmax - onehot) * scale (1 / count by default).
export function refCrossEntropy(h: ArrayLike<number>, w: ArrayLike<number>, targets: Int32Array, T: number, H: number, V: number, gradScale?: number) {
  let count = 0
  for (let i = 0; i < T; i++) if (targets[i] >= 0) count++
  const scale = gradScale ?? (count ? 1 / count : 0)
  const dhidden = new Float64Array(T * H)
  const dweight = new Float64Array(V * H)
  const logits = new Float64Array(V)
  let lossSum = 0
  for (let i = 0; i < T; i++) {
    const target = targets[i]
    if (target < 0) continue
    let max = -Infinity
    for (let v = 0; v < V; v++) {
      let s = 0
      for (let c = 0; c < H; c++) s += h[i * H + c] * w[v * H + c]
      logits[v] = s
      if (s > max) max = s
    }
    let sum = 0
    for (let v = 0; v < V; v++) sum += Math.exp(logits[v] - max)
    const lse = max + Math.log(sum)
    lossSum += lse - logits[target]
    for (let v = 0; v < V; v++) {
      const d = (Math.exp(logits[v] - lse) - (v === target ? 1 : 0)) * scale
      for (let c = 0; c < H; c++) {
        dhidden[i * H + c] += d * w[v * H + c]
        dweight[v * H + c] += d * h[i * H + c]
      }
    }
  }
  return { loss: count ? lossSum / count : 0, lossSum, count, dhidden, dweight }
}

// ---- AdamW ------------------------------------------------------------------------------------
export interface AdamHyper {
  lr: number
  beta1: number
  beta2: number
  eps: number
  weightDecay: number
}

// torch.optim.AdamW, float64, in place.
export function refAdamw(p: Float64Array, g: ArrayLike<number>, m: Float64Array, v: Float64Array, h: AdamHyper, step: number): void {
  const bc1 = 1 - h.beta1 ** step, bc2 = 1 - h.beta2 ** step
  for (let i = 0; i < p.length; i++) {
    p[i] *= 1 - h.lr * h.weightDecay
    m[i] = h.beta1 * m[i] + (1 - h.beta1) * g[i]
    v[i] = h.beta2 * v[i] + (1 - h.beta2) * g[i] * g[i]
    p[i] -= (h.lr / bc1) * (m[i] / (Math.sqrt(v[i]) / Math.sqrt(bc2) + h.eps))
  }
}

// ---- 8-bit AdamW ------------------------------------------------------------------------------
// bitsandbytes' create_dynamic_map(signed, max_exponent_bits = 7, total_bits = 8), float64:
// per decade i = 0..6, the centres of linspace(0.1, 1, k + 1) scaled by 10^(i - 6), with
// k = 2^i (signed, both signs) or 2^(i + 1) (unsigned); then 0 and 1; sorted.
export function dynamicMap(signed: boolean): Float64Array {
  const values: number[] = [0, 1]
  for (let i = 0; i < 7; i++) {
    const k = signed ? 2 ** i : 2 ** (i + 1)
    const bounds = Array.from({ length: k + 1 }, (_, j) => 0.1 + (0.9 * j) / k)
    for (let j = 0; j < k; j++) {
      const c = 10 ** (i - 6) * ((bounds[j] + bounds[j + 1]) / 2)
      values.push(c)
      if (signed) values.push(-c)
    }
  }
  return Float64Array.from(values.sort((a, b) => a - b))
}
// The values the engine stores: the map rounded to f32.
export const MAP_S = dynamicMap(true).map(Math.fround)
export const MAP_U = dynamicMap(false).map(Math.fround)

/** An 8-bit moment: one code per element, one absmax per block. */
export interface Q8 {
  codes: Uint8Array
  absmax: Float32Array
}

// float64 reference of one 8-bit AdamW step: dequantise, update, re-quantise with the new absmax.
export function refAdamw8bit(p: Float64Array, g: ArrayLike<number>, m: Q8, v: Q8, bs: number, h: AdamHyper, step: number) {
  const n = p.length
  const bc1 = 1 - h.beta1 ** step, bc2 = 1 - h.beta2 ** step
  const m1 = new Float64Array(n), v1 = new Float64Array(n)
  const blocks = Math.ceil(n / bs)
  const mAbs = new Float64Array(blocks), vAbs = new Float64Array(blocks)
  for (let i = 0; i < n; i++) {
    const b = Math.floor(i / bs)
    m1[i] = h.beta1 * MAP_S[m.codes[i]] * m.absmax[b] + (1 - h.beta1) * g[i]
    v1[i] = h.beta2 * MAP_U[v.codes[i]] * v.absmax[b] + (1 - h.beta2) * g[i] * g[i]
    mAbs[b] = Math.max(mAbs[b], Math.abs(m1[i]))
    vAbs[b] = Math.max(vAbs[b], v1[i])
    p[i] = p[i] * (1 - h.lr * h.weightDecay) - (h.lr / bc1) * (m1[i] / (Math.sqrt(v1[i]) / Math.sqrt(bc2) + h.eps))
  }
  const mq = new Float64Array(n), vq = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    const b = Math.floor(i / bs)
    mq[i] = mAbs[b] > 0 ? m1[i] / mAbs[b] : 0
    vq[i] = vAbs[b] > 0 ? v1[i] / vAbs[b] : 0
  }
  return { m1, v1, mAbs, vAbs, mq, vq }
}

/**
 * Blockwise quantisation of x against the map (codes into it, each value map[code] * absmax), as
 * the float64 maths states it: per block absmax = max |x| (given: `absmax`), q = x / absmax, the
 * code nearest to q (ties to the lower code). `halfStep` is, per element, half the gap between the
 * two codes around q, times absmax: how far the nearest code's value may lie from x, and so the
 * bound an 8-bit state is held to (a code on the other side of a midpoint, which f32 rounding of q
 * may pick, lies no further than that plus the rounding).
 */
export function refQuantize(x: ArrayLike<number>, absmax: ArrayLike<number>, bs: number, map: Float64Array) {
  const n = x.length
  const codes = new Uint8Array(n), values = new Float64Array(n), halfStep = new Float64Array(n)
  for (let i = 0; i < n; i++) {
    const a = absmax[Math.floor(i / bs)]
    const q = a > 0 ? x[i] / a : 0
    let c = 0 // the last code at or below q (map[0] <= q: q >= -1 signed, q >= 0 unsigned)
    while (c < 254 && map[c + 1] <= q) c++
    const lowerNearer = q - map[c] <= map[c + 1] - q
    codes[i] = lowerNearer ? c : c + 1
    values[i] = map[codes[i]] * a
    halfStep[i] = ((map[c + 1] - map[c]) / 2) * a
  }
  return { codes, values, halfStep }
}

// ---- SGD --------------------------------------------------------------------------------------
export interface SgdHyper {
  lr: number
  momentum: number
  weightDecay: number
  nesterov?: boolean
}

// torch.optim.SGD, float64, in place: d = g + wd p; with momentum buf = momentum buf + d and
// d = buf (nesterov: d + momentum buf); p -= lr d. buf is untouched without momentum.
export function refSgd(p: Float64Array, g: ArrayLike<number>, buf: Float64Array, h: SgdHyper): void {
  for (let i = 0; i < p.length; i++) {
    let d = g[i] + h.weightDecay * p[i]
    if (h.momentum) {
      buf[i] = h.momentum * buf[i] + d // torch starts from buf = d; a zero buffer gives the same
      d = h.nesterov ? d + h.momentum * buf[i] : buf[i]
    }
    p[i] -= h.lr * d
  }
}
