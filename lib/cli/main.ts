// The `ernie-sentiment` command line: train, eval, predict, pretrain and demo. Results go to stdout (text, or
// JSON with --json; predict prints JSON lines), progress and errors to stderr. Exit codes: 0
// success, 1 failure, 2 bad usage, 130 interrupted.
import * as fs from 'node:fs'
import * as path from 'node:path'
import * as readline from 'node:readline'

import { ErnieClassifier, METHODS, type ErnieClassifierOptions, type FitOptions, type Method, type Prediction } from '../classifier/classifier'
import { DEVICES } from '../device'
import { PRECISIONS } from '../precision'
import { int, noPositionals, num, oneOf, outDirProblem, parse, required, UsageError } from './args'
import { PRETRAIN_HELP, runPretrain } from './pretrain'
import { ProgressReporter } from './progress'
import { DEMO_HELP, runDemo } from './demo'
import { runExport } from './export'
import { runServe } from './serve'
import { formatMetrics } from './format'
import type { CliIo } from './io'

export { formatMetrics }
export type { CliIo }

const MAIN_HELP = `Usage: ernie-sentiment <command> [options]

Sentiment classifiers on ERNIE-4.5 / Qwen3 models, trained and run on the CPU.

Commands:
  train     train a classifier on labelled data and save it (with report.html)
  eval      accuracy, macro-F1 and the confusion matrix of a saved classifier
  predict   label texts given as arguments, or one per line on stdin (JSON lines out)
  pretrain  pre-train a model from random weights on raw text (one document per line)
  demo      fine-tune on the bundled ChnSentiCorp, then report test accuracy and sample predictions
  export    a classifier or LoRA adapter as a merged checkpoint (Hugging Face or ERNIEKit layout)
  serve     an HTTP server for saved classifiers (POST /v1/classify, /health, /metrics)

Run 'ernie-sentiment <command> --help' for a command's options.
Options:
  -h, --help       this help
  -v, --version    the package version
`

// One meaning per flag: --base is a base model (a directory or a hub id), --model a saved classifier.
const BASE_NOT_MODEL = 'a base model is --base DIR|ID here (--model names a saved classifier, for eval and predict)'

const TRAIN_HELP = `Usage: ernie-sentiment train --data FILE --out DIR [options]

Trains a classifier and saves it to DIR (classifier.json, weights, tokenizer, report.html).

Data files: .tsv (text<TAB>label, or a header such as label<TAB>text_a), .csv (with a header),
.jsonl ({"text", "label"} or ERNIEKit {"src": [...], "tgt": [...]}). Labels 0/1 mean
negative/positive unless --labels names them.

Options:
  --data FILE            training data (required)
  --eval FILE            held-out data, evaluated every epoch and at the end
  --base DIR|ID          base model: a directory or a hub id (default: the bundled model)
  --tokenizer DIR        a tokenizer directory, for a base model without one
  --method NAME          head | lora | full | generative (default: by data and model size: head
                         under 200 examples, else full under 100M parameters, else lora)
  --out DIR              where to save the classifier (required; new or empty, checked
                         before training starts)
  --overwrite            replace the classifier already saved in --out
  --labels A,B,...       class names, in index order
  --epochs N             passes over the data
  --max-steps N          optimizer steps (instead of epochs)
  --batch-size N         examples per step
  --lr X                 peak learning rate
  --max-length N         tokens per text (default 256)
  --truncation MODE      head | head_tail (keep the start, or a quarter start + the end)
  --pooling MODE         last | mean | first (default last)
  --head-hidden N        the head method's MLP hidden size (default: a linear head)
  --lora-r N             LoRA rank (default 8)
  --lora-alpha N         LoRA alpha (default 16)
  --label-words L=W,...  generative: the answer word of each label
  --prompt TEXT          generative: the prompt, with {text} (and optionally {labels})
  --class-weights W      balanced, or one weight per class: 1,2.5
  --eval-steps N         evaluate every N steps (default: every epoch)
  --on-invalid MODE      error (default) | skip: drop bad records and report the counts
  --seed N               seed (default 42)
  --precision P          auto | fp32 | bf16: the matrix products' precision (default auto, or
                         ERNIE_PRECISION: bf16 where the CPU has AVX512_BF16, else fp32)
  --device D             cpu | cuda | auto (default auto, or ERNIE_DEVICE: the GPU when this
                         build has CUDA and a device is present)
  --json                 print the result as one JSON object
  --quiet                no progress output
  -h, --help             this help
`

