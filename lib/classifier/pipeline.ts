// pipeline('sentiment-analysis', dir): a saved classifier behind transformers.js's text-classification
// pipeline shape, so code written for transformers.js runs on it: an async function of one text or
// an array of texts giving `{ label, score }` objects, best first.
import { ErnieError, rangeError, typeError } from '../errors'
import { ErnieClassifier } from './classifier'
import type { LoadOptions } from './options'
import type { Prediction } from './results'

/** The tasks pipeline() serves: transformers.js's text classification and its alias. */
export const PIPELINE_TASKS = ['sentiment-analysis', 'text-classification'] as const
export type PipelineTask = (typeof PIPELINE_TASKS)[number]

/** One label and its probability. */
export interface LabelScore {
  label: string
  score: number
}

/** The options of one pipeline call. */
export interface ClassifyCallOptions {
  /**
   * Labels per text, best first: 1 (default), k (at most the number of classes), or null for
   * all. transformers.js spells it `top_k`.
   */
  topK?: number | null
  /** Texts per forward pass (default 32). */
  batchSize?: number
  /** Stops the call between batches (an AbortError); the pipeline stays usable. */
  signal?: AbortSignal
}

/**
 * A text-classification pipeline, shaped as transformers.js's: for one text, `[{ label, score }]`
 * (the top `topK` labels); for an array of texts, one `{ label, score }` per text when topK is 1,
 * else one such array per text.
 */
export interface TextClassificationPipeline {
  (text: string, options?: ClassifyCallOptions): Promise<LabelScore[]>
  (texts: readonly string[], options?: ClassifyCallOptions): Promise<LabelScore[] | LabelScore[][]>
  readonly task: PipelineTask
  /** The classifier it runs. */
  readonly classifier: ErnieClassifier
  /** Frees the classifier and its model. */
  dispose(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

/** How the classifier is loaded: ErnieClassifier.load's options (base model, device, precision, hub options, signal). */
export type PipelineOptions = LoadOptions

/** The labels of one prediction, best first (ties in label order), the first `k`. */
function topLabels(p: Prediction, k: number): LabelScore[] {
  return Object.entries(p.scores)
    .map(([label, score]) => ({ label, score }))
    .sort((a, b) => b.score - a.score)
    .slice(0, k)
}

/**
 * A text-classification pipeline on the classifier saved in `model` (a directory written by
 * ErnieClassifier.save or `ernie-sentiment train` / `demo --out DIR`). There is no default: the
 * package bundles a base model, not a trained classifier, and an untrained head would give noise.
 */
export async function pipeline(task: PipelineTask, model: string, options: PipelineOptions = {}): Promise<TextClassificationPipeline> {
  if (!PIPELINE_TASKS.includes(task)) throw rangeError(`pipeline: task must be ${PIPELINE_TASKS.map((t) => `'${t}'`).join(' or ')}, got ${JSON.stringify(task)}`)
  if (model === undefined)
    throw new ErnieError(
      'ERR_NO_DEFAULT_CLASSIFIER',
      `pipeline('${task}'): name a saved classifier directory; this package bundles a base model (models/ernie-4.5-tiny-zh), not a trained classifier. Train one with new ErnieClassifier().fit(data) and save(dir), or run \`ernie-sentiment demo --out DIR\``,
    )
  if (typeof model !== 'string' || model === '') throw typeError('pipeline: model must be the directory of a saved classifier')
  const classifier = await ErnieClassifier.load(model, options)
  const classes = classifier.labels!.length

  async function classify(texts: string | readonly string[], call: ClassifyCallOptions = {}): Promise<LabelScore[] | LabelScore[][]> {
    if (call === null || typeof call !== 'object') throw typeError('pipeline: options must be an object')
    if ('top_k' in call) throw typeError('pipeline: the option is topK here (transformers.js spells it top_k)')
    const topK = call.topK === undefined ? 1 : call.topK
    if (topK !== null && !(Number.isInteger(topK) && topK >= 1)) throw rangeError(`pipeline: topK must be a positive integer or null, got ${JSON.stringify(topK)}`)
    const k = topK === null ? classes : Math.min(topK, classes)
    const predictOptions = { batchSize: call.batchSize, signal: call.signal }
    if (typeof texts === 'string') return topLabels(await classifier.predict(texts, predictOptions), k)
    const each = (await classifier.predict(texts, predictOptions)).map((p) => topLabels(p, k))
    // transformers.js flattens the batch's single best labels only when topK is exactly 1
    return topK === 1 ? each.map((labels) => labels[0]) : each
  }

  const dispose = () => classifier.dispose()
  return Object.assign(classify, { task, classifier, dispose, [Symbol.asyncDispose]: dispose }) as TextClassificationPipeline
}
