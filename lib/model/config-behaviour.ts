// config.json keys that ask for behaviour. transformers' Ernie4_5Config and Qwen3Config (and
// ERNIE's own Paddle-era Ernie4_5_Config) honour each of them; the engine implements one value of
// each (no biases, RMSNorm, full-length plain RoPE, full attention, no dropout). A config setting
// another value describes a model the engine would compute differently from transformers, so it
// is refused (ERR_UNSUPPORTED_MODEL, naming the file, the key and the value) rather than ignored.
// A value of the wrong JSON type is ERR_CONFIG. Keys absent or null take the engine's value, as
// transformers reads null as "not given" for all of them.
//
// Keys left out change nothing the engine computes and stay accepted: use_cache (a generation
// cache), initializer_range (random initialisation, which ErnieModel.random reads), output_* and
// return_dict (what transformers returns), torch_dtype / dtype (the weights are read as stored),
// max_window_layers alone, transformers_version, _name_or_path, auto_map, id2label / label2id /
// num_labels (read by the classifier loader), Paddle's fuse_* / use_flash_attention / recompute*
// (how, not what, it computes), ignored_index (a loss option).
import { ErnieError } from '../errors'
import type { ModelType } from './config'

type JsonType = 'boolean' | 'number' | 'object'

interface Rule {
  key: string
  type: JsonType
  /** The engine's value. */
  implemented: (v: unknown) => boolean
  /** The engine's value, as the message states it. */
  expected: string
  /** What another value asks for, and of whom. */
  asks: string
}

const isEmptyObject = (v: unknown) => typeof v === 'object' && v !== null && !Array.isArray(v) && Object.keys(v).length === 0

const RULES: readonly Rule[] = [
  { key: 'use_bias', type: 'boolean', implemented: (v) => v === false, expected: 'false', asks: 'a bias on every attention and MLP projection (Ernie4_5Config)' },
  { key: 'attention_bias', type: 'boolean', implemented: (v) => v === false, expected: 'false', asks: 'a bias on q_proj, k_proj, v_proj and o_proj (Qwen3Config)' },
  { key: 'mlp_bias', type: 'boolean', implemented: (v) => v === false, expected: 'false', asks: 'a bias on the MLP projections' },
  { key: 'use_rmsnorm', type: 'boolean', implemented: (v) => v === true, expected: 'true', asks: "LayerNorm in place of RMSNorm (ERNIE's Paddle config)" },
  { key: 'partial_rotary_factor', type: 'number', implemented: (v) => v === 1, expected: '1', asks: 'RoPE on only part of each head' },
  { key: 'compression_ratio', type: 'number', implemented: (v) => v === 1, expected: '1', asks: "RoPE positions divided by it (ERNIE's own modeling code)" },
  // dropout acts in training only, but fine-tuning here would then differ from transformers'
  { key: 'attention_dropout', type: 'number', implemented: (v) => v === 0, expected: '0', asks: 'dropout on the attention weights in training, which the engine does not do (Qwen3Config)' },
  { key: 'attention_probs_dropout_prob', type: 'number', implemented: (v) => v === 0, expected: '0', asks: "dropout on the attention weights in training, which the engine does not do (ERNIE's Paddle config)" },
  { key: 'hidden_dropout_prob', type: 'number', implemented: (v) => v === 0, expected: '0', asks: "dropout on the hidden states in training, which the engine does not do (ERNIE's Paddle config)" },
  { key: 'pruned_heads', type: 'object', implemented: isEmptyObject, expected: '{}', asks: 'attention heads removed from some layers' },
  { key: 'quantization_config', type: 'object', implemented: () => false, expected: 'absent', asks: 'quantized weights (GPTQ, AWQ, bitsandbytes, ...), which the engine does not read' },
]

const ofType = (v: unknown, type: JsonType) => (type === 'object' ? typeof v === 'object' && !Array.isArray(v) : typeof v === type)

function unsupported(where: string, key: string, value: unknown, why: string): ErnieError {
  return new ErnieError('ERR_UNSUPPORTED_MODEL', `${where}: "${key}": ${JSON.stringify(value)} ${why}`)
}

function wrongType(where: string, key: string, value: unknown, type: string): ErnieError {
  return new ErnieError('ERR_CONFIG', `${where}: "${key}" must be ${type}, got ${JSON.stringify(value)}`)
}

/** Throws for a key in RULES set to a value the engine does not implement. */
function checkRules(cfg: Record<string, unknown>, where: string): void {
  for (const r of RULES) {
    const v = cfg[r.key]
    if (v === undefined || v === null) continue
    if (!ofType(v, r.type)) throw wrongType(where, r.key, v, `${r.type === 'object' ? 'an object' : `a ${r.type}`} (${r.expected} here)`)
    if (!r.implemented(v)) throw unsupported(where, r.key, v, `asks for ${r.asks}; the engine implements ${r.expected} only`)
  }
}

