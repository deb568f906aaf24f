// Pre-training (PT): next-token language modelling on raw text, from random weights or (continued
// pre-training) from a checkpoint given as `base`. Documents
// (one per line) are tokenised, each followed by EOS, shuffled and packed into rows of
// seqLength tokens; attention stays inside each document (segment ids), so packing changes
// what a step computes only by removing padding. Every weight trains (full training, fp32
// masters, bf16 compute) on the shared Trainer loop; a held-out share of the documents gives
// the evaluation loss. The output directory is a model directory ErnieModel.fromPretrained and
// ErnieClassifier read: config.json, model.safetensors (bf16), the tokenizer's files, and
// pretrain_log.json (the settings, the corpus, the loss curve, the wall time).
import { parseJsonBytes } from '../io/json'
import * as fs from 'node:fs'
import * as path from 'node:path'

import { DataError } from '../data/errors'
import { byteLines, decodeUtf8, firstInvalidUtf8 } from '../data/lines'
import { ErnieError, rangeError, typeError } from '../errors'
import { pauseForTest } from '../io/test-pause'
import { cleanUpAfterKilledWriters, replaceFileAtomically } from '../io/atomic'
import type { ModelConfig } from '../model/config'
import { ErnieModel } from '../model/model'
import type { Device } from '../device'
import { precisionRecord, type Precision } from '../precision'
import { copyModelFiles, type Tokenizer } from '../tokenizer'
import { yieldToEventLoop } from '../util/event-loop'
import { seededRandom } from '../util/random'
import { DocumentPacker, LmTask, type LmExample } from './lm'
import { Trainer, type TrainProgress, type TrainResult } from './trainer'
import { readSmallFile } from '../io/read'

export interface PretrainOptions {
  /** Text files, one document per line; blank lines are skipped. */
  textFiles: readonly string[]
  /**
   * Continue pre-training this checkpoint (a directory or a hub id) instead of starting from
   * random weights: its config and tokenizer are used (a `tokenizer` given as well must be the
   * same vocabulary), and the learning rate defaults to 1e-4.
   */
  base?: string
  /** The tokenizer the model is trained for (required without `base`); its files are copied from `tokenizerDir`. */
  tokenizer?: Tokenizer
  tokenizerDir?: string
  /** The architecture (config.json keys; required without `base`); vocab_size must cover the tokenizer. */
  config?: ModelConfig | Record<string, unknown>
  /** Where the model directory is written (and checkpoints/, for resuming). */
  outputDir: string
  /** Tokens per packed row (default 256). */
  seqLength?: number
  /** Rows per optimizer step (default 32). */
  batchSize?: number
  /** Passes over the training documents (default 1); maxSteps takes precedence. */
  epochs?: number
  maxSteps?: number
  /** Peak learning rate of the cosine schedule (default 1e-3 from random weights, 1e-4 from a `base`). */
  learningRate?: number
  /** Linear warmup steps (default 100). */
  warmupSteps?: number
  /** AdamW decoupled weight decay (default 0.1); AdamW betas (0.9, 0.95). */
  weightDecay?: number
  /** Documents held out for the evaluation loss (default 500). */
  evalDocuments?: number
  /** Evaluate every N steps (default 100), and at the end. */
  evalSteps?: number
  /** Checkpoint every N steps into outputDir/checkpoints (default 200; 0: never). */
  saveSteps?: number
  /** Continue from the latest checkpoint in outputDir/checkpoints, when there is one. */
  resume?: boolean
  /** Initial weights' standard deviation (default: the config's initializer_range, else 0.02). */
  initStd?: number
  /** Seeds the weights, the document order and the held-out split (default 0). */
  seed?: number
  /** Of the matrix products (README "Precision"); default ERNIE_PRECISION, else 'auto'. */
  precision?: Precision
  /** Where the model runs: 'cpu', 'cuda' or 'auto' (default, or ERNIE_DEVICE). */
  device?: Device
  onProgress?: (p: TrainProgress) => void
  signal?: AbortSignal
}

export interface CorpusStats {
  files: string[]
  documents: number
  trainDocuments: number
  evalDocuments: number
  trainTokens: number
  rows: number
}

export interface PretrainResult {
  outputDir: string
  corpus: CorpusStats
  train: TrainResult
  /** Mean next-token loss on the held-out documents at the end. */
  evalLoss: number
  seconds: number
}

export const PRETRAIN_LOG_FILE = 'pretrain_log.json'