const EVAL_HELP = `Usage: ernie-sentiment eval --model DIR --data FILE [options]

Evaluates a saved classifier: accuracy, macro-F1, per-class precision / recall / F1, loss and
the confusion matrix.

Options:
  --model DIR          the saved classifier (required)
  --data FILE          labelled data (required; same formats as train)
  --base DIR|ID        use this base model instead of the one the classifier names
  --batch-size N       texts per forward pass (default 32)
  --on-invalid MODE    error (default) | skip
  --precision P        auto | fp32 | bf16 (default: ERNIE_PRECISION, else as saved)
  --device D           cpu | cuda | auto (default auto, or ERNIE_DEVICE)
  --json               print one JSON object
  -h, --help           this help
`

const PREDICT_HELP = `Usage: ernie-sentiment predict --model DIR [TEXT ...]

Labels each TEXT, or each line of stdin when no TEXT is given, printing one JSON object per
text: {"text", "label", "score", "scores"}.

Options:
  --model DIR          the saved classifier (required)
  --base DIR|ID        use this base model instead of the one the classifier names
  --batch-size N       texts per forward pass (default 32)
  --precision P        auto | fp32 | bf16 (default: ERNIE_PRECISION, else as saved)
  --device D           cpu | cuda | auto (default auto, or ERNIE_DEVICE)
  -h, --help           this help
`

function parseLabelWords(v: string | undefined): Record<string, string> | undefined {
  if (v === undefined) return undefined
  const out: Record<string, string> = {}
  for (const pair of v.split(',')) {
    const at = pair.indexOf('=')
    if (at <= 0) throw new UsageError(`--label-words expects label=word pairs separated by commas, got ${JSON.stringify(pair)}`)
    out[pair.slice(0, at).trim()] = pair.slice(at + 1).trim()
  }
  return out
}

function parseClassWeights(v: string | undefined): FitOptions['classWeights'] {
  if (v === undefined) return undefined
  if (v === 'balanced') return 'balanced'
  const ws = v.split(',').map(Number)
  if (ws.some((x) => !(x > 0))) throw new UsageError(`--class-weights must be 'balanced' or positive numbers separated by commas, got ${JSON.stringify(v)}`)
  return ws
}

async function demoCommand(argv: string[], io: CliIo): Promise<number> {
  const { values: a, positionals } = parse(
    argv,
    {
      base: { type: 'string' },
      method: { type: 'string' },
      epochs: { type: 'string' },
      'batch-size': { type: 'string' },
      lr: { type: 'string' },
      'max-length': { type: 'string' },
      seed: { type: 'string' },
      precision: { type: 'string' },
      device: { type: 'string' },
      out: { type: 'string' },
      'train-limit': { type: 'string' },
      'test-limit': { type: 'string' },
      json: { type: 'boolean' },
      quiet: { type: 'boolean' },
    },
    { hints: { model: BASE_NOT_MODEL } },
  )
  if (a.help) return void io.stdout.write(DEMO_HELP), 0
  noPositionals(positionals)
  const v = a as Record<string, string | undefined>
  // The demo's output is its own: a classifier saved there by an earlier demo is replaced.
  const problem = v.out === undefined ? undefined : outDirProblem(v.out, true)
  if (problem) throw new UsageError(`--out: ${problem}`)
  return runDemo(
    {
      base: v.base,
      method: oneOf<Method>(v.method, 'method', METHODS),
      epochs: num(v.epochs, 'epochs'),
      batchSize: int(v['batch-size'], 'batch-size'),
      learningRate: num(v.lr, 'lr'),
      maxLength: int(v['max-length'], 'max-length', 2),
      seed: int(v.seed, 'seed', 0),
      precision: oneOf(v.precision, 'precision', PRECISIONS),
      device: oneOf(v.device, 'device', DEVICES),
      out: v.out,
      trainLimit: int(v['train-limit'], 'train-limit'),
      testLimit: int(v['test-limit'], 'test-limit'),
      json: a.json === true,
      quiet: a.quiet === true,
    },
    io,
  )
}

