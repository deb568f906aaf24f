// Optimisers over a named set of fp32 parameters (a LoRA adapter's tensors, a model's master
// weights): AdamW, 8-bit AdamW (bitsandbytes' blockwise quantised moments) and SGD with
// momentum, each step running the native kernels in place. Parameters with a bf16 compute copy
// get it refreshed by the same kernel call. state() / loadState() carry everything a resumed
// run needs, bit for bit.
import { ErnieError, rangeError, typeError } from '../errors'
import type { TensorToSave } from '../io/safetensors'
import { adamw8bitStep, adamwStep, sgdStep } from '../kernels/optim'
import { f32ToBf16 } from '../model/dtype'

export const OPTIMIZER_KINDS = ['adamw', 'adamw8bit', 'sgd'] as const
export type OptimizerKind = (typeof OPTIMIZER_KINDS)[number]
/** AdamW's defaults, as torch's. */
export const ADAM_DEFAULTS = { beta1: 0.9, beta2: 0.999, eps: 1e-8 } as const

export interface OptimizerOptions {
  kind?: OptimizerKind
  /** AdamW betas and epsilon (ADAM_DEFAULTS). */
  beta1?: number
  beta2?: number
  eps?: number
  /** Decoupled weight decay (AdamW: p -= lr * wd * p; SGD: L2 added to the gradient). Default 0. */
  weightDecay?: number
  /** Names that get no weight decay. Default: norm weights and biases, as transformers' Trainer does. */
  noDecay?: (name: string) => boolean
  /** SGD momentum (default 0) and Nesterov. */
  momentum?: number
  nesterov?: boolean
  /** 8-bit AdamW: elements per absmax block (default 256). */
  blockSize?: number
  /** 8-bit AdamW: tensors with fewer elements keep fp32 moments, as bitsandbytes does (default 4096). */
  minBlockedSize?: number
}

/** What a checkpoint needs besides the tensors of state(). */
export interface OptimizerStateMeta {
  kind: OptimizerKind
  /** Updates applied so far (AdamW's bias corrections count from here). */
  step: number
  blockSize: number
  /** The parameter names, sorted, and how each keeps its state. */
  params: Array<{ name: string; size: number; state: 'f32' | '8bit' | 'momentum' | 'none' }>
}

type ParamState =
  | { kind: 'f32'; m: Float32Array; v: Float32Array }
  | { kind: '8bit'; m: Uint8Array; v: Uint8Array; mAbsmax: Float32Array; vAbsmax: Float32Array }
  | { kind: 'momentum'; buffer: Float32Array }
  | { kind: 'none' }

/** The default noDecay: RMSNorm / LayerNorm weights and biases. */
export function isNoDecayName(name: string): boolean {
  return /norm[^.]*\.weight$/i.test(name) || /(^|\.)bias$/.test(name)
}

export class Optimizer {
  readonly kind: OptimizerKind
  /** The parameter names, sorted: the order every step and checkpoint uses. */
  readonly names: string[]
  /** Updates applied so far. */
  stepCount = 0
  private readonly params: ReadonlyMap<string, Float32Array>
  private readonly copies: ReadonlyMap<string, Uint16Array>
  private readonly states = new Map<string, ParamState>()
  private readonly o: Required<Omit<OptimizerOptions, 'kind'>>