// The RoPE parameters: transformers 4 writes rope_scaling (null, or a dict with rope_type or its
// older name type), transformers 5 rope_parameters (the same dict, rope_theta inside). The engine
// computes the default RoPE: any other type (linear, dynamic, yarn, longrope, llama3, ...) or a
// parameter the default type does not read is refused.
const ROPE_DICT_KEYS = new Set(['rope_type', 'type', 'rope_theta', 'partial_rotary_factor'])

/** The RoPE base: the top-level rope_theta or the one inside rope_parameters / rope_scaling. */
function ropeThetaOf(cfg: Record<string, unknown>, where: string): unknown {
  let theta = cfg.rope_theta
  for (const key of ['rope_scaling', 'rope_parameters']) {
    const d = cfg[key]
    if (d === undefined || d === null) continue
    if (typeof d !== 'object' || Array.isArray(d)) throw wrongType(where, key, d, 'null or an object')
    const dict = d as Record<string, unknown>
    const type = dict.rope_type ?? dict.type ?? 'default'
    if (type !== 'default') throw unsupported(where, key, d, `asks for ${JSON.stringify(type)} RoPE scaling; the engine computes the default RoPE only (rope_scaling null)`)
    const extra = Object.keys(dict).filter((k) => !ROPE_DICT_KEYS.has(k))
    if (extra.length > 0) throw unsupported(where, key, d, `holds ${extra.map((k) => `"${k}"`).join(', ')}, which the default RoPE does not read`)
    if (dict.partial_rotary_factor !== undefined && dict.partial_rotary_factor !== 1)
      throw unsupported(where, key, d, 'asks for RoPE on only part of each head (partial_rotary_factor); the engine implements 1 only')
    if (dict.rope_theta !== undefined) {
      // two bases that disagree: transformers takes the inner one; neither is a safe guess
      if (theta !== undefined && theta !== null && theta !== dict.rope_theta)
        throw new ErnieError('ERR_CONFIG', `${where}: "rope_theta" is ${JSON.stringify(theta)} but "${key}" says ${JSON.stringify(dict.rope_theta)}`)
      theta = dict.rope_theta
    }
  }
  return theta
}

// Qwen3's sliding-window attention: transformers sets sliding_window to null unless
// use_sliding_window is true, then makes layers max_window_layers.. (all of them when absent:
// its default is 28) attend within the window, unless layer_types lists each layer's kind.
function checkAttentionKinds(cfg: Record<string, unknown>, type: ModelType, where: string): void {
  if (type !== 'qwen3') return // Ernie4_5Config has no sliding window nor layer_types: transformers ignores the keys there
  const layers = cfg.num_hidden_layers as number
  const layerTypes = cfg.layer_types
  if (layerTypes !== undefined && layerTypes !== null) {
    if (!Array.isArray(layerTypes) || layerTypes.length !== layers || !layerTypes.every((k) => typeof k === 'string'))
      throw wrongType(where, 'layer_types', layerTypes, `a list of ${layers} attention kinds (one per layer)`)
    const other = layerTypes.findIndex((k) => k !== 'full_attention')
    if (other >= 0) throw unsupported(where, 'layer_types', layerTypes, `asks for ${JSON.stringify(layerTypes[other])} at layer ${other}; the engine implements "full_attention" only`)
  }
  const use = cfg.use_sliding_window
  const window = cfg.sliding_window
  const maxWindowLayers = cfg.max_window_layers
  if (use !== undefined && use !== null && typeof use !== 'boolean') throw wrongType(where, 'use_sliding_window', use, 'true or false')
  if (window !== undefined && window !== null && !(Number.isInteger(window) && (window as number) > 0)) throw wrongType(where, 'sliding_window', window, 'null or a positive integer')
  if (maxWindowLayers !== undefined && maxWindowLayers !== null && !(Number.isInteger(maxWindowLayers) && (maxWindowLayers as number) >= 0))
    throw wrongType(where, 'max_window_layers', maxWindowLayers, 'a non-negative integer')
  if (use !== true || window === undefined || window === null) return
  // layer_types, when given, decides alone (and was checked above to be all full attention)
  if (layerTypes !== undefined && layerTypes !== null) return
  if (typeof maxWindowLayers === 'number' && maxWindowLayers >= layers) return
  throw unsupported(
    where,
    'use_sliding_window',
    use,
    `with "sliding_window": ${window} asks for sliding-window attention in layers ${typeof maxWindowLayers === 'number' ? maxWindowLayers : 'from max_window_layers (absent: 28)'} and up; the engine implements full attention only`,
  )
}

/**
 * Refuses config keys asking for behaviour the engine does not implement; returns the RoPE base
 * (top-level or from rope_parameters / rope_scaling), unchecked for range.
 */
export function checkBehaviour(cfg: Record<string, unknown>, type: ModelType, where: string): unknown {
  checkRules(cfg, where)
  checkAttentionKinds(cfg, type, where)
  return ropeThetaOf(cfg, where)
}
