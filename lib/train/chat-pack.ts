// Conversations -> the rows a chat SFT run trains on: each conversation encoded (chat-encode.ts),
// one longer than the maximum length shortened by its oldest exchanges (the system message kept)
// or left out, and the rest packed several to a row. Packed conversations keep their own
// attention and positions (segment ids: the engine restarts both at each segment) and their
// labels, except each one's first token, which nothing in its segment precedes to predict it.
import { yieldToEventLoop } from '../util/event-loop'
import { rangeError } from '../errors'
import type { ChatMessage } from '../tokenizer/chat'
import type { Tokenizer } from '../tokenizer/tokenizer'
import { checkLossOn, encodeConversation, type ChatEncodeOptions, type ChatExample } from './chat-encode'
import type { LmExample } from './lm'

/** What to do with a conversation longer than maxLength: drop its oldest exchanges (default), or leave it out. */
export type ChatOverlong = 'truncate' | 'drop'
export const CHAT_OVERLONG: readonly ChatOverlong[] = ['truncate', 'drop']

/** A conversation that fits maxLength, and how many of its messages were dropped to make it fit. */
export interface FittedConversation {
  example: ChatExample
  droppedMessages: number
}

/**
 * The conversation encoded, within maxLength tokens: whole when it fits; else with 'truncate'
 * the fewest oldest user/assistant exchanges dropped (the system message and the last exchange
 * always kept), re-rendered; undefined when that cannot fit, or with 'drop'.
 */
export function fitConversation(tokenizer: Tokenizer, messages: readonly ChatMessage[], maxLength: number, overlong: ChatOverlong = 'truncate', options: ChatEncodeOptions = {}): FittedConversation | undefined {
  const whole = encodeConversation(tokenizer, messages, options)
  if (whole.inputIds.length <= maxLength) return { example: whole, droppedMessages: 0 }
  if (overlong === 'drop') return undefined
  const start = messages[0].role === 'system' ? 1 : 0
  const exchanges = (messages.length - start) / 2
  if (exchanges < 2) return undefined // the last exchange alone is too long
  const tried = new Map<number, ChatExample | undefined>()
  const dropping = (d: number) => {
    if (!tried.has(d)) {
      const kept = [...messages.slice(0, start), ...messages.slice(start + 2 * d)]
      const e = encodeConversation(tokenizer, kept, options)
      tried.set(d, e.inputIds.length <= maxLength ? e : undefined)
    }
    return tried.get(d)
  }
  // First guess: the exchanges whose tokens cover the excess. Re-rendering may move a token or
  // two (a template's opening marker), so search from there for the fewest that fit.
  let d = 0
  for (let freed = 0, excess = whole.inputIds.length - maxLength; d < exchanges - 1 && freed < excess; d++) {
    const user = whole.spans[start + 2 * d]
    const answer = whole.spans[start + 2 * d + 1]
    freed += answer.end - user.start
  }
  d = Math.max(1, d)
  while (d < exchanges - 1 && !dropping(d)) d++
  while (d > 1 && dropping(d - 1)) d--
  const e = dropping(d)
  return e && { example: e, droppedMessages: 2 * d }
}

/**
 * The free room of rows 0..capacity-1 (-1 for a row not yet made), and the first row with at
 * least n free: a tree of maxima over the rows, O(log rows) a query, where scanning the rows
 * still open took minutes at a few hundred thousand conversations.
 */
class FirstFit {
  private readonly leaves: number
  private readonly max: Int32Array
  constructor(capacity: number) {
    this.leaves = 1 << Math.ceil(Math.log2(Math.max(1, capacity)))
    this.max = new Int32Array(2 * this.leaves).fill(-1)
  }
  /** The first row (in the order they were made) with room >= n, or -1. */
  first(n: number): number {
    if (this.max[1] < n) return -1
    let i = 1
    while (i < this.leaves) i = this.max[2 * i] >= n ? 2 * i : 2 * i + 1
    return i - this.leaves
  }
  set(row: number, room: number): void {
    let i = row + this.leaves
    this.max[i] = room
    for (i >>= 1; i >= 1; i >>= 1) this.max[i] = Math.max(this.max[2 * i], this.max[2 * i + 1])
  }
}

/**
 * Packs examples (each at most maxLength tokens) into rows of at most maxLength, first fit by
 * decreasing length. Each row's segmentIds number its examples; each example keeps its labels
 * but for its first token's (-100: nothing of its own precedes it in the row).
 */
