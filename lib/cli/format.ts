// Terminal tables shared by the commands.
import type { EvaluateResult } from '../classifier/metrics'
import { maxOf } from '../util/extent'

function pct(x: number): string {
  return `${(x * 100).toFixed(2)}%`
}

/** Metrics as a terminal table. */
export function formatMetrics(m: EvaluateResult): string {
  const lines: string[] = []
  const correct = m.confusion.reduce((a, row, i) => a + row[i], 0)
  lines.push(`accuracy  ${m.accuracy.toFixed(4)}  (${correct}/${m.count}, ${pct(m.accuracy)})`)
  lines.push(`macro-F1  ${m.macroF1.toFixed(4)}`)
  lines.push(`loss      ${m.loss.toFixed(4)}`)
  lines.push('')
  const w = Math.max(10, maxOf(m.labels.map((l) => l.length + 2)))
  lines.push('confusion matrix (rows: true label, columns: predicted)')
  lines.push(' '.repeat(w) + m.labels.map((l) => l.padStart(w)).join(''))
  m.confusion.forEach((row, i) => lines.push(m.labels[i].padEnd(w) + row.map((v) => String(v).padStart(w)).join('')))
  lines.push('')
  lines.push('class'.padEnd(w) + ['precision', 'recall', 'f1', 'support'].map((h) => h.padStart(11)).join(''))
  for (const l of m.labels) {
    const c = m.perClass[l]
    lines.push(l.padEnd(w) + [c.precision.toFixed(4), c.recall.toFixed(4), c.f1.toFixed(4), String(c.support)].map((v) => v.padStart(11)).join(''))
  }
  return lines.join('\n') + '\n'
}
