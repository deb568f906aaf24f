// `ernie-sentiment train`: trains a classifier and saves it, from flags or a run file (ERNIEKit's
// `erniekit train run_sft_8k.yaml` keys are understood where they mean the same thing here).
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieClassifier, METHODS, type ErnieClassifierOptions, type FitOptions } from '../classifier/classifier'
import { isSrcTgtFile } from '../data'
import { DEVICES } from '../device'
import { PRECISIONS } from '../precision'
import type { LoraOptions } from '../model/lora'
import { PROJECTIONS, type Projection } from '../model/projections'
import { OPTIMIZER_KINDS, type OptimizerKind } from '../train/optimizer'
import { SCHEDULE_KINDS, type ScheduleKind } from '../train/schedule'
import { outDirProblem, UsageError } from './args'
import { formatMetrics } from './format'
import type { CliIo } from './io'
import { ProgressReporter } from './progress'
import {
  choice,
  flag,
  formatConfig,
  helpText,
  integer,
  list,
  need,
  nonNegative,
  option,
  origin,
  positive,
  rate,
  readCommandLine,
  text,
  type CommandLine,
  type CommandSpec,
  type ValueType,
  type Values,
} from './settings'

// One meaning per name: --base is a base model (a directory or a hub id), --model a saved classifier.
export const BASE_NOT_MODEL = 'a base model is --base DIR|ID here (--model names a saved classifier, for eval and predict)'

/** The generative answer of each label: label=word,... as a flag, a mapping in a run file. */
const labelWords: ValueType<Record<string, string>> = {
  expected: 'label=word pairs separated by commas (a mapping of label: word in a run file)',
  placeholder: 'L=W,...',
  fromText: (s) => {
    const out: Record<string, string> = {}
    for (const pair of s.split(',')) {
      const at = pair.indexOf('=')
      if (at <= 0) return undefined
      out[pair.slice(0, at).trim()] = pair.slice(at + 1).trim()
    }
    return out
  },
  fromYaml: (v) => {
    if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined
    const entries = Object.entries(v)
    return entries.length > 0 && entries.every(([, w]) => typeof w === 'string' && w !== '') ? (v as Record<string, string>) : undefined
  },
}

/** 'balanced', or one positive weight per class: 1,2.5 as a flag; a list, or a mapping by class name, in a run file. */
const classWeights: ValueType<NonNullable<FitOptions['classWeights']>> = {
  expected: "'balanced' or positive numbers (1,2.5 as a flag; a list or a mapping by class in a run file)",
  placeholder: 'W',
  fromText: (s) => {
    if (s === 'balanced') return s
    const ws = s.split(',').map((x) => (x.trim() === '' ? NaN : Number(x)))
    return ws.every((x) => x > 0 && Number.isFinite(x)) ? ws : undefined
  },
  fromYaml: (v) => {
    const ok = (x: unknown) => typeof x === 'number' && x > 0 && Number.isFinite(x)
    if (v === 'balanced') return v
    if (Array.isArray(v)) return v.length > 0 && v.every(ok) ? (v as number[]) : undefined
    if (v !== null && typeof v === 'object') return Object.values(v).length > 0 && Object.values(v).every(ok) ? (v as Record<string, number>) : undefined
    return undefined
  },
}

/** A list of LoRA's projections: q_proj,v_proj as a flag, a list or that text in a run file. */
const projections: ValueType<Projection[]> = {
  expected: `a list of ${PROJECTIONS.join(', ')}`,
  placeholder: 'P,...',
  fromText: (s) => {
    const parts = s.split(',').map((x) => x.trim())
    return parts.length > 0 && parts.every((p) => PROJECTIONS.includes(p as Projection)) ? (parts as Projection[]) : undefined
  },
  fromYaml: (v) => {
    const parts = typeof v === 'string' ? v.split(',').map((x) => x.trim()) : v
    return Array.isArray(parts) && parts.length > 0 && parts.every((p) => PROJECTIONS.includes(p as Projection)) ? (parts as Projection[]) : undefined
  },
}

