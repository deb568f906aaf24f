// Chat templates: the Jinja `chat_template` a checkpoint ships, rendered by @huggingface/jinja with the
// variables transformers' apply_chat_template passes; built-in fallbacks (chat-templates/*.jinja, copied
// from real checkpoints) when a checkpoint ships none.
import { readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Template } from '@huggingface/jinja'
import { packageRoot } from '../classifier/bundled'
import { TokenizerError } from './errors'

export type ChatRole = 'system' | 'user' | 'assistant'

/**
 * The built-in templates: 'ernie' (ERNIE-4.5-0.3B-PT's), 'chatml' (plain ChatML, the template the
 * ERNIE-4.5-Base chat LoRA recipe trains with), 'qwen3' (Qwen3-0.6B's: ChatML with Qwen3's think
 * block on assistant turns after the last user turn, and tools).
 */
export type ChatTemplateName = 'ernie' | 'chatml' | 'qwen3'

export interface ChatMessage {
  role: ChatRole
  content: string
}

/** The special tokens each built-in template writes; they must be special tokens of the tokenizer that encodes it. */
export const CHAT_TEMPLATE_TOKENS: Readonly<Record<ChatTemplateName, readonly string[]>> = {
  ernie: ['<|begin_of_sentence|>', '<|end_of_sentence|>'],
  chatml: ['<|im_start|>', '<|im_end|>'],
  qwen3: ['<|im_start|>', '<|im_end|>'],
}

const TEMPLATE_FILES: Readonly<Record<ChatTemplateName, string>> = {
  ernie: 'ernie-4.5.jinja',
  chatml: 'chatml.jinja',
  qwen3: 'qwen3.jinja',
}

/** Whether `name` names a built-in template. */
export function isChatTemplateName(name: unknown): name is ChatTemplateName {
  return typeof name === 'string' && Object.hasOwn(TEMPLATE_FILES, name)
}

/** Where the package keeps the built-in templates' Jinja files. */
export function builtinChatTemplatePath(name: ChatTemplateName): string {
  return join(packageRoot(), 'chat-templates', TEMPLATE_FILES[name])
}

/**
 * The variables a template sees besides `messages` and `add_generation_prompt`: the tokenizer's
 * special tokens by role (`bos_token`, `eos_token`, `cls_token`, ...) and `additional_special_tokens`,
 * as transformers passes its special_tokens_map.
 */
export type ChatTemplateTokens = Readonly<Record<string, string | readonly string[]>>

/** A parsed Jinja chat template and where it came from (named in its errors). */
export class ChatTemplate {
  /** Where the template comes from: a file (with the key inside it), the built-in's file, or 'options.template'. */
  readonly source: string
  /** The built-in template's name, when this is one. */
  readonly builtin: ChatTemplateName | undefined
  /** The Jinja source. */
  readonly text: string
  private readonly compiled: Template

  constructor(text: string, source: string, builtin?: ChatTemplateName) {
    if (typeof text !== 'string') throw new TokenizerError('ERR_CHAT_TEMPLATE', `the chat template must be a string, got ${typeof text}`, { file: source })
    this.text = text
    this.source = source
    this.builtin = builtin
    try {
      this.compiled = new Template(text)
    } catch (e) {
      throw new TokenizerError('ERR_CHAT_TEMPLATE', `the chat template does not parse: ${(e as Error).message}`, { file: source, cause: e })
    }
  }

  private static readonly builtins = new Map<ChatTemplateName, ChatTemplate>()

  /** A built-in template, read from its file once. */
  static builtin(name: ChatTemplateName): ChatTemplate {
    let t = ChatTemplate.builtins.get(name)
    if (t === undefined) {
      const file = builtinChatTemplatePath(name)
      let text: string
      try {
        text = readFileSync(file, 'utf8')
      } catch (e) {
        throw new TokenizerError('ERR_TOKENIZER_NOT_FOUND', `the built-in '${name}' chat template is missing: ${(e as Error).message}`, { file, cause: e })
      }
      t = new ChatTemplate(text, file, name)
      ChatTemplate.builtins.set(name, t)
    }
    return t
  }

  /**
   * Renders a conversation as transformers' apply_chat_template does: `messages`,
   * `add_generation_prompt`, the special tokens, `tools` and `documents` absent (none).
   */
  render(messages: readonly ChatMessage[], addGenerationPrompt = false, tokens: ChatTemplateTokens = {}): string {
    checkMessages(messages)
    try {
      return this.compiled.render({
        ...tokens,
        messages: messages.map((m) => ({ role: m.role, content: m.content })),
        add_generation_prompt: addGenerationPrompt,
        tools: null,
        documents: null,
      })
    } catch (e) {
      // raise_exception('...') in the template arrives here with its message, as do the engine's own errors.
      throw new TokenizerError('ERR_CHAT_TEMPLATE', `rendering the chat template failed: ${(e as Error).message}`, { file: this.source, cause: e })
    }
  }
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
 * Renders a conversation with a built-in template ('ernie' | 'chatml' | 'qwen3') or a Jinja template
 * given as text, with the special tokens given (a tokenizer's `applyChatTemplate` passes its own).
 */
export function renderChatTemplate(
  messages: readonly ChatMessage[],
  template: ChatTemplateName | string,
  addGenerationPrompt = false,
  tokens: ChatTemplateTokens = {},
): string {
  const t = isChatTemplateName(template) ? ChatTemplate.builtin(template) : new ChatTemplate(template, 'the template argument')
  return t.render(messages, addGenerationPrompt, tokens)
}

/**
 * The templates a checkpoint ships, by name ('default' for a single one), from tokenizer_config.json's
 * `chat_template` (a string, or a list of { name, template }) and a chat_template.jinja file, which
 * wins over the config's default as it does in transformers. Empty when it ships none.
 */
export function shippedChatTemplates(chatTemplate: unknown, configFile: string, jinjaFile?: { text: string; file: string }): Map<string, ChatTemplate> {
  const out = new Map<string, ChatTemplate>()
  if (typeof chatTemplate === 'string') out.set('default', new ChatTemplate(chatTemplate, `${configFile} (chat_template)`))
  else if (Array.isArray(chatTemplate)) {
    chatTemplate.forEach((entry, i) => {
      const name = (entry as { name?: unknown })?.name
      const text = (entry as { template?: unknown })?.template
      if (typeof name !== 'string' || typeof text !== 'string') {
        throw new TokenizerError('ERR_TOKENIZER_JSON', `chat_template[${i}] must be { "name": string, "template": string }`, { file: configFile })
      }
      out.set(name, new ChatTemplate(text, `${configFile} (chat_template "${name}")`))
    })
  } else if (chatTemplate !== undefined && chatTemplate !== null) {
    throw new TokenizerError('ERR_TOKENIZER_JSON', '"chat_template" must be a string or a list of { name, template }', { file: configFile })
  }
  if (jinjaFile !== undefined) out.set('default', new ChatTemplate(jinjaFile.text, jinjaFile.file))
  return out
}

/** The built-in template a tokenizer's special tokens imply, when it ships no template. Undefined when they imply none. */
export function impliedChatTemplate(hasSpecialToken: (content: string) => boolean): ChatTemplateName | undefined {
  if (CHAT_TEMPLATE_TOKENS.chatml.every(hasSpecialToken)) return 'chatml'
  if (CHAT_TEMPLATE_TOKENS.ernie.every(hasSpecialToken)) return 'ernie'
  return undefined
}
