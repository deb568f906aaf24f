// Texts -> token batches for the classifier: truncation to the length budget (the head, or
// head+tail), an EOS the last-token pooling reads, right padding (the engine pools: model/forward.ts),
// and the generative method's prompt + answer sequences.
import { ErnieError } from '../errors'
import type { Tokenizer } from '../tokenizer'
import { yieldToEventLoop } from '../util/event-loop'
import { IN_PLACE_CHARS, IN_PLACE_TEXTS, type EncodeThread } from './encode-thread'

export type { Pooling } from '../model/forward'
export type Truncation = 'head' | 'head_tail'

export interface EncodeSettings {
  maxLength: number
  truncation: Truncation
  /**
   * true: append the tokenizer's EOS (when it has one), a fixed last position for 'last' pooling,
   * and no other special tokens. false: the tokenizer's own special tokens (add_bos_token /
   * add_eos_token or its post-processor), as transformers encodes for a classifier made there.
   */
  appendEos: boolean
}

/** A token that stands for nothing: an empty text still needs one position to pool. */
export function fillerToken(tok: Tokenizer): number {
  return tok.eosTokenId ?? tok.unkTokenId ?? tok.padTokenId ?? 0
}

/**
 * Token ids per text (ragged), truncated so that each row, EOS included, fits maxLength. Rows are
 * Int32Arrays (4 bytes a token; a number[] takes 8 and more): a training set's rows stay in
 * memory for the whole fit.
 */
export function encodeTexts(tok: Tokenizer, texts: readonly string[], s: EncodeSettings): Int32Array[] {
  const eos = s.appendEos ? tok.eosTokenId : undefined
  const budget = s.maxLength - (eos !== undefined ? 1 : 0)
  const { inputIds } = tok.encodeBatch(texts, { maxLength: budget, truncation: s.truncation === 'head_tail' ? 'head_tail' : true, addSpecialTokens: !s.appendEos })
  return inputIds.map((row) => {
    if (eos !== undefined) row.push(eos)
    if (row.length === 0) row.push(fillerToken(tok))
    return Int32Array.from(row)
  })
}

/**
 * Like encodeTexts, without holding the event loop: a large run in `thread` (a worker thread,
 * when one is given and can hold the tokenizer), a small one here in chunks with the event loop
 * running between them. Undefined when `signal` aborts first.
 */
export async function encodeTextsAsync(
  tok: Tokenizer,
  texts: readonly string[],
  s: EncodeSettings,
  signal?: AbortSignal,
  thread?: () => EncodeThread | undefined,
): Promise<Int32Array[] | undefined> {
  let chars = 0
  for (let i = 0; i < texts.length && chars <= IN_PLACE_CHARS; i++) chars += texts[i].length
  const worker = thread && (texts.length > IN_PLACE_TEXTS || chars > IN_PLACE_CHARS) ? thread() : undefined
  if (worker) {
    const rows = await worker.encode(texts, s)
    return signal?.aborted ? undefined : rows
  }
  const out: Int32Array[] = []
  const chunk = 64 // a few milliseconds of tokenizing
  for (let i = 0; i < texts.length; i += chunk) {
    if (signal?.aborted) return undefined
    for (const row of encodeTexts(tok, texts.slice(i, i + chunk), s)) out.push(row)
    if (i + chunk < texts.length) await yieldToEventLoop()
  }
  return out
}

/** The generative method's prompt: `{text}` is the review, `{labels}` the answers joined by '/'. */
export const DEFAULT_PROMPT = '判断这条评论的情感（{labels}）：\n{text}\n答案：'

export interface PromptParts {
  prefix: number[]
  suffix: number[]
}

/** Splits a template at {text} and encodes both sides (answers listed where {labels} is). */
export function promptParts(tok: Tokenizer, template: string, answers: readonly string[]): PromptParts {
  const at = template.indexOf('{text}')
  if (at < 0 || template.indexOf('{text}', at + 1) >= 0) throw new ErnieError('ERR_PROMPT', `prompt must contain {text} exactly once: ${JSON.stringify(template)}`)
  const fill = (s: string) => s.split('{labels}').join(answers.join('/'))
  return { prefix: tok.encode(fill(template.slice(0, at))), suffix: tok.encode(fill(template.slice(at + '{text}'.length))) }
}

/** Each label's answer tokens (its word, then EOS when the tokenizer has one); they must differ. */
export function answerIds(tok: Tokenizer, words: readonly string[]): number[][] {
  const eos = tok.eosTokenId
  const out = words.map((w) => [...tok.encode(w), ...(eos !== undefined ? [eos] : [])])
  const seen = new Map<string, number>()
  out.forEach((ids, i) => {
    if (ids.length === 0) throw new ErnieError('ERR_PROMPT', `the answer for "${words[i]}" encodes to no tokens`)
    const key = ids.join(',')
    if (seen.has(key)) throw new ErnieError('ERR_PROMPT', `the answers "${words[seen.get(key)!]}" and "${words[i]}" encode to the same tokens`)
    seen.set(key, i)
  })
  return out
}

/** prefix + text (truncated to the room left) + suffix: the prompt a text is answered after. */
export function promptIds(tok: Tokenizer, parts: PromptParts, texts: readonly string[], room: number, truncation: Truncation): number[][] {
  if (room < 1) throw new ErnieError('ERR_PROMPT', 'maxLength leaves no room for the text after the prompt and the longest answer')
  const { inputIds } = tok.encodeBatch(texts, { maxLength: room, truncation: truncation === 'head_tail' ? 'head_tail' : true })
  return inputIds.map((ids) => [...parts.prefix, ...(ids.length > 0 ? ids : [fillerToken(tok)]), ...parts.suffix])
}
