// The project's own SentencePiece: reads a tokenizer.model (ModelProto) and encodes exactly as the
// reference library does — normalizer, then BPE (highest-scoring adjacent pair first, via a heap
// over a linked list of symbols) or unigram (Viterbi over piece scores in float32), then byte
// fallback for unknown pieces. Works on UTF-8 bytes, like the reference, so ids match byte for byte.
import { TokenizerError, checkText } from './errors'
import { BytePrefixMatcher, SentencePieceNormalizer, SPACE_SYMBOL, decodeUtf8Lenient } from './normalizer'
import { ModelType, PieceType, parseModelProto, type ModelProto } from './protobuf'

export type SentencePieceModelType = 'bpe' | 'unigram'

export interface SentencePieceEncoding {
  ids: number[]
  /** Surface pieces as the reference returns them: `<0xNN>` for byte-fallback bytes. */
  pieces: string[]
}

export interface SentencePieceDecodeOptions {
  /**
   * Surface for an id the caller renders itself (special tokens, added tokens past the model):
   * a string is used as that token's text, null drops the token, undefined lets the model decide.
   */
  render?: (id: number) => string | null | undefined
}

const fround = Math.fround

let latin1Source: ArrayBufferLike | undefined
let latin1View: Buffer | undefined

/** Binary string (one char per byte) of a byte range: a cheap, exact Map key for byte strings. */
function latin1(bytes: Uint8Array, start = 0, end = bytes.length): string {
  // One Buffer view per underlying ArrayBuffer: the pieces of a model all share the file's.
  if (bytes.buffer !== latin1Source) {
    latin1Source = bytes.buffer
    latin1View = Buffer.from(bytes.buffer)
  }
  return latin1View!.toString('latin1', bytes.byteOffset + start, bytes.byteOffset + end)
}

/** Byte trie over piece ids for the unigram lattice (pieces that the reference puts in its Darts trie). */
class PieceTrie {
  private readonly first: Int32Array
  private readonly count: Int32Array
  private readonly labels: Uint8Array
  private readonly targets: Int32Array
  readonly value: Int32Array
  /** Direct table for the root's children (the busiest node). */
  private readonly root: Int32Array

  /** `pieces` maps byte strings (one char per byte) to ids. Built from the sorted keys, without recursion. */
  constructor(pieces: ReadonlyMap<string, number>) {
    // Default sort compares UTF-16 units: byte order for byte strings.
    const sorted = [...pieces.keys()].sort()
    let bytes = 0
    for (const k of sorted) bytes += k.length
    // A trie has at most one node per key byte, plus the root.
    const first = new Int32Array(bytes + 1)
    const count = new Int32Array(bytes + 1)
    const value = new Int32Array(bytes + 1).fill(-1)
    const labels = new Uint8Array(bytes)
    const targets = new Int32Array(bytes)
    let nodes = 1
    let edges = 0
    // Tasks: keys [lo, hi) share their first `depth` bytes and end at or below `node`.
    const stack = new Int32Array(4 * (bytes + 1))
    let top = 0
    stack[top++] = 0
    stack[top++] = sorted.length
    stack[top++] = 0
    stack[top++] = 0
    while (top > 0) {
      const node = stack[--top]
      const depth = stack[--top]
      const hi = stack[--top]
      let lo = stack[--top]
      if (lo < hi && sorted[lo].length === depth) value[node] = pieces.get(sorted[lo++])!
      first[node] = edges
      let children = 0
      for (let i = lo; i < hi; ) {
        const c = sorted[i].charCodeAt(depth)
        let j = i + 1
        while (j < hi && sorted[j].charCodeAt(depth) === c) j++
        const child = nodes++
        labels[edges] = c
        targets[edges++] = child
        stack[top++] = i
        stack[top++] = j
        stack[top++] = depth + 1
        stack[top++] = child
        children++
        i = j
      }
      count[node] = children
    }
    this.first = first.subarray(0, nodes)
    this.count = count.subarray(0, nodes)
    this.value = value.subarray(0, nodes)
    this.labels = labels.subarray(0, edges)
    this.targets = targets.subarray(0, edges)
    this.root = new Int32Array(256).fill(-1)
    for (let e = first[0]; e < first[0] + count[0]; e++) this.root[labels[e]] = targets[e]
  }

