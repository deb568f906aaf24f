// Fused causal attention (flash style): the forward saves the log-sum-exp of each query row,
// the backward recomputes the probabilities from it. Float32 arrays; the products' operands
// rounded to bf16 at precision 'bf16'.
import * as addon from '../native'
import type { OnDevice } from '../device'
import { withPrecision, type Precision } from '../precision'

/**
 * Shape and inputs shared by both directions. Row-major layouts:
 * - `q` [batch, tq, heads, headDim]
 * - `k`, `v` [batch, tk, kvHeads, headDim]; query head h reads kv head h / (heads / kvHeads)
 *
 * Causal with bottom-right alignment: query row i is position i + (tk - tq) and sees keys
 * j <= that position, so tq === tk in training and tq < tk for queries over a KV cache.
 */
export interface AttentionShape extends OnDevice {
  q: Float32Array
  k: Float32Array
  v: Float32Array
  /**
   * [batch, tk]: 1 for a real key, 0 for padding (excluded). A query row that sees no key gets
   * out = 0 and lse = -Infinity.
   */
  keyMask?: Int32Array | Uint8Array
  /**
   * [batch, tq]: the first key position each query row sees, in [0, tk] (packed documents: a row
   * sees only its own document's keys). Default 0.
   */
  keyStart?: Int32Array
  batch: number
  tq: number
  /** Key positions; tq <= tk. */
  tk: number
  heads: number
  /** Divides `heads`. */
  kvHeads: number
  headDim: number
  /** Multiplies q . k before the softmax; default 1 / sqrt(headDim). */
  scale?: number
  /**
   * What the products round (README "Precision"): 'bf16' rounds the operands of q.k, p.v and the
   * backward's products to bf16 (sums in f32; the softmax stays f32); 'fp32' and 'auto' (the
   * operands are f32 activations) round none on the CPU. Default: ERNIE_PRECISION, else 'auto'.
   */
  precision?: Precision
}

export interface AttentionForwardOptions extends AttentionShape {
  /** [batch, tq, heads, headDim], written. */
  out: Float32Array
  /** [batch, heads, tq], written: the natural-log log-sum-exp of each row's scaled scores. */
  lse: Float32Array
}

export interface AttentionBackwardOptions extends AttentionShape {
  /** The forward's output and lse for the same inputs. */
  out: Float32Array
  lse: Float32Array
  /** Gradient of the loss with respect to `out`. */
  dout: Float32Array
  /** Gradients for q, k, v, overwritten; must not share memory with any input or each other. */
  dq: Float32Array
  dk: Float32Array
  dv: Float32Array
}

/** out = softmax(scale q k^T, causal and padding masked) v, and the per-row lse. */
export async function attentionForward(o: AttentionForwardOptions): Promise<void> {
  return addon.attentionForward(withPrecision(o))
}
export function attentionForwardSync(o: AttentionForwardOptions): void {
  addon.attentionForwardSync(withPrecision(o))
}

/** dq, dk, dv for dout, from the forward's out and lse. */
export async function attentionBackward(o: AttentionBackwardOptions): Promise<void> {
  return addon.attentionBackward(withPrecision(o))
}
export function attentionBackwardSync(o: AttentionBackwardOptions): void {
  addon.attentionBackwardSync(withPrecision(o))
}
