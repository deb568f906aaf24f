// Chat templates: ERNIE-4.5's and ChatML (Qwen3), written out as code rather than Jinja.
import { TokenizerError } from './errors'

export type ChatRole = 'system' | 'user' | 'assistant'
export type ChatTemplateName = 'ernie' | 'chatml'

export interface ChatMessage {
  role: ChatRole
  content: string
}

/** The special tokens each template writes; they must be special tokens of the tokenizer that encodes it. */
export const CHAT_TEMPLATE_TOKENS: Readonly<Record<ChatTemplateName, readonly string[]>> = {
  ernie: ['<|begin_of_sentence|>', '<|end_of_sentence|>'],
  chatml: ['<|im_start|>', '<|im_end|>'],
}

const ROLES: readonly string[] = ['system', 'user', 'assistant']

function checkMessages(messages: unknown): asserts messages is ChatMessage[] {
  if (!Array.isArray(messages)) throw new TokenizerError('ERR_TOKENIZER_INPUT', 'messages must be an array of { role, content }')
  messages.forEach((m, i) => {
    const role = (m as { role?: unknown })?.role
    const content = (m as { content?: unknown })?.content
    if (typeof role !== 'string' || !ROLES.includes(role)) {
      throw new TokenizerError('ERR_TOKENIZER_INPUT', `messages[${i}].role must be 'system', 'user' or 'assistant', got ${JSON.stringify(role)}`)
    }
    if (typeof content !== 'string') throw new TokenizerError('ERR_TOKENIZER_INPUT', `messages[${i}].content must be a string`)
  })
}

/**
 * ERNIE-4.5: `<|begin_of_sentence|>`, then system: content + "\n"; user: "User: " + content + "\n";
 * assistant: "Assistant: " + content + `<|end_of_sentence|>`; generation prompt "Assistant: ".
 */
function renderErnie(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
  let out = '<|begin_of_sentence|>'
  for (const m of messages) {
    if (m.role === 'system') out += `${m.content}\n`
    else if (m.role === 'user') out += `User: ${m.content}\n`
    else out += `Assistant: ${m.content}<|end_of_sentence|>`
  }
  if (addGenerationPrompt) out += 'Assistant: '
  return out
}

/** ChatML: `<|im_start|>role\n` + content + `<|im_end|>\n`; generation prompt `<|im_start|>assistant\n`. */
function renderChatml(messages: readonly ChatMessage[], addGenerationPrompt: boolean): string {
  let out = ''
  for (const m of messages) out += `<|im_start|>${m.role}\n${m.content}<|im_end|>\n`
  if (addGenerationPrompt) out += '<|im_start|>assistant\n'
  return out
}

export function renderChatTemplate(messages: readonly ChatMessage[], template: ChatTemplateName, addGenerationPrompt = false): string {
  checkMessages(messages)
  if (template === 'ernie') return renderErnie(messages, addGenerationPrompt)
  if (template === 'chatml') return renderChatml(messages, addGenerationPrompt)
  throw new TokenizerError('ERR_TOKENIZER_INPUT', `unknown chat template ${JSON.stringify(template)} (use 'ernie' or 'chatml')`)
}

/**
 * Which template a tokenizer uses: from the Jinja `chat_template` in its config when there is one,
 * else from the special tokens it declares. Undefined when neither says.
 */
export function detectChatTemplate(chatTemplate: unknown, hasSpecialToken: (content: string) => boolean): ChatTemplateName | undefined {
  const source = Array.isArray(chatTemplate)
    ? chatTemplate.map((t) => (t as { template?: unknown })?.template).filter((t) => typeof t === 'string').join('\n')
    : typeof chatTemplate === 'string'
      ? chatTemplate
      : ''
  if (source.includes('<|im_start|>')) return 'chatml'
  if (source.includes('<|begin_of_sentence|>') || source.includes("'Assistant: '")) return 'ernie'
  if (hasSpecialToken('<|im_start|>') && hasSpecialToken('<|im_end|>')) return 'chatml'
  if (hasSpecialToken('<|begin_of_sentence|>') && hasSpecialToken('<|end_of_sentence|>')) return 'ernie'
  return undefined
}
