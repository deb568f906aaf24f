// The training loop every task shares: seeded (optionally length-grouped) batches, gradient
// accumulation weighted by loss items, global-norm clipping, an optimiser and a learning-rate
// schedule, evaluation with early stopping, atomic checkpoints with rotation and exact resume,
// progress events and an AbortSignal. What is trained and how its loss is computed is the
// task's business (TrainTask): causal-LM fine-tuning (LmTask), a classifier head, ...
import { parseJsonBytes } from '../io/json'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { resolveModelDevice, type Device } from '../device'
import { resolvePrecision, type Precision } from '../precision'
import { ErnieError, rangeError, typeError } from '../errors'
import { cleanUpAfterKilledWriters, fsyncDirectory, temporarySibling, writeDirectoryAtomically, writeFileDurable } from '../io/atomic'
import { openSafetensors, saveSafetensors, type TensorToSave } from '../io/safetensors'
import { pauseForTest } from '../io/test-pause'
import { clipGradNorm, gradNorm } from '../kernels/optim'
import { f32ToBf16 } from '../model/dtype'
import { Optimizer, type OptimizerKind, type OptimizerStateMeta } from './optimizer'
import { seededRandom } from '../util/random'
import { createSchedule, type Schedule, type ScheduleKind } from './schedule'
import { readSmallFileSync } from '../io/read'

/** How the Trainer asks a task to compute a step or an evaluation. */
export interface StepContext {
  /** The precision of the model's matrix products (README "Precision"); undefined: the model's own. */
  precision?: Precision
}

/** What the Trainer trains: examples, parameters, and the loss of a micro-batch. */
export interface TrainTask<E = unknown, B = unknown> {
  /** The training examples in a fixed order; the trainer shuffles indices into this list. */
  examples(): readonly E[]
  /** What the optimiser updates, by name: f32 arrays updated in place. */
  params(): ReadonlyMap<string, Float32Array>
  /** bf16 copies (same names) the forward reads; refreshed after every update and on resume. */
  computeCopies?(): ReadonlyMap<string, Uint16Array>
  /** A parameter's shape in checkpoints (flat when absent). */
  paramShape?(name: string): readonly number[]
  /** Pads / stacks examples into one micro-batch. */
  collate(examples: E[]): B
  /**
   * Adds the gradient of the micro-batch's mean loss into `grads` (which holds a zeroed buffer
   * for every name of params()) and returns that loss.
   */
  lossAndGrad(batch: B, grads: Map<string, Float32Array>, context: StepContext): Promise<{ loss: number; count?: number }>
  /**
   * How many items (tokens, sequences) the batch's mean loss averages over, known before it
   * runs. The micro-batches of one step are then weighted by it, so accumulating 2 x 4 examples
   * gives the gradient of 8. Without it the micro-batches weigh the same.
   */
  lossItems?(batch: B): number
  /** Tokens in a batch, for tokens/s (lossItems, or 0, when absent). */
  tokens?(batch: B): number
  /** An example's length, for length-grouped batches. */
  length?(example: E): number
  /** Metrics on held-out data (e.g. { loss, perplexity }). */
  evaluate?(context: StepContext): Promise<Record<string, number>>
  /** Extra files a checkpoint directory should hold (e.g. a PEFT adapter), written into `dir`. */
  saveCheckpoint?(dir: string): Promise<void>
}

