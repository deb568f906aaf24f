// tokenizer.json through Hugging Face's own JS library (@huggingface/tokenizers), with two gaps of
// that library filled where the HF format says more than it implements:
// - its `Precompiled` normalizer approximates the charsmap with String.normalize('NFKC'); we swap in
//   the real double-array lookup (the one the SentencePiece path uses), as HF's Rust crate does;
// - its Unigram model ignores `byte_fallback`; unknown pieces are turned into `<0xNN>` tokens here,
//   as the Rust crate does;
// - its ByteFallback decoder drops a U+FEFF at the start of each byte run (TextDecoder's BOM
//   handling); ours keeps it, and turns each invalid byte into one U+FFFD as SentencePiece does.
// Special tokens are matched by the Tokenizer wrapper (so `parseSpecial` can be honoured), so the
// library only ever sees plain text and the non-special added tokens. The vocabulary is checked
// first (hf-vocab.ts), and the file's regexes run on RE2, never on a JS RegExp (hf-patterns.ts).
import {
  ByteFallbackDecoder,
  Decoder,
  Normalizer,
  PrecompiledNormalizer,
  SequenceDecoder,
  SequenceNormalizer,
  Tokenizer as HfTokenizer,
} from '@huggingface/tokenizers'
import { TokenizerError } from './errors'
import type { TokenizerBackend } from './backend'
import { linearPatterns } from './hf-patterns'
import { checkPipelineDepth, tokenFlags, isObject, isTokenId, MAX_TOKEN_ID } from './json-fields'
import { checkVocabulary, modelKind } from './hf-vocab'
import { PrecompiledCharsMap, decodeUtf8Lenient } from './normalizer'

export interface JsonAddedToken {
  id: number
  content: string
  special: boolean
  lstrip: boolean
  rstrip: boolean
}

/** The real charsmap lookup in place of the library's NFKC approximation. */
class CharsMapNormalizer extends Normalizer {
  private readonly map: PrecompiledCharsMap
  constructor(config: ConstructorParameters<typeof PrecompiledNormalizer>[0], map: PrecompiledCharsMap) {
    super(config)
    this.map = map
  }
  normalize(text: string): string {
    return this.map.normalizeString(text)
  }
}

/** `<0xNN>` tokens joined into UTF-8 text, keeping U+FEFF and replacing each invalid byte. */
class ExactByteFallback extends ByteFallbackDecoder {
  decode_chain(tokens: string[]): string[] {
    const out: string[] = []
    let bytes: number[] = []
    const flush = () => {
      if (bytes.length === 0) return
      out.push(decodeUtf8Lenient(Uint8Array.from(bytes)))
      bytes = []
    }
    for (const token of tokens) {
      const m = token.length === 6 ? /^<0x([0-9A-Fa-f]{2})>$/.exec(token) : null
      if (m) {
        bytes.push(parseInt(m[1], 16))
        continue
      }
      flush()
      out.push(token)
    }
    flush()
    return out
  }
}

function withExactByteFallback(d: Decoder | null): Decoder | null {
  if (d instanceof ByteFallbackDecoder) return new ExactByteFallback(d.config as ConstructorParameters<typeof ByteFallbackDecoder>[0])
  if (d instanceof SequenceDecoder) d.decoders = d.decoders.map((x) => withExactByteFallback(x)!)
  return d
}

/** The `added_tokens` array of a tokenizer.json, checked. */
export function readJsonAddedTokens(json: Record<string, unknown>, file: string): JsonAddedToken[] {
  const raw = json.added_tokens ?? []
  if (!Array.isArray(raw)) throw new TokenizerError('ERR_TOKENIZER_JSON', '"added_tokens" must be an array', { file })
  return raw.map((t, i) => {
    if (!isObject(t) || typeof t.content !== 'string' || !isTokenId(t.id)) {
      throw new TokenizerError('ERR_TOKENIZER_JSON', `added_tokens[${i}] needs an integer "id" in [0, ${MAX_TOKEN_ID}] and a string "content"`, { file })
    }
    // empty content is refused with the vocabulary's checks (hf-vocab.ts)
    return { id: t.id, content: t.content, ...tokenFlags(t, `added_tokens[${i}]: `, file) }
  })
}

export class HfBackend implements TokenizerBackend {
  readonly kind = 'tokenizer.json' as const
  readonly modelSize: number
  readonly addedTokens: JsonAddedToken[]
  private readonly inner: HfTokenizer
  private readonly file: string
  private readonly cleanUpSpaces: boolean
  /** `<0xNN>` ids when a Unigram model asks for byte fallback, else undefined. */
  private readonly unigramByteIds: number[] | undefined
  private readonly unkId: number | undefined

