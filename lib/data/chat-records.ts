// One chat record -> its messages: the JSON shapes chat data comes in, read into the
// { role, content } list a chat template renders. Each problem is returned (a counted kind and a
// message), never thrown, so that a reader can name the file and line, or skip and count it.
//   messages  {"messages": [{"role", "content"}], "system"?}        (OpenAI / TRL)
//   ShareGPT  {"conversations": [{"from", "value"}], "system"?}     (from: human | gpt | system, or user | assistant)
//   Alpaca    {"instruction", "input"?, "output", "system"?}        (the user turn: instruction, then input on the next line)
//   ERNIEKit  {"src": [...], "tgt": [...], "system"?}               (src[i] the user's turn i, tgt[i] the answer to it)
import type { ChatMessage, ChatRole } from '../tokenizer/chat'
import { describe } from './read'

export type ChatRecordShape = 'messages' | 'sharegpt' | 'alpaca' | 'erniekit'

/** A record's problem: `kind` is the counted category ('bad field', 'missing field', ...). */
export interface ChatRecordProblem {
  kind: string
  problem: string
}

export type ChatRecordResult = { shape: ChatRecordShape; messages: ChatMessage[] } | ChatRecordProblem

/** ShareGPT's speakers, and the roles they are. */
const SHAREGPT_ROLES: Readonly<Record<string, ChatRole>> = { human: 'user', user: 'user', gpt: 'assistant', assistant: 'assistant', system: 'system' }
const ROLES: readonly ChatRole[] = ['system', 'user', 'assistant']

const bad = (problem: string): ChatRecordProblem => ({ kind: 'bad field', problem })
const missing = (field: string): ChatRecordProblem => ({ kind: 'missing field', problem: `missing field "${field}"` })

const a = (role: ChatRole) => (role === 'assistant' ? `an ${role}` : `a ${role}`)

export function isChatRecordProblem(r: unknown): r is ChatRecordProblem {
  return typeof (r as ChatRecordProblem)?.problem === 'string'
}

function isObject(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v)
}

// A turn's text: a string with something in it besides whitespace.
function content(v: unknown, where: string): string | ChatRecordProblem {
  if (typeof v !== 'string') return bad(`${where} must be a string, got ${describe(v)}`)
  if (v.trim() === '') return { kind: 'empty text', problem: `${where} is empty${v.length > 0 ? ' (whitespace only)' : ''}` }
  return v
}

/**
 * A list of messages in either entry form, `{role, content}` or ShareGPT's `{from, value}`
 * (human | gpt | system, or user | assistant), as `field` of a record (for messages). Checks
 * each entry, not the order of the turns (see checkConversation): a DPO prompt ends with the
 * user, a conversation to learn from with the assistant.
 */
export function parseChatMessages(value: unknown, field: string): ChatMessage[] | ChatRecordProblem {
  if (!Array.isArray(value) || value.length === 0) return bad(`field "${field}" must be a non-empty array of messages, got ${describe(value)}`)
  const out: ChatMessage[] = []
  for (let i = 0; i < value.length; i++) {
    const m = value[i]
    const at = `${field}[${i}]`
    if (!isObject(m)) return bad(`${at} must be an object, got ${describe(m)}`)
    let role: ChatRole
    let text: unknown
    if ('role' in m) {
      if (typeof m.role !== 'string' || !ROLES.includes(m.role as ChatRole)) return bad(`${at}.role must be system, user or assistant, got ${describe(m.role)}`)
      role = m.role as ChatRole
      if (!('content' in m)) return missing(`${at}.content`)
      text = m.content
    } else if ('from' in m) {
      const r = typeof m.from === 'string' ? SHAREGPT_ROLES[m.from.toLowerCase()] : undefined
      if (r === undefined) return bad(`${at}.from must be human, gpt or system (or user, assistant), got ${describe(m.from)}`)
      role = r
      if (!('value' in m)) return missing(`${at}.value`)
      text = m.value
    } else return bad(`${at} has neither "role" (with "content") nor "from" (with "value")`)
    const c = content(text, `${at}.${'role' in m ? 'content' : 'value'}`)
    if (typeof c !== 'string') return c
    out.push({ role, content: c })
  }
  return out
}

/** A string, or an array of strings (ERNIEKit writes both), as a list of turns. */
function turns(rec: Record<string, unknown>, field: string): string[] | ChatRecordProblem {
  if (!(field in rec)) return missing(field)
  const v = rec[field]
  const list = typeof v === 'string' ? [v] : v
  if (!Array.isArray(list) || list.length === 0) return bad(`field "${field}" must be a string or a non-empty array of strings, got ${describe(v)}`)
  for (let i = 0; i < list.length; i++) {
    const c = content(list[i], `${field}[${i}]`)
    if (typeof c !== 'string') return c
  }
  return list as string[]
}

