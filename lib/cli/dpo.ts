// `ernie-sentiment dpo`: preference tuning (DPO / IPO) of a base model or of an SFT output (a
// PEFT adapter directory over its base) on {prompt, chosen, rejected} pairs, writing a PEFT
// adapter (LoRA) or a model directory (full), with dpo_log.json (settings, data, loss and
// reward curves, wall time).
import * as fs from 'node:fs'
import * as path from 'node:path'

import type { Device } from '../device'
import { splitByRatio } from '../data/chat'
import { loadPreferencePairs, type PreferencePair } from '../train/preference-encode'
import { ErnieError } from '../errors'
import { replaceFileAtomically } from '../io/atomic'
import { adapterBaseModel, LoraAdapter } from '../model/lora'
import { ErnieModel } from '../model/model'
import type { Precision } from '../precision'
import { Tokenizer } from '../tokenizer'
import { DPO_LOSS_TYPES, DpoTask, type DpoLossType } from '../train/dpo'
import { Trainer, type TrainProgress, type TrainResult } from '../train/trainer'
import { UsageError } from './args'
import type { CliIo } from './io'
import { formatDuration, type ProgressStream } from './progress'
import { choice, flag, formatConfig, helpText, integer, need, nonNegative, option, origin, positive, readCommandLine, text, type CommandSpec } from './settings'
import { TRAIN_OPTIONS, trainerSettings } from './train'

const LOG_FILE = 'dpo_log.json'

export const DPO_OPTIONS = {
  data: option(text('FILE'), 'preference pairs, JSON Lines: {"prompt", "chosen", "rejected"} (strings, or\nthe prompt as chat messages and each answer as assistant messages) (required)', {
    erniekit: ['train_dataset_path'],
  }),
  eval: option(text('FILE'), 'held-out pairs, evaluated every --eval-steps and at the end', { erniekit: ['eval_dataset_path'] }),
  'eval-ratio': option(nonNegative('R'), 'without --eval: hold out this share of --data (seeded by --seed)'),
  base: option(text('DIR|ID'), 'the model to tune (required): a model directory or hub id, or an SFT output\n(a PEFT adapter directory, its base named by base_model_name_or_path)', { erniekit: ['model_name_or_path'] }),
  tokenizer: TRAIN_OPTIONS.tokenizer,
  out: option(text('DIR'), 'where to write the adapter (lora) or the model (full) (required; new or empty)', { erniekit: ['output_dir'] }),
  overwrite: option(flag, 'replace an earlier dpo output in --out'),
  tuning: option(choice(['lora', 'full'] as const, { placeholder: 'T' }), 'lora (default): train a LoRA adapter (an SFT output: continue its adapter);\nfull: train the weights (an SFT output: its adapter merged first)', {
    erniekit: ['fine_tuning'],
  }),
  'lora-r': option(integer(1), 'LoRA rank of a new adapter (default 8)', { erniekit: ['lora_rank'] }),
  'lora-alpha': option(positive('N'), 'LoRA alpha of a new adapter (default 16)', { erniekit: ['lora_alpha'] }),
  beta: option(positive(), 'the pull towards the reference (default 0.1)'),
  loss: option(choice(DPO_LOSS_TYPES, { placeholder: 'L' }), 'sigmoid (DPO, default) | ipo'),
  'label-smoothing': option(nonNegative(), 'conservative DPO: the chance a preference is flipped, < 0.5 (default 0)'),
  'max-length': option(integer(2), 'tokens per sequence; longer answers lose their end (counted)'),
  epochs: TRAIN_OPTIONS.epochs,
  'max-steps': TRAIN_OPTIONS['max-steps'],
  'batch-size': option(integer(1), 'pairs per micro-batch (default 8)', { erniekit: ['batch_size', 'per_device_train_batch_size'] }),
  'gradient-accumulation-steps': TRAIN_OPTIONS['gradient-accumulation-steps'],
  lr: option(positive(), 'peak learning rate (default 5e-6 with lora, 5e-7 full, as TRL suggests)', { erniekit: ['learning_rate'] }),
  schedule: TRAIN_OPTIONS.schedule,
  'warmup-steps': option(integer(0), 'steps of linear warmup (default: a tenth of the steps)', { erniekit: ['warmup_steps'] }),
  'warmup-ratio': TRAIN_OPTIONS['warmup-ratio'],
  'weight-decay': TRAIN_OPTIONS['weight-decay'],
  optimizer: TRAIN_OPTIONS.optimizer,
  'adam-beta1': TRAIN_OPTIONS['adam-beta1'],
  'adam-beta2': TRAIN_OPTIONS['adam-beta2'],
  'adam-epsilon': TRAIN_OPTIONS['adam-epsilon'],
  'max-grad-norm': TRAIN_OPTIONS['max-grad-norm'],
  'eval-steps': option(integer(1), 'evaluate every N steps (default: at the end only)', { erniekit: ['eval_steps'] }),
  'save-steps': TRAIN_OPTIONS['save-steps'],
  'save-total-limit': TRAIN_OPTIONS['save-total-limit'],
  resume: TRAIN_OPTIONS.resume,
  recompute: TRAIN_OPTIONS.recompute,
  seed: TRAIN_OPTIONS.seed,
  precision: TRAIN_OPTIONS.precision,
  device: TRAIN_OPTIONS.device,
  json: TRAIN_OPTIONS.json,
  quiet: TRAIN_OPTIONS.quiet,
}

