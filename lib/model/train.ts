// Training the model: the loss and its gradients in one native call (forward, loss, backward),
// the loss alone, the gradient buffers the engine fills, and the trainable weights of full
// fine-tuning (fp32 masters and their bf16 compute copies).
import { rangeError, typeError } from '../errors'
import type { NativeGrads, NativeLoraGrads } from '../addon-types'
import type { Precision } from '../precision'
import type { ResolvedConfig } from './config'
import type { ModelContext } from './context'
import { bf16ToF32, f32ToBf16 } from './dtype'
import { flatten, toFlatBatch, type ForwardInput, type TokenBatch } from './forward'
import { checkpointShapes, hfTensor, LAYER_TENSOR } from './layout'
import { peftName, type LoraAdapter } from './lora'
import { tokenRowGrads } from './trainable-tokens'
import { PROJECTIONS, type MatrixView, type ModelViews, type WeightArray } from './weights'

/**
 * What lossAndGrad minimises, on the final hidden states: 'lm' (next-token cross-entropy through
 * the LM head), 'classify' (a linear head on one pooled state per sequence; its gradients are
 * added to dWeight / dBias), 'weightedRows' (per-sequence weighted next-token losses), or
 * 'meanSquare' (mean of the squared states: a benchmark stand-in).
 *
 * 'weightedRows': loss = sum over rows b of rowWeights[b] * nll_b, nll_b = -log p(row b's
 * targets) summed over its tokens; `targets` [B * T] as forward's `targets` (position t predicts
 * targets[t]; negative: not scored). A loss that is a function of sequence log-probabilities
 * (DPO's) has the gradient sum_b (dL/dlogp_b) grad logp_b: this objective's with rowWeights =
 * -dL/dlogp. `rowLogProbs` [B], when given, receives each row's log-probability as the step's
 * own forward computed it. The returned loss is the weighted sum, `count` the scored tokens.
 */
export type Objective =
  | { kind: 'lm'; labels?: Int32Array }
  | { kind: 'meanSquare' }
  | { kind: 'weightedRows'; targets: Int32Array; rowWeights: Float64Array; rowLogProbs?: Float64Array }
  | {
      kind: 'classify'
      weight: Float32Array
      bias?: Float32Array
      classes: number
      labels: Int32Array
      pooling?: 'last' | 'mean' | 'first'
      classWeights?: Float32Array
      dWeight?: Float32Array
      dBias?: Float32Array
      logits?: Float32Array
    }

export interface FullTrainingOptions {
  /** HF names matching any of these stay frozen (no master copy, no gradient), e.g. /embed_tokens/. */
  freeze?: RegExp[]
  /** The engine computes with bf16 copies of the masters (default) or with the f32 masters themselves. */
  compute?: 'bf16' | 'f32'
}

/** The options of ErnieModel.lossAndGrad. */
export interface LossAndGradOptions {
  adapter?: LoraAdapter
  trainBase?: boolean
  recompute?: boolean
  grads?: Map<string, Float32Array>
  /** The loss on the final hidden states: next-token cross-entropy (default), or another head's. */
  objective?: Objective
  /**
   * Seeds the adapter's dropout masks. Default: a hash of the batch's token ids, so a step
   * repeats exactly (resume, recompute) without state.
   */
  dropoutSeed?: number
  /** Of the step's matrix products, forward and backward; default the model's `precision`. */
  precision?: Precision
  /**
   * The step's forward and loss only, as the step itself computes them (the adapter's dropout
   * masks for this dropoutSeed included), no backward and no gradients: for a loss whose row
   * weights need this forward's results first (DPO's, from the sequences' log-probabilities).
   */
  forwardOnly?: boolean
}

/** ErnieModel.lossAndGrad; `masters`: the trainable weights of full training, when enabled. */
export async function runLossAndGrad(
  model: ModelContext,
  input: ForwardInput & { labels?: TokenBatch },
  options: LossAndGradOptions,
  masters: Map<string, Float32Array> | undefined,
): Promise<{ loss: number; count: number; grads: Map<string, Float32Array> }> {
  const handle = model.native()
  const precision = model.callPrecision(options.precision, 'lossAndGrad: precision')
  const b = toFlatBatch(input, model.config.max_position_embeddings)
  const labels = input.labels ? flatten(input.labels, 'labels', [b.batch, b.seq]).data : undefined
  const grads = options.grads ?? new Map<string, Float32Array>()
  const forwardOnly = options.forwardOnly === true
  const spec = forwardOnly ? {} : gradientSpec(model.config, grads, options.trainBase === true, options.adapter, masters && ((name) => masters.has(name)))
  const r = await model.track(
    handle.trainStep({
      ...b,
      adapter: options.adapter?.handle,
      recompute: options.recompute === true,
      dropoutSeed: options.dropoutSeed ?? hashIds(b.inputIds),
      loss: options.objective ?? { kind: 'lm', labels },
      grads: spec,
      precision,
      forwardOnly,
    }),
  )
  return { loss: r.loss, count: r.count, grads }
}

/** ErnieModel.loss. */
export async function runLoss(
  model: ModelContext,
  input: ForwardInput & { labels?: TokenBatch },
  options: { adapter?: LoraAdapter; precision?: Precision } = {},
): Promise<{ loss: number; count: number }> {
  const handle = model.native()
  const precision = model.callPrecision(options.precision, 'loss: precision')
  const b = toFlatBatch(input, model.config.max_position_embeddings)
  const labels = input.labels ? flatten(input.labels, 'labels', [b.batch, b.seq]).data : undefined
  const r = await model.track(handle.trainStep({ ...b, adapter: options.adapter?.handle, loss: { kind: 'lm', labels }, grads: {}, precision }))
  return { loss: r.loss, count: r.count }
}

