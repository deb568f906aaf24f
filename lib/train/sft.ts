// Conversational SFT with LoRA: the ERNIE-4.5-0.3B-Base chat recipe (Unsloth + TRL; the seeds'
// 002 write-up) in one call. Chat records are read (lib/data/chat.ts), a share held out for
// evaluation when no eval data is given, encoded with the base's chat template, labelled on the
// assistant's turns, packed into rows (chat-pack.ts), and a LoRA adapter trained on them by the
// shared Trainer, with evaluation, checkpoints, early stopping and the best evaluation's weights
// put back. The output directory is a PEFT adapter directory with the tokenizer beside it (the
// base's, with any markers the template added: what chat needs), and sft_log.json: settings, data
// counts, loss curve, wall time.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { readChatData, splitByRatio, type ChatDataset, type Conversation } from '../data/chat'
import type { OnInvalid, SkipReport } from '../data/read'
import { AbortError, ErnieError, rangeError, typeError } from '../errors'
import { replaceFileAtomically } from '../io/atomic'
import { LoraAdapter, type LoraOptions } from '../model/lora'
import { ErnieModel } from '../model/model'
import { PROJECTIONS, type Projection } from '../model/projections'
import { precisionRecord } from '../precision'
import type { Tokenizer } from '../tokenizer/tokenizer'
import type { ChatLossOn, ChatEncodeOptions } from './chat-encode'
import { prepareChatExamples, type ChatOverlong, type ChatPrepareStats } from './chat-pack'
import { LmTask } from './lm'
import { Trainer, type TrainerOptions, type TrainResult } from './trainer'

/** The recipe's settings (seeds/002): what sft() uses where an option is not given. */
export const SFT_DEFAULTS = {
  lora: { r: 16, alpha: 64, targetModules: [...PROJECTIONS] as Projection[] },
  optimizer: 'adamw8bit',
  learningRate: 5e-5,
  schedule: 'cosine',
  warmupSteps: 100,
  weightDecay: 0.01,
  maxGradNorm: 1,
  batchSize: 32,
  gradientAccumulationSteps: 2,
  epochs: 5,
  maxLength: 4096,
  evalRatio: 0.1,
  evalSteps: 50,
  saveSteps: 50,
  saveTotalLimit: 3,
  earlyStoppingPatience: 5,
  loadBestModelAtEnd: true,
  recompute: true,
  lossOn: 'assistant',
  overlong: 'truncate',
  packing: true,
  seed: 42,
} as const satisfies Partial<TrainerOptions> & Record<string, unknown>

export const SFT_LOG_FILE = 'sft_log.json'

/** The Trainer's settings sft() passes through (defaults: SFT_DEFAULTS). */
export type SftTrainerOptions = Pick<
  TrainerOptions,
  | 'epochs'
  | 'maxSteps'
  | 'batchSize'
  | 'gradientAccumulationSteps'
  | 'learningRate'
  | 'schedule'
  | 'warmupSteps'
  | 'warmupRatio'
  | 'weightDecay'
  | 'maxGradNorm'
  | 'optimizer'
  | 'adamBeta1'
  | 'adamBeta2'
  | 'adamEpsilon'
  | 'evalSteps'
  | 'saveSteps'
  | 'saveTotalLimit'
  | 'earlyStoppingPatience'
  | 'loadBestModelAtEnd'
  | 'seed'
  | 'precision'
  | 'device'
  | 'onProgress'
  | 'signal'
>

