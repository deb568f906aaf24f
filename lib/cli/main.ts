// The `ernie-sentiment` command line: each command lives in its own file (train, eval, predict,
// compare, pretrain, sft, demo, export, serve); this one dispatches and reports.
// Results go to stdout (text, or JSON with --json; predict prints JSON lines), progress and
// errors to stderr. Exit codes: 0 success, 1 failure, 2 bad usage, 130 interrupted.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { UsageError } from './args'
import { compareCommand } from './compare'
import { demoCommand } from './demo'
import { dpoCommand } from './dpo'
import { evalCommand } from './eval'
import { runExport } from './export'
import { runServe } from './serve'
import { formatMetrics } from './format'
import type { CliIo } from './io'
import { predictCommand } from './predict'
import { pretrainCommand } from './pretrain'
import { sftCommand } from './sft'
import { trainCommand } from './train'

export { formatMetrics }
export type { CliIo }

const MAIN_HELP = `Usage: ernie-sentiment <command> [options]

Sentiment classifiers and chat models on ERNIE-4.5 / Qwen3, trained and run on the CPU.

Commands:
  train     train a classifier on labelled data and save it (with report.html)
  eval      accuracy, macro-F1 and the confusion matrix of a saved classifier
  predict   label texts given as arguments, or one per line on stdin (JSON lines out)
  compare   several saved classifiers on the same texts, side by side
  pretrain  pre-train a model from random weights on raw text (one document per line)
  sft       fine-tune a base model on conversations with LoRA (a chat adapter)
  dpo       preference tuning (DPO / IPO) of a model or an SFT output on preference pairs
  demo      fine-tune on the bundled ChnSentiCorp, then report test accuracy and sample predictions
  export    a classifier or LoRA adapter as a merged checkpoint (Hugging Face or ERNIEKit layout)
  serve     an HTTP server for saved classifiers (POST /v1/classify, /health, /metrics)

train, eval, pretrain, sft, dpo, export and serve also read their settings from a run file
(YAML, ERNIEKit's keys understood): ernie-sentiment train run.yaml [options].

Run 'ernie-sentiment <command> --help' for a command's options.
Options:
  -h, --help       this help
  -v, --version    the package version
`

function version(): string {
  for (let dir = __dirname; ; dir = path.dirname(dir)) {
    const pkg = path.join(dir, 'package.json')
    if (fs.existsSync(pkg)) return JSON.parse(fs.readFileSync(pkg, 'utf8')).version
    if (path.dirname(dir) === dir) return 'unknown'
  }
}

const COMMANDS = ['train', 'eval', 'predict', 'compare', 'pretrain', 'sft', 'dpo', 'demo', 'export', 'serve']

/** Runs the command line; resolves to the exit code. */
export async function main(argv: string[], io: CliIo): Promise<number> {
  const [command, ...rest] = argv
  try {
    switch (command) {
      case 'train':
        return await trainCommand(rest, io)
      case 'eval':
      case 'evaluate':
        return await evalCommand(rest, io)
      case 'predict':
        return await predictCommand(rest, io)
      case 'compare':
        return await compareCommand(rest, io)
      case 'pretrain':
        return await pretrainCommand(rest, io)
      case 'sft':
        return await sftCommand(rest, io)
      case 'dpo':
        return await dpoCommand(rest, io)
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
      io.stderr.write(`ernie-sentiment: ${e.message}\nRun 'ernie-sentiment ${command && COMMANDS.includes(command) ? command + ' ' : ''}--help' for usage.\n`)
      return 2
    }
    const err = e as Error & { code?: string }
    io.stderr.write(`ernie-sentiment: ${err.code ? `[${err.code}] ` : ''}${err.message}\n`)
    if (process.env.ERNIE_DEBUG) io.stderr.write(`${err.stack}\n`)
    return 1
  }
}
