// SentencePiece's normalizer, on UTF-8 bytes as the reference does it: the precompiled charsmap
// (a Darts-clone double-array trie mapping byte prefixes to NUL-terminated replacements, e.g.
// NFKC), user-defined symbols kept verbatim, the dummy prefix, extra-whitespace removal and the
// U+2581 whitespace escape.
import { TokenizerError } from './errors'
import type { NormalizerSpec } from './protobuf'

/** U+2581 LOWER ONE EIGHTH BLOCK, SentencePiece's visible space, as UTF-8. */
export const SPACE_SYMBOL = '\u2581'
const SPACE_SYMBOL_BYTES = Uint8Array.of(0xe2, 0x96, 0x81)
const SPACE_BYTES = Uint8Array.of(0x20)
const REPLACEMENT_CHAR_BYTES = Uint8Array.of(0xef, 0xbf, 0xbd)

/** Length of the UTF-8 sequence that starts with byte `b`, by SentencePiece's table (1 for stray bytes). */
export function oneCharLen(b: number): number {
  return b < 0xc0 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4
}

/**
 * Length of the valid UTF-8 character at `pos`, or 0 if the bytes there are not one
 * (truncated, overlong, a surrogate, past U+10FFFF, a stray continuation byte).
 */
export function validUtf8Length(s: Uint8Array, pos: number, end: number): number {
  const b = s[pos]
  if (b < 0x80) return 1
  const cont = (i: number) => i < end && (s[i] & 0xc0) === 0x80
  if (b >= 0xc2 && b <= 0xdf) return cont(pos + 1) ? 2 : 0
  if (b >= 0xe0 && b <= 0xef) {
    if (!cont(pos + 1) || !cont(pos + 2)) return 0
    const b1 = s[pos + 1]
    if (b === 0xe0 && b1 < 0xa0) return 0 // overlong
    if (b === 0xed && b1 >= 0xa0) return 0 // surrogate
    return 3
  }
  if (b >= 0xf0 && b <= 0xf4) {
    if (!cont(pos + 1) || !cont(pos + 2) || !cont(pos + 3)) return 0
    const b1 = s[pos + 1]
    if (b === 0xf0 && b1 < 0x90) return 0 // overlong
    if (b === 0xf4 && b1 >= 0x90) return 0 // past U+10FFFF
    return 4
  }
  return 0
}

/**
 * Decodes UTF-8 as SentencePiece does when it turns byte pieces back into text: each byte that
 * does not start a valid character becomes one U+FFFD.
 */
export function decodeUtf8Lenient(s: Uint8Array): string {
  let out = ''
  let runStart = 0
  let i = 0
  const flush = (to: number) => {
    if (to > runStart) out += Buffer.from(s.buffer, s.byteOffset + runStart, to - runStart).toString('utf8')
  }
  while (i < s.length) {
    const n = validUtf8Length(s, i, s.length)
    if (n > 0) {
      i += n
      continue
    }
    flush(i)
    out += '\ufffd'
    i++
    runStart = i
  }
  flush(i)
  return out
}

/** True when every character of `s` is well-formed UTF-8 (what the full normalizer would leave alone). */
function validUtf8(s: Uint8Array): boolean {
  for (let i = 0; i < s.length; ) {
    if (s[i] < 0x80) {
      i++
      continue
    }
    const n = validUtf8Length(s, i, s.length)
    if (n === 0) return false
    i += n
  }
  return true
}

/** Growable byte buffer for normalizer output. */
class ByteSink {
  buf: Uint8Array
  length = 0
  constructor(capacity: number) {
    this.buf = new Uint8Array(Math.max(16, capacity))
  }
  private grow(need: number): void {
    let cap = this.buf.length * 2
    while (cap < need) cap *= 2
    const next = new Uint8Array(cap)
    next.set(this.buf.subarray(0, this.length))
    this.buf = next
  }
  push(b: number): void {
    if (this.length === this.buf.length) this.grow(this.length + 1)
    this.buf[this.length++] = b
  }
  append(src: Uint8Array): void {
    if (this.length + src.length > this.buf.length) this.grow(this.length + src.length)
    this.buf.set(src, this.length)
    this.length += src.length
  }
  endsWith(tail: Uint8Array): boolean {
    if (this.length < tail.length) return false
    for (let i = 0; i < tail.length; i++) if (this.buf[this.length - tail.length + i] !== tail[i]) return false
    return true
  }
  bytes(): Uint8Array {
    return this.buf.subarray(0, this.length)
  }
}