export interface SftOptions extends SftTrainerOptions {
  /** Chat records: a JSON Lines file or an array (the shapes readChatData reads). */
  data: string | readonly object[]
  /** Held-out chat records; without them, evalRatio of data is held out. */
  evalData?: string | readonly object[]
  /** The share of data held out when no evalData is given (default 0.1; 0: no evaluation). */
  evalRatio?: number
  /** The base model: a directory or a hub id. Its tokenizer's chat template renders the data. */
  base: string
  /** The PEFT adapter directory to write (and checkpoints/ in it). */
  outputDir: string
  /** The system message of records that have none. */
  systemPrompt?: string
  /** 'error' (default) or 'skip' bad records, counted (readChatData). */
  onInvalid?: OnInvalid
  /** Which turns are learnt: 'assistant' (default), 'last', 'all'. */
  lossOn?: ChatLossOn
  /**
   * The chat template (default: the base tokenizer's): 'ernie', 'chatml', 'qwen3' or Jinja text.
   * A built-in template's markers that the base's vocabulary lacks (ChatML on ERNIE-4.5 Base, as
   * the recipe trains it) are added as special tokens, their embedding rows trained beside the
   * adapter (PEFT's trainable_token_indices); the output's tokenizer has them and the template.
   */
  template?: ChatEncodeOptions['template']
  /** Tokens per row (default 4096, at most the model's max_position_embeddings). */
  maxLength?: number
  /** A conversation longer than maxLength: 'truncate' its oldest exchanges (default) or 'drop' it. */
  overlong?: ChatOverlong
  /** Several conversations per row (default true). */
  packing?: boolean
  /** Default r 16, alpha 64 on all seven projections. */
  lora?: LoraOptions
  /** Gradient checkpointing (default true). */
  recompute?: boolean
  /** Continue from the latest checkpoint in outputDir/checkpoints, when there is one. */
  resume?: boolean
}

/** What was read and prepared of one data set. */
export interface SftDataReport extends ChatPrepareStats {
  source: string
  skipped: SkipReport
}

export interface SftResult {
  outputDir: string
  data: { train: SftDataReport; eval?: SftDataReport }
  train: TrainResult
  /** Token-level loss and perplexity on the held-out conversations at the end (their answer tokens). */
  eval?: { loss: number; perplexity: number }
  seconds: number
}

function checkOptions(o: SftOptions): void {
  if (!o || (typeof o.data !== 'string' && !Array.isArray(o.data))) throw typeError('sft: data must be a file path or an array of chat records')
  if (typeof o.base !== 'string' || o.base === '') throw typeError('sft: base must be a model directory or a hub id')
  if (typeof o.outputDir !== 'string' || o.outputDir === '') throw typeError('sft: outputDir must be a path')
  if (o.evalRatio !== undefined && !(o.evalRatio >= 0 && o.evalRatio < 1)) throw rangeError(`sft: evalRatio must be in [0, 1), got ${o.evalRatio}`)
  if (o.maxLength !== undefined && !(Number.isInteger(o.maxLength) && o.maxLength >= 2)) throw rangeError(`sft: maxLength must be an integer >= 2, got ${o.maxLength}`)
}

/** The train and eval conversations: evalData read, or a seeded share of data held out. */
async function readSplits(o: SftOptions): Promise<{ train: ChatDataset; eval?: ChatDataset; trainConversations: Conversation[]; evalConversations: Conversation[] }> {
  const read = { onInvalid: o.onInvalid, systemPrompt: o.systemPrompt }
  const train = await readChatData(o.data, read)
  if (train.conversations.length === 0) throw new ErnieError('ERR_DATA', `sft: ${train.source} holds no conversation to train on`)
  if (o.evalData !== undefined) {
    const evalSet = await readChatData(o.evalData, { ...read, name: 'evalData' })
    return { train, eval: evalSet, trainConversations: train.conversations, evalConversations: evalSet.conversations }
  }
  const ratio = o.evalRatio ?? SFT_DEFAULTS.evalRatio
  if (ratio === 0) return { train, trainConversations: train.conversations, evalConversations: [] }
  if (train.conversations.length < 2)
    throw rangeError(`sft: ${train.source} holds ${train.conversations.length} conversation: too few to hold out ${ratio} of it for evaluation (give evalData, or evalRatio: 0)`)
  const split = splitByRatio(train.conversations, ratio, o.seed ?? SFT_DEFAULTS.seed)
  return { train, trainConversations: split.train, evalConversations: split.eval }
}

