// Choosing the next token from the model's logits: the repetition penalty, then greedy argmax, or
// temperature, top-k and nucleus (top-p) sampling, in the order transformers applies them.
import { rangeError, typeError } from '../errors'

export interface SamplingOptions {
  /** 0 (default): greedy. */
  temperature?: number
  /** Nucleus sampling: the smallest set of most likely tokens holding this much probability (default 1: all). */
  topP?: number
  /** Sample among the k most likely tokens only (default 0: all). */
  topK?: number
  /**
   * CTRL's repetition penalty (default 1: none): the logit of each token already in the prompt or
   * the output is divided by it when positive and multiplied by it when negative, before the
   * choice; above 1 discourages repeats, below 1 encourages them.
   */
  repetitionPenalty?: number
}

export type Sampling = Required<SamplingOptions>

/** The options checked (typed errors naming the one at fault), with their defaults. */
export function resolveSampling(options: SamplingOptions, what: string): Sampling {
  const { temperature = 0, topP = 1, topK = 0, repetitionPenalty = 1 } = options
  for (const [name, v] of Object.entries({ temperature, topP, topK, repetitionPenalty }))
    if (typeof v !== 'number') throw typeError(`${what}: ${name} must be a number, got ${typeof v}`)
  if (!(temperature >= 0 && Number.isFinite(temperature))) throw rangeError(`${what}: temperature must be a finite number >= 0, got ${temperature}`)
  if (!(topP > 0 && topP <= 1)) throw rangeError(`${what}: topP must be in (0, 1], got ${topP}`)
  if (!(Number.isInteger(topK) && topK >= 0)) throw rangeError(`${what}: topK must be an integer >= 0 (0: no limit), got ${topK}`)
  if (!(repetitionPenalty > 0 && Number.isFinite(repetitionPenalty)))
    throw rangeError(`${what}: repetitionPenalty must be a finite number > 0 (1: none), got ${repetitionPenalty}`)
  return { temperature, topP, topK, repetitionPenalty }
}

/** Applies the repetition penalty in place to the logits of the `seen` token ids. */
export function penalizeRepeats(logits: Float32Array, seen: Iterable<number>, penalty: number): void {
  if (penalty === 1) return
  for (const id of seen) {
    if (id >= logits.length) continue
    const x = logits[id]
    logits[id] = x < 0 ? x * penalty : x / penalty
  }
}

export function argmax(x: Float32Array): number {
  let best = 0
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i
  return best
}

/**
 * The indices of the k largest values, largest first; among equal values the lower index first
 * (as a stable sort of all of them would order them).
 */
export function topIndices(x: Float32Array, k: number): number[] {
  // a window of more than a few hundred costs more to keep sorted than one sort of everything
  if (k > 256) return Array.from(x.keys()).sort((a, b) => x[b] - x[a]).slice(0, k)
  const top: number[] = []
  for (let i = 0; i < x.length; i++) {
    const v = x[i]
    if (top.length === k && !(v > x[top[k - 1]])) continue
    // after every kept value >= v, so that earlier indices stay ahead of equal later ones
    let lo = 0, hi = top.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (x[top[mid]] >= v) lo = mid + 1
      else hi = mid
    }
    top.splice(lo, 0, i)
    if (top.length > k) top.pop()
  }
  return top
}

/**
 * The candidates of the nucleus when every token is a candidate: the most likely tokens, most
 * likely first, holding at least `need` of the weights; the tokens of weight >= a cutoff (relative
 * to the largest, 1), the cutoff lowered until they do. Only those are sorted, not the vocabulary,
 * and the nucleus (a prefix of the sorted vocabulary) lies within them.
 */
function nucleusCandidates(w: Float64Array, need: number): number[] {
  for (let cutoff = 1e-3; ; cutoff = cutoff > 1e-30 ? cutoff * 1e-3 : 0) {
    const picked: number[] = []
    let mass = 0
    for (let i = 0; i < w.length; i++)
      if (w[i] >= cutoff) {
        picked.push(i)
        mass += w[i]
      }
    if (mass >= need || cutoff === 0) return picked.sort((a, b) => w[b] - w[a] || a - b)
  }
}

/**
 * Picks the next token from `logits` (a scratch copy: changed in place) given the tokens seen so
 * far: the repetition penalty, then argmax at temperature 0, else softmax(logits / temperature)
 * restricted to the top-k tokens, then to the nucleus of mass top-p among them, and a draw. The
 * vocabulary is never sorted whole (what would hold the event loop for tens of ms a token).
 */
export function pickToken(logits: Float32Array, seen: Iterable<number>, s: Sampling, random: () => number): number {
  penalizeRepeats(logits, seen, s.repetitionPenalty)
  if (s.temperature === 0) return argmax(logits)
  const mx = logits[argmax(logits)]
  const w = new Float64Array(logits.length)
  let total = 0
  for (let i = 0; i < w.length; i++) total += w[i] = Math.exp((logits[i] - mx) / s.temperature)
  let order: number[]
  if (s.topK > 0) {
    order = topIndices(logits, s.topK)
    total = order.reduce((a, i) => a + w[i], 0)
  } else if (s.topP < 1) order = nucleusCandidates(w, s.topP * total)
  else {
    // everything: a draw in index order, nothing to sort
    order = Array.from(w.keys())
  }
  let keep = 0, mass = 0
  while (keep < order.length && mass < s.topP * total) mass += w[order[keep++]]
  // the first token whose running sum passes r in [0, mass): one of weight 0 never is
  let r = random() * mass
  let last = order[0]
  for (let k = 0; k < keep; k++) {
    if (w[order[k]] > 0) last = order[k]
    if ((r -= w[order[k]]) < 0) return order[k]
  }
  return last // the sum rounded below r
}
