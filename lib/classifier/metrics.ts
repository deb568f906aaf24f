// Classification metrics from true classes and predicted distributions.

export interface ClassMetrics {
  precision: number
  recall: number
  f1: number
  /** Examples of this class in the data. */
  support: number
}

export interface EvaluateResult {
  /** Fraction predicted right. */
  accuracy: number
  /** The unweighted mean of the classes' F1. */
  macroF1: number
  perClass: Record<string, ClassMetrics>
  /** confusion[i][j]: examples of class labels[i] predicted as labels[j]. */
  confusion: number[][]
  /** Class names, the confusion matrix's order. */
  labels: string[]
  /** Mean cross-entropy of the predicted distributions (natural log). */
  loss: number
  /** Examples evaluated. */
  count: number
}

const TINY = 1e-12

/** `probs` holds one distribution per example, [N * C] row-major. */
export function classificationMetrics(truth: ArrayLike<number>, probs: Float32Array | Float64Array, labels: readonly string[]): EvaluateResult {
  const C = labels.length
  const N = truth.length
  if (probs.length !== N * C) throw new RangeError(`metrics: ${probs.length} probabilities for ${N} examples of ${C} classes`)
  const confusion = Array.from({ length: C }, () => new Array<number>(C).fill(0))
  let correct = 0
  let loss = 0
  for (let i = 0; i < N; i++) {
    let best = 0
    for (let c = 1; c < C; c++) if (probs[i * C + c] > probs[i * C + best]) best = c
    const y = truth[i]
    confusion[y][best]++
    if (best === y) correct++
    loss -= Math.log(Math.max(probs[i * C + y], TINY))
  }
  const perClass: Record<string, ClassMetrics> = {}
  let f1Sum = 0
  labels.forEach((name, c) => {
    const tp = confusion[c][c]
    const support = confusion[c].reduce((a, b) => a + b, 0)
    const predicted = confusion.reduce((a, row) => a + row[c], 0)
    const precision = predicted > 0 ? tp / predicted : 0
    const recall = support > 0 ? tp / support : 0
    const f1 = precision + recall > 0 ? (2 * precision * recall) / (precision + recall) : 0
    perClass[name] = { precision, recall, f1, support }
    f1Sum += f1
  })
  return {
    accuracy: N > 0 ? correct / N : NaN,
    macroF1: C > 0 ? f1Sum / C : NaN,
    perClass,
    confusion,
    labels: [...labels],
    loss: N > 0 ? loss / N : NaN,
    count: N,
  }
}

/** Softmax of each row of `logits` [N * C], in float64 for the sums. */
export function softmaxRows(logits: ArrayLike<number>, C: number): Float32Array {
  const out = new Float32Array(logits.length)
  for (let r = 0; r < logits.length; r += C) {
    let mx = -Infinity
    for (let c = 0; c < C; c++) mx = Math.max(mx, logits[r + c])
    let sum = 0
    for (let c = 0; c < C; c++) sum += Math.exp(logits[r + c] - mx)
    for (let c = 0; c < C; c++) out[r + c] = Math.exp(logits[r + c] - mx) / sum
  }
  return out
}