export function packConversations(examples: readonly LmExample[], maxLength: number): LmExample[] {
  if (!(Number.isInteger(maxLength) && maxLength >= 2)) throw rangeError('packConversations: maxLength must be an integer >= 2')
  examples.forEach((e, i) => {
    if (e.inputIds.length > maxLength) throw rangeError(`packConversations: examples[${i}] has ${e.inputIds.length} tokens, more than maxLength ${maxLength}`)
  })
  const order = examples.map((_, i) => i).sort((a, b) => examples[b].inputIds.length - examples[a].inputIds.length || a - b)
  const rows: Array<{ members: number[]; length: number }> = []
  const room = new FirstFit(examples.length)
  for (const i of order) {
    const n = examples[i].inputIds.length
    let r = room.first(n)
    if (r < 0) rows.push({ members: [], length: 0 }), (r = rows.length - 1)
    rows[r].members.push(i)
    rows[r].length += n
    room.set(r, maxLength - rows[r].length)
  }
  return rows.map(({ members, length }) => {
    const inputIds = new Int32Array(length)
    const labels = new Int32Array(length)
    const segmentIds = new Int32Array(length)
    let at = 0
    members.forEach((i, segment) => {
      const e = examples[i]
      inputIds.set(e.inputIds, at)
      labels.set(e.labels ?? e.inputIds, at)
      labels[at] = -100
      segmentIds.fill(segment, at, at + e.inputIds.length)
      at += e.inputIds.length
    })
    return { inputIds, labels, segmentIds }
  })
}

export interface ChatPrepareOptions extends ChatEncodeOptions {
  /** Tokens per row (and the longest conversation kept). */
  maxLength: number
  /** Default 'truncate'. */
  overlong?: ChatOverlong
  /** Several conversations per row (default true); false: one per row. */
  packing?: boolean
  signal?: AbortSignal
}

/** What preparing a set of conversations did. */
export interface ChatPrepareStats {
  conversations: number
  /** Conversations shortened by their oldest exchanges to fit maxLength. */
  truncated: number
  /** Messages those lost. */
  droppedMessages: number
  /** Conversations left out: longer than maxLength even with one exchange. */
  dropped: number
  /** Tokens, and of them those labelled, in the rows. */
  tokens: number
  labelledTokens: number
  rows: number
}

/**
 * Conversations as training rows (see the module comment), encoded in chunks with the event loop
 * running between them; undefined when the signal aborts.
 */
export async function prepareChatExamples(
  tokenizer: Tokenizer,
  conversations: ReadonlyArray<{ messages: readonly ChatMessage[] }>,
  options: ChatPrepareOptions,
): Promise<{ examples: LmExample[]; stats: ChatPrepareStats } | undefined> {
  const { maxLength, overlong = 'truncate', packing = true } = options
  if (!(Number.isInteger(maxLength) && maxLength >= 2)) throw rangeError(`maxLength must be an integer >= 2, got ${maxLength}`)
  if (!CHAT_OVERLONG.includes(overlong)) throw rangeError(`overlong must be one of ${CHAT_OVERLONG.join(', ')}, got ${JSON.stringify(overlong)}`)
  checkLossOn(options.lossOn ?? 'assistant', 'prepareChatExamples')
  const stats: ChatPrepareStats = { conversations: conversations.length, truncated: 0, droppedMessages: 0, dropped: 0, tokens: 0, labelledTokens: 0, rows: 0 }
  const fitted: ChatExample[] = []
  const chunk = 64
  for (let i = 0; i < conversations.length; i++) {
    if (i % chunk === 0 && i > 0) {
      await yieldToEventLoop()
      if (options.signal?.aborted) return undefined
    }
    const f = fitConversation(tokenizer, conversations[i].messages, maxLength, overlong, options)
    if (!f) {
      stats.dropped++
      continue
    }
    if (f.droppedMessages > 0) stats.truncated++, (stats.droppedMessages += f.droppedMessages)
    fitted.push(f.example)
  }
  const examples: LmExample[] = packing && fitted.length > 0 ? packConversations(fitted, maxLength) : fitted
  for (const e of examples) {
    stats.tokens += e.inputIds.length
    for (let t = 1; t < e.labels!.length; t++) if (e.labels![t] !== -100) stats.labelledTokens++
  }
  stats.rows = examples.length
  return { examples, stats }
}
