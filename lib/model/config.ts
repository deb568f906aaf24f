// Model configuration: config.json's own (snake_case) keys, validated, plus what the engine
// derives from the architecture (RoPE pairing, per-head q/k norm).
import { ErnieError } from '../errors'
import { checkBehaviour } from './config-behaviour'

export type ModelType = 'ernie4_5' | 'qwen3'

/** The subset of a Hugging Face config.json the engine reads (snake_case, as in the file). */
export interface ModelConfig {
  model_type: ModelType
  hidden_size: number
  intermediate_size: number
  num_hidden_layers: number
  num_attention_heads: number
  num_key_value_heads: number
  /** Defaults to hidden_size / num_attention_heads when absent. */
  head_dim?: number
  vocab_size: number
  rms_norm_eps: number
  rope_theta: number
  max_position_embeddings?: number
  tie_word_embeddings?: boolean
  hidden_act?: string
  pad_token_id?: number
  bos_token_id?: number
  eos_token_id?: number | number[]
  architectures?: string[]
  torch_dtype?: string
  [key: string]: unknown
}

/** How the decoder is wired for a model type. */
export interface Architecture {
  /** ERNIE-4.5 rotates adjacent pairs (2i, 2i+1); Qwen3 rotates halves (i, i + d/2). */
  ropePairing: 'adjacent' | 'half'
  /** Qwen3 normalises q and k per head (q_norm, k_norm) before RoPE. */
  qkNorm: boolean
}

export const ARCHITECTURES: Record<ModelType, Architecture> = {
  ernie4_5: { ropePairing: 'adjacent', qkNorm: false },
  qwen3: { ropePairing: 'half', qkNorm: true },
}

/** baidu/ERNIE-4.5-0.3B-PT's config.json. */
export const ERNIE_4_5_0_3B_CONFIG: Readonly<ModelConfig> = Object.freeze({
  architectures: ['Ernie4_5ForCausalLM'],
  model_type: 'ernie4_5',
  hidden_size: 1024,
  intermediate_size: 3072,
  num_hidden_layers: 18,
  num_attention_heads: 16,
  num_key_value_heads: 2,
  head_dim: 128,
  vocab_size: 103424,
  rms_norm_eps: 1e-5,
  rope_theta: 500000,
  max_position_embeddings: 131072,
  tie_word_embeddings: true,
  hidden_act: 'silu',
  pad_token_id: 0,
  bos_token_id: 1,
  eos_token_id: 2,
  torch_dtype: 'bfloat16',
})

/** Qwen/Qwen3-0.6B's config.json (the parts the engine reads). */
export const QWEN3_0_6B_CONFIG: Readonly<ModelConfig> = Object.freeze({
  architectures: ['Qwen3ForCausalLM'],
  model_type: 'qwen3',
  hidden_size: 1024,
  intermediate_size: 3072,
  num_hidden_layers: 28,
  num_attention_heads: 16,
  num_key_value_heads: 8,
  head_dim: 128,
  vocab_size: 151936,
  rms_norm_eps: 1e-6,
  rope_theta: 1000000,
  max_position_embeddings: 40960,
  tie_word_embeddings: true,
  hidden_act: 'silu',
  bos_token_id: 151643,
  eos_token_id: 151645,
  torch_dtype: 'bfloat16',
})

// transformers' defaults where config.json leaves a key out (Ernie4_5Config, Qwen3Config).
const TRANSFORMERS_HEAD_DIM = 128
const TIED_BY_DEFAULT: Record<ModelType, boolean> = { ernie4_5: true, qwen3: false }

/** A validated config with the derived sizes the engine needs. */
export interface ResolvedConfig extends ModelConfig {
  head_dim: number
  tie_word_embeddings: boolean
  arch: Architecture
}

function positiveInt(cfg: Record<string, unknown>, key: string, where: string): number {
  const v = cfg[key]
  if (typeof v !== 'number' || !Number.isInteger(v) || v <= 0)
    throw new ErnieError('ERR_CONFIG', `${where}: "${key}" must be a positive integer, got ${JSON.stringify(v)}`)
  return v
}

function numberIn(v: unknown, key: string, where: string, min: number, max: number, why: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= min || v > max)
    throw new ErnieError('ERR_CONFIG', `${where}: "${key}" must be a number in (${min}, ${max}] (${why}), got ${JSON.stringify(v)}`)
  return v
}

function optionalOfType(cfg: Record<string, unknown>, key: string, where: string, type: string, valid: (v: unknown) => boolean): void {
  const v = cfg[key]
  if (v !== undefined && v !== null && !valid(v)) throw new ErnieError('ERR_CONFIG', `${where}: "${key}" must be ${type}, got ${JSON.stringify(v)}`)
}