export interface TrainerOptions {
  /**
   * 'cpu', 'auto' (default, or ERNIE_DEVICE) or 'cuda', checked here ('cuda' without a CUDA build
   * or device is ErnieError ERR_DEVICE). The steps run where the task's model runs (its device).
   */
  device?: Device
  /**
   * Of the model's matrix products in training and evaluation: 'fp32', 'bf16' or 'auto'
   * (README "Precision"). Default: the task's model's own (`model.precision`).
   */
  precision?: Precision
  /** Passes over the data (default 1); ignored when maxSteps is set. */
  epochs?: number
  /** Optimizer steps to run, across as many epochs as that takes. */
  maxSteps?: number
  /** Examples per micro-batch (default 8). */
  batchSize?: number
  /** Micro-batches per optimizer step (default 1). */
  gradientAccumulationSteps?: number
  /** Peak learning rate (default 5e-5). */
  learningRate?: number
  /** Default 'linear' (transformers' default). */
  schedule?: ScheduleKind
  warmupSteps?: number
  warmupRatio?: number
  /** Decoupled weight decay (default 0); norms and biases are never decayed. */
  weightDecay?: number
  /** Global gradient-norm clipping (default 1; 0 disables). A non-finite norm skips the update. */
  maxGradNorm?: number
  optimizer?: OptimizerKind
  adamBeta1?: number
  adamBeta2?: number
  adamEpsilon?: number
  /** SGD momentum. */
  momentum?: number
  /** Shuffling seed (default 42): the data order is a function of the seed and the epoch. */
  seed?: number
  /** Group examples of similar length into a batch (needs task.length): less padding. */
  groupByLength?: boolean
  /** Evaluate every N steps (needs task.evaluate). */
  evalSteps?: number
  /** The metric that decides the best checkpoint and early stopping (default 'loss'). */
  metricForBestModel?: string
  /** Default: false for metrics named *loss, else true. */
  greaterIsBetter?: boolean
  /** Stop after this many evaluations without improvement. */
  earlyStoppingPatience?: number
  /** An improvement must exceed this (default 0). */
  earlyStoppingThreshold?: number
  /** Where checkpoint-<step>/ directories go. */
  outputDir?: string
  /** Save a checkpoint every N steps (needs outputDir). */
  saveSteps?: number
  /** Keep only the last K checkpoints (the best one, by metricForBestModel, is kept besides). */
  saveTotalLimit?: number
  /**
   * At the end, put back the parameters of the best evaluation (metricForBestModel; needs
   * evalSteps). With outputDir they come from its checkpoint (one is written at each new best),
   * otherwise from a copy kept in memory.
   */
  loadBestModelAtEnd?: boolean
  /** A checkpoint directory to resume from, or true for the latest in outputDir (a fresh start when there is none). */
  resumeFromCheckpoint?: string | boolean
  onProgress?: (p: TrainProgress) => void
  /** Checked between steps: training stops and train() returns what was done. */
  signal?: AbortSignal
}

export interface TrainProgress {
  step: number
  totalSteps: number
  /** Epochs done, fractional. */
  epoch: number
  /** Mean loss of this step's examples. */
  loss: number
  /** The learning rate this step used. */
  lr: number
  /** Global gradient norm before clipping. */
  gradNorm: number
  /** Since this run (or resume) started. */
  tokensPerSecond: number
  etaSeconds: number
  elapsedSeconds: number
  /** The evaluation's metrics, on evaluation steps. */
  metrics?: Record<string, number>
  /** The checkpoint written, on save steps. */
  checkpoint?: string
}

export type StopReason = 'completed' | 'aborted' | 'earlyStopping'

export interface TrainResult {
  /** Optimizer steps done (counting those before a resume). */
  steps: number
  epoch: number
  stopReason: StopReason
  /** The last step's loss (NaN when no step ran). */
  finalLoss: number
  /** Loss of every step, index i = step i + 1. */
  lossHistory: number[]
  evalHistory: Array<{ step: number; metrics: Record<string, number> }>
  bestMetric?: number
  bestStep?: number
  /** loadBestModelAtEnd put back the parameters of step bestStep. */
  restoredBest: boolean
  /** The checkpoint this run continued from (resumeFromCheckpoint), and its step. */
  resumedFrom?: { step: number; checkpoint: string }
  /** Checkpoint directories in outputDir after training, oldest first. */
  checkpoints: string[]
  /** Steps whose update was skipped (non-finite gradient norm, or no loss items). */
  skippedSteps: number
  tokens: number
  seconds: number
  /** The schedule's length and warmup, as resolved from the options. */
  totalSteps: number
  warmupSteps: number
}

/** The Trainer's defaults that callers record (the settings a run used). */
export const TRAINER_DEFAULTS = { optimizer: 'adamw', maxGradNorm: 1 } as const satisfies { optimizer: OptimizerKind; maxGradNorm: number }

