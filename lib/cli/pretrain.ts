// `ernie-sentiment pretrain`: pre-trains a model of the ERNIE-4.5 architecture from random
// weights (or continues a --base checkpoint) on the user's own text (one document per line),
// writing a model directory that `train --base DIR` and `new ErnieClassifier({ model: DIR })` use.
import { parseJsonBytes } from '../io/json'
import * as path from 'node:path'

import { resolveConfig } from '../model/config'
import { Tokenizer } from '../tokenizer'
import { pretrain, type PretrainOptions } from '../train/pretrain'
import type { TrainProgress } from '../train/trainer'
import { formatDuration, type ProgressStream } from './progress'
import { ErnieError } from '../errors'
import { readSmallFileSync } from '../io/read'
import type { CliIo } from './io'
import { choice, files, flag, formatConfig, helpText, integer, need, nonNegative, option, positive, readCommandLine, text, type CommandSpec } from './settings'
import { TRAIN_OPTIONS } from './train'

export const PRETRAIN_OPTIONS = {
  text: option(files('FILE'), 'a text file, one document per line (repeatable; required)', { multiple: true }),
  config: option(text('FILE'), 'the architecture: a config.json (required without --base)'),
  tokenizer: option(text('DIR'), "a directory holding the tokenizer (tokenizer.model or tokenizer.json;\nrequired without --base; with it, must be the base's vocabulary)"),
  base: option(text('DIR|ID'), 'continue pre-training this checkpoint instead of random weights (its\nconfig and tokenizer; --lr defaults to 1e-4)', { erniekit: ['model_name_or_path'] }),
  out: option(text('DIR'), 'the model directory to write (required)', { erniekit: ['output_dir'] }),
  stage: option(choice(['PT'] as const, { note: 'pretrain is the PT stage' }), 'PT (ERNIEKit\'s pre-training stage)', { only: 'file' }),
  'seq-length': option(integer(2), 'tokens per packed row (default 256)', { erniekit: ['max_seq_len'] }),
  'batch-size': option(integer(1), 'rows per optimizer step (default 32)', { erniekit: ['batch_size', 'per_device_train_batch_size'] }),
  epochs: option(integer(1), 'passes over the text (default 1)', { erniekit: ['num_train_epochs'] }),
  'max-steps': option(integer(1), 'optimizer steps (instead of epochs)', { erniekit: ['max_steps'], unset: [-1] }),
  lr: option(positive(), 'peak learning rate, cosine schedule (default 1e-3; 1e-4 with --base)', { erniekit: ['learning_rate'] }),
  'warmup-steps': option(integer(0), 'linear warmup (default 100)', { erniekit: ['warmup_steps'] }),
  'weight-decay': option(nonNegative(), 'AdamW weight decay (default 0.1)', { erniekit: ['weight_decay'] }),
  'eval-documents': option(integer(0), 'documents held out for the evaluation loss (default 500)'),
  'eval-steps': option(integer(1), 'evaluate every N steps (default 100)', { erniekit: ['eval_steps'] }),
  'save-steps': option(integer(0), 'checkpoint every N steps into DIR/checkpoints (default 200; 0: never)', { erniekit: ['save_steps'] }),
  resume: option(flag, 'continue from the latest checkpoint in DIR/checkpoints'),
  seed: option(integer(0), 'seeds the weights and the document order (default 0)'),
  precision: TRAIN_OPTIONS.precision,
  device: option(TRAIN_OPTIONS.device.type, 'cpu | cuda | auto (default auto, or ERNIE_DEVICE)'),
  json: option(flag, 'print the result as one JSON object'),
  quiet: option(flag, 'no progress output'),
}

export const PRETRAIN: CommandSpec<typeof PRETRAIN_OPTIONS> = {
  name: 'pretrain',
  usage: '--text FILE [--text FILE ...] (--config FILE --tokenizer DIR | --base DIR|ID) --out DIR [options]',
  about: `Pre-trains a model (next-token prediction, from random weights or a --base) on raw text, one
document per line. Documents are packed into rows, each followed by EOS; attention never crosses
from one document to another. DIR receives config.json, model.safetensors (bf16), the tokenizer
and pretrain_log.json (loss curve, corpus, settings, wall time).`,
  options: PRETRAIN_OPTIONS,
  runFile: {},
  hints: {
    fine_tuning: 'pretrain trains every weight; remove fine_tuning',
    train_dataset_path: 'pretrain reads plain text files, one document per line: text: [FILE, ...]',
    eval_dataset_path: 'pretrain holds out eval-documents of its own text for the evaluation loss',
  },
}

export interface PretrainCliArgs {
  text: string[]
  /** Continue this checkpoint (directory or hub id); then config is not allowed and tokenizer optional. */
  base?: string
  config?: string
  tokenizer?: string
  out: string
  options: Partial<PretrainOptions>
  json: boolean
  quiet: boolean
}

