// `ernie-sentiment sft`: conversational SFT with LoRA (lib/train/sft.ts) from flags or a run file:
// chat data in, a PEFT adapter directory (with the base's tokenizer) out. The Trainer's settings
// are train's options (their types and ERNIEKit names), with this recipe's defaults.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { CHAT_LOSS_ON } from '../train/chat-encode'
import { CHAT_OVERLONG } from '../train/chat-pack'
import { sft, SFT_DEFAULTS, type SftOptions } from '../train/sft'
import { UsageError } from './args'
import type { CliIo } from './io'
import { formatDuration } from './progress'
import { PretrainProgress } from './pretrain'
import { choice, formatConfig, helpText, need, nonNegative, option, origin, readCommandLine, text, type CommandSpec, type Option, type ValueType } from './settings'
import { BASE_NOT_MODEL, TRAIN_OPTIONS, trainerSettings } from './train'

/** true or false, as a flag's value (--packing false) or in a run file: for settings on by default. */
const onOff: ValueType<boolean> = {
  expected: 'true or false',
  placeholder: 'BOOL',
  fromText: (s) => (s === 'true' ? true : s === 'false' ? false : undefined),
  fromYaml: (v) => (typeof v === 'boolean' ? v : undefined),
}

/** One of train's options (its type and ERNIEKit names) with this command's help: the default differs. */
const asSft = <T>(o: Option<T>, help: string): Option<T> => ({ ...o, help })
const d = SFT_DEFAULTS

