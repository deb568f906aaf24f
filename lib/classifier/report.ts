// report.html: a self-contained page a person opens after training: the metrics, the loss and
// accuracy by step as inline SVG charts, the confusion matrix and the settings. No scripts, no
// external files.
import type { BaseModelRef, ClassifierJson, TrainingSettings } from './format'
import { maxOf, minOf } from '../util/extent'

function esc(s: unknown): string {
  return String(s).replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!)
}

function fmt(x: number | undefined, digits = 4): string {
  return x === undefined || !Number.isFinite(x) ? '–' : x.toFixed(digits)
}

interface Series {
  name: string
  color: string
  points: Array<[number, number]>
  dots?: boolean
}

// Points drawn per series: more than the chart's 640 pixels show, few enough that a run of
// hundreds of thousands of steps still gives a page of a few hundred kilobytes.
const MAX_DRAWN_POINTS = 2000

/** At most `max` of the points, evenly spaced, the last one kept. */
function everyNth<T>(points: T[], max: number): T[] {
  if (points.length <= max) return points
  const stride = Math.ceil(points.length / max)
  const out = points.filter((_, i) => i % stride === 0)
  if ((points.length - 1) % stride !== 0) out.push(points[points.length - 1])
  return out
}

/** A line chart of several series over steps, as an SVG element. */
export function lineChart(title: string, series: Series[], yRange?: [number, number]): string {
  const W = 640
  const Hh = 260
  const m = { l: 56, r: 16, t: 46, b: 36 }
  const all = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y))
  if (all.length === 0) return `<p class="muted">${esc(title)}: no data.</p>`
  const xMin = minOf(all.map(([x]) => x))
  const xMax = Math.max(maxOf(all.map(([x]) => x)), xMin + 1)
  let [yMin, yMax] = yRange ?? [minOf(all.map(([, y]) => y)), maxOf(all.map(([, y]) => y))]
  if (yMax - yMin < 1e-9) (yMin -= 0.5), (yMax += 0.5)
  const sx = (x: number) => m.l + ((x - xMin) / (xMax - xMin)) * (W - m.l - m.r)
  const sy = (y: number) => Hh - m.b - ((y - yMin) / (yMax - yMin)) * (Hh - m.t - m.b)
  const parts: string[] = []
  parts.push(`<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 ${W} ${Hh}" width="${W}" height="${Hh}" role="img" aria-label="${esc(title)}">`)
  parts.push(`<text x="${m.l}" y="18" font-size="14" font-weight="bold">${esc(title)}</text>`)
  for (let i = 0; i <= 4; i++) {
    const y = yMin + ((yMax - yMin) * i) / 4
    parts.push(`<line x1="${m.l}" x2="${W - m.r}" y1="${sy(y).toFixed(1)}" y2="${sy(y).toFixed(1)}" stroke="#ddd"/>`)
    parts.push(`<text x="${m.l - 6}" y="${(sy(y) + 4).toFixed(1)}" font-size="11" text-anchor="end">${esc(fmt(y, 3))}</text>`)
  }
  for (let i = 0; i <= 4; i++) {
    const x = xMin + ((xMax - xMin) * i) / 4
    parts.push(`<text x="${sx(x).toFixed(1)}" y="${Hh - m.b + 16}" font-size="11" text-anchor="middle">${Math.round(x)}</text>`)
  }
  parts.push(`<text x="${(W + m.l) / 2}" y="${Hh - 4}" font-size="11" text-anchor="middle">step</text>`)
  series.forEach((s, k) => {
    const pts = everyNth(s.points.filter(([, y]) => Number.isFinite(y)), MAX_DRAWN_POINTS)
    if (pts.length === 0) return
    const d = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(' ')
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"/>`)
    if (s.dots || pts.length === 1) for (const [x, y] of pts) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(y).toFixed(1)}" r="3" fill="${s.color}"/>`)
    // the legend, in a row under the title, clear of the lines
    const x = m.l + k * 190
    parts.push(`<rect x="${x}" y="27" width="10" height="10" fill="${s.color}"/>`)
    parts.push(`<text x="${x + 15}" y="36" font-size="11">${esc(s.name)}</text>`)
  })
  parts.push('</svg>')
  return parts.join('')
}

