// Direct Preference Optimization (Rafailov et al. 2023) as a TrainTask: the policy (a LoRA
// adapter, the model's own weights, or both) learns to raise the log-probability of each pair's
// chosen answer over its rejected one, relative to a frozen reference whose log-probabilities are
// computed once, before training, and cached. The losses are TRL's DPOTrainer's:
//   z = (logp_c - logp_r) - (ref_c - ref_r)
//   'sigmoid': -(1 - eps) log sigma(beta z) - eps log sigma(-beta z)   (eps: conservative DPO's label smoothing)
//   'ipo':     (z - 1 / (2 beta))^2, on log-probabilities averaged over each answer's tokens
// and its metrics are TRL's: rewards/chosen = beta (logp_c - ref_c), rewards/rejected, their margin,
// the share of pairs whose chosen reward is higher (rewards/accuracies), logps/chosen and /rejected.
//
// A step is two native calls: the policy's sequence log-probabilities (the step's own forward,
// dropout masks included), then forward and backward of the per-row weighted loss whose
// gradient is the DPO loss's (Objective 'weightedRows': rowWeights = -dL/dlogp).
import { rangeError, typeError } from '../errors'
import { maxOf } from '../util/extent'
import type { PreferencePair, ScoredSequence } from './preference-encode'
import type { ErnieModel, FullTrainingOptions } from '../model/model'
import type { LoraAdapter } from '../model/lora'
import type { Precision } from '../precision'
import { TrainableSet } from './trainable'
import type { StepContext, TrainTask } from './trainer'

export type DpoLossType = 'sigmoid' | 'ipo'
export const DPO_LOSS_TYPES: readonly DpoLossType[] = ['sigmoid', 'ipo']

/** The DPO loss's settings (TRL's DPOConfig names: beta, loss_type, label_smoothing). */
export interface DpoLossOptions {
  /** The strength of the pull towards the reference (default 0.1). */
  beta?: number
  /** 'sigmoid' (DPO, default) or 'ipo'. */
  loss?: DpoLossType
  /** Conservative DPO: the probability that a pair's preference is flipped, in [0, 0.5) (default 0; sigmoid only). */
  labelSmoothing?: number
}

/** A pair's sequence log-probabilities, as the loss uses them (IPO: averaged over the answer's tokens). */
export interface PairLogProbs {
  chosen: number
  rejected: number
  refChosen: number
  refRejected: number
}

/** One pair's loss, its derivatives with respect to the policy's two log-probabilities, and its rewards. */
export interface PairLoss {
  loss: number
  dChosen: number
  dRejected: number
  chosenReward: number
  rejectedReward: number
}

// log sigma(x), without overflow for either sign.
function logSigmoid(x: number): number {
  return x >= 0 ? -Math.log1p(Math.exp(-x)) : x - Math.log1p(Math.exp(x))
}
function sigmoid(x: number): number {
  return x >= 0 ? 1 / (1 + Math.exp(-x)) : Math.exp(x) / (1 + Math.exp(x))
}

/** The settings with their defaults, checked. */
export function resolveDpoLoss(o: DpoLossOptions = {}): Required<DpoLossOptions> {
  const beta = o.beta ?? 0.1
  const loss = o.loss ?? 'sigmoid'
  const labelSmoothing = o.labelSmoothing ?? 0
  if (!(beta > 0 && Number.isFinite(beta))) throw rangeError(`DPO: beta must be a positive number, got ${beta}`)
  if (!DPO_LOSS_TYPES.includes(loss)) throw rangeError(`DPO: loss must be one of ${DPO_LOSS_TYPES.join(', ')}, got ${JSON.stringify(loss)}`)
  if (!(labelSmoothing >= 0 && labelSmoothing < 0.5)) throw rangeError(`DPO: labelSmoothing must be in [0, 0.5), got ${labelSmoothing}`)
  if (loss === 'ipo' && labelSmoothing > 0) throw rangeError("DPO: labelSmoothing is conservative DPO's, for the 'sigmoid' loss; IPO has none")
  return { beta, loss, labelSmoothing }
}

/** TRL's per-pair DPO / IPO loss and its derivatives (the module's header states the formulas). */
export function dpoPairLoss(p: PairLogProbs, o: Required<DpoLossOptions>): PairLoss {
  const { beta, labelSmoothing: eps } = o
  const z = p.chosen - p.rejected - (p.refChosen - p.refRejected)
  let loss: number, dz: number
  if (o.loss === 'ipo') {
    const gap = z - 1 / (2 * beta)
    loss = gap * gap
    dz = 2 * gap
  } else {
    loss = -(1 - eps) * logSigmoid(beta * z) - eps * logSigmoid(-beta * z)
    dz = -(1 - eps) * beta * sigmoid(-beta * z) + eps * beta * sigmoid(beta * z)
  }
  return { loss, dChosen: dz, dRejected: -dz, chosenReward: beta * (p.chosen - p.refChosen), rejectedReward: beta * (p.rejected - p.refRejected) }
}

