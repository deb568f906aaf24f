// ErnieClassifier: a sentiment (or any text) classifier on an ERNIE-4.5 / Qwen3 decoder, trained
// by the shared Trainer with one of four methods:
//   head        the base frozen; pooled features computed once, a linear or MLP head trained on them;
//   lora        LoRA adapters and a linear head, through the engine's classify objective;
//   full        every weight and a linear head, the same objective;
//   generative  the model learns to answer with the label word after a prompt (ERNIEKit's src/tgt
//               SFT); it predicts by scoring each label's answer tokens.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { assignLabels, checkClassCounts, LabelSet, readDataset, type Dataset, type LabeledText, type OnInvalid, type ReadDataOptions, type SkipReport } from '../data'
import { resolveModelDevice, type Device } from '../device'
import { PRECISIONS, precisionRecord, resolvePrecision, type Precision, type PrecisionRecord } from '../precision'
import { ErnieError, rangeError, typeError } from '../errors'
import { numThreads } from '../kernels'
import { crossEntropy } from '../kernels/loss'
import { LoraAdapter, type LoraOptions } from '../model/lora'
import { ErnieModel } from '../model/model'
import type { MatrixView } from '../model/weights'
import { copyModelFiles, Tokenizer } from '../tokenizer'
import { Trainer, type TrainerOptions, type TrainProgress } from '../train/trainer'
import { runInLanes } from '../util/lanes'
import type { OptimizerKind } from '../train/optimizer'
import type { ScheduleKind } from '../train/schedule'
import {
  answerIds,
  DEFAULT_PROMPT,
  encodeTexts,
  encodeTextsAsync,
  lengthBatches,
  padRows,
  poolHidden,
  promptIds,
  promptParts,
  yieldToEventLoop,
  type PaddedBatch,
  type Pooling,
  type PromptParts,
  type Truncation,
} from './encode'
import { Head, type HeadSpec } from './head'
import { classificationMetrics, softmaxRows, type EvaluateResult } from './metrics'
import { ClassifyTask, FeatureHeadTask, GenerativeTask, type Evaluator } from './tasks'

export type Method = 'head' | 'lora' | 'full' | 'generative'
export const METHODS: readonly Method[] = ['head', 'lora', 'full', 'generative']
export type { Device }

