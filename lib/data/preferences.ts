// Preference pairs for DPO: JSON Lines records {prompt, chosen, rejected}, as plain strings or in
// chat form (TRL's "conversational" shape: the prompt as messages, each answer as assistant
// messages or a string), read with file:line errors and rendered to token ids: each answer's
// tokens scored, the prompt's not.
import type { ChatMessage, Tokenizer } from '../tokenizer'
import { rangeError } from '../errors'
import { DataError } from './errors'
import { seededRandom } from '../util/random'
import { byteLines, decodeUtf8, firstInvalidUtf8 } from './lines'

/** A preference record as read: a prompt and two answers to it, the first preferred. */
export interface PreferenceRecord {
  /** A string, or chat messages (the conversation the answers continue). */
  prompt: string | ChatMessage[]
  /** A string, or assistant messages. */
  chosen: string | ChatMessage[]
  rejected: string | ChatMessage[]
}

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

const ROLES = ['system', 'user', 'assistant']

function describe(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v
}

function messagesProblem(v: unknown[], field: string, assistantOnly: boolean): string | undefined {
  if (v.length === 0) return `${field} is an empty list of messages`
  for (const [i, m] of v.entries()) {
    const { role, content } = (m ?? {}) as { role?: unknown; content?: unknown }
    if (m === null || typeof m !== 'object' || Array.isArray(m)) return `${field}[${i}] must be a {role, content} object, got ${describe(m)}`
    if (typeof role !== 'string' || !ROLES.includes(role)) return `${field}[${i}].role must be 'system', 'user' or 'assistant', got ${JSON.stringify(role)}`
    if (assistantOnly && role !== 'assistant') return `${field}[${i}].role is '${role}': an answer holds assistant messages only`
    if (typeof content !== 'string') return `${field}[${i}].content must be a string, got ${describe(content)}`
  }
  return undefined
}

/**
 * One JSON value as a preference record, or what is wrong with it: {prompt, chosen, rejected},
 * each a non-empty string or (TRL's conversational form) the prompt as messages and each answer
 * as assistant messages or a string. An answer in chat form needs a prompt in chat form.
 */
export function parsePreferenceRecord(v: unknown): PreferenceRecord | { problem: string } {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return { problem: `expected a JSON object {prompt, chosen, rejected}, got ${describe(v)}` }
  const r = v as Record<string, unknown>
  for (const field of ['prompt', 'chosen', 'rejected']) {
    const x = r[field]
    if (x === undefined) return { problem: `no "${field}" field (a record is {prompt, chosen, rejected})` }
    if (typeof x === 'string') {
      if (x === '') return { problem: `"${field}" is empty` }
    } else if (Array.isArray(x)) {
      const problem = messagesProblem(x, field, field !== 'prompt')
      if (problem) return { problem }
      if (field !== 'prompt' && typeof r.prompt === 'string') return { problem: `"${field}" is in chat form (messages) but "prompt" is a string: give the prompt as messages too` }
    } else {
      return { problem: `"${field}" must be a string or a list of {role, content} messages, got ${describe(x)}` }
    }
  }
  return { prompt: r.prompt, chosen: r.chosen, rejected: r.rejected } as PreferenceRecord
}

/** The records of a JSON Lines file, each with its line; any bad line is a DataError naming file:line. */
export async function readPreferenceFile(file: string): Promise<Array<{ record: PreferenceRecord; line: number }>> {
  const out: Array<{ record: PreferenceRecord; line: number }> = []
  for await (const { line, bytes } of byteLines(file)) {
    const bad = firstInvalidUtf8(bytes)
    if (bad >= 0) throw new DataError(file, line, `invalid UTF-8 (byte 0x${bytes[bad].toString(16).padStart(2, '0')} at byte ${bad + 1} of the line)`)
    const s = decodeUtf8(bytes)
    if (s.trim() === '') continue
    let value: unknown
    try {
      value = JSON.parse(s)
    } catch (e) {
      throw new DataError(file, line, `invalid JSON (${(e as Error).message})`)
    }
    const r = parsePreferenceRecord(value)
    if ('problem' in r) throw new DataError(file, line, r.problem)
    out.push({ record: r, line })
  }
  if (out.length === 0) throw new DataError(file, undefined, 'no preference records (one {prompt, chosen, rejected} object per line)')
  return out
}

export interface TokenizePreferenceOptions {
  /** Longer sequences lose the end of their answer (the prompt is kept whole); counted as truncated. */
  maxLength?: number
  /** Appended to a plain-string answer (default: the tokenizer's EOS, when it has one); a chat answer ends as its template ends it. */
  eosTokenId?: number
}

function commonPrefix(a: readonly number[], b: readonly number[]): number {
  let n = 0
  while (n < a.length && n < b.length && a[n] === b[n]) n++
  return n
}

// One answer after the prompt as token ids. Strings: the prompt's tokens, then the answer's
// (tokenized apart, as TRL does) and EOS. Chat: the conversation rendered with the answer, its
// tokens after the longest prefix it shares with the prompt rendered with a generation prompt
// (a template may join the prompt's last token to the answer's first: that token is then scored).
function sequence(tokenizer: Tokenizer, prompt: string | ChatMessage[], answer: string | ChatMessage[], eos: number | undefined): ScoredSequence {
  if (typeof prompt === 'string') {
    const p = tokenizer.encode(prompt)
    const a = tokenizer.encode(answer as string)
    return { inputIds: [...p, ...a, ...(eos === undefined ? [] : [eos])], answerStart: p.length }
  }
  const messages = typeof answer === 'string' ? [{ role: 'assistant' as const, content: answer }] : answer
  const p = tokenizer.encodeChat(prompt, { addGenerationPrompt: true })
  const full = tokenizer.encodeChat([...prompt, ...messages])
  return { inputIds: full, answerStart: commonPrefix(p, full) }
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
    const s = sequence(tokenizer, record.prompt, record[which], eos)
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

/**
 * A seeded held-out split: round(ratio * n) items (at least 1, and at least 1 left to train on)
 * picked by a shuffle of (seed), the rest kept in their order.
 */
export function holdOut<T>(items: readonly T[], ratio: number, seed: number): { train: T[]; heldOut: T[] } {
  if (!(ratio > 0 && ratio < 1)) throw rangeError(`holdOut: ratio must be between 0 and 1, got ${ratio}`)
  if (items.length < 2) throw rangeError(`holdOut: ${items.length} item(s) cannot be split into a training and a held-out part`)
  const n = Math.min(items.length - 1, Math.max(1, Math.round(ratio * items.length)))
  const random = seededRandom(seed)
  const idx = items.map((_, i) => i)
  for (let i = idx.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[idx[i], idx[j]] = [idx[j], idx[i]]
  }
  const held = new Set(idx.slice(0, n))
  return { train: items.filter((_, i) => !held.has(i)), heldOut: items.filter((_, i) => held.has(i)) }
}