/** trainer_state.json. */
interface TrainerState {
  version: 1
  step: number
  totalSteps: number
  epoch: number
  /** Micro-batches of the current epoch already consumed. */
  batchInEpoch: number
  /** The current epoch's micro-batches (indices into the examples). */
  order: number[][]
  seed: number
  examples: number
  lossHistory: number[]
  evalHistory: Array<{ step: number; metrics: Record<string, number> }>
  bestMetric?: number
  bestStep?: number
  evalsWithoutImprovement: number
  skippedSteps: number
  tokens: number
  schedule: { kind: ScheduleKind; lr: number; totalSteps: number; warmupSteps: number; lastLr: number }
  optimizer: OptimizerStateMeta
}

const STATE_FILE = 'trainer_state.json'
const PARAMS_FILE = 'params.safetensors'
const OPTIMIZER_FILE = 'optimizer.safetensors'
const CHECKPOINT_RE = /^checkpoint-(\d+)$/

/** Complete checkpoint directories in `outputDir` (those holding trainer_state.json), by step. */
export function listCheckpoints(outputDir: string): Array<{ step: number; dir: string }> {
  let entries: string[]
  try {
    entries = fs.readdirSync(outputDir)
  } catch {
    return []
  }
  return entries
    .map((name) => ({ m: CHECKPOINT_RE.exec(name), name }))
    .filter((e) => e.m && fs.existsSync(path.join(outputDir, e.name, STATE_FILE)))
    .map((e) => ({ step: Number(e.m![1]), dir: path.join(outputDir, e.name) }))
    .sort((a, b) => a.step - b.step)
}

/** The latest complete checkpoint in `outputDir`, if any. */
export function latestCheckpoint(outputDir: string): string | undefined {
  return listCheckpoints(outputDir).at(-1)?.dir
}

/** Reads a checkpoint's trainer_state.json (validated enough to resume from). */
export function readTrainerState(dir: string): TrainerState {
  const file = path.join(dir, STATE_FILE)
  let s: TrainerState
  try {
    s = parseJsonBytes(readSmallFileSync(file, 'training-state')) as TrainerState
  } catch (e) {
    if (e instanceof ErnieError) throw e
    throw new ErnieError('ERR_CHECKPOINT', `${file}: cannot read the trainer state (${(e as Error).message})`, { cause: e })
  }
  if (!s || s.version !== 1 || !Number.isInteger(s.step) || !Array.isArray(s.order) || !Array.isArray(s.lossHistory) || !s.optimizer)
    throw new ErnieError('ERR_CHECKPOINT', `${file}: not a trainer state this version writes`)
  s.lossHistory = s.lossHistory.map((x) => (typeof x === 'number' ? x : NaN)) // JSON writes NaN as null
  return s
}

// A seeded uniform generator (mulberry32) for one epoch's data order.
function epochRandom(seed: number, epoch: number): () => number {
  // splitmix32 of (seed, epoch): distinct, well-mixed streams per epoch
  let z = (Math.imul(seed >>> 0, 0x9e3779b9) ^ Math.imul(epoch + 1, 0x85ebca6b)) >>> 0
  z = Math.imul(z ^ (z >>> 16), 0x7feb352d) >>> 0
  z = Math.imul(z ^ (z >>> 15), 0x846ca68b) >>> 0
  return seededRandom((z ^ (z >>> 16)) >>> 0)
}

function shuffle<T>(a: T[], next: () => number): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(next() * (i + 1))
    ;[a[i], a[j]] = [a[j], a[i]]
  }
  return a
}

/**
 * One epoch's micro-batches: the examples shuffled by (seed, epoch); with lengths, cut into
 * buckets of 50 batches whose examples are sorted by length (longest first) before being cut
 * into batches, and the batches shuffled again, so each batch holds similar lengths.
 */
export function epochBatches(count: number, batchSize: number, seed: number, epoch: number, lengths?: ArrayLike<number>): number[][] {
  const next = epochRandom(seed, epoch)
  const idx = shuffle(Array.from({ length: count }, (_, i) => i), next)
  const batches: number[][] = []
  if (!lengths) {
    for (let i = 0; i < count; i += batchSize) batches.push(idx.slice(i, i + batchSize))
    return batches
  }
  const bucket = batchSize * 50
  for (let b = 0; b < count; b += bucket) {
    const part = idx.slice(b, b + bucket).sort((x, y) => lengths[y] - lengths[x] || x - y)
    for (let i = 0; i < part.length; i += batchSize) batches.push(part.slice(i, i + batchSize))
  }
  return shuffle(batches, next)
}

