// Preference records as token ids for DPO: each answer after its prompt, the answer's tokens
// scored and the prompt's not; a chat record encoded as chat SFT encodes a conversation.
import { readPreferenceFile, type PreferenceRecord } from '../data/preferences'
import { DataError } from '../data/errors'
import type { ChatMessage, Tokenizer } from '../tokenizer'
import { encodeConversation } from './chat-encode'

/** A token sequence whose tokens from `answerStart` on are scored (those before are the prompt). */
export interface ScoredSequence {
  inputIds: readonly number[]
  answerStart: number
}

/** One preference pair, tokenized: the chosen and the rejected sequence (each its prompt and answer). */
export interface PreferencePair {
  chosen: ScoredSequence
  rejected: ScoredSequence
  /** Where it came from ("pairs.jsonl:12"), for messages. */
  source?: string
}

export interface TokenizePreferenceOptions {
  /** Longer sequences lose the end of their answer (the prompt is kept whole); counted as truncated. */
  maxLength?: number
  /** Appended to a plain-string answer (default: the tokenizer's EOS, when it has one); a chat answer ends as its template ends it. */
  eosTokenId?: number
}

// One answer after the prompt as token ids. Strings: the prompt's tokens, then the answer's
// (tokenized apart, as TRL does) and EOS. Chat: the conversation with the answer encoded as chat
// SFT encodes it (encodeConversation), the answer's tokens those it would label: its content and
// end-of-turn marker, after a prompt whose ids are those generation is fed.
function sequence(tokenizer: Tokenizer, prompt: string | ChatMessage[], answer: string | ChatMessage[], eos: number | undefined): ScoredSequence {
  if (typeof prompt === 'string') {
    const p = tokenizer.encode(prompt)
    const a = tokenizer.encode(answer as string)
    return { inputIds: [...p, ...a, ...(eos === undefined ? [] : [eos])], answerStart: p.length }
  }
  const messages = typeof answer === 'string' ? [{ role: 'assistant' as const, content: answer }] : answer
  const { inputIds, spans } = encodeConversation(tokenizer, [...prompt, ...messages], { lossOn: 'last' })
  const first = spans[prompt.length]
  return { inputIds: Array.from(inputIds.subarray(0, spans.at(-1)!.end)), answerStart: first.start }
}

/** A record as a tokenized pair; throws a DataError naming `source` (file:line) when it cannot be scored. */
export function tokenizePreference(
  record: PreferenceRecord,
  tokenizer: Tokenizer,
  source: { file: string; line: number },
  options: TokenizePreferenceOptions = {},
): { pair: PreferencePair; truncated: boolean } {
  const eos = options.eosTokenId ?? tokenizer.eosTokenId
  const max = options.maxLength ?? Infinity
  let truncated = false
  const fit = (which: 'chosen' | 'rejected'): ScoredSequence => {
    let s: ScoredSequence
    try {
      s = sequence(tokenizer, record.prompt, record[which], eos)
    } catch (e) {
      // a conversation out of order, or a template that cannot be split into turns
      if (e instanceof RangeError || (e as { code?: string }).code === 'ERR_CHAT_TEMPLATE') throw new DataError(source.file, source.line, `"${which}": ${(e as Error).message}`)
      throw e
    }
    if (s.answerStart === 0) throw new DataError(source.file, source.line, 'the prompt renders to no tokens: the first answer token would have nothing to predict it')
    if (s.answerStart >= s.inputIds.length) throw new DataError(source.file, source.line, `"${which}" renders to no tokens after the prompt`)
    if (s.inputIds.length <= max) return s
    if (s.answerStart >= max) throw new DataError(source.file, source.line, `the prompt alone has ${s.answerStart} tokens, and maxLength is ${max}: no room for "${which}"`)
    truncated = true
    return { inputIds: s.inputIds.slice(0, max), answerStart: s.answerStart }
  }
  const pair = { chosen: fit('chosen'), rejected: fit('rejected'), source: `${source.file}:${source.line}` }
  return { pair, truncated }
}

/** A preference file read and tokenized: its pairs in file order, and how many lost the end of an answer to maxLength. */
export async function loadPreferencePairs(file: string, tokenizer: Tokenizer, options: TokenizePreferenceOptions = {}): Promise<{ pairs: PreferencePair[]; truncated: number }> {
  const pairs: PreferencePair[] = []
  let truncated = 0
  for (const { record, line } of await readPreferenceFile(file)) {
    const r = tokenizePreference(record, tokenizer, { file, line }, options)
    pairs.push(r.pair)
    if (r.truncated) truncated++
  }
  return { pairs, truncated }
}
