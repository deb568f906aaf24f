// What one fuzz case is: the input a family generated (files to write, or token ids), what it
// feeds (a model load, a training run, a classifier load), and the verdict the spec gives it.
import { seededRandom } from '../../lib/util/random'

/**
 * 'reject': the input is invalid, and loading it must throw a typed error (a string `code`)
 * whose message names the file (or the argument). 'accept': a harmless variant, which must load
 * and then give finite numbers. 'either': the spec allows both (each such case says why).
 */
export type Verdict = 'reject' | 'accept' | 'either'

export type Family = 'safetensors' | 'config' | 'ids' | 'data' | 'classifier' | 'adapter' | 'hf-classifier' | 'tokenizer'

/** Something other than a regular file in a file's place. */
export type SpecialFile = { special: 'fifo' } | { special: 'directory' } | { special: 'symlink'; to: string }

/** A file the case writes: text (UTF-8), bytes, or a special file. */
export type FileContent = string | Uint8Array | SpecialFile

/** The saved classifiers the HF-classifier cases start from (made once per run, classifier.json removed). */
export type HfClassifierKind = 'lora' | 'full'

export type Target =
  /** A model directory: a fixture's config.json and model.safetensors with `files` written over them (null removes one). */
  | { kind: 'model'; fixture: ModelFixture; files: Record<string, FileContent | null>; probeLength: number }
  /** A forward call on the ernie-tiny fixture with these ids (and mask). */
  | { kind: 'ids'; inputIds: unknown; attentionMask?: unknown }
  /** Training data: fit a head classifier on `file` (written from `content`); `examples` records must be read, none skipped. */
  | { kind: 'data'; file: string; content: FileContent; examples: number; labels?: string[] }
  /** The run's saved classifier with `files` written over it (null removes one), loaded and asked to predict. */
  | { kind: 'classifier'; files: Record<string, FileContent | null> }
  /** The ernie-tiny fixture's PEFT adapter with `files` written over it, loaded for ernie-tiny and run in a forward. */
  | { kind: 'adapter'; files: Record<string, FileContent | null> }
  /** A saved classifier in its Hugging Face form only (transformers / PEFT files), loaded and asked to predict. */
  | { kind: 'hf-classifier'; source: HfClassifierKind; files: Record<string, FileContent | null> }
  /** A tokenizer directory: the ernie-tiny fixture's tokenizer.model (or its tokenizer.json form) with `files` written over it, loaded, encoding and decoding text. */
  | { kind: 'tokenizer'; form: 'tokenizer.model' | 'tokenizer.json'; files: Record<string, FileContent | null> }

export type ModelFixture = 'ernie-tiny' | 'qwen3-tiny' | 'ernie-tiny-paddle'

export interface FuzzCase {
  id: number
  family: Family
  verdict: Verdict
  /** What was changed, for reports. */
  what: string
  /** Why the spec allows both outcomes ('either' only). */
  why?: string
  target: Target
  /**
   * Names a rejection's message must contain (any one): files relative to the case's directory
   * (resolved to full paths), or an argument's name for 'ids'.
   */
  names: string[]
}

/**
 * The verdict of changes to different fields of one file (a generator changes a field once per
 * case: a second change would undo the first, and its verdict with it): any reject rejects, else
 * any 'either' (with its reason) allows both, else the file is accepted.
 */
export function verdictOfChanges(changes: ReadonlyArray<{ key: string; verdict: Verdict; why?: string }>): { verdict: Verdict; why?: string } {
  if (changes.some((c) => c.verdict === 'reject')) return { verdict: 'reject' }
  const either = changes.find((c) => c.verdict === 'either')
  return either ? { verdict: 'either', why: either.why } : { verdict: 'accept' }
}

/** A case's own generator: the same (seed, id) gives the same case in any process. */
export function caseRandom(seed: number, id: number): Rng {
  return new Rng(seededRandom((Math.imul(seed >>> 0, 0x9e3779b1) ^ Math.imul(id + 1, 0x85ebca6b)) >>> 0))
}

export class Rng {
  constructor(readonly next: () => number) {}
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1))
  }
  pick<T>(xs: readonly T[]): T {
    return xs[Math.floor(this.next() * xs.length)]
  }
  chance(p: number): boolean {
    return this.next() < p
  }
  shuffle<T>(xs: readonly T[]): T[] {
    const out = [...xs]
    for (let i = out.length - 1; i > 0; i--) {
      const j = Math.floor(this.next() * (i + 1))
      ;[out[i], out[j]] = [out[j], out[i]]
    }
    return out
  }
}

/** What a family's generator returns: the case less its id and family. */
export type Generated = Omit<FuzzCase, 'id' | 'family'>