function positiveInt(o: Record<string, unknown>, key: string, fallback?: number): number | undefined {
  const v = o[key] ?? fallback
  if (v === undefined) return undefined
  if (!Number.isInteger(v) || (v as number) < 1) throw rangeError(`Trainer: ${key} must be a positive integer, got ${JSON.stringify(v)}`)
  return v as number
}

function scaleAll(arrays: Iterable<Float32Array>, s: number): void {
  if (s === 1) return
  for (const a of arrays) for (let i = 0; i < a.length; i++) a[i] *= s
}

export class Trainer<E = unknown, B = unknown> {
  readonly task: TrainTask<E, B>
  readonly options: TrainerOptions
  private readonly batchSize: number
  private readonly accumulation: number
  private readonly seed: number
  private readonly context: StepContext

  constructor(task: TrainTask<E, B>, options: TrainerOptions = {}) {
    if (!task || typeof task.examples !== 'function' || typeof task.params !== 'function' || typeof task.collate !== 'function' || typeof task.lossAndGrad !== 'function')
      throw typeError('Trainer: task must implement examples(), params(), collate() and lossAndGrad()')
    const o = options as Record<string, unknown>
    resolveModelDevice(options.device, 'Trainer: device')
    this.context = { precision: options.precision === undefined ? undefined : resolvePrecision(options.precision, 'Trainer: precision') }
    this.batchSize = positiveInt(o, 'batchSize', 8)!
    this.accumulation = positiveInt(o, 'gradientAccumulationSteps', 1)!
    for (const key of ['maxSteps', 'evalSteps', 'saveSteps', 'saveTotalLimit', 'earlyStoppingPatience']) positiveInt(o, key)
    if (options.epochs !== undefined && !(options.epochs > 0 && Number.isFinite(options.epochs))) throw rangeError(`Trainer: epochs must be > 0, got ${options.epochs}`)
    const lr = options.learningRate ?? 5e-5
    if (!(lr >= 0 && Number.isFinite(lr))) throw rangeError(`Trainer: learningRate must be a finite number >= 0, got ${lr}`)
    if (options.maxGradNorm !== undefined && !(options.maxGradNorm >= 0)) throw rangeError(`Trainer: maxGradNorm must be >= 0`)
    this.seed = options.seed ?? 42
    if (!Number.isInteger(this.seed)) throw rangeError(`Trainer: seed must be an integer, got ${this.seed}`)
    if ((options.evalSteps || options.earlyStoppingPatience) && typeof task.evaluate !== 'function')
      throw typeError('Trainer: evalSteps and earlyStoppingPatience need a task with evaluate()')
    if (options.earlyStoppingPatience && !options.evalSteps) throw rangeError('Trainer: earlyStoppingPatience needs evalSteps')
    if (options.loadBestModelAtEnd && !options.evalSteps) throw rangeError('Trainer: loadBestModelAtEnd needs evalSteps')
    if ((options.saveSteps || options.resumeFromCheckpoint === true) && !options.outputDir) throw rangeError('Trainer: saveSteps and resumeFromCheckpoint: true need outputDir')
    if (options.groupByLength && typeof task.length !== 'function') throw typeError('Trainer: groupByLength needs a task with length(example)')
    if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw typeError('Trainer: signal must be an AbortSignal')
    this.task = task
    this.options = options
  }