/** The metrics of a set of pairs, named as TRL logs them (means over the pairs). */
export interface DpoMetrics {
  loss: number
  'rewards/chosen': number
  'rewards/rejected': number
  'rewards/margins': number
  'rewards/accuracies': number
  'logps/chosen': number
  'logps/rejected': number
}

/** Sums the per-pair results into means (TRL's metrics). */
class MetricSums {
  private n = 0
  private readonly s = { loss: 0, chosen: 0, rejected: 0, accurate: 0, logpChosen: 0, logpRejected: 0 }
  add(l: PairLoss, p: PairLogProbs): void {
    this.n++
    this.s.loss += l.loss
    this.s.chosen += l.chosenReward
    this.s.rejected += l.rejectedReward
    this.s.accurate += l.chosenReward > l.rejectedReward ? 1 : 0
    this.s.logpChosen += p.chosen
    this.s.logpRejected += p.rejected
  }
  means(): DpoMetrics {
    const m = (x: number) => (this.n > 0 ? x / this.n : NaN)
    return {
      loss: m(this.s.loss),
      'rewards/chosen': m(this.s.chosen),
      'rewards/rejected': m(this.s.rejected),
      'rewards/margins': m(this.s.chosen - this.s.rejected),
      'rewards/accuracies': m(this.s.accurate),
      'logps/chosen': m(this.s.logpChosen),
      'logps/rejected': m(this.s.logpRejected),
    }
  }
}

/** A pair with its reference log-probabilities (summed over the answer's tokens). */
export interface DpoExample {
  pair: PreferencePair
  refChosen: number
  refRejected: number
}

/**
 * A micro-batch of k pairs as 2k rows: the chosen sequences, then the rejected ones, right-padded.
 * `targets` [2k * T] in forward's scoring convention: position t predicts targets[t] where t + 1
 * is an answer token, -1 elsewhere.
 */
export interface DpoBatch {
  inputIds: Int32Array
  attentionMask: Int32Array
  targets: Int32Array
  shape: [number, number]
  pairs: number
  /** [2k]: each row's scored (answer) tokens. */
  answerTokens: Float64Array
  /** [2k]: each row's reference log-probability, summed. */
  reference: Float64Array
  tokens: number
}

/** Pairs as one padded batch of 2k rows (chosen rows first); `reference` from the examples when given. */
export function collatePairs(pairs: readonly PreferencePair[], padTokenId: number, reference?: readonly { refChosen: number; refRejected: number }[]): DpoBatch {
  if (pairs.length === 0) throw rangeError('DPO collate: no pairs')
  const rows: ScoredSequence[] = [...pairs.map((p) => p.chosen), ...pairs.map((p) => p.rejected)]
  const B = rows.length
  const T = maxOf(rows.map((r) => r.inputIds.length))
  const inputIds = new Int32Array(B * T).fill(padTokenId)
  const attentionMask = new Int32Array(B * T)
  const targets = new Int32Array(B * T).fill(-1)
  const answerTokens = new Float64Array(B)
  let tokens = 0
  rows.forEach((r, b) => {
    const ids = r.inputIds
    for (let t = 0; t < ids.length; t++) {
      inputIds[b * T + t] = ids[t]
      attentionMask[b * T + t] = 1
      if (t + 1 < ids.length && t + 1 >= r.answerStart) targets[b * T + t] = ids[t + 1]
    }
    answerTokens[b] = ids.length - r.answerStart
    tokens += ids.length
  })
  const k = pairs.length
  const ref = new Float64Array(B)
  if (reference) reference.forEach((e, i) => ((ref[i] = e.refChosen), (ref[k + i] = e.refRejected)))
  return { inputIds, attentionMask, targets, shape: [B, T], pairs: k, answerTokens, reference: ref, tokens }
}

function batchInput(b: DpoBatch) {
  return { inputIds: { data: b.inputIds, shape: b.shape }, attentionMask: { data: b.attentionMask, shape: b.shape } }
}