/**
 * ErnieModel.enableFullTraining's new weight views: each weight not frozen replaced by a fresh
 * fp32 master (and, with bf16 compute, its bf16 copy), frozen ones kept as they are.
 */
export function fullTrainingViews(
  config: ResolvedConfig,
  old: ModelViews,
  options: FullTrainingOptions,
): { views: ModelViews; masters: Map<string, Float32Array>; copies: Map<string, Uint16Array> } {
  const freeze = options.freeze ?? []
  if (!Array.isArray(freeze) || !freeze.every((r) => r instanceof RegExp)) throw typeError('enableFullTraining: freeze must be an array of RegExp')
  const compute = options.compute ?? 'bf16'
  if (compute !== 'bf16' && compute !== 'f32') throw rangeError(`enableFullTraining: compute must be 'bf16' or 'f32', got ${JSON.stringify(compute)}`)

  const shapes = checkpointShapes(config)
  const masters = new Map<string, Float32Array>()
  const copies = new Map<string, Uint16Array>()
  // The array the engine reads for a weight: a fresh master (and bf16 copy), or the old one when frozen.
  const take = (name: string): WeightArray | undefined => {
    if (freeze.some((r) => r.test(name))) return undefined
    const src = hfTensor(old, name, shapes.get(name)!)
    const master = src instanceof Float32Array ? Float32Array.from(src) : bf16ToF32(src)
    masters.set(name, master)
    if (compute === 'f32') return master
    const copy = f32ToBf16(master)
    copies.set(name, copy)
    return copy
  }
  const matrix = (name: string, current: MatrixView): MatrixView => {
    const data = take(name)
    return data ? { data, offset: 0, rows: current.rows, cols: current.cols, ld: current.cols, transposed: false } : current
  }
  const vector = (name: string, current: WeightArray): WeightArray => take(name) ?? current
  const embed = matrix('model.embed_tokens.weight', old.embed)
  const views: ModelViews = {
    layout: old.layout,
    tensorNames: old.tensorNames,
    embed,
    lmHead: shapes.has('lm_head.weight') ? matrix('lm_head.weight', old.lmHead) : embed,
    finalNorm: vector('model.norm.weight', old.finalNorm),
    layers: old.layers.map((l, i) => {
      const n = (suffix: string) => `model.layers.${i}.${suffix}`
      const out = { ...l }
      for (const [key, suffix] of Object.entries(LAYER_TENSOR)) {
        const w = l[key as keyof typeof l]
        if (!w) continue
        ;(out as Record<string, unknown>)[key] =
          w instanceof Float32Array || w instanceof Uint16Array ? vector(n(suffix), w) : matrix(n(suffix), w)
      }
      return out
    }),
  }
  return { views, masters, copies }
}

/**
 * The `grads` option of the native trainStep: f32 buffers taken from (or added to) `grads`
 * under HF names for base weights and PEFT names for the adapter (its trainable token rows included).
 */
export function gradientSpec(
  cfg: ResolvedConfig,
  grads: Map<string, Float32Array>,
  trainBase: boolean,
  adapter?: LoraAdapter,
  include: (name: string) => boolean = () => true,
): NativeGrads {
  const buffer = (name: string, size: number) => {
    let g = grads.get(name)
    if (!g) grads.set(name, (g = new Float32Array(size)))
    else if (g.length !== size) throw rangeError(`grads: "${name}" has ${g.length} elements, expected ${size}`)
    return g
  }
  const spec: NativeGrads = {}
  if (trainBase) {
    const shapes = checkpointShapes(cfg)
    const size = (name: string) => shapes.get(name)!.reduce((a, b) => a * b, 1)
    const wanted = (name: string) => shapes.has(name) && include(name)
    if (wanted('model.embed_tokens.weight')) spec.embed = buffer('model.embed_tokens.weight', size('model.embed_tokens.weight'))
    if (wanted('lm_head.weight')) spec.lmHead = buffer('lm_head.weight', size('lm_head.weight'))
    if (wanted('model.norm.weight')) spec.finalNorm = buffer('model.norm.weight', cfg.hidden_size)
    // One entry per layer even when empty: an empty list would mean "base frozen" to the engine.
    const layers = []
    for (let l = 0; l < cfg.num_hidden_layers; l++) {
      const entry: Record<string, Float32Array> = {}
      for (const [key, suffix] of Object.entries(LAYER_TENSOR)) {
        const name = `model.layers.${l}.${suffix}`
        if (wanted(name)) entry[key] = buffer(name, size(name))
      }
      layers.push(entry)
    }
    spec.layers = layers
  }
  if (adapter) {
    const lora = []
    for (let l = 0; l < cfg.num_hidden_layers; l++) {
      const entry: NativeLoraGrads = {}
      for (const proj of PROJECTIONS) {
        const a = peftName(l, proj, 'A')
        if (!adapter.tensors.has(a)) continue
        const b = peftName(l, proj, 'B')
        entry[proj] = { a: buffer(a, adapter.tensors.get(a)!.length), b: buffer(b, adapter.tensors.get(b)!.length) }
      }
      lora.push(entry)
    }
    spec.lora = lora
    Object.assign(spec, tokenRowGrads(cfg, adapter.trainableTokens, buffer))
  }
  return spec
}

// FNV-1a over the token ids: a stateless default seed for a batch's dropout masks.
function hashIds(ids: Int32Array): number {
  let h = 0x811c9dc5
  for (let i = 0; i < ids.length; i++) h = Math.imul(h ^ ids[i], 0x01000193) >>> 0
  return h
}
