// Label names and how data's label values map onto them. Names given by the user fix the
// classes (and numbers index them); otherwise they come from the training data: numeric 0/1
// become negative/positive, other numbers keep their digits (stars 1..5), and names are sorted.
// A number beside 0/1 (a stray 2), or names differing only in case, are an error asking for the names.
import { rangeError, typeError } from '../errors'
import { DataError } from './errors'
import { Problems, mergeSkips, type Dataset, type Example, type LabelValue, type OnInvalid } from './read'

export const BINARY_NAMES: readonly string[] = ['negative', 'positive']

export interface LabelSetJson {
  names: string[]
  /** Whether a number n (or its digits) means names[n]. */
  numericIsIndex: boolean
}

export class LabelSet {
  readonly names: readonly string[]
  readonly numericIsIndex: boolean

  constructor(names: readonly string[], numericIsIndex = true) {
    if (!Array.isArray(names) || names.length < 2) throw rangeError(`labels: expected at least 2 class names, got ${JSON.stringify(names)}`)
    const seen = new Set<string>()
    for (const n of names) {
      if (typeof n !== 'string' || n.trim() === '') throw typeError(`labels: every class name must be a non-empty string, got ${JSON.stringify(n)}`)
      if (seen.has(n)) throw rangeError(`labels: "${n}" appears twice`)
      seen.add(n)
    }
    this.names = [...names]
    this.numericIsIndex = numericIsIndex
  }

  get size(): number {
    return this.names.length
  }

  /** The class of a label value, or undefined when it names none. */
  indexOf(value: LabelValue): number | undefined {
    const s = String(value).trim()
    const exact = this.names.indexOf(s)
    if (exact >= 0) return exact
    const folded = this.names.map((n, i) => [n.toLowerCase(), i] as const).filter(([n]) => n === s.toLowerCase())
    if (folded.length === 1) return folded[0][1]
    if (this.numericIsIndex && /^\d+$/.test(s)) {
      const k = Number(s)
      if (k < this.names.length) return k
    }
    return undefined
  }

  /** "negative, positive (or 0..1)" for messages. */
  describe(): string {
    return this.names.join(', ') + (this.numericIsIndex ? ` (or 0..${this.names.length - 1})` : '')
  }

  toJSON(): LabelSetJson {
    return { names: [...this.names], numericIsIndex: this.numericIsIndex }
  }

  static fromJSON(j: LabelSetJson): LabelSet {
    return new LabelSet(j.names, j.numericIsIndex)
  }

  /** The classes the training examples imply (see the module comment). */
  static infer(examples: readonly Example[], source: string): LabelSet {
    const numeric = new Map<number, Example>()
    const named = new Map<string, Example>()
    for (const e of examples) {
      const s = String(e.label).trim()
      if (/^\d+$/.test(s)) {
        if (!numeric.has(Number(s))) numeric.set(Number(s), e)
      } else if (!named.has(s)) named.set(s, e)
    }
    if (numeric.size > 0 && named.size > 0) {
      const [name, e] = [...named][0]
      throw new DataError(e.file, e.line, `label "${name}" is a name, but other labels are numbers (${[...numeric.keys()].slice(0, 3).join(', ')}); use one kind, or give the class names`, e.isArray)
    }
    const count = numeric.size + named.size
    if (count < 2) throw new DataError(source, undefined, count === 0 ? 'no training examples' : `every training example has the label "${examples[0].label}": a classifier needs at least 2 classes`)
    if (numeric.size > 0) {
      const values = [...numeric.keys()].sort((a, b) => a - b)
      if (values.length === 2 && values[0] === 0 && values[1] === 1) return new LabelSet(BINARY_NAMES, true)
      // 0 and 1 mean negative/positive: another number beside them (a 2 among 0/1) would quietly
      // add a class, so the classes must be named. Numbers without both (stars 1..5) keep their digits.
      if (values[0] === 0 && values[1] === 1) {
        const stray = values[2]
        const e = numeric.get(stray)!
        throw new DataError(
          e.file,
          e.line,
          `label ${stray} beside 0 and 1 (negative, positive): the labels are ${values.slice(0, 6).join(', ')}${values.length > 6 ? ', ...' : ''}; ` +
            `if ${values.length} classes are meant, name them in index order (labels: [...], or --labels A,B,...)`,
          e.isArray,
        )
      }
      const contiguous = values.every((v, i) => v === i)
      return new LabelSet(values.map(String), contiguous)
    }
    // Names differing only in case ("Positive", "positive") are one class spelled two ways, or two
    // classes: the data cannot say which.
    const byFolded = new Map<string, string>()
    for (const name of named.keys()) {
      const other = byFolded.get(name.toLowerCase())
      if (other !== undefined) {
        const e = named.get(name)!
        throw new DataError(e.file, e.line, `label "${name}" differs from label "${other}" (line ${named.get(other)!.line}) only in case; make them agree, or give the class names (labels)`, e.isArray)
      }
      byFolded.set(name.toLowerCase(), name)
    }
    return new LabelSet([...named.keys()].sort(), false)
  }
}

/** Texts with class indices, in the order read. */
export interface Labeled {
  texts: string[]
  labels: Int32Array
  /** Where each came from ("train.tsv:12"), for messages. */
  examples: Example[]
}

/**
 * Maps a dataset's labels onto the classes. Training data: a label no class names is "unknown";
 * evaluation data: it "never appears in the training data". Problems follow onInvalid, and
 * skipped records are added to the dataset's report.
 */
export function assignLabels(ds: Dataset, set: LabelSet, role: 'train' | 'eval', onInvalid: OnInvalid): Labeled {
  const problems = new Problems(ds.source, onInvalid, ds.format === 'array')
  const texts: string[] = []
  const labels: number[] = []
  const kept: Example[] = []
  for (const e of ds.examples) {
    const k = set.indexOf(e.label)
    if (k === undefined) {
      if (role === 'train') problems.add(e.line, 'unknown label', `unknown label "${e.label}" (expected one of ${set.describe()})`)
      else problems.add(e.line, 'unseen label', `label "${e.label}" never appears in the training data (classes: ${set.names.join(', ')})`)
      continue
    }
    texts.push(e.text)
    labels.push(k)
    kept.push(e)
  }
  mergeSkips(ds.skipped, problems.report)
  return { texts, labels: Int32Array.from(labels), examples: kept }
}

/** Every class needs `min` training examples: a class with fewer cannot be learned (or validated). */
export function checkClassCounts(labels: Int32Array, set: LabelSet, source: string, min: number): number[] {
  const counts = new Array<number>(set.size).fill(0)
  for (const y of labels) counts[y]++
  counts.forEach((c, k) => {
    if (c < min)
      throw new DataError(source, undefined, `too few examples of class "${set.names[k]}": ${c} (at least ${min} needed${c === 0 ? '; remove it from labels or add examples' : ''})`)
  })
  return counts
}