/** Every non-blank line of the files, as text; invalid UTF-8 is an error naming the file and line. */
export async function readDocuments(files: readonly string[]): Promise<string[]> {
  const docs: string[] = []
  for (const file of files) {
    if (!fs.statSync(file, { throwIfNoEntry: false })?.isFile()) throw new DataError(file, undefined, 'no such file')
    for await (const { line, bytes } of byteLines(file)) {
      const bad = firstInvalidUtf8(bytes)
      if (bad >= 0) throw new DataError(file, line, `invalid UTF-8 at byte ${bad} of the line`)
      const text = decodeUtf8(bytes).trim()
      if (text.length > 0) docs.push(text)
    }
  }
  return docs
}

// Resuming a run that finished (its model and log written, its checkpoints removed) would start
// again from step 0 without a word: that is refused instead.
async function refuseFinishedRun(outputDir: string): Promise<void> {
  const logFile = path.join(outputDir, PRETRAIN_LOG_FILE)
  if (fs.existsSync(path.join(outputDir, 'checkpoints')) || !fs.existsSync(logFile)) return
  let log: { steps?: unknown; stopReason?: unknown }
  try {
    log = (parseJsonBytes(await readSmallFile(logFile, 'training-state')) ?? {}) as typeof log
  } catch {
    return // an unreadable log is no evidence of a finished run
  }
  if (log.stopReason === 'completed')
    throw new ErnieError(
      'ERR_RUN_FINISHED',
      `pretrain: ${path.resolve(outputDir)} holds a finished run (${logFile}: ${log.steps} steps, completed); there is nothing to resume. Choose another output directory to train again`,
    )
}

/** Pre-trains a model from random weights, or continues a `base` checkpoint's; see the module comment. */
export async function pretrain(o: PretrainOptions): Promise<PretrainResult> {
  if (!o || !Array.isArray(o.textFiles) || o.textFiles.length === 0) throw typeError('pretrain: textFiles must be a non-empty array of paths')
  if (typeof o.outputDir !== 'string' || o.outputDir === '') throw typeError('pretrain: outputDir must be a path')
  if (o.base === undefined && (!o.tokenizer || typeof o.tokenizerDir !== 'string' || !o.config))
    throw typeError('pretrain: without base, tokenizer, tokenizerDir and config are required')
  const seqLength = o.seqLength ?? 256
  const seed = o.seed ?? 0
  const learningRate = o.learningRate ?? (o.base === undefined ? 1e-3 : 1e-4)
  const started = Date.now()
  // A run killed while saving the model left temporaries beside it.
  await cleanUpAfterKilledWriters(o.outputDir)
  if (o.resume) await refuseFinishedRun(o.outputDir)

  const model = o.base === undefined
    ? ErnieModel.random(o.config!, { seed, std: o.initStd, precision: o.precision, device: o.device })
    : await ErnieModel.fromPretrained(o.base, { precision: o.precision, device: o.device })
  try {
    const { tokenizer, tokenizerDir } = tokenizerFor(o, model)
    const eos = tokenizer.eosTokenId
    if (eos === undefined) throw rangeError('pretrain: the tokenizer has no EOS token to separate documents')
    return await train(o, model, tokenizer, tokenizerDir, eos, { seqLength, seed, learningRate, started })
  } finally {
    await model.dispose()
  }
}

// The base's own tokenizer, or the one given: with a base, the same vocabulary, id for id (a
// different tokenizer would feed the trained embeddings the wrong rows).
function tokenizerFor(o: PretrainOptions, model: ErnieModel): { tokenizer: Tokenizer; tokenizerDir: string } {
  if (o.base === undefined) return { tokenizer: o.tokenizer!, tokenizerDir: o.tokenizerDir! }
  const own = model.tokenizer
  if (!o.tokenizer) {
    if (!own || !model.directory) throw new ErnieError('ERR_NO_TOKENIZER', `pretrain: the base ${o.base} has no tokenizer; pass tokenizer and tokenizerDir`)
    return { tokenizer: own, tokenizerDir: model.directory }
  }
  if (typeof o.tokenizerDir !== 'string') throw typeError('pretrain: tokenizerDir is required with tokenizer')
  if (own) {
    const n = Math.max(own.vocabSize, o.tokenizer.vocabSize)
    for (let id = 0; id < n; id++)
      if (own.idToPiece(id) !== o.tokenizer.idToPiece(id))
        throw new ErnieError(
          'ERR_TOKENIZER_MISMATCH',
          `pretrain: the tokenizer in ${o.tokenizerDir} is not the base's (${o.base}): id ${id} is ${JSON.stringify(o.tokenizer.idToPiece(id))} there, ${JSON.stringify(own.idToPiece(id))} in the base`,
        )
  }
  return { tokenizer: o.tokenizer, tokenizerDir: o.tokenizerDir }
}

