// Generation: a prompt (text, token ids or chat messages) continued with a KV cache, greedy or
// sampled (sampling.ts). One loop serves generate(), the stream and the onText callback: it
// yields each decoded token with the text that became final with it (text-stream.ts).
import { ErnieError, rangeError, typeError } from '../errors'
import { NativeKvCache } from '../native'
import type { Precision } from '../precision'
import type { ChatMessage, Tokenizer } from '../tokenizer'
import { seededRandom } from '../util/random'
import type { ModelContext } from './context'
import type { LoraAdapter } from './lora'
import { pickToken, resolveSampling, type Sampling, type SamplingOptions } from './sampling'
import { TextStream } from './text-stream'

export interface GenerateOptions extends SamplingOptions {
  /** The most tokens to generate (default 64). */
  maxNewTokens?: number
  /**
   * Stop when the generated text contains one of these: the text is cut before it, and the tokens
   * end with the one that completed it. A special token's text (such as '<|im_end|>') stops at that
   * token. Streamed text never shows a stop string, nor its start.
   */
  stop?: string[]
  /**
   * The ids that end generation, not part of the output (default: the config's eos_token_id and the
   * tokenizer's eos token; [] for none). A chat prompt also ends at its template's end-of-turn token.
   */
  eosTokenIds?: number[]
  /** The sampling seed (default 0): the same seed, the same tokens. */
  seed?: number
  adapter?: LoraAdapter
  /** Aborting ends generation between two tokens, with finishReason 'aborted'. */
  signal?: AbortSignal
  /** Default: the model's `precision`. */
  precision?: Precision
  /**
   * Called with each chunk as it is decoded, before the stream yields it: `text` is the text that
   * became final (often '' while a character or a possible stop string is incomplete).
   */
  onText?: (text: string, chunk: GenerateChunk) => void
}

export type FinishReason = 'eos' | 'stop' | 'length' | 'aborted'

export interface GenerateResult {
  text: string
  tokens: number[]
  finishReason: FinishReason
}

/**
 * One step of a generation stream: the token decoded at this step and the text that became final
 * with it. The last chunk has no token and carries the text held back until the end and the
 * finishReason. Joined, the chunks' text and tokens are generate()'s.
 */
export interface GenerateChunk {
  text: string
  /** The token decoded at this step (none in the last chunk). */
  tokens: number[]
  /** Set on the last chunk. */
  finishReason?: FinishReason
}

function tokenIdList(v: unknown, name: string, vocab: number, what: string): number[] {
  if (!Array.isArray(v)) throw typeError(`${what}: ${name} must be an array of token ids`)
  v.forEach((id, i) => {
    if (!Number.isInteger(id) || id < 0 || id >= vocab) throw rangeError(`${what}: ${name}[${i}] = ${String(id)} is outside the vocabulary (0..${vocab - 1})`)
  })
  return v as number[]
}

/** The prompt as token ids: text (special tokens parsed), ids, or messages through the chat template. */
function promptIds(model: ModelContext, prompt: string | number[] | ChatMessage[], what: string): { ids: number[]; chat: boolean } {
  let ids: number[]
  let chat = false
  if (typeof prompt === 'string') ids = model.requireTokenizer(what).encode(prompt, { parseSpecial: true })
  else if (Array.isArray(prompt) && prompt.every((x) => typeof x === 'number')) ids = tokenIdList(prompt, 'prompt', model.config.vocab_size, what)
  else if (Array.isArray(prompt)) {
    ids = model.requireTokenizer(what).encodeChat(prompt as ChatMessage[], { addGenerationPrompt: true })
    chat = true
  } else throw typeError(`${what}: prompt must be a string, token ids or chat messages`)
  if (ids.length === 0) throw rangeError(`${what}: the prompt is empty`)
  return { ids: [...ids], chat }
}

/** The model's end-of-sequence ids: its config's eos_token_id (one or several) and its tokenizer's eos token. */
export function defaultEosIds(model: ModelContext): number[] {
  const ids = [model.config.eos_token_id, model.tokenizer?.eosTokenId].flat().filter((x): x is number => typeof x === 'number')
  return [...new Set(ids)]
}

/**
 * The special token that ends an assistant turn in the tokenizer's chat template: the first one
 * written after an assistant message's content, found by rendering two conversations that differ
 * only in that content (what follows it is their common ending). So any template the tokenizer
 * renders gives its own: ERNIE-4.5's <|end_of_sentence|>, ChatML's <|im_end|>. None: [].
 */
export function endOfTurnIds(tokenizer: Tokenizer): number[] {
  const [a, b] = ['Hello', 'Bye'].map((content) => tokenizer.encodeChat([{ role: 'user', content: 'Hi' }, { role: 'assistant', content }]))
  let common = 0
  while (common < Math.min(a.length, b.length) && a[a.length - 1 - common] === b[b.length - 1 - common]) common++
  const special = new Set(tokenizer.addedTokens.filter((t) => t.special).map((t) => t.id))
  const end = a.slice(a.length - common).find((id) => special.has(id))
  return end === undefined ? [] : [end]
}

interface Plan {
  ids: number[]
  maxNewTokens: number
  sampling: Sampling
  seed: number
  /** End generation, excluded from the output (eos, end of turn). */
  endIds: Set<number>
  /** Special tokens named as stop strings: end generation, included in the tokens. */
  stopIds: Set<number>
  /** The stop strings matched in the text. */
  stopTexts: string[]
  options: GenerateOptions
  precision: Precision
}

