// The checkpoint layouts (which tensor names, which orientation), the HF checkpoint's tensor
// names, shapes and [out, in] layout, and each weight's place in the engine's views under those
// names.
import type { ResolvedConfig } from './config'
import { PROJECTION_SPECS, modulePath, projectionShape } from './projections'
import type { MatrixView, ModelViews, WeightArray } from './weights'

/**
 * How a checkpoint stores its linear weights: 'hf' [out, in] with separate q/k/v and gate/up;
 * 'paddle' (ERNIEKit) [in, out] with fused qkv_proj (q | k | v) and up_gate_proj (gate | up).
 */
export type WeightLayout = 'hf' | 'paddle'

/** The prefix of the decoder's tensor names (all but lm_head.weight) in each layout as written. */
export const LAYOUT_PREFIX: Readonly<Record<WeightLayout, string>> = Object.freeze({ hf: 'model.', paddle: 'ernie.' })

/** A layout as the loader finds it: by its embedding tensor, `${prefix}embed_tokens.weight`. */
export interface CheckpointLayout {
  layout: WeightLayout
  prefix: string
  /** What writes it, for error messages. */
  what: string
}

/** The layouts read, in the order they are looked for. */
export const CHECKPOINT_LAYOUTS: readonly CheckpointLayout[] = Object.freeze([
  { layout: 'hf', prefix: LAYOUT_PREFIX.hf, what: "transformers' *ForCausalLM and *ForSequenceClassification" },
  // transformers' bare *Model (AutoModel), as the Qwen3-Embedding repos ship it: no LM head
  { layout: 'hf', prefix: '', what: "transformers' bare *Model (Qwen3-Embedding)" },
  { layout: 'paddle', prefix: LAYOUT_PREFIX.paddle, what: 'ERNIEKit / Paddle' },
])

const HF = LAYOUT_PREFIX.hf

/** The HF tensor names and shapes of a config's checkpoint (tied head: no lm_head.weight). */
export function checkpointShapes(cfg: ResolvedConfig): Map<string, number[]> {
  const H = cfg.hidden_size, V = cfg.vocab_size
  const shapes = new Map<string, number[]>([[`${HF}embed_tokens.weight`, [V, H]]])
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const L = `${HF}layers.${l}.`
    shapes.set(`${L}input_layernorm.weight`, [H])
    shapes.set(`${L}post_attention_layernorm.weight`, [H])
    for (const { name } of PROJECTION_SPECS) shapes.set(`${L}${modulePath(name)}.weight`, projectionShape(cfg, name))
    if (cfg.arch.qkNorm) {
      shapes.set(`${L}self_attn.q_norm.weight`, [cfg.head_dim])
      shapes.set(`${L}self_attn.k_norm.weight`, [cfg.head_dim])
    }
  }
  shapes.set(`${HF}norm.weight`, [H])
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
  if (name === `${HF}embed_tokens.weight`) return materialize(v.embed)
  if (name === 'lm_head.weight') return materialize(v.lmHead)
  if (name === `${HF}norm.weight`) return v.finalNorm
  const m = /^layers\.(\d+)\.(.+)$/.exec(name.startsWith(HF) ? name.slice(HF.length) : '')
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

/** Each layer view's HF tensor name under {prefix}layers.N. */
export const LAYER_TENSOR: Record<string, string> = {
  ...Object.fromEntries(PROJECTION_SPECS.map((p) => [p.key, `${modulePath(p.name)}.weight`])),
  inputNorm: 'input_layernorm.weight',
  postAttentionNorm: 'post_attention_layernorm.weight',
  qNorm: 'self_attn.q_norm.weight',
  kNorm: 'self_attn.k_norm.weight',
}
