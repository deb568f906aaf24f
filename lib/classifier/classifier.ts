// ErnieClassifier: a sentiment (or any text) classifier on an ERNIE-4.5 / Qwen3 decoder, trained
// by the shared Trainer with one of four methods:
//   head        the base frozen; pooled features computed once, a linear or MLP head trained on them;
//   lora        LoRA adapters and a linear head, through the engine's classify objective;
//   full        every weight and a linear head, the same objective;
//   generative  the model learns to answer with the label word after a prompt (ERNIEKit's src/tgt
//               SFT); it predicts by scoring each label's answer tokens.
//
// The class is the classifier's face; its work lives beside it: options.ts (options, defaults,
// checks), core.ts (its state), fit.ts (training), inference.ts (predict, evaluate),
// persistence.ts (save, load), format.ts (classifier.json), results.ts (what the calls return).
import type { LabeledText } from '../data'
import type { Precision } from '../precision'
import type { ErnieModel } from '../model/model'
import { ClassifierCore } from './core'
import type { EvaluateResult } from './metrics'
import { fitClassifier } from './fit'
import type { TrainingRecord } from './format'
import { exportClassifier, type ExportOptions } from './export'
import { evaluateData, predictTexts, setBatching } from './inference'
import type { ErnieClassifierOptions, EvaluateOptions, FitOptions, LoadOptions, Method, PredictBatching, PredictOptions } from './options'
import { loadClassifier, saveClassifier } from './persistence'
import type { EvaluateReport, FitResult, Prediction } from './results'

export {
  METHODS,
  AUTO_HEAD_BELOW,
  type Method,
  type MethodOption,
  type HubOptions,
  type Device,
  type ErnieClassifierOptions,
  type FitOptions,
  type FitProgress,
  type PredictOptions,
  type PredictBatching,
  type EvaluateOptions,
  type LoadOptions,
} from './options'
export type { StepRecord, EvalRecord, FitResult, DataSummary, Prediction, EvaluateReport } from './results'
export { CLASSIFIER_FILE, type BaseModelRef, type TrainingRecord, type TrainingSettings, type BaseArchitecture, type ClassifierJson } from './format'
export { BUNDLED_MODEL, packageRoot, bundledModelDir } from './bundled'
export type { ExportOptions as ClassifierExportOptions } from './export'

export class ErnieClassifier implements AsyncDisposable {
  private readonly core: ClassifierCore
  /** The precision of the model's matrix products in fit, predict and evaluate. */
  readonly precision: Precision

  constructor(options: ErnieClassifierOptions = {}) {
    this.core = new ClassifierCore(options)
    this.precision = this.core.precision
  }

  /**
   * The training method: the one given, or what 'auto' chose (known once fit has read its data,
   * or after load); undefined until then. Never 'auto'.
   */
  get method(): Method | undefined {
    const given = this.core.o.method
    return this.core.method_ ?? (given === 'auto' ? undefined : given)
  }
  /** Class names (known once given, fitted or loaded). */
  get labels(): string[] | undefined {
    return this.core.labelSet ? [...this.core.labelSet.names] : undefined
  }
  /** The base model (after the first fit, predict or load). */
  get model(): ErnieModel | undefined {
    return this.core.model_
  }
  /** The last training's record, when this classifier was trained (or loaded with one). */
  get trainingRecord(): TrainingRecord | undefined {
    return this.core.training
  }
  /** The last evaluation on held-out data at the end of fit (or as saved). */
  get metrics(): EvaluateResult | undefined {
    return this.core.metrics_
  }

  /**
   * Predicts one text, or each of an array of texts. Concurrent calls (with the same batchSize)
   * are coalesced: their texts share inference runs of up to 1024 texts (see setBatching), so
   * 6,000 concurrent predict(text) calls cost about what one predict of 6,000 texts does.
   * `signal` stops the call between runs (an AbortError). Non-finite scores (weights holding NaN)
   * are ErnieError ERR_NUMERIC naming the text.
   */
  predict(text: string, options?: PredictOptions): Promise<Prediction>
  predict(texts: readonly string[], options?: PredictOptions): Promise<Prediction[]>
  predict(input: string | readonly string[], options: PredictOptions = {}): Promise<Prediction | Prediction[]> {
    return predictTexts(this.core, input, options)
  }

  /**
   * How concurrent predict calls are coalesced from now on: texts per run, how long a run waits
   * for company, how many texts may wait (past it ERR_QUEUE_FULL), a callback per run. The HTTP
   * server (createServer) sets these from its options.
   */
  setBatching(batching: PredictBatching): void {
    setBatching(this.core, batching)
  }

  /** Texts waiting in predict's queue for a run (all batch sizes). */
  get queuedTexts(): number {
    let n = 0
    for (const b of this.core.batchers.values()) n += b.queued
    return n
  }

  /** Accuracy, macro-F1, per-class precision / recall / F1, the confusion matrix and the loss on labelled data. */
  evaluate(data: string | readonly LabeledText[], options: EvaluateOptions = {}): Promise<EvaluateReport> {
    return evaluateData(this.core, data, options)
  }

  /** Trains on labelled data (an array of { text, label } or a file); see FitOptions. */
  fit(data: string | readonly LabeledText[], options: FitOptions = {}): Promise<FitResult> {
    return fitClassifier(this.core, data, options)
  }

  /**
   * Writes the classifier to `dir` (replacing a classifier saved there before), a directory that
   * is also a Hugging Face one (README "Saving and loading"): classifier.json (base model
   * reference, the bundled model by name; method, labels, the training's settings with defaults
   * resolved, its history and metrics), head.safetensors, config.json (labels and the
   * *ForSequenceClassification class), the tokenizer files, report.html, and the trained model
   * (model.safetensors with score.weight), the PEFT SEQ_CLS adapter or score.safetensors.
   */
  save(dir: string): Promise<void> {
    return saveClassifier(this.core, dir)
  }

  /**
   * Writes the classifier as save() does, with everything it runs with in the directory's model:
   * the LoRA adapter merged into the weights (W + scale B A, rounded to `dtype`, bf16 by default;
   * classifier.json's method is then 'full', and `exported` records the method it was trained
   * with) and the base model copied for the head method. `layout: 'hf'` (default) writes the
   * Hugging Face directory save writes; `layout: 'paddle'` writes model.safetensors and
   * config.json in ERNIEKit's layout (ERNIE-4.5 only), the head in head.safetensors.
   * ErnieClassifier.load reads both back.
   */
  export(dir: string, options: ExportOptions = {}): Promise<void> {
    return exportClassifier(this.core, dir, options)
  }

  /**
   * Loads a classifier saved with save() (by this or an earlier version), its base model resolved
   * from its reference (or `options.model`); or a Hugging Face sequence classifier: a transformers
   * directory (config.json naming a *ForSequenceClassification, score.weight in model.safetensors)
   * or a PEFT adapter with task_type SEQ_CLS and score in modules_to_save. ErnieError
   * ERR_CLASSIFIER names what a directory lacks. A hub id is resolved through the hub options
   * (cacheDir, offline, onProgress, ...); `signal` stops the load (an AbortError), the base
   * model's download included.
   */
  static load(dir: string, options: LoadOptions = {}): Promise<ErnieClassifier> {
    return loadClassifier(dir, options, (o) => {
      const clf = new ErnieClassifier(o)
      return { clf, core: clf.core }
    })
  }

  /** Frees the adapter, and the model when the classifier loaded it; waits for running calls first. */
  dispose(): Promise<void> {
    return this.core.dispose()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose()
  }
}