export const TRAIN_OPTIONS = {
  data: option(text('FILE'), 'training data (required)', { erniekit: ['train_dataset_path'] }),
  eval: option(text('FILE'), 'held-out data, evaluated every epoch and at the end', { erniekit: ['eval_dataset_path'] }),
  base: option(text('DIR|ID'), 'base model: a directory or a hub id (default: the bundled model)', { erniekit: ['model_name_or_path'] }),
  tokenizer: option(text('DIR'), 'a tokenizer directory, for a base model without one'),
  method: option(choice(METHODS, { placeholder: 'NAME' }), `${METHODS.join(' | ')} (default: by data and model size: head under 200 examples, else full under 100M parameters, else lora)`),
  tuning: option(
    choice(['full', 'lora'] as const, { placeholder: 'T' }),
    "full | lora: what trains (generative: either; lora, full: their own). With no\n--method, it names the method (but see stage in a run file)",
    { erniekit: ['fine_tuning'] },
  ),
  stage: option(
    choice(['SFT'] as const, { note: "ERNIEKit's other stages (PT, DPO) are not trained by this command" }),
    'SFT: with no --method, src/tgt data trains the generative\nmethod, text/label data the classifier fine_tuning names',
    { only: 'file' },
  ),
  do_train: option(flag, 'true (false: there is nothing for train to do)', { only: 'file' }),
  do_eval: option(flag, 'false: the eval data is not used while training', { only: 'file' }),
  out: option(text('DIR'), 'where to save the classifier (required; new or empty, checked\nbefore training starts)', { erniekit: ['output_dir'] }),
  overwrite: option(flag, 'replace the classifier already saved in --out'),
  labels: option(list(), 'class names, in index order'),
  epochs: option(positive('N'), 'passes over the data', { erniekit: ['num_train_epochs'] }),
  'max-steps': option(integer(1), 'optimizer steps (instead of epochs)', { erniekit: ['max_steps'], unset: [-1] }),
  'batch-size': option(integer(1), 'examples per micro-batch', { erniekit: ['batch_size', 'per_device_train_batch_size'] }),
  'gradient-accumulation-steps': option(integer(1), 'micro-batches per optimizer step (default 1)', { erniekit: ['gradient_accumulation_steps'] }),
  lr: option(positive(), 'peak learning rate', { erniekit: ['learning_rate'] }),
  schedule: option(choice<ScheduleKind>(SCHEDULE_KINDS, { placeholder: 'S', aliases: { constant_with_warmup: 'constant' } }), `${SCHEDULE_KINDS.join(' | ')}: the learning rate after warmup (default linear)`, {
    erniekit: ['lr_scheduler_type'],
  }),
  'warmup-steps': option(integer(0), 'steps of linear warmup (default: a tenth of the steps; head: none)', { erniekit: ['warmup_steps'] }),
  'warmup-ratio': option(rate(), 'warmup as a fraction of the steps (a --warmup-steps above 0 wins, as in\ntransformers)', { erniekit: ['warmup_ratio'] }),
  'weight-decay': option(nonNegative(), 'AdamW weight decay (default 0.01)', { erniekit: ['weight_decay'] }),
  optimizer: option(
    choice<OptimizerKind>(OPTIMIZER_KINDS, { placeholder: 'O', aliases: { adamw_torch: 'adamw', adamw_hf: 'adamw', adamw_bnb_8bit: 'adamw8bit', adamw_8bit: 'adamw8bit' } }),
    `${OPTIMIZER_KINDS.join(' | ')} (default adamw; adamw8bit: 8-bit moments, as\nbitsandbytes)`,
    { erniekit: ['optim'] },
  ),
  'adam-beta1': option(rate(), "AdamW's first-moment decay (default 0.9)", { erniekit: ['adam_beta1'] }),
  'adam-beta2': option(rate(), "AdamW's second-moment decay (default 0.999)", { erniekit: ['adam_beta2'] }),
  'adam-epsilon': option(positive(), "AdamW's epsilon (default 1e-8)", { erniekit: ['adam_epsilon'] }),
  'max-grad-norm': option(nonNegative(), 'clip the global gradient norm to X (default 1; 0: no clipping)', { erniekit: ['max_grad_norm'] }),
  momentum: option(rate(), "SGD's momentum (--optimizer sgd; default 0)"),
  'max-length': option(integer(2), 'tokens per text (default 256)', { erniekit: ['max_seq_len'] }),
  truncation: option(choice(['head', 'head_tail'] as const, { placeholder: 'MODE' }), 'head | head_tail (keep the start, or a quarter start + the end)'),
  pooling: option(choice(['last', 'mean', 'first'] as const, { placeholder: 'MODE' }), 'last | mean | first (default last)'),
  'head-hidden': option(integer(1), "the head method's MLP hidden size (default: a linear head)"),
  'lora-r': option(integer(1), 'LoRA rank (default 8)', { erniekit: ['lora_rank'] }),
  'lora-alpha': option(positive('N'), 'LoRA alpha (default 16)', { erniekit: ['lora_alpha'] }),
  'lora-dropout': option(rate(), 'dropout on the LoRA path in training (default 0)'),
  'lora-target-modules': option(projections, `the projections LoRA adapts (default all seven)`),
  'use-rslora': option(flag, 'rank-stabilised LoRA: scale alpha / sqrt(r) instead of alpha / r'),
  'label-words': option(labelWords, 'generative: the answer word of each label'),
  prompt: option(text('TEXT'), 'generative: the prompt, with {text} (and optionally {labels})'),
  'class-weights': option(classWeights, 'balanced, or one weight per class: 1,2.5'),
  'eval-steps': option(integer(1), 'evaluate every N steps (default: every epoch)', { erniekit: ['eval_steps'] }),
  'save-steps': option(integer(1), 'checkpoint every N steps into DIR.checkpoints/ (weights and optimiser state)', { erniekit: ['save_steps'] }),
  'save-total-limit': option(integer(1), 'keep the last K checkpoints (the best is kept besides)', { erniekit: ['save_total_limit'] }),
  resume: option(flag, 'continue from the latest checkpoint in DIR.checkpoints/ (the same weights as a run\nnever stopped)'),
  'metric-for-best-model': option(choice(['loss', 'accuracy', 'macroF1'] as const, { placeholder: 'M' }), 'loss | accuracy | macroF1: what decides the best evaluation (default loss)', {
    erniekit: ['metric_for_best_model'],
  }),
  'load-best-model-at-end': option(flag, "put back the best evaluation's weights at the end (needs --eval)", { erniekit: ['load_best_model_at_end'] }),
  'early-stopping-patience': option(integer(1), 'stop after N evaluations without improvement (needs --eval)', { erniekit: ['early_stopping_patience'] }),
  'early-stopping-threshold': option(nonNegative(), 'how much an evaluation must beat the best to count (default 0)'),
  recompute: option(flag, 'recompute activations in the backward pass (less memory, more time)', { erniekit: ['recompute'] }),
  'on-invalid': option(choice(['error', 'skip'] as const, { placeholder: 'MODE' }), 'error (default) | skip: drop bad records and report the counts'),
  seed: option(integer(0), 'seed (default 42)'),
  precision: option(
    choice(PRECISIONS, { placeholder: 'P', note: 'fp16 and the quantised types (fp8, wint8, wint4) have no kernels here; bf16 is the half precision' }),
    'auto | fp32 | bf16: the matrix products\' precision (default auto, or\nERNIE_PRECISION: bf16 where the CPU has AVX512_BF16, else fp32)',
    { erniekit: ['compute_type'] },
  ),
  device: option(choice(DEVICES, { placeholder: 'D' }), 'cpu | cuda | auto (default auto, or ERNIE_DEVICE: the GPU when this\nbuild has CUDA and a device is present)'),
  json: option(flag, 'print the result as one JSON object'),
  quiet: option(flag, 'no progress output'),
}

