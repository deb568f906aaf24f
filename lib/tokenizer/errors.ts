// The one error type the tokenizer layer throws for bad files, bad text and bad arguments.

export type TokenizerErrorCode =
  /** A tokenizer.model that is truncated, corrupt or inconsistent. */
  | 'ERR_TOKENIZER_MODEL'
  /** A tokenizer.json / tokenizer_config.json / special_tokens_map.json that cannot be used. */
  | 'ERR_TOKENIZER_JSON'
  /** No tokenizer file where one was expected. */
  | 'ERR_TOKENIZER_NOT_FOUND'
  /** Text, ids or options that the tokenizer cannot accept (lone surrogates, unknown ids, ...). */
  | 'ERR_TOKENIZER_INPUT'
  /** A regex in a tokenizer.json that the linear-time engine (RE2) cannot run: a lookaround, a backreference, ... */
  | 'ERR_TOKENIZER_PATTERN'
  /** A chat template that does not parse, or that fails or raises (`raise_exception`) while rendering. */
  | 'ERR_CHAT_TEMPLATE'

export class TokenizerError extends Error {
  readonly code: TokenizerErrorCode
  /** The file at fault, when there is one. */
  declare readonly file?: string

  constructor(code: TokenizerErrorCode, message: string, options: { file?: string; cause?: unknown } = {}) {
    super(options.file !== undefined ? `${options.file}: ${message}` : message, options.cause !== undefined ? { cause: options.cause } : undefined)
    this.name = 'TokenizerError'
    this.code = code
    if (options.file !== undefined) this.file = options.file
  }
}

/** Index of the first lone UTF-16 surrogate in `text`, or -1. */
export function findLoneSurrogate(text: string): number {
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i)
    if (c < 0xd800 || c > 0xdfff) continue
    if (c <= 0xdbff && i + 1 < text.length) {
      const d = text.charCodeAt(i + 1)
      if (d >= 0xdc00 && d <= 0xdfff) {
        i++
        continue
      }
    }
    return i
  }
  return -1
}

const wellFormed = (String.prototype as { isWellFormed?: () => boolean }).isWellFormed

/**
 * Rejects text that is not valid Unicode. A lone surrogate has no UTF-8 encoding, and silently
 * replacing it with U+FFFD would give ids for text the caller never wrote.
 */
export function checkText(text: unknown, what = 'text'): asserts text is string {
  if (typeof text !== 'string') {
    throw new TokenizerError('ERR_TOKENIZER_INPUT', `${what} must be a string, got ${text === null ? 'null' : typeof text}`)
  }
  if (wellFormed !== undefined ? wellFormed.call(text) : findLoneSurrogate(text) < 0) return
  const at = findLoneSurrogate(text)
  const unit = text.charCodeAt(at).toString(16).toUpperCase()
  throw new TokenizerError(
    'ERR_TOKENIZER_INPUT',
    `${what} contains a lone UTF-16 surrogate U+${unit} at index ${at}; it is not valid Unicode and has no UTF-8 encoding`,
  )
}