export const DPO: CommandSpec<typeof DPO_OPTIONS> = {
  name: 'dpo',
  usage: '--data FILE --base DIR|ID --out DIR [options]',
  about: `Preference tuning (DPO, or IPO with --loss ipo) on pairs of answers to the same prompt, the
first preferred. The reference is the model as given (a base, or an SFT output); its
log-probabilities are computed once, before training. DIR receives a PEFT adapter (lora) or a
model directory (full), and dpo_log.json: the settings, the loss and reward curves (TRL's
rewards/chosen, rewards/rejected, rewards/margins, rewards/accuracies) and the wall time.`,
  options: DPO_OPTIONS,
  runFile: {},
  hints: { model: '--base names the model to tune' },
}

export interface DpoRunOptions {
  data: string
  eval?: string
  evalRatio?: number
  base: string
  tokenizer?: string
  out: string
  tuning: 'lora' | 'full'
  loraR?: number
  loraAlpha?: number
  beta?: number
  loss?: DpoLossType
  labelSmoothing?: number
  maxLength?: number
  trainer: ConstructorParameters<typeof Trainer>[1]
  recompute?: boolean
  seed: number
  precision?: Precision
  device?: Device
  onProgress?: (p: TrainProgress, task: DpoTask) => void
  signal?: AbortSignal
}

/** The base of an SFT output (a PEFT adapter directory), or undefined when `dir` is a model. */
async function sftBase(dir: string): Promise<string | undefined> {
  if (!fs.existsSync(path.join(dir, 'adapter_config.json'))) return undefined
  const base = await adapterBaseModel(dir)
  if (base === undefined) throw new ErnieError('ERR_ADAPTER', `${path.join(dir, 'adapter_config.json')} names no base_model_name_or_path: the SFT output's base model is unknown`)
  return base
}

