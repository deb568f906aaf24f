// The settings a training ran with, its defaults resolved: what classifier.json and report.html
// record, so that a saved classifier says how it was made, not only what the caller passed.
import { precisionInForce } from '../precision'
import { ADAM_DEFAULTS } from '../train/optimizer'
import { TRAINER_DEFAULTS, type TrainerOptions, type TrainResult } from '../train/trainer'
import type { ClassifierCore } from './core'
import type { HeadRecord, TrainingSettings } from './format'
import type { Method } from './options'

/** The classifier's head as classifier.json records it. */
export function headRecord(core: ClassifierCore): HeadRecord | undefined {
  const spec = core.head?.spec
  if (!spec) return undefined
  return spec.kind === 'mlp' ? { kind: 'mlp', hiddenSize: spec.hiddenSize } : { kind: 'linear' }
}

/** From the options handed to the Trainer (fit's defaults applied) and what the Trainer resolved. */
export function trainingSettings(
  core: ClassifierCore,
  method: Method,
  t: TrainerOptions,
  run: Pick<TrainResult, 'totalSteps' | 'warmupSteps'>,
  extra: { classWeights?: Float32Array; recompute?: boolean },
): TrainingSettings {
  return {
    method,
    learningRate: t.learningRate!,
    schedule: t.schedule!,
    warmupSteps: run.warmupSteps,
    ...(t.warmupRatio !== undefined ? { warmupRatio: t.warmupRatio } : {}),
    weightDecay: t.weightDecay!,
    optimizer: t.optimizer ?? TRAINER_DEFAULTS.optimizer,
    ...(t.optimizer !== 'sgd'
      ? { adam: { beta1: t.adamBeta1 ?? ADAM_DEFAULTS.beta1, beta2: t.adamBeta2 ?? ADAM_DEFAULTS.beta2, epsilon: t.adamEpsilon ?? ADAM_DEFAULTS.eps } }
      : { momentum: t.momentum ?? 0 }),
    maxGradNorm: t.maxGradNorm ?? TRAINER_DEFAULTS.maxGradNorm,
    batchSize: t.batchSize!,
    gradientAccumulationSteps: t.gradientAccumulationSteps ?? 1,
    ...(t.epochs !== undefined ? { epochs: t.epochs } : {}),
    ...(t.maxSteps !== undefined ? { maxSteps: t.maxSteps } : {}),
    totalSteps: run.totalSteps,
    seed: t.seed!,
    maxLength: core.maxLength,
    truncation: core.truncation,
    ...(method !== 'generative' ? { pooling: core.pooling } : {}),
    precision: precisionInForce(core.precision),
    ...(core.head ? { head: headRecord(core) } : {}),
    ...(core.adapter ? { lora: { ...core.adapter.config } } : {}),
    ...(core.gen ? { tuning: core.gen.tuning } : {}),
    ...(extra.classWeights ? { classWeights: [...extra.classWeights] } : {}),
    recompute: extra.recompute === true,
  }
}