export interface ErnieClassifierOptions {
  /**
   * An ErnieModel, a model directory or a hub id. Default: the bundled model (models/ernie-4.5-tiny-zh).
   * 'full' (and generative with tuning 'full') train an ErnieModel passed here in place.
   */
  model?: ErnieModel | string
  /** Default: 'full' under 100M parameters, else 'lora'. */
  method?: Method
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
   * 'cpu', 'auto' (default, or ERNIE_DEVICE) or 'cuda'. The model graph runs on the CPU in this
   * version: 'auto' resolves to the CPU, and 'cuda' throws ERR_DEVICE (see lib/device.ts).
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
  /** Examples per micro-batch (default: head 64; full and generative-full under 100M parameters 32; others 16). */
  batchSize?: number
  gradientAccumulationSteps?: number
  /** Peak learning rate (default: head 5e-3, lora 2e-4, full and generative-full 5e-4 under 100M parameters, else 2e-5). */
  learningRate?: number
  /** Default 'linear'. */
  schedule?: ScheduleKind
  /** Default 0.1 of the steps for lora / full / generative, 0 for head. */
  warmupRatio?: number
  warmupSteps?: number
  /** Default 0.01. */
  weightDecay?: number
  maxGradNorm?: number
  optimizer?: OptimizerKind
  /** 'balanced' (n / (classes * count)), or a weight per class (array in label order, or by name). */
  classWeights?: 'balanced' | number[] | Record<string, number>
  /** Held-out data: evaluated every evalSteps (default: every epoch) and at the end. */
  evalData?: string | readonly LabeledText[]
  evalSteps?: number
  /** Stop after this many evaluations without improving metricForBestModel (default 'loss'). */
  earlyStoppingPatience?: number
  metricForBestModel?: 'loss' | 'accuracy' | 'macroF1'
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

export interface StepRecord {
  step: number
  loss: number
  accuracy?: number
  learningRate: number
}

export interface EvalRecord {
  step: number
  loss: number
  accuracy: number
  macroF1: number
}

export interface FitResult {
  method: Method
  steps: number
  epochs: number
  stopReason: 'completed' | 'aborted' | 'earlyStopping'
  seconds: number
  finalLoss: number
  history: StepRecord[]
  evalHistory: EvalRecord[]
  /** The final evaluation on evalData. */
  metrics?: EvaluateResult
  data: { train: DataSummary; eval?: DataSummary }
}

export interface DataSummary {
  source: string
  examples: number
  skipped: SkipReport
  /** Examples per class (training data). */
  classCounts?: Record<string, number>
}

export interface Prediction {
  label: string
  score: number
  scores: Record<string, number>
}

export interface PredictOptions {
  /** Texts per forward pass (default 32). */
  batchSize?: number
}

export interface EvaluateOptions extends PredictOptions {
  onInvalid?: OnInvalid
  format?: ReadDataOptions['format']
  textField?: string
  labelField?: string
}

export interface EvaluateReport extends EvaluateResult {
  skipped: SkipReport
}

export interface LoadOptions {
  /** The base model to use instead of the one the directory names (same architecture and size). */
  model?: ErnieModel | string
  device?: Device
  /** Default: ERNIE_PRECISION, else the precision the classifier was saved with, else 'auto'. */
  precision?: Precision
}


/** Where the base model comes from, as a saved classifier records it. */
export interface BaseModelRef {
  /** 'hub': a hub id; 'path': a directory; 'saved': inside the classifier directory (model/). */
  kind: 'hub' | 'path' | 'saved'
  ref: string
}

/** Training facts kept with a saved classifier (and drawn in its report). */
export interface TrainingRecord {
  options: Record<string, unknown>
  steps: number
  epochs: number
  stopReason: FitResult['stopReason']
  seconds: number
  history: StepRecord[]
  evalHistory: EvalRecord[]
  data: FitResult['data']
  /** The precision the training ran at (absent in classifiers saved before it was recorded). */
  precision?: PrecisionRecord
}

const DEFAULT_MAX_LENGTH = 256
const LARGE_MODEL = 100e6
// Texts encoded and sorted by length together for inference: a larger pool sorts into batches
// with less padding; the bound keeps the token ids held at once small.
const FEATURE_CHUNK = 1024

/**
 * work(batch, singleThread) for each batch. With several batches and cores, each batch runs on
 * one core and one batch per core is in flight: cores working alone get more done than both
 * sharing every product of one batch. A single batch gets the whole thread pool.
 */
function runBatchesPerCore<T>(batches: readonly T[], work: (batch: T, singleThread: boolean) => Promise<void>): Promise<void> {
  const cores = numThreads()
  const singleThread = cores > 1 && batches.length > 1
  return runInLanes(batches, singleThread ? cores : 1, (batch) => work(batch, singleThread))
}

/** The package's root directory (the one holding its package.json). */
export function packageRoot(): string {
  let dir = __dirname
  for (;;) {
    const pkg = path.join(dir, 'package.json')
    if (fs.existsSync(pkg)) {
      try {
        if (JSON.parse(fs.readFileSync(pkg, 'utf8')).name === 'ernie-sentiment') return dir
      } catch {
        // not ours: keep walking up
      }
    }
    const up = path.dirname(dir)
    if (up === dir) return path.resolve(__dirname, '..', '..')
    dir = up
  }
}

/** The bundled default model's directory, when the package ships one (config and weights). */
export function bundledModelDir(): string | undefined {
  const dir = path.join(packageRoot(), 'models', 'ernie-4.5-tiny-zh')
  const has = (f: string) => fs.existsSync(path.join(dir, f))
  return has('config.json') && (has('model.safetensors') || has('model.safetensors.index.json')) ? dir : undefined
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

// The classifier's engine view of the LM head, [vocab, hidden] row-major (a copy only when the
// checkpoint stores it another way).
const headCopies = new WeakMap<object, Float32Array | Uint16Array>()
function lmHeadRows(m: MatrixView): Float32Array | Uint16Array {
  if (!m.transposed && m.offset === 0 && m.ld === m.cols && m.data.length === m.rows * m.cols) return m.data
  const cached = headCopies.get(m.data)
  if (cached) return cached
  const out = m.data instanceof Float32Array ? new Float32Array(m.rows * m.cols) : new Uint16Array(m.rows * m.cols)
  for (let r = 0; r < m.rows; r++) for (let c = 0; c < m.cols; c++) out[r * m.cols + c] = m.data[m.offset + (m.transposed ? c * m.ld + r : r * m.ld + c)]
  headCopies.set(m.data, out)
  return out
}

interface Generative {
  tuning: 'full' | 'lora'
  prompt: string
  words: string[]
  parts: PromptParts
  answers: number[][]
}

export class ErnieClassifier implements AsyncDisposable {
  private readonly o: ErnieClassifierOptions
  private readonly modelArg: ErnieModel | string
  private readonly maxLength: number
  private readonly truncation: Truncation
  private readonly pooling: Pooling
  private readonly headSpec: HeadSpec
  private readonly seed: number
  private model_: ErnieModel | undefined
  private ownsModel = false
  private tokenizer: Tokenizer | undefined
  private tokenizerDir: string | undefined
  private base: BaseModelRef | undefined
  private method_: Method | undefined
  private labelSet: LabelSet | undefined
  private head: Head | undefined
  private adapter: LoraAdapter | undefined
  private gen: Generative | undefined
  private ready: Promise<void> | undefined
  private busy = false
  private disposed = false
  private readonly running = new Set<Promise<unknown>>()
  private training: TrainingRecord | undefined
  private metrics_: EvaluateResult | undefined
  /** The precision of the model's matrix products in fit, predict and evaluate. */
  readonly precision: Precision

  constructor(options: ErnieClassifierOptions = {}) {
    if (options === null || typeof options !== 'object') throw typeError('ErnieClassifier: options must be an object')
    const o = options
    resolveModelDevice(o.device, 'ErnieClassifier: device')
    if (o.method !== undefined && !METHODS.includes(o.method)) throw rangeError(`method must be one of ${METHODS.join(', ')}, got ${JSON.stringify(o.method)}`)
    this.maxLength = o.maxLength ?? DEFAULT_MAX_LENGTH
    if (!Number.isInteger(this.maxLength) || this.maxLength < 2) throw rangeError(`maxLength must be an integer >= 2, got ${JSON.stringify(o.maxLength)}`)
    if (o.truncation !== undefined && o.truncation !== 'head' && o.truncation !== 'head_tail') throw rangeError(`truncation must be 'head' or 'head_tail', got ${JSON.stringify(o.truncation)}`)
    this.truncation = o.truncation ?? 'head'
    this.pooling = checkPooling(o.pooling)
    this.headSpec = headSpecOf(o.head)
    if (this.headSpec.kind === 'mlp' && o.method !== undefined && o.method !== 'head') throw rangeError(`an MLP head is for method 'head'; ${o.method} trains a linear head`)
    if (o.tuning !== undefined && o.tuning !== 'full' && o.tuning !== 'lora') throw rangeError(`tuning must be 'full' or 'lora', got ${JSON.stringify(o.tuning)}`)
    if (o.labels !== undefined) this.labelSet = new LabelSet(o.labels, true)
    if (o.tokenizer !== undefined && typeof o.tokenizer !== 'string') throw typeError('tokenizer must be a directory path')
    this.seed = o.seed ?? 42
    if (!Number.isInteger(this.seed)) throw rangeError(`seed must be an integer, got ${o.seed}`)
    this.precision = resolvePrecision(o.precision, 'ErnieClassifier: precision')
    if (o.model === undefined) {
      const bundled = bundledModelDir()
      if (!bundled)
        throw new ErnieError(
          'ERR_NO_DEFAULT_MODEL',
          `ErnieClassifier: no model given, and this package has no bundled default model (${path.join(packageRoot(), 'models', 'ernie-4.5-tiny-zh')}); pass { model: <directory | hub id | ErnieModel> }`,
        )
      this.modelArg = bundled
    } else if (o.model instanceof ErnieModel || (typeof o.model === 'string' && o.model.length > 0)) {
      this.modelArg = o.model
    } else throw typeError('model must be an ErnieModel, a model directory or a hub id')
    this.o = o
  }

  /** The training method (resolved once the model is loaded when it was left to default). */
  get method(): Method | undefined {
    return this.method_ ?? this.o.method
  }
  /** Class names (known once given, fitted or loaded). */
  get labels(): string[] | undefined {
    return this.labelSet ? [...this.labelSet.names] : undefined
  }
  /** The base model (after the first fit, predict or load). */
  get model(): ErnieModel | undefined {
    return this.model_
  }
  /** The last training's record, when this classifier was trained (or loaded with one). */
  get trainingRecord(): TrainingRecord | undefined {
    return this.training
  }
  /** The last evaluation on held-out data at the end of fit (or as saved). */
  get metrics(): EvaluateResult | undefined {
    return this.metrics_
  }

  // Loads the model and tokenizer once.
  private ensureReady(): Promise<void> {
    if (this.disposed) return Promise.reject(new ErnieError('ERR_DISPOSED', 'this ErnieClassifier has been disposed'))
    this.ready ??= this.load_().catch((e) => {
      this.ready = undefined
      throw e
    })
    return this.ready
  }

  private async load_(): Promise<void> {
    let model: ErnieModel
    if (this.modelArg instanceof ErnieModel) {
      model = this.modelArg
      this.base = model.directory ? { kind: 'path', ref: model.directory } : { kind: 'saved', ref: 'model' }
    } else {
      const local = fs.existsSync(this.modelArg)
      model = await ErnieModel.fromPretrained(this.modelArg)
      this.ownsModel = true
      this.base = local ? { kind: 'path', ref: path.resolve(this.modelArg) } : { kind: 'hub', ref: this.modelArg }
    }
    this.attachModel(model)
    if (this.o.tokenizer !== undefined) {
      this.tokenizer = await Tokenizer.fromDirectory(this.o.tokenizer)
      this.tokenizerDir = path.resolve(this.o.tokenizer)
    } else if (model.tokenizer) {
      this.tokenizer = model.tokenizer
      this.tokenizerDir = model.directory
    } else throw new ErnieError('ERR_NO_TOKENIZER', 'ErnieClassifier: the model has no tokenizer; pass { tokenizer: <directory> }')
    const method = this.o.method ?? (model.numParameters < LARGE_MODEL ? 'full' : 'lora')
    this.method_ = method
    if (this.headSpec.kind === 'mlp' && method !== 'head') throw rangeError(`an MLP head is for method 'head'; ${method} trains a linear head`)
  }

  private attachModel(model: ErnieModel): void {
    if (model.config.vocab_size <= 0) throw rangeError('model: empty vocabulary')
    this.model_ = model
  }

  private requireModel(): { model: ErnieModel; tok: Tokenizer } {
    return { model: this.model_!, tok: this.tokenizer! }
  }

  private track<T>(p: Promise<T>): Promise<T> {
    this.running.add(p)
    const done = () => this.running.delete(p)
    p.then(done, done)
    return p
  }

  private encodeSettings() {
    return { maxLength: this.maxLength, truncation: this.truncation, appendEos: true }
  }

  private padId(): number {
    const { model, tok } = this.requireModel()
    const cfgPad = model.config.pad_token_id
    return tok.padTokenId ?? (typeof cfgPad === 'number' ? cfgPad : 0)
  }

  // --- the generative method's prompt and answers ---

  private generative(): Generative {
    if (this.gen) return this.gen
    const { tok } = this.requireModel()
    const names = this.labelSet!.names
    const lw = this.o.labelWords ?? {}
    if (typeof lw !== 'object' || lw === null) throw typeError('labelWords must map label names to answer words')
    for (const k of Object.keys(lw)) if (!names.includes(k)) throw rangeError(`labelWords: "${k}" is not a class (${names.join(', ')})`)
    const words = names.map((n) => lw[n] ?? n)
    const prompt = this.o.prompt ?? DEFAULT_PROMPT
    const tuning = this.o.tuning ?? (this.model_!.numParameters < LARGE_MODEL ? 'full' : 'lora')
    this.gen = { tuning, prompt, words, parts: promptParts(tok, prompt, words), answers: answerIds(tok, words) }
    return this.gen
  }

  private promptRoom(g: Generative): number {
    const longest = Math.max(...g.answers.map((a) => a.length))
    return this.maxLength - g.parts.prefix.length - g.parts.suffix.length - longest
  }

  // --- inference ---

  /** Pooled final hidden states [N * hidden] for texts, in batches of similar length. */
  private async features(texts: readonly string[], batchSize: number, signal?: AbortSignal, onBatch?: (done: number) => void): Promise<Float32Array | undefined> {
    const { model, tok } = this.requireModel()
    const H = model.config.hidden_size
    const out = new Float32Array(texts.length * H)
    const pad = this.padId()
    let done = 0
    for (let i = 0; i < texts.length; i += FEATURE_CHUNK) {
      const rows = encodeTexts(tok, texts.slice(i, i + FEATURE_CHUNK), this.encodeSettings())
      const batches = lengthBatches(
        rows.map((r) => r.length),
        batchSize,
      )
      await runBatchesPerCore(batches, async (idx, singleThread) => {
        if (signal?.aborted) return
        const b = padRows(
          idx.map((k) => rows[k]),
          pad,
        )
        const pooled = await this.pooledBatch(model, b, singleThread)
        idx.forEach((k, j) => out.set(pooled.subarray(j * H, (j + 1) * H), (i + k) * H))
        done += idx.length
        onBatch?.(done)
      })
      if (signal?.aborted) return undefined
    }
    return out
  }

  /** One padded batch's pooled vectors [B * hidden]; last-token pooling asks the model for those rows alone. */
  private async pooledBatch(model: ErnieModel, b: PaddedBatch, singleThread: boolean): Promise<Float32Array> {
    const input = { inputIds: { data: b.inputIds, shape: b.shape }, attentionMask: { data: b.attentionMask, shape: b.shape } }
    const options = { adapter: this.adapter, singleThread, precision: this.precision }
    if (this.pooling === 'last') return (await model.forward(input, { ...options, output: ['lastHidden'] })).lastHidden!
    const { hidden } = await model.forward(input, options)
    return poolHidden(hidden!, b.attentionMask, b.shape[0], b.shape[1], model.config.hidden_size, this.pooling)
  }

  /** Class probabilities [N * C] for texts. */
  private async probabilities(texts: readonly string[], batchSize: number): Promise<Float32Array> {
    const C = this.labelSet!.size
    if (texts.length === 0) return new Float32Array(0)
    if (this.method_ === 'generative') return this.answerProbabilities(texts, batchSize)
    const feats = (await this.features(texts, batchSize))!
    return softmaxRows(this.head!.logits(feats, texts.length), C)
  }

  /**
   * The generative method's class probabilities: each label's answer scored after the prompt
   * (the sum of its tokens' log-probabilities through the LM head), normalised over the labels.
   */
  private async answerProbabilities(texts: readonly string[], batchSize: number): Promise<Float32Array> {
    const { model, tok } = this.requireModel()
    const g = this.generative()
    const C = g.answers.length
    const H = model.config.hidden_size
    const V = model.config.vocab_size
    const prompts = promptIds(tok, g.parts, texts, this.promptRoom(g), this.truncation)
    const logp = new Float64Array(texts.length * C)
    const pad = this.padId()
    const perBatch = Math.max(1, Math.floor(batchSize / C))
    const batches = lengthBatches(
      prompts.map((p) => p.length),
      perBatch,
    )
    await runBatchesPerCore(batches, async (idx, singleThread) => {
      // one row per (text, label): the prompt followed by that label's answer
      const rows: number[][] = []
      for (const k of idx) for (const a of g.answers) rows.push([...prompts[k], ...a])
      const b = padRows(rows, pad)
      const T = b.shape[1]
      const input = { inputIds: { data: b.inputIds, shape: b.shape }, attentionMask: { data: b.attentionMask, shape: b.shape } }
      const { hidden } = await model.forward(input, { adapter: this.adapter, singleThread, precision: this.precision })
      const weight = lmHeadRows(model.weights.lmHead)
      for (let j = 0; j < idx.length; j++) {
        const P = prompts[idx[j]].length
        for (let c = 0; c < C; c++) {
          const a = g.answers[c]
          const row = j * C + c
          // positions P-1 .. P+len-2 predict the answer's tokens
          const start = (row * T + P - 1) * H
          const r = await crossEntropy({
            hidden: hidden!.subarray(start, start + a.length * H),
            weight,
            targets: Int32Array.from(a),
            tokens: a.length,
            hiddenSize: H,
            vocab: V,
            precision: this.precision,
          })
          logp[idx[j] * C + c] = -r.lossSum
        }
      }
    })
    return softmaxRows(logp, C)
  }

  private checkUsable(what: string): void {
    if (this.disposed) throw new ErnieError('ERR_DISPOSED', 'this ErnieClassifier has been disposed')
    if (this.busy) throw new ErnieError('ERR_BUSY', `${what}: the classifier is training; wait for fit() to finish (or abort it)`)
    if (!this.labelSet || (this.method_ !== 'generative' && !this.head))
      throw new ErnieError('ERR_NOT_TRAINED', `${what}: the classifier has not been trained; call fit() or ErnieClassifier.load()`)
  }

  /** Predicts one text, or each of an array of texts (batched inside). */
  async predict(text: string, options?: PredictOptions): Promise<Prediction>
  async predict(texts: readonly string[], options?: PredictOptions): Promise<Prediction[]>
  async predict(input: string | readonly string[], options: PredictOptions = {}): Promise<Prediction | Prediction[]> {
    const single = typeof input === 'string'
    const texts = single ? [input] : input
    if (!Array.isArray(texts)) throw typeError('predict: expected a string or an array of strings')
    texts.forEach((t, i) => {
      if (typeof t !== 'string') throw typeError(`predict: texts[${i}] is not a string`)
    })
    const batchSize = options.batchSize ?? 32
    if (!Number.isInteger(batchSize) || batchSize < 1) throw rangeError(`predict: batchSize must be a positive integer, got ${batchSize}`)
    await this.ensureReady()
    this.checkUsable('predict')
    const names = this.labelSet!.names
    const C = names.length
    const probs = await this.track(this.probabilities(texts, batchSize))
    const out = texts.map((_, i) => {
      const scores: Record<string, number> = {}
      let best = 0
      for (let c = 0; c < C; c++) {
        scores[names[c]] = probs[i * C + c]
        if (probs[i * C + c] > probs[i * C + best]) best = c
      }
      return { label: names[best], score: probs[i * C + best], scores }
    })
    return single ? out[0] : out
  }

  /** Accuracy, macro-F1, per-class precision / recall / F1, the confusion matrix and the loss on labelled data. */
  async evaluate(data: string | readonly LabeledText[], options: EvaluateOptions = {}): Promise<EvaluateReport> {
    await this.ensureReady()
    this.checkUsable('evaluate')
    const ds = await readDataset(data, { onInvalid: options.onInvalid, format: options.format, textField: options.textField, labelField: options.labelField })
    const set = assignLabels(ds, this.labelSet!, 'eval', options.onInvalid ?? 'error')
    if (set.texts.length === 0) throw new ErnieError('ERR_DATA', `${ds.source}: no examples to evaluate`)
    const probs = await this.track(this.probabilities(set.texts, options.batchSize ?? 32))
    return { ...classificationMetrics(set.labels, probs, this.labelSet!.names), skipped: ds.skipped }
  }

  // --- training ---

  /** Trains on labelled data (an array of { text, label } or a file); see FitOptions. */
  async fit(data: string | readonly LabeledText[], options: FitOptions = {}): Promise<FitResult> {
    if (options === null || typeof options !== 'object') throw typeError('fit: options must be an object')
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw typeError('fit: signal must be an AbortSignal')
    if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw typeError('fit: onProgress must be a function')
    await this.ensureReady()
    if (this.disposed) throw new ErnieError('ERR_DISPOSED', 'this ErnieClassifier has been disposed')
    if (this.busy) throw new ErnieError('ERR_BUSY', 'fit: the classifier is already training')
    this.busy = true
    try {
      // predictions already running finish on the weights they started with
      if (this.running.size > 0) await Promise.allSettled([...this.running])
      return await this.track(this.fit_(data, options))
    } finally {
      this.busy = false
    }
  }

  private async fit_(data: string | readonly LabeledText[], o: FitOptions): Promise<FitResult> {
    const started = performance.now()
    const method = this.method_!
    const { model, tok } = this.requireModel()
    const onInvalid = o.onInvalid ?? 'error'
    const read: ReadDataOptions = { onInvalid, format: o.format, textField: o.textField, labelField: o.labelField }
    const trainDs = await readDataset(data, { ...read, name: 'data' })
    const evalDs = o.evalData !== undefined ? await readDataset(o.evalData, { ...read, name: 'evalData' }) : undefined

    const labelSet = this.labelSet ?? LabelSet.infer(trainDs.examples, trainDs.source)
    const train = assignLabels(trainDs, labelSet, 'train', onInvalid)
    const counts = checkClassCounts(train.labels, labelSet, trainDs.source, o.minExamplesPerClass ?? 2)
    const evalSet = evalDs ? assignLabels(evalDs, labelSet, 'eval', onInvalid) : undefined
    if (evalDs && evalSet!.texts.length === 0) throw new ErnieError('ERR_DATA', `${evalDs.source}: no evaluation examples`)
    this.labelSet = labelSet
    const C = labelSet.size
    const classWeights = resolveClassWeights(o.classWeights, labelSet, counts)

    const H = model.config.hidden_size
    if (method !== 'generative') {
      if (this.head && this.head.classes !== C) throw new ErnieError('ERR_STATE', `fit: the classifier has ${this.head.classes} classes, the data ${C}`)
      this.head ??= Head.create(method === 'head' ? this.headSpec : { kind: 'linear' }, H, C, this.seed)
    }
    const loraOptions: LoraOptions = { r: 8, alpha: 16, ...this.o.lora, seed: this.o.lora?.seed ?? this.seed }
    if ((method === 'lora' || (method === 'generative' && this.generative().tuning === 'lora')) && !this.adapter)
      this.adapter = LoraAdapter.create(model, loraOptions)

    const summary = (ds: Dataset, examples: number, withCounts: boolean): DataSummary => ({
      source: ds.source,
      examples,
      skipped: ds.skipped,
      ...(withCounts ? { classCounts: Object.fromEntries(labelSet.names.map((n, k) => [n, counts[k]])) } : {}),
    })
    const dataSummary = { train: summary(trainDs, train.texts.length, true), ...(evalDs ? { eval: summary(evalDs, evalSet!.texts.length, false) } : {}) }

    // Full fine-tuning of a small model (the bundled one, 5M parameters) takes a far larger step
    // than the 2e-5 suited to 0.3B and up: 5e-4 in batches of 32 is the demo's measured recipe.
    const small = model.numParameters < LARGE_MODEL
    const loraTuning = method === 'lora' || (method === 'generative' && this.generative().tuning === 'lora')
    const defaults = {
      epochs: method === 'head' ? 30 : 3,
      batchSize: method === 'head' ? 64 : small && !loraTuning ? 32 : 16,
      learningRate: method === 'head' ? 5e-3 : loraTuning ? 2e-4 : small ? 5e-4 : 2e-5,
      warmupRatio: method === 'head' ? 0 : 0.1,
    }
    const batchSize = o.batchSize ?? defaults.batchSize
    const accumulation = o.gradientAccumulationSteps ?? 1
    const stepsPerEpoch = Math.ceil(Math.ceil(train.texts.length / batchSize) / accumulation)
    const history: StepRecord[] = []
    const evalHistory: EvalRecord[] = []
    const emit = (p: FitProgress) => o.onProgress?.(p)
    const aborted = (): FitResult => this.finishFit(method, started, 'aborted', history, evalHistory, dataSummary, o, 0, 0, NaN, undefined)

    // The evaluation the Trainer runs every evalSteps, and the final one.
    let evalFeatures: Float32Array | undefined
    const evaluateHeld = async (): Promise<EvaluateResult> => {
      if (method === 'head' && evalFeatures) return classificationMetrics(evalSet!.labels, softmaxRows(this.head!.logits(evalFeatures, evalSet!.texts.length), C), labelSet.names)
      return classificationMetrics(evalSet!.labels, await this.probabilities(evalSet!.texts, 32), labelSet.names)
    }
    const evaluator: Evaluator | undefined = evalSet
      ? async () => {
          const m = await evaluateHeld()
          return { loss: m.loss, accuracy: m.accuracy, macroF1: m.macroF1 }
        }
      : undefined

    let task: FeatureHeadTask | ClassifyTask | GenerativeTask
    if (method === 'head') {
      const total = train.texts.length + (evalSet?.texts.length ?? 0)
      const t0 = performance.now()
      const onBatch = (offset: number) => (done: number) => {
        const elapsed = (performance.now() - t0) / 1000
        const n = offset + done
        emit({ phase: 'features', step: n, totalSteps: total, epoch: 0, elapsedSeconds: elapsed, etaSeconds: n > 0 ? (elapsed * (total - n)) / n : 0 })
      }
      const feats = await this.features(train.texts, 32, o.signal, onBatch(0))
      if (!feats) return aborted()
      if (evalSet) {
        evalFeatures = await this.features(evalSet.texts, 32, o.signal, onBatch(train.texts.length))
        if (!evalFeatures) return aborted()
      }
      // the standardisation is fixed by the first training run: a refit continues the same head
      if (!this.head!.featureMean) this.head!.fitStandardization(feats, train.texts.length)
      task = new FeatureHeadTask(this.head!, feats, train.labels, classWeights, evaluator)
    } else if (method === 'generative') {
      const g = this.generative()
      const prompts = promptIds(tok, g.parts, train.texts, this.promptRoom(g), this.truncation)
      const examples = prompts.map((p, i) => {
        const a = g.answers[train.labels[i]]
        return { inputIds: [...p, ...a], labels: [...p.map(() => -100), ...a] }
      })
      await yieldToEventLoop()
      task = new GenerativeTask(
        model,
        { train: examples, adapter: this.adapter, fullTraining: g.tuning === 'full', padTokenId: this.padId(), recompute: o.recompute },
        evaluator,
      )
    } else {
      const rows = await encodeTextsAsync(tok, train.texts, this.encodeSettings(), o.signal)
      if (!rows) return aborted()
      task = new ClassifyTask(model, this.head!, {
        train: rows.map((ids, i) => ({ ids, label: train.labels[i] })),
        adapter: this.adapter,
        trainBase: method === 'full',
        pooling: this.pooling,
        classWeights,
        padTokenId: this.padId(),
        recompute: o.recompute,
        evaluator,
      })
    }

    const trainerOptions: TrainerOptions = {
      precision: this.precision,
      epochs: o.maxSteps === undefined ? (o.epochs ?? defaults.epochs) : undefined,
      maxSteps: o.maxSteps,
      batchSize,
      gradientAccumulationSteps: accumulation,
      learningRate: o.learningRate ?? defaults.learningRate,
      schedule: o.schedule ?? 'linear',
      warmupRatio: o.warmupSteps === undefined ? (o.warmupRatio ?? defaults.warmupRatio) : undefined,
      warmupSteps: o.warmupSteps,
      weightDecay: o.weightDecay ?? 0.01,
      maxGradNorm: o.maxGradNorm,
      optimizer: o.optimizer,
      seed: o.seed ?? this.seed,
      groupByLength: method !== 'head',
      evalSteps: evalSet ? (o.evalSteps ?? stepsPerEpoch) : undefined,
      earlyStoppingPatience: evalSet ? o.earlyStoppingPatience : undefined,
      metricForBestModel: o.metricForBestModel,
      signal: o.signal,
      onProgress: (p: TrainProgress) => {
        const accuracy = 'accuracy' in task ? (task as FeatureHeadTask | ClassifyTask).accuracy.take() : undefined
        history.push({ step: p.step, loss: p.loss, learningRate: p.lr, ...(accuracy !== undefined ? { accuracy } : {}) })
        const ev = p.metrics ? { loss: p.metrics.loss, accuracy: p.metrics.accuracy, macroF1: p.metrics.macroF1 } : undefined
        if (ev) evalHistory.push({ step: p.step, ...ev })
        emit({
          phase: 'train',
          step: p.step,
          totalSteps: p.totalSteps,
          epoch: p.epoch,
          loss: p.loss,
          accuracy,
          learningRate: p.lr,
          etaSeconds: p.etaSeconds,
          elapsedSeconds: (performance.now() - started) / 1000,
          ...(ev ? { eval: ev } : {}),
        })
      },
    }
    const result = await new Trainer(task as FeatureHeadTask, trainerOptions).train()
    let metrics: EvaluateResult | undefined
    if (evalSet && result.stopReason !== 'aborted') metrics = await evaluateHeld()
    this.metrics_ = metrics ?? this.metrics_
    return this.finishFit(method, started, result.stopReason, history, evalHistory, dataSummary, o, result.steps, result.epoch, result.finalLoss, metrics)
  }

  private finishFit(
    method: Method,
    started: number,
    stopReason: FitResult['stopReason'],
    history: StepRecord[],
    evalHistory: EvalRecord[],
    data: FitResult['data'],
    o: FitOptions,
    steps: number,
    epochs: number,
    finalLoss: number,
    metrics: EvaluateResult | undefined,
  ): FitResult {
    const seconds = (performance.now() - started) / 1000
    const { onProgress: _p, signal: _s, evalData: _e, ...rest } = o
    const options = { ...rest, ...(typeof o.evalData === 'string' ? { evalData: o.evalData } : {}) }
    this.training = { options, steps, epochs, stopReason, seconds, history, evalHistory, data, precision: precisionRecord(this.precision) }
    return { method, steps, epochs, stopReason, seconds, finalLoss, history, evalHistory, metrics, data }
  }

  // --- persistence ---

  /**
   * Writes the classifier to `dir` (replacing a classifier saved there before): classifier.json
   * (base model reference, method, labels, settings, training record and metrics), the head
   * (head.safetensors), the LoRA adapter (adapter/, PEFT layout), the tokenizer files, the model
   * itself (model/) when its weights were trained or it has no directory to refer to, and report.html.
   */
  async save(dir: string): Promise<void> {
    if (typeof dir !== 'string' || dir.length === 0) throw typeError('save: dir must be a directory path')
    await this.ensureReady()
    this.checkUsable('save')
    const { writeDirectoryAtomically, writeFileDurable } = await import('../io/atomic')
    const { saveSafetensors } = await import('../io/safetensors')
    const { renderReport } = await import('./report')
    const info = await fs.promises.stat(dir).catch(() => undefined)
    if (info && !info.isDirectory()) throw new ErnieError('ERR_EXISTS', `save: ${path.resolve(dir)} is a file`)
    const existing = info ? await fs.promises.readdir(dir) : undefined
    if (existing && existing.length > 0 && !existing.includes(CLASSIFIER_FILE))
      throw new ErnieError('ERR_EXISTS', `save: ${path.resolve(dir)} holds other files and no ${CLASSIFIER_FILE}; choose an empty or new directory`)
    const model = this.model_!
    const method = this.method_!
    const saveModel = method === 'full' || (method === 'generative' && this.gen?.tuning === 'full') || this.base!.kind === 'saved'
    const base: BaseModelRef = saveModel ? { kind: 'saved', ref: 'model' } : this.base!
    const meta: ClassifierJson = {
      format: FORMAT,
      version: 1,
      method,
      labels: this.labelSet!.toJSON(),
      maxLength: this.maxLength,
      truncation: this.truncation,
      pooling: this.pooling,
      precision: this.precision,
      appendEos: true,
      head: this.head ? (this.head.spec.kind === 'mlp' ? { kind: 'mlp', hiddenSize: this.head.spec.hiddenSize } : { kind: 'linear' }) : undefined,
      lora: this.adapter ? { ...this.adapter.config } : undefined,
      generative: this.gen ? { tuning: this.gen.tuning, prompt: this.gen.prompt, labelWords: Object.fromEntries(this.labelSet!.names.map((n, i) => [n, this.gen!.words[i]])) } : undefined,
      base: {
        ...base,
        ...(saveModel && this.base!.kind !== 'saved' ? { trainedFrom: this.base!.ref } : {}),
        ...architectureOf(model),
        numParameters: model.numParameters,
      },
      seed: this.seed,
      training: this.training,
      metrics: this.metrics_,
      library: { name: 'ernie-sentiment', version: libraryVersion() },
      savedAt: new Date().toISOString(),
    }
    await this.track(
      writeDirectoryAtomically(
        dir,
        async (tmp) => {
          if (this.head) await saveSafetensors(path.join(tmp, HEAD_FILE), this.head.tensors(), { format: 'pt' })
          if (this.adapter) {
            await fs.promises.mkdir(path.join(tmp, 'adapter'))
            await this.adapter.writeFiles(path.join(tmp, 'adapter'))
          }
          if (saveModel) await model.save(path.join(tmp, 'model'))
          if (this.tokenizerDir) await copyModelFiles(this.tokenizerDir, tmp)
          await writeFileDurable(path.join(tmp, CLASSIFIER_FILE), JSON.stringify(meta, null, 2) + '\n')
          await writeFileDurable(path.join(tmp, 'report.html'), renderReport(meta))
        },
        { keepOtherFiles: false },
      ),
    )
  }

  /** Loads a classifier saved with save(); the base model is resolved from its reference (or `options.model`). */
  static async load(dir: string, options: LoadOptions = {}): Promise<ErnieClassifier> {
    if (typeof dir !== 'string' || dir.length === 0) throw typeError('load: dir must be a directory path')
    resolveModelDevice(options.device, 'load: device')
    const file = path.join(dir, CLASSIFIER_FILE)
    let meta: ClassifierJson
    try {
      meta = JSON.parse(await fs.promises.readFile(file, 'utf8'))
    } catch (e) {
      const code = (e as { code?: string }).code
      throw new ErnieError('ERR_CLASSIFIER', code ? `${file}: cannot read (${code}); is ${dir} a saved classifier?` : `${file}: invalid JSON (${(e as Error).message})`, { cause: e })
    }
    if (!meta || meta.format !== FORMAT || meta.version !== 1) throw new ErnieError('ERR_CLASSIFIER', `${file}: not a classifier this version reads (format ${JSON.stringify(meta?.format)}, version ${JSON.stringify(meta?.version)})`)
    if (!METHODS.includes(meta.method)) throw new ErnieError('ERR_CLASSIFIER', `${file}: unknown method ${JSON.stringify(meta.method)}`)
    if (meta.precision !== undefined && !PRECISIONS.includes(meta.precision))
      throw new ErnieError('ERR_CLASSIFIER', `${file}: unknown precision ${JSON.stringify(meta.precision)} (expected ${PRECISIONS.join(', ')})`)

    let model: ErnieModel
    let owns = true
    let base: BaseModelRef = { kind: meta.base.kind, ref: meta.base.ref }
    if (options.model !== undefined && meta.base.kind === 'saved' && meta.base.trainedFrom !== undefined)
      throw new ErnieError('ERR_BASE_MODEL', `${file}: this classifier trained its model's own weights (saved in ${path.join(dir, meta.base.ref)}); it cannot run on another base model`)
    if (options.model instanceof ErnieModel) {
      model = options.model
      owns = false
    } else if (typeof options.model === 'string') {
      model = await ErnieModel.fromPretrained(options.model)
      base = fs.existsSync(options.model) ? { kind: 'path', ref: path.resolve(options.model) } : { kind: 'hub', ref: options.model }
    } else if (meta.base.kind === 'saved') {
      model = await ErnieModel.fromPretrained(path.join(dir, meta.base.ref), { tokenizer: false })
      base = { kind: 'saved', ref: 'model' }
    } else {
      try {
        model = await ErnieModel.fromPretrained(meta.base.ref, { tokenizer: false })
      } catch (e) {
        throw new ErnieError(
          'ERR_BASE_MODEL',
          `${file}: cannot load the base model ${JSON.stringify(meta.base.ref)} (${(e as Error).message}); pass { model: <directory | hub id> } to load()`,
          { cause: e },
        )
      }
    }
    const fail = (msg: string): never => {
      if (owns) void model.dispose()
      throw new ErnieError('ERR_BASE_MODEL', `${file}: ${msg}`)
    }
    const arch = architectureOf(model)
    const differ = (Object.keys(arch) as Array<keyof BaseArchitecture>).filter((k) => meta.base[k] !== undefined && meta.base[k] !== arch[k])
    if (differ.length > 0)
      fail(`the base model is not the one this classifier was trained on: ${differ.map((k) => `${k} ${JSON.stringify(arch[k])} (trained on ${JSON.stringify(meta.base[k])})`).join(', ')}`)
    const c = model.config

    const clf = new ErnieClassifier({
      model,
      method: meta.method,
      labels: meta.labels.names,
      maxLength: meta.maxLength,
      truncation: meta.truncation,
      pooling: meta.pooling,
      head: meta.head?.kind === 'mlp' ? { hiddenSize: meta.head.hiddenSize! } : 'linear',
      tuning: meta.generative?.tuning,
      prompt: meta.generative?.prompt,
      labelWords: meta.generative?.labelWords,
      seed: meta.seed,
      precision: options.precision ?? (process.env.ERNIE_PRECISION ? undefined : meta.precision),
    })
    try {
      clf.ownsModel = owns
      clf.labelSet = LabelSet.fromJSON(meta.labels)
      clf.tokenizer = await Tokenizer.fromDirectory(dir)
      clf.tokenizerDir = path.resolve(dir)
      clf.attachModel(model)
      clf.base = base
      clf.method_ = meta.method
      clf.ready = Promise.resolve()
      clf.training = meta.training
      clf.metrics_ = meta.metrics
      if (meta.head) {
        const { openSafetensors } = await import('../io/safetensors')
        using st = openSafetensors(path.join(dir, HEAD_FILE))
        clf.head = Head.fromTensors(
          meta.head.kind === 'mlp' ? { kind: 'mlp', hiddenSize: meta.head.hiddenSize! } : { kind: 'linear' },
          c.hidden_size,
          meta.labels.names.length,
          (name) => (st.has(name) ? (st.view(name) as Float32Array) : undefined),
          path.join(dir, HEAD_FILE),
        )
      }
      if (meta.lora) clf.adapter = await LoraAdapter.load(path.join(dir, 'adapter'), model)
      if (meta.method === 'generative') clf.generative()
    } catch (e) {
      await clf.dispose()
      throw e
    }
    return clf
  }

  /** Frees the adapter, and the model when the classifier loaded it; waits for running calls first. */
  async dispose(): Promise<void> {
    if (this.disposed) return
    this.disposed = true
    await Promise.allSettled([...this.running])
    await this.ready?.catch(() => undefined)
    this.adapter?.dispose()
    this.adapter = undefined
    if (this.ownsModel) await this.model_?.dispose()
    this.model_ = undefined
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose()
  }
}

function resolveClassWeights(w: FitOptions['classWeights'], set: LabelSet, counts: number[]): Float32Array | undefined {
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

/** What a classifier's weights depend on in its base model: it must match on load. */
export interface BaseArchitecture {
  modelType: string
  hiddenSize: number
  intermediateSize: number
  numHiddenLayers: number
  numAttentionHeads: number
  numKeyValueHeads: number
  headDim: number
  vocabSize: number
}

function architectureOf(model: ErnieModel): BaseArchitecture {
  const c = model.config
  return {
    modelType: c.model_type,
    hiddenSize: c.hidden_size,
    intermediateSize: c.intermediate_size,
    numHiddenLayers: c.num_hidden_layers,
    numAttentionHeads: c.num_attention_heads,
    numKeyValueHeads: c.num_key_value_heads,
    headDim: c.head_dim,
    vocabSize: c.vocab_size,
  }
}

function libraryVersion(): string {
  try {
    return JSON.parse(fs.readFileSync(path.join(packageRoot(), 'package.json'), 'utf8')).version ?? 'unknown'
  } catch {
    return 'unknown'
  }
}

export const CLASSIFIER_FILE = 'classifier.json'
const HEAD_FILE = 'head.safetensors'
const FORMAT = 'ernie-sentiment-classifier'

/** classifier.json. */
export interface ClassifierJson {
  format: typeof FORMAT
  version: 1
  method: Method
  labels: { names: string[]; numericIsIndex: boolean }
  maxLength: number
  truncation: Truncation
  pooling: Pooling
  /** The precision predict runs at after load (unless overridden); absent in older files: 'auto'. */
  precision?: Precision
  appendEos: boolean
  head?: { kind: 'linear' | 'mlp'; hiddenSize?: number }
  lora?: Record<string, unknown>
  generative?: { tuning: 'full' | 'lora'; prompt: string; labelWords: Record<string, string> }
  base: BaseModelRef & BaseArchitecture & { trainedFrom?: string; numParameters: number }
  seed: number
  training?: TrainingRecord
  metrics?: EvaluateResult
  library: { name: string; version: string }
  savedAt: string
}