/** Reads the pairs, makes the policy and the reference, trains, and writes `out`; resolves to the run's summary. */
export async function runDpo(o: DpoRunOptions) {
  const started = performance.now()
  const sftOf = await sftBase(o.base)
  const model = await ErnieModel.fromPretrained(sftOf ?? o.base, { device: o.device, precision: o.precision })
  let adapter: LoraAdapter | undefined
  try {
    const tokenizer = model.tokenizer ?? (o.tokenizer ? await Tokenizer.fromDirectory(o.tokenizer) : undefined)
    if (!tokenizer) throw new ErnieError('ERR_NO_TOKENIZER', `${sftOf ?? o.base} has no tokenizer: give --tokenizer DIR`)
    const tokenize = (file: string) => loadPreferencePairs(file, tokenizer, { maxLength: o.maxLength })
    const data = await tokenize(o.data)
    let train: PreferencePair[] = data.pairs
    let evalPairs: PreferencePair[] | undefined
    let truncated = data.truncated
    if (o.eval !== undefined) {
      const e = await tokenize(o.eval)
      evalPairs = e.pairs
      truncated += e.truncated
    } else if (o.evalRatio) {
      ;({ train, eval: evalPairs } = splitByRatio(data.pairs, o.evalRatio, o.seed))
    }

    // The policy, and the reference as the model is now: an SFT output's adapter continues
    // training with its own starting point as the reference (lora), or is merged first (full).
    const sft = sftOf ? await LoraAdapter.load(o.base, model) : undefined
    if (sft && o.tuning === 'full') {
      await model.mergeAdapter(sft, { dtype: 'f32' })
      sft.dispose()
    } else if (sft) {
      adapter = sft
    }
    if (o.tuning === 'lora' && !adapter) adapter = LoraAdapter.create(model, { r: o.loraR ?? 8, alpha: o.loraAlpha ?? 16, seed: o.seed })
    const task = await DpoTask.create(model, {
      train,
      eval: evalPairs,
      adapter,
      referenceAdapter: sftOf && o.tuning === 'lora' ? adapter : undefined,
      fullTraining: o.tuning === 'full',
      beta: o.beta,
      loss: o.loss,
      labelSmoothing: o.labelSmoothing,
      recompute: o.recompute,
      padTokenId: tokenizer.padTokenId,
    })
    const steps: Array<{ step: number; loss: number } & Record<string, number>> = []
    const trainer = new Trainer(task, {
      ...o.trainer,
      seed: o.seed,
      onProgress: (p) => {
        steps.push({ step: p.step, loss: p.loss, ...task.lastTrainMetrics })
        o.onProgress?.(p, task)
      },
      signal: o.signal,
    })
    const result: TrainResult = await trainer.train()
    const final = task.evalExamples.length > 0 && result.stopReason !== 'aborted' ? await task.metricsOf(task.evalExamples) : undefined
    if (result.stopReason !== 'aborted') {
      if (adapter) await adapter.save(o.out)
      else await model.save(o.out)
    }
    const seconds = (performance.now() - started) / 1000
    const summary = {
      out: path.resolve(o.out),
      saved: result.stopReason !== 'aborted',
      tuning: o.tuning,
      base: o.base,
      reference: sftOf ? `the SFT output ${o.base}` : `the base ${o.base}`,
      loss: task.lossOptions,
      data: { train: train.length, eval: evalPairs?.length ?? 0, truncated },
      steps: result.steps,
      stopReason: result.stopReason,
      finalLoss: result.finalLoss,
      evalMetrics: final,
      seconds,
    }
    if (summary.saved) await replaceFileAtomically(path.join(o.out, LOG_FILE), JSON.stringify({ ...summary, trainCurve: steps, evalCurve: result.evalHistory }, null, 2) + '\n')
    return summary
  } finally {
    adapter?.dispose()
    await model.dispose()
  }
}

/** Progress as plain lines (every ~2% of the steps, and on evaluations), or one redrawn line on a TTY. */
function progressLine(out: ProgressStream, p: TrainProgress, task: DpoTask, lastBucket: { value: number }): void {
  const m = task.lastTrainMetrics
  const parts = [`dpo  step ${p.step}/${p.totalSteps}`, `loss ${p.loss.toFixed(4)}`]
  if (m) parts.push(`margin ${m['rewards/margins'].toFixed(4)}`, `acc ${m['rewards/accuracies'].toFixed(2)}`)
  if (p.metrics) parts.push(`eval loss ${p.metrics.loss.toFixed(4)} margin ${p.metrics['rewards/margins'].toFixed(4)} acc ${p.metrics['rewards/accuracies'].toFixed(2)}`)
  parts.push(`ETA ${formatDuration(p.etaSeconds)}`)
  const text = parts.join('  ')
  if (out.isTTY) return void out.write(`\r\x1b[2K${text.slice(0, Math.max(20, (out.columns ?? 100) - 1))}${p.step >= p.totalSteps ? '\n' : ''}`)
  const bucket = Math.floor(p.step / Math.max(1, Math.round(p.totalSteps / 50)))
  if (bucket !== lastBucket.value || p.metrics || p.step >= p.totalSteps) {
    lastBucket.value = bucket
    out.write(text + '\n')
  }
}

