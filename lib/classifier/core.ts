// The state behind an ErnieClassifier: its settings, the base model and tokenizer (loaded once),
// the labels, head, adapter and generative answers, the training record, and the calls in
// flight. fit.ts, inference.ts and persistence.ts work on it; classifier.ts is its face.
import * as fs from 'node:fs'
import * as path from 'node:path'

import type { LabelSet } from '../data'
import type { Precision } from '../precision'
import { ErnieError, rangeError, typeError } from '../errors'
import { maxOf } from '../util/extent'
import type { Batcher } from './batcher'
import { EncodeThread } from './encode-thread'
import type { LoraAdapter } from '../model/lora'
import { ErnieModel } from '../model/model'
import { Tokenizer } from '../tokenizer'
import { answerIds, DEFAULT_PROMPT, promptParts, type Pooling, type PromptParts, type Truncation } from './encode'
import type { BaseModelRef, TrainingRecord } from './format'
import type { Head, HeadSpec } from './head'
import type { EvaluateResult } from './metrics'
import { LARGE_MODEL, parseClassifierOptions, type ErnieClassifierOptions, type HubOptions, type Method, type PredictBatching } from './options'

export interface Generative {
  tuning: 'full' | 'lora'
  prompt: string
  words: string[]
  parts: PromptParts
  answers: number[][]
}

export class ClassifierCore {
  readonly o: ErnieClassifierOptions
  readonly modelArg: ErnieModel | string
  readonly maxLength: number
  readonly truncation: Truncation
  readonly pooling: Pooling
  readonly headSpec: HeadSpec
  readonly seed: number
  readonly hub: HubOptions
  model_: ErnieModel | undefined
  ownsModel = false
  tokenizer: Tokenizer | undefined
  tokenizerDir: string | undefined
  base: BaseModelRef | undefined
  /** The method: the one given once the model is loaded, the 'auto' choice once fit has read its data. */
  method_: Method | undefined
  labelSet: LabelSet | undefined
  head: Head | undefined
  adapter: LoraAdapter | undefined
  gen: Generative | undefined
  ready: Promise<void> | undefined
  busy = false
  disposed = false
  readonly running = new Set<Promise<unknown>>()
  private thread: EncodeThread | null | undefined // null: the tokenizer cannot be sent to one
  /** @internal predict's batchers, one per batchSize (inference.ts), and the settings new ones take. */
  readonly batchers = new Map<number, Batcher<string, Float32Array>>()
  batching: PredictBatching = {}
  training: TrainingRecord | undefined
  metrics_: EvaluateResult | undefined
  /** The precision of the model's matrix products in fit, predict and evaluate. */
  readonly precision: Precision
  /** See EncodeSettings.appendEos: false for a classifier read from a Hugging Face directory. */
  appendEos = true

  constructor(options: ErnieClassifierOptions) {
    const s = parseClassifierOptions(options)
    this.o = s.o
    this.modelArg = s.modelArg
    this.maxLength = s.maxLength
    this.truncation = s.truncation
    this.pooling = s.pooling
    this.headSpec = s.headSpec
    this.labelSet = s.labelSet
    this.seed = s.seed
    this.precision = s.precision
    this.hub = s.hub
  }

  // Loads the model and tokenizer once.
  ensureReady(): Promise<void> {
    if (this.disposed) return Promise.reject(new ErnieError('ERR_DISPOSED', 'this ErnieClassifier has been disposed'))
    this.ready ??= this.load_().catch((e) => {
      this.ready = undefined
      throw e
    })
    return this.ready
  }

  async load_(): Promise<void> {
    let model: ErnieModel
    if (this.modelArg instanceof ErnieModel) {
      model = this.modelArg
      this.base = model.directory ? { kind: 'path', ref: model.directory } : { kind: 'saved', ref: 'model' }
    } else {
      const local = fs.existsSync(this.modelArg)
      model = await ErnieModel.fromPretrained(this.modelArg, { device: this.o.device, ...this.hub })
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
    if (this.o.method !== undefined && this.o.method !== 'auto') this.method_ = this.o.method
  }

  attachModel(model: ErnieModel): void {
    if (model.config.vocab_size <= 0) throw rangeError('model: empty vocabulary')
    this.model_ = model
  }

  /** @internal The thread that tokenizes large runs (encode-thread.ts), started on first use; undefined when the tokenizer cannot move there. */
  encodeThread(): EncodeThread | undefined {
    if (this.thread === undefined && !this.disposed) this.thread = EncodeThread.start(this.tokenizer!) ?? null
    return this.thread ?? undefined
  }

  requireModel(): { model: ErnieModel; tok: Tokenizer } {
    return { model: this.model_!, tok: this.tokenizer! }
  }

  track<T>(p: Promise<T>): Promise<T> {
    this.running.add(p)
    const done = () => this.running.delete(p)
    p.then(done, done)
    return p
  }

  encodeSettings() {
    return { maxLength: this.maxLength, truncation: this.truncation, appendEos: this.appendEos }
  }

  padId(): number {
    const { model, tok } = this.requireModel()
    const cfgPad = model.config.pad_token_id
    return tok.padTokenId ?? (typeof cfgPad === 'number' ? cfgPad : 0)
  }

  // --- the generative method's prompt and answers ---

  generative(): Generative {
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

  promptRoom(g: Generative): number {
    const longest = maxOf(g.answers.map((a) => a.length))
    return this.maxLength - g.parts.prefix.length - g.parts.suffix.length - longest
  }

  checkUsable(what: string): void {
    if (this.disposed) throw new ErnieError('ERR_DISPOSED', 'this ErnieClassifier has been disposed')
    if (this.busy) throw new ErnieError('ERR_BUSY', `${what}: the classifier is training; wait for fit() to finish (or abort it)`)
    if (!this.labelSet || (this.method_ !== 'generative' && !this.head))
      throw new ErnieError('ERR_NOT_TRAINED', `${what}: the classifier has not been trained; call fit() or ErnieClassifier.load()`)
  }

  /** Frees the adapter, and the model when the classifier loaded it; waits for running calls first. */
  async dispose(): Promise<void> {
    if (this.disposed) return
    this.disposed = true
    await Promise.allSettled([...this.running])
    await this.ready?.catch(() => undefined)
    for (const b of this.batchers.values()) b.close(new ErnieError('ERR_DISPOSED', 'this ErnieClassifier has been disposed'))
    this.batchers.clear()
    this.adapter?.dispose()
    this.adapter = undefined
    await this.thread?.close()
    if (this.ownsModel) await this.model_?.dispose()
    this.model_ = undefined
  }
}