/** Results of a charsmap lookup, reused to avoid allocating per character. */
interface Match {
  length: number
  start: number
  end: number
}

/**
 * The precompiled charsmap of a NormalizerSpec: `<u32 LE trie size><Darts double array><replacements>`.
 * Lookups are the double array's common-prefix search; every index is bounds-checked, so a corrupt
 * array can at worst stop a match early, never read outside the blob.
 */
export class PrecompiledCharsMap {
  private readonly units: Uint32Array
  private readonly replacements: Uint8Array
  /** Reference SentencePiece considers at most this many prefix matches per position. */
  private static readonly MAX_RESULTS = 32

  private constructor(units: Uint32Array, replacements: Uint8Array) {
    this.units = units
    this.replacements = replacements
  }

  /** Parses and checks a charsmap blob the way SentencePiece's DecodePrecompiledCharsMap does. */
  static parse(blob: Uint8Array, where: { file?: string; code?: 'ERR_TOKENIZER_MODEL' | 'ERR_TOKENIZER_JSON' } = {}): PrecompiledCharsMap {
    const fail = (message: string): never => {
      throw new TokenizerError(where.code ?? 'ERR_TOKENIZER_MODEL', `precompiled_charsmap: ${message}`, { file: where.file })
    }
    if (blob.length <= 4) fail(`blob of ${blob.length} bytes is too short`)
    const view = new DataView(blob.buffer, blob.byteOffset, blob.length)
    const trieSize = view.getUint32(0, true)
    if (trieSize >= blob.length - 4) fail(`trie size ${trieSize} exceeds the blob (${blob.length - 4} bytes after the header)`)
    if (trieSize < 1024 || trieSize % 1024 !== 0) fail(`trie size ${trieSize} is not a positive multiple of 1024`)
    const units = new Uint32Array(trieSize / 4)
    for (let i = 0; i < units.length; i++) units[i] = view.getUint32(4 + 4 * i, true)
    const replacements = blob.slice(4 + trieSize)
    if (replacements[replacements.length - 1] !== 0) fail('replacement block is not NUL-terminated')
    return new PrecompiledCharsMap(units, replacements)
  }

  /**
   * Longest rule matching a prefix of `input[pos..end)`. Fills `m` and returns true, or returns
   * false when no rule applies (or the rule's replacement offset is out of range, as the reference checks).
   */
  longest(input: Uint8Array, pos: number, end: number, m: Match): boolean {
    const units = this.units
    const n = units.length
    let node = units[0]
    let nodePos = offset(node)
    let found = 0
    let bestLength = 0
    let bestValue = 0
    for (let i = pos; i < end; i++) {
      const c = input[i]
      nodePos ^= c
      if (nodePos >= n) break
      node = units[nodePos]
      // label(): the low byte, with the top bit set on non-matching slots.
      if ((node & 0x800000ff) >>> 0 !== c) break
      nodePos ^= offset(node)
      if ((node >>> 8) & 1) {
        if (nodePos >= n) break
        if (found < PrecompiledCharsMap.MAX_RESULTS) {
          bestLength = i - pos + 1
          bestValue = units[nodePos] & 0x7fffffff
        }
        found++
      }
    }
    if (bestLength === 0 || bestValue >= this.replacements.length) return false
    m.length = bestLength
    m.start = bestValue
    m.end = this.replacements.indexOf(0, bestValue)
    return true
  }

  get replacementBytes(): Uint8Array {
    return this.replacements
  }