/** Checks every option (typed errors naming it) and tokenizes the prompt, before anything runs. */
function plan(model: ModelContext, prompt: string | number[] | ChatMessage[], options: GenerateOptions, what: string): Plan {
  if (typeof options !== 'object' || options === null) throw typeError(`${what}: options must be an object`)
  model.native()
  const vocab = model.config.vocab_size
  const maxNewTokens = options.maxNewTokens ?? 64
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw rangeError(`${what}: maxNewTokens must be a positive integer, got ${String(maxNewTokens)}`)
  const sampling = resolveSampling(options, what)
  const seed = options.seed ?? 0
  if (!Number.isInteger(seed)) throw rangeError(`${what}: seed must be an integer, got ${String(seed)}`)
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw typeError(`${what}: signal must be an AbortSignal`)
  if (options.onText !== undefined && typeof options.onText !== 'function') throw typeError(`${what}: onText must be a function`)
  const precision = model.callPrecision(options.precision, `${what}: precision`)

  const stop = options.stop ?? []
  if (!Array.isArray(stop) || !stop.every((s) => typeof s === 'string' && s !== '')) throw typeError(`${what}: stop must be an array of non-empty strings`)
  if (stop.length > 0 && !model.tokenizer) throw new ErnieError('ERR_NO_TOKENIZER', `${what}: stop strings need a tokenizer; this model was loaded without one`)
  const specialIds = new Map((model.tokenizer?.addedTokens ?? []).filter((t) => t.special).map((t) => [t.content, t.id]))
  const stopIds = new Set(stop.filter((s) => specialIds.has(s)).map((s) => specialIds.get(s)!))
  const stopTexts = stop.filter((s) => !specialIds.has(s))

  const endIds = new Set(options.eosTokenIds === undefined ? defaultEosIds(model) : tokenIdList(options.eosTokenIds, 'eosTokenIds', vocab, what))
  const { ids, chat } = promptIds(model, prompt, what)
  if (chat) for (const id of endOfTurnIds(model.tokenizer!)) endIds.add(id)
  const limit = model.config.max_position_embeddings
  if (limit !== undefined && ids.length + maxNewTokens > limit)
    throw new ErnieError('ERR_SEQUENCE_TOO_LONG', `${what}: a prompt of ${ids.length} tokens plus maxNewTokens ${maxNewTokens} exceeds the model's max_position_embeddings (${limit})`)
  return { ids, maxNewTokens, sampling, seed, endIds, stopIds, stopTexts, options, precision }
}

async function* decodeLoop(model: ModelContext, p: Plan): AsyncGenerator<GenerateChunk, void, undefined> {
  const { options } = p
  const emit = (chunk: GenerateChunk): GenerateChunk => {
    options.onText?.(chunk.text, chunk)
    return chunk
  }
  const cache = new NativeKvCache({ maxLength: p.ids.length + p.maxNewTokens })
  try {
    const logits = new Float32Array(model.config.vocab_size)
    // Rows of the embedding past the tokenizer's vocabulary (padding to a round size) are no
    // tokens: they are never picked (the tokenizer could not decode them).
    const pickable = model.tokenizer ? logits.subarray(0, Math.min(model.tokenizer.vocabSize, logits.length)) : logits
    const random = seededRandom(p.seed)
    const text = model.tokenizer ? new TextStream(model.tokenizer, p.stopTexts) : undefined
    // the tokens the repetition penalty weighs: the prompt's and the output's, each once
    const seen = new Set(p.ids)
    let finishReason: FinishReason = 'length'
    let next = p.ids
    for (let step = 0; step < p.maxNewTokens; step++) {
      if (options.signal?.aborted) {
        finishReason = 'aborted'
        break
      }
      await model.track(model.native().decode({ cache, inputIds: Int32Array.from(next), logits, adapter: options.adapter?.handle, precision: p.precision }))
      const token = pickToken(pickable, seen, p.sampling, random)
      if (p.endIds.has(token)) {
        finishReason = 'eos'
        break
      }
      seen.add(token)
      next = [token]
      yield emit({ text: text?.push(token) ?? '', tokens: [token] })
      if (p.stopIds.has(token) || text?.stopped) {
        finishReason = 'stop'
        break
      }
    }
    yield emit({ text: text?.finish() ?? '', tokens: [], finishReason })
  } finally {
    cache.dispose()
  }
}

/**
 * ErnieModel.generateStream: the options are checked and the prompt tokenized at once (errors
 * throw here); the cache is made at the first next() and freed when the stream ends, fails or
 * is left early (break out of for await, or return()).
 */
export function generateStream(model: ModelContext, prompt: string | number[] | ChatMessage[], options: GenerateOptions = {}, what = 'generate'): AsyncGenerator<GenerateChunk, void, undefined> {
  return decodeLoop(model, plan(model, prompt, options, what))
}

/** ErnieModel.generate: the stream, joined. */
export async function generateText(model: ModelContext, prompt: string | number[] | ChatMessage[], options: GenerateOptions = {}, what = 'generate'): Promise<GenerateResult> {
  let text = ''
  const tokens: number[] = []
  let finishReason: FinishReason = 'length'
  for await (const chunk of generateStream(model, prompt, options, what)) {
    text += chunk.text
    tokens.push(...chunk.tokens)
    if (chunk.finishReason) finishReason = chunk.finishReason
  }
  return { text, tokens, finishReason }
}
