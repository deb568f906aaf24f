// Maps a checkpoint's tensors onto the engine's weight slots, without copying: each linear
// weight becomes a view (offset, leading dimension, transposed or not) into its tensor.
//   HF layout (`model.` prefix, or none in a bare *Model): linear weights [out, in], separate
//     q/k/v and gate/up.
//   Paddle / ERNIEKit layout (`ernie.` prefix): linear weights [in, out], fused
//     qkv_proj [hidden, (H + 2 KV) * D] (q | k | v) and up_gate_proj [hidden, 2 I] (gate | up)
//     (paddle-layout.ts PADDLE_LINEARS).
// The layout is detected from the tensor names (layout.ts CHECKPOINT_LAYOUTS), not from config.json.
import { ErnieError } from '../errors'
import type { ResolvedConfig } from './config'
import { CHECKPOINT_LAYOUTS, LAYER_TENSOR, type CheckpointLayout, type WeightLayout } from './layout'
import { PADDLE_LINEARS } from './paddle-layout'
import { PROJECTION_SPECS, modulePath, projectionShape, projectionSpec, type ProjectionKey } from './projections'

export type WeightArray = Float32Array | Uint16Array

/** What the loader needs from a checkpoint: names, shapes and zero-copy views. */
export interface TensorSource {
  /** Where the tensors come from, for error messages. */
  readonly description: string
  names(): string[]
  has(name: string): boolean
  shape(name: string): number[]
  /** F32 as Float32Array; BF16 as Uint16Array of bf16 bits. Other dtypes are converted by the source. */
  view(name: string): WeightArray
}

/** A logical [rows, cols] = [out, in] operand inside `data`. */
export interface MatrixView {
  data: WeightArray
  offset: number
  rows: number
  cols: number
  ld: number
  transposed: boolean
}

export interface LayerViews {
  q: MatrixView
  k: MatrixView
  v: MatrixView
  o: MatrixView
  gate: MatrixView
  up: MatrixView
  down: MatrixView
  inputNorm: WeightArray
  postAttentionNorm: WeightArray
  qNorm?: WeightArray
  kNorm?: WeightArray
}

export interface ModelViews {
  layout: WeightLayout
  embed: MatrixView
  lmHead: MatrixView
  finalNorm: WeightArray
  layers: LayerViews[]
  /** The tensors the views come from (every other tensor of the source is unused). */
  tensorNames: ReadonlySet<string>
}

export { PROJECTIONS, type Projection } from './projections'

export function detectLayout(src: TensorSource): CheckpointLayout {
  const found = CHECKPOINT_LAYOUTS.find((l) => src.has(`${l.prefix}embed_tokens.weight`))
  if (found) return found
  throw new ErnieError(
    'ERR_CHECKPOINT',
    `${src.description}: no embedding tensor (expected ${CHECKPOINT_LAYOUTS.map((l) => `"${l.prefix}embed_tokens.weight" (${l.what})`).join(', ')})`,
  )
}

function readTensor(src: TensorSource, name: string, expected: number[], used: Set<string>): WeightArray {
  used.add(name)
  if (!src.has(name)) throw new ErnieError('ERR_CHECKPOINT', `${src.description}: missing tensor "${name}"`)
  const shape = src.shape(name)
  if (shape.length !== expected.length || shape.some((d, i) => d !== expected[i]))
    throw new ErnieError(
      'ERR_CHECKPOINT',
      `${src.description}: tensor "${name}" has shape [${shape.join(', ')}], but config.json implies [${expected.join(', ')}]`,
    )
  return src.view(name)
}

/** [out, in] stored as is. */
function plain(data: WeightArray, out: number, inp: number): MatrixView {
  return { data, offset: 0, rows: out, cols: inp, ld: inp, transposed: false }
}

/** Columns [first, first + out) of an [in, total] tensor, as the logical [out, in] operand. */
function columns(data: WeightArray, inp: number, total: number, first: number, out: number): MatrixView {
  return { data, offset: first, rows: out, cols: inp, ld: total, transposed: true }
}

