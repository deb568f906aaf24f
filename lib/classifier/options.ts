// The classifier's options: their types (ErnieClassifier's, fit's, predict's, evaluate's and
// load's), the defaults (the 'auto' method's choice and fit's settings per method), and their
// checking.
import * as path from 'node:path'

import { LabelSet, type LabeledText, type OnInvalid, type ReadDataOptions } from '../data'
import { resolveModelDevice, type Device } from '../device'
import { resolvePrecision, type Precision } from '../precision'
import { AbortError, ErnieError, rangeError, typeError } from '../errors'
import type { ResolveOptions } from '../hub'
import type { LoraOptions } from '../model/lora'
import { ErnieModel } from '../model/model'
import type { OptimizerKind } from '../train/optimizer'
import type { ScheduleKind } from '../train/schedule'
import { bundledModelDir, packageRoot } from './bundled'
import type { Pooling, Truncation } from './encode'
import type { HeadSpec } from './head'

/** A training method (what a trained classifier records). */
export type Method = 'head' | 'lora' | 'full' | 'generative'
export const METHODS: readonly Method[] = ['head', 'lora', 'full', 'generative']
/** What ErnieClassifier's `method` option takes: a method, or 'auto' (chosen by data and model size at the first fit). */
export type MethodOption = Method | 'auto'
export type { Device }

/**
 * How a hub id is fetched (lib/hub's ResolveOptions): the cache directory, offline use, download
 * progress, the revision, the token and the endpoint. A local directory ignores them.
 */
export type HubOptions = Pick<ResolveOptions, 'cacheDir' | 'offline' | 'onProgress' | 'revision' | 'token' | 'endpoint'>

export interface ErnieClassifierOptions extends HubOptions {
  /**
   * An ErnieModel, a model directory or a hub id. Default: the bundled model (models/ernie-4.5-tiny-zh).
   * 'full' (and generative with tuning 'full') train an ErnieModel passed here in place.
   */
  model?: ErnieModel | string
  /**
   * 'auto' (default): 'head' when the first fit has fewer than 200 examples or the head is an
   * MLP, else 'full' under 100M parameters and 'lora' above (README "The classifier": measured on
   * the bundled model). `classifier.method` gives the method chosen once fit has started.
   */
  method?: MethodOption
  /** Class names. Default: from the training data (numeric 0/1 become negative/positive). */
  labels?: string[]
  /** Tokens per text, the EOS included (default 256); longer texts are truncated. */
  maxLength?: number
  /** Which tokens a long text keeps: 'head' (default) or 'head_tail' (a quarter from the start, the rest from the end). */
  truncation?: Truncation
  /** Which hidden state the head reads: 'last' (default: the EOS after the text), 'mean' or 'first'. */
  pooling?: Pooling
  /** The head method's head: 'linear' (default) or a small MLP { hiddenSize }. lora and full use a linear head. */
  head?: 'linear' | { hiddenSize: number }
  /** LoRA settings for 'lora' (and 'generative' with tuning 'lora'); default r 8, alpha 16, all seven projections. */
  lora?: LoraOptions
  /** What 'generative' trains: 'full' or 'lora' (default as for `method`: by model size). */
  tuning?: 'full' | 'lora'
  /** The generative prompt: {text} is the text, {labels} the answers (see DEFAULT_PROMPT). */
  prompt?: string
  /** The generative answer for each label (default: the label's name). */
  labelWords?: Record<string, string>
  /** A tokenizer directory, for a model that has none (ErnieModel.random). */
  tokenizer?: string
  /**
   * Where the model it loads runs: 'cpu', 'cuda' or 'auto' (default, or ERNIE_DEVICE: the GPU
   * with a CUDA build and a device, else the CPU). A model passed in keeps its own device.
   */
  device?: Device
  /**
   * Of the model's matrix products in training and prediction (README "Precision"): 'fp32',
   * 'bf16' or 'auto' (default, or ERNIE_PRECISION): bf16 products with the bf16 weights on a CPU
   * with AVX512_BF16, fp32 elsewhere. Saved with the classifier.
   */
  precision?: Precision
  /** Initialisation and data-order seed (default 42). */
  seed?: number
}