/** A Trainer run's progress (pretrain, sft) as a redrawn line on a TTY, plain lines every ~2% (and on evaluations) otherwise. */
export class PretrainProgress {
  private lastBucket = -1
  private evalLoss: number | undefined
  constructor(
    private readonly out: ProgressStream,
    private readonly label = 'pretrain',
  ) {}
  update(p: TrainProgress): void {
    if (p.metrics?.loss !== undefined) this.evalLoss = p.metrics.loss
    const w = 24
    const frac = p.totalSteps > 0 ? Math.min(1, p.step / p.totalSteps) : 0
    const parts = [
      this.out.isTTY ? `${this.label} [${'#'.repeat(Math.round(frac * w))}${'.'.repeat(w - Math.round(frac * w))}]` : this.label,
      `step ${p.step}/${p.totalSteps}`,
      `epoch ${p.epoch.toFixed(2)}`,
      `loss ${p.loss.toFixed(4)}`,
      `lr ${p.lr.toExponential(2)}`,
      `${Math.round(p.tokensPerSecond)} tok/s`,
    ]
    if (this.evalLoss !== undefined) parts.push(`eval loss ${this.evalLoss.toFixed(4)}`)
    parts.push(`elapsed ${formatDuration(p.elapsedSeconds)}`, `ETA ${formatDuration(p.etaSeconds)}`)
    const text = parts.join('  ')
    if (this.out.isTTY) {
      this.out.write(`\r\x1b[2K${text.slice(0, Math.max(20, (this.out.columns ?? 100) - 1))}`)
      if (p.step >= p.totalSteps) this.out.write('\n')
      return
    }
    const bucket = Math.floor(p.step / Math.max(1, Math.round(p.totalSteps / 50)))
    if (bucket !== this.lastBucket || p.metrics || p.step >= p.totalSteps) {
      this.lastBucket = bucket
      this.out.write(text + '\n')
    }
  }
}

function readArchitecture(file: string): Record<string, unknown> {
  let raw: unknown
  try {
    raw = parseJsonBytes(readSmallFileSync(file, 'config'))
  } catch (e) {
    if (e instanceof ErnieError) throw e
    throw new ErnieError('ERR_CONFIG', `${file}: not a readable JSON config (${(e as Error).message})`)
  }
  resolveConfig(raw, file)
  return raw as Record<string, unknown>
}

/** Runs a parsed pretrain command; resolves to what it prints. */
export async function runPretrain(a: PretrainCliArgs, stderr: ProgressStream, signal?: AbortSignal): Promise<string> {
  if (a.base !== undefined && a.config !== undefined)
    throw new ErnieError('ERR_CONFIG', `--config ${a.config}: a --base brings its own architecture (its config.json); give one or the other`)
  const config = a.config === undefined ? undefined : readArchitecture(a.config)
  const tokenizer = a.tokenizer === undefined ? undefined : await Tokenizer.fromDirectory(a.tokenizer)
  const progress = a.quiet ? undefined : new PretrainProgress(stderr)
  const r = await pretrain({
    ...a.options,
    textFiles: a.text,
    base: a.base,
    tokenizer,
    tokenizerDir: a.tokenizer,
    config,
    outputDir: a.out,
    onProgress: progress && ((p) => progress.update(p)),
    signal,
  })
  const summary = {
    outputDir: path.resolve(r.outputDir),
    steps: r.train.steps,
    stopReason: r.train.stopReason,
    tokens: r.train.tokens,
    finalLoss: r.train.finalLoss,
    evalLoss: r.evalLoss,
    seconds: Number(r.seconds.toFixed(1)),
    corpus: r.corpus,
  }
  if (a.json) return JSON.stringify(summary) + '\n'
  return [
    `pre-trained ${summary.steps} steps on ${r.corpus.trainDocuments} documents (${r.corpus.trainTokens} tokens) in ${formatDuration(r.seconds)}${r.train.stopReason === 'aborted' ? ' (stopped early)' : ''}`,
    `final training loss ${summary.finalLoss.toFixed(4)}, held-out loss ${summary.evalLoss.toFixed(4)} (${r.corpus.evalDocuments} documents)`,
    `model written to ${summary.outputDir}`,
    '',
  ].join('\n')
}

export async function pretrainCommand(argv: string[], io: CliIo): Promise<number> {
  const cl = readCommandLine(PRETRAIN, argv, io.stderr)
  if (cl.help) return void io.stdout.write(helpText(PRETRAIN)), 0
  const v = cl.values
  const args: PretrainCliArgs = {
    text: need(PRETRAIN, cl, 'text'),
    base: v.base,
    // From random weights the architecture and tokenizer must be named; a base brings its own.
    config: v.base === undefined ? need(PRETRAIN, cl, 'config') : v.config,
    tokenizer: v.base === undefined ? need(PRETRAIN, cl, 'tokenizer') : v.tokenizer,
    out: need(PRETRAIN, cl, 'out'),
    options: {
      seqLength: v['seq-length'],
      batchSize: v['batch-size'],
      epochs: v.epochs,
      maxSteps: v['max-steps'],
      learningRate: v.lr,
      warmupSteps: v['warmup-steps'],
      weightDecay: v['weight-decay'],
      evalDocuments: v['eval-documents'],
      evalSteps: v['eval-steps'],
      saveSteps: v['save-steps'],
      resume: v.resume === true,
      seed: v.seed,
      precision: v.precision,
      device: v.device,
    },
    json: v.json === true,
    quiet: v.quiet === true,
  }
  if (cl.printConfig) return void io.stdout.write(formatConfig(PRETRAIN, cl)), 0
  io.stdout.write(await runPretrain(args, io.stderr, io.signal))
  return io.signal?.aborted ? 130 : 0
}