/** The flags of the Trainer's own settings, which every training command (train, sft, dpo) takes. */
type TrainerFlag =
  | 'epochs' | 'max-steps' | 'batch-size' | 'gradient-accumulation-steps' | 'lr' | 'schedule' | 'warmup-steps' | 'warmup-ratio' | 'weight-decay'
  | 'optimizer' | 'adam-beta1' | 'adam-beta2' | 'adam-epsilon' | 'max-grad-norm' | 'momentum' | 'eval-steps' | 'save-steps' | 'save-total-limit'
  | 'early-stopping-patience' | 'early-stopping-threshold'

/**
 * The Trainer's settings among a command's flag values, by the names TrainerOptions gives them
 * (FitOptions, SftOptions and dpo's trainer options use the same); unset flags are undefined.
 */
export function trainerSettings(v: Values<Pick<typeof TRAIN_OPTIONS, TrainerFlag>>) {
  return {
    epochs: v.epochs,
    maxSteps: v['max-steps'],
    batchSize: v['batch-size'],
    gradientAccumulationSteps: v['gradient-accumulation-steps'],
    learningRate: v.lr,
    schedule: v.schedule,
    warmupSteps: v['warmup-steps'],
    warmupRatio: v['warmup-ratio'],
    weightDecay: v['weight-decay'],
    optimizer: v.optimizer,
    adamBeta1: v['adam-beta1'],
    adamBeta2: v['adam-beta2'],
    adamEpsilon: v['adam-epsilon'],
    maxGradNorm: v['max-grad-norm'],
    momentum: v.momentum,
    evalSteps: v['eval-steps'],
    saveSteps: v['save-steps'],
    saveTotalLimit: v['save-total-limit'],
    earlyStoppingPatience: v['early-stopping-patience'],
    earlyStoppingThreshold: v['early-stopping-threshold'],
  }
}