export interface FitOptions {
  /** Passes over the data (default: head 30, others 3). */
  epochs?: number
  maxSteps?: number
  /** Examples per micro-batch (default: head 64; generative under 100M parameters 2; others 16). */
  batchSize?: number
  gradientAccumulationSteps?: number
  /**
   * Peak learning rate (default: head 5e-3; under 100M parameters lora 5e-3, full 2e-4 and
   * generative 3e-4 (1e-3 with tuning 'lora'); from 100M LoRA 2e-4, full and generative 2e-5).
   */
  learningRate?: number
  /** Default 'linear'. */
  schedule?: ScheduleKind
  /** Default 0.1 of the steps for lora / full / generative, 0 for head. */
  warmupRatio?: number
  warmupSteps?: number
  /** Default 0.01. */
  weightDecay?: number
  /** Global gradient-norm clipping (default 1; 0 disables). */
  maxGradNorm?: number
  /** Default 'adamw'. */
  optimizer?: OptimizerKind
  /** SGD's momentum (optimizer 'sgd'; default 0). */
  momentum?: number
  /** AdamW's moment decay rates and epsilon (defaults 0.9, 0.999, 1e-8). */
  adamBeta1?: number
  adamBeta2?: number
  adamEpsilon?: number
  /** 'balanced' (n / (classes * count)), or a weight per class (array in label order, or by name). */
  classWeights?: 'balanced' | number[] | Record<string, number>
  /** Held-out data: evaluated every evalSteps (default: every epoch) and at the end. */
  evalData?: string | readonly LabeledText[]
  evalSteps?: number
  /** Stop after this many evaluations without improving metricForBestModel (default 'loss'). */
  earlyStoppingPatience?: number
  /** How much an evaluation must beat the best to count as improving (default 0). */
  earlyStoppingThreshold?: number
  metricForBestModel?: 'loss' | 'accuracy' | 'macroF1'
  /** At the end, put back the weights of the best evaluation by metricForBestModel (needs evalData). */
  loadBestModelAtEnd?: boolean
  /**
   * Where checkpoints go (checkpoint-<step>/: the trained weights and the optimiser state, written
   * atomically). A directory holding checkpoints is refused unless `resume` is set.
   */
  outputDir?: string
  /** Checkpoint every N optimizer steps (needs outputDir). */
  saveSteps?: number
  /** Keep only the last K checkpoints (the best is kept besides). */
  saveTotalLimit?: number
  /** Continue from the latest checkpoint in outputDir (a fresh start when it has none): the same weights and losses as a run never stopped. */
  resume?: boolean
  /** Bad records: 'error' (default) throws naming file and line; 'skip' drops and counts them. */
  onInvalid?: OnInvalid
  /** Every class needs this many training examples (default 2). */
  minExamplesPerClass?: number
  /** Reading options for files (format, text / label field names). */
  format?: ReadDataOptions['format']
  textField?: string
  labelField?: string
  /** Recompute activations in the backward (less memory, more time). */
  recompute?: boolean
  seed?: number
  onProgress?: (p: FitProgress) => void
  /** Stops training between steps; fit then resolves with stopReason 'aborted' and the classifier stays usable. */
  signal?: AbortSignal
}

export interface FitProgress {
  /** 'features': the head method's feature pass; 'train': an optimizer step finished. */
  phase: 'features' | 'train'
  /** Optimizer steps done and planned (features: texts done and total). */
  step: number
  totalSteps: number
  epoch: number
  /** The step's mean loss. */
  loss?: number
  /** The step's training accuracy (when the method sees its predictions). */
  accuracy?: number
  learningRate?: number
  etaSeconds: number
  elapsedSeconds: number
  /** On evaluation steps. */
  eval?: { loss: number; accuracy: number; macroF1: number }
}

export interface PredictOptions {
  /** Texts per forward pass (default 32). */
  batchSize?: number
  /**
   * Stops the call between batches: it rejects with an AbortError (ErnieError, code 'ABORT_ERR')
   * and the classifier stays usable.
   */
  signal?: AbortSignal
}

/**
 * How concurrent predict calls are coalesced (ErnieClassifier.setBatching): texts from calls
 * made at about the same time share one inference run of up to `maxBatch` texts.
 */
export interface PredictBatching {
  /** Texts per coalesced run (default 1024: a run sorts its texts by length into forward passes of `batchSize`). */
  maxBatch?: number
  /** How long a run that is not full waits for more texts, in ms (default 0: the calls of the same event-loop turn). */
  maxWaitMs?: number
  /** Texts that may wait; a call that would pass it is refused with ErnieError ERR_QUEUE_FULL (default: no limit). */
  maxQueue?: number
  /** Called as each coalesced run starts, with its number of texts (for metrics). */
  onBatch?: (texts: number) => void
}

export interface EvaluateOptions extends PredictOptions {
  onInvalid?: OnInvalid
  format?: ReadDataOptions['format']
  textField?: string
  labelField?: string
}

export interface LoadOptions extends HubOptions {
  /** The base model to use instead of the one the directory names (same architecture and size). */
  model?: ErnieModel | string
  device?: Device
  /** Default: ERNIE_PRECISION, else the precision the classifier was saved with, else 'auto'. */
  precision?: Precision
  /** Stops loading (between files, or the base model's download): rejects with an AbortError. */
  signal?: AbortSignal
}

