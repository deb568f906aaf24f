// The components of a tokenizer.json that run a pattern from the file (Split and Replace
// pre-tokenizers, Replace normalizers and decoders), on LinearPattern (RE2) instead of the
// library's RegExp. @huggingface/tokenizers is given the file with those components as null, so no
// pattern from a file ever reaches a JS RegExp, and ours are put in their places afterwards.
import { Decoder, Normalizer, PreTokenizer } from '@huggingface/tokenizers'
import { TokenizerError } from './errors'
import { LinearPattern, type PatternSite } from './pattern'

type Stage = 'normalizer' | 'pre_tokenizer' | 'decoder'
type Component = Normalizer | PreTokenizer | Decoder

// A Sequence's children: the key in the file, and the property the library keeps them in.
const FILE_LIST = { normalizer: 'normalizers', pre_tokenizer: 'pretokenizers', decoder: 'decoders' } as const
const BUILT_LIST = { normalizer: 'normalizers', pre_tokenizer: 'tokenizers', decoder: 'decoders' } as const

const SPLIT_BEHAVIORS = ['Removed', 'Isolated', 'MergedWithPrevious', 'MergedWithNext', 'Contiguous'] as const
type SplitBehavior = (typeof SPLIT_BEHAVIORS)[number]
type Piece = [start: number, end: number, isMatch: boolean]

/** HF's Split pre-tokenizer: the text cut at the pattern's matches, the matches kept as `behavior` says. */
class LinearSplit extends PreTokenizer {
  constructor(
    private readonly pattern: LinearPattern,
    private readonly behavior: SplitBehavior,
    private readonly invert: boolean,
  ) {
    super()
  }
  pre_tokenize_text(text: string): string[] {
    const pieces = this.pattern.segments(text).map(([s, e, isMatch]): Piece => [s, e, isMatch !== this.invert])
    return withBehavior(pieces, this.behavior)
      .filter(([s, e]) => e > s)
      .map(([s, e]) => text.slice(s, e))
  }
}

// The SplitDelimiterBehavior of HF's crate, on pieces that cover the text in order.
function withBehavior(pieces: Piece[], behavior: SplitBehavior): Piece[] {
  switch (behavior) {
    case 'Isolated':
      return pieces
    case 'Removed':
      return pieces.filter(([, , isMatch]) => !isMatch)
    case 'Contiguous':
      return mergeWhere(pieces, (piece, previous) => piece[2] === previous[2])
    case 'MergedWithPrevious':
      return mergeWhere(pieces, (piece, previous) => piece[2] && !previous[2])
    case 'MergedWithNext':
      return mergeWhere(pieces.slice().reverse(), (piece, previous) => piece[2] && !previous[2]).reverse()
  }
}

// Folds each piece into the one before it (in the order given) when `joins` says so; pieces are
// adjacent, so a join is the union of their ranges.
function mergeWhere(pieces: Piece[], joins: (piece: Piece, previous: Piece) => boolean): Piece[] {
  const out: Piece[] = []
  let previous: Piece | undefined
  for (const piece of pieces) {
    const last = out[out.length - 1]
    if (previous !== undefined && last !== undefined && joins(piece, previous)) {
      out[out.length - 1] = [Math.min(last[0], piece[0]), Math.max(last[1], piece[1]), last[2]]
    } else {
      out.push([...piece])
    }
    previous = piece
  }
  return out
}

class LinearReplaceNormalizer extends Normalizer {
  constructor(
    config: ConstructorParameters<typeof Normalizer>[0],
    private readonly pattern: LinearPattern,
    private readonly content: string,
  ) {
    super(config)
  }
  normalize(text: string): string {
    return this.pattern.replaceAll(text, this.content)
  }
}

class LinearReplacePreTokenizer extends PreTokenizer {
  constructor(
    private readonly pattern: LinearPattern,
    private readonly content: string,
  ) {
    super()
  }
  pre_tokenize_text(text: string): string[] {
    return [this.pattern.replaceAll(text, this.content)]
  }
}

