// The decoder's row ops, forward and backward: RMSNorm, RoPE, SwiGLU, embedding lookup.
// Tensors are flattened row-major typed arrays; activations and gradients are Float32Array,
// weights Float32Array or bf16 bits (Uint16Array). Outputs are written in place; an output
// must not share memory with another argument unless its comment says it may be the input.
import * as addon from '../native'
import type { F32OrBf16 } from './gemm'
import type { OnDevice } from '../device'

export interface RmsNormForwardOptions extends OnDevice {
  /** [rows, dim] */
  x: Float32Array
  /** [dim], f32 or bf16 bits */
  weight: F32OrBf16
  rows: number
  dim: number
  /** y = x * rsqrt(mean(x^2) + eps) * weight */
  eps: number
  /** [rows, dim]. May be `x` itself (in place), which leaves nothing for the backward. */
  out: Float32Array
  /** [rows], optional: rsqrt(mean(x^2) + eps) per row, which the backward needs. */
  rstd?: Float32Array
}

export interface RmsNormBackwardOptions extends OnDevice {
  /** [rows, dim]: the gradient of the loss with respect to the forward's output */
  dout: Float32Array
  /** [rows, dim]: the forward's input */
  x: Float32Array
  /** [dim], f32 or bf16 bits */
  weight: F32OrBf16
  /** [rows]: from the forward */
  rstd: Float32Array
  rows: number
  dim: number
  /** [rows, dim]: overwritten, or added to with `accumulate` (a residual stream's gradient). */
  dx: Float32Array
  accumulate?: boolean
  /** [dim], optional: the weight's gradient is ADDED to it (bitwise reproducible). */
  dweight?: Float32Array
}

/** 'adjacent' rotates pairs (2i, 2i+1) (ERNIE-4.5); 'half' rotates (i, i + headDim/2) (Qwen3). */
export type RopePairing = 'adjacent' | 'half'

interface RopeCommon extends OnDevice {
  /** [B*T] token positions, >= 0 (positions start at 0 for each sequence). */
  positions: Int32Array
  heads: number
  /** Even. */
  headDim: number
  /** rope_theta: pair i turns by pos * theta^(-2i/headDim). */
  theta: number
  pairing: RopePairing
}

export interface RopeForwardOptions extends RopeCommon {
  /** [B*T, heads, headDim]; rotated in place when `out` is omitted. */
  x: Float32Array
  /** Same shape as x; may be `x` itself. */
  out?: Float32Array
}

export interface RopeBackwardOptions extends RopeCommon {
  /** [B*T, heads, headDim]: gradient of the rotated tensor; rotated back in place without `dx`. */
  dout: Float32Array
  /** Same shape; may be `dout` itself. */
  dx?: Float32Array
}

/** out = silu(gate) * up, elementwise over [n]. */
export interface SwigluForwardSplit extends OnDevice {
  gate: Float32Array
  up: Float32Array
  out: Float32Array
}
/** The fused projection's output: each row of gateUp [rows, 2*dim] is gate, then up. */
export interface SwigluForwardFused extends OnDevice {
  gateUp: Float32Array
  rows: number
  dim: number
  /** [rows, dim] */
  out: Float32Array
}
export type SwigluForwardOptions = SwigluForwardSplit | SwigluForwardFused

export interface SwigluBackwardSplit extends OnDevice {
  dout: Float32Array
  gate: Float32Array
  up: Float32Array
  /** Written: dout * up * silu'(gate) */
  dgate: Float32Array
  /** Written: dout * silu(gate) */
  dup: Float32Array
}
export interface SwigluBackwardFused extends OnDevice {
  /** [rows, dim] */
  dout: Float32Array
  /** [rows, 2*dim] */
  gateUp: Float32Array
  rows: number
  dim: number
  /** [rows, 2*dim], written: dgate then dup in each row */
  dgateUp: Float32Array
}
export type SwigluBackwardOptions = SwigluBackwardSplit | SwigluBackwardFused

export interface EmbeddingForwardOptions extends OnDevice {
  /** [n] token ids, each in [0, vocab) (RangeError naming the first bad one otherwise). */
  ids: Int32Array
  /** [vocab, dim], f32 or bf16 bits */
  table: F32OrBf16
  vocab: number
  dim: number
  /** [n, dim] */
  out: Float32Array
}

export interface EmbeddingBackwardOptions extends OnDevice {
  ids: Int32Array
  /** [n, dim] */
  dout: Float32Array
  /** [vocab, dim]: row ids[k] gets dout[k] ADDED, in a fixed order (reproducible). */
  dtable: Float32Array
  vocab: number
  dim: number
}

export async function rmsnormForward(o: RmsNormForwardOptions): Promise<void> {
  return addon.rmsnormForward(o)
}
export function rmsnormForwardSync(o: RmsNormForwardOptions): void {
  addon.rmsnormForwardSync(o)
}
export async function rmsnormBackward(o: RmsNormBackwardOptions): Promise<void> {
  return addon.rmsnormBackward(o)
}
export function rmsnormBackwardSync(o: RmsNormBackwardOptions): void {
  addon.rmsnormBackwardSync(o)
}
export async function ropeForward(o: RopeForwardOptions): Promise<void> {
  return addon.ropeForward(o)
}
export function ropeForwardSync(o: RopeForwardOptions): void {
  addon.ropeForwardSync(o)
}
export async function ropeBackward(o: RopeBackwardOptions): Promise<void> {
  return addon.ropeBackward(o)
}
export function ropeBackwardSync(o: RopeBackwardOptions): void {
  addon.ropeBackwardSync(o)
}
export async function swigluForward(o: SwigluForwardOptions): Promise<void> {
  return addon.swigluForward(o)
}
export function swigluForwardSync(o: SwigluForwardOptions): void {
  addon.swigluForwardSync(o)
}
export async function swigluBackward(o: SwigluBackwardOptions): Promise<void> {
  return addon.swigluBackward(o)
}
export function swigluBackwardSync(o: SwigluBackwardOptions): void {
  addon.swigluBackwardSync(o)
}
export async function embeddingForward(o: EmbeddingForwardOptions): Promise<void> {
  return addon.embeddingForward(o)
}
export function embeddingForwardSync(o: EmbeddingForwardOptions): void {
  addon.embeddingForwardSync(o)
}
export async function embeddingBackward(o: EmbeddingBackwardOptions): Promise<void> {
  return addon.embeddingBackward(o)
}
export function embeddingBackwardSync(o: EmbeddingBackwardOptions): void {
  addon.embeddingBackwardSync(o)
}

/** The blocking twins, for `kernels.sync`. */
export const opsSync = {
  rmsnormForward: rmsnormForwardSync,
  rmsnormBackward: rmsnormBackwardSync,
  ropeForward: ropeForwardSync,
  ropeBackward: ropeBackwardSync,
  swigluForward: swigluForwardSync,
  swigluBackward: swigluBackwardSync,
  embeddingForward: embeddingForwardSync,
  embeddingBackward: embeddingBackwardSync,
}