export const DEFAULT_MAX_LENGTH = 256
export const LARGE_MODEL = 100e6
/** Below this many training examples 'auto' trains a head on the frozen base (see autoMethod). */
export const AUTO_HEAD_BELOW = 200

/**
 * The 'auto' method for a first fit on `examples` texts. Measured on the bundled 5M model and
 * ChnSentiCorp (README "The classifier"): with 50 reviews a head on the frozen base beats full
 * fine-tuning (0.69-0.79 against 0.62-0.70 on 400 dev reviews), at 100 they tie, from 300 on full
 * fine-tuning is 3-4 points ahead, at 20-40 times the time. Models of 100M parameters and more
 * train LoRA adapters instead, as full training of them is slow on a CPU and needs more memory.
 */
export function autoMethod(examples: number, numParameters: number, head: HeadSpec): Method {
  if (head.kind === 'mlp' || examples < AUTO_HEAD_BELOW) return 'head'
  return numParameters < LARGE_MODEL ? 'full' : 'lora'
}

/** fit's settings where FitOptions leaves them out. */
export interface FitDefaults {
  epochs: number
  batchSize: number
  learningRate: number
  warmupRatio: number
}

/**
 * fit's defaults for a method. Small models (under 100M parameters, the bundled one has 5M) take
 * larger steps than the rates suited to 0.3B and up; each was chosen so that one epoch on 300
 * reviews ends well above the majority class (test/classifier/classifier-defaults.test.ts):
 *   full 2e-4 in batches of 16: 5e-4 in 32 (the demo's rate for 9600 reviews) made the loss jump
 *     (0.92 to 2.18 at step 4) and ended 0.62-0.73 on 400 dev reviews; now 0.68-0.76;
 *   lora 5e-3: the fresh head trains at the adapters' rate, and 2e-4 ended 0.59-0.62 (1e-2 diverged);
 *   generative 3e-4 in batches of 2: the label is one token of the answer's spelling and the model
 *     learns which only in enough steps (10 steps of 32 stayed at chance; 150 of 2: 0.77-0.82);
 *     with tuning 'lora', 1e-3 (5e-3 stayed at chance).
 */
export function fitDefaults(method: Method, numParameters: number, loraTuning: boolean): FitDefaults {
  if (method === 'head') return { epochs: 30, batchSize: 64, learningRate: 5e-3, warmupRatio: 0 }
  const small = numParameters < LARGE_MODEL
  const generative = method === 'generative'
  // [under 100M parameters, from 100M]
  const [smallRate, largeRate] = generative ? (loraTuning ? [1e-3, 2e-4] : [3e-4, 2e-5]) : loraTuning ? [5e-3, 2e-4] : [2e-4, 2e-5]
  return { epochs: 3, batchSize: small && generative ? 2 : 16, learningRate: small ? smallRate : largeRate, warmupRatio: 0.1 }
}

/** Checks a call's `signal` option. */
export function checkSignal(signal: unknown, what: string): AbortSignal | undefined {
  if (signal !== undefined && !(signal instanceof AbortSignal)) throw typeError(`${what}: signal must be an AbortSignal`)
  return signal
}

/** Throws an AbortError when the signal has fired. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new AbortError(what, signal)
}

/** The hub options among `o` (ErnieClassifier's or load's), checked, for the model's resolution. */
export function hubOptionsOf(o: HubOptions, what: string): HubOptions {
  const { cacheDir, offline, onProgress, revision, token, endpoint } = o
  const check = (ok: boolean, name: string, expected: string, value: unknown) => {
    if (!ok) throw typeError(`${what}: ${name} must be ${expected}, got ${JSON.stringify(value)}`)
  }
  check(cacheDir === undefined || (typeof cacheDir === 'string' && cacheDir !== ''), 'cacheDir', 'a directory path', cacheDir)
  check(offline === undefined || typeof offline === 'boolean', 'offline', 'true or false', offline)
  check(onProgress === undefined || typeof onProgress === 'function', 'onProgress', 'a function', typeof onProgress)
  check(revision === undefined || (typeof revision === 'string' && revision !== ''), 'revision', 'a branch, tag or commit', revision)
  check(token === undefined || token === false || typeof token === 'string', 'token', 'a string or false', typeof token)
  check(endpoint === undefined || typeof endpoint === 'string', 'endpoint', 'a URL', endpoint)
  return { cacheDir, offline, onProgress, revision, token, endpoint }
}

function checkPooling(p: unknown): Pooling {
  if (p === undefined) return 'last'
  if (p !== 'last' && p !== 'mean' && p !== 'first') throw rangeError(`pooling must be 'last', 'mean' or 'first', got ${JSON.stringify(p)}`)
  return p
}