function messagesOf(rec: Record<string, unknown>): { shape: ChatRecordShape; messages: ChatMessage[] } | ChatRecordProblem {
  if ('messages' in rec) {
    const m = parseChatMessages(rec.messages, 'messages')
    return isChatRecordProblem(m) ? m : { shape: 'messages', messages: m }
  }
  if ('conversations' in rec) {
    const m = parseChatMessages(rec.conversations, 'conversations')
    return isChatRecordProblem(m) ? m : { shape: 'sharegpt', messages: m }
  }
  if ('instruction' in rec) {
    const instruction = content(rec.instruction, 'field "instruction"')
    if (typeof instruction !== 'string') return instruction
    let user = instruction
    if (rec.input !== undefined && rec.input !== null && rec.input !== '') {
      if (typeof rec.input !== 'string') return bad(`field "input" must be a string, got ${describe(rec.input)}`)
      user = `${instruction}\n${rec.input}`
    }
    if (!('output' in rec)) return missing('output')
    const output = content(rec.output, 'field "output"')
    if (typeof output !== 'string') return output
    return { shape: 'alpaca', messages: [{ role: 'user', content: user }, { role: 'assistant', content: output }] }
  }
  if ('src' in rec) {
    const src = turns(rec, 'src')
    if (isChatRecordProblem(src)) return src
    const tgt = turns(rec, 'tgt')
    if (isChatRecordProblem(tgt)) return tgt
    if (src.length !== tgt.length) return bad(`"src" holds ${src.length} turns and "tgt" ${tgt.length}: each user turn needs its answer`)
    return { shape: 'erniekit', messages: src.flatMap((s, i): ChatMessage[] => [{ role: 'user', content: s }, { role: 'assistant', content: tgt[i] }]) }
  }
  return {
    kind: 'missing field',
    problem: 'not a chat record: expected "messages", "conversations" (ShareGPT), "instruction" and "output" (Alpaca), or "src" and "tgt" (ERNIEKit)',
  }
}

/**
 * The order a conversation to learn from must have: an optional system message first, then
 * user and assistant turns alternating, from the user's to the assistant's. Undefined when it
 * has it. Problems name `field`[i], i counted from `offset` (a system message put before the
 * record's own list is -1).
 */
export function checkConversation(messages: readonly ChatMessage[], field = 'messages', offset = 0): ChatRecordProblem | undefined {
  const start = messages[0]?.role === 'system' ? 1 : 0
  if (messages.length === start) return bad(`"${field}" holds a system message and no turns`)
  for (let i = start; i < messages.length; i++) {
    const want: ChatRole = (i - start) % 2 === 0 ? 'user' : 'assistant'
    if (messages[i].role !== want) {
      const why = messages[i].role === 'system' ? 'a system message comes first, once' : "turns alternate user, assistant, ... from the user's"
      return bad(`${field}[${i + offset}] is ${a(messages[i].role)} message where ${a(want)} turn was expected (${why})`)
    }
  }
  if (messages[messages.length - 1].role !== 'assistant') return bad(`"${field}" ends with a user turn: the last turn must be the assistant's answer`)
  return undefined
}

export interface ChatRecordOptions {
  /** The system message of a record that has none. */
  systemPrompt?: string
}

/**
 * A chat record (any shape of the module comment) as a conversation to learn from: its messages
 * with the record's system prompt (a "system" field or a leading system message), else
 * `systemPrompt`, first; the turns checked by checkConversation.
 */
export function parseChatRecord(rec: Record<string, unknown>, options: ChatRecordOptions = {}): ChatRecordResult {
  const r = messagesOf(rec)
  if (isChatRecordProblem(r)) return r
  let messages = r.messages
  let offset = 0 // messages put before the record's own list
  if ('system' in rec && rec.system !== undefined && rec.system !== null) {
    const system = content(rec.system, 'field "system"')
    if (typeof system !== 'string') return system
    if (messages[0].role === 'system') return bad('the record has a "system" field and a system message: keep one')
    messages = [{ role: 'system', content: system }, ...messages]
    offset = -1
  } else if (messages[0].role !== 'system' && options.systemPrompt !== undefined) {
    messages = [{ role: 'system', content: options.systemPrompt }, ...messages]
    offset = -1
  }
  // Only a list written as such can be out of order (Alpaca and ERNIEKit records are built in order).
  const field = r.shape === 'sharegpt' ? 'conversations' : 'messages'
  const problem = checkConversation(messages, field, offset)
  return problem ?? { shape: r.shape, messages }
}