export interface DpoTaskOptions extends DpoLossOptions {
  train: readonly PreferencePair[]
  /** Held-out pairs for evaluate(). */
  eval?: readonly PreferencePair[]
  /** Train this adapter's tensors (PEFT names): the policy is the model with it. */
  adapter?: LoraAdapter
  /**
   * Train the base weights (HF names): true, or enableFullTraining's options. The model's full
   * training is enabled after the reference log-probabilities are computed.
   */
  fullTraining?: boolean | FullTrainingOptions
  /**
   * The reference: the model as it is when the task is made, with this adapter (e.g. the SFT
   * adapter that the policy continues training), or without any (default: the frozen base, i.e.
   * the policy's adapter disabled).
   */
  referenceAdapter?: LoraAdapter
  /** Default: the config's pad_token_id, else 0. */
  padTokenId?: number
  /** Recompute each layer's activations in the backward (less memory, more time). */
  recompute?: boolean
  /** Pairs per evaluation and reference batch (default 8). */
  evalBatchSize?: number
  /** Of the reference's matrix products (default: the model's). */
  precision?: Precision
}

/**
 * The DPO TrainTask. Make it with `DpoTask.create`, which computes the reference log-probabilities
 * of every train and eval pair (once: they are cached on the examples) before anything trains.
 */
export class DpoTask implements TrainTask<DpoExample, DpoBatch> {
  readonly model: ErnieModel
  readonly adapter: LoraAdapter | undefined
  readonly trainBase: boolean
  readonly lossOptions: Required<DpoLossOptions>
  /** The training pairs with their cached reference log-probabilities. */
  readonly trainExamples: readonly DpoExample[]
  readonly evalExamples: readonly DpoExample[]
  /** The metrics of the last training micro-batch (TRL's names), from the step's own forward. */
  lastTrainMetrics: DpoMetrics | undefined
  private readonly o: DpoTaskOptions
  private readonly pad: number
  private readonly trainables: TrainableSet

  private constructor(model: ErnieModel, o: DpoTaskOptions, lossOptions: Required<DpoLossOptions>, pad: number, train: DpoExample[], evalSet: DpoExample[]) {
    this.model = model
    this.o = o
    this.adapter = o.adapter
    this.lossOptions = lossOptions
    this.pad = pad
    this.trainExamples = train
    this.evalExamples = evalSet
    this.trainables = new TrainableSet(model, o.adapter, o.fullTraining, 'DpoTask')
    this.trainBase = this.trainables.trainBase
  }

  /** Checks the options, computes and caches the reference log-probabilities, then enables full training if asked. */
  static async create(model: ErnieModel, options: DpoTaskOptions): Promise<DpoTask> {
    if (!options || !Array.isArray(options.train)) throw typeError('DpoTask: options.train must be an array of preference pairs')
    if (!options.adapter && !options.fullTraining) throw rangeError('DpoTask: nothing to train: give an adapter, fullTraining, or both')
    if (options.train.length === 0) throw rangeError('DpoTask: no training pairs')
    const lossOptions = resolveDpoLoss(options)
    const vocab = model.config.vocab_size
    const check = (set: readonly PreferencePair[], what: string) =>
      set.forEach((p, i) => {
        const at = p?.source ?? `${what}[${i}]`
        for (const which of ['chosen', 'rejected'] as const) {
          const s = p?.[which]
          if (!s || typeof s.inputIds?.length !== 'number' || !Number.isInteger(s.answerStart))
            throw typeError(`DpoTask: ${at}: ${which} must be { inputIds, answerStart }`)
          if (!(s.answerStart >= 1 && s.answerStart < s.inputIds.length))
            throw rangeError(`DpoTask: ${at}: ${which}.answerStart is ${s.answerStart}; it must leave at least one prompt token and one answer token of ${s.inputIds.length}`)
          for (let t = 0; t < s.inputIds.length; t++) {
            const v = s.inputIds[t]
            if (!Number.isInteger(v) || v < 0 || v >= vocab) throw rangeError(`DpoTask: ${at}: ${which}.inputIds[${t}] = ${v} is outside the vocabulary [0, ${vocab})`)
          }
        }
      })
    check(options.train, 'train')
    if (options.eval) check(options.eval, 'eval')
    if (options.evalBatchSize !== undefined && !(Number.isInteger(options.evalBatchSize) && options.evalBatchSize >= 1))
      throw rangeError('DpoTask: evalBatchSize must be a positive integer')
    const pad = options.padTokenId ?? (typeof model.config.pad_token_id === 'number' ? model.config.pad_token_id : 0)
    const size = options.evalBatchSize ?? 8
    const reference = async (pairs: readonly PreferencePair[]): Promise<DpoExample[]> => {
      const out: DpoExample[] = []
      for (let i = 0; i < pairs.length; i += size) {
        const chunk = pairs.slice(i, i + size)
        const logps = await sequenceLogProbs(model, collatePairs(chunk, pad), options.referenceAdapter, options.precision)
        chunk.forEach((pair, j) => out.push({ pair, refChosen: logps[j], refRejected: logps[chunk.length + j] }))
      }
      return out
    }
    const train = await reference(options.train)
    const evalSet = options.eval ? await reference(options.eval) : []
    return new DpoTask(model, options, lossOptions, pad, train, evalSet)
  }