interface RunSettings {
  seqLength: number
  seed: number
  learningRate: number
  started: number
}

async function train(o: PretrainOptions, model: ErnieModel, tokenizer: Tokenizer, tokenizerDir: string, eos: number, run: RunSettings): Promise<PretrainResult> {
  const { seqLength, seed, learningRate, started } = run
  const texts = await readDocuments(o.textFiles)
  const heldOut = Math.min(o.evalDocuments ?? 500, Math.floor(texts.length / 10))
  // One shuffle decides the held-out split and the packing order.
  const random = seededRandom(seed)
  for (let i = texts.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[texts[i], texts[j]] = [texts[j], texts[i]]
  }
  // Tokenized 1024 documents at a time, each chunk packed at once (the documents' ids are never
  // all held), with the event loop running between chunks.
  const pack = async (first: number, end: number): Promise<LmExample[]> => {
    const packer = new DocumentPacker(seqLength, eos)
    for (let i = first; i < end; i += 1024) {
      for (const doc of tokenizer.encodeBatch(texts.slice(i, Math.min(i + 1024, end))).inputIds) packer.add(doc)
      await yieldToEventLoop()
    }
    return packer.finish()
  }
  const evalRows = await pack(0, heldOut)
  const train = await pack(heldOut, texts.length)
  const corpus: CorpusStats = {
    files: o.textFiles.map((f) => path.basename(f)),
    documents: texts.length,
    trainDocuments: texts.length - heldOut,
    evalDocuments: heldOut,
    trainTokens: train.reduce((n, r) => n + r.inputIds.length, 0),
    rows: train.length,
  }

  {
    if (model.config.vocab_size < tokenizer.vocabSize) throw rangeError(`pretrain: vocab_size ${model.config.vocab_size} is smaller than the tokenizer's ${tokenizer.vocabSize} tokens`)
    const task = new LmTask(model, { train, eval: evalRows, fullTraining: true, maxLength: seqLength, evalBatchSize: 16 })
    const trainer = new Trainer(task, {
      epochs: o.epochs ?? 1,
      maxSteps: o.maxSteps,
      batchSize: o.batchSize ?? 32,
      learningRate,
      schedule: 'cosine',
      warmupSteps: o.warmupSteps ?? 100,
      weightDecay: o.weightDecay ?? 0.1,
      adamBeta2: 0.95,
      maxGradNorm: 1,
      seed,
      evalSteps: o.evalSteps === 0 ? undefined : (o.evalSteps ?? 100),
      outputDir: path.join(o.outputDir, 'checkpoints'),
      saveSteps: o.saveSteps === 0 ? undefined : (o.saveSteps ?? 200),
      saveTotalLimit: 1,
      resumeFromCheckpoint: o.resume === true,
      onProgress: o.onProgress,
      signal: o.signal,
    })
    const result = await trainer.train()
    const { loss: evalLoss } = await task.evaluate()

    pauseForTest('pretrain:final-save')
    await model.save(o.outputDir)
    await copyModelFiles(tokenizerDir, o.outputDir)
    const seconds = (Date.now() - started) / 1000
    const log = {
      corpus,
      settings: {
        seqLength,
        batchSize: o.batchSize ?? 32,
        epochs: o.epochs ?? 1,
        maxSteps: o.maxSteps ?? null,
        learningRate,
        warmupSteps: o.warmupSteps ?? 100,
        weightDecay: o.weightDecay ?? 0.1,
        ...(o.base === undefined ? { initStd: o.initStd ?? (model.config.initializer_range as number | undefined) ?? 0.02 } : { base: o.base }),
        seed,
        precision: precisionRecord(model.precision),
      },
      steps: result.steps,
      stopReason: result.stopReason,
      tokens: result.tokens,
      trainSeconds: result.seconds,
      seconds,
      finalLoss: result.finalLoss,
      evalLoss,
      lossHistory: result.lossHistory.map((l) => Number(l.toFixed(4))),
      evalHistory: result.evalHistory,
    }
    const logFile = path.join(o.outputDir, PRETRAIN_LOG_FILE)
    await replaceFileAtomically(logFile, JSON.stringify(log, null, 1) + '\n')
    // Only now, with the model and its log on disk, is the checkpoint no longer needed: a kill at
    // any moment before this leaves either the last checkpoint or the finished model.
    if (result.stopReason === 'completed') await fs.promises.rm(path.join(o.outputDir, 'checkpoints'), { recursive: true, force: true })
    return { outputDir: o.outputDir, corpus, train: result, evalLoss, seconds }
  }
}