  /** Runs the loop to the end (or until aborted / stopped early) and summarises it. */
  async train(): Promise<TrainResult> {
    const o = this.options
    const task = this.task
    const examples = task.examples()
    if (examples.length === 0) throw rangeError('Trainer: the task has no training examples')
    const params = task.params()
    const copies = task.computeCopies?.() ?? new Map<string, Uint16Array>()
    const optimizer = new Optimizer(
      params,
      {
        kind: o.optimizer ?? TRAINER_DEFAULTS.optimizer,
        beta1: o.adamBeta1,
        beta2: o.adamBeta2,
        eps: o.adamEpsilon,
        weightDecay: o.weightDecay ?? 0,
        momentum: o.momentum,
      },
      copies,
    )
    const lengths = o.groupByLength ? Float64Array.from(examples, (e) => task.length!(e)) : undefined
    const microPerEpoch = Math.ceil(examples.length / this.batchSize)
    const stepsPerEpoch = Math.ceil(microPerEpoch / this.accumulation)
    const totalSteps = o.maxSteps ?? Math.ceil((o.epochs ?? 1) * stepsPerEpoch)
    const schedule = createSchedule({ kind: o.schedule ?? 'linear', lr: o.learningRate ?? 5e-5, totalSteps, warmupSteps: o.warmupSteps, warmupRatio: o.warmupRatio })
    const metricName = o.metricForBestModel ?? 'loss'
    const greaterIsBetter = o.greaterIsBetter ?? !metricName.endsWith('loss')

    let st: TrainerState = {
      version: 1,
      step: 0,
      totalSteps,
      epoch: 0,
      batchInEpoch: 0,
      order: epochBatches(examples.length, this.batchSize, this.seed, 0, lengths),
      seed: this.seed,
      examples: examples.length,
      lossHistory: [],
      evalHistory: [],
      evalsWithoutImprovement: 0,
      skippedSteps: 0,
      tokens: 0,
      schedule: { kind: schedule.kind, lr: schedule.lr, totalSteps, warmupSteps: schedule.warmupSteps, lastLr: 0 },
      optimizer: optimizer.state().meta,
    }
    // A run killed mid-save left temporaries (or, between two renames, its newest checkpoint under
    // a hidden name): put that right before looking for the latest checkpoint.
    if (o.outputDir) await cleanUpAfterKilledWriters(o.outputDir)
    let resumedFrom: TrainResult['resumedFrom']
    if (o.resumeFromCheckpoint) {
      const dir = o.resumeFromCheckpoint === true ? latestCheckpoint(o.outputDir!) : o.resumeFromCheckpoint
      if (dir) {
        st = this.load(dir, optimizer, params, copies, examples.length)
        resumedFrom = { step: st.step, checkpoint: dir }
      }
      else if (o.resumeFromCheckpoint !== true) throw new ErnieError('ERR_CHECKPOINT', 'resumeFromCheckpoint: no checkpoint given')
    }

    const names = optimizer.names
    const grads = new Map(names.map((n) => [n, new Float32Array(params.get(n)!.length)]))
    const gradList = names.map((n) => grads.get(n)!)
    const started = performance.now()
    const stepsAtStart = st.step
    let best: Map<string, Float32Array> | undefined // the best evaluation's parameters, kept in memory without outputDir
    let tokensThisRun = 0
    let stopReason: StopReason = 'completed'

    while (st.step < totalSteps) {
      if (o.signal?.aborted) {
        stopReason = 'aborted'
        break
      }
      if (st.batchInEpoch >= st.order.length) {
        st.epoch++
        st.batchInEpoch = 0
        st.order = epochBatches(examples.length, this.batchSize, this.seed, st.epoch, lengths)
      }
      const micro = st.order.slice(st.batchInEpoch, st.batchInEpoch + this.accumulation)
      const batches = micro.map((idx) => task.collate(idx.map((i) => examples[i])))
      const lr = schedule.at(st.step)
      const { loss, tokens, norm, applied } = await this.step(batches, grads, gradList, optimizer, lr)
      for (const g of gradList) g.fill(0)
      st.batchInEpoch += micro.length
      st.step++
      st.tokens += tokens
      tokensThisRun += tokens
      st.lossHistory.push(loss)
      st.schedule.lastLr = lr
      if (!applied) st.skippedSteps++

      const progress: TrainProgress = {
        step: st.step,
        totalSteps,
        epoch: st.epoch + st.batchInEpoch / st.order.length,
        loss,
        lr,
        gradNorm: norm,
        tokensPerSecond: 0,
        etaSeconds: 0,
        elapsedSeconds: 0,
      }
      let stop = false
      if (o.evalSteps && st.step % o.evalSteps === 0) {
        const metrics = await task.evaluate!(this.context)
        const value = metrics[metricName]
        if (typeof value !== 'number') throw new ErnieError('ERR_METRIC', `evaluate() returned no "${metricName}" metric (got ${Object.keys(metrics).join(', ')})`)
        st.evalHistory.push({ step: st.step, metrics })
        progress.metrics = metrics
        const threshold = o.earlyStoppingThreshold ?? 0
        const better = st.bestMetric === undefined || (greaterIsBetter ? value > st.bestMetric + threshold : value < st.bestMetric - threshold)
        if (better) {
          st.bestMetric = value
          st.bestStep = st.step
          st.evalsWithoutImprovement = 0
        } else {
          st.evalsWithoutImprovement++
          if (o.earlyStoppingPatience && st.evalsWithoutImprovement >= o.earlyStoppingPatience) stop = true
        }
      }
      const newBest = o.loadBestModelAtEnd && st.bestStep === st.step
      if ((o.saveSteps && st.step % o.saveSteps === 0) || (newBest && o.outputDir)) {
        st.optimizer = optimizer.state().meta
        progress.checkpoint = await this.save(st, optimizer, params)
      } else if (newBest) {
        best = new Map([...params].map(([n, p]) => [n, Float32Array.from(p)]))
      }
      const elapsed = (performance.now() - started) / 1000
      progress.elapsedSeconds = elapsed
      progress.tokensPerSecond = elapsed > 0 ? tokensThisRun / elapsed : 0
      progress.etaSeconds = ((totalSteps - st.step) * elapsed) / Math.max(1, st.step - stepsAtStart)
      o.onProgress?.(progress)
      if (stop) {
        stopReason = 'earlyStopping'
        break
      }
    }

    let restoredBest = false
    if (o.loadBestModelAtEnd && st.bestStep !== undefined && st.bestStep !== st.step && stopReason !== 'aborted') {
      if (o.outputDir) this.restoreParams(path.join(o.outputDir, `checkpoint-${st.bestStep}`), params, copies)
      else if (best) for (const [n, p] of params) restore(p, best.get(n)!, copies.get(n))
      restoredBest = true
    }

    return {
      steps: st.step,
      restoredBest,
      ...(resumedFrom ? { resumedFrom } : {}),
      epoch: st.epoch + (st.order.length ? st.batchInEpoch / st.order.length : 0),
      stopReason,
      finalLoss: st.lossHistory.at(-1) ?? NaN,
      lossHistory: st.lossHistory,
      evalHistory: st.evalHistory,
      bestMetric: st.bestMetric,
      bestStep: st.bestStep,
      checkpoints: o.outputDir ? listCheckpoints(o.outputDir).map((c) => c.dir) : [],
      skippedSteps: st.skippedSteps,
      tokens: st.tokens,
      seconds: (performance.now() - started) / 1000,
      totalSteps,
      warmupSteps: schedule.warmupSteps,
    }
  }

