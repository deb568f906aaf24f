// The precision of matrix products, chosen by the user (in the spirit of PyTorch's
// set_float32_matmul_precision), never by CPUID alone. README "Precision" has the table of what
// each (ISA, precision) rounds. In short, per product A . B^T:
//   'fp32'  f32 FMA; bf16 operands (a checkpoint's weights) widened exactly.
//   'bf16'  both operands rounded to bf16 (nearest even), the products summed in f32.
//   'auto'  'bf16' for a product with a bf16 operand where the hardware multiplies bf16 natively
//           (AVX512_BF16 CPUs; CUDA tensor cores), 'fp32' otherwise. The default.
// Attention, norms, activations, losses and optimisers are f32 at every precision.
import { rangeError, typeError } from './errors'
import { activeIsa } from './native'

export type Precision = 'fp32' | 'bf16' | 'auto'
export const PRECISIONS: readonly Precision[] = ['fp32', 'bf16', 'auto']

function parsePrecision(value: unknown, what: string): Precision {
  if (typeof value !== 'string') throw typeError(`${what} must be 'fp32', 'bf16' or 'auto', got ${value === null ? 'null' : typeof value}`)
  if (!(PRECISIONS as readonly string[]).includes(value)) throw rangeError(`${what} must be 'fp32', 'bf16' or 'auto', got ${JSON.stringify(value)}`)
  return value as Precision
}

/**
 * The precision asked for: the option when given, else ERNIE_PRECISION, else 'auto'.
 * TypeError / RangeError naming the option (or the variable) when it is not one of the three.
 */
export function resolvePrecision(requested?: unknown, what = 'precision'): Precision {
  if (requested !== undefined) return parsePrecision(requested, what)
  const env = process.env.ERNIE_PRECISION
  return env === undefined || env === '' ? 'auto' : parsePrecision(env, 'ERNIE_PRECISION')
}

/**
 * A kernel's options with `precision` resolved (the option, else ERNIE_PRECISION, else 'auto'),
 * for the ops whose matrix products it governs. Anything but an object goes on unchanged, for
 * the native layer to reject with its own message.
 */
export function withPrecision<O>(options: O): O {
  if (options === null || typeof options !== 'object') return options
  return { ...options, precision: resolvePrecision((options as { precision?: unknown }).precision) }
}

/** Whether the CPU's active instruction set multiplies bf16 pairs natively (AVX512_BF16). */
export function hasNativeBf16(): boolean {
  return activeIsa() === 'avx512bf16'
}

/**
 * What a precision means here and now for products with bf16 weights: 'auto' becomes 'bf16'
 * where the active ISA has a native bf16 dot product, else 'fp32'. (Products of two f32
 * operands run at 'fp32' under 'auto'.) This is the value saved classifiers and benchmarks record.
 */
export function precisionInForce(precision: Precision): 'fp32' | 'bf16' {
  if (precision !== 'auto') return precision
  return hasNativeBf16() ? 'bf16' : 'fp32'
}

/** A precision as asked for, and what it meant where it ran. */
export interface PrecisionRecord {
  requested: Precision
  /** What products with bf16 weights ran at: 'auto' resolved on that machine. */
  inForce: 'fp32' | 'bf16'
  /** The CPU instruction set the kernels used. */
  isa: string
}

/** The record of a precision here and now (saved classifiers, pre-training logs, benchmarks). */
export function precisionRecord(requested: Precision): PrecisionRecord {
  return { requested, inForce: precisionInForce(requested), isa: activeIsa() }
}
