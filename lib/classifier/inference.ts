// Inference: pooled features in length-sorted batches (one batch per core), class probabilities
// from the head or, for the generative method, from each label's answer scored after the
// prompt; predict and evaluate on them. An AbortSignal is checked before each batch.
import { assignLabels, readDataset, type LabeledText } from '../data'
import { AbortError, ErnieError, rangeError, typeError } from '../errors'
import type { ClassifierCore } from './core'
import { coreBatches, forwardInput, padRows, runBatchesPerCore, type PaddedBatch } from '../model/batches'
import { encodeTextsAsync, promptIds } from './encode'
import { classificationMetrics, softmaxRows } from './metrics'
import { Batcher } from './batcher'
import { checkSignal, throwIfAborted, type EvaluateOptions, type PredictBatching, type PredictOptions } from './options'
import type { EvaluateReport, Prediction } from './results'

// Texts encoded and sorted by length together for inference: a larger pool sorts into batches
// with less padding; the bound keeps the token ids held at once small.
const FEATURE_CHUNK = 1024

/** How a caller follows and steers an inference run. */
export interface RunControl {
  /** Checked before each batch: once it fires, no further batch starts and the run gives undefined. */
  signal?: AbortSignal
  /** Called as batches finish, with the number of texts done. */
  onBatch?: (done: number) => void
  /** Called once the run's last batch has started: the run is finishing (predict's batcher then forms the next). */
  onAllStarted?: () => void
}

/**
 * `width` values per text from `run` on padded batches of similar length: the rows of each batch
 * in the order of its texts.
 */
async function perText(
  core: ClassifierCore,
  texts: readonly string[],
  batchSize: number,
  width: number,
  run: (b: PaddedBatch, singleThread: boolean) => Promise<Float32Array>,
  { signal, onBatch, onAllStarted }: RunControl,
): Promise<Float32Array | undefined> {
  const { tok } = core.requireModel()
  const out = new Float32Array(texts.length * width)
  const pad = core.padId()
  let done = 0
  for (let i = 0; i < texts.length; i += FEATURE_CHUNK) {
    // Tokenized in small chunks with the event loop running between them: a run of 1024 texts
    // (coalesced predict calls) would otherwise hold it for a quarter of a second.
    const rows = await encodeTextsAsync(tok, texts.slice(i, i + FEATURE_CHUNK), core.encodeSettings(), signal, () => core.encodeThread())
    if (!rows) return undefined
    const batches = coreBatches(
      rows.map((r) => r.length),
      batchSize,
    )
    const lastChunk = i + FEATURE_CHUNK >= texts.length
    await runBatchesPerCore(
      batches,
      async (idx, singleThread) => {
        if (signal?.aborted) return
        const b = padRows(
          idx.map((k) => rows[k]),
          pad,
        )
        const values = await run(b, singleThread)
        idx.forEach((k, j) => out.set(values.subarray(j * width, (j + 1) * width), (i + k) * width))
        done += idx.length
        onBatch?.(done)
      },
      lastChunk ? onAllStarted : undefined,
    )
    if (signal?.aborted) return undefined
  }
  return out
}

/** Pooled final hidden states [N * hidden] for texts (pooled by the engine), in batches of similar length. */
export async function features(core: ClassifierCore, texts: readonly string[], batchSize: number, control: RunControl = {}): Promise<Float32Array | undefined> {
  const { model } = core.requireModel()
  const pooledBatch = async (b: PaddedBatch, singleThread: boolean) =>
    (await model.forward(forwardInput(b), { adapter: core.adapter, singleThread, precision: core.precision, output: ['pooled'], pooling: core.pooling })).pooled!
  return perText(core, texts, batchSize, model.config.hidden_size, pooledBatch, control)
}

/**
 * Class logits [N * C] for texts (undefined when `signal` fired): a linear head runs in the
 * forward call itself, an MLP head on the pooled rows.
 */
