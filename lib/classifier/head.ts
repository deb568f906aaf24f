// The classification head: a linear layer, or a small MLP (dense + tanh + linear, as BERT-style
// classification heads are), over one pooled hidden state per text. Its parameters are named
// f32 arrays the Trainer updates in place.
// The linear head is the engine's (native/engine/head.h): the same code computes it in lora and
// full training (the classify objective), in predict (the forward call's head output) and here
// for the head method, which trains it on cached features (the classifierHead op). The MLP head
// exists for the head method only and is computed here, in JavaScript.
import { ErnieError, rangeError } from '../errors'
import type { TensorToSave } from '../io/safetensors'
import type { LinearHeadOptions } from '../model/forward'
import { classifierHead } from '../native'
import { seededRandom } from '../util/random'



export type HeadSpec = { kind: 'linear' } | { kind: 'mlp'; hiddenSize: number }

/** A tensor read back from a file: its elements as f32 and its shape. */
export interface SavedTensor {
  data: Float32Array
  shape: readonly number[]
}

export const HEAD_WEIGHT = 'classifier.weight'
export const HEAD_BIAS = 'classifier.bias'
const DENSE_WEIGHT = 'classifier.dense.weight'
const DENSE_BIAS = 'classifier.dense.bias'
const OUT_WEIGHT = 'classifier.out_proj.weight'
const OUT_BIAS = 'classifier.out_proj.bias'
const FEATURE_MEAN = 'classifier.feature_mean'
const FEATURE_STD = 'classifier.feature_std'

function uniformFill(a: Float32Array, bound: number, next: () => number): Float32Array {
  for (let i = 0; i < a.length; i++) a[i] = (2 * next() - 1) * bound
  return a
}

export interface HeadLoss {
  /** The class-weighted mean cross-entropy of the batch. */
  loss: number
  /** The sum of the examples' class weights (the batch size without class weights). */
  weightSum: number
  /** Examples whose top class is their label. */
  correct: number
}

export class Head {
  readonly spec: HeadSpec
  readonly inputSize: number
  readonly classes: number
  /** Trained parameters by name. */
  readonly params: Map<string, Float32Array>
  /** Standardisation of the input features (head method), fixed before training. */
  featureMean: Float32Array | undefined
  featureStd: Float32Array | undefined

  private constructor(spec: HeadSpec, inputSize: number, classes: number, params: Map<string, Float32Array>) {
    this.spec = spec
    this.inputSize = inputSize
    this.classes = classes
    this.params = params
  }

  static create(spec: HeadSpec, inputSize: number, classes: number, seed = 0): Head {
    const next = seededRandom(seed ^ 0x5eed)
    const H = inputSize
    const C = classes
    const params = new Map<string, Float32Array>()
    if (spec.kind === 'linear') {
      params.set(HEAD_WEIGHT, uniformFill(new Float32Array(C * H), 1 / Math.sqrt(H), next))
      params.set(HEAD_BIAS, new Float32Array(C))
    } else {
      const D = spec.hiddenSize
      if (!Number.isInteger(D) || D < 1) throw rangeError(`head.hiddenSize must be a positive integer, got ${D}`)
      params.set(DENSE_WEIGHT, uniformFill(new Float32Array(D * H), 1 / Math.sqrt(H), next))
      params.set(DENSE_BIAS, new Float32Array(D))
      params.set(OUT_WEIGHT, uniformFill(new Float32Array(C * D), 1 / Math.sqrt(D), next))
      params.set(OUT_BIAS, new Float32Array(C))
    }
    return new Head(spec, inputSize, classes, params)
  }

  shapeOf(name: string): number[] {
    const H = this.inputSize
    const C = this.classes
    const D = this.spec.kind === 'mlp' ? this.spec.hiddenSize : 0
    const shapes: Record<string, number[]> = {
      [HEAD_WEIGHT]: [C, H],
      [HEAD_BIAS]: [C],
      [DENSE_WEIGHT]: [D, H],
      [DENSE_BIAS]: [D],
      [OUT_WEIGHT]: [C, D],
      [OUT_BIAS]: [C],
      [FEATURE_MEAN]: [H],
      [FEATURE_STD]: [H],
    }
    const s = shapes[name]
    if (!s) throw rangeError(`head: no tensor "${name}"`)
    return s
  }

