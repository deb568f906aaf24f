// `ernie-sentiment predict`: labels texts given as arguments, or each line of stdin, with a saved
// classifier: one JSON line per text, {"text", "label", "score", "scores"}.
import { ErnieClassifier } from '../classifier/classifier'
import type { CliIo } from './io'
import { flag, helpText, integer, need, option, readCommandLine, text, type CommandSpec } from './settings'
import { answerLines, isInteractive, PIPED_FLUSH_MS } from './stdin-lines'
import { TRAIN_OPTIONS } from './train'

const DEFAULT_BATCH_SIZE = 32

/** The options predict and compare share: the model's settings and how stdin is read. */
export const PREDICTION_OPTIONS = {
  'batch-size': option(integer(1), `texts per forward pass (default ${DEFAULT_BATCH_SIZE})`),
  precision: option(TRAIN_OPTIONS.precision.type, 'auto | fp32 | bf16 (default: ERNIE_PRECISION, else as saved)'),
  device: option(TRAIN_OPTIONS.device.type, 'cpu | cuda | auto (default auto, or ERNIE_DEVICE)'),
  interactive: option(flag, `answer each stdin line as soon as it is read (the default on a terminal;\npiped lines go in batches, a batch not full after ${PIPED_FLUSH_MS} ms)`),
}

export const PREDICT_OPTIONS = {
  model: option(text('DIR'), 'the saved classifier (required)'),
  base: option(text('DIR|ID'), 'use this base model instead of the one the classifier names'),
  ...PREDICTION_OPTIONS,
}

export const PREDICT: CommandSpec<typeof PREDICT_OPTIONS> = {
  name: 'predict',
  usage: '--model DIR [TEXT ...]',
  about: `Labels each TEXT, or each line of stdin when no TEXT is given, printing one JSON object per
text: {"text", "label", "score", "scores"}.`,
  options: PREDICT_OPTIONS,
  texts: true,
}

/**
 * Answers the texts given as arguments at once, or stdin's lines as they come: each at once when
 * interactive (a terminal, or --interactive), else in batches of up to `batch-size` that also go
 * PIPED_FLUSH_MS after they could start. `answer` gives one output (a line of text) per text.
 */
export async function answerTexts(
  texts: string[],
  options: { 'batch-size'?: number; interactive?: boolean },
  io: CliIo,
  answer: (texts: string[], batchSize: number) => Promise<string[]>,
): Promise<void> {
  const batchSize = options['batch-size'] ?? DEFAULT_BATCH_SIZE
  if (texts.length > 0) return void io.stdout.write((await answer(texts, batchSize)).join(''))
  const flushMs = options.interactive || isInteractive(io.stdin) ? 0 : PIPED_FLUSH_MS
  await answerLines(io.stdin, { batchSize, flushMs }, (lines) => answer(lines, batchSize), (out) => io.stdout.write(out), io.signal)
}

export async function predictCommand(argv: string[], io: CliIo): Promise<number> {
  const cl = readCommandLine(PREDICT, argv, io.stderr)
  if (cl.help) return void io.stdout.write(helpText(PREDICT)), 0
  const v = cl.values
  const dir = need(PREDICT, cl, 'model')
  const clf = await ErnieClassifier.load(dir, { model: v.base, precision: v.precision, device: v.device })
  try {
    await answerTexts(cl.texts, v, io, async (texts, batchSize) => {
      const ps = await clf.predict(texts, { batchSize })
      return ps.map((p, i) => JSON.stringify({ text: texts[i], ...p }) + '\n')
    })
    return io.signal?.aborted ? 130 : 0
  } finally {
    await clf.dispose()
  }
}