// Moving average over the last `window` points, so a noisy per-step loss reads as a trend: a
// running sum (a long run has hundreds of thousands of steps and a window of thousands). A window
// holding a non-finite loss gives NaN, which the chart leaves out.
export function smooth(points: Array<[number, number]>, window: number): Array<[number, number]> {
  if (window <= 1) return points
  const out: Array<[number, number]> = []
  let sum = 0, nonFinite = 0
  points.forEach(([x, y], i) => {
    if (Number.isFinite(y)) sum += y
    else nonFinite++
    if (i >= window) {
      const old = points[i - window][1]
      if (Number.isFinite(old)) sum -= old
      else nonFinite--
    }
    out.push([x, nonFinite > 0 ? NaN : sum / Math.min(i + 1, window)])
  })
  return out
}

function confusionTable(labels: string[], matrix: number[][]): string {
  const max = Math.max(1, maxOf(matrix.flat()))
  const head = `<tr><th>true \\ predicted</th>${labels.map((l) => `<th>${esc(l)}</th>`).join('')}</tr>`
  const rows = matrix
    .map((row, i) => {
      const cells = row
        .map((v, j) => {
          const a = (0.08 + 0.6 * (v / max)).toFixed(2)
          const color = i === j ? `rgba(46,125,50,${a})` : `rgba(198,40,40,${a})`
          return `<td style="background:${color}">${v}</td>`
        })
        .join('')
      return `<tr><th>${esc(labels[i])}</th>${cells}</tr>`
    })
    .join('')
  return `<table class="confusion">${head}${rows}</table>`
}

function baseName(ref: BaseModelRef | string): string {
  if (typeof ref === 'string') return ref
  return ref.kind === 'bundled' ? `${ref.ref} (bundled with the package)` : ref.ref
}

// A setting's value as the report shows it.
function settingText(v: unknown): string {
  if (Array.isArray(v)) return v.join(', ')
  if (v && typeof v === 'object')
    return Object.entries(v)
      .map(([k, x]) => `${k} ${Array.isArray(x) ? x.join(', ') : String(x)}`)
      .join(' · ')
  return String(v)
}

