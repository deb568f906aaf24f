// Causal-LM fine-tuning on token sequences: the TrainTask behind SFT and pretraining-style
// recipes. Examples are token ids with optional labels (-100 where no loss is wanted, e.g. the
// prompt of an SFT pair); batches are right-padded with attention masks and -100 labels. What
// trains: a LoRA adapter's tensors, the model's own weights (full fine-tuning), or both.
import { ErnieError, rangeError, typeError } from '../errors'
import { checkpointShapes, type ErnieModel, type FullTrainingOptions } from '../model/model'
import type { LoraAdapter } from '../model/lora'
import type { TrainTask } from './trainer'

export interface LmExample {
  inputIds: ArrayLike<number>
  /** Unshifted, as in transformers (position t predicts labels[t + 1]); -100 is ignored. Default: inputIds. */
  labels?: ArrayLike<number>
}

export interface LmBatch {
  /** [B * T] row-major, right-padded. */
  inputIds: Int32Array
  attentionMask: Int32Array
  labels: Int32Array
  shape: [number, number]
  /** Real (unpadded) tokens. */
  tokens: number
  /** Positions whose next-token loss counts. */
  lossItems: number
}

export interface LmTaskOptions {
  train: readonly LmExample[]
  eval?: readonly LmExample[]
  /** Train this adapter's tensors (PEFT names). */
  adapter?: LoraAdapter
  /**
   * Train the base weights (HF names): true, or enableFullTraining's options. The model's
   * full training is enabled here when it is not yet.
   */
  fullTraining?: boolean | FullTrainingOptions
  /** Longer examples are cut to this many tokens. */
  maxLength?: number
  /** Default: the config's pad_token_id, else 0. */
  padTokenId?: number
  /** Recompute each layer's activations in the backward (gradient checkpointing: less memory, more time). */
  recompute?: boolean
  /** Examples per evaluation batch (default 8). */
  evalBatchSize?: number
}

/** Pads examples to the longest (at most maxLength) into one batch. */
export function collateLm(examples: readonly LmExample[], padTokenId: number, maxLength = Infinity): LmBatch {
  if (examples.length === 0) throw rangeError('collate: no examples')
  const T = Math.min(maxLength, Math.max(...examples.map((e) => e.inputIds.length)))
  const B = examples.length
  const inputIds = new Int32Array(B * T).fill(padTokenId)
  const attentionMask = new Int32Array(B * T)
  const labels = new Int32Array(B * T).fill(-100)
  let tokens = 0
  let lossItems = 0
  examples.forEach((e, b) => {
    const n = Math.min(T, e.inputIds.length)
    const lab = e.labels ?? e.inputIds
    for (let t = 0; t < n; t++) {
      inputIds[b * T + t] = e.inputIds[t]
      attentionMask[b * T + t] = 1
      labels[b * T + t] = lab[t]
      if (t > 0 && lab[t] !== -100) lossItems++
    }
    tokens += n
  })
  return { inputIds, attentionMask, labels, shape: [B, T], tokens, lossItems }
}

export class LmTask implements TrainTask<LmExample, LmBatch> {
  readonly model: ErnieModel
  readonly adapter: LoraAdapter | undefined
  readonly trainBase: boolean
  private readonly o: LmTaskOptions
  private readonly pad: number
  private readonly trainable: Map<string, Float32Array>
  private readonly shapes: Map<string, number[]>

