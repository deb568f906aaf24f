// `ernie-sentiment eval`: accuracy, macro-F1, per-class scores, loss and the confusion matrix of a
// saved classifier, from flags or a run file: as with `erniekit eval run.yaml`, the file train
// used evaluates what it saved (output_dir) on its eval data (eval_dataset_path).
import * as fs from 'node:fs'

import { ErnieClassifier } from '../classifier/classifier'
import { UsageError } from './args'
import { formatMetrics } from './format'
import type { CliIo } from './io'
import { flag, formatConfig, helpText, integer, need, option, origin, readCommandLine, text, type CommandSpec } from './settings'
import { TRAIN_OPTIONS } from './train'

// A run file is train's: eval takes from it where train saved the classifier and the held-out
// data (train's own data is what it trained on), not the base model or precision, which the
// saved classifier records itself.
export const EVAL_OPTIONS = {
  model: option(text('DIR'), 'the saved classifier (required)', { keys: ['out'], erniekit: ['output_dir'] }),
  data: option(text('FILE'), 'labelled data (required; same formats as train)', { keys: ['eval'], erniekit: ['eval_dataset_path'] }),
  base: option(text('DIR|ID'), 'use this base model instead of the one the classifier names', { only: 'flag' }),
  'batch-size': option(integer(1), 'texts per forward pass (default 32)', { keys: [], erniekit: ['per_device_eval_batch_size'] }),
  'on-invalid': TRAIN_OPTIONS['on-invalid'],
  precision: option(TRAIN_OPTIONS.precision.type, 'auto | fp32 | bf16 (default: ERNIE_PRECISION, else as saved)', { only: 'flag' }),
  device: TRAIN_OPTIONS.device,
  json: option(flag, 'print one JSON object'),
}

export const EVAL: CommandSpec<typeof EVAL_OPTIONS> = {
  name: 'eval',
  usage: '--model DIR --data FILE [options]',
  about: `Evaluates a saved classifier: accuracy, macro-F1, per-class precision / recall / F1, loss and
the confusion matrix. A run file is train's: eval evaluates the classifier train saved (out,
output_dir) on the held-out data (eval, eval_dataset_path) and leaves train's other keys.`,
  options: EVAL_OPTIONS,
  runFile: { sharedWith: () => [TRAIN_OPTIONS] },
  hints: { model: "in a run file the classifier is out (or output_dir), where train saved it" },
}

export async function evalCommand(argv: string[], io: CliIo): Promise<number> {
  const cl = readCommandLine(EVAL, argv, io.stderr)
  if (cl.help) return void io.stdout.write(helpText(EVAL)), 0
  const v = cl.values
  const dir = need(EVAL, cl, 'model')
  const data = need(EVAL, cl, 'data')
  if (!fs.existsSync(data)) throw new UsageError(`${origin(cl, 'data')}: no such file: ${data}`)
  if (cl.printConfig) return void io.stdout.write(formatConfig(EVAL, cl)), 0
  const clf = await ErnieClassifier.load(dir, { model: v.base, precision: v.precision, device: v.device })
  try {
    const m = await clf.evaluate(data, { batchSize: v['batch-size'], onInvalid: v['on-invalid'] })
    if (v.json) io.stdout.write(JSON.stringify(m) + '\n')
    else {
      if (m.skipped.count > 0) io.stderr.write(`${data}: skipped ${m.skipped.count} invalid records (${Object.entries(m.skipped.reasons).map(([k, n]) => `${k}: ${n}`).join(', ')})\n`)
      io.stdout.write(formatMetrics(m))
    }
    return 0
  } finally {
    await clf.dispose()
  }
}