  /**
   * `params` are updated in place; `computeCopies` (bf16, by the same names) are rewritten with
   * the rounded parameters after each update.
   */
  constructor(params: ReadonlyMap<string, Float32Array>, options: OptimizerOptions = {}, computeCopies: ReadonlyMap<string, Uint16Array> = new Map()) {
    const kind = options.kind ?? 'adamw'
    if (!OPTIMIZER_KINDS.includes(kind)) throw rangeError(`optimizer: kind must be 'adamw', 'adamw8bit' or 'sgd', got ${JSON.stringify(kind)}`)
    for (const key of ['beta1', 'beta2'] as const) {
      const b = options[key]
      if (b !== undefined && !(typeof b === 'number' && b >= 0 && b < 1)) throw rangeError(`optimizer: ${key} must be a number in [0, 1), got ${JSON.stringify(b)}`)
    }
    if (options.eps !== undefined && !(typeof options.eps === 'number' && options.eps > 0 && Number.isFinite(options.eps)))
      throw rangeError(`optimizer: eps must be a positive number, got ${JSON.stringify(options.eps)}`)
    this.kind = kind
    this.o = {
      beta1: options.beta1 ?? ADAM_DEFAULTS.beta1,
      beta2: options.beta2 ?? ADAM_DEFAULTS.beta2,
      eps: options.eps ?? ADAM_DEFAULTS.eps,
      weightDecay: options.weightDecay ?? 0,
      noDecay: options.noDecay ?? isNoDecayName,
      momentum: options.momentum ?? 0,
      nesterov: options.nesterov ?? false,
      blockSize: options.blockSize ?? 256,
      minBlockedSize: options.minBlockedSize ?? 4096,
    }
    if (typeof this.o.noDecay !== 'function') throw typeError('optimizer: noDecay must be a function')
    if (!Number.isInteger(this.o.blockSize) || this.o.blockSize < 1 || this.o.blockSize > 65536) throw rangeError('optimizer: blockSize must be an integer in [1, 65536]')
    if (!(params instanceof Map) || params.size === 0) throw typeError('optimizer: params must be a non-empty Map of name -> Float32Array')
    this.params = params
    this.copies = computeCopies
    this.names = [...params.keys()].sort()
    for (const name of this.names) {
      const p = params.get(name)!
      if (!(p instanceof Float32Array)) throw typeError(`optimizer: parameter "${name}" must be a Float32Array`)
      const c = computeCopies.get(name)
      if (c && c.length !== p.length) throw rangeError(`optimizer: compute copy of "${name}" has ${c.length} elements, the parameter ${p.length}`)
      this.states.set(name, this.freshState(p.length))
    }
  }

  private freshState(n: number): ParamState {
    if (this.kind === 'sgd') return this.o.momentum > 0 ? { kind: 'momentum', buffer: new Float32Array(n) } : { kind: 'none' }
    if (this.kind === 'adamw8bit' && n >= this.o.minBlockedSize) {
      const blocks = Math.ceil(n / this.o.blockSize)
      return { kind: '8bit', m: new Uint8Array(n), v: new Uint8Array(n), mAbsmax: new Float32Array(blocks), vAbsmax: new Float32Array(blocks) }
    }
    return { kind: 'f32', m: new Float32Array(n), v: new Float32Array(n) }
  }

  /** One update of every parameter with its gradient (missing gradients count as zero). */
  async step(grads: ReadonlyMap<string, Float32Array>, lr: number): Promise<void> {
    if (!(typeof lr === 'number' && lr >= 0 && Number.isFinite(lr))) throw rangeError(`optimizer.step: lr must be a finite number >= 0, got ${lr}`)
    const step = this.stepCount + 1
    for (const name of this.names) {
      const params = this.params.get(name)!
      let g = grads.get(name)
      if (!g) g = new Float32Array(params.length)
      else if (g.length !== params.length) throw rangeError(`optimizer.step: gradient of "${name}" has ${g.length} elements, the parameter ${params.length}`)
      const weightDecay = this.o.noDecay(name) ? 0 : this.o.weightDecay
      const paramsBf16 = this.copies.get(name)
      const st = this.states.get(name)!
      const adam = { lr, beta1: this.o.beta1, beta2: this.o.beta2, eps: this.o.eps, weightDecay, step }
      if (st.kind === 'f32') await adamwStep({ params, grads: g, m: st.m, v: st.v, paramsBf16, ...adam })
      else if (st.kind === '8bit')
        await adamw8bitStep({ params, grads: g, m: st.m, v: st.v, mAbsmax: st.mAbsmax, vAbsmax: st.vAbsmax, blockSize: this.o.blockSize, paramsBf16, ...adam })
      else {
        await sgdStep({ params, grads: g, lr, weightDecay, momentum: this.o.momentum, nesterov: this.o.nesterov, buffer: st.kind === 'momentum' ? st.buffer : undefined })
        if (paramsBf16) f32ToBf16(params, paramsBf16)
      }
    }
    this.stepCount = step
  }