  constructor(json: unknown, file: string, options: { cleanUpTokenizationSpaces?: boolean; libraryConfig?: Record<string, unknown> } = {}) {
    this.file = file
    if (!isObject(json)) throw new TokenizerError('ERR_TOKENIZER_JSON', 'not a JSON object', { file })
    if (!isObject(json.model)) throw new TokenizerError('ERR_TOKENIZER_JSON', 'missing the "model" object', { file })
    for (const key of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder'] as const) {
      if (json[key] !== undefined && json[key] !== null && !isObject(json[key])) {
        throw new TokenizerError('ERR_TOKENIZER_JSON', `"${key}" must be an object or null`, { file })
      }
    }
    checkPipelineDepth(json, file)
    this.addedTokens = readJsonAddedTokens(json, file)
    const model = json.model
    if (model.type !== undefined && !['BPE', 'Unigram', 'WordPiece'].includes(model.type as string)) {
      throw new TokenizerError('ERR_TOKENIZER_JSON', `model type ${JSON.stringify(model.type)} is not supported (BPE, Unigram, WordPiece)`, { file })
    }
    checkVocabulary(model, this.addedTokens, file)
    const patterns = linearPatterns(json, file)
    const plain = {
      ...json,
      ...patterns.stripped,
      post_processor: null,
      added_tokens: this.addedTokens.filter((t) => !t.special).map((t) => ({ ...t, normalized: false, single_word: false })),
    }
    try {
      this.inner = new HfTokenizer(plain, options.libraryConfig ?? {})
    } catch (e) {
      throw new TokenizerError('ERR_TOKENIZER_JSON', `@huggingface/tokenizers cannot build it: ${(e as Error).message}`, { file, cause: e })
    }
    patterns.install(this.inner)
    this.inner.normalizer = this.withCharsMaps(this.inner.normalizer)
    this.inner.decoder = withExactByteFallback(this.inner.decoder)
    this.modelSize = this.inner.model!.vocab.length
    this.unkId = this.inner.model?.unk_token_id ?? undefined
    this.cleanUpSpaces = options.cleanUpTokenizationSpaces ?? false
    if (modelKind(model) === 'Unigram' && model.byte_fallback === true) {
      const ids: number[] = []
      for (let b = 0; b < 256; b++) {
        const id = this.inner.token_to_id(`<0x${b.toString(16).toUpperCase().padStart(2, '0')}>`)
        if (id === undefined) throw new TokenizerError('ERR_TOKENIZER_JSON', `byte_fallback is true but token <0x${b.toString(16).toUpperCase().padStart(2, '0')}> is missing`, { file })
        ids.push(id)
      }
      this.unigramByteIds = ids
    }
  }

  // Replaces every Precompiled normalizer (also inside sequences) with the real charsmap lookup.
  private withCharsMaps(n: Normalizer | null): Normalizer | null {
    if (n instanceof PrecompiledNormalizer) {
      const b64 = (n.config as { precompiled_charsmap?: unknown }).precompiled_charsmap
      if (b64 === null || b64 === undefined || b64 === '') return null
      if (typeof b64 !== 'string') throw new TokenizerError('ERR_TOKENIZER_JSON', 'precompiled_charsmap must be a base64 string', { file: this.file })
      const map = PrecompiledCharsMap.parse(Buffer.from(b64, 'base64'), { file: this.file, code: 'ERR_TOKENIZER_JSON' })
      return new CharsMapNormalizer(n.config as ConstructorParameters<typeof PrecompiledNormalizer>[0], map)
    }
    if (n instanceof SequenceNormalizer) n.normalizers = n.normalizers.map((m) => this.withCharsMaps(m))
    return n
  }

  encode(text: string): number[] {
    let ids: number[]
    let tokens: string[]
    try {
      const r = this.inner.encode(text, { add_special_tokens: false })
      ids = r.ids
      tokens = r.tokens
    } catch (e) {
      throw new TokenizerError('ERR_TOKENIZER_JSON', `@huggingface/tokenizers failed to encode: ${(e as Error).message}`, { file: this.file, cause: e })
    }
    // A token the vocabulary lacks, with no unk token to stand for it, is dropped (as HF's Rust crate does).
    if (ids.some((id) => !Number.isInteger(id))) {
      tokens = tokens.filter((_, k) => Number.isInteger(ids[k]))
      ids = ids.filter((id) => Number.isInteger(id))
    }
    const byteIds = this.unigramByteIds
    if (byteIds === undefined || !Number.isInteger(this.unkId) || !ids.includes(this.unkId!)) return ids
    const out: number[] = []
    for (let k = 0; k < ids.length; k++) {
      if (ids[k] === this.unkId && tokens[k] !== this.inner.model?.unk_token) for (const b of Buffer.from(tokens[k], 'utf8')) out.push(byteIds[b])
      else out.push(ids[k])
    }
    return out
  }

  idToPiece(id: number): string | undefined {
    return this.inner.id_to_token(id)
  }

  pieceToId(piece: string): number | undefined {
    return this.inner.token_to_id(piece)
  }

  decode(ids: readonly number[], render: (id: number) => string | null | undefined): string {
    const tokens: string[] = []
    for (const id of ids) {
      const r = render(id)
      if (r === null) continue
      if (r !== undefined) {
        tokens.push(r)
        continue
      }
      const piece = this.inner.id_to_token(id)
      if (piece === undefined) throw new TokenizerError('ERR_TOKENIZER_INPUT', `token id ${id} is outside the vocabulary`)
      tokens.push(piece)
    }
    const decoder = this.inner.decoder
    let text = decoder ? decoder(tokens) : tokens.join(' ')
    if (this.cleanUpSpaces) text = cleanUpTokenization(text)
    return text
  }

  get decodeRewrites(): readonly string[] {
    return this.cleanUpSpaces ? CLEAN_UP_REWRITES.map(([from]) => from) : []
  }
}

/** transformers' clean_up_tokenization, in its order: the space English tokenizers leave before punctuation, dropped. */
export const CLEAN_UP_REWRITES: readonly (readonly [string, string])[] = [
  [' .', '.'],
  [' ?', '?'],
  [' !', '!'],
  [' ,', ','],
  [" ' ", "'"],
  [" n't", "n't"],
  [" 'm", "'m"],
  [" 's", "'s"],
  [" 've", "'ve"],
  [" 're", "'re"],
]

export function cleanUpTokenization(text: string): string {
  for (const [from, to] of CLEAN_UP_REWRITES) text = text.replaceAll(from, to)
  return text
}
