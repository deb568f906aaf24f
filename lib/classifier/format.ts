// classifier.json: what a saved classifier records (the base model it runs on, its method,
// labels and settings, its training and metrics), and the names of its files.
import type { Precision, PrecisionRecord } from '../precision'
import type { Pooling, Truncation } from './encode'
import type { EvaluateResult } from './metrics'
import type { Method } from './options'
import type { EvalRecord, FitResult, StepRecord } from './results'

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