  // One optimizer step over the given micro-batches. Each batch's gradient arrives as the
  // gradient of its own mean; weighting batch i by items_i / total makes the sum the gradient of
  // the mean over all items. The buffers are rescaled before each add (by items_prev / items_i)
  // and once at the end, so every batch ends up with its weight.
  private async step(batches: B[], grads: Map<string, Float32Array>, gradList: Float32Array[], optimizer: Optimizer, lr: number) {
    const task = this.task
    const items = batches.map((b) => (task.lossItems ? task.lossItems(b) : 1))
    const total = items.reduce((a, b) => a + b, 0)
    let tokens = 0
    let lossSum = 0
    let prev = 0
    for (let i = 0; i < batches.length; i++) {
      tokens += task.tokens ? task.tokens(batches[i]) : task.lossItems ? items[i] : 0
      if (items[i] <= 0) continue
      if (prev > 0) scaleAll(gradList, prev / items[i])
      const r = await task.lossAndGrad(batches[i], grads, this.context)
      lossSum += r.loss * items[i]
      prev = items[i]
    }
    if (total <= 0) return { loss: NaN, tokens, norm: 0, applied: false }
    scaleAll(gradList, prev / total)
    const loss = lossSum / total
    const maxNorm = this.options.maxGradNorm ?? TRAINER_DEFAULTS.maxGradNorm
    const norm = maxNorm > 0 ? await clipGradNorm({ grads: gradList, maxNorm }) : await gradNorm({ grads: gradList })
    if (!Number.isFinite(norm)) return { loss, tokens, norm, applied: false }
    await optimizer.step(grads, lr)
    return { loss, tokens, norm, applied: true }
  }

