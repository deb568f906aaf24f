// Causal-LM fine-tuning on token sequences: the TrainTask behind SFT and pretraining-style
// recipes. Examples are token ids with optional labels (-100 where no loss is wanted, e.g. the
// prompt of an SFT pair); batches are right-padded with attention masks and -100 labels. What
// trains: a LoRA adapter's tensors, the model's own weights (full fine-tuning), or both.
import { rangeError, typeError } from '../errors'
import { maxOf } from '../util/extent'
import type { ErnieModel, FullTrainingOptions } from '../model/model'
import type { LoraAdapter } from '../model/lora'
import { TrainableSet } from './trainable'
import type { StepContext, TrainTask } from './trainer'

export interface LmExample {
  inputIds: ArrayLike<number>
  /** Unshifted, as in transformers (position t predicts labels[t + 1]); -100 is ignored. Default: inputIds. */
  labels?: ArrayLike<number>
  /** Packed documents (see packDocuments): tokens attend only within their run of equal ids. */
  segmentIds?: ArrayLike<number>
}

export interface LmBatch {
  /** [B * T] row-major, right-padded. */
  inputIds: Int32Array
  attentionMask: Int32Array
  labels: Int32Array
  /** When any example is packed; padding continues its row's last segment. */
  segmentIds?: Int32Array
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
  const T = Math.min(maxLength, maxOf(examples.map((e) => e.inputIds.length)))
  const B = examples.length
  const inputIds = new Int32Array(B * T).fill(padTokenId)
  const attentionMask = new Int32Array(B * T)
  const labels = new Int32Array(B * T).fill(-100)
  const segmentIds = examples.some((e) => e.segmentIds) ? new Int32Array(B * T) : undefined
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
    if (segmentIds && e.segmentIds) for (let t = 0; t < T; t++) segmentIds[b * T + t] = e.segmentIds[Math.min(t, n - 1)]
    tokens += n
  })
  return { inputIds, attentionMask, labels, segmentIds, shape: [B, T], tokens, lossItems }
}

/**
 * Packs documents (token ids, each followed by `eosTokenId`) into rows of `seqLength` tokens, as
 * pre-training does: no padding except in the last row, a document that does not fit continuing
 * in the next row. Each row's segmentIds number its documents, so that attention stays inside
 * each one; the first token of every document but a row's first is labelled -100, as nothing
 * before it in its row may predict it.
 */
export function packDocuments(docs: readonly ArrayLike<number>[], seqLength: number, eosTokenId: number): LmExample[] {
  const packer = new DocumentPacker(seqLength, eosTokenId)
  for (const doc of docs) packer.add(doc)
  return packer.finish()
}

/**
 * packDocuments one document at a time, so that a corpus is packed as it is tokenized (its
 * documents' ids are never all held at once).
 */
export class DocumentPacker {
  private readonly rows: LmExample[] = []
  private ids!: Int32Array
  private labels!: Int32Array
  private segments!: Int32Array
  private used = 0

  constructor(
    private readonly seqLength: number,
    private readonly eosTokenId: number,
  ) {
    if (!(Number.isInteger(seqLength) && seqLength >= 2)) throw rangeError('packDocuments: seqLength must be an integer >= 2')
    if (!Number.isInteger(eosTokenId) || eosTokenId < 0) throw rangeError('packDocuments: eosTokenId must be a token id')
    this.newRow()
  }

  add(doc: ArrayLike<number>): void {
    let segment = this.used > 0 ? this.segments[this.used - 1] + 1 : 0
    for (let i = 0; i <= doc.length; i++) {
      if (this.used === this.seqLength) {
        this.rows.push({ inputIds: this.ids, labels: this.labels, segmentIds: this.segments })
        this.newRow()
        segment = 0
      }
      const token = i < doc.length ? doc[i] : this.eosTokenId
      // A document's first token here is unpredictable (nothing of its document precedes it).
      this.labels[this.used] = i === 0 && this.used > 0 ? -100 : token
      this.ids[this.used] = token
      this.segments[this.used] = segment
      this.used++
    }
  }

  /** The rows (the last one as long as what it holds). */
  finish(): LmExample[] {
    if (this.used > 0) this.rows.push({ inputIds: this.ids.slice(0, this.used), labels: this.labels.slice(0, this.used), segmentIds: this.segments.slice(0, this.used) })
    this.used = 0
    return this.rows
  }

  private newRow(): void {
    this.ids = new Int32Array(this.seqLength)
    this.labels = new Int32Array(this.seqLength)
    this.segments = new Int32Array(this.seqLength)
    this.used = 0
  }
}

function lmInput(b: LmBatch) {
  const flat = (data: Int32Array) => ({ data, shape: b.shape })
  return {
    inputIds: flat(b.inputIds),
    attentionMask: flat(b.attentionMask),
    labels: flat(b.labels),
    ...(b.segmentIds ? { segmentIds: flat(b.segmentIds) } : {}),
  }
}

export class LmTask implements TrainTask<LmExample, LmBatch> {
  readonly model: ErnieModel
  readonly adapter: LoraAdapter | undefined
  readonly trainBase: boolean
  private readonly o: LmTaskOptions
  private readonly pad: number
  private readonly trainables: TrainableSet

  constructor(model: ErnieModel, options: LmTaskOptions) {
    if (!options || !Array.isArray(options.train)) throw typeError('LmTask: options.train must be an array of { inputIds, labels? }')
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
        if (e.segmentIds !== undefined && e.segmentIds.length !== e.inputIds.length)
          throw rangeError(`LmTask: ${what}[${i}].segmentIds has ${e.segmentIds.length} entries, inputIds ${e.inputIds.length}`)
      })
    check(options.train, 'train')
    if (options.eval) check(options.eval, 'eval')
    if (options.maxLength !== undefined && !(Number.isInteger(options.maxLength) && options.maxLength >= 2)) throw rangeError('LmTask: maxLength must be an integer >= 2')
    this.model = model
    this.adapter = options.adapter
    this.o = options
    this.pad = options.padTokenId ?? (typeof model.config.pad_token_id === 'number' ? model.config.pad_token_id : 0)
    this.trainables = new TrainableSet(model, options.adapter, options.fullTraining, 'LmTask')
    this.trainBase = this.trainables.trainBase
  }

  examples(): readonly LmExample[] {
    return this.o.train
  }
  params(): ReadonlyMap<string, Float32Array> {
    return this.trainables.params
  }
  computeCopies(): ReadonlyMap<string, Uint16Array> {
    return this.trainables.computeCopies()
  }
  paramShape(name: string): readonly number[] {
    return this.trainables.paramShape(name)
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

  async lossAndGrad(b: LmBatch, grads: Map<string, Float32Array>, context: StepContext = {}): Promise<{ loss: number; count: number }> {
    const { loss, count } = await this.model.lossAndGrad(lmInput(b), {
      adapter: this.adapter,
      trainBase: this.trainBase,
      recompute: this.o.recompute,
      grads,
      precision: context.precision,
    })
    return { loss, count }
  }

  /** Mean next-token loss over the eval set (token-weighted) and its perplexity. */
  async evaluate(context: StepContext = {}): Promise<Record<string, number>> {
    const data = this.o.eval
    if (!data || data.length === 0) throw rangeError('LmTask.evaluate: no eval examples were given')
    const size = this.o.evalBatchSize ?? 8
    let sum = 0
    let count = 0
    for (let i = 0; i < data.length; i += size) {
      const b = this.collate(data.slice(i, i + size))
      if (b.lossItems === 0) continue
      const r = await this.model.loss(lmInput(b), { adapter: this.adapter, precision: context.precision })
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