/** How the base is named in the adapter's config: a directory by its absolute path, a hub id as given. */
function baseName(base: string): string {
  return fs.statSync(base, { throwIfNoEntry: false })?.isDirectory() ? path.resolve(base) : base
}

/** The embedding rows a trainableTokenIndices option names (a list, or per table). */
function tokenIdsOf(indices: LoraOptions['trainableTokenIndices']): number[] {
  return indices === undefined ? [] : Array.isArray(indices) ? indices : Object.values(indices).flat()
}

/**
 * The base and the tokenizer the data is encoded with: the base's own, or, when the template's
 * markers are not special tokens of it, one with them added (withSpecialTokens) and the base
 * loaded with it (grown, when their ids pass its rows).
 */
async function baseWithTemplateTokens(o: SftOptions): Promise<{ model: ErnieModel; tokenizer: Tokenizer; addedTokens: number[] }> {
  const load = { precision: o.precision, device: o.device }
  const model = await ErnieModel.fromPretrained(o.base, load)
  const base = model.requireTokenizer('sft')
  const missing = o.template === undefined ? [] : base.missingChatTokens(o.template)
  if (missing.length === 0) return { model, tokenizer: base, addedTokens: [] }
  const tokenizer = base.withSpecialTokens(missing)
  const addedTokens = missing.map((content) => tokenizer.pieceToId(content)!)
  await model.dispose()
  return { model: await ErnieModel.fromPretrained(o.base, { ...load, tokenizer }), tokenizer, addedTokens }
}

