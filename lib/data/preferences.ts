// Preference records for DPO: JSON Lines records {prompt, chosen, rejected}, as plain strings or
// in chat form (TRL's "conversational" shape: the prompt as messages, each answer as assistant
// messages or a string), read with file:line errors. lib/train/preference-encode.ts turns them
// into token ids.
import type { ChatMessage } from '../tokenizer'
import { isChatRecordProblem, parseChatMessages, type ChatRecordProblem } from './chat-records'
import { DataError } from './errors'
import { jsonObjects, Problems } from './read'

/** A preference record as read: a prompt and two answers to it, the first preferred. */
export interface PreferenceRecord {
  /** A string, or chat messages (the conversation the answers continue). */
  prompt: string | ChatMessage[]
  /** A string, or assistant messages. */
  chosen: string | ChatMessage[]
  rejected: string | ChatMessage[]
}

function describe(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v
}

/**
 * One JSON object as a preference record, or what is wrong with it: {prompt, chosen, rejected},
 * each a non-empty string or (TRL's conversational form) the prompt as messages and each answer
 * as assistant messages or a string. Messages are read as chat data reads them
 * (parseChatMessages: {role, content} or ShareGPT's {from, value}). An answer in chat form needs
 * a prompt in chat form.
 */
export function parsePreferenceRecord(r: Record<string, unknown>): PreferenceRecord | ChatRecordProblem {
  const out: Partial<Record<'prompt' | 'chosen' | 'rejected', string | ChatMessage[]>> = {}
  for (const field of ['prompt', 'chosen', 'rejected'] as const) {
    const x = r[field]
    if (x === undefined) return { kind: 'missing field', problem: `no "${field}" field (a record is {prompt, chosen, rejected})` }
    if (typeof x === 'string') {
      if (x === '') return { kind: 'empty text', problem: `"${field}" is empty` }
      out[field] = x
    } else if (Array.isArray(x)) {
      const messages = parseChatMessages(x, field)
      if (isChatRecordProblem(messages)) return messages
      const other = messages.findIndex((m) => m.role !== 'assistant')
      if (field !== 'prompt' && other >= 0) return { kind: 'bad field', problem: `${field}[${other}].role is '${messages[other].role}': an answer holds assistant messages only` }
      if (field !== 'prompt' && typeof r.prompt === 'string') return { kind: 'bad field', problem: `"${field}" is in chat form (messages) but "prompt" is a string: give the prompt as messages too` }
      out[field] = messages
    } else {
      return { kind: 'bad field', problem: `"${field}" must be a string or a list of {role, content} messages, got ${describe(x)}` }
    }
  }
  return out as PreferenceRecord
}

/** The records of a JSON Lines file, each with its line; any bad line is a DataError naming file:line. */
export async function readPreferenceFile(file: string): Promise<Array<{ record: PreferenceRecord; line: number }>> {
  const out: Array<{ record: PreferenceRecord; line: number }> = []
  const problems = new Problems(file, 'error')
  for await (const { line, record } of jsonObjects(file, problems)) {
    const r = parsePreferenceRecord(record)
    if (isChatRecordProblem(r)) problems.add(line, r.kind, r.problem)
    else out.push({ record: r, line })
  }
  if (out.length === 0) throw new DataError(file, undefined, 'no preference records (one {prompt, chosen, rejected} object per line)')
  return out
}
