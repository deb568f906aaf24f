// The classifier's training tasks, each run by the shared Trainer:
//   FeatureHeadTask: the head method, on features computed once (the base never runs here);
//   ClassifyTask: lora / full, the engine's classify objective (forward, pooled linear head,
//     weighted cross-entropy and the backward through the model in one native call);
//   GenerativeTask: the causal-LM task on prompt + answer sequences, evaluated as a classifier.
import { checkpointShapes } from '../model/layout'
import type { ErnieModel } from '../model/model'
import type { LoraAdapter } from '../model/lora'
import { LmTask, type LmTaskOptions } from '../train/lm'
import type { StepContext, TrainTask } from '../train/trainer'
import { padRows } from '../model/batches'
import type { Pooling } from './encode'
import { HEAD_BIAS, HEAD_WEIGHT, type Head } from './head'

export type Evaluator = () => Promise<Record<string, number>>

/** Training accuracy seen since it was last taken (the examples of the last step, say). */
class AccuracyMeter {
  private correct = 0
  private total = 0
  add(correct: number, total: number): void {
    this.correct += correct
    this.total += total
  }
  take(): number | undefined {
    const a = this.total > 0 ? this.correct / this.total : undefined
    this.correct = 0
    this.total = 0
    return a
  }
}

function weightSum(labels: ArrayLike<number>, classWeights: Float32Array | undefined): number {
  let s = 0
  for (let i = 0; i < labels.length; i++) s += classWeights ? classWeights[labels[i]] : 1
  return s
}

export class FeatureHeadTask implements TrainTask<number, number[]> {
  readonly accuracy = new AccuracyMeter()
  private readonly indices: number[]

  constructor(
    readonly head: Head,
    /** [N * hidden], raw pooled features. */
    readonly features: Float32Array,
    readonly labels: Int32Array,
    readonly classWeights: Float32Array | undefined,
    readonly evaluator?: Evaluator,
  ) {
    this.indices = Array.from(labels, (_, i) => i)
    if (evaluator) this.evaluate = evaluator
  }

  evaluate?: Evaluator

  examples(): readonly number[] {
    return this.indices
  }
  params(): ReadonlyMap<string, Float32Array> {
    return this.head.params
  }
  paramShape(name: string): readonly number[] {
    return this.head.shapeOf(name)
  }
  collate(examples: number[]): number[] {
    return examples
  }
  lossItems(batch: number[]): number {
    return weightSum(
      batch.map((i) => this.labels[i]),
      this.classWeights,
    )
  }
  async lossAndGrad(batch: number[], grads: Map<string, Float32Array>): Promise<{ loss: number }> {
    const H = this.head.inputSize
    const x = new Float32Array(batch.length * H)
    batch.forEach((i, b) => x.set(this.features.subarray(i * H, (i + 1) * H), b * H))
    const labels = Int32Array.from(batch, (i) => this.labels[i])
    const r = await this.head.lossAndGrad(x, batch.length, labels, this.classWeights, grads)
    this.accuracy.add(r.correct, batch.length)
    return { loss: r.loss }
  }
}

export interface TokenExample {
  ids: Int32Array
  label: number
}

export interface ClassifyBatch {
  inputIds: Int32Array
  attentionMask: Int32Array
  shape: [number, number]
  labels: Int32Array
  tokens: number
}

export interface ClassifyTaskOptions {
  train: TokenExample[]
  adapter?: LoraAdapter
  /** Train the base weights too (full fine-tuning; the model's full training is enabled here). */
  trainBase: boolean
  pooling: Pooling
  classWeights?: Float32Array
  padTokenId: number
  recompute?: boolean
  evaluator?: Evaluator
}

export class ClassifyTask implements TrainTask<TokenExample, ClassifyBatch> {
  readonly accuracy = new AccuracyMeter()
  private readonly trainable = new Map<string, Float32Array>()
  private readonly shapes = new Map<string, readonly number[]>()