export const TRAIN: CommandSpec<typeof TRAIN_OPTIONS> = {
  name: 'train',
  usage: '--data FILE --out DIR [options]',
  about: `Trains a classifier and saves it to DIR (classifier.json, weights, tokenizer, report.html).

Data files: .tsv (text<TAB>label, or a header such as label<TAB>text_a), .csv (with a header),
.jsonl ({"text", "label"} or ERNIEKit {"src": [...], "tgt": [...]}). Labels 0/1 mean
negative/positive unless --labels names them.`,
  options: TRAIN_OPTIONS,
  runFile: {},
  hints: { model: BASE_NOT_MODEL },
}

type TrainLine = CommandLine<typeof TRAIN_OPTIONS>

/** The LoRA settings the flags give (undefined when none: the method's defaults). */
function loraOptions(v: TrainLine['values']): LoraOptions | undefined {
  const o: LoraOptions = {
    ...(v['lora-r'] !== undefined ? { r: v['lora-r'] } : {}),
    ...(v['lora-alpha'] !== undefined ? { alpha: v['lora-alpha'] } : {}),
    ...(v['lora-dropout'] !== undefined ? { dropout: v['lora-dropout'] } : {}),
    ...(v['lora-target-modules'] !== undefined ? { targetModules: v['lora-target-modules'] } : {}),
    ...(v['use-rslora'] !== undefined ? { useRslora: v['use-rslora'] } : {}),
  }
  return Object.keys(o).length > 0 ? o : undefined
}

/**
 * The method when none is named: ERNIEKit's stage: SFT on src/tgt data is generative SFT; else the
 * tuning (fine_tuning: LoRA | Full) names the classifier. A tuning that contradicts the method is
 * an error.
 */
async function resolveMethod(cl: TrainLine, data: string): Promise<void> {
  const v = cl.values
  if (v.method === undefined) {
    if (v.stage !== undefined && (await isSrcTgtFile(data))) {
      v.method = 'generative'
      cl.origins.method = `${origin(cl, 'stage')} on src/tgt data`
    } else if (v.tuning !== undefined) {
      v.method = v.tuning
      cl.origins.method = v.stage !== undefined ? `${origin(cl, 'stage')} on text/label data, ${origin(cl, 'tuning')}` : origin(cl, 'tuning')
    }
  }
  if (v.tuning === undefined || v.method === 'generative' || v.method === v.tuning) return
  const what = v.method === 'head' ? 'trains only a head on the frozen model' : `is ${v.method} fine-tuning`
  throw new UsageError(`${origin(cl, 'tuning')} says ${v.tuning}, but the method (${origin(cl, 'method')}) ${what}`)
}

function checkFile(cl: TrainLine, name: 'data' | 'eval'): void {
  const file = cl.values[name]
  if (file !== undefined && !fs.existsSync(file)) throw new UsageError(`${origin(cl, name)}: no such file: ${file}`)
}