  /** Child of `node` along byte `c`, or -1. */
  child(node: number, c: number): number {
    if (node === 0) return this.root[c]
    let lo = this.first[node]
    let hi = lo + this.count[node] - 1
    while (lo <= hi) {
      const mid = (lo + hi) >> 1
      const l = this.labels[mid]
      if (l === c) return this.targets[mid]
      if (l < c) lo = mid + 1
      else hi = mid - 1
    }
    return -1
  }
}

/** Max-heap of BPE candidate pairs: higher score first, then the leftmost (the reference's order). Reused across calls. */
class PairHeap {
  left: Int32Array
  right: Int32Array
  size: Int32Array
  merged: Int32Array
  score: Float64Array
  private heap: Int32Array
  private pairs = 0
  length = 0

  constructor(capacity: number) {
    this.left = new Int32Array(capacity)
    this.right = new Int32Array(capacity)
    this.size = new Int32Array(capacity)
    this.merged = new Int32Array(capacity)
    this.score = new Float64Array(capacity)
    this.heap = new Int32Array(capacity)
  }

  /** Empties the heap for reuse (the arrays are kept). */
  reset(): void {
    this.pairs = 0
    this.length = 0
  }

  private before(a: number, b: number): boolean {
    const sa = this.score[a]
    const sb = this.score[b]
    return sa > sb || (sa === sb && this.left[a] < this.left[b])
  }

  private ensure(): void {
    if (this.pairs < this.left.length) return
    const cap = this.left.length * 2
    const grow = <T extends Int32Array | Float64Array>(a: T): T => {
      const next = new (a.constructor as new (n: number) => T)(cap)
      next.set(a)
      return next
    }
    this.left = grow(this.left)
    this.right = grow(this.right)
    this.size = grow(this.size)
    this.merged = grow(this.merged)
    this.score = grow(this.score)
    this.heap = grow(this.heap)
  }

  push(left: number, right: number, score: number, size: number, merged: number): void {
    this.ensure()
    const p = this.pairs++
    this.left[p] = left
    this.right[p] = right
    this.score[p] = score
    this.size[p] = size
    this.merged[p] = merged
    const heap = this.heap
    let i = this.length++
    while (i > 0) {
      const parent = (i - 1) >> 1
      if (!this.before(p, heap[parent])) break
      heap[i] = heap[parent]
      i = parent
    }
    heap[i] = p
  }

  pop(): number {
    const heap = this.heap
    const top = heap[0]
    const last = heap[--this.length]
    const n = this.length
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      if (l >= n) break
      const r = l + 1
      const c = r < n && this.before(heap[r], heap[l]) ? r : l
      if (!this.before(heap[c], last)) break
      heap[i] = heap[c]
      i = c
    }
    if (n > 0) heap[i] = last
    return top
  }
}

export class SentencePieceModel {
  readonly proto: ModelProto
  readonly type: SentencePieceModelType
  readonly file: string
  readonly normalizer: SentencePieceNormalizer
  readonly unkId: number
  readonly byteFallback: boolean
  /** Id of `<0xNN>` for each byte (when byte fallback is on). */
  readonly byteIds: Int32Array
  private readonly types: Uint8Array
  private readonly scores: Float64Array
  private readonly displayPieces: string[]
  /** NORMAL, USER_DEFINED and UNUSED pieces (the reference's `pieces_`), keyed by their bytes. */
  private readonly pieces = new Map<string, number>()
  /** UNKNOWN, CONTROL and BYTE pieces (the reference's `reserved_id_map_`). */
  private readonly reserved = new Map<string, number>()
  private readonly userDefined: BytePrefixMatcher
  private readonly maxPieceBytes: number
  private readonly hasUnused: boolean
  private readonly trie: PieceTrie | undefined
  private readonly minScore: number
  private readonly maxScore: number
  private readonly denormalizer: SentencePieceNormalizer | undefined

