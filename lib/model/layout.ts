// The HF checkpoint's tensor names, shapes and [out, in] layout, and each weight's place in the
// engine's views under those names.
import type { ResolvedConfig } from './config'
import { PROJECTION_SPECS, modulePath, projectionShape } from './projections'
import type { MatrixView, ModelViews, WeightArray } from './weights'

/** The HF tensor names and shapes of a config's checkpoint (tied head: no lm_head.weight). */
export function checkpointShapes(cfg: ResolvedConfig): Map<string, number[]> {
  const H = cfg.hidden_size, V = cfg.vocab_size
  const shapes = new Map<string, number[]>([['model.embed_tokens.weight', [V, H]]])
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const L = `model.layers.${l}.`
    shapes.set(`${L}input_layernorm.weight`, [H])
    shapes.set(`${L}post_attention_layernorm.weight`, [H])
    for (const { name } of PROJECTION_SPECS) shapes.set(`${L}${modulePath(name)}.weight`, projectionShape(cfg, name))
    if (cfg.arch.qkNorm) {
      shapes.set(`${L}self_attn.q_norm.weight`, [cfg.head_dim])
      shapes.set(`${L}self_attn.k_norm.weight`, [cfg.head_dim])
    }
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

/** Each layer view's HF tensor name under model.layers.N. */
export const LAYER_TENSOR: Record<string, string> = {
  ...Object.fromEntries(PROJECTION_SPECS.map((p) => [p.key, `${modulePath(p.name)}.weight`])),
  inputNorm: 'input_layernorm.weight',
  postAttentionNorm: 'post_attention_layernorm.weight',
  qNorm: 'self_attn.q_norm.weight',
  kNorm: 'self_attn.k_norm.weight',
}