  /**
   * Applies only the character map to a string (no whitespace handling): what the `Precompiled`
   * normalizer of a tokenizer.json means.
   */
  normalizeString(text: string): string {
    const input = Buffer.from(text, 'utf8')
    const out = new ByteSink(input.length + 16)
    const m: Match = { length: 0, start: 0, end: 0 }
    let pos = 0
    while (pos < input.length) {
      if (this.longest(input, pos, input.length, m)) {
        out.append(this.replacements.subarray(m.start, m.end))
        pos += m.length
      } else {
        const len = validUtf8Length(input, pos, input.length)
        if (len === 0) {
          out.append(REPLACEMENT_CHAR_BYTES)
          pos += 1
        } else {
          out.append(input.subarray(pos, pos + len))
          pos += len
        }
      }
    }
    const bytes = out.bytes()
    return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString('utf8')
  }
}

function offset(unit: number): number {
  return (unit >>> 10) << ((unit & (1 << 9)) >>> 6)
}

/** A byte trie of strings with longest-prefix search (user-defined symbols). */
export class BytePrefixMatcher {
  // Node i's children are edges [first[i], first[i] + count[i]) sorted by label.
  private readonly first: Int32Array
  private readonly count: Int32Array
  private readonly labels: Uint8Array
  private readonly targets: Int32Array
  private readonly terminal: Uint8Array
  readonly size: number

  constructor(words: readonly Uint8Array[]) {
    const children: Map<number, number>[] = [new Map()]
    const term: boolean[] = [false]
    for (const w of words) {
      if (w.length === 0) continue
      let node = 0
      for (const b of w) {
        let next = children[node].get(b)
        if (next === undefined) {
          next = children.length
          children.push(new Map())
          term.push(false)
          children[node].set(b, next)
        }
        node = next
      }
      term[node] = true
    }
    this.size = words.length
    const nodes = children.length
    this.first = new Int32Array(nodes)
    this.count = new Int32Array(nodes)
    this.terminal = Uint8Array.from(term, (t) => (t ? 1 : 0))
    this.labels = new Uint8Array(nodes - 1)
    this.targets = new Int32Array(nodes - 1)
    let e = 0
    for (let i = 0; i < nodes; i++) {
      const kids = [...children[i].entries()].sort((a, b) => a[0] - b[0])
      this.first[i] = e
      this.count[i] = kids.length
      for (const [label, target] of kids) {
        this.labels[e] = label
        this.targets[e] = target
        e++
      }
    }
  }

  /** True when some word contains byte `b`. */
  hasByte(b: number): boolean {
    return this.labels.includes(b)
  }

  /** Length of the longest word that is a prefix of `s[pos..end)`, or 0. */
  longest(s: Uint8Array, pos: number, end: number): number {
    let node = 0
    let best = 0
    for (let i = pos; i < end; i++) {
      const c = s[i]
      const lo0 = this.first[node]
      let lo = lo0
      let hi = lo0 + this.count[node] - 1
      let next = -1
      while (lo <= hi) {
        const mid = (lo + hi) >> 1
        const l = this.labels[mid]
        if (l === c) {
          next = this.targets[mid]
          break
        }
        if (l < c) lo = mid + 1
        else hi = mid - 1
      }
      if (next < 0) break
      node = next
      if (this.terminal[node]) best = i - pos + 1
    }
    return best
  }
}

export interface NormalizerOptions {
  treatWhitespaceAsSuffix?: boolean
  /** User-defined symbols: copied verbatim, never normalized (SentencePiece's prefix matcher). */
  userDefined?: BytePrefixMatcher
  /** For error messages. */
  file?: string
}

/** SentencePiece's Normalizer::Normalize, bytes in, bytes out. */
export class SentencePieceNormalizer {
  readonly charsMap: PrecompiledCharsMap | undefined
  private readonly spec: NormalizerSpec
  private readonly suffix: boolean
  private readonly matcher: BytePrefixMatcher | undefined
  private readonly spaceSymbol: Uint8Array
  private readonly m: Match = { length: 0, start: 0, end: 0 }
  /** No charsmap, no whitespace removal, no user-defined symbol with a space: only the escape applies. */
  private readonly escapeOnly: boolean

