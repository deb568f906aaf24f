// A conversation as a training example: the chat template's tokens, with labels on what the
// model is to learn to say (by default every assistant turn: its content and end-of-turn marker,
// not the header the generation prompt writes) and -100 elsewhere.
//
// Where each turn starts is found by rendering the conversation's prefixes with the tokenizer's
// template: the messages before an assistant turn with the generation prompt, then with the
// turn. Each rendering must be the start of the next (a template that renders earlier turns
// differently once later ones follow cannot be split so: that is an error). Each piece between
// two renderings is tokenised on its own, as ERNIEKit builds SFT examples: a prompt's tokens are
// then exactly those generation sees (encodeChat with addGenerationPrompt), even where the
// tokenizer would merge the generation prompt's last characters with the answer's first
// (ERNIE-4.5's "Assistant: " before an answer, under SentencePiece) when given the whole text.
import { checkConversation } from '../data/chat-records'
import { ErnieError, rangeError } from '../errors'
import type { ApplyChatTemplateOptions, Tokenizer } from '../tokenizer/tokenizer'
import type { ChatMessage, ChatRole } from '../tokenizer/chat'
import type { LmExample } from './lm'

/** Which turns carry labels: every assistant turn (default), the last one only, or every token. */
export type ChatLossOn = 'assistant' | 'last' | 'all'
export const CHAT_LOSS_ON: readonly ChatLossOn[] = ['assistant', 'last', 'all']

export interface ChatEncodeOptions {
  /** Default 'assistant'. */
  lossOn?: ChatLossOn
  /** The chat template (default: the tokenizer's own). */
  template?: ApplyChatTemplateOptions['template']
}

/** A message's tokens in an encoded conversation: [start, end). */
export interface ChatSpan {
  role: ChatRole
  start: number
  end: number
  /** Its tokens are labelled. */
  labelled: boolean
}

export interface ChatExample extends LmExample {
  inputIds: Int32Array
  labels: Int32Array
  /**
   * One per message, in order, covering the sequence. A user turn before an assistant turn
   * includes the generation prompt (the assistant's header); an assistant turn is its content
   * and the template's end-of-turn marker.
   */
  spans: ChatSpan[]
}

export function checkLossOn(lossOn: unknown, what: string): ChatLossOn {
  if (!CHAT_LOSS_ON.includes(lossOn as ChatLossOn)) throw rangeError(`${what}: lossOn must be one of ${CHAT_LOSS_ON.join(', ')}, got ${JSON.stringify(lossOn)}`)
  return lossOn as ChatLossOn
}

/** The rendering of messages[0..k], ending with the generation prompt when the next message is the assistant's. */
function renderPrefix(tokenizer: Tokenizer, messages: readonly ChatMessage[], k: number, template: ChatEncodeOptions['template']): string {
  return tokenizer.applyChatTemplate(messages.slice(0, k + 1), { template, addGenerationPrompt: messages[k + 1]?.role === 'assistant' })
}

function firstDifference(a: string, b: string): number {
  let i = 0
  while (i < a.length && i < b.length && a[i] === b[i]) i++
  return i
}

/**
 * Encodes a conversation (an optional system message, then user and assistant turns alternating,
 * the assistant's last: lib/data/chat-records.ts checkConversation) with the
 * tokenizer's chat template, labelled per `lossOn` (see the module comment). A template that is
 * not prefix-stable on it is an ErnieError ERR_CHAT_TEMPLATE.
 */
export function encodeConversation(tokenizer: Tokenizer, messages: readonly ChatMessage[], options: ChatEncodeOptions = {}): ChatExample {
  const lossOn = checkLossOn(options.lossOn ?? 'assistant', 'encodeConversation')
  const problem = checkConversation(messages)
  if (problem) throw rangeError(`encodeConversation: ${problem.problem}`)
  const lastAssistant = messages.length - 1
  const ids: number[] = []
  const labels: number[] = []
  const spans: ChatSpan[] = []
  let before = ''
  for (let k = 0; k < messages.length; k++) {
    const text = renderPrefix(tokenizer, messages, k, options.template)
    if (!text.startsWith(before)) {
      const at = firstDifference(before, text)
      throw new ErnieError(
        'ERR_CHAT_TEMPLATE',
        `the chat template is not prefix-stable: rendering messages 0..${k} does not start with the rendering of messages 0..${k - 1} ` +
          `(they differ from character ${at}: ${JSON.stringify(before.slice(at, at + 24))} vs ${JSON.stringify(text.slice(at, at + 24))}), so the turns' tokens cannot be told apart`,
      )
    }
    const role = messages[k].role
    const labelled = lossOn === 'all' || (role === 'assistant' && (lossOn === 'assistant' || k === lastAssistant))
    const piece = tokenizer.encode(text.slice(before.length), { parseSpecial: true })
    spans.push({ role, start: ids.length, end: ids.length + piece.length, labelled })
    for (const id of piece) ids.push(id), labels.push(labelled ? id : -100)
    before = text
  }
  checkPromptIds(tokenizer, messages, ids, spans, options.template)
  return { inputIds: Int32Array.from(ids), labels: Int32Array.from(labels), spans }
}

// The ids before the first answer must be the prompt generation would feed the model:
// encodeChat's, which also checks that the template's special tokens are the tokenizer's.
function checkPromptIds(tokenizer: Tokenizer, messages: readonly ChatMessage[], ids: number[], spans: ChatSpan[], template: ChatEncodeOptions['template']): void {
  const first = messages.findIndex((m) => m.role === 'assistant') // > 0: a user turn comes before it
  const prompt = tokenizer.encodeChat(messages.slice(0, first), { template, addGenerationPrompt: true })
  const end = spans[first - 1].end
  const same = prompt.length === end && prompt.every((id, i) => id === ids[i])
  if (!same)
    throw new ErnieError(
      'ERR_CHAT_TEMPLATE',
      `the chat template's pieces, tokenised one by one, do not give the ids encodeChat gives for the prompt (${end} ids vs ${prompt.length}): the turns cannot be told apart`,
    )
}
