// The vocabulary of a tokenizer.json checked before @huggingface/tokenizers sees it: the library
// takes any ids and merges on trust (a fractional or duplicate id, a merge of tokens the vocabulary
// lacks, an unk_id past the end all load and then give wrong ids), so each is named here instead.
import { TokenizerError } from './errors'

/** An added token as the file lists it (already checked to have an integer id >= 0 and a string content). */
export interface FileAddedToken {
  id: number
  content: string
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

/** The model's kind, as the library infers it when "type" is absent. */
export function modelKind(model: Record<string, unknown>): 'BPE' | 'Unigram' | 'WordPiece' {
  if (model.type === 'BPE' || model.type === 'Unigram' || model.type === 'WordPiece') return model.type
  if (Array.isArray(model.vocab)) return 'Unigram'
  return Object.hasOwn(model, 'merges') ? 'BPE' : 'WordPiece'
}

/**
 * Checks the model's vocabulary, merges and unknown token, and the added tokens against them.
 * Ids must be unique integers below the number of tokens the file defines (vocabulary entries
 * plus added tokens), so no id points past what exists and none names two tokens.
 */
export function checkVocabulary(model: Record<string, unknown>, added: readonly FileAddedToken[], file: string): void {
  const bad = (what: string): never => {
    throw new TokenizerError('ERR_TOKENIZER_JSON', what, { file })
  }
  const kind = modelKind(model)
  const idOf = new Map<string, number>()
  const pieceOf = new Map<number, string>()
  let entries: number
  if (kind === 'Unigram') {
    if (!Array.isArray(model.vocab) || model.vocab.length === 0) bad('model.vocab of a Unigram model must be a non-empty array of [piece, score]')
    const vocab = model.vocab as unknown[]
    entries = vocab.length
    vocab.forEach((entry, id) => {
      if (!Array.isArray(entry) || typeof entry[0] !== 'string' || entry[0] === '' || typeof entry[1] !== 'number' || !Number.isFinite(entry[1])) {
        bad(`model.vocab[${id}] must be [non-empty piece, finite score], got ${JSON.stringify(entry)?.slice(0, 80)}`)
      }
      const piece = (entry as [string, number])[0]
      if (idOf.has(piece)) bad(`model.vocab[${id}]: piece ${JSON.stringify(piece)} is also model.vocab[${idOf.get(piece)}]`)
      idOf.set(piece, id)
      pieceOf.set(id, piece)
    })
    const unk = model.unk_id
    if (unk !== undefined && unk !== null && (!Number.isInteger(unk) || (unk as number) < 0 || (unk as number) >= entries)) {
      bad(`model.unk_id ${JSON.stringify(unk)} is not an index of model.vocab (0..${entries - 1})`)
    }
  } else {
    if (!isObject(model.vocab)) bad(`model.vocab of a ${kind} model must be an object { token: id }`)
    const vocab = Object.entries(model.vocab as Record<string, unknown>)
    if (vocab.length === 0) bad('model.vocab is empty')
    entries = vocab.length
    const limit = entries + added.length
    for (const [token, id] of vocab) {
      if (!Number.isInteger(id) || (id as number) < 0 || (id as number) >= limit) {
        bad(`model.vocab[${JSON.stringify(token)}] = ${JSON.stringify(id)} is not an id (an integer in 0..${limit - 1})`)
      }
      const other = pieceOf.get(id as number)
      if (other !== undefined) bad(`model.vocab: id ${id} is given to both ${JSON.stringify(other)} and ${JSON.stringify(token)}`)
      idOf.set(token, id as number)
      pieceOf.set(id as number, token)
    }
    if (kind === 'BPE') checkMerges(model, idOf, bad)
    const unk = model.unk_token
    if (unk !== undefined && unk !== null) {
      if (typeof unk !== 'string') bad('model.unk_token must be a string or null')
      if (!idOf.has(unk as string) && !added.some((t) => t.content === unk)) bad(`model.unk_token ${JSON.stringify(unk)} is not in the vocabulary`)
    }
  }

  const limit = entries + added.length
  const addedById = new Map<number, string>()
  const addedByContent = new Set<string>()
  added.forEach((t, i) => {
    const at = `added_tokens[${i}] (${JSON.stringify(t.content)}, id ${t.id})`
    if (t.content === '') bad(`${at}: "content" is empty`)
    if (t.id >= limit) bad(`${at}: id is past the ${limit} tokens the file defines`)
    const sameId = addedById.get(t.id)
    if (sameId !== undefined) bad(`${at}: id ${t.id} is also added token ${JSON.stringify(sameId)}`)
    if (addedByContent.has(t.content)) bad(`${at}: the same content is added twice`)
    const vocabId = idOf.get(t.content)
    if (vocabId !== undefined && vocabId !== t.id) bad(`${at}: the vocabulary gives this token id ${vocabId}`)
    const vocabPiece = pieceOf.get(t.id)
    if (vocabPiece !== undefined && vocabPiece !== t.content) bad(`${at}: id ${t.id} is ${JSON.stringify(vocabPiece)} in the vocabulary`)
    addedById.set(t.id, t.content)
    addedByContent.add(t.content)
  })
}

// Each merge joins two vocabulary tokens into a third (the second without its continuing-subword prefix).
function checkMerges(model: Record<string, unknown>, idOf: Map<string, number>, bad: (what: string) => never): void {
  const merges = model.merges ?? []
  if (!Array.isArray(merges)) bad('model.merges must be an array')
  const prefix = typeof model.continuing_subword_prefix === 'string' ? model.continuing_subword_prefix : ''
  ;(merges as unknown[]).forEach((merge, i) => {
    let pair: unknown[] | undefined
    if (typeof merge === 'string') {
      const parts = merge.split(' ')
      if (parts.length === 2) pair = parts
    } else if (Array.isArray(merge) && merge.length === 2) {
      pair = merge
    }
    if (pair === undefined || typeof pair[0] !== 'string' || typeof pair[1] !== 'string' || pair[0] === '' || pair[1] === '') {
      bad(`model.merges[${i}] must be "a b" or ["a", "b"], got ${JSON.stringify(merge)?.slice(0, 80)}`)
    }
    const [a, b] = pair as [string, string]
    const joined = a + (prefix !== '' && b.startsWith(prefix) ? b.slice(prefix.length) : b)
    for (const token of [a, b, joined]) {
      if (!idOf.has(token)) bad(`model.merges[${i}] (${JSON.stringify([a, b])}): ${JSON.stringify(token)} is not in the vocabulary`)
    }
  })
}
