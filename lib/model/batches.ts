// Texts in forward batches for inference: sorted by length with little padding, right-padded,
// and run one batch per core on the cores' shared turns. The classifier's predict and features, and
// ErnieModel.embed, batch this way.
import { numThreads } from '../kernels'
import { Turns } from '../util/turns'
import { maxOf } from '../util/extent'

export interface PaddedBatch {
  inputIds: Int32Array
  attentionMask: Int32Array
  shape: [number, number]
  /** Real tokens. */
  tokens: number
}

/** Right-pads rows to the longest. */
export function padRows(rows: readonly ArrayLike<number>[], padId: number): PaddedBatch {
  const B = rows.length
  const T = Math.max(1, maxOf(rows.map((r) => r.length)))
  const inputIds = new Int32Array(B * T).fill(padId)
  const attentionMask = new Int32Array(B * T)
  let tokens = 0
  rows.forEach((r, b) => {
    for (let t = 0; t < r.length; t++) {
      inputIds[b * T + t] = r[t]
      attentionMask[b * T + t] = 1
    }
    tokens += r.length
  })
  return { inputIds, attentionMask, shape: [B, T], tokens }
}

/** A padded batch as forward takes it. */
export function forwardInput(b: PaddedBatch) {
  return { inputIds: { data: b.inputIds, shape: b.shape }, attentionMask: { data: b.attentionMask, shape: b.shape } }
}

/**
 * The share of a batch's padded tokens that may be padding: a batch of sorted texts ends where the
 * next text would take it past this. Padding is computed and thrown away, so a small run of texts
 * of mixed lengths (a server's coalesced requests) goes as several short batches rather than one
 * padded to its longest text. Measured on ChnSentiCorp test reviews in runs of 33 (Zen 4, 2
 * cores): the bundled model 364 -> 720 texts/s, a 6-layer model of ERNIE-4.5-0.3B's width
 * 16.3 -> 35.5; in one run of all of them 740 -> 780 and 32.7 -> 35.4 (a cap of 0.1: 683, 33.0).
 */
export const MAX_PADDING = 0.05

/**
 * Indices of `lengths` in batches of similar lengths: at most `batchSize` rows and `maxTokens`
 * padded tokens each, and at most MAX_PADDING of those tokens padding.
 */
export function lengthBatches(lengths: readonly number[], batchSize: number, maxTokens = 32768): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[b] - lengths[a] || a - b)
  const batches: number[][] = []
  let cur: number[] = []
  let real = 0 // tokens in cur
  for (const i of order) {
    // sorted longest first: the batch's first row sets its padded length
    const width = cur.length > 0 ? lengths[cur[0]] : lengths[i]
    const padded = (cur.length + 1) * width
    if (cur.length > 0 && (cur.length >= batchSize || padded > maxTokens || padded - (real + lengths[i]) > MAX_PADDING * padded)) {
      batches.push(cur)
      cur = []
      real = 0
    }
    cur.push(i)
    real += lengths[i]
  }
  if (cur.length > 0) batches.push(cur)
  return batches
}

/**
 * The turns at the cores for inference forwards, shared by every classifier in the process: two
 * per core, one batch computing and the next already queued on that core's native lane
 * (native/cpu/lanes.h), which starts it the moment the first ends, however busy the JS thread is
 * then (a server answering requests).
 */
const coreTurns = new Turns(() => 2 * numThreads())

/**
 * work(batch, singleThread) for each batch, in order, on the shared turns. With several batches
 * and cores each batch runs single-threaded, on one core: cores working alone get more done than
 * both sharing every product of one batch. A single batch gets the whole thread pool.
 * `onAllStarted` is called once every batch has its turn (the run is finishing: a next one may be
 * prepared). After a failure no further batch starts; the first error is thrown once the
 * running ones have settled.
 */
export async function runBatchesPerCore<T>(batches: readonly T[], work: (batch: T, singleThread: boolean) => Promise<void>, onAllStarted?: () => void): Promise<void> {
  const cores = numThreads()
  const singleThread = cores > 1 && batches.length > 1
  let started = 0
  let failure: { error: unknown } | undefined
  if (batches.length === 0) onAllStarted?.()
  await Promise.all(
    batches.map((batch) =>
      coreTurns.hold(singleThread ? 1 : Infinity, async () => {
        if (++started === batches.length) onAllStarted?.()
        if (failure) return
        try {
          await work(batch, singleThread)
        } catch (error) {
          failure ??= { error }
        }
      }),
    ),
  )
  if (failure) throw failure.error
}

/**
 * Length-sorted batches of at most `batchSize` texts, and at least one per core when there are
 * fewer texts than that allows (a coalesced predict run of 32 texts on two cores: two batches of
 * 16, one per core, rather than one batch of 32 sharing both), for the reason runBatchesPerCore
 * gives.
 */
export function coreBatches(lengths: readonly number[], batchSize: number): number[][] {
  return lengthBatches(lengths, Math.max(1, Math.min(batchSize, Math.ceil(lengths.length / numThreads()))))
}