  /** Sets the standardisation from training features [N * H]: per dimension mean and deviation. */
  fitStandardization(features: Float32Array, N: number): void {
    const H = this.inputSize
    const mean = new Float64Array(H)
    const sq = new Float64Array(H)
    for (let i = 0; i < N; i++)
      for (let j = 0; j < H; j++) {
        const v = features[i * H + j]
        mean[j] += v
        sq[j] += v * v
      }
    this.featureMean = new Float32Array(H)
    this.featureStd = new Float32Array(H)
    for (let j = 0; j < H; j++) {
      const m = mean[j] / N
      this.featureMean[j] = m
      // a constant dimension keeps a unit scale rather than a division by zero
      this.featureStd[j] = Math.sqrt(Math.max(sq[j] / N - m * m, 0)) || 1
    }
  }

  private standardized(features: Float32Array, B: number): Float32Array {
    if (!this.featureMean || !this.featureStd) return features
    const H = this.inputSize
    const out = new Float32Array(B * H)
    for (let i = 0; i < B; i++) for (let j = 0; j < H; j++) out[i * H + j] = (features[i * H + j] - this.featureMean[j]) / this.featureStd[j]
    return out
  }

  /** The linear head as the engine takes it, standardisation included; undefined for an MLP head. */
  linear(): LinearHeadOptions | undefined {
    if (this.spec.kind !== 'linear') return undefined
    const std = this.featureMean && this.featureStd ? { featureMean: this.featureMean, featureStd: this.featureStd } : {}
    return { weight: this.params.get(HEAD_WEIGHT)!, bias: this.params.get(HEAD_BIAS)!, classes: this.classes, ...std }
  }

  /** Logits [B * C] for pooled features [B * H]. */
  async logits(features: Float32Array, B: number): Promise<Float32Array> {
    const out = new Float32Array(B * this.classes)
    const linear = this.linear()
    if (linear) await classifierHead({ ...linear, features, batch: B, hidden: this.inputSize, logits: out })
    else this.mlpLogits(features, B, out)
    return out
  }

  /** The MLP head's logits into `out`; `keep` receives its input and activations. */
  private mlpLogits(features: Float32Array, B: number, out: Float32Array, keep?: { x?: Float32Array; hidden?: Float32Array }): void {
    if (this.spec.kind !== 'mlp') throw new Error('not an MLP head')
    const H = this.inputSize
    const C = this.classes
    const x = this.standardized(features, B)
    if (keep) keep.x = x
    const D = this.spec.hiddenSize
    const hidden = new Float32Array(B * D)
    affine(x, B, H, this.params.get(DENSE_WEIGHT)!, this.params.get(DENSE_BIAS)!, D, hidden)
    for (let i = 0; i < hidden.length; i++) hidden[i] = Math.tanh(hidden[i])
    if (keep) keep.hidden = hidden
    affine(hidden, B, D, this.params.get(OUT_WEIGHT)!, this.params.get(OUT_BIAS)!, C, out)
  }

  /**
   * The class-weighted mean cross-entropy of a batch of features [B * H] and its gradients,
   * added into `grads` (by parameter name), as torch's CrossEntropyLoss(weight=...) means it:
   * sum of w[y] * -log p[y] over the sum of w[y].
   */
  async lossAndGrad(features: Float32Array, B: number, labels: Int32Array, classWeights: Float32Array | undefined, grads: Map<string, Float32Array>): Promise<HeadLoss> {
    const linear = this.linear()
    if (linear)
      return classifierHead({ ...linear, features, batch: B, hidden: this.inputSize, labels, classWeights, dWeight: grads.get(HEAD_WEIGHT)!, dBias: grads.get(HEAD_BIAS)! })
    const C = this.classes
    const keep: { x?: Float32Array; hidden?: Float32Array } = {}
    const z = new Float32Array(B * C)
    this.mlpLogits(features, B, z, keep)
    let weightSum = 0
    for (let i = 0; i < B; i++) weightSum += classWeights ? classWeights[labels[i]] : 1
    const dz = new Float32Array(B * C)
    let loss = 0
    let correct = 0
    for (let i = 0; i < B; i++) {
      const y = labels[i]
      const w = (classWeights ? classWeights[y] : 1) / weightSum
      let mx = -Infinity
      let best = 0
      for (let c = 0; c < C; c++) {
        mx = Math.max(mx, z[i * C + c])
        if (z[i * C + c] > z[i * C + best]) best = c
      }
      if (best === y) correct++
      let sum = 0
      for (let c = 0; c < C; c++) sum += Math.exp(z[i * C + c] - mx)
      loss -= w * (z[i * C + y] - mx - Math.log(sum))
      for (let c = 0; c < C; c++) dz[i * C + c] = (w * Math.exp(z[i * C + c] - mx)) / sum - (c === y ? w : 0)
    }
    {
      const D = (this.spec as { hiddenSize: number }).hiddenSize
      const hidden = keep.hidden!
      affineBackward(hidden, B, D, dz, C, grads.get(OUT_WEIGHT)!, grads.get(OUT_BIAS)!)
      const W2 = this.params.get(OUT_WEIGHT)!
      const dpre = new Float32Array(B * D)
      for (let i = 0; i < B; i++)
        for (let d = 0; d < D; d++) {
          let s = 0
          for (let c = 0; c < C; c++) s += dz[i * C + c] * W2[c * D + d]
          const h = hidden[i * D + d]
          dpre[i * D + d] = s * (1 - h * h)
        }
      affineBackward(keep.x!, B, this.inputSize, dpre, D, grads.get(DENSE_WEIGHT)!, grads.get(DENSE_BIAS)!)
    }
    return { loss, weightSum, correct }
  }