  private constructor(proto: ModelProto, file: string) {
    this.proto = proto
    this.file = file
    const fail = (message: string): never => {
      throw new TokenizerError('ERR_TOKENIZER_MODEL', message, { file })
    }
    const spec = proto.trainerSpec
    if (spec.modelType === ModelType.BPE) this.type = 'bpe'
    else if (spec.modelType === ModelType.UNIGRAM) this.type = 'unigram'
    else this.type = fail(`model_type ${spec.modelType === ModelType.WORD ? 'WORD' : 'CHAR'} is not supported (only BPE and UNIGRAM)`)

    const n = proto.pieces.length
    this.types = new Uint8Array(n)
    this.scores = new Float64Array(n)
    this.displayPieces = new Array<string>(n)
    this.byteFallback = spec.byteFallback
    this.byteIds = new Int32Array(256).fill(-1)
    const userDefined: Uint8Array[] = []
    let unkId = -1
    let maxPieceBytes = 0
    let hasUnused = false
    let minScore = 3.4028234663852886e38 // FLT_MAX
    let maxScore = 1.1754943508222875e-38 // FLT_MIN, as the reference initialises it
    for (let i = 0; i < n; i++) {
      const p = proto.pieces[i]
      if (p.bytes.length === 0) fail(`piece ${i} is empty`)
      const key = latin1(p.bytes)
      const normal = p.type === PieceType.NORMAL || p.type === PieceType.USER_DEFINED || p.type === PieceType.UNUSED
      const map = normal ? this.pieces : this.reserved
      if (map.has(key)) fail(`piece ${i} ${JSON.stringify(p.piece)} is defined twice`)
      map.set(key, i)
      this.types[i] = p.type
      this.scores[i] = p.score
      this.displayPieces[i] = p.piece
      if (normal) maxPieceBytes = Math.max(maxPieceBytes, p.bytes.length)
      if (p.type === PieceType.USER_DEFINED) userDefined.push(p.bytes)
      if (p.type === PieceType.UNUSED) hasUnused = true
      if (p.type === PieceType.NORMAL) {
        if (p.score < minScore) minScore = p.score
        if (p.score > maxScore) maxScore = p.score
      }
      if (p.type === PieceType.UNKNOWN) {
        if (unkId >= 0) fail(`pieces ${unkId} and ${i} are both of type UNKNOWN`)
        unkId = i
      }
      if (p.type === PieceType.BYTE) {
        if (!spec.byteFallback) fail(`byte piece ${JSON.stringify(p.piece)} (id ${i}) although byte_fallback is false`)
        const m = /^<0x([0-9A-F]{2})>$/.exec(p.piece)
        if (!m) fail(`byte piece ${i} ${JSON.stringify(p.piece)} is not of the form <0xNN>`)
        this.byteIds[parseInt(m![1], 16)] = i
      }
    }
    if (unkId < 0) fail('no piece of type UNKNOWN')
    let shadowed = false
    for (const key of this.reserved.keys()) if (this.pieces.has(key)) shadowed = true
    this.shadowedPieces = shadowed
    if (spec.byteFallback) {
      const missing = this.byteIds.indexOf(-1)
      if (missing >= 0) fail(`byte_fallback is true but byte piece <0x${missing.toString(16).toUpperCase().padStart(2, '0')}> is missing`)
    }
    this.unkId = unkId
    this.maxPieceBytes = maxPieceBytes
    this.hasUnused = hasUnused
    this.minScore = minScore
    this.maxScore = maxScore
    this.userDefined = new BytePrefixMatcher(userDefined)
    this.normalizer = new SentencePieceNormalizer(proto.normalizerSpec, {
      treatWhitespaceAsSuffix: spec.treatWhitespaceAsSuffix,
      userDefined: this.userDefined,
      file,
    })
    this.denormalizer =
      proto.denormalizerSpec && proto.denormalizerSpec.precompiledCharsmap.length > 0
        ? new SentencePieceNormalizer(proto.denormalizerSpec, { file })
        : undefined
    if (this.type === 'unigram') this.trie = new PieceTrie(this.pieces)
  }

  /** Parses a tokenizer.model file's bytes. Throws TokenizerError (naming `file`) if it is not a usable model. */
  static fromBytes(data: Uint8Array, file = 'tokenizer.model'): SentencePieceModel {
    return new SentencePieceModel(parseModelProto(data, file), file)
  }

  static fromProto(proto: ModelProto, file = 'tokenizer.model'): SentencePieceModel {
    return new SentencePieceModel(proto, file)
  }

  get size(): number {
    return this.types.length
  }

  idToPiece(id: number): string | undefined {
    return this.displayPieces[id]
  }

  /** Id of a piece given exactly (any type), or undefined. */
  pieceToId(piece: string): number | undefined {
    const key = Buffer.from(piece, 'utf8').toString('latin1')
    return this.reserved.get(key) ?? this.pieces.get(key)
  }