class LinearReplaceDecoder extends Decoder {
  constructor(
    config: ConstructorParameters<typeof Decoder>[0],
    private readonly pattern: LinearPattern,
    private readonly content: string,
  ) {
    super(config)
  }
  decode_chain(tokens: string[]): string[] {
    return tokens.map((t) => this.pattern.replaceAll(t, this.content))
  }
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

// Ours for a component that runs a pattern, else undefined.
function linearComponent(node: Record<string, unknown>, stage: Stage, site: PatternSite): Component | undefined {
  const bad = (what: string): never => {
    throw new TokenizerError('ERR_TOKENIZER_JSON', `${site.at} (${String(node.type)}): ${what}`, { file: site.file })
  }
  const content = () => (typeof node.content === 'string' ? node.content : bad('"content" must be a string'))
  if (node.type === 'Replace') {
    const pattern = LinearPattern.fromConfig(node.pattern, site)
    const config = node as never
    if (stage === 'normalizer') return new LinearReplaceNormalizer(config, pattern, content())
    if (stage === 'decoder') return new LinearReplaceDecoder(config, pattern, content())
    return new LinearReplacePreTokenizer(pattern, content())
  }
  if (node.type === 'Split' && stage === 'pre_tokenizer') {
    const behavior = node.behavior ?? 'Isolated'
    if (!SPLIT_BEHAVIORS.includes(behavior as SplitBehavior)) bad(`"behavior" must be one of ${SPLIT_BEHAVIORS.join(', ')}`)
    if (node.invert !== undefined && typeof node.invert !== 'boolean') bad('"invert" must be a boolean')
    return new LinearSplit(LinearPattern.fromConfig(node.pattern, site), behavior as SplitBehavior, node.invert === true)
  }
  return undefined
}

// Where ours go in the library's tree: a component, or a Sequence's children, or nothing to change.
type Plan = Component | { children: (Plan | undefined)[] } | undefined

function planFor(node: unknown, stage: Stage, site: PatternSite): { stripped: unknown; plan: Plan } {
  if (!isObject(node)) return { stripped: node, plan: undefined }
  const list = node[FILE_LIST[stage]]
  if (node.type === 'Sequence' && Array.isArray(list)) {
    const parts = list.map((child, i) => planFor(child, stage, { file: site.file, at: `${site.at}.${FILE_LIST[stage]}[${i}]` }))
    if (parts.every((p) => p.plan === undefined)) return { stripped: node, plan: undefined }
    return { stripped: { ...node, [FILE_LIST[stage]]: parts.map((p) => p.stripped) }, plan: { children: parts.map((p) => p.plan) } }
  }
  const ours = linearComponent(node, stage, site)
  return ours === undefined ? { stripped: node, plan: undefined } : { stripped: null, plan: ours }
}

function install<T>(built: T, plan: Plan, stage: Stage): T {
  if (plan === undefined) return built
  if (!('children' in plan)) return plan as T
  const holder = built as Record<string, unknown[]>
  holder[BUILT_LIST[stage]] = holder[BUILT_LIST[stage]].map((child, i) => install(child, plan.children[i], stage))
  return built
}

/** What the library needs in place of the file's normalizer, pre_tokenizer and decoder. */
export interface StrippedStages {
  normalizer: unknown
  pre_tokenizer: unknown
  decoder: unknown
}

/**
 * The file's normalizer, pre_tokenizer and decoder with every pattern component compiled for RE2
 * (a TokenizerError names the file, the component and the pattern when one cannot be) and left
 * out, and `install` to put them into the tokenizer the library builds from the stripped stages.
 */
export function linearPatterns(json: Record<string, unknown>, file: string) {
  const stages = ['normalizer', 'pre_tokenizer', 'decoder'] as const
  const planned = stages.map((stage) => planFor(json[stage] ?? null, stage, { file, at: stage }))
  const stripped: StrippedStages = { normalizer: planned[0].stripped, pre_tokenizer: planned[1].stripped, decoder: planned[2].stripped }
  return {
    stripped,
    install(inner: { normalizer: Normalizer | null; pre_tokenizer: PreTokenizer | null; decoder: Decoder | null }): void {
      inner.normalizer = install(inner.normalizer, planned[0].plan, 'normalizer')
      inner.pre_tokenizer = install(inner.pre_tokenizer, planned[1].plan, 'pre_tokenizer')
      inner.decoder = install(inner.decoder, planned[2].plan, 'decoder')
    },
  }
}