export const SFT_OPTIONS = {
  data: option(text('FILE'), 'chat data, JSON Lines: {"messages"}, ShareGPT {"conversations"},\nAlpaca {instruction, input, output} or ERNIEKit {src, tgt} (required)', {
    erniekit: ['train_dataset_path'],
  }),
  eval: option(text('FILE'), 'held-out chat data (default: --eval-ratio of --data)', { erniekit: ['eval_dataset_path'] }),
  'eval-ratio': option(nonNegative(), `the share of --data held out when no --eval is given (default ${d.evalRatio};\n0: no evaluation)`),
  base: option(text('DIR|ID'), "the base model, a directory or a hub id (required); its tokenizer's\nchat template renders the conversations", { erniekit: ['model_name_or_path'] }),
  out: option(text('DIR'), 'the adapter directory to write: new or empty (or --resume)', { erniekit: ['output_dir'] }),
  stage: option(choice(['SFT'] as const, { note: 'sft is the SFT stage' }), 'SFT', { only: 'file' }),
  fine_tuning: option(choice(['lora'] as const, { note: 'sft trains a LoRA adapter' }), 'LoRA (what sft trains)', { only: 'file' }),
  template: option(
    choice(['ernie', 'chatml', 'qwen3'] as const, { placeholder: 'NAME' }),
    "the chat template (default: the base's): ernie | chatml | qwen3. Markers the base's\nvocabulary lacks (ChatML on ERNIE-4.5 Base, the recipe's) are added, their rows trained",
  ),
  'system-prompt': option(text('TEXT'), 'the system message of conversations that have none'),
  'loss-on': option(choice(CHAT_LOSS_ON, { placeholder: 'TURNS' }), `${CHAT_LOSS_ON.join(' | ')}: the turns learnt (default ${d.lossOn}: every answer)`),
  'max-length': asSft(TRAIN_OPTIONS['max-length'], `tokens per packed row (default ${d.maxLength}, at most the model's positions)`),
  overlong: option(choice(CHAT_OVERLONG, { placeholder: 'MODE' }), `${CHAT_OVERLONG.join(' | ')}: a conversation longer than --max-length loses its\noldest exchanges (the system message kept), or is left out (default ${d.overlong})`),
  packing: option(onOff, `several conversations per row (default ${d.packing})`),
  'lora-r': asSft(TRAIN_OPTIONS['lora-r'], `LoRA rank (default ${d.lora.r}, on all seven projections)`),
  'lora-alpha': asSft(TRAIN_OPTIONS['lora-alpha'], `LoRA alpha (default ${d.lora.alpha})`),
  epochs: asSft(TRAIN_OPTIONS.epochs, `passes over the data (default ${d.epochs})`),
  'max-steps': TRAIN_OPTIONS['max-steps'],
  'batch-size': asSft(TRAIN_OPTIONS['batch-size'], `rows per micro-batch (default ${d.batchSize})`),
  'gradient-accumulation-steps': asSft(TRAIN_OPTIONS['gradient-accumulation-steps'], `micro-batches per optimizer step (default ${d.gradientAccumulationSteps})`),
  lr: asSft(TRAIN_OPTIONS.lr, `peak learning rate (default ${d.learningRate})`),
  schedule: asSft(TRAIN_OPTIONS.schedule, `the learning rate after warmup (default ${d.schedule})`),
  'warmup-steps': asSft(TRAIN_OPTIONS['warmup-steps'], `steps of linear warmup (default ${d.warmupSteps})`),
  'weight-decay': asSft(TRAIN_OPTIONS['weight-decay'], `AdamW weight decay (default ${d.weightDecay})`),
  'warmup-ratio': TRAIN_OPTIONS['warmup-ratio'],
  optimizer: asSft(TRAIN_OPTIONS.optimizer, `adamw | adamw8bit | sgd (default ${d.optimizer}: 8-bit moments, as bitsandbytes)`),
  'adam-beta1': TRAIN_OPTIONS['adam-beta1'],
  'adam-beta2': TRAIN_OPTIONS['adam-beta2'],
  'adam-epsilon': TRAIN_OPTIONS['adam-epsilon'],
  'max-grad-norm': TRAIN_OPTIONS['max-grad-norm'],
  'eval-steps': asSft(TRAIN_OPTIONS['eval-steps'], `evaluate every N steps (default ${d.evalSteps}), and at the end`),
  'save-steps': asSft(TRAIN_OPTIONS['save-steps'], `checkpoint every N steps into DIR/checkpoints/ (default ${d.saveSteps})`),
  'save-total-limit': asSft(TRAIN_OPTIONS['save-total-limit'], `keep the last K checkpoints, the best besides (default ${d.saveTotalLimit})`),
  'early-stopping-patience': asSft(TRAIN_OPTIONS['early-stopping-patience'], `stop after N evaluations without improvement (default ${d.earlyStoppingPatience})`),
  'load-best-model-at-end': option(onOff, `keep the best evaluation's adapter (default ${d.loadBestModelAtEnd})`, { erniekit: ['load_best_model_at_end'] }),
  recompute: option(onOff, `recompute activations in the backward pass (default ${d.recompute})`, { erniekit: ['recompute'] }),
  resume: asSft(TRAIN_OPTIONS.resume, 'continue from the latest checkpoint in DIR/checkpoints/'),
  'on-invalid': TRAIN_OPTIONS['on-invalid'],
  seed: TRAIN_OPTIONS.seed,
  precision: TRAIN_OPTIONS.precision,
  device: TRAIN_OPTIONS.device,
  json: TRAIN_OPTIONS.json,
  quiet: TRAIN_OPTIONS.quiet,
}

export const SFT: CommandSpec<typeof SFT_OPTIONS> = {
  name: 'sft',
  usage: '--data FILE --base DIR|ID --out DIR [options]',
  about: `Fine-tunes a base model on conversations with LoRA (conversational SFT): the loss on the
assistant's turns, several conversations packed per row (attention and positions kept apart).
DIR receives the PEFT adapter (adapter_config.json, adapter_model.safetensors), the base's
tokenizer files and sft_log.json (settings, data counts, loss curve, evaluations, wall time);
DIR/checkpoints/ the checkpoints. The defaults are the ERNIE-4.5-0.3B-Base chat recipe: LoRA r 16,
alpha 64 on all seven projections, 8-bit AdamW, lr 5e-5, cosine with 100 warmup steps, weight
decay 0.01, clipping at 1, batch 32 x 2, evaluation and a checkpoint every 50 steps keeping 3,
early stopping, recompute.`,
  options: SFT_OPTIONS,
  runFile: {},
  hints: { model: BASE_NOT_MODEL, method: 'sft trains a LoRA adapter; --method is a train option', labels: 'sft learns the answers in the chat data; there are no labels' },
}

/** Why `dir` cannot receive the run: a file, or a directory holding files (unless resuming). */
function outProblem(dir: string, resume: boolean): string | undefined {
  const info = fs.statSync(dir, { throwIfNoEntry: false })
  if (!info) return undefined
  if (!info.isDirectory()) return `${path.resolve(dir)} is a file`
  if (resume || fs.readdirSync(dir).length === 0) return undefined
  return `${path.resolve(dir)} holds files; choose a new or empty directory, or --resume a run there`
}