/** Validates a config object (as parsed from config.json); `where` names it in errors. */
export function resolveConfig(raw: unknown, where = 'config'): ResolvedConfig {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw))
    throw new ErnieError('ERR_CONFIG', `${where}: expected a JSON object`)
  const cfg = raw as Record<string, unknown>
  const type = cfg.model_type
  if (type !== 'ernie4_5' && type !== 'qwen3')
    throw new ErnieError(
      'ERR_UNSUPPORTED_MODEL',
      `${where}: model_type ${JSON.stringify(type)} is not supported (expected "ernie4_5" or "qwen3")`,
    )
  // null num_key_value_heads means one per attention head, as both transformers classes read it
  const kvHeadsGiven = cfg.num_key_value_heads !== null
  for (const k of ['hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'vocab_size', ...(kvHeadsGiven ? ['num_key_value_heads'] : [])])
    positiveInt(cfg, k, where)
  const ropeTheta = checkBehaviour(cfg, type, where)
  // Physical ranges: released models use eps 1e-6..1e-5 and theta 1e4..1e6; values far outside
  // are a corrupted or mistyped file, not a model.
  numberIn(cfg.rms_norm_eps, 'rms_norm_eps', where, 0, 0.1, 'an RMSNorm epsilon')
  numberIn(ropeTheta, 'rope_theta', where, 1, 1e9, 'the RoPE base')
  // only ErnieModel.random reads it (the standard deviation of the initial weights)
  optionalOfType(cfg, 'initializer_range', where, 'a number in (0, 1]', (v) => typeof v === 'number' && v > 0 && v <= 1)
  // JSON types exact: "false" is not false.
  const vocab = cfg.vocab_size as number
  const isTokenId = (v: unknown) => Number.isInteger(v) && (v as number) >= 0 && (v as number) < vocab
  optionalOfType(cfg, 'max_position_embeddings', where, 'a positive integer', (v) => Number.isInteger(v) && (v as number) > 0)
  optionalOfType(cfg, 'tie_word_embeddings', where, 'true or false', (v) => typeof v === 'boolean')
  optionalOfType(cfg, 'hidden_act', where, 'a string', (v) => typeof v === 'string')
  optionalOfType(cfg, 'pad_token_id', where, 'a token id (an integer in [0, vocab_size))', isTokenId)
  optionalOfType(cfg, 'bos_token_id', where, 'a token id (an integer in [0, vocab_size))', isTokenId)
  optionalOfType(cfg, 'eos_token_id', where, 'a token id or a list of them', (v) => isTokenId(v) || (Array.isArray(v) && v.length > 0 && v.every(isTokenId)))
  optionalOfType(cfg, 'architectures', where, 'a list of class names', (v) => Array.isArray(v) && v.every((a) => typeof a === 'string'))
  optionalOfType(cfg, 'torch_dtype', where, 'a string', (v) => typeof v === 'string')
  const heads = cfg.num_attention_heads as number
  const kvHeads = kvHeadsGiven ? (cfg.num_key_value_heads as number) : heads
  if (heads % kvHeads !== 0)
    throw new ErnieError('ERR_CONFIG', `${where}: num_attention_heads (${heads}) must be a multiple of num_key_value_heads (${kvHeads})`)
  let headDim = cfg.head_dim
  if (headDim === undefined || headDim === null) {
    const hidden = cfg.hidden_size as number
    if (hidden % heads !== 0)
      throw new ErnieError('ERR_CONFIG', `${where}: no "head_dim" and hidden_size (${hidden}) is not a multiple of num_attention_heads (${heads})`)
    headDim = hidden / heads
    // null is "derive it" (Ernie4_5Config's rule); an absent key is transformers' class default,
    // 128 for both model types, where ERNIE's Paddle code derives it: state it unless they agree
    if (cfg.head_dim === undefined && headDim !== TRANSFORMERS_HEAD_DIM)
      throw new ErnieError(
        'ERR_CONFIG',
        `${where}: no "head_dim": transformers reads an absent head_dim as ${TRANSFORMERS_HEAD_DIM}, ERNIE's Paddle code as hidden_size / num_attention_heads (${headDim}); write the model's head_dim (or null for ${headDim})`,
      )
  } else {
    positiveInt(cfg, 'head_dim', where)
  }
  if ((headDim as number) % 2 !== 0) throw new ErnieError('ERR_CONFIG', `${where}: head_dim must be even for RoPE, got ${headDim}`)
  const act = cfg.hidden_act ?? 'silu'
  if (act !== 'silu' && act !== 'swish')
    throw new ErnieError('ERR_CONFIG', `${where}: hidden_act ${JSON.stringify(act)} is not supported (expected "silu")`)
  // null means absent, as transformers reads it: the resolved config leaves such keys out, as its
  // type says (a null max_position_embeddings compared as 0 and refused every input)
  const present = Object.fromEntries(Object.entries(cfg).filter(([, v]) => v !== null))
  return {
    ...(present as ModelConfig),
    num_key_value_heads: kvHeads,
    head_dim: headDim as number,
    rope_theta: ropeTheta as number,
    tie_word_embeddings: typeof cfg.tie_word_embeddings === 'boolean' ? cfg.tie_word_embeddings : TIED_BY_DEFAULT[type],
    arch: ARCHITECTURES[type],
  }
}

/** Parameters of the decoder (embedding counted once when tied). */
export function parameterCount(c: ResolvedConfig): number {
  const q = c.num_attention_heads * c.head_dim
  const kv = c.num_key_value_heads * c.head_dim
  const perLayer =
    c.hidden_size * (q + 2 * kv) + q * c.hidden_size + 3 * c.hidden_size * c.intermediate_size + 2 * c.hidden_size +
    (c.arch.qkNorm ? 2 * c.head_dim : 0)
  const embed = c.vocab_size * c.hidden_size
  return embed + c.num_hidden_layers * perLayer + c.hidden_size + (c.tie_word_embeddings ? 0 : embed)
}
