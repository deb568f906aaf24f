// tokenizer.model -> tokenizer.json (the Hugging Face tokenizers format), as transformers'
// convert_slow_tokenizer does for SentencePiece BPE and unigram models: the normalizer spec as a
// normalizer sequence, the dummy prefix and U+2581 escape as a Metaspace pre-tokenizer, the model
// (BPE merges recovered from piece scores, or unigram scores), byte fallback, a decoder that undoes
// it all, and the model's control / user-defined pieces as added tokens.
import { readSmallFile } from '../io/read'
import { PieceType, parseModelProto, type ModelProto } from './protobuf'
import { SentencePieceModel } from './sentencepiece'
import { SPACE_SYMBOL } from './normalizer'

export interface TokenizerJsonAddedToken {
  id: number
  content: string
  single_word: boolean
  lstrip: boolean
  rstrip: boolean
  normalized: boolean
  special: boolean
}

/** The subset of the tokenizer.json schema the converter writes. */
export interface TokenizerJson {
  version: string
  truncation: null
  padding: null
  added_tokens: TokenizerJsonAddedToken[]
  normalizer: Record<string, unknown> | null
  pre_tokenizer: Record<string, unknown> | null
  post_processor: null
  decoder: Record<string, unknown> | null
  model: Record<string, unknown>
}

function normalizerFor(proto: ModelProto): Record<string, unknown> | null {
  const spec = proto.normalizerSpec
  const steps: Record<string, unknown>[] = []
  if (spec.precompiledCharsmap.length > 0) {
    steps.push({ type: 'Precompiled', precompiled_charsmap: Buffer.from(spec.precompiledCharsmap).toString('base64') })
  }
  if (spec.removeExtraWhitespaces) {
    // SentencePiece collapses runs of spaces and drops leading/trailing ones (only U+0020, after the map).
    steps.push({ type: 'Replace', pattern: { Regex: ' {2,}' }, content: ' ' })
    steps.push({ type: 'Replace', pattern: { Regex: '\\A | \\z' }, content: '' })
  }
  if (steps.length === 0) return null
  return steps.length === 1 ? steps[0] : { type: 'Sequence', normalizers: steps }
}

function preTokenizerFor(proto: ModelProto): Record<string, unknown> {
  const spec = proto.normalizerSpec
  return {
    type: 'Metaspace',
    // Without the escape, spaces stay spaces: replacing ' ' by ' ' keeps the prefix logic only.
    replacement: spec.escapeWhitespaces ? SPACE_SYMBOL : ' ',
    prepend_scheme: spec.addDummyPrefix && !proto.trainerSpec.treatWhitespaceAsSuffix ? 'first' : 'never',
    split: false,
  }
}

function decoderFor(proto: ModelProto): Record<string, unknown> {
  const spec = proto.normalizerSpec
  const steps: Record<string, unknown>[] = []
  if (spec.escapeWhitespaces) steps.push({ type: 'Replace', pattern: { String: SPACE_SYMBOL }, content: ' ' })
  if (proto.trainerSpec.byteFallback) steps.push({ type: 'ByteFallback' })
  steps.push({ type: 'Fuse' })
  if (spec.addDummyPrefix) steps.push({ type: 'Strip', content: ' ', start: 1, stop: 0 })
  return { type: 'Sequence', decoders: steps }
}

/**
 * BPE merges from piece scores: every way of writing a mergeable piece as two pieces, ranked by the
 * merged piece's score (higher first), as SentencePiece merges the highest-scoring pair first.
 * User-defined pieces never merge (they are matched whole), and UNUSED pieces are left out (the
 * reference resegments them, which merges cannot express).
 */
function bpeMerges(proto: ModelProto): [string, string][] {
  const pieces = proto.pieces
  const mergeable = new Map<string, number>()
  for (let i = 0; i < pieces.length; i++) if (pieces[i].type === PieceType.NORMAL) mergeable.set(pieces[i].piece, i)
  const merges: { left: string; right: string; score: number; id: number; leftId: number; rightId: number }[] = []
  for (let id = 0; id < pieces.length; id++) {
    const p = pieces[id]
    if (p.type !== PieceType.NORMAL) continue
    const chars = Array.from(p.piece)
    let offset = 0
    for (let k = 1; k < chars.length; k++) {
      offset += chars[k - 1].length
      const left = p.piece.slice(0, offset)
      const right = p.piece.slice(offset)
      const leftId = mergeable.get(left)
      const rightId = mergeable.get(right)
      if (leftId !== undefined && rightId !== undefined) merges.push({ left, right, score: p.score, id, leftId, rightId })
    }
  }
  merges.sort((a, b) => b.score - a.score || a.id - b.id || a.leftId - b.leftId || a.rightId - b.rightId)
  return merges.map((m) => [m.left, m.right])
}

function modelFor(proto: ModelProto, sp: SentencePieceModel): Record<string, unknown> {
  const pieces = proto.pieces
  const byteFallback = proto.trainerSpec.byteFallback
  if (sp.type === 'unigram') {
    return {
      type: 'Unigram',
      unk_id: sp.unkId,
      vocab: pieces.map((p) => [p.piece, p.score]),
      byte_fallback: byteFallback,
    }
  }
  const vocab: Record<string, number> = {}
  pieces.forEach((p, i) => {
    vocab[p.piece] = i
  })
  return {
    type: 'BPE',
    dropout: null,
    unk_token: pieces[sp.unkId].piece,
    continuing_subword_prefix: null,
    end_of_word_suffix: null,
    fuse_unk: true,
    byte_fallback: byteFallback,
    ignore_merges: false,
    vocab,
    merges: bpeMerges(proto),
  }
}

/** Converts a parsed SentencePiece model (or a tokenizer.model's bytes) to a tokenizer.json object. */
export function sentencePieceToTokenizerJson(model: Uint8Array | ModelProto, file = 'tokenizer.model'): TokenizerJson {
  const proto = model instanceof Uint8Array ? parseModelProto(model, file) : model
  // Building the model validates the pieces (one unk, 256 byte pieces, no duplicates...).
  const sp = SentencePieceModel.fromProto(proto, file)
  const added: TokenizerJsonAddedToken[] = []
  proto.pieces.forEach((p, id) => {
    const special = p.type === PieceType.CONTROL || p.type === PieceType.UNKNOWN
    if (!special && p.type !== PieceType.USER_DEFINED) return
    added.push({ id, content: p.piece, single_word: false, lstrip: false, rstrip: false, normalized: false, special })
  })
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: added,
    normalizer: normalizerFor(proto),
    pre_tokenizer: preTokenizerFor(proto),
    post_processor: null,
    decoder: decoderFor(proto),
    model: modelFor(proto, sp),
  }
}

/** Reads a tokenizer.model file and returns its tokenizer.json equivalent. */
export async function convertSentencePieceFile(modelPath: string): Promise<TokenizerJson> {
  return sentencePieceToTokenizerJson(new Uint8Array(await readSmallFile(modelPath, 'tokenizer.model')), modelPath)
}