async function classLogits(core: ClassifierCore, texts: readonly string[], batchSize: number, control: RunControl): Promise<Float32Array | undefined> {
  const { model } = core.requireModel()
  const head = core.head!
  const linear = head.linear()
  if (!linear) {
    const pooled = await features(core, texts, batchSize, control)
    return pooled && head.logits(pooled, texts.length)
  }
  const logitsBatch = async (b: PaddedBatch, singleThread: boolean) =>
    (await model.forward(forwardInput(b), { adapter: core.adapter, singleThread, precision: core.precision, output: [], pooling: core.pooling, head: linear })).headLogits!
  return perText(core, texts, batchSize, head.classes, logitsBatch, control)
}

/** Class probabilities [N * C] for texts; undefined when `signal` fired (once the batches running then finish). */
export async function probabilities(core: ClassifierCore, texts: readonly string[], batchSize: number, control: RunControl = {}): Promise<Float32Array | undefined> {
  if (texts.length === 0) return new Float32Array(0)
  if (core.method_ === 'generative') return answerProbabilities(core, texts, batchSize, control)
  const logits = await classLogits(core, texts, batchSize, control)
  return logits && softmaxRows(logits, core.labelSet!.size)
}

/**
 * The generative method's class probabilities: each label's answer scored after the prompt
 * (the sum of its tokens' log-probabilities through the LM head), normalised over the labels.
 */
async function answerProbabilities(core: ClassifierCore, texts: readonly string[], batchSize: number, { signal, onAllStarted }: RunControl): Promise<Float32Array | undefined> {
  const { model, tok } = core.requireModel()
  const g = core.generative()
  const C = g.answers.length
  const prompts = promptIds(tok, g.parts, texts, core.promptRoom(g), core.truncation)
  const logp = new Float64Array(texts.length * C)
  const pad = core.padId()
  const perBatch = Math.max(1, Math.floor(batchSize / C))
  const batches = coreBatches(
    prompts.map((p) => p.length),
    perBatch,
  )
  await runBatchesPerCore(
    batches,
    async (idx, singleThread) => {
      if (signal?.aborted) return
      // one row per (text, label): the prompt followed by that label's answer, which is scored
      // (positions P-1 .. P+len-2 predict the answer's tokens), in one native call per batch
      const rows: number[][] = []
      for (const k of idx) for (const a of g.answers) rows.push([...prompts[k], ...a])
      const b = padRows(rows, pad)
      const T = b.shape[1]
      const targets = new Int32Array(b.inputIds.length).fill(-1)
      idx.forEach((k, j) =>
        g.answers.forEach((a, c) => {
          const P = prompts[k].length
          a.forEach((id, i) => (targets[(j * C + c) * T + P - 1 + i] = id))
        }),
      )
      const { rowLogProbs } = await model.forward(forwardInput(b), { adapter: core.adapter, singleThread, precision: core.precision, output: [], targets: { data: targets, shape: b.shape } })
      idx.forEach((k, j) => {
        for (let c = 0; c < C; c++) logp[k * C + c] = rowLogProbs![j * C + c]
      })
    },
    onAllStarted,
  )
  return signal?.aborted ? undefined : softmaxRows(logp, C)
}

/** Texts per coalesced predict run by default: one FEATURE_CHUNK, as efficient as one large call. */
export const DEFAULT_MAX_BATCH = FEATURE_CHUNK

/**
 * predict's batcher for `batchSize` (created on first use with the classifier's batching
 * settings): concurrent calls share runs of probabilities() instead of each running its own.
 */
function predictBatcher(core: ClassifierCore, batchSize: number): Batcher<string, Float32Array> {
  let batcher = core.batchers.get(batchSize)
  if (batcher) return batcher
  const { onBatch, ...limits } = core.batching
  batcher = new Batcher<string, Float32Array>(
    async (texts, signal, onAllStarted) => {
      onBatch?.(texts.length)
      // tracked too: fit waits for a run whose callers have all aborted; it stops between
      // forward passes once they all have
      const probs = await core.track(probabilities(core, texts, batchSize, { signal, onAllStarted }))
      if (!probs) throw new AbortError('predict', signal!)
      const C = core.labelSet!.size
      return texts.map((_, i) => probs.subarray(i * C, (i + 1) * C))
    },
    { maxBatch: DEFAULT_MAX_BATCH, ...limits },
  )
  core.batchers.set(batchSize, batcher)
  return batcher
}