export async function sftCommand(argv: string[], io: CliIo): Promise<number> {
  const cl = readCommandLine(SFT, argv, io.stderr)
  if (cl.help) return void io.stdout.write(helpText(SFT)), 0
  const v = cl.values
  const data = need(SFT, cl, 'data')
  const base = need(SFT, cl, 'base')
  const out = need(SFT, cl, 'out')
  for (const name of ['data', 'eval'] as const) if (v[name] !== undefined && !fs.existsSync(v[name]!)) throw new UsageError(`${origin(cl, name)}: no such file: ${v[name]}`)
  if (v['eval-ratio'] !== undefined && v['eval-ratio'] >= 1) throw new UsageError(`${origin(cl, 'eval-ratio')} must be below 1, got ${v['eval-ratio']}`)
  if (cl.printConfig) return void io.stdout.write(formatConfig(SFT, cl)), 0
  const problem = outProblem(out, v.resume === true)
  if (problem) throw new UsageError(`${origin(cl, 'out')}: ${problem}`)

  const progress = v.quiet ? undefined : new PretrainProgress(io.stderr, 'sft')
  // Over SFT_DEFAULTS.lora, which sft() starts from.
  const lora = { ...(v['lora-r'] !== undefined ? { r: v['lora-r'] } : {}), ...(v['lora-alpha'] !== undefined ? { alpha: v['lora-alpha'] } : {}) }
  const options: SftOptions = {
    data,
    evalData: v.eval,
    evalRatio: v['eval-ratio'],
    base,
    outputDir: out,
    systemPrompt: v['system-prompt'],
    lossOn: v['loss-on'],
    template: v.template,
    maxLength: v['max-length'],
    overlong: v.overlong,
    packing: v.packing,
    lora,
    ...trainerSettings(v),
    loadBestModelAtEnd: v['load-best-model-at-end'],
    recompute: v.recompute,
    resume: v.resume === true,
    onInvalid: v['on-invalid'],
    seed: v.seed,
    precision: v.precision,
    device: v.device,
    onProgress: progress && ((p) => progress.update(p)),
    signal: io.signal,
  }
  const r = await sft(options)
  const summary = {
    outputDir: path.resolve(r.outputDir),
    steps: r.train.steps,
    stopReason: r.train.stopReason,
    bestStep: r.train.bestStep,
    restoredBest: r.train.restoredBest,
    tokens: r.train.tokens,
    firstLoss: r.train.lossHistory[0],
    finalLoss: r.train.finalLoss,
    eval: r.eval,
    seconds: Number(r.seconds.toFixed(1)),
    data: r.data,
  }
  if (v.json) io.stdout.write(JSON.stringify(summary) + '\n')
  else {
    const lines = [`trained ${summary.steps} steps on ${r.data.train.conversations - r.data.train.dropped} conversations (${r.data.train.rows} rows, ${r.data.train.labelledTokens} answer tokens) in ${formatDuration(r.seconds)}${r.train.stopReason === 'completed' ? '' : ` (${r.train.stopReason === 'aborted' ? 'interrupted' : 'stopped early'})`}`]
    for (const [name, set] of Object.entries(r.data)) {
      const notes = [set.skipped.count && `${set.skipped.count} invalid records skipped`, set.truncated && `${set.truncated} shortened (${set.droppedMessages} messages dropped)`, set.dropped && `${set.dropped} too long, left out`].filter(Boolean)
      if (notes.length) lines.push(`${name} data (${set.source}): ${notes.join(', ')}`)
    }
    lines.push(`training loss ${summary.firstLoss.toFixed(4)} -> ${summary.finalLoss.toFixed(4)}`)
    if (r.eval) lines.push(`held-out loss ${r.eval.loss.toFixed(4)}, perplexity ${r.eval.perplexity.toFixed(3)}${r.train.restoredBest ? ` (the best evaluation's adapter, step ${r.train.bestStep})` : ''}`)
    lines.push(`adapter written to ${summary.outputDir}`, '')
    io.stdout.write(lines.join('\n'))
  }
  return r.train.stopReason === 'aborted' ? 130 : 0
}