  /** The state as tensors (named `<param>/<slot>`) and the metadata a checkpoint stores beside them. */
  state(): { tensors: Record<string, TensorToSave>; meta: OptimizerStateMeta } {
    const tensors: Record<string, TensorToSave> = {}
    const put = (name: string, data: Float32Array | Uint8Array) =>
      (tensors[name] = { dtype: data instanceof Float32Array ? 'F32' : 'U8', shape: [data.length], data })
    const params: OptimizerStateMeta['params'] = []
    for (const name of this.names) {
      const st = this.states.get(name)!
      params.push({ name, size: this.params.get(name)!.length, state: st.kind })
      if (st.kind === 'f32') put(`${name}/exp_avg`, st.m), put(`${name}/exp_avg_sq`, st.v)
      else if (st.kind === '8bit')
        put(`${name}/exp_avg`, st.m), put(`${name}/exp_avg_sq`, st.v), put(`${name}/exp_avg_absmax`, st.mAbsmax), put(`${name}/exp_avg_sq_absmax`, st.vAbsmax)
      else if (st.kind === 'momentum') put(`${name}/momentum_buffer`, st.buffer)
    }
    return { tensors, meta: { kind: this.kind, step: this.stepCount, blockSize: this.o.blockSize, params } }
  }

  /** Restores state(): same kind, same parameters and sizes. `get` returns a saved tensor by name. */
  loadState(meta: OptimizerStateMeta, get: (name: string) => ArrayBufferView | undefined, where = 'optimizer state'): void {
    const fail = (msg: string): never => {
      throw new ErnieError('ERR_CHECKPOINT', `${where}: ${msg}`)
    }
    if (!meta || meta.kind !== this.kind) fail(`saved by a ${meta?.kind} optimizer, this one is ${this.kind}`)
    if (!Number.isInteger(meta.step) || meta.step < 0) fail(`invalid step ${meta.step}`)
    if (meta.blockSize !== this.o.blockSize) fail(`block size ${meta.blockSize}, this optimizer uses ${this.o.blockSize}`)
    const saved = new Map(meta.params.map((p) => [p.name, p]))
    for (const name of this.names) {
      const p = saved.get(name)
      if (!p) fail(`no state for parameter "${name}"`)
      if (p!.size !== this.params.get(name)!.length) fail(`parameter "${name}" had ${p!.size} elements, now ${this.params.get(name)!.length}`)
      const st = this.states.get(name)!
      if (p!.state !== st.kind) fail(`parameter "${name}" kept "${p!.state}" state, this optimizer keeps "${st.kind}"`)
      const fill = (slot: string, into: Float32Array | Uint8Array) => {
        const t = get(`${name}/${slot}`)
        if (!t) return fail(`missing tensor "${name}/${slot}"`)
        const Ctor = into.constructor as typeof Float32Array | typeof Uint8Array
        if (!(t instanceof Ctor) || t.length !== into.length) fail(`tensor "${name}/${slot}" must be a ${Ctor.name} of ${into.length} elements`)
        into.set(t as Float32Array & Uint8Array)
      }
      if (st.kind === 'f32') fill('exp_avg', st.m), fill('exp_avg_sq', st.v)
      else if (st.kind === '8bit') fill('exp_avg', st.m), fill('exp_avg_sq', st.v), fill('exp_avg_absmax', st.mAbsmax), fill('exp_avg_sq_absmax', st.vAbsmax)
      else if (st.kind === 'momentum') fill('momentum_buffer', st.buffer)
    }
    this.stepCount = meta.step
  }

  /** Bytes of optimiser state. */
  get stateBytes(): number {
    let n = 0
    for (const st of this.states.values())
      if (st.kind === 'f32') n += st.m.byteLength + st.v.byteLength
      else if (st.kind === '8bit') n += st.m.byteLength + st.v.byteLength + st.mAbsmax.byteLength + st.vAbsmax.byteLength
      else if (st.kind === 'momentum') n += st.buffer.byteLength
    return n
  }
}
