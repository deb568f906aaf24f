// Training: fit reads and labels the data, makes the head (and adapter) the method needs, builds
// its training task (features and a head, classify, or generative answers) and runs the shared
// Trainer over it, with evaluation on held-out data; the result is kept as the training record.
import * as path from 'node:path'

import { assignLabels, checkClassCounts, LabelSet, readDataset, type Dataset, type LabeledText, type ReadDataOptions } from '../data'
import { precisionRecord } from '../precision'
import { ErnieError, rangeError, typeError } from '../errors'
import { LoraAdapter, type LoraOptions } from '../model/lora'
import { listCheckpoints, Trainer, type TrainerOptions, type TrainProgress } from '../train/trainer'
import type { ClassifierCore } from './core'
import { yieldToEventLoop } from '../util/event-loop'
import { encodeTextsAsync, promptIds } from './encode'
import { Head } from './head'
import { features, probabilities } from './inference'
import { classificationMetrics, softmaxRows, type EvaluateResult } from './metrics'
import { autoMethod, checkSignal, fitDefaults, resolveClassWeights, type FitOptions, type FitProgress, type Method } from './options'
import type { DataSummary, EvalRecord, FitResult, StepRecord } from './results'
import { trainingSettings } from './settings'
import type { TrainingSettings } from './format'
import { ClassifyTask, FeatureHeadTask, GenerativeTask, type Evaluator } from './tasks'

/** ErnieClassifier.fit: checks the options, waits for running predictions, and trains. */
export async function fitClassifier(core: ClassifierCore, data: string | readonly LabeledText[], options: FitOptions): Promise<FitResult> {
  if (options === null || typeof options !== 'object') throw typeError('fit: options must be an object')
  checkSignal(options.signal, 'fit')
  if (options.onProgress !== undefined && typeof options.onProgress !== 'function') throw typeError('fit: onProgress must be a function')
  checkOutputDir(options)
  await core.ensureReady()
  if (core.disposed) throw new ErnieError('ERR_DISPOSED', 'this ErnieClassifier has been disposed')
  if (core.busy) throw new ErnieError('ERR_BUSY', 'fit: the classifier is already training')
  core.busy = true
  try {
    // predictions already running finish on the weights they started with
    if (core.running.size > 0) await Promise.allSettled([...core.running])
    return await core.track(runFit(core, data, options))
  } finally {
    core.busy = false
  }
}

// A run's checkpoints are not overwritten by another: an output directory holding some is
// refused before training starts, unless the run resumes from them.
function checkOutputDir(o: FitOptions): void {
  if (o.loadBestModelAtEnd && o.evalData === undefined) throw rangeError('fit: loadBestModelAtEnd needs evalData')
  if (o.outputDir === undefined) {
    if (o.saveSteps !== undefined || o.resume) throw rangeError('fit: saveSteps and resume need outputDir')
    return
  }
  if (typeof o.outputDir !== 'string' || o.outputDir === '') throw typeError('fit: outputDir must be a directory path')
  if (!o.resume && listCheckpoints(o.outputDir).length > 0)
    throw new ErnieError('ERR_EXISTS', `fit: ${path.resolve(o.outputDir)} holds checkpoints of another run; pass resume: true to continue it, or choose an empty directory`)
}

