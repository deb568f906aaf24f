// Learning-rate schedules, as transformers defines them (get_constant_schedule_with_warmup,
// get_linear_schedule_with_warmup, get_cosine_schedule_with_warmup): a multiplier of the base
// rate as a function of the optimizer steps already taken. As in transformers, step 0 (the
// first update) uses the multiplier at 0: with warmup, that first update has a rate of 0.
import { rangeError } from '../errors'

export type ScheduleKind = 'constant' | 'linear' | 'cosine'
export const SCHEDULE_KINDS: readonly ScheduleKind[] = ['constant', 'linear', 'cosine']

export interface ScheduleOptions {
  kind?: ScheduleKind
  /** The peak (base) learning rate. */
  lr: number
  /** Optimizer steps in the whole run (for linear and cosine decay, and for warmupRatio). */
  totalSteps: number
  /** Steps of linear warmup from 0. Takes precedence over warmupRatio. */
  warmupSteps?: number
  /** Warmup as a fraction of totalSteps: ceil(ratio * totalSteps) steps, as transformers computes it. */
  warmupRatio?: number
  /** Cosine: waves over the decay (default 0.5: from the peak to 0 once). */
  numCycles?: number
}

export interface Schedule {
  readonly kind: ScheduleKind
  readonly lr: number
  readonly totalSteps: number
  readonly warmupSteps: number
  readonly numCycles: number
  /** The rate for the update after `step` updates (step 0 = the first update). */
  at(step: number): number
}

/** The warmup length transformers derives from warmup_steps / warmup_ratio. */
export function warmupStepsOf(o: { totalSteps: number; warmupSteps?: number; warmupRatio?: number }): number {
  if (o.warmupSteps !== undefined && o.warmupSteps > 0) return o.warmupSteps
  if (o.warmupRatio !== undefined && o.warmupRatio > 0) return Math.ceil(o.totalSteps * o.warmupRatio)
  return 0
}

export function createSchedule(o: ScheduleOptions): Schedule {
  const kind = o.kind ?? 'linear'
  if (!SCHEDULE_KINDS.includes(kind))
    throw rangeError(`schedule: kind must be 'constant', 'linear' or 'cosine', got ${JSON.stringify(kind)}`)
  if (!(typeof o.lr === 'number' && o.lr >= 0 && Number.isFinite(o.lr))) throw rangeError(`schedule: lr must be a finite number >= 0, got ${o.lr}`)
  if (!Number.isInteger(o.totalSteps) || o.totalSteps < 0) throw rangeError(`schedule: totalSteps must be an integer >= 0, got ${o.totalSteps}`)
  if (o.warmupSteps !== undefined && !(Number.isInteger(o.warmupSteps) && o.warmupSteps >= 0))
    throw rangeError(`schedule: warmupSteps must be an integer >= 0, got ${o.warmupSteps}`)
  if (o.warmupRatio !== undefined && !(o.warmupRatio >= 0 && o.warmupRatio <= 1))
    throw rangeError(`schedule: warmupRatio must be in [0, 1], got ${o.warmupRatio}`)
  const numCycles = o.numCycles ?? 0.5
  if (!(typeof numCycles === 'number' && Number.isFinite(numCycles) && numCycles >= 0)) throw rangeError(`schedule: numCycles must be >= 0`)
  const warmup = warmupStepsOf(o)
  const total = o.totalSteps
  const factor = (step: number): number => {
    if (step < warmup) return step / Math.max(1, warmup)
    if (kind === 'constant') return 1
    if (kind === 'linear') return Math.max(0, (total - step) / Math.max(1, total - warmup))
    const progress = (step - warmup) / Math.max(1, total - warmup)
    return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * numCycles * 2 * progress)))
  }
  return { kind, lr: o.lr, totalSteps: total, warmupSteps: warmup, numCycles, at: (step) => o.lr * factor(step) }
}
