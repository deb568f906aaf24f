// A forward pass's inputs and outputs: token batches (rows or flat arrays) checked and
// flattened for the engine, and what a forward returns.
import { ErnieError, rangeError, typeError } from '../errors'
import type { Precision } from '../precision'
import type { LoraAdapter } from './lora'

/** Token ids as rows (all the same length, right-padded), or a flat Int32Array with a shape. */
export type TokenBatch = number[][] | { data: Int32Array; shape: [number, number] }

export interface ForwardInput {
  inputIds: TokenBatch
  /** 1 for tokens, 0 for padding (any other value is ERR_OUT_OF_RANGE); all ones when omitted. */
  attentionMask?: TokenBatch
  /**
   * Packed documents: a run of equal ids in a row is one document, whose tokens attend only to
   * each other and whose positions restart at 0. Omitted: each row is one sequence.
   */
  segmentIds?: TokenBatch
}

/**
 * A linear classification head as the engine takes it (native/engine/head.h): logits =
 * x weight^T + bias, x each pooled row standardised by featureMean / featureStd when given.
 */
export interface LinearHeadOptions {
  weight: Float32Array
  bias: Float32Array
  classes: number
  featureMean?: Float32Array
  featureStd?: Float32Array
}

/** The poolings the engine knows (native/engine/pooling.h). */
export type Pooling = 'last' | 'mean' | 'first'
export const POOLINGS: readonly Pooling[] = ['last', 'mean', 'first']

export interface ForwardOptions {
  /**
   * What to return (default ['hidden']). Logits are [B, T, vocab]: large for real vocabularies.
   * 'lastHidden' alone is the cheap way to pool on the last token: the last layer then runs its
   * queries, attention output and MLP for each row's last real token only. 'pooled': one row per
   * sequence, pooled as `pooling` says, by the engine (its rule: native/engine/pooling.h).
   */
  output?: Array<'hidden' | 'logits' | 'lastHidden' | 'pooled'>
  /**
   * How 'pooled' pools each sequence's final hidden states: its last real token (default), the
   * mean over its real tokens, or its first real token; a sequence without one gives zeros.
   */
  pooling?: Pooling
  /**
   * A linear classification head on the pooled rows (native/engine/head.h), computed in the same
   * call: its logits come back as `headLogits` [B, classes].
   */
  head?: LinearHeadOptions
  /**
   * Scoring: token ids [B, T] (-1 or any negative: not scored); `rowLogProbs` [B] then holds each
   * row's sum of log p(targets[t] | its tokens up to t) through the LM head, made in the same call
   * without the [T, vocab] logits. (A row's answer after its prompt: targets at the positions
   * that predict the answer's tokens.)
   */
  targets?: TokenBatch
  /** A LoRA adapter applied on top of the base weights. */
  adapter?: LoraAdapter
  /**
   * Run this call on one core instead of the whole thread pool (default false). Several such
   * calls in flight at once, one per core, get more done than the same calls made one after
   * another on the pool: each core works alone, with no hand-offs between them.
   */
  singleThread?: boolean
  /** Of this call's matrix products (README "Precision"); default the model's `precision`. */
  precision?: Precision
}

export interface ForwardResult {
  /** [B, T, hidden_size], after the final norm. */
  hidden?: Float32Array
  /** [B, T, vocab_size]. */
  logits?: Float32Array
  /** [B, hidden_size]: the final hidden state of each row's last real token (zeros for a row with none). */
  lastHidden?: Float32Array
  /** [B, hidden_size]: each row's final hidden states pooled as `pooling` says. */
  pooled?: Float32Array
  /** [B, classes]: the `head` option's logits. */
  headLogits?: Float32Array
  /** [B]: the `targets` option's summed log-probabilities per row. */
  rowLogProbs?: Float64Array
  shape: [number, number]
}

/** A flat batch: ids and mask as Int32Array [B * T]. */
export interface FlatBatch {
  inputIds: Int32Array
  attentionMask: Int32Array
  segmentIds?: Int32Array
  batch: number
  seq: number
}

export function flatten(x: TokenBatch, what: string, shape?: [number, number]): { data: Int32Array; shape: [number, number] } {
  if (Array.isArray(x)) {
    const B = x.length
    if (B === 0) throw rangeError(`${what}: the batch is empty`)
    const T = Array.isArray(x[0]) ? x[0].length : -1
    if (T <= 0) throw typeError(`${what}: expected number[][] with non-empty rows`)
    if (shape && (shape[0] !== B || shape[1] !== T)) throw rangeError(`${what}: shape [${B}, ${T}] differs from inputIds' [${shape[0]}, ${shape[1]}]`)
    const data = new Int32Array(B * T)
    x.forEach((row, b) => {
      if (!Array.isArray(row) || row.length !== T)
        throw rangeError(`${what}: row ${b} has ${Array.isArray(row) ? row.length : 'no'} tokens, row 0 has ${T} (pad the batch)`)
      row.forEach((v, t) => {
        if (!Number.isInteger(v)) throw typeError(`${what}: row ${b}, position ${t} is not an integer: ${v}`)
        // an Int32Array would wrap it (2^40 to 0) into another, valid-looking value
        if (v !== (v | 0)) throw rangeError(`${what}: row ${b}, position ${t} holds ${v}, outside the 32-bit integer range`)
        data[b * T + t] = v
      })
    })
    return { data, shape: [B, T] }
  }
  if (!x || !(x.data instanceof Int32Array) || !Array.isArray(x.shape) || x.shape.length !== 2)
    throw typeError(`${what}: expected number[][] or { data: Int32Array, shape: [B, T] }`)
  const [B, T] = x.shape
  if (x.data.length !== B * T) throw rangeError(`${what}: data has ${x.data.length} elements, shape [${B}, ${T}] needs ${B * T}`)
  if (shape && (shape[0] !== B || shape[1] !== T)) throw rangeError(`${what}: shape [${B}, ${T}] differs from inputIds' [${shape[0]}, ${shape[1]}]`)
  return { data: x.data, shape: [B, T] }
}

/**
 * The batch as flat arrays. `maxPositions` (config.json's max_position_embeddings): a row longer
 * than the positions the model was built for is refused rather than run on RoPE angles it never saw.
 */
export function toFlatBatch(input: ForwardInput, maxPositions?: number): FlatBatch {
  const ids = flatten(input.inputIds, 'inputIds')
  if (maxPositions !== undefined && ids.shape[1] > maxPositions)
    throw new ErnieError('ERR_SEQUENCE_TOO_LONG', `inputIds: rows of ${ids.shape[1]} tokens exceed the model's max_position_embeddings (${maxPositions})`)
  const mask = input.attentionMask ? flatten(input.attentionMask, 'attentionMask', ids.shape).data : new Int32Array(ids.data.length).fill(1)
  // 1 for a token, 0 for padding: other values mean something else to other libraries (HF adds
  // (1 - mask) * min to the scores), so they are refused rather than read as 1.
  const bad = mask.findIndex((m) => m !== 0 && m !== 1)
  if (bad >= 0)
    throw rangeError(`attentionMask: row ${Math.floor(bad / ids.shape[1])}, position ${bad % ids.shape[1]} holds ${mask[bad]}; a mask holds 1 for tokens and 0 for padding`)
  const flat: FlatBatch = { inputIds: ids.data, attentionMask: mask, batch: ids.shape[0], seq: ids.shape[1] }
  if (input.segmentIds) flat.segmentIds = flatten(input.segmentIds, 'segmentIds', ids.shape).data
  return flat
}