/** ErnieClassifier.setBatching: settings for the batchers made from now on (those in use finish their queue). */
export function setBatching(core: ClassifierCore, batching: PredictBatching): void {
  if (typeof batching !== 'object' || batching === null) throw typeError('setBatching: expected an object { maxBatch, maxWaitMs, maxQueue, onBatch }')
  if (batching.onBatch !== undefined && typeof batching.onBatch !== 'function') throw typeError('setBatching: onBatch must be a function')
  // the Batcher checks the numbers; a trial one reports a bad value now rather than at the next predict
  new Batcher(async () => [], { maxBatch: DEFAULT_MAX_BATCH, ...batching })
  core.batching = { ...batching }
  core.batchers.clear()
}

/** ErnieClassifier.predict: the texts go through the classifier's batcher, coalesced with concurrent calls. */
export async function predictTexts(core: ClassifierCore, input: string | readonly string[], options: PredictOptions): Promise<Prediction | Prediction[]> {
  const single = typeof input === 'string'
  const texts = single ? [input] : input
  if (!Array.isArray(texts)) throw typeError('predict: expected a string or an array of strings')
  texts.forEach((t, i) => {
    if (typeof t !== 'string') throw typeError(`predict: texts[${i}] is not a string`)
  })
  const batchSize = options.batchSize ?? 32
  if (!Number.isInteger(batchSize) || batchSize < 1) throw rangeError(`predict: batchSize must be a positive integer, got ${batchSize}`)
  const signal = checkSignal(options.signal, 'predict')
  throwIfAborted(signal, 'predict')
  await core.ensureReady()
  core.checkUsable('predict')
  const names = core.labelSet!.names
  let rows: Float32Array[]
  try {
    rows = await core.track(predictBatcher(core, batchSize).submit(texts, signal))
  } catch (err) {
    if (signal?.aborted) throw new AbortError('predict', signal)
    throw err
  }
  const out = rows.map((probs, i) => {
    // NaN or Inf scores come from weights that diverged (or were loaded broken): never a label
    if (!probs.every(Number.isFinite))
      throw new ErnieError('ERR_NUMERIC', `predict: ${single ? 'the text' : `texts[${i}]`} got non-finite class scores (${[...probs].join(', ')}); the model or head weights hold NaN or Inf (a fit that diverged?)`)
    const scores: Record<string, number> = {}
    let best = 0
    for (let c = 0; c < names.length; c++) {
      scores[names[c]] = probs[c]
      if (probs[c] > probs[best]) best = c
    }
    return { label: names[best], score: probs[best], scores }
  })
  return single ? out[0] : out
}

/** ErnieClassifier.evaluate. */
export async function evaluateData(core: ClassifierCore, data: string | readonly LabeledText[], options: EvaluateOptions): Promise<EvaluateReport> {
  const signal = checkSignal(options.signal, 'evaluate')
  throwIfAborted(signal, 'evaluate')
  await core.ensureReady()
  core.checkUsable('evaluate')
  const ds = await readDataset(data, { onInvalid: options.onInvalid, format: options.format, textField: options.textField, labelField: options.labelField })
  throwIfAborted(signal, 'evaluate')
  const set = assignLabels(ds, core.labelSet!, 'eval', options.onInvalid ?? 'error')
  if (set.texts.length === 0) throw new ErnieError('ERR_DATA', `${ds.source}: no examples to evaluate`)
  const probs = await core.track(probabilities(core, set.texts, options.batchSize ?? 32, { signal }))
  if (!probs) throw new AbortError('evaluate', signal!)
  return { ...classificationMetrics(set.labels, probs, core.labelSet!.names), skipped: ds.skipped }
}
