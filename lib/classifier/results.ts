// What the classifier's calls return: fit's result and its records by step, predictions and
// evaluation reports.
import type { SkipReport } from '../data'
import type { EvaluateResult } from './metrics'
import type { Method } from './options'

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
  /** With resume: the checkpoint the fit continued from, and its step. */
  resumedFrom?: { step: number; checkpoint: string }
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

export interface EvaluateReport extends EvaluateResult {
  skipped: SkipReport
}