  constructor(spec: NormalizerSpec, options: NormalizerOptions = {}) {
    this.spec = spec
    this.suffix = options.treatWhitespaceAsSuffix ?? false
    this.matcher = options.userDefined && options.userDefined.size > 0 ? options.userDefined : undefined
    this.spaceSymbol = spec.escapeWhitespaces ? SPACE_SYMBOL_BYTES : SPACE_BYTES
    this.charsMap = spec.precompiledCharsmap.length > 0 ? PrecompiledCharsMap.parse(spec.precompiledCharsmap, { file: options.file }) : undefined
    this.escapeOnly = this.charsMap === undefined && !spec.removeExtraWhitespaces && !(options.userDefined?.hasByte(0x20) ?? false)
  }


  // NormalizePrefix: the normalized form of the longest rule at `pos` as [src, start, end], plus bytes consumed.
  private prefix(input: Uint8Array, pos: number, end: number, out: { src: Uint8Array; start: number; end: number; consumed: number }): void {
    if (this.matcher) {
      const len = this.matcher.longest(input, pos, end)
      if (len > 0) {
        out.src = input
        out.start = pos
        out.end = pos + len
        out.consumed = len
        return
      }
    }
    if (this.charsMap && this.charsMap.longest(input, pos, end, this.m)) {
      out.src = this.charsMap.replacementBytes
      out.start = this.m.start
      out.end = this.m.end
      out.consumed = this.m.length
      return
    }
    const len = validUtf8Length(input, pos, end)
    if (len === 0) {
      out.src = REPLACEMENT_CHAR_BYTES
      out.start = 0
      out.end = 3
      out.consumed = 1
    } else {
      out.src = input
      out.start = pos
      out.end = pos + len
      out.consumed = len
    }
  }

  // The identity normalizer's whole effect: the dummy prefix and spaces as U+2581.
  private escapeSpaces(input: Uint8Array): Uint8Array {
    const space = this.spaceSymbol
    const dummy = this.spec.addDummyPrefix
    let spaces = dummy ? 1 : 0
    for (let i = 0; i < input.length; i++) if (input[i] === 0x20) spaces++
    if (spaces === 0 || space.length === 1) {
      if (!dummy) return input
      const out = new Uint8Array(input.length + space.length)
      const at = this.suffix ? input.length : 0
      out.set(space, at)
      out.set(input, this.suffix ? 0 : space.length)
      return out
    }
    const out = new Uint8Array(input.length + spaces * (space.length - 1) + (dummy ? 1 : 0))
    let o = 0
    if (dummy && !this.suffix) {
      out.set(space, 0)
      o = space.length
    }
    for (let i = 0; i < input.length; i++) {
      const b = input[i]
      if (b === 0x20) {
        out[o++] = space[0]
        out[o++] = space[1]
        out[o++] = space[2]
      } else out[o++] = b
    }
    if (dummy && this.suffix) out.set(space, o)
    return out
  }

  normalize(input: Uint8Array): Uint8Array {
    const n = input.length
    if (n === 0) return input
    if (this.escapeOnly && validUtf8(input)) return this.escapeSpaces(input)
    const spec = this.spec
    const removeExtra = spec.removeExtraWhitespaces
    const space = this.spaceSymbol
    const p = { src: input, start: 0, end: 0, consumed: 0 }
    let pos = 0
    if (removeExtra) {
      while (pos < n) {
        this.prefix(input, pos, n, p)
        if (p.end - p.start !== 1 || p.src[p.start] !== 0x20) break
        pos += p.consumed
      }
      if (pos >= n) return new Uint8Array(0)
    }
    const out = new ByteSink(((n - pos) * 3) / 2 + 8)
    if (!this.suffix && spec.addDummyPrefix) out.append(space)
    let prevSpace = removeExtra
    while (pos < n) {
      this.prefix(input, pos, n, p)
      const src = p.src
      let s = p.start
      const e = p.end
      if (prevSpace) while (s < e && src[s] === 0x20) s++
      if (s < e) {
        for (let i = s; i < e; i++) {
          const b = src[i]
          if (b === 0x20) out.append(space)
          else out.push(b)
        }
        prevSpace = src[e - 1] === 0x20
      }
      pos += p.consumed
      if (!removeExtra) prevSpace = false
    }
    if (removeExtra) while (out.endsWith(space)) out.length -= space.length
    if (this.suffix && spec.addDummyPrefix) out.append(space)
    return out.bytes()
  }
}