async function train(argv: string[], io: CliIo): Promise<number> {
  const { values: a, positionals } = parse(argv, {
    data: { type: 'string' },
    eval: { type: 'string' },
    base: { type: 'string' },
    tokenizer: { type: 'string' },
    method: { type: 'string' },
    out: { type: 'string' },
    labels: { type: 'string' },
    epochs: { type: 'string' },
    'max-steps': { type: 'string' },
    'batch-size': { type: 'string' },
    lr: { type: 'string' },
    'max-length': { type: 'string' },
    truncation: { type: 'string' },
    pooling: { type: 'string' },
    'head-hidden': { type: 'string' },
    'lora-r': { type: 'string' },
    'lora-alpha': { type: 'string' },
    'label-words': { type: 'string' },
    prompt: { type: 'string' },
    'class-weights': { type: 'string' },
    'eval-steps': { type: 'string' },
    'on-invalid': { type: 'string' },
    seed: { type: 'string' },
    precision: { type: 'string' },
    device: { type: 'string' },
    overwrite: { type: 'boolean' },
    json: { type: 'boolean' },
    quiet: { type: 'boolean' },
  }, { hints: { model: BASE_NOT_MODEL } })
  if (a.help) return void io.stdout.write(TRAIN_HELP), 0
  noPositionals(positionals)
  const v = a as Record<string, string | undefined>
  const data = required(v.data, 'data')
  const out = required(v.out, 'out')
  const problem = outDirProblem(out, a.overwrite === true)
  if (problem) throw new UsageError(`--out: ${problem}`)
  for (const [flag, file] of [['data', data], ['eval', v.eval]] as const)
    if (file !== undefined && !fs.existsSync(file)) throw new UsageError(`--${flag}: no such file: ${file}`)
  const loraR = int(v['lora-r'], 'lora-r')
  const loraAlpha = num(v['lora-alpha'], 'lora-alpha')
  const headHidden = int(v['head-hidden'], 'head-hidden')
  const options: ErnieClassifierOptions = {
    model: v.base,
    method: oneOf<Method>(v.method, 'method', METHODS),
    labels: v.labels?.split(',').map((s) => s.trim()),
    maxLength: int(v['max-length'], 'max-length', 2),
    truncation: oneOf(v.truncation, 'truncation', ['head', 'head_tail'] as const),
    pooling: oneOf(v.pooling, 'pooling', ['last', 'mean', 'first'] as const),
    head: headHidden ? { hiddenSize: headHidden } : undefined,
    lora: loraR || loraAlpha ? { ...(loraR ? { r: loraR } : {}), ...(loraAlpha ? { alpha: loraAlpha } : {}) } : undefined,
    labelWords: parseLabelWords(v['label-words']),
    prompt: v.prompt,
    tokenizer: v.tokenizer,
    seed: int(v.seed, 'seed', 0),
    precision: oneOf(v.precision, 'precision', PRECISIONS),
    device: oneOf(v.device, 'device', DEVICES),
  }
  const reporter = a.quiet ? undefined : new ProgressReporter(io.stderr)
  const fitOptions: FitOptions = {
    evalData: v.eval,
    epochs: num(v.epochs, 'epochs'),
    maxSteps: int(v['max-steps'], 'max-steps'),
    batchSize: int(v['batch-size'], 'batch-size'),
    learningRate: num(v.lr, 'lr'),
    classWeights: parseClassWeights(v['class-weights']),
    evalSteps: int(v['eval-steps'], 'eval-steps'),
    onInvalid: oneOf(v['on-invalid'], 'on-invalid', ['error', 'skip'] as const),
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
    if (a.json) {
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
          finalLoss: result.finalLoss,
          metrics: result.metrics,
          data: result.data,
        }) + '\n',
      )
      return 0
    }
    for (const d of skipped) io.stderr.write(`${d!.source}: skipped ${d!.skipped.count} invalid records (${Object.entries(d!.skipped.reasons).map(([k, n]) => `${k}: ${n}`).join(', ')})\n`)
    // Classes the data implied are said so: a reader sees what was inferred (and classifier.json records it).
    const classes = `${clf.labels!.join(', ')}${options.labels ? '' : ', inferred from the data'}`
    io.stdout.write(`trained ${result.method} classifier (${classes}): ${result.steps} steps, ${result.epochs.toFixed(2)} epochs, ${result.seconds.toFixed(1)} s, final loss ${result.finalLoss.toFixed(4)}\n`)
    if (result.metrics) io.stdout.write(`\nevaluation on ${v.eval}:\n` + formatMetrics(result.metrics))
    io.stdout.write(`\nsaved to ${path.resolve(out)}\nreport: ${path.resolve(out, 'report.html')}\n`)
    return 0
  } finally {
    reporter?.finishLine()
    await clf.dispose()
  }
}