function headSpecOf(h: ErnieClassifierOptions['head']): HeadSpec {
  if (h === undefined || h === 'linear') return { kind: 'linear' }
  if (typeof h === 'object' && h !== null && Number.isInteger(h.hiddenSize) && h.hiddenSize > 0) return { kind: 'mlp', hiddenSize: h.hiddenSize }
  throw rangeError(`head must be 'linear' or { hiddenSize: positive integer }, got ${JSON.stringify(h)}`)
}

/** ErnieClassifierOptions checked, with their defaults: what the constructor keeps. */
export interface ClassifierSettings {
  o: ErnieClassifierOptions
  modelArg: ErnieModel | string
  maxLength: number
  truncation: Truncation
  pooling: Pooling
  headSpec: HeadSpec
  labelSet: LabelSet | undefined
  seed: number
  precision: Precision
  hub: HubOptions
}

/** Checks ErnieClassifier's options (throwing on the first bad one) and applies their defaults. */
export function parseClassifierOptions(options: ErnieClassifierOptions): ClassifierSettings {
  if (options === null || typeof options !== 'object') throw typeError('ErnieClassifier: options must be an object')
  const o = options
  resolveModelDevice(o.device, 'ErnieClassifier: device')
  if (o.method !== undefined && o.method !== 'auto' && !METHODS.includes(o.method))
    throw rangeError(`method must be 'auto' or one of ${METHODS.join(', ')}, got ${JSON.stringify(o.method)}`)
  const maxLength = o.maxLength ?? DEFAULT_MAX_LENGTH
  if (!Number.isInteger(maxLength) || maxLength < 2) throw rangeError(`maxLength must be an integer >= 2, got ${JSON.stringify(o.maxLength)}`)
  if (o.truncation !== undefined && o.truncation !== 'head' && o.truncation !== 'head_tail') throw rangeError(`truncation must be 'head' or 'head_tail', got ${JSON.stringify(o.truncation)}`)
  const truncation = o.truncation ?? 'head'
  const pooling = checkPooling(o.pooling)
  const headSpec = headSpecOf(o.head)
  if (headSpec.kind === 'mlp' && o.method !== undefined && o.method !== 'auto' && o.method !== 'head') throw rangeError(`an MLP head is for method 'head'; ${o.method} trains a linear head`)
  if (o.tuning !== undefined && o.tuning !== 'full' && o.tuning !== 'lora') throw rangeError(`tuning must be 'full' or 'lora', got ${JSON.stringify(o.tuning)}`)
  const labelSet = o.labels !== undefined ? new LabelSet(o.labels, true) : undefined
  if (o.tokenizer !== undefined && typeof o.tokenizer !== 'string') throw typeError('tokenizer must be a directory path')
  const seed = o.seed ?? 42
  if (!Number.isInteger(seed)) throw rangeError(`seed must be an integer, got ${o.seed}`)
  const precision = resolvePrecision(o.precision, 'ErnieClassifier: precision')
  const hub = hubOptionsOf(o, 'ErnieClassifier')
  let modelArg: ErnieModel | string
  if (o.model === undefined) {
    const bundled = bundledModelDir()
    if (!bundled)
      throw new ErnieError(
        'ERR_NO_DEFAULT_MODEL',
        `ErnieClassifier: no model given, and this package has no bundled default model (${path.join(packageRoot(), 'models', 'ernie-4.5-tiny-zh')}); pass { model: <directory | hub id | ErnieModel> }`,
      )
    modelArg = bundled
  } else if (o.model instanceof ErnieModel || (typeof o.model === 'string' && o.model.length > 0)) {
    modelArg = o.model
  } else throw typeError('model must be an ErnieModel, a model directory or a hub id')
  return { o, modelArg, maxLength, truncation, pooling, headSpec, labelSet, seed, precision, hub }
}

/** fit's classWeights as one weight per class (label order), checked. */
export function resolveClassWeights(w: FitOptions['classWeights'], set: LabelSet, counts: number[]): Float32Array | undefined {
  if (w === undefined) return undefined
  const C = set.size
  let out: number[]
  if (w === 'balanced') {
    const n = counts.reduce((a, b) => a + b, 0)
    out = counts.map((c) => n / (C * c))
  } else if (Array.isArray(w)) {
    if (w.length !== C) throw rangeError(`classWeights: ${w.length} weights for ${C} classes (${set.names.join(', ')})`)
    out = w
  } else if (w && typeof w === 'object') {
    for (const k of Object.keys(w)) if (!set.names.includes(k)) throw rangeError(`classWeights: "${k}" is not a class (${set.names.join(', ')})`)
    out = set.names.map((n) => (w as Record<string, number>)[n] ?? 1)
  } else throw typeError(`classWeights must be 'balanced', an array or an object by class name`)
  out.forEach((v, i) => {
    if (typeof v !== 'number' || !(v > 0) || !Number.isFinite(v)) throw rangeError(`classWeights: the weight of "${set.names[i]}" must be a positive number, got ${v}`)
  })
  return Float32Array.from(out)
}
