// Generation: a prompt (text, token ids or chat messages) continued with a KV cache, greedy or
// sampled with temperature and nucleus (top-p).
import { ErnieError, rangeError, typeError } from '../errors'
import { NativeKvCache } from '../native'
import type { Precision } from '../precision'
import type { ChatMessage } from '../tokenizer'
import { seededRandom } from '../util/random'
import type { ModelContext } from './context'
import type { LoraAdapter } from './lora'

export interface GenerateOptions {
  maxNewTokens?: number
  /** 0 (default): greedy. */
  temperature?: number
  /** Nucleus sampling mass (default 1). */
  topP?: number
  /** Stop when the generated text contains one of these (it is cut before the match). */
  stop?: string[]
  eosTokenIds?: number[]
  seed?: number
  adapter?: LoraAdapter
  signal?: AbortSignal
  /** Default: the model's `precision`. */
  precision?: Precision
}

export interface GenerateResult {
  text: string
  tokens: number[]
  finishReason: 'eos' | 'stop' | 'length' | 'aborted'
}

function argmax(x: Float32Array): number {
  let best = 0
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i
  return best
}

// Temperature then nucleus (top-p) sampling.
function sample(logits: Float32Array, temperature: number, topP: number, random: () => number): number {
  let mx = -Infinity
  for (const v of logits) mx = Math.max(mx, v)
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a])
  const p = order.map((i) => Math.exp((logits[i] - mx) / temperature))
  const total = p.reduce((a, b) => a + b, 0)
  let keep = 0, mass = 0
  while (keep < p.length && mass < topP * total) mass += p[keep++]
  let r = random() * mass
  for (let k = 0; k < keep; k++) {
    r -= p[k]
    if (r <= 0) return order[k]
  }
  return order[keep - 1]
}

/** ErnieModel.generate. */
export async function generateText(model: ModelContext, prompt: string | number[] | ChatMessage[], options: GenerateOptions = {}): Promise<GenerateResult> {
  const handle = model.native()
  const maxNewTokens = options.maxNewTokens ?? 64
  if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw rangeError('generate: maxNewTokens must be a positive integer')
  const temperature = options.temperature ?? 0
  const topP = options.topP ?? 1
  const precision = model.callPrecision(options.precision, 'generate: precision')
  if (!(temperature >= 0)) throw rangeError('generate: temperature must be >= 0')
  if (!(topP > 0 && topP <= 1)) throw rangeError('generate: topP must be in (0, 1]')
  let ids: number[]
  if (typeof prompt === 'string') ids = model.requireTokenizer('generate').encode(prompt, { parseSpecial: true })
  else if (Array.isArray(prompt) && prompt.every((x) => typeof x === 'number')) ids = [...(prompt as number[])]
  else if (Array.isArray(prompt)) ids = model.requireTokenizer('generate').encodeChat(prompt as ChatMessage[], { addGenerationPrompt: true })
  else throw typeError('generate: prompt must be a string, token ids or chat messages')
  if (ids.length === 0) throw rangeError('generate: the prompt is empty')
  const eos = new Set<number>(
    [model.config.eos_token_id, model.tokenizer?.eosTokenId, ...(options.eosTokenIds ?? [])].flat().filter((x): x is number => typeof x === 'number'),
  )
  const limit = model.config.max_position_embeddings
  if (limit !== undefined && ids.length + maxNewTokens > limit)
    throw new ErnieError('ERR_SEQUENCE_TOO_LONG', `generate: a prompt of ${ids.length} tokens plus maxNewTokens ${maxNewTokens} exceeds the model's max_position_embeddings (${limit})`)
  const cache = new NativeKvCache({ maxLength: ids.length + maxNewTokens })
  const logits = new Float32Array(model.config.vocab_size)
  // Rows of the embedding past the tokenizer's vocabulary (padding to a round size) are no
  // tokens: they are never picked (the tokenizer could not decode them).
  const pickable = model.tokenizer ? logits.subarray(0, Math.min(model.tokenizer.vocabSize, logits.length)) : logits
  const random = seededRandom(options.seed ?? 0)
  const out: number[] = []
  let finishReason: GenerateResult['finishReason'] = 'length'
  try {
    let next = ids
    for (let step = 0; step < maxNewTokens; step++) {
      if (options.signal?.aborted) {
        finishReason = 'aborted'
        break
      }
      await model.track(handle.decode({ cache, inputIds: Int32Array.from(next), logits, adapter: options.adapter?.handle, precision }))
      const token = temperature === 0 ? argmax(pickable) : sample(pickable, temperature, topP, random)
      if (eos.has(token)) {
        finishReason = 'eos'
        break
      }
      out.push(token)
      next = [token]
      if (options.stop && model.tokenizer) {
        const text = model.tokenizer.decode(out)
        const hit = options.stop.find((s) => text.includes(s))
        if (hit !== undefined) {
          finishReason = 'stop'
          break
        }
      }
    }
  } finally {
    cache.dispose()
  }
  let text = model.tokenizer ? model.tokenizer.decode(out, { skipSpecialTokens: true }) : ''
  if (finishReason === 'stop' && options.stop) {
    const cut = Math.min(...options.stop.map((s) => text.indexOf(s)).filter((i) => i >= 0))
    text = text.slice(0, cut)
  }
  return { text, tokens: out, finishReason }
}