async function evaluate(argv: string[], io: CliIo): Promise<number> {
  const { values: a, positionals } = parse(argv, {
    model: { type: 'string' },
    data: { type: 'string' },
    base: { type: 'string' },
    'batch-size': { type: 'string' },
    'on-invalid': { type: 'string' },
    precision: { type: 'string' },
    device: { type: 'string' },
    json: { type: 'boolean' },
  })
  if (a.help) return void io.stdout.write(EVAL_HELP), 0
  noPositionals(positionals)
  const v = a as Record<string, string | undefined>
  const dir = required(v.model, 'model')
  const data = required(v.data, 'data')
  if (!fs.existsSync(data)) throw new UsageError(`--data: no such file: ${data}`)
  const batchSize = int(v['batch-size'], 'batch-size')
  const onInvalid = oneOf(v['on-invalid'], 'on-invalid', ['error', 'skip'] as const)
  const clf = await ErnieClassifier.load(dir, { model: v.base, precision: oneOf(v.precision, 'precision', PRECISIONS), device: oneOf(v.device, 'device', DEVICES) })
  try {
    const m = await clf.evaluate(data, { batchSize, onInvalid })
    if (a.json) io.stdout.write(JSON.stringify(m) + '\n')
    else {
      if (m.skipped.count > 0) io.stderr.write(`${data}: skipped ${m.skipped.count} invalid records (${Object.entries(m.skipped.reasons).map(([k, n]) => `${k}: ${n}`).join(', ')})\n`)
      io.stdout.write(formatMetrics(m))
    }
    return 0
  } finally {
    await clf.dispose()
  }
}

async function predict(argv: string[], io: CliIo): Promise<number> {
  const { values: a, positionals } = parse(argv, {
    model: { type: 'string' },
    base: { type: 'string' },
    'batch-size': { type: 'string' },
    precision: { type: 'string' },
    device: { type: 'string' },
  })
  if (a.help) return void io.stdout.write(PREDICT_HELP), 0
  const v = a as Record<string, string | undefined>
  const dir = required(v.model, 'model')
  const batchSize = int(v['batch-size'], 'batch-size') ?? 32
  const clf = await ErnieClassifier.load(dir, { model: v.base, precision: oneOf(v.precision, 'precision', PRECISIONS), device: oneOf(v.device, 'device', DEVICES) })
  const print = (texts: string[], ps: Prediction[]) => io.stdout.write(ps.map((p, i) => JSON.stringify({ text: texts[i], ...p })).join('\n') + '\n')
  try {
    if (positionals.length > 0) {
      print(positionals, await clf.predict(positionals, { batchSize }))
      return 0
    }
    // stdin: one text per line, answered in batches as they arrive
    const lines = readline.createInterface({ input: io.stdin, crlfDelay: Infinity })
    let pending: string[] = []
    const flush = async () => {
      if (pending.length === 0) return
      const texts = pending
      pending = []
      print(texts, await clf.predict(texts, { batchSize }))
    }
    for await (const line of lines) {
      if (line.trim() === '') continue
      pending.push(line)
      if (pending.length >= batchSize) await flush()
    }
    await flush()
    return 0
  } finally {
    await clf.dispose()
  }
}

