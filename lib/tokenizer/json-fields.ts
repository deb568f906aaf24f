// Fields of the tokenizer's JSON files (tokenizer.json, tokenizer_config.json,
// special_tokens_map.json, added_tokens.json) read at their exact JSON types. transformers takes
// "true" or 1 as true (Python truthiness) and HF's tokenizers crate refuses them: read as false
// here they would tokenize differently from both, so they are errors naming the file and the key.
import { parseJsonBytes } from '../io/json'
import { TokenizerError } from './errors'

/** Token ids are int32 throughout the engine; added tokens past the vocabulary are few. */
export const MAX_TOKEN_ID = 2 ** 31 - 1

export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v)
}

export function isTokenId(v: unknown): v is number {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= MAX_TOKEN_ID
}

/** A JSON file's bytes as a value: UTF-8 (no BOM) and JSON, else ERR_TOKENIZER_JSON naming the file. */
export function parseJsonFile(bytes: Uint8Array, file: string): unknown {
  try {
    return parseJsonBytes(bytes)
  } catch (e) {
    throw new TokenizerError('ERR_TOKENIZER_JSON', `invalid JSON: ${(e as Error).message}`, { file, cause: e })
  }
}

/** A boolean field, or undefined when absent or null; any other type is an error. */
export function optionalFlag(obj: Record<string, unknown>, key: string, where: string, file: string): boolean | undefined {
  const v = obj[key]
  if (v === undefined || v === null) return undefined
  if (typeof v !== 'boolean') throw new TokenizerError('ERR_TOKENIZER_JSON', `${where}"${key}" must be true or false, got ${JSON.stringify(v)}`, { file })
  return v
}

/** A boolean field, false when absent or null. */
export function flag(obj: Record<string, unknown>, key: string, where: string, file: string): boolean {
  return optionalFlag(obj, key, where, file) ?? false
}

const FLAGS = ['lstrip', 'rstrip', 'normalized', 'single_word', 'special'] as const

/** An added token's flags (lstrip, rstrip, normalized, single_word, special): booleans, false when absent. */
export function tokenFlags(v: Record<string, unknown>, where: string, file: string): { special: boolean; lstrip: boolean; rstrip: boolean } {
  for (const k of FLAGS) flag(v, k, where, file)
  return { special: flag(v, 'special', where, file), lstrip: flag(v, 'lstrip', where, file), rstrip: flag(v, 'rstrip', where, file) }
}

/** An added token's content (a non-empty string) and flags. */
export function addedTokenFields(v: Record<string, unknown>, where: string, file: string): { content: string; special: boolean; lstrip: boolean; rstrip: boolean } {
  if (typeof v.content !== 'string' || v.content === '') throw new TokenizerError('ERR_TOKENIZER_JSON', `${where}needs a non-empty string "content"`, { file })
  return { content: v.content, ...tokenFlags(v, where, file) }
}

/** A special-token entry of tokenizer_config.json / special_tokens_map.json: "<s>" or { content: "<s>", ... }. */
export function tokenContent(v: unknown, key: string, file: string): { content: string; lstrip: boolean; rstrip: boolean } | undefined {
  if (v === undefined || v === null) return undefined
  if (typeof v === 'string' && v !== '') return { content: v, lstrip: false, rstrip: false }
  if (isObject(v)) {
    const { content, lstrip, rstrip } = addedTokenFields(v, `"${key}": `, file)
    return { content, lstrip, rstrip }
  }
  throw new TokenizerError('ERR_TOKENIZER_JSON', `"${key}" must be a string (not empty) or an object with a string "content", got ${JSON.stringify(v)}`, { file })
}

/** Deeper than any real tokenizer.json's pipeline (Sequences nest two or three levels). */
export const MAX_PIPELINE_DEPTH = 64

/**
 * Refuses a pipeline part (normalizer, pre_tokenizer, post_processor, decoder) nested deeper than
 * MAX_PIPELINE_DEPTH: HF's library and the readers here walk them recursively, and thousands of
 * nested Sequences would overflow the stack (a RangeError, not an error about the file). The
 * walk itself keeps its own stack.
 */
export function checkPipelineDepth(json: Record<string, unknown>, file: string): void {
  for (const key of ['normalizer', 'pre_tokenizer', 'post_processor', 'decoder']) {
    const stack: Array<[unknown, number]> = [[json[key], 1]]
    while (stack.length > 0) {
      const [v, depth] = stack.pop()!
      if (typeof v !== 'object' || v === null) continue
      if (depth > MAX_PIPELINE_DEPTH)
        throw new TokenizerError('ERR_TOKENIZER_JSON', `"${key}" nests deeper than ${MAX_PIPELINE_DEPTH} levels; no tokenizer's pipeline does`, { file })
      for (const child of Object.values(v)) stack.push([child, depth + 1])
    }
  }
}
