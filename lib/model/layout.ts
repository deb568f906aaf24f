// The HF checkpoint's tensor names, shapes and [out, in] layout, and each weight's place in the
// engine's views under those names.
import type { ResolvedConfig } from './config'
import type { MatrixView, ModelViews, WeightArray } from './weights'

/** The HF tensor names and shapes of a config's checkpoint (tied head: no lm_head.weight). */
export function checkpointShapes(cfg: ResolvedConfig): Map<string, number[]> {
  const H = cfg.hidden_size, I = cfg.intermediate_size, V = cfg.vocab_size
  const q = cfg.num_attention_heads * cfg.head_dim, kv = cfg.num_key_value_heads * cfg.head_dim
  const shapes = new Map<string, number[]>([['model.embed_tokens.weight', [V, H]]])
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const L = `model.layers.${l}.`
    shapes.set(`${L}input_layernorm.weight`, [H])
    shapes.set(`${L}post_attention_layernorm.weight`, [H])
    shapes.set(`${L}self_attn.q_proj.weight`, [q, H])
    shapes.set(`${L}self_attn.k_proj.weight`, [kv, H])
    shapes.set(`${L}self_attn.v_proj.weight`, [kv, H])
    shapes.set(`${L}self_attn.o_proj.weight`, [H, q])
    if (cfg.arch.qkNorm) {
      shapes.set(`${L}self_attn.q_norm.weight`, [cfg.head_dim])
      shapes.set(`${L}self_attn.k_norm.weight`, [cfg.head_dim])
    }
    shapes.set(`${L}mlp.gate_proj.weight`, [I, H])
    shapes.set(`${L}mlp.up_proj.weight`, [I, H])
    shapes.set(`${L}mlp.down_proj.weight`, [H, I])
  }
  shapes.set('model.norm.weight', [H])
  if (!cfg.tie_word_embeddings) shapes.set('lm_head.weight', [V, H])
  return shapes
}

// A weight in HF's [out, in] row-major layout: the view itself when it already is, else a copy.
export function materialize(m: MatrixView): WeightArray {
  if (!m.transposed && m.offset === 0 && m.ld === m.cols && m.data.length === m.rows * m.cols) return m.data
  const out = m.data instanceof Float32Array ? new Float32Array(m.rows * m.cols) : new Uint16Array(m.rows * m.cols)
  for (let r = 0; r < m.rows; r++)
    for (let c = 0; c < m.cols; c++) out[r * m.cols + c] = m.data[m.offset + (m.transposed ? c * m.ld + r : r * m.ld + c)]
  return out
}

export function hfTensor(v: ModelViews, name: string, shape: number[]): WeightArray {
  if (name === 'model.embed_tokens.weight') return materialize(v.embed)
  if (name === 'lm_head.weight') return materialize(v.lmHead)
  if (name === 'model.norm.weight') return v.finalNorm
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name)
  if (!m) throw new Error(`unexpected tensor ${name}`)
  const layer = v.layers[Number(m[1])]
  for (const [key, suffix] of Object.entries(LAYER_TENSOR)) {
    if (suffix !== m[2]) continue
    const w = layer[key as keyof typeof layer]
    if (!w) break
    return w instanceof Float32Array || w instanceof Uint16Array ? w : materialize(w)
  }
  throw new Error(`no weight for ${name} [${shape.join(', ')}]`)
}

export const LAYER_TENSOR: Record<string, string> = {
  q: 'self_attn.q_proj.weight',
  k: 'self_attn.k_proj.weight',
  v: 'self_attn.v_proj.weight',
  o: 'self_attn.o_proj.weight',
  gate: 'mlp.gate_proj.weight',
  up: 'mlp.up_proj.weight',
  down: 'mlp.down_proj.weight',
  inputNorm: 'input_layernorm.weight',
  postAttentionNorm: 'post_attention_layernorm.weight',
  qNorm: 'self_attn.q_norm.weight',
  kNorm: 'self_attn.k_norm.weight',
}