export async function dpoCommand(argv: string[], io: CliIo): Promise<number> {
  const cl = readCommandLine(DPO, argv, io.stderr)
  if (cl.help) return void io.stdout.write(helpText(DPO)), 0
  const v = cl.values
  const data = need(DPO, cl, 'data')
  const base = need(DPO, cl, 'base')
  const out = need(DPO, cl, 'out')
  for (const name of ['data', 'eval'] as const) if (v[name] !== undefined && !fs.existsSync(v[name]!)) throw new UsageError(`${origin(cl, name)}: no such file: ${v[name]}`)
  if (v.eval !== undefined && v['eval-ratio'] !== undefined) throw new UsageError(`${origin(cl, 'eval-ratio')} splits --data; with ${origin(cl, 'eval')} there is nothing to split`)
  if (v['eval-ratio'] !== undefined && !(v['eval-ratio'] > 0 && v['eval-ratio'] < 1)) throw new UsageError(`${origin(cl, 'eval-ratio')} must be between 0 and 1, got ${v['eval-ratio']}`)
  if (cl.printConfig) return void io.stdout.write(formatConfig(DPO, cl)), 0
  const entries = fs.existsSync(out) ? fs.readdirSync(out) : []
  if (entries.length > 0 && !(v.overwrite && entries.includes(LOG_FILE)))
    throw new UsageError(`${origin(cl, 'out')}: ${path.resolve(out)} is not empty${entries.includes(LOG_FILE) ? '; pass --overwrite to replace the earlier dpo output' : ''}`)
  const tuning = v.tuning ?? 'lora'
  const evalPairs = v.eval !== undefined || v['eval-ratio'] !== undefined
  const lastBucket = { value: -1 }
  const summary = await runDpo({
    data,
    eval: v.eval,
    evalRatio: v['eval-ratio'],
    base,
    tokenizer: v.tokenizer,
    out,
    tuning,
    loraR: v['lora-r'],
    loraAlpha: v['lora-alpha'],
    beta: v.beta,
    loss: v.loss,
    labelSmoothing: v['label-smoothing'],
    maxLength: v['max-length'],
    recompute: v.recompute,
    seed: v.seed ?? 42,
    precision: v.precision,
    device: v.device,
    trainer: {
      ...trainerSettings(v),
      learningRate: v.lr ?? (tuning === 'lora' ? 5e-6 : 5e-7),
      warmupRatio: v['warmup-ratio'] ?? (v['warmup-steps'] === undefined ? 0.1 : undefined),
      weightDecay: v['weight-decay'] ?? 0.01,
      evalSteps: evalPairs ? v['eval-steps'] : undefined,
      outputDir: v['save-steps'] !== undefined || v.resume ? `${path.resolve(out)}.checkpoints` : undefined,
      resumeFromCheckpoint: v.resume ? true : undefined,
      precision: v.precision,
      device: v.device,
    },
    onProgress: v.quiet ? undefined : (p, task) => progressLine(io.stderr, p, task, lastBucket),
    signal: io.signal,
  })
  if (v.json) io.stdout.write(JSON.stringify(summary) + '\n')
  else {
    const m = summary.evalMetrics
    io.stdout.write(
      [
        `dpo: ${summary.steps} steps on ${summary.data.train} pairs in ${formatDuration(summary.seconds)}${summary.stopReason === 'aborted' ? ' (interrupted: nothing saved)' : ''}`,
        `final training loss ${summary.finalLoss.toFixed(4)}`,
        ...(m ? [`held out (${summary.data.eval} pairs): loss ${m.loss.toFixed(4)}, rewards/margins ${m['rewards/margins'].toFixed(4)}, rewards/accuracies ${m['rewards/accuracies'].toFixed(3)}`] : []),
        ...(summary.data.truncated > 0 ? [`${summary.data.truncated} pairs lost the end of an answer to --max-length`] : []),
        ...(summary.saved ? [`${tuning === 'lora' ? 'adapter' : 'model'} written to ${summary.out}`] : []),
        '',
      ].join('\n'),
    )
  }
  return summary.stopReason === 'aborted' ? 130 : 0
}