function settingsTable(settings: TrainingSettings): string {
  const rows = Object.entries(settings).filter(([, v]) => v !== undefined)
  return `<table class="kv">${rows.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(settingText(v))}</td></tr>`).join('')}</table>`
}

/** The report for a saved classifier's metadata. */
export function renderReport(meta: ClassifierJson): string {
  const t = meta.training
  const m = meta.metrics
  const sections: string[] = []
  const summary: Array<[string, string]> = [
    ['method', meta.method],
    ['base model', `${meta.base.kind === 'saved' && meta.base.trainedFrom ? `${meta.base.trainedFrom} (fine-tuned copy saved here)` : baseName(meta.base)} · ${meta.base.modelType}, ${meta.base.numHiddenLayers} layers, hidden ${meta.base.hiddenSize}, ${(meta.base.numParameters / 1e6).toFixed(2)}M parameters`],
    ['labels', meta.labels.names.join(', ')],
    ['max length', `${meta.maxLength} tokens (${meta.truncation === 'head_tail' ? 'head + tail' : 'head'} truncation), ${meta.pooling} pooling`],
  ]
  if (t) {
    summary.push(['training', `${t.steps} steps, ${fmt(t.epochs, 2)} epochs, ${fmt(t.seconds, 1)} s, stopped: ${t.stopReason}`])
    summary.push(['training data', `${t.data.train.source}: ${t.data.train.examples} examples${t.data.train.skipped.count ? `, ${t.data.train.skipped.count} skipped` : ''}${t.data.train.classCounts ? ` (${Object.entries(t.data.train.classCounts).map(([k, v]) => `${k} ${v}`).join(', ')})` : ''}`])
    if (t.data.eval) summary.push(['evaluation data', `${t.data.eval.source}: ${t.data.eval.examples} examples${t.data.eval.skipped.count ? `, ${t.data.eval.skipped.count} skipped` : ''}`])
  }
  sections.push(`<table class="kv">${summary.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</table>`)

  if (m) {
    sections.push('<h2>Evaluation</h2>')
    sections.push(
      `<p class="big">accuracy <b>${fmt(m.accuracy * 100, 2)}%</b> · macro-F1 <b>${fmt(m.macroF1, 4)}</b> · loss <b>${fmt(m.loss, 4)}</b> · ${m.count} examples</p>`,
    )
    const rows = m.labels
      .map((l) => {
        const c = m.perClass[l]
        return `<tr><th>${esc(l)}</th><td>${fmt(c.precision)}</td><td>${fmt(c.recall)}</td><td>${fmt(c.f1)}</td><td>${c.support}</td></tr>`
      })
      .join('')
    sections.push(`<table class="grid"><tr><th>class</th><th>precision</th><th>recall</th><th>F1</th><th>support</th></tr>${rows}</table>`)
    sections.push('<h3>Confusion matrix</h3>')
    sections.push(confusionTable(m.labels, m.confusion))
  }

  if (t && t.history.length > 0) {
    sections.push('<h2>Training</h2>')
    const loss: Array<[number, number]> = t.history.map((h) => [h.step, h.loss])
    const window = Math.max(1, Math.round(t.history.length / 40))
    const lossSeries: Series[] = [{ name: window > 1 ? `train loss (mean of ${window})` : 'train loss', color: '#1565c0', points: smooth(loss, window) }]
    if (t.evalHistory.length > 0) lossSeries.push({ name: 'eval loss', color: '#ef6c00', points: t.evalHistory.map((e) => [e.step, e.loss]), dots: true })
    sections.push(lineChart('Loss by step', lossSeries))
    const acc: Series[] = []
    const trainAcc = t.history.filter((h) => h.accuracy !== undefined).map((h) => [h.step, h.accuracy!] as [number, number])
    if (trainAcc.length > 0) acc.push({ name: window > 1 ? `train accuracy (mean of ${window})` : 'train accuracy', color: '#1565c0', points: smooth(trainAcc, window) })
    if (t.evalHistory.length > 0) {
      acc.push({ name: 'eval accuracy', color: '#ef6c00', points: t.evalHistory.map((e) => [e.step, e.accuracy]), dots: true })
      acc.push({ name: 'eval macro-F1', color: '#6a1b9a', points: t.evalHistory.map((e) => [e.step, e.macroF1]), dots: true })
    }
    if (acc.length > 0) sections.push(lineChart('Accuracy by step', acc, [0, 1]))
    if (t.settings) sections.push(`<h3>Settings used</h3><p class="muted">defaults resolved</p>${settingsTable(t.settings)}`)
    const opts = Object.entries(t.options).filter(([, v]) => v !== undefined && typeof v !== 'object')
    if (opts.length > 0) sections.push(`<h3>Options passed to fit</h3><table class="kv">${opts.map(([k, v]) => `<tr><th>${esc(k)}</th><td>${esc(v)}</td></tr>`).join('')}</table>`)
    const skipped = [t.data.train, t.data.eval].filter((d) => d && d.skipped.count > 0)
    for (const d of skipped)
      sections.push(
        `<h3>Skipped records in ${esc(d!.source)}</h3><p>${Object.entries(d!.skipped.reasons).map(([k, v]) => `${esc(k)}: ${v}`).join(', ')}</p><ul>${d!.skipped.first.map((f) => `<li>${esc(f.where)}: ${esc(f.problem)}</li>`).join('')}</ul>`,
      )
  }

  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>ernie-sentiment classifier report</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;max-width:760px;margin:24px auto;padding:0 16px;color:#222}
h1{font-size:20px}h2{font-size:17px;margin-top:28px}h3{font-size:15px}
table{border-collapse:collapse;margin:8px 0}th,td{padding:4px 10px;border:1px solid #ddd;text-align:left}
table.kv th{background:#f6f6f6;font-weight:600;white-space:nowrap}
table.grid td,table.confusion td{text-align:right;font-variant-numeric:tabular-nums}
.big{font-size:16px}.muted{color:#777}
</style></head><body>
<h1>ernie-sentiment classifier</h1>
<p class="muted">saved ${esc(meta.savedAt)} by ${esc(meta.library.name)} ${esc(meta.library.version)}</p>
${sections.join('\n')}
</body></html>
`
}