  constructor(
    readonly model: ErnieModel,
    readonly head: Head,
    readonly o: ClassifyTaskOptions,
  ) {
    if (head.spec.kind !== 'linear') throw new RangeError('lora and full train a linear head (an MLP head is for the head method)')
    for (const [name, t] of head.params) this.trainable.set(name, t), this.shapes.set(name, head.shapeOf(name))
    if (o.adapter) for (const [name, t] of o.adapter.tensors) this.trainable.set(name, t), this.shapes.set(name, o.adapter.shapeOf(name))
    if (o.trainBase) {
      if (model.trainableWeights.size === 0) model.enableFullTraining()
      const shapes = checkpointShapes(model.config)
      for (const [name, t] of model.trainableWeights) this.trainable.set(name, t), this.shapes.set(name, shapes.get(name)!)
    }
    if (o.evaluator) this.evaluate = o.evaluator
  }

  evaluate?: Evaluator

  examples(): readonly TokenExample[] {
    return this.o.train
  }
  params(): ReadonlyMap<string, Float32Array> {
    return this.trainable
  }
  computeCopies(): ReadonlyMap<string, Uint16Array> {
    return this.o.trainBase ? this.model.computeWeights : new Map()
  }
  paramShape(name: string): readonly number[] {
    return this.shapes.get(name) ?? [this.trainable.get(name)!.length]
  }
  length(e: TokenExample): number {
    return e.ids.length
  }
  collate(examples: TokenExample[]): ClassifyBatch {
    const p = padRows(
      examples.map((e) => e.ids),
      this.o.padTokenId,
    )
    return { ...p, labels: Int32Array.from(examples, (e) => e.label) }
  }
  lossItems(b: ClassifyBatch): number {
    return weightSum(b.labels, this.o.classWeights)
  }
  tokens(b: ClassifyBatch): number {
    return b.tokens
  }

  async lossAndGrad(b: ClassifyBatch, grads: Map<string, Float32Array>, context: StepContext = {}): Promise<{ loss: number; count: number }> {
    const C = this.head.classes
    const B = b.shape[0]
    const logits = new Float32Array(B * C)
    const r = await this.model.lossAndGrad(
      { inputIds: { data: b.inputIds, shape: b.shape }, attentionMask: { data: b.attentionMask, shape: b.shape } },
      {
        adapter: this.o.adapter,
        trainBase: this.o.trainBase,
        recompute: this.o.recompute,
        grads,
        precision: context.precision,
        objective: {
          kind: 'classify',
          weight: this.head.params.get(HEAD_WEIGHT)!,
          bias: this.head.params.get(HEAD_BIAS)!,
          classes: C,
          labels: b.labels,
          pooling: this.o.pooling,
          classWeights: this.o.classWeights,
          dWeight: grads.get(HEAD_WEIGHT),
          dBias: grads.get(HEAD_BIAS),
          logits,
        },
      },
    )
    let correct = 0
    for (let i = 0; i < B; i++) {
      let best = 0
      for (let c = 1; c < C; c++) if (logits[i * C + c] > logits[i * C + best]) best = c
      if (best === b.labels[i]) correct++
    }
    this.accuracy.add(correct, B)
    return { loss: r.loss, count: r.count }
  }

  async saveCheckpoint(dir: string): Promise<void> {
    if (this.o.adapter) await this.o.adapter.writeFiles(dir)
  }
}

/** Causal-LM training on prompt + answer; evaluated by scoring the answers (the classifier's metrics). */
export class GenerativeTask extends LmTask {
  private readonly evaluator: Evaluator | undefined

  constructor(model: ErnieModel, options: LmTaskOptions, evaluator?: Evaluator) {
    super(model, options)
    this.evaluator = evaluator
  }

  override async evaluate(context: StepContext = {}): Promise<Record<string, number>> {
    return this.evaluator ? this.evaluator() : super.evaluate(context)
  }
}
