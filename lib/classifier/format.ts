// classifier.json: what a saved classifier records (the base model it runs on, its method,
// labels and settings, its training and metrics), and the names of its files.
import type { Precision, PrecisionRecord } from '../precision'
import type { WeightLayout } from '../model/layout'
import type { LoraConfig } from '../model/lora'
import type { OptimizerKind } from '../train/optimizer'
import type { ScheduleKind } from '../train/schedule'
import type { Pooling, Truncation } from './encode'
import type { EvaluateResult } from './metrics'
import type { Method } from './options'
import type { EvalRecord, FitResult, StepRecord } from './results'

/** Where the base model comes from, as a saved classifier records it. */
export interface BaseModelRef {
  /**
   * 'hub': a hub id; 'path': a directory; 'bundled': the package's bundled model by name (resolved
   * in the installed package on load); 'saved': inside the classifier directory ('.' since version
   * 2, 'model' in version 1).
   */
  kind: 'hub' | 'path' | 'bundled' | 'saved'
  ref: string
}

/**
 * The settings a training actually ran with, defaults resolved (what decides the result, beyond
 * the data): recorded in classifier.json and shown in report.html.
 */
export interface TrainingSettings {
  method: Method
  learningRate: number
  schedule: ScheduleKind
  /** Warmup optimizer steps, as the schedule resolved them (from warmupSteps or warmupRatio). */
  warmupSteps: number
  warmupRatio?: number
  weightDecay: number
  optimizer: OptimizerKind
  /** AdamW's betas and epsilon (absent for SGD). */
  adam?: { beta1: number; beta2: number; epsilon: number }
  /** SGD's momentum (SGD only). */
  momentum?: number
  maxGradNorm: number
  batchSize: number
  gradientAccumulationSteps: number
  /** The planned passes over the data (absent when maxSteps set the length). */
  epochs?: number
  maxSteps?: number
  /** The optimizer steps planned. */
  totalSteps: number
  seed: number
  maxLength: number
  truncation: Truncation
  /** Absent for 'generative', which reads no pooled state. */
  pooling?: Pooling
  /** What the products with bf16 weights ran at ('auto' resolved; the full record: TrainingRecord.precision). */
  precision: 'fp32' | 'bf16'
  head?: HeadRecord
  lora?: LoraConfig
  /** What 'generative' trained. */
  tuning?: 'full' | 'lora'
  classWeights?: number[]
  recompute: boolean
}

export type HeadRecord = { kind: 'linear' | 'mlp'; hiddenSize?: number }

/** Training facts kept with a saved classifier (and drawn in its report). */
export interface TrainingRecord {
  /** The options the caller passed to fit (functions and signals left out). */
  options: Record<string, unknown>
  /** The settings used, defaults resolved (absent in classifiers saved before they were recorded). */
  settings?: TrainingSettings
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

export const CLASSIFIER_FILE = 'classifier.json'
export const HEAD_FILE = 'head.safetensors'
export const FORMAT = 'ernie-sentiment-classifier'
/**
 * 2: the directory is also a Hugging Face one (hf-format.ts): a trained model at its root, the
 * adapter at its root. 1: the model in model/, the adapter in adapter/ (still read).
 */
export const FORMAT_VERSION = 2

/** classifier.json. */
export interface ClassifierJson {
  format: typeof FORMAT
  version: 1 | 2
  method: Method
  labels: { names: string[]; numericIsIndex: boolean }
  maxLength: number
  truncation: Truncation
  pooling: Pooling
  /** The precision predict runs at after load (unless overridden); absent in older files: 'auto'. */
  precision?: Precision
  appendEos: boolean
  head?: HeadRecord
  lora?: Record<string, unknown>
  generative?: { tuning: 'full' | 'lora'; prompt: string; labelWords: Record<string, string> }
  base: BaseModelRef & BaseArchitecture & { trainedFrom?: string; numParameters: number }
  /**
   * Written by ErnieClassifier.export: the method the classifier was trained with (`method` is
   * what it runs as: 'full' once a 'lora' adapter is merged), the layout of model.safetensors,
   * and whether an adapter was merged into it.
   */
  exported?: { from: Method; layout: WeightLayout; adapterMerged: boolean }
  seed: number
  training?: TrainingRecord
  metrics?: EvaluateResult
  library: { name: string; version: string }
  savedAt: string
}