  /** Parameters and standardisation as safetensors entries. */
  tensors(): Record<string, TensorToSave> {
    const out: Record<string, TensorToSave> = {}
    for (const [name, data] of this.params) out[name] = { dtype: 'F32', shape: this.shapeOf(name), data }
    if (this.featureMean && this.featureStd) {
      out[FEATURE_MEAN] = { dtype: 'F32', shape: [this.inputSize], data: this.featureMean }
      out[FEATURE_STD] = { dtype: 'F32', shape: [this.inputSize], data: this.featureStd }
    }
    return out
  }

  /**
   * A head from saved tensors (copied); `get` returns undefined for a missing name. Each tensor
   * must have the shape the head needs, and the standardisation comes as a pair: anything else is
   * ErnieError ERR_CLASSIFIER naming `where` (the file).
   */
  static fromTensors(spec: HeadSpec, inputSize: number, classes: number, get: (name: string) => SavedTensor | undefined, where: string): Head {
    const head = Head.create(spec, inputSize, classes)
    const fail = (msg: string): never => {
      throw new ErnieError('ERR_CLASSIFIER', `${where}: ${msg}`)
    }
    const take = (name: string, required: boolean): Float32Array | undefined => {
      const v = get(name)
      if (v === undefined) return required ? fail(`no tensor "${name}"`) : undefined
      const shape = head.shapeOf(name)
      if (v.shape.length !== shape.length || v.shape.some((d, i) => d !== shape[i]) || v.data.length !== v.shape.reduce((a, b) => a * b, 1))
        fail(`tensor "${name}" has shape [${v.shape.join(', ')}], the head needs [${shape.join(', ')}]`)
      return Float32Array.from(v.data)
    }
    for (const name of head.params.keys()) head.params.set(name, take(name, true)!)
    const mean = take(FEATURE_MEAN, false)
    const std = take(FEATURE_STD, false)
    if ((mean === undefined) !== (std === undefined))
      fail(`"${mean ? FEATURE_MEAN : FEATURE_STD}" without "${mean ? FEATURE_STD : FEATURE_MEAN}": the head's standardisation needs both`)
    if (mean && std) {
      head.featureMean = mean
      head.featureStd = std
    }
    return head
  }
}

// out[B, N] = x[B, K] W[N, K]^T + b[N]
function affine(x: Float32Array, B: number, K: number, W: Float32Array, b: Float32Array, N: number, out: Float32Array): void {
  for (let i = 0; i < B; i++)
    for (let n = 0; n < N; n++) {
      let s = b[n]
      const w = n * K
      const xi = i * K
      for (let k = 0; k < K; k++) s += x[xi + k] * W[w + k]
      out[i * N + n] = s
    }
}

// dW[N, K] += dy[B, N]^T x[B, K]; db[N] += sum over rows of dy
function affineBackward(x: Float32Array, B: number, K: number, dy: Float32Array, N: number, dW: Float32Array, db: Float32Array): void {
  for (let i = 0; i < B; i++)
    for (let n = 0; n < N; n++) {
      const g = dy[i * N + n]
      if (g === 0) continue
      db[n] += g
      const w = n * K
      const xi = i * K
      for (let k = 0; k < K; k++) dW[w + k] += g * x[xi + k]
    }
}
