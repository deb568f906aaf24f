// Training progress for the terminal: one redrawn bar on a TTY (step, loss, accuracy, ETA), plain
// lines every ~5% (and on evaluations) when the output is piped or logged.
import type { FitProgress } from '../classifier/classifier'

export function formatDuration(seconds: number): string {
  if (!Number.isFinite(seconds) || seconds < 0) return '--:--'
  const s = Math.round(seconds)
  const h = Math.floor(s / 3600)
  const m = Math.floor((s % 3600) / 60)
  const r = s % 60
  return h > 0 ? `${h}:${String(m).padStart(2, '0')}:${String(r).padStart(2, '0')}` : `${m}:${String(r).padStart(2, '0')}`
}

export interface ProgressStream {
  write(s: string): unknown
  isTTY?: boolean
  columns?: number
}

export class ProgressReporter {
  private lastLine = -1
  private drawn = false
  private lastPhase: string | undefined
  private lastEval: FitProgress['eval']

  constructor(private readonly out: ProgressStream) {}

  update(p: FitProgress): void {
    if (p.eval) this.lastEval = p.eval
    const text = this.describe(p)
    if (this.out.isTTY) {
      const width = Math.max(20, (this.out.columns ?? 100) - 1)
      this.out.write(`\r\x1b[2K${text.slice(0, width)}`)
      this.drawn = true
      if (p.step >= p.totalSteps && p.phase === 'features') this.finishLine()
      return
    }
    // piped: a line every ~5% of the phase, on evaluations and at the end
    const every = Math.max(1, Math.round(p.totalSteps / 20))
    const bucket = Math.floor(p.step / every)
    if (p.phase !== this.lastPhase) this.lastLine = -1
    this.lastPhase = p.phase
    if (bucket !== this.lastLine || p.eval || p.step >= p.totalSteps) {
      this.lastLine = bucket
      this.out.write(text + '\n')
    }
  }

  /** Ends a drawn bar's line (before other output). */
  finishLine(): void {
    if (this.drawn) this.out.write('\n')
    this.drawn = false
  }

  private describe(p: FitProgress): string {
    const frac = p.totalSteps > 0 ? Math.min(1, p.step / p.totalSteps) : 0
    const parts: string[] = []
    if (this.out.isTTY) {
      const w = 24
      const full = Math.round(frac * w)
      parts.push(`${p.phase === 'features' ? 'features' : 'train'} [${'#'.repeat(full)}${'.'.repeat(w - full)}]`)
    } else parts.push(p.phase === 'features' ? 'features' : 'train')
    parts.push(p.phase === 'features' ? `${p.step}/${p.totalSteps} texts` : `step ${p.step}/${p.totalSteps}`)
    if (p.phase === 'train') {
      parts.push(`epoch ${p.epoch.toFixed(2)}`)
      if (p.loss !== undefined) parts.push(`loss ${p.loss.toFixed(4)}`)
      if (p.accuracy !== undefined) parts.push(`acc ${p.accuracy.toFixed(3)}`)
      if (this.lastEval) parts.push(`eval acc ${this.lastEval.accuracy.toFixed(3)} f1 ${this.lastEval.macroF1.toFixed(3)}`)
    }
    parts.push(`ETA ${formatDuration(p.etaSeconds)}`)
    return parts.join('  ')
  }
}