async function pretrainCommand(argv: string[], io: CliIo): Promise<number> {
  const { values: a, positionals } = parse(argv, {
    text: { type: 'string', multiple: true },
    base: { type: 'string' },
    config: { type: 'string' },
    tokenizer: { type: 'string' },
    out: { type: 'string' },
    'seq-length': { type: 'string' },
    'batch-size': { type: 'string' },
    epochs: { type: 'string' },
    'max-steps': { type: 'string' },
    lr: { type: 'string' },
    'warmup-steps': { type: 'string' },
    'weight-decay': { type: 'string' },
    'eval-documents': { type: 'string' },
    'eval-steps': { type: 'string' },
    'save-steps': { type: 'string' },
    resume: { type: 'boolean' },
    seed: { type: 'string' },
    precision: { type: 'string' },
    device: { type: 'string' },
    json: { type: 'boolean' },
    quiet: { type: 'boolean' },
  })
  if (a.help) {
    io.stdout.write(PRETRAIN_HELP)
    return 0
  }
  noPositionals(positionals)
  const text = (a.text as unknown as string[] | undefined) ?? []
  if (text.length === 0) throw new UsageError('--text is required')
  const weightDecay = a['weight-decay'] === undefined ? undefined : Number(a['weight-decay'])
  if (weightDecay !== undefined && !(weightDecay >= 0)) throw new UsageError(`--weight-decay must be a number >= 0, got ${JSON.stringify(a['weight-decay'])}`)
  const out = await runPretrain(
    {
      text,
      base: a.base as string | undefined,
      // From random weights the architecture and tokenizer must be named; a base brings its own.
      config: a.base === undefined ? required(a.config as string | undefined, 'config') : (a.config as string | undefined),
      tokenizer: a.base === undefined ? required(a.tokenizer as string | undefined, 'tokenizer') : (a.tokenizer as string | undefined),
      out: required(a.out as string | undefined, 'out'),
      options: {
        seqLength: int(a['seq-length'] as string | undefined, 'seq-length', 2),
        batchSize: int(a['batch-size'] as string | undefined, 'batch-size'),
        epochs: int(a.epochs as string | undefined, 'epochs'),
        maxSteps: int(a['max-steps'] as string | undefined, 'max-steps'),
        learningRate: num(a.lr as string | undefined, 'lr'),
        warmupSteps: int(a['warmup-steps'] as string | undefined, 'warmup-steps', 0),
        weightDecay,
        evalDocuments: int(a['eval-documents'] as string | undefined, 'eval-documents', 0),
        evalSteps: int(a['eval-steps'] as string | undefined, 'eval-steps'),
        saveSteps: int(a['save-steps'] as string | undefined, 'save-steps', 0),
        resume: a.resume === true,
        seed: int(a.seed as string | undefined, 'seed', 0),
        precision: oneOf(a.precision as string | undefined, 'precision', PRECISIONS),
        device: oneOf(a.device as string | undefined, 'device', DEVICES),
      },
      json: a.json === true,
      quiet: a.quiet === true,
    },
    io.stderr,
    io.signal,
  )
  io.stdout.write(out)
  return io.signal?.aborted ? 130 : 0
}

function version(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json')
    if (fs.existsSync(pkg)) return JSON.parse(fs.readFileSync(pkg, 'utf8')).version
    if (path.dirname(dir) === dir) return 'unknown'
  }
}

/** Runs the command line; resolves to the exit code. */
export async function main(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv
  try {
    switch (command) {
      case 'train':
        return await train(rest, io)
      case 'eval':
      case 'evaluate':
        return await evaluate(rest, io)
      case 'predict':
        return await predict(rest, io)
      case 'pretrain':
        return await pretrainCommand(rest, io)
      case 'demo':
        return await demoCommand(rest, io)
      case 'export':
        return await runExport(rest, io)
      case 'serve':
        return await runServe(rest, io)
      case '-h':
      case '--help':
      case 'help':
        io.stdout.write(MAIN_HELP)
        return 0
      case '-v':
      case '--version':
        io.stdout.write(version() + '\n')
        return 0
      case undefined:
        io.stderr.write(MAIN_HELP)
        return 2
      default:
        throw new UsageError(`unknown command ${JSON.stringify(command)}`)
    }
  } catch (e) {
    if (e instanceof UsageError) {
      io.stderr.write(`ernie-sentiment: ${e.message}\nRun 'ernie-sentiment ${command && ['train', 'eval', 'predict', 'pretrain', 'demo', 'export'].includes(command) ? command + ' ' : ''}--help' for usage.\n`)
      return 2
    }
    const err = e as Error & { code?: string }
    io.stderr.write(`ernie-sentiment: ${err.code ? `[${err.code}] ` : ''}${err.message}\n`)
    if (process.env.ERNIE_DEBUG) io.stderr.write(`${err.stack}\n`)
    return 1
  }
}