  pieceType(id: number): PieceType | undefined {
    const t = this.types[id]
    return t === undefined ? undefined : (t as PieceType)
  }

  score(id: number): number | undefined {
    return this.scores[id]
  }

  isControl(id: number): boolean {
    return this.types[id] === PieceType.CONTROL
  }

  /** The normalized text as the model sees it (U+2581 for spaces when the spec escapes them). */
  normalize(text: string): string {
    checkText(text)
    return Buffer.from(this.normalizeBytes(text)).toString('utf8')
  }

  private normalizeBytes(text: string): Uint8Array {
    return this.normalizer.normalize(Buffer.from(text, 'utf8'))
  }

  encode(text: string): number[] {
    checkText(text)
    return this.encodeNormalized(this.normalizeBytes(text), undefined)
  }

  encodeWithPieces(text: string): SentencePieceEncoding {
    checkText(text)
    const pieces: string[] = []
    const ids = this.encodeNormalized(this.normalizeBytes(text), pieces)
    return { ids, pieces }
  }

  // Runs the model on normalized bytes; unknown pieces become their bytes when byte fallback is on.
  private encodeNormalized(norm: Uint8Array, pieces: string[] | undefined): number[] {
    if (norm.length === 0) return []
    const segments = this.type === 'bpe' ? this.bpe(norm) : this.unigram(norm)
    const ids: number[] = []
    let prevUnk = false
    for (let k = 0; k < segments.length; k += 3) {
      const start = segments[k]
      const end = segments[k + 1]
      const id = segments[k + 2]
      const unk = id === this.unkId
      if (unk && this.byteFallback) {
        for (let i = start; i < end; i++) {
          const byteId = this.byteIds[norm[i]]
          ids.push(byteId)
          pieces?.push(this.displayPieces[byteId])
        }
      } else if (unk && prevUnk) {
        // A run of unknown pieces is one unknown token (the reference merges them).
        if (pieces) pieces[pieces.length - 1] += Buffer.from(norm.buffer, norm.byteOffset + start, end - start).toString('utf8')
      } else {
        ids.push(id)
        pieces?.push(Buffer.from(norm.buffer, norm.byteOffset + start, end - start).toString('utf8'))
      }
      prevUnk = unk
    }
    return ids
  }

  private readonly charCache = new Map<number, number>()
  /** Some piece is both a normal and a reserved piece (allowed by the reference; reserved wins in PieceToId). */
  private readonly shadowedPieces: boolean
  private symbols = newSymbols(256)
  private readonly heap = new PairHeap(512)

  /**
   * BPE pair cache: (left id * size + right id) -> id of the piece the two symbols concatenate to,
   * or -1. Filled from exact byte lookups as pairs are met; cleared when it grows past a bound.
   */
  private readonly pairCache = new Map<number, number>()

  // Piece id of the character at norm[pos, pos + len), or -1; cached under a small-integer key
  // (its bytes for 1-3 byte characters, 2^24 + its code point for 4-byte ones).
  private charPiece(norm: Uint8Array, text: string, pos: number, len: number): number {
    let key: number
    const b0 = norm[pos]
    if (len === 1) key = b0
    else if (len === 2) key = (b0 << 8) | norm[pos + 1]
    else if (len === 3) key = (b0 << 16) | (norm[pos + 1] << 8) | norm[pos + 2]
    else {
      const b1 = norm[pos + 1]
      const b2 = norm[pos + 2]
      const b3 = norm[pos + 3]
      // Only well-formed continuation bytes make the code point a unique key.
      if ((b1 & 0xc0) !== 0x80 || (b2 & 0xc0) !== 0x80 || (b3 & 0xc0) !== 0x80) return this.pieces.get(text.slice(pos, pos + len)) ?? -1
      key = 0x1000000 + (((b0 & 7) << 18) | ((b1 & 63) << 12) | ((b2 & 63) << 6) | (b3 & 63))
    }
    let id = this.charCache.get(key)
    if (id === undefined) {
      id = this.pieces.get(text.slice(pos, pos + len)) ?? -1
      this.charCache.set(key, id)
    }
    return id
  }

  // The reference's PieceToId: reserved pieces first, then normal ones, else unk.
  private idOf(key: string): number {
    return this.reserved.get(key) ?? this.pieces.get(key) ?? this.unkId
  }