  constructor(model: ErnieModel, options: LmTaskOptions) {
    if (!options || !Array.isArray(options.train)) throw typeError('LmTask: options.train must be an array of { inputIds, labels? }')
    if (!options.adapter && !options.fullTraining) throw rangeError('LmTask: nothing to train: give an adapter, fullTraining, or both')
    const vocab = model.config.vocab_size
    const check = (set: readonly LmExample[], what: string) =>
      set.forEach((e, i) => {
        if (!e || typeof e.inputIds?.length !== 'number' || e.inputIds.length === 0) throw typeError(`LmTask: ${what}[${i}].inputIds must be a non-empty array of token ids`)
        for (let t = 0; t < e.inputIds.length; t++) {
          const v = e.inputIds[t]
          if (!Number.isInteger(v) || v < 0 || v >= vocab) throw rangeError(`LmTask: ${what}[${i}].inputIds[${t}] = ${v} is outside the vocabulary [0, ${vocab})`)
        }
        if (e.labels !== undefined) {
          if (e.labels.length !== e.inputIds.length) throw rangeError(`LmTask: ${what}[${i}].labels has ${e.labels.length} entries, inputIds ${e.inputIds.length}`)
          for (let t = 0; t < e.labels.length; t++) {
            const v = e.labels[t]
            if (v !== -100 && !(Number.isInteger(v) && v >= 0 && v < vocab)) throw rangeError(`LmTask: ${what}[${i}].labels[${t}] = ${v} is neither -100 nor a token id`)
          }
        }
      })
    check(options.train, 'train')
    if (options.eval) check(options.eval, 'eval')
    if (options.maxLength !== undefined && !(Number.isInteger(options.maxLength) && options.maxLength >= 2)) throw rangeError('LmTask: maxLength must be an integer >= 2')
    this.model = model
    this.adapter = options.adapter
    this.o = options
    this.pad = options.padTokenId ?? (typeof model.config.pad_token_id === 'number' ? model.config.pad_token_id : 0)
    this.trainBase = !!options.fullTraining
    if (this.trainBase && model.trainableWeights.size === 0) model.enableFullTraining(typeof options.fullTraining === 'object' ? options.fullTraining : {})
    this.trainable = new Map()
    this.shapes = new Map()
    if (this.adapter) for (const [name, t] of this.adapter.tensors) this.trainable.set(name, t), this.shapes.set(name, this.adapter.shapeOf(name))
    if (this.trainBase) {
      const shapes = checkpointShapes(model.config)
      for (const [name, t] of model.trainableWeights) this.trainable.set(name, t), this.shapes.set(name, shapes.get(name)!)
    }
    if (this.trainable.size === 0) throw new ErnieError('ERR_STATE', 'LmTask: every weight is frozen and there is no adapter')
  }

  examples(): readonly LmExample[] {
    return this.o.train
  }
  params(): ReadonlyMap<string, Float32Array> {
    return this.trainable
  }
  computeCopies(): ReadonlyMap<string, Uint16Array> {
    return this.trainBase ? this.model.computeWeights : new Map()
  }
  paramShape(name: string): readonly number[] {
    return this.shapes.get(name) ?? [this.trainable.get(name)!.length]
  }
  length(e: LmExample): number {
    return Math.min(e.inputIds.length, this.o.maxLength ?? Infinity)
  }
  collate(examples: LmExample[]): LmBatch {
    return collateLm(examples, this.pad, this.o.maxLength)
  }
  lossItems(b: LmBatch): number {
    return b.lossItems
  }
  tokens(b: LmBatch): number {
    return b.tokens
  }

  async lossAndGrad(b: LmBatch, grads: Map<string, Float32Array>): Promise<{ loss: number; count: number }> {
    const { loss, count } = await this.model.lossAndGrad(
      { inputIds: { data: b.inputIds, shape: b.shape }, attentionMask: { data: b.attentionMask, shape: b.shape }, labels: { data: b.labels, shape: b.shape } },
      { adapter: this.adapter, trainBase: this.trainBase, recompute: this.o.recompute, grads },
    )
    return { loss, count }
  }

  /** Mean next-token loss over the eval set (token-weighted) and its perplexity. */
  async evaluate(): Promise<Record<string, number>> {
    const data = this.o.eval
    if (!data || data.length === 0) throw rangeError('LmTask.evaluate: no eval examples were given')
    const size = this.o.evalBatchSize ?? 8
    let sum = 0
    let count = 0
    for (let i = 0; i < data.length; i += size) {
      const b = this.collate(data.slice(i, i + size))
      if (b.lossItems === 0) continue
      const r = await this.model.loss(
        { inputIds: { data: b.inputIds, shape: b.shape }, attentionMask: { data: b.attentionMask, shape: b.shape }, labels: { data: b.labels, shape: b.shape } },
        { adapter: this.adapter },
      )
      sum += r.loss * r.count
      count += r.count
    }
    const loss = count > 0 ? sum / count : NaN
    return { loss, perplexity: Math.exp(loss) }
  }

  /** A LoRA run's checkpoint is also a PEFT adapter directory. */
  async saveCheckpoint(dir: string): Promise<void> {
    if (this.adapter) await this.adapter.writeFiles(dir)
  }
}