async function runFit(core: ClassifierCore, data: string | readonly LabeledText[], o: FitOptions): Promise<FitResult> {
  const started = performance.now()
  const { model, tok } = core.requireModel()
  const onInvalid = o.onInvalid ?? 'error'
  const read: ReadDataOptions = { onInvalid, format: o.format, textField: o.textField, labelField: o.labelField }
  const trainDs = await readDataset(data, { ...read, name: 'data' })
  const evalDs = o.evalData !== undefined ? await readDataset(o.evalData, { ...read, name: 'evalData' }) : undefined

  const labelSet = core.labelSet ?? LabelSet.infer(trainDs.examples, trainDs.source)
  const train = assignLabels(trainDs, labelSet, 'train', onInvalid)
  const counts = checkClassCounts(train.labels, labelSet, trainDs.source, o.minExamplesPerClass ?? 2)
  const evalSet = evalDs ? assignLabels(evalDs, labelSet, 'eval', onInvalid) : undefined
  if (evalDs && evalSet!.texts.length === 0) throw new ErnieError('ERR_DATA', `${evalDs.source}: no evaluation examples`)
  // 'auto' is decided by the first fit's data; a later fit continues with the same method
  const method = (core.method_ ??= autoMethod(train.texts.length, model.numParameters, core.headSpec))
  core.labelSet = labelSet
  const C = labelSet.size
  const classWeights = resolveClassWeights(o.classWeights, labelSet, counts)

  const H = model.config.hidden_size
  if (method !== 'generative') {
    if (core.head && core.head.classes !== C) throw new ErnieError('ERR_STATE', `fit: the classifier has ${core.head.classes} classes, the data ${C}`)
    core.head ??= Head.create(method === 'head' ? core.headSpec : { kind: 'linear' }, H, C, core.seed)
  }
  const loraOptions: LoraOptions = { r: 8, alpha: 16, ...core.o.lora, seed: core.o.lora?.seed ?? core.seed }
  const loraTuning = method === 'lora' || (method === 'generative' && core.generative().tuning === 'lora')
  if (loraTuning && !core.adapter) core.adapter = LoraAdapter.create(model, loraOptions)

  const summary = (ds: Dataset, examples: number, withCounts: boolean): DataSummary => ({
    source: ds.source,
    examples,
    skipped: ds.skipped,
    ...(withCounts ? { classCounts: Object.fromEntries(labelSet.names.map((n, k) => [n, counts[k]])) } : {}),
  })
  const dataSummary = { train: summary(trainDs, train.texts.length, true), ...(evalDs ? { eval: summary(evalDs, evalSet!.texts.length, false) } : {}) }

  const defaults = fitDefaults(method, model.numParameters, loraTuning)
  const batchSize = o.batchSize ?? defaults.batchSize
  const accumulation = o.gradientAccumulationSteps ?? 1
  const stepsPerEpoch = Math.ceil(Math.ceil(train.texts.length / batchSize) / accumulation)
  const history: StepRecord[] = []
  const evalHistory: EvalRecord[] = []
  const emit = (p: FitProgress) => o.onProgress?.(p)
  const aborted = (): FitResult => finishFit(core, method, started, 'aborted', history, evalHistory, dataSummary, o, 0, 0, NaN, undefined)

  // The evaluation the Trainer runs every evalSteps, and the final one.
  let evalFeatures: Float32Array | undefined
  const evaluateHeld = async (): Promise<EvaluateResult> => {
    if (method === 'head' && evalFeatures) return classificationMetrics(evalSet!.labels, softmaxRows(await core.head!.logits(evalFeatures, evalSet!.texts.length), C), labelSet.names)
    return classificationMetrics(evalSet!.labels, (await probabilities(core, evalSet!.texts, 32))!, labelSet.names)
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
    const feats = await features(core, train.texts, 32, { signal: o.signal, onBatch: onBatch(0) })
    if (!feats) return aborted()
    if (evalSet) {
      evalFeatures = await features(core, evalSet.texts, 32, { signal: o.signal, onBatch: onBatch(train.texts.length) })
      if (!evalFeatures) return aborted()
    }
    // the standardisation is fixed by the first training run: a refit continues the same head
    if (!core.head!.featureMean) core.head!.fitStandardization(feats, train.texts.length)
    task = new FeatureHeadTask(core.head!, feats, train.labels, classWeights, evaluator)
  } else if (method === 'generative') {
    const g = core.generative()
    const prompts = promptIds(tok, g.parts, train.texts, core.promptRoom(g), core.truncation)
    const examples = prompts.map((p, i) => {
      const a = g.answers[train.labels[i]]
      return { inputIds: [...p, ...a], labels: [...p.map(() => -100), ...a] }
    })
    await yieldToEventLoop()
    task = new GenerativeTask(
      model,
      { train: examples, adapter: core.adapter, fullTraining: g.tuning === 'full', padTokenId: core.padId(), recompute: o.recompute },
      evaluator,
    )
  } else {
    const rows = await encodeTextsAsync(tok, train.texts, core.encodeSettings(), o.signal, () => core.encodeThread())
    if (!rows) return aborted()
    task = new ClassifyTask(model, core.head!, {
      train: rows.map((ids, i) => ({ ids, label: train.labels[i] })),
      adapter: core.adapter,
      trainBase: method === 'full',
      pooling: core.pooling,
      classWeights,
      padTokenId: core.padId(),
      recompute: o.recompute,
      evaluator,
    })
  }

  const trainerOptions: TrainerOptions = {
    precision: core.precision,
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
    adamBeta1: o.adamBeta1,
    adamBeta2: o.adamBeta2,
    adamEpsilon: o.adamEpsilon,
    momentum: o.momentum,
    seed: o.seed ?? core.seed,
    groupByLength: method !== 'head',
    evalSteps: evalSet ? (o.evalSteps ?? stepsPerEpoch) : undefined,
    earlyStoppingPatience: evalSet ? o.earlyStoppingPatience : undefined,
    earlyStoppingThreshold: o.earlyStoppingThreshold,
    metricForBestModel: o.metricForBestModel,
    loadBestModelAtEnd: o.loadBestModelAtEnd,
    outputDir: o.outputDir,
    saveSteps: o.saveSteps,
    saveTotalLimit: o.saveTotalLimit,
    resumeFromCheckpoint: o.resume,
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
  core.metrics_ = metrics ?? core.metrics_
  const settings = trainingSettings(core, method, trainerOptions, result, { classWeights, recompute: o.recompute })
  const fit = finishFit(core, method, started, result.stopReason, history, evalHistory, dataSummary, o, result.steps, result.epoch, result.finalLoss, metrics, settings)
  return result.resumedFrom ? { ...fit, resumedFrom: result.resumedFrom } : fit
}

// Keeps the training record and returns fit's result.
function finishFit(
  core: ClassifierCore,
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
  settings?: TrainingSettings,
): FitResult {
  const seconds = (performance.now() - started) / 1000
  const { onProgress: _p, signal: _s, evalData: _e, ...rest } = o
  const options = { ...rest, ...(typeof o.evalData === 'string' ? { evalData: o.evalData } : {}) }
  core.training = { options, ...(settings ? { settings } : {}), steps, epochs, stopReason, seconds, history, evalHistory, data, precision: precisionRecord(core.precision) }
  return { method, steps, epochs, stopReason, seconds, finalLoss, history, evalHistory, metrics, data }
}
