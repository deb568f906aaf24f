// GEMM: C[m, n] (+)= alpha * sum over segments of A[m, k] . B[n, k]^T, f32 accumulation.
import * as addon from '../native'
import { withPrecision, type Precision } from '../precision'
import type { OnDevice } from '../device'

/** Matrix storage: a logical [rows, k] operand stored as is ('mk' / 'nk') or transposed. */
export type ALayout = 'mk' | 'km'
export type BLayout = 'nk' | 'kn'
/** bf16 values travel as their raw 16-bit patterns in a Uint16Array. */
export type F32OrBf16 = Float32Array | Uint16Array

export interface GemmSegment {
  /** Logical [m, k]: Float32Array or bf16 bits. */
  a: F32OrBf16
  /** Logical [n, k]: Float32Array or bf16 bits (weights are [out, in] = [n, k]). */
  b: F32OrBf16
  k: number
  aLayout?: ALayout
  bLayout?: BLayout
  /** This segment's factor (default 1), on top of `alpha`. */
  scale?: number
}

export interface GemmOptions extends OnDevice {
  /** [m, n], written (or added to, with `accumulate`). Must not share memory with A or B. */
  c: Float32Array
  m: number
  n: number
  /** Summed products over K-segments: LoRA's x W^T + s (x A^T) B^T is two segments. */
  segments: GemmSegment[]
  alpha?: number
  accumulate?: boolean
  /**
   * What each segment rounds (README "Precision"): 'fp32', 'bf16', or 'auto' (bf16 for a segment
   * with a bf16 operand on a CPU with AVX512_BF16, fp32 otherwise). Default: ERNIE_PRECISION, else 'auto'.
   */
  precision?: Precision
}

export async function gemm(o: GemmOptions): Promise<void> {
  return addon.gemm(withPrecision(o))
}
export function gemmSync(o: GemmOptions): void {
  addon.gemmSync(withPrecision(o))
}
