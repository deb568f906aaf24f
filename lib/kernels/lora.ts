// A linear layer with a LoRA adapter: y = x W^T + scale (x A^T) B^T, forward and backward,
// each one native call (the adapter's product shares the pass over y with the base GEMM).
import * as addon from '../native'
import { withPrecision, type Precision } from '../precision'
import type { F32OrBf16 } from './gemm'
import type { OnDevice } from '../device'

export interface LoraShape extends OnDevice {
  /** Rows of x (tokens). */
  m: number
  /** Output features (rows of W). */
  n: number
  /** Input features. */
  k: number
  rank: number
  /** alpha / rank (PEFT), or alpha / sqrt(rank) (rsLoRA). */
  scale: number
  x: Float32Array
  /** Base weight [n, k], f32 or bf16 bits. */
  weight: F32OrBf16
  /** [rank, k] */
  loraA: Float32Array
  /** [n, rank] */
  loraB: Float32Array
  /** [m, rank]: x A^T, written by the forward and read by the backward. */
  u: Float32Array
  /** Dropout on the adapter's input (training); element i is kept when the seeded hash says so. */
  dropout?: number
  seed?: number
  /** Of every product (README "Precision"). Default: ERNIE_PRECISION, else 'auto'. */
  precision?: Precision
}

export interface LoraForwardOptions extends LoraShape {
  /** [m, n] */
  out: Float32Array
  accumulate?: boolean
}

export interface LoraBackwardOptions extends LoraShape {
  /** [m, n] */
  dout: Float32Array
  /** [m, k]: input gradient, written (or added to with dxAccumulate). Omit to skip it. */
  dx?: Float32Array
  dxAccumulate?: boolean
  /** [rank, k], added to. */
  dA: Float32Array
  /** [n, rank], added to. */
  dB: Float32Array
}

export async function loraForward(o: LoraForwardOptions): Promise<void> {
  return addon.loraForward(withPrecision(o))
}
export async function loraBackward(o: LoraBackwardOptions): Promise<void> {
  return addon.loraBackward(withPrecision(o))
}
export const loraSync = {
  loraForward: (o: LoraForwardOptions): void => addon.loraForwardSync(withPrecision(o)),
  loraBackward: (o: LoraBackwardOptions): void => addon.loraBackwardSync(withPrecision(o)),
}
