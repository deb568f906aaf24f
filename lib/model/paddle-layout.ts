// The ERNIEKit / Paddle checkpoint layout: `ernie.` names, linear weights stored [in, out] (the
// transpose of HF's), the attention's q, k, v fused into one qkv_proj and the MLP's gate and up
// into one up_gate_proj, side by side along the output axis in the order PADDLE_LINEARS gives.
// weights.ts reads it; paddleTensors writes it. ERNIE-4.5 only: Qwen3 has no Paddle form.
import { ErnieError } from '../errors'
import type { ResolvedConfig } from './config'
import { bf16ToF32 } from './dtype'
import { LAYER_TENSOR, LAYOUT_PREFIX, materialize } from './layout'
import { PROJECTION_SPECS, modulePath, projectionSpec, type Projection } from './projections'
import type { MatrixView, ModelViews, WeightArray } from './weights'

/** A layer's linear tensor in the Paddle layout: its module path and the projections it holds, in order. */
export interface PaddleLinear {
  module: string
  parts: readonly Projection[]
}

const FUSED: readonly PaddleLinear[] = [
  { module: 'self_attn.qkv_proj', parts: ['q_proj', 'k_proj', 'v_proj'] },
  { module: 'mlp.up_gate_proj', parts: ['gate_proj', 'up_proj'] },
]

/** Every linear tensor of a Paddle layer: the fused ones, then each projection stored alone (o_proj, down_proj). */
export const PADDLE_LINEARS: readonly PaddleLinear[] = Object.freeze([
  ...FUSED,
  ...PROJECTION_SPECS.filter((p) => !FUSED.some((f) => f.parts.includes(p.name))).map((p) => ({ module: modulePath(p.name), parts: [p.name] })),
])

/** ERNIEKit's class name for the model, as the Paddle repos' config.json give it (transformers' is Ernie4_5ForCausalLM). */
export const PADDLE_ARCHITECTURE = 'Ernie4_5_ForCausalLM'

/** Refuses a model the Paddle layout cannot hold (ErnieError ERR_UNSUPPORTED_MODEL). */
export function checkPaddleModel(cfg: ResolvedConfig, what: string): void {
  if (cfg.model_type !== 'ernie4_5')
    throw new ErnieError('ERR_UNSUPPORTED_MODEL', `${what}: the ERNIEKit / Paddle layout is ERNIE-4.5's; a ${cfg.model_type} model has none (use layout 'hf')`)
}

export interface LayoutTensor {
  shape: number[]
  data: WeightArray
}

/** The weights under their Paddle names and shapes, as held (BF16; F32 where any part is F32). */
export function paddleTensors(cfg: ResolvedConfig, v: ModelViews): Map<string, LayoutTensor> {
  checkPaddleModel(cfg, 'paddle layout')
  const P = LAYOUT_PREFIX.paddle
  const out = new Map<string, LayoutTensor>()
  out.set(`${P}embed_tokens.weight`, { shape: [v.embed.rows, v.embed.cols], data: materialize(v.embed) })
  v.layers.forEach((layer, l) => {
    const L = `${P}layers.${l}.`
    for (const key of ['inputNorm', 'postAttentionNorm', 'qNorm', 'kNorm'] as const) {
      const w = layer[key]
      if (w) out.set(`${L}${LAYER_TENSOR[key]}`, { shape: [w.length], data: w })
    }
    for (const { module, parts } of PADDLE_LINEARS) out.set(`${L}${module}.weight`, sideBySideTransposed(parts.map((p) => layer[projectionSpec(p).key])))
  })
  out.set(`${P}norm.weight`, { shape: [v.finalNorm.length], data: v.finalNorm })
  if (!cfg.tie_word_embeddings) out.set('lm_head.weight', sideBySideTransposed([v.lmHead]))
  return out
}

/** [out_i, in] operands as one [in, sum out_i] tensor, each transposed into its own columns. */
function sideBySideTransposed(views: MatrixView[]): LayoutTensor {
  const inp = views[0].cols
  const total = views.reduce((n, m) => n + m.rows, 0)
  const f32 = views.some((m) => m.data instanceof Float32Array)
  const data = f32 ? new Float32Array(inp * total) : new Uint16Array(inp * total)
  let first = 0
  for (const m of views) {
    const rows = materialize(m)
    // a bf16 part beside an f32 one (a partial LoRA merge kept in f32) is widened, exactly
    const src = f32 && rows instanceof Uint16Array ? bf16ToF32(rows) : rows
    for (let r = 0; r < m.rows; r++) for (let c = 0; c < inp; c++) data[c * total + first + r] = src[r * inp + c]
    first += m.rows
  }
  return { shape: [inp, total], data }
}