  // Writes checkpoint-<step>/ atomically, then drops the oldest beyond saveTotalLimit.
  private async save(st: TrainerState, optimizer: Optimizer, params: ReadonlyMap<string, Float32Array>): Promise<string> {
    const outputDir = this.options.outputDir!
    const dir = path.join(outputDir, `checkpoint-${st.step}`)
    const paramTensors: Record<string, TensorToSave> = {}
    for (const [name, data] of params) paramTensors[name] = { dtype: 'F32', shape: [...(this.task.paramShape?.(name) ?? [data.length])], data }
    const { tensors } = optimizer.state()
    try {
      await writeDirectoryAtomically(
        dir,
        async (tmp) => {
          await saveSafetensors(path.join(tmp, PARAMS_FILE), paramTensors, { format: 'pt' })
          await saveSafetensors(path.join(tmp, OPTIMIZER_FILE), tensors)
          await this.task.saveCheckpoint?.(tmp)
          await writeFileDurable(path.join(tmp, STATE_FILE), JSON.stringify(st) + '\n')
        },
        { keepOtherFiles: false },
      )
    } catch (err) {
      // Out of space: say which checkpoint a resume would start from.
      if (err instanceof ErnieError && err.code === 'ERR_NO_SPACE') {
        const last = latestCheckpoint(outputDir)
        throw new ErnieError('ERR_NO_SPACE', `${err.message} ${last ? `The last complete checkpoint, ${last}, is intact: resumeFromCheckpoint continues from it.` : 'No earlier checkpoint exists.'}`, { cause: err.cause })
      }
      throw err
    }
    const limit = this.options.saveTotalLimit
    if (limit) {
      // The best checkpoint is never pruned: loadBestModelAtEnd (and a user) may need it.
      const bestDir = st.bestStep === undefined ? undefined : path.join(outputDir, `checkpoint-${st.bestStep}`)
      const all = listCheckpoints(outputDir).filter((c) => c.dir !== dir && c.dir !== bestDir)
      // Renamed away first, then deleted: a crash mid-delete never leaves a partial checkpoint-<n>.
      for (const old of all.slice(0, Math.max(0, all.length - (limit - 1)))) {
        const trash = temporarySibling(old.dir, 'deleted')
        await fs.promises.rename(old.dir, trash)
        pauseForTest('checkpoint:rotating')
        await fsyncDirectory(outputDir)
        await fs.promises.rm(trash, { recursive: true, force: true })
      }
    }
    return dir
  }

  // The parameters (and their bf16 copies) of a checkpoint.
  private restoreParams(dir: string, params: ReadonlyMap<string, Float32Array>, copies: ReadonlyMap<string, Uint16Array>): void {
    const paramsFile = path.join(dir, PARAMS_FILE)
    using file = openSafetensors(paramsFile)
    for (const [name, p] of params) {
      if (!file.has(name)) throw new ErnieError('ERR_CHECKPOINT', `${paramsFile}: no tensor "${name}"`)
      const t = file.view(name)
      if (!(t instanceof Float32Array) || t.length !== p.length)
        throw new ErnieError('ERR_CHECKPOINT', `${paramsFile}: tensor "${name}" must be F32 with ${p.length} elements`)
      restore(p, t, copies.get(name))
    }
  }

  // Restores parameters (and their bf16 copies), optimiser state and loop state from a checkpoint.
  private load(
    dir: string,
    optimizer: Optimizer,
    params: ReadonlyMap<string, Float32Array>,
    copies: ReadonlyMap<string, Uint16Array>,
    exampleCount: number,
  ): TrainerState {
    const st = readTrainerState(dir)
    if (st.examples !== exampleCount)
      throw new ErnieError('ERR_CHECKPOINT', `${dir}: saved with ${st.examples} training examples, the task has ${exampleCount}`)
    this.restoreParams(dir, params, copies)
    using opt = openSafetensors(path.join(dir, OPTIMIZER_FILE))
    optimizer.loadState(st.optimizer, (name) => (opt.has(name) ? opt.view(name) : undefined), path.join(dir, OPTIMIZER_FILE))
    return st
  }
}

// A parameter set from saved values, its bf16 compute copy (if any) rounded again.
function restore(p: Float32Array, values: Float32Array, copy: Uint16Array | undefined): void {
  p.set(values)
  if (copy) f32ToBf16(p, copy)
}
