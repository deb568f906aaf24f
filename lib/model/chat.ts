// Chat: a conversation rendered by the tokenizer's chat template with the generation prompt,
// answered until the template's end-of-turn token (or eos); the answer as an assistant message.
import { rangeError, typeError } from '../errors'
import type { ChatMessage } from '../tokenizer'
import type { ModelContext } from './context'
import { generateStream, generateText, type GenerateChunk, type GenerateOptions, type GenerateResult } from './generate'

export interface ChatResult extends GenerateResult {
  /** The answer: { role: 'assistant', content: text }. */
  message: ChatMessage
}

function checkConversation(messages: unknown, what: string): ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) throw typeError(`${what}: messages must be a non-empty array of { role, content }`)
  const last = messages[messages.length - 1] as { role?: unknown }
  if (last?.role === 'assistant') throw rangeError(`${what}: the last message is the assistant's; a conversation to answer ends with a user (or system) message`)
  return messages as ChatMessage[]
}

/** ErnieModel.chat. */
export async function chatReply(model: ModelContext, messages: ChatMessage[], options: GenerateOptions = {}): Promise<ChatResult> {
  const result = await generateText(model, checkConversation(messages, 'chat'), options, 'chat')
  return { ...result, message: { role: 'assistant', content: result.text } }
}

/** ErnieModel.chatStream. */
export function chatStream(model: ModelContext, messages: ChatMessage[], options: GenerateOptions = {}): AsyncGenerator<GenerateChunk, void, undefined> {
  return generateStream(model, checkConversation(messages, 'chat'), options, 'chat')
}