  examples(): readonly DpoExample[] {
    return this.trainExamples
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
  length(e: DpoExample): number {
    return Math.max(e.pair.chosen.inputIds.length, e.pair.rejected.inputIds.length)
  }
  collate(examples: DpoExample[]): DpoBatch {
    return collatePairs(
      examples.map((e) => e.pair),
      this.pad,
      examples,
    )
  }
  /** The mean is over pairs. */
  lossItems(b: DpoBatch): number {
    return b.pairs
  }
  tokens(b: DpoBatch): number {
    return b.tokens
  }

  /** The pairs' losses and their derivatives with respect to each row's summed log-probability. */
  private pairLosses(b: DpoBatch, policy: Float64Array, sums: MetricSums): Float64Array {
    const k = b.pairs
    const ipo = this.lossOptions.loss === 'ipo'
    // IPO's log-probabilities are means over each answer's tokens: d(mean)/d(sum) = 1 / tokens.
    const per = (row: number) => (ipo ? 1 / b.answerTokens[row] : 1)
    const dLogp = new Float64Array(2 * k)
    for (let i = 0; i < k; i++) {
      const c = i, r = k + i
      const p = { chosen: policy[c] * per(c), rejected: policy[r] * per(r), refChosen: b.reference[c] * per(c), refRejected: b.reference[r] * per(r) }
      const l = dpoPairLoss(p, this.lossOptions)
      sums.add(l, p)
      dLogp[c] = (l.dChosen * per(c)) / k
      dLogp[r] = (l.dRejected * per(r)) / k
    }
    return dLogp
  }

  async lossAndGrad(b: DpoBatch, grads: Map<string, Float32Array>, context: StepContext = {}): Promise<{ loss: number; count: number }> {
    const input = batchInput(b)
    const rows = b.shape[0]
    // 1. The policy's log-probabilities, as this step's forward computes them (same dropout masks:
    //    the default dropout seed is a hash of the batch's ids, the same in both calls).
    const policy = new Float64Array(rows)
    await this.model.lossAndGrad(input, {
      adapter: this.adapter,
      objective: { kind: 'weightedRows', targets: b.targets, rowWeights: new Float64Array(rows), rowLogProbs: policy },
      forwardOnly: true,
      precision: context.precision,
    })
    const sums = new MetricSums()
    const dLogp = this.pairLosses(b, policy, sums)
    // 2. Forward and backward of sum_b w_b nll_b with w = -dL/dlogp: the DPO loss's gradient.
    await this.model.lossAndGrad(input, {
      adapter: this.adapter,
      trainBase: this.trainBase,
      recompute: this.o.recompute,
      grads,
      objective: { kind: 'weightedRows', targets: b.targets, rowWeights: dLogp.map((x) => -x) },
      precision: context.precision,
    })
    this.lastTrainMetrics = sums.means()
    return { loss: this.lastTrainMetrics.loss, count: b.pairs }
  }

  /** The DPO loss and TRL's reward metrics on the held-out pairs (the policy without dropout). */
  async evaluate(context: StepContext = {}): Promise<Record<string, number>> {
    return { ...(await this.metricsOf(this.evalExamples, context)) }
  }

  /** TRL's metrics of any of the task's examples (e.g. the training pairs), the policy as it is now. */
  async metricsOf(examples: readonly DpoExample[], context: StepContext = {}): Promise<DpoMetrics> {
    if (examples.length === 0) throw rangeError('DpoTask: no pairs to evaluate (give eval pairs)')
    const size = this.o.evalBatchSize ?? 8
    const sums = new MetricSums()
    for (let i = 0; i < examples.length; i += size) {
      const b = this.collate(examples.slice(i, i + size) as DpoExample[])
      this.pairLosses(b, await sequenceLogProbs(this.model, b, this.adapter, context.precision), sums)
    }
    return sums.means()
  }

  /** A LoRA run's checkpoint is also a PEFT adapter directory. */
  async saveCheckpoint(dir: string): Promise<void> {
    if (this.adapter) await this.adapter.writeFiles(dir)
  }
}

/** Each row's summed log-probability of its answer (forward's scoring, no dropout). */
async function sequenceLogProbs(model: ErnieModel, b: DpoBatch, adapter: LoraAdapter | undefined, precision: Precision | undefined): Promise<Float64Array> {
  const r = await model.forward(batchInput(b), { output: [], targets: { data: b.targets, shape: b.shape }, adapter, precision })
  return r.rowLogProbs!
}