  /** BPE as sentencepiece's bpe_model.cc: returns [start, end, id] triples over `norm`. */
  private bpe(norm: Uint8Array): number[] {
    const n = norm.length
    const text = latin1(norm)
    const pairs = this.pairCache
    if (pairs.size > 1 << 20) pairs.clear()
    const np = this.types.length
    // Symbols: a doubly linked list over byte ranges, each with its piece id (-1 when the
    // character is not a piece); user-defined symbols are frozen whole. Scratch reused across calls.
    if (this.symbols.start.length < n) this.symbols = newSymbols(Math.max(n, 2 * this.symbols.start.length))
    const { start, len, prev, next, sym, frozen } = this.symbols
    let count = 0
    for (let pos = 0; pos < n; ) {
      let l = this.userDefined.size > 0 ? this.userDefined.longest(norm, pos, n) : 0
      if (l > 0) {
        frozen[count] = 1
        sym[count] = this.pieces.get(text.slice(pos, pos + l)) ?? -1
      } else {
        l = Math.min(n - pos, oneCharLenByte(norm[pos]))
        frozen[count] = 0
        sym[count] = this.charPiece(norm, text, pos, l)
      }
      start[count] = pos
      len[count] = l
      prev[count] = count - 1
      next[count] = pos + l < n ? count + 1 : -1
      count++
      pos += l
    }
    const heap = this.heap
    heap.reset()
    const maxBytes = this.maxPieceBytes
    const revMerge = this.hasUnused ? new Map<string, number>() : undefined
    const consider = (left: number, right: number) => {
      if (left < 0 || right < 0 || frozen[left] || frozen[right]) return
      const size = len[left] + len[right]
      if (size > maxBytes) return
      const a = sym[left]
      const b = sym[right]
      let id: number | undefined
      if (a >= 0 && b >= 0) {
        // Both sides are pieces: their concatenation is a function of the two ids.
        const pair = a * np + b
        id = pairs.get(pair)
        if (id === undefined) {
          id = this.pieces.get(text.slice(start[left], start[left] + size)) ?? -1
          pairs.set(pair, id)
        }
        if (id < 0) return
      } else {
        id = this.pieces.get(text.slice(start[left], start[left] + size))
        if (id === undefined) return
      }
      heap.push(left, right, this.scores[id], size, id)
      if (revMerge && this.types[id] === PieceType.UNUSED) revMerge.set(text.slice(start[left], start[left] + size), len[left])
    }
    for (let i = 1; i < count; i++) consider(i - 1, i)
    while (heap.length > 0) {
      const p = heap.pop()
      const left = heap.left[p]
      const right = heap.right[p]
      // Stale: one side was merged away or has grown since the pair was queued.
      if (len[left] === 0 || len[right] === 0 || len[left] + len[right] !== heap.size[p]) continue
      len[left] += len[right]
      len[right] = 0
      sym[left] = heap.merged[p]
      next[left] = next[right]
      if (next[right] >= 0) prev[next[right]] = left
      consider(prev[left], left)
      consider(left, next[left])
    }
    const out: number[] = []
    const shadowed = this.shadowedPieces
    const emit = (s: number, l: number, known: number) => {
      // The reference's PieceToId looks in the reserved pieces first; only a clash makes that matter.
      const key = known < 0 || shadowed || revMerge ? text.slice(s, s + l) : ''
      const id = known >= 0 && !shadowed ? known : this.idOf(key)
      const split = revMerge && this.types[id] === PieceType.UNUSED ? revMerge.get(key) : undefined
      if (split === undefined) {
        out.push(s, s + l, id)
        return
      }
      // An UNUSED piece is resegmented into the two symbols it was merged from.
      emit(s, split, -1)
      emit(s + split, l - split, -1)
    }
    for (let i = 0; i !== -1 && count > 0; i = next[i]) emit(start[i], len[i], sym[i])
    return out
  }