/** Trains a LoRA adapter on conversations, the recipe of the module comment; see SftOptions. */
export async function sft(o: SftOptions): Promise<SftResult> {
  checkOptions(o)
  const started = Date.now()
  const splits = await readSplits(o)
  const { model, tokenizer, addedTokens } = await baseWithTemplateTokens(o)
  let adapter: LoraAdapter | undefined
  try {
    const maxLength = o.maxLength ?? Math.min(SFT_DEFAULTS.maxLength, model.config.max_position_embeddings ?? SFT_DEFAULTS.maxLength)
    const prepare = (conversations: Conversation[]) =>
      prepareChatExamples(tokenizer, conversations, {
        maxLength,
        lossOn: o.lossOn ?? SFT_DEFAULTS.lossOn,
        template: o.template,
        overlong: o.overlong ?? SFT_DEFAULTS.overlong,
        packing: o.packing ?? SFT_DEFAULTS.packing,
        signal: o.signal,
      })
    const train = await prepare(splits.trainConversations)
    const held = splits.evalConversations.length > 0 ? await prepare(splits.evalConversations) : undefined
    if (!train || (splits.evalConversations.length > 0 && !held)) throw new AbortError('sft: preparing the data', o.signal!)
    if (train.examples.length === 0) throw new ErnieError('ERR_DATA', `sft: every training conversation is longer than maxLength ${maxLength} tokens (${train.stats.dropped} dropped)`)
    const evaluating = held !== undefined && held.examples.length > 0
    const report = (set: ChatDataset, stats: ChatPrepareStats): SftDataReport => ({ source: set.source, skipped: set.skipped, ...stats })
    const data = { train: report(splits.train, train.stats), ...(held ? { eval: report(splits.eval ?? splits.train, held.stats) } : {}) }

    adapter = LoraAdapter.create(model, {
      ...SFT_DEFAULTS.lora,
      seed: o.seed ?? SFT_DEFAULTS.seed,
      ...o.lora,
      ...(addedTokens.length > 0 ? { trainableTokenIndices: [...new Set([...addedTokens, ...tokenIdsOf(o.lora?.trainableTokenIndices)])] } : {}),
    })
    adapter.baseModel = baseName(o.base)
    const task = new LmTask(model, { train: train.examples, eval: evaluating ? held!.examples : undefined, adapter, maxLength, recompute: o.recompute ?? SFT_DEFAULTS.recompute })
    const settings = {
      epochs: o.epochs ?? SFT_DEFAULTS.epochs,
      maxSteps: o.maxSteps,
      batchSize: o.batchSize ?? SFT_DEFAULTS.batchSize,
      gradientAccumulationSteps: o.gradientAccumulationSteps ?? SFT_DEFAULTS.gradientAccumulationSteps,
      learningRate: o.learningRate ?? SFT_DEFAULTS.learningRate,
      schedule: o.schedule ?? SFT_DEFAULTS.schedule,
      warmupSteps: o.warmupSteps ?? (o.warmupRatio === undefined ? SFT_DEFAULTS.warmupSteps : undefined),
      warmupRatio: o.warmupRatio,
      weightDecay: o.weightDecay ?? SFT_DEFAULTS.weightDecay,
      maxGradNorm: o.maxGradNorm ?? SFT_DEFAULTS.maxGradNorm,
      optimizer: o.optimizer ?? SFT_DEFAULTS.optimizer,
      adamBeta1: o.adamBeta1,
      adamBeta2: o.adamBeta2,
      adamEpsilon: o.adamEpsilon,
      seed: o.seed ?? SFT_DEFAULTS.seed,
      // Evaluation and what hangs on it only with held-out data.
      evalSteps: evaluating ? (o.evalSteps ?? SFT_DEFAULTS.evalSteps) : undefined,
      earlyStoppingPatience: evaluating ? (o.earlyStoppingPatience ?? SFT_DEFAULTS.earlyStoppingPatience) : undefined,
      loadBestModelAtEnd: evaluating ? (o.loadBestModelAtEnd ?? SFT_DEFAULTS.loadBestModelAtEnd) : undefined,
      saveSteps: o.saveSteps ?? SFT_DEFAULTS.saveSteps,
      saveTotalLimit: o.saveTotalLimit ?? SFT_DEFAULTS.saveTotalLimit,
    } satisfies TrainerOptions
    const result = await new Trainer(task, {
      ...settings,
      precision: o.precision,
      outputDir: path.join(o.outputDir, 'checkpoints'),
      resumeFromCheckpoint: o.resume === true,
      onProgress: o.onProgress,
      signal: o.signal,
    }).train()
    const evalMetrics = evaluating ? ((await task.evaluate()) as { loss: number; perplexity: number }) : undefined

    // The adapter (atomically), the tokenizer beside it, then the log that says the run is done.
    await adapter.save(o.outputDir)
    await tokenizer.save(o.outputDir)
    // The template the run trained with is the output's own, so that chat renders the same.
    if (o.template !== undefined) await replaceFileAtomically(path.join(o.outputDir, 'chat_template.jinja'), tokenizer.resolveChatTemplate(o.template).text)
    const seconds = (Date.now() - started) / 1000
    const log = {
      base: adapter.baseModel,
      data,
      settings: {
        ...settings,
        lora: adapter.config,
        maxLength,
        lossOn: o.lossOn ?? SFT_DEFAULTS.lossOn,
        overlong: o.overlong ?? SFT_DEFAULTS.overlong,
        packing: o.packing ?? SFT_DEFAULTS.packing,
        recompute: o.recompute ?? SFT_DEFAULTS.recompute,
        systemPrompt: o.systemPrompt ?? null,
        precision: precisionRecord(model.precision),
      },
      steps: result.steps,
      stopReason: result.stopReason,
      bestStep: result.bestStep ?? null,
      restoredBest: result.restoredBest,
      tokens: result.tokens,
      trainSeconds: result.seconds,
      seconds,
      finalLoss: result.finalLoss,
      eval: evalMetrics ?? null,
      lossHistory: result.lossHistory.map((l) => Number(l.toFixed(4))),
      evalHistory: result.evalHistory,
    }
    const logFile = path.join(o.outputDir, SFT_LOG_FILE)
    await replaceFileAtomically(logFile, JSON.stringify(log, null, 1) + '\n')
    return { outputDir: o.outputDir, data, train: result, eval: evalMetrics, seconds }
  } finally {
    adapter?.dispose()
    await model.dispose()
  }
}