export async function trainCommand(argv: string[], io: CliIo): Promise<number> {
  const cl = readCommandLine(TRAIN, argv, io.stderr)
  if (cl.help) return void io.stdout.write(helpText(TRAIN)), 0
  const v = cl.values
  if (v.do_train === false) throw new UsageError(`${origin(cl, 'do_train')} is false: there is nothing to train`)
  const data = need(TRAIN, cl, 'data')
  const out = need(TRAIN, cl, 'out')
  checkFile(cl, 'data')
  checkFile(cl, 'eval')
  await resolveMethod(cl, data)
  if (cl.printConfig) return void io.stdout.write(formatConfig(TRAIN, cl)), 0
  const problem = outDirProblem(out, v.overwrite === true || v.resume === true)
  if (problem) throw new UsageError(`${origin(cl, 'out')}: ${problem}`)
  // Beside the classifier, not in it: a save replaces the classifier's directory as a whole.
  const checkpoints = v['save-steps'] !== undefined || v.resume ? `${path.resolve(out)}.checkpoints` : undefined

  const options: ErnieClassifierOptions = {
    model: v.base,
    method: v.method,
    tuning: v.method === 'generative' ? v.tuning : undefined,
    labels: v.labels,
    maxLength: v['max-length'],
    truncation: v.truncation,
    pooling: v.pooling,
    head: v['head-hidden'] ? { hiddenSize: v['head-hidden'] } : undefined,
    lora: loraOptions(v),
    labelWords: v['label-words'],
    prompt: v.prompt,
    tokenizer: v.tokenizer,
    seed: v.seed,
    precision: v.precision,
    device: v.device,
  }
  const evalData = v.do_eval === false ? undefined : v.eval
  const reporter = v.quiet ? undefined : new ProgressReporter(io.stderr)
  const fitOptions: FitOptions = {
    evalData,
    ...trainerSettings(v),
    classWeights: v['class-weights'],
    outputDir: checkpoints,
    resume: v.resume,
    metricForBestModel: v['metric-for-best-model'],
    loadBestModelAtEnd: v['load-best-model-at-end'],
    recompute: v.recompute,
    onInvalid: v['on-invalid'],
    onProgress: reporter ? (p) => reporter.update(p) : undefined,
    signal: io.signal,
  }
  const clf = new ErnieClassifier(options)
  try {
    const result = await clf.fit(data, fitOptions)
    reporter?.finishLine()
    if (result.stopReason === 'aborted') {
      io.stderr.write('interrupted: training stopped; nothing was saved\n')
      return 130
    }
    await clf.save(out)
    const skipped = [result.data.train, result.data.eval].filter((d) => d && d.skipped.count > 0)
    if (v.json) {
      io.stdout.write(
        JSON.stringify({
          out: path.resolve(out),
          report: path.resolve(out, 'report.html'),
          method: result.method,
          labels: clf.labels,
          labelsInferred: options.labels === undefined,
          steps: result.steps,
          epochs: result.epochs,
          stopReason: result.stopReason,
          seconds: result.seconds,
          ...(result.resumedFrom ? { resumedFrom: result.resumedFrom } : {}),
          finalLoss: result.finalLoss,
          metrics: result.metrics,
          data: result.data,
        }) + '\n',
      )
      return 0
    }
    if (result.resumedFrom) io.stderr.write(`resumed from step ${result.resumedFrom.step} (${result.resumedFrom.checkpoint})\n`)
    else if (v.resume) io.stderr.write(`no checkpoint in ${checkpoints}: trained from the start\n`)
    for (const d of skipped) io.stderr.write(`${d!.source}: skipped ${d!.skipped.count} invalid records (${Object.entries(d!.skipped.reasons).map(([k, n]) => `${k}: ${n}`).join(', ')})\n`)
    // Classes the data implied are said so: a reader sees what was inferred (and classifier.json records it).
    const classes = `${clf.labels!.join(', ')}${options.labels ? '' : ', inferred from the data'}`
    io.stdout.write(`trained ${result.method} classifier (${classes}): ${result.steps} steps, ${result.epochs.toFixed(2)} epochs, ${result.seconds.toFixed(1)} s, final loss ${result.finalLoss.toFixed(4)}\n`)
    if (result.metrics) io.stdout.write(`\nevaluation on ${evalData}:\n` + formatMetrics(result.metrics))
    io.stdout.write(`\nsaved to ${path.resolve(out)}\nreport: ${path.resolve(out, 'report.html')}\n`)
    return 0
  } finally {
    reporter?.finishLine()
    await clf.dispose()
  }
}
