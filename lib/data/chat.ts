// Chat data: conversations read from JSON Lines files (or arrays) in the shapes chat-records.ts
// reads, one record per line; every problem names the file and line, or with onInvalid: 'skip'
// is counted, as for labelled data (read.ts). And the held-out share of a data set when no
// evaluation file is given.
import { rangeError, typeError } from '../errors'
import type { ChatMessage } from '../tokenizer/chat'
import { seededRandom } from '../util/random'
import { isChatRecordProblem, parseChatRecord, type ChatRecordShape } from './chat-records'
import { jsonObjects, Problems, type OnInvalid, type SkipReport } from './read'

/** One conversation to learn from, with where it came from. */
export interface Conversation {
  /** An optional system message, then user and assistant turns alternating, the assistant's last. */
  messages: ChatMessage[]
  /** The file, or the array's name. */
  file: string
  /** 1-based line of the record (files) or the array index. */
  line: number
  isArray: boolean
}

export interface ReadChatOptions {
  /** 'error' (default) throws a DataError on the first bad record; 'skip' drops and counts it. */
  onInvalid?: OnInvalid
  /** The system message of the records that have none (default: none). */
  systemPrompt?: string
  /** What an in-memory array is called in messages (default 'data'). */
  name?: string
}

export interface ChatDataset {
  /** The file path, or the array's name. */
  source: string
  conversations: Conversation[]
  /** How many records came in each shape. */
  shapes: Partial<Record<ChatRecordShape, number>>
  skipped: SkipReport
}

/**
 * Reads conversations from a JSON Lines file or an array of records: `{"messages": [...]}`,
 * ShareGPT `{"conversations": [...]}`, Alpaca `{instruction, input?, output}` or ERNIEKit
 * `{src: [...], tgt: [...]}`, each with an optional "system" (see lib/data/chat-records.ts).
 */
export async function readChatData(data: string | readonly object[], options: ReadChatOptions = {}): Promise<ChatDataset> {
  const onInvalid = options.onInvalid ?? 'error'
  if (onInvalid !== 'error' && onInvalid !== 'skip') throw rangeError(`onInvalid must be 'error' or 'skip', got ${JSON.stringify(onInvalid)}`)
  if (options.systemPrompt !== undefined && (typeof options.systemPrompt !== 'string' || options.systemPrompt.trim() === ''))
    throw typeError('systemPrompt must be a non-empty string')
  const conversations: Conversation[] = []
  const shapes: ChatDataset['shapes'] = {}
  const take = (record: unknown, line: number, problems: Problems) => {
    if (record === null || typeof record !== 'object' || Array.isArray(record)) return problems.add(line, 'not an object', 'expected an object (a chat record)')
    const r = parseChatRecord(record as Record<string, unknown>, { systemPrompt: options.systemPrompt })
    if (isChatRecordProblem(r)) return problems.add(line, r.kind, r.problem)
    shapes[r.shape] = (shapes[r.shape] ?? 0) + 1
    conversations.push({ messages: r.messages, file: problems.file, line, isArray: problems.isArray })
  }
  if (typeof data === 'string') {
    if (data.length === 0) throw typeError('data: expected a file path or an array of chat records')
    const problems = new Problems(data, onInvalid)
    for await (const { line, record } of jsonObjects(data, problems)) take(record, line, problems)
    return { source: data, conversations, shapes, skipped: problems.report }
  }
  if (!Array.isArray(data)) throw typeError('data: expected a file path or an array of chat records')
  const name = options.name ?? 'data'
  const problems = new Problems(name, onInvalid, true)
  data.forEach((record, i) => take(record, i, problems))
  return { source: name, conversations, shapes, skipped: problems.report }
}

/**
 * Holds out round(ratio x n) items (at least one, and at least one left to train on) chosen by a
 * seeded shuffle; both parts keep the items' order. For an evaluation set when no file gives one.
 */
export function splitByRatio<T>(items: readonly T[], ratio: number, seed: number): { train: T[]; eval: T[] } {
  if (!(ratio > 0 && ratio < 1)) throw rangeError(`the evaluation ratio must be between 0 and 1 (exclusive), got ${ratio}`)
  if (!Number.isInteger(seed)) throw rangeError(`seed must be an integer, got ${seed}`)
  if (items.length < 2) throw rangeError(`cannot hold out a share of ${items.length} item(s): at least 2 are needed`)
  const held = Math.min(items.length - 1, Math.max(1, Math.round(ratio * items.length)))
  const order = Array.from(items, (_, i) => i)
  const random = seededRandom(seed)
  for (let i = order.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[order[i], order[j]] = [order[j], order[i]]
  }
  const isEval = new Uint8Array(items.length)
  for (const i of order.slice(0, held)) isEval[i] = 1
  return { train: items.filter((_, i) => !isEval[i]), eval: items.filter((_, i) => isEval[i]) }
}
