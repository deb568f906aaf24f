// Cross-entropy through the tied LM head, chunked over the vocabulary so the [tokens, vocab]
// logits never exist whole; optionally the gradients for the hidden states and the head.
import * as addon from '../native'
import { withPrecision, type Precision } from '../precision'
import type { F32OrBf16 } from './gemm'
import type { OnDevice } from '../device'

export interface CrossEntropyOptions extends OnDevice {
  /** Final hidden states, [tokens, hiddenSize]. */
  hidden: Float32Array
  /** The head (tied to the embedding), [vocab, hiddenSize]: Float32Array or bf16 bits. */
  weight: F32OrBf16
  /** [tokens]: the token each position should predict; negative (e.g. -100) = ignored. */
  targets: Int32Array
  tokens: number
  hiddenSize: number
  vocab: number
  /** Vocabulary rows per logits block (default 8192). */
  chunk?: number
  /** Tokens per logits block (default 512): memory is rowTile * chunk floats. */
  rowTile?: number
  /** [tokens, hiddenSize]: written with d(loss)/d(hidden) when given (zero on ignored rows). */
  dhidden?: Float32Array
  /** [vocab, hiddenSize]: d(loss)/d(weight) is ADDED here when given (the head trains). */
  dweight?: Float32Array
  /** Trainable token rows: dweight's rows `rowIds` (distinct) alone, ADDED to `dRows` [rowIds.length, hiddenSize]. */
  rowIds?: Int32Array
  dRows?: Float32Array
  /** The gradients are of gradScale * lossSum; default 1 / count, the gradient of the mean. */
  gradScale?: number
  /** Of the head's products (README "Precision"). Default: ERNIE_PRECISION, else 'auto'. */
  precision?: Precision
}

export interface CrossEntropyResult {
  /** Mean over the positions with a target; 0 when there are none. */
  loss: number
  /** Positions with a target. */
  count: number
  lossSum: number
}

export async function crossEntropy(o: CrossEntropyOptions): Promise<CrossEntropyResult> {
  return addon.crossEntropy(withPrecision(o))
}
export function crossEntropySync(o: CrossEntropyOptions): CrossEntropyResult {
  return addon.crossEntropySync(withPrecision(o))
}