export function mapWeights(cfg: ResolvedConfig, src: TensorSource): ModelViews {
  const { layout, prefix: p } = detectLayout(src)
  const H = cfg.hidden_size, V = cfg.vocab_size
  const used = new Set<string>()
  const tensor = (name: string, expected: number[]) => readTensor(src, name, expected, used)

  const embed = plain(tensor(`${p}embed_tokens.weight`, [V, H]), V, H)
  let lmHead = embed
  if (src.has('lm_head.weight')) {
    lmHead =
      layout === 'hf'
        ? plain(tensor('lm_head.weight', [V, H]), V, H)
        : columns(tensor('lm_head.weight', [H, V]), H, V, 0, V)
  } else if (!cfg.tie_word_embeddings) {
    throw new ErnieError(
      'ERR_CHECKPOINT',
      `${src.description}: missing tensor "lm_head.weight" (tie_word_embeddings is false)` +
        (p === '' ? "; a bare *Model checkpoint carries no LM head, and the engine needs one (lm_head.weight, or the embedding when tied)" : ''),
    )
  }
  const finalNorm = tensor(`${p}norm.weight`, [H])

  const layers: LayerViews[] = []
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const L = `${p}layers.${l}.`
    const norms = {
      inputNorm: tensor(`${L}${LAYER_TENSOR.inputNorm}`, [H]),
      postAttentionNorm: tensor(`${L}${LAYER_TENSOR.postAttentionNorm}`, [H]),
      ...(cfg.arch.qkNorm
        ? {
            qNorm: tensor(`${L}${LAYER_TENSOR.qNorm}`, [cfg.head_dim]),
            kNorm: tensor(`${L}${LAYER_TENSOR.kNorm}`, [cfg.head_dim]),
          }
        : {}),
    }
    if (layout === 'hf') {
      const projections = {} as Record<ProjectionKey, MatrixView>
      for (const spec of PROJECTION_SPECS) {
        const [out, inp] = projectionShape(cfg, spec.name)
        projections[spec.key] = plain(tensor(`${L}${modulePath(spec.name)}.weight`, [out, inp]), out, inp)
      }
      layers.push({ ...projections, ...norms })
    } else {
      // [in, out] tensors, the fused ones holding their projections side by side
      const projections = {} as Record<ProjectionKey, MatrixView>
      for (const { module, parts } of PADDLE_LINEARS) {
        const shapes = parts.map((p) => projectionShape(cfg, p))
        const inp = shapes[0][1]
        const total = shapes.reduce((n, [out]) => n + out, 0)
        const data = tensor(`${L}${module}.weight`, [inp, total])
        let first = 0
        parts.forEach((proj, i) => {
          projections[projectionSpec(proj).key] = columns(data, inp, total, first, shapes[i][0])
          first += shapes[i][0]
        })
      }
      layers.push({ ...projections, ...norms })
    }
  }
  return { layout, embed, lmHead, finalNorm, layers, tensorNames: used }
}

// Buffers some checkpoints carry that the engine derives itself (HF saved RoPE's inverse
// frequencies in older files): present, explained, not read.
const DERIVED_TENSOR = /(^|\.)rotary_emb\.inv_freq$/

/** transformers' name for the classification head of its decoder *ForSequenceClassification classes (a Linear). */
export const CLASSIFICATION_HEAD = 'score'

/** Whether `name` is the classification head of a checkpoint whose config names a *ForSequenceClassification class. */
export function isClassificationHead(cfg: ResolvedConfig, name: string): boolean {
  return (cfg.architectures ?? []).some((a) => a.endsWith('ForSequenceClassification')) && (name === `${CLASSIFICATION_HEAD}.weight` || name === `${CLASSIFICATION_HEAD}.bias`)
}

/** The tensors of `src` that no part of the model uses (nor derives): a truncated config, a second layout, a head. */
export function unusedTensors(src: TensorSource, views: ModelViews): string[] {
  return src.names().filter((n) => !views.tensorNames.has(n) && !DERIVED_TENSOR.test(n))
}
