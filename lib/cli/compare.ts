// `ernie-sentiment compare`: several saved classifiers on the same texts, side by side (the Qwen3
// recipe's --load_all): a table per text on a terminal, one JSON line per text when piped.
import { ErnieClassifier, type Prediction } from '../classifier/classifier'
import { maxOf } from '../util/extent'
import { namedModels } from './args'
import type { CliIo } from './io'
import { PREDICTION_OPTIONS, answerTexts } from './predict'
import { files, flag, helpText, need, option, readCommandLine, type CommandSpec } from './settings'

export const COMPARE_OPTIONS = {
  model: option(files('DIR|NAME=DIR'), 'a saved classifier, named by its directory or NAME (repeat it: the\nclassifiers to compare)', { multiple: true }),
  ...PREDICTION_OPTIONS,
  json: option(flag, 'JSON lines on a terminal too'),
}

export const COMPARE: CommandSpec<typeof COMPARE_OPTIONS> = {
  name: 'compare',
  usage: '--model DIR|NAME=DIR --model DIR|NAME=DIR ... [TEXT ...]',
  about: `Labels each TEXT, or each line of stdin when no TEXT is given, with every classifier. On a
terminal: a table per text, a row per classifier with its label and the score of each class.
Piped: one JSON object per text, {"text", "predictions": {NAME: {"label", "score", "scores"}}}.`,
  options: COMPARE_OPTIONS,
  texts: true,
}

/** One text's predictions as a table: a row per classifier, its label and each class's score. */
export function formatComparison(text: string, names: string[], predictions: Prediction[]): string {
  const classes = [...new Set(predictions.flatMap((p) => Object.keys(p.scores)))]
  const rows = [['model', 'label', ...classes], ...predictions.map((p, i) => [names[i], p.label, ...classes.map((c) => (c in p.scores ? p.scores[c].toFixed(3) : '-'))])]
  const widths = rows[0].map((_, col) => maxOf(rows.map((r) => r[col].length)))
  const line = (r: string[]) => '  ' + r.map((cell, col) => (col < 2 ? cell.padEnd(widths[col]) : cell.padStart(widths[col]))).join('  ')
  return [text, ...rows.map(line)].join('\n') + '\n'
}

export async function compareCommand(argv: string[], io: CliIo): Promise<number> {
  const cl = readCommandLine(COMPARE, argv, io.stderr)
  if (cl.help) return void io.stdout.write(helpText(COMPARE)), 0
  const v = cl.values
  const models = namedModels(need(COMPARE, cl, 'model'), (dir) => dir)
  const table = io.stdout.isTTY === true && v.json !== true
  const classifiers: ErnieClassifier[] = []
  try {
    for (const { dir } of models) classifiers.push(await ErnieClassifier.load(dir, { precision: v.precision, device: v.device }))
    const names = models.map((m) => m.name)
    await answerTexts(cl.texts, v, io, async (texts, batchSize) => {
      const byModel: Prediction[][] = []
      for (const clf of classifiers) byModel.push(await clf.predict(texts, { batchSize }))
      return texts.map((text, i) => {
        const row = byModel.map((ps) => ps[i])
        if (table) return formatComparison(text, names, row)
        return JSON.stringify({ text, predictions: Object.fromEntries(names.map((n, m) => [n, row[m]])) }) + '\n'
      })
    })
    return io.signal?.aborted ? 130 : 0
  } finally {
    for (const clf of classifiers) await clf.dispose()
  }
}