  /** Unigram Viterbi as sentencepiece's unigram_model.cc EncodeOptimized (float32 path scores). */
  private unigram(norm: Uint8Array): number[] {
    const n = norm.length
    const trie = this.trie!
    const types = this.types
    const scores = this.scores
    const unkScore = fround(this.minScore - 10)
    const bestScore = new Float32Array(n + 1)
    const startsAt = new Int32Array(n + 1).fill(-1)
    const bestId = new Int32Array(n + 1).fill(-1)
    for (let pos = 0; pos < n; ) {
      const till = bestScore[pos]
      const mblen = Math.min(oneCharLenByte(norm[pos]), n - pos)
      let hasSingle = false
      let node = 0
      for (let key = pos; key < n; key++) {
        node = trie.child(node, norm[key])
        if (node < 0) break
        const id = trie.value[node]
        if (id < 0) continue
        const t = types[id]
        if (t === PieceType.UNUSED) continue
        const length = key + 1 - pos
        const end = key + 1
        // User-defined symbols get a bonus so they are always chosen; that sum is done in double.
        const candidate =
          t === PieceType.USER_DEFINED ? fround(length * this.maxScore) - 0.1 + till : fround(scores[id] + till)
        if (startsAt[end] === -1 || candidate > bestScore[end]) {
          bestScore[end] = candidate
          startsAt[end] = pos
          bestId[end] = id
        }
        if (!hasSingle && length === mblen) hasSingle = true
      }
      if (!hasSingle) {
        const end = pos + mblen
        const candidate = fround(unkScore + till)
        if (startsAt[end] === -1 || candidate > bestScore[end]) {
          bestScore[end] = candidate
          startsAt[end] = pos
          bestId[end] = this.unkId
        }
      }
      pos += mblen
    }
    const reversed: number[] = []
    for (let end = n; end > 0; ) {
      const s = startsAt[end]
      if (s < 0) break // unreachable for valid input; guards a corrupt model
      reversed.push(bestId[end], end, s)
      end = s
    }
    const out: number[] = new Array(reversed.length)
    for (let i = 0, j = reversed.length - 1; j >= 0; i += 3, j -= 3) {
      out[i] = reversed[j]
      out[i + 1] = reversed[j - 1]
      out[i + 2] = reversed[j - 2]
    }
    return out
  }

  /**
   * Decodes ids as the reference does: U+2581 back to spaces, the first leading space dropped when
   * the model adds a dummy prefix, byte pieces joined into UTF-8, control pieces invisible.
   */
  decode(ids: readonly number[], options: SentencePieceDecodeOptions = {}): string {
    const spec = this.proto.normalizerSpec
    const stripLeading = spec.addDummyPrefix || spec.removeExtraWhitespaces
    let text = ''
    let bytes: number[] = []
    let isBosWs = true
    let bosWsSeen = false
    const flush = () => {
      if (bytes.length === 0) return
      text += decodeUtf8Lenient(Uint8Array.from(bytes))
      bytes = []
    }
    for (const id of ids) {
      if (!Number.isInteger(id) || id < 0) {
        throw new TokenizerError('ERR_TOKENIZER_INPUT', `token id ${String(id)} is not a non-negative integer`)
      }
      const rendered = options.render?.(id)
      if (rendered === null) continue
      if (rendered === undefined && id >= this.types.length) {
        throw new TokenizerError('ERR_TOKENIZER_INPUT', `token id ${id} is outside the vocabulary (0..${this.types.length - 1})`)
      }
      if (rendered === undefined && this.types[id] === PieceType.BYTE) {
        bytes.push(parseInt(this.displayPieces[id].slice(3, 5), 16))
        continue
      }
      flush()
      if (bosWsSeen || text.length > 0) isBosWs = false
      let surface: string
      bosWsSeen = false
      if (rendered !== undefined) surface = rendered
      else if (this.types[id] === PieceType.CONTROL) surface = ''
      else if (this.types[id] === PieceType.UNKNOWN) surface = this.proto.trainerSpec.unkSurface
      else {
        let piece = this.displayPieces[id]
        if (isBosWs && stripLeading && piece.startsWith(SPACE_SYMBOL)) {
          piece = piece.slice(1)
          bosWsSeen = !spec.removeExtraWhitespaces
        }
        surface = piece.replaceAll(SPACE_SYMBOL, ' ')
      }
      text += surface
    }
    flush()
    if (this.denormalizer) text = Buffer.from(this.denormalizer.normalize(Buffer.from(text, 'utf8'))).toString('utf8')
    return text
  }
}

function newSymbols(n: number) {
  return {
    start: new Int32Array(n),
    len: new Int32Array(n),
    prev: new Int32Array(n),
    next: new Int32Array(n),
    sym: new Int32Array(n),
    frozen: new Uint8Array(n),
  }
}

function oneCharLenByte(b: number): number {
  return b < 0xc0 ? 1 : b < 0xe0 ? 2 : b < 0xf0 ? 3 : 4
}
