// ErnieModel: an ERNIE-4.5 or Qwen3 decoder loaded from a checkpoint (or made at random),
// running on the native engine. Weights stay where the checkpoint mapping put them; the whole
// layer stack runs in one native call per batch, off the JS thread.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { resolveModelDevice, type Device } from '../device'
import { resolvePrecision, type Precision } from '../precision'
import { ErnieError, rangeError, typeError } from '../errors'
import { resolveModel, type ResolveOptions } from '../hub'
import { openSafetensors, saveSafetensors, type Safetensors, type TensorToSave } from '../io/safetensors'
import { gemmSync } from '../kernels/gemm'
import { native } from '../native'
import { copyModelFiles, Tokenizer, TOKENIZER_FILES, type ChatMessage } from '../tokenizer'
import { seededRandom } from '../util/random'
import { resolveConfig, type ModelConfig, type ResolvedConfig } from './config'
import { LoraAdapter, peftName } from './lora'
import { mapWeights, PROJECTIONS, type LayerViews, type MatrixView, type ModelViews, type TensorSource, type WeightArray } from './weights'

/** Token ids as rows (all the same length, right-padded), or a flat Int32Array with a shape. */
export type TokenBatch = number[][] | { data: Int32Array; shape: [number, number] }

export interface ForwardInput {
  inputIds: TokenBatch
  /** 1 for tokens, 0 for padding; all ones when omitted. */
  attentionMask?: TokenBatch
  /**
   * Packed documents: a run of equal ids in a row is one document, whose tokens attend only to
   * each other and whose positions restart at 0. Omitted: each row is one sequence.
   */
  segmentIds?: TokenBatch
}

export interface ForwardOptions {
  /**
   * What to return (default ['hidden']). Logits are [B, T, vocab]: large for real vocabularies.
   * 'lastHidden' alone is the cheap way to pool on the last token: the last layer then runs its
   * queries, attention output and MLP for each row's last real token only.
   */
  output?: Array<'hidden' | 'logits' | 'lastHidden'>
  /** A LoRA adapter applied on top of the base weights. */
  adapter?: LoraAdapter
  /**
   * Run this call on one core instead of the whole thread pool (default false). Several such
   * calls in flight at once, one per core, get more done than the same calls made one after
   * another on the pool: each core works alone, with no hand-offs between them.
   */
  singleThread?: boolean
  /** Of this call's matrix products (README "Precision"); default the model's `precision`. */
  precision?: Precision
}

export interface ForwardResult {
  /** [B, T, hidden_size], after the final norm. */
  hidden?: Float32Array
  /** [B, T, vocab_size]. */
  logits?: Float32Array
  /** [B, hidden_size]: the final hidden state of each row's last real token (zeros for a row with none). */
  lastHidden?: Float32Array
  shape: [number, number]
}

/** The native objects' surface (see native/addon/model.cc). */
export interface NativeModelHandle {
  forward(o: Record<string, unknown>): Promise<void>
  forwardSync(o: Record<string, unknown>): void
  trainStep(o: Record<string, unknown>): Promise<{ loss: number; count: number }>
  trainStepSync(o: Record<string, unknown>): { loss: number; count: number }
  dispose(): void
}

type NativeModelCtor = new (o: Record<string, unknown>) => NativeModelHandle

/** A flat batch: ids and mask as Int32Array [B * T]. */
export interface FlatBatch {
  inputIds: Int32Array
  attentionMask: Int32Array
  segmentIds?: Int32Array
  batch: number
  seq: number
}

function flatten(x: TokenBatch, what: string, shape?: [number, number]): { data: Int32Array; shape: [number, number] } {
  if (Array.isArray(x)) {
    const B = x.length
    if (B === 0) throw rangeError(`${what}: the batch is empty`)
    const T = Array.isArray(x[0]) ? x[0].length : -1
    if (T <= 0) throw typeError(`${what}: expected number[][] with non-empty rows`)
    if (shape && (shape[0] !== B || shape[1] !== T)) throw rangeError(`${what}: shape [${B}, ${T}] differs from inputIds' [${shape[0]}, ${shape[1]}]`)
    const data = new Int32Array(B * T)
    x.forEach((row, b) => {
      if (!Array.isArray(row) || row.length !== T)
        throw rangeError(`${what}: row ${b} has ${Array.isArray(row) ? row.length : 'no'} tokens, row 0 has ${T} (pad the batch)`)
      row.forEach((v, t) => {
        if (!Number.isInteger(v)) throw typeError(`${what}: row ${b}, position ${t} is not an integer: ${v}`)
        data[b * T + t] = v
      })
    })
    return { data, shape: [B, T] }
  }
  if (!x || !(x.data instanceof Int32Array) || !Array.isArray(x.shape) || x.shape.length !== 2)
    throw typeError(`${what}: expected number[][] or { data: Int32Array, shape: [B, T] }`)
  const [B, T] = x.shape
  if (x.data.length !== B * T) throw rangeError(`${what}: data has ${x.data.length} elements, shape [${B}, ${T}] needs ${B * T}`)
  if (shape && (shape[0] !== B || shape[1] !== T)) throw rangeError(`${what}: shape [${B}, ${T}] differs from inputIds' [${shape[0]}, ${shape[1]}]`)
  return { data: x.data, shape: [B, T] }
}

export function toFlatBatch(input: ForwardInput): FlatBatch {
  const ids = flatten(input.inputIds, 'inputIds')
  const mask = input.attentionMask ? flatten(input.attentionMask, 'attentionMask', ids.shape).data : new Int32Array(ids.data.length).fill(1)
  const flat: FlatBatch = { inputIds: ids.data, attentionMask: mask, batch: ids.shape[0], seq: ids.shape[1] }
  if (input.segmentIds) flat.segmentIds = flatten(input.segmentIds, 'segmentIds', ids.shape).data
  return flat
}

function nativeMatrix(m: MatrixView): Record<string, unknown> {
  return { data: m.data, offset: m.offset, rows: m.rows, cols: m.cols, ld: m.ld, transposed: m.transposed }
}

/** The options object of `new native.Model(...)` for a config and its weight views. */
/**
 * The native Model's options. `prepack`: the engine may keep its bf16 weights packed for bf16
 * products (AVX512_BF16), as much memory again as they take; false where the weights change
 * between calls (full fine-tuning's compute copies).
 */
export function nativeModelOptions(cfg: ResolvedConfig, v: ModelViews, prepack = true): Record<string, unknown> {
  return {
    prepack,
    dims: {
      hidden: cfg.hidden_size,
      intermediate: cfg.intermediate_size,
      layers: cfg.num_hidden_layers,
      heads: cfg.num_attention_heads,
      kvHeads: cfg.num_key_value_heads,
      headDim: cfg.head_dim,
      vocab: cfg.vocab_size,
      eps: cfg.rms_norm_eps,
      ropeTheta: cfg.rope_theta,
      ropePairing: cfg.arch.ropePairing,
      qkNorm: cfg.arch.qkNorm,
    },
    embed: nativeMatrix(v.embed),
    lmHead: nativeMatrix(v.lmHead),
    finalNorm: v.finalNorm,
    layers: v.layers.map((l) => ({
      q: nativeMatrix(l.q),
      k: nativeMatrix(l.k),
      v: nativeMatrix(l.v),
      o: nativeMatrix(l.o),
      gate: nativeMatrix(l.gate),
      up: nativeMatrix(l.up),
      down: nativeMatrix(l.down),
      inputNorm: l.inputNorm,
      postAttentionNorm: l.postAttentionNorm,
      ...(l.qNorm ? { qNorm: l.qNorm, kNorm: l.kNorm } : {}),
    })),
  }
}

/** Tensors held in memory (a random model, merged weights): a TensorSource of its own. */
export class MemoryTensors implements TensorSource {
  constructor(
    readonly description: string,
    readonly tensors: Map<string, { shape: number[]; data: WeightArray }>,
  ) {}
  names(): string[] {
    return [...this.tensors.keys()]
  }
  has(name: string): boolean {
    return this.tensors.has(name)
  }
  shape(name: string): number[] {
    return this.tensors.get(name)!.shape
  }
  view(name: string): WeightArray {
    return this.tensors.get(name)!.data
  }
}

/** The HF tensor names and shapes of a config's checkpoint (tied head: no lm_head.weight). */
export function checkpointShapes(cfg: ResolvedConfig): Map<string, number[]> {
  const H = cfg.hidden_size, I = cfg.intermediate_size, V = cfg.vocab_size
  const q = cfg.num_attention_heads * cfg.head_dim, kv = cfg.num_key_value_heads * cfg.head_dim
  const shapes = new Map<string, number[]>([['model.embed_tokens.weight', [V, H]]])
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const L = `model.layers.${l}.`
    shapes.set(`${L}input_layernorm.weight`, [H])
    shapes.set(`${L}post_attention_layernorm.weight`, [H])
    shapes.set(`${L}self_attn.q_proj.weight`, [q, H])
    shapes.set(`${L}self_attn.k_proj.weight`, [kv, H])
    shapes.set(`${L}self_attn.v_proj.weight`, [kv, H])
    shapes.set(`${L}self_attn.o_proj.weight`, [H, q])
    if (cfg.arch.qkNorm) {
      shapes.set(`${L}self_attn.q_norm.weight`, [cfg.head_dim])
      shapes.set(`${L}self_attn.k_norm.weight`, [cfg.head_dim])
    }
    shapes.set(`${L}mlp.gate_proj.weight`, [I, H])
    shapes.set(`${L}mlp.up_proj.weight`, [I, H])
    shapes.set(`${L}mlp.down_proj.weight`, [H, I])
  }
  shapes.set('model.norm.weight', [H])
  if (!cfg.tie_word_embeddings) shapes.set('lm_head.weight', [V, H])
  return shapes
}

const ONE_BF16 = 0x3f80

export interface RandomOptions {
  /** 'cpu', 'auto' (default, or ERNIE_DEVICE) or 'cuda': see FromPretrainedOptions.device. */
  device?: Device
  /** See FromPretrainedOptions.precision. */
  precision?: Precision
  seed?: number
  /** Standard deviation of the weights (HF's initializer_range, default 0.02); norms start at 1. */
  std?: number
}

/** Random bf16 weights for a config, as HF initialises them. */
export function randomTensors(cfg: ResolvedConfig, options: RandomOptions = {}): MemoryTensors {
  const seed = options.seed ?? 0
  const std = options.std ?? 0.02
  const tensors = new Map<string, { shape: number[]; data: WeightArray }>()
  let i = 0
  for (const [name, shape] of checkpointShapes(cfg)) {
    const data = new Uint16Array(shape.reduce((a, b) => a * b, 1))
    if (name.endsWith('norm.weight')) data.fill(ONE_BF16)
    else (native.fillNormalSync as (o: object) => void)({ out: data, std, seed: seed * 1000 + i++ })
    tensors.set(name, { shape, data })
  }
  return new MemoryTensors(`random ${cfg.model_type} model (seed ${seed})`, tensors)
}

export interface ModelParts {
  config: ResolvedConfig
  weights: ModelViews
  source: TensorSource
  /** Called by dispose() once no native call is running: releases the mapping. */
  release?: () => void
  directory?: string
  tokenizer?: Tokenizer
}

// f16 bits -> bf16 bits (through f32; exact for every f16 value but subnormal rounding).
function f16ToBf16(src: Uint16Array): Uint16Array {
  const out = new Uint16Array(src.length)
  const f = new Float32Array(1)
  const u = new Uint32Array(f.buffer)
  for (let i = 0; i < src.length; i++) {
    const h = src[i]
    const sign = (h & 0x8000) << 16
    const exp = (h >> 10) & 0x1f
    const man = h & 0x3ff
    if (exp === 0) f[0] = (man / 1024) * 2 ** -14 * (sign ? -1 : 1)
    else if (exp === 31) u[0] = sign | 0x7f800000 | (man << 13)
    else u[0] = sign | ((exp + 112) << 23) | (man << 13)
    const x = u[0]
    out[i] = (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x40 : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff
  }
  return out
}

/** A checkpoint on disk as a TensorSource: BF16 and F32 viewed in place, F16 widened to bf16. */
export class SafetensorsSource implements TensorSource {
  constructor(readonly file: Safetensors) {}
  get description(): string {
    return this.file.path
  }
  names(): string[] {
    return Object.keys(this.file.tensors)
  }
  has(name: string): boolean {
    return this.file.has(name)
  }
  shape(name: string): number[] {
    return this.file.tensors[name].shape
  }
  view(name: string): WeightArray {
    const info = this.file.tensors[name]
    const v = this.file.view(name)
    if (info.dtype === 'BF16' || info.dtype === 'F32') return v as WeightArray
    if (info.dtype === 'F16') return f16ToBf16(v as Uint16Array)
    throw new ErnieError('ERR_CHECKPOINT', `${this.file.path}: tensor "${name}" has dtype ${info.dtype}; expected BF16, F16 or F32`)
  }
}

/**
 * What lossAndGrad minimises, on the final hidden states: 'lm' (next-token cross-entropy through
 * the LM head), 'classify' (a linear head on one pooled state per sequence; its gradients are
 * added to dWeight / dBias), or 'meanSquare' (mean of the squared states: a benchmark stand-in).
 */
export type Objective =
  | { kind: 'lm'; labels?: Int32Array }
  | { kind: 'meanSquare' }
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

export interface EmbedOptions {
  pooling?: 'last' | 'mean' | 'first'
  normalize?: boolean
  maxLength?: number
  batchSize?: number
  /** Default: the model's `precision`. */
  precision?: Precision
}

export interface GenerateOptions {
  maxNewTokens?: number
  /** 0 (default): greedy. */
  temperature?: number
  /** Nucleus sampling mass (default 1). */
  topP?: number
  /** Stop when the generated text contains one of these (it is cut before the match). */
  stop?: string[]
  eosTokenIds?: number[]
  seed?: number
  adapter?: LoraAdapter
  signal?: AbortSignal
  /** Default: the model's `precision`. */
  precision?: Precision
}

export interface GenerateResult {
  text: string
  tokens: number[]
  finishReason: 'eos' | 'stop' | 'length' | 'aborted'
}

function argmax(x: Float32Array): number {
  let best = 0
  for (let i = 1; i < x.length; i++) if (x[i] > x[best]) best = i
  return best
}

// Temperature then nucleus (top-p) sampling.
function sample(logits: Float32Array, temperature: number, topP: number, random: () => number): number {
  let mx = -Infinity
  for (const v of logits) mx = Math.max(mx, v)
  const order = Array.from(logits.keys()).sort((a, b) => logits[b] - logits[a])
  const p = order.map((i) => Math.exp((logits[i] - mx) / temperature))
  const total = p.reduce((a, b) => a + b, 0)
  let keep = 0, mass = 0
  while (keep < p.length && mass < topP * total) mass += p[keep++]
  let r = random() * mass
  for (let k = 0; k < keep; k++) {
    r -= p[k]
    if (r <= 0) return order[k]
  }
  return order[keep - 1]
}

export interface FromPretrainedOptions extends ResolveOptions {
  /** Load the tokenizer too (default true when the directory has one). */
  tokenizer?: boolean
  /**
   * 'cpu', 'auto' (default, or the ERNIE_DEVICE environment variable) or 'cuda'. The model graph
   * runs on the CPU in this version: 'auto' resolves to 'cpu', and 'cuda' throws ErnieError
   * ERR_DEVICE (the CUDA backend provides the kernels only, kernels.cuda).
   */
  device?: Device
  /**
   * Of the model's matrix products (README "Precision"): 'fp32', 'bf16' or 'auto' (default, or
   * the ERNIE_PRECISION environment variable): bf16 products with the bf16 weights on a CPU
   * with AVX512_BF16, fp32 elsewhere. Each call may override it; `model.precision` changes it.
   */
  precision?: Precision
}

export interface FullTrainingOptions {
  /** HF names matching any of these stay frozen (no master copy, no gradient), e.g. /embed_tokens/. */
  freeze?: RegExp[]
  /** The engine computes with bf16 copies of the masters (default) or with the f32 masters themselves. */
  compute?: 'bf16' | 'f32'
}

/** bf16 bits -> f32. */
export function bf16ToF32(src: Uint16Array): Float32Array {
  const out = new Float32Array(src.length)
  const u = new Uint32Array(out.buffer)
  for (let i = 0; i < src.length; i++) u[i] = src[i] << 16
  return out
}

/** f32 -> bf16 bits, rounding to nearest even as the engine's kernels do (NaN kept quiet). */
export function f32ToBf16(src: Float32Array, out: Uint16Array = new Uint16Array(src.length)): Uint16Array {
  const u = new Uint32Array(src.buffer, src.byteOffset, src.length)
  for (let i = 0; i < src.length; i++) {
    const x = u[i]
    out[i] = (x & 0x7fffffff) > 0x7f800000 ? (x >>> 16) | 0x40 : ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff
  }
  return out
}

export class ErnieModel implements AsyncDisposable {
  readonly config: ResolvedConfig
  /** Where the checkpoint was loaded from, when it came from disk. */
  readonly directory: string | undefined
  /** @internal The engine's weight views (replaced by enableFullTraining). */ weights: ModelViews
  /** @internal */ readonly source: TensorSource
  /** @internal */ handle: NativeModelHandle | undefined
  /** The checkpoint's tokenizer, when it has one. */
  readonly tokenizer: Tokenizer | undefined
  /** Where the model graph runs: the CPU in this version. */
  readonly device: 'cpu' = 'cpu'
  private precisionAsked: Precision = resolvePrecision()
  private readonly release: (() => void) | undefined
  private readonly running = new Set<Promise<unknown>>()
  private full: { masters: Map<string, Float32Array>; compute: Map<string, Uint16Array> } | undefined

  /**
   * The precision of the model's matrix products when a call does not say (README "Precision"):
   * 'fp32', 'bf16' or 'auto'. `precisionInForce(model.precision)` tells what 'auto' means here.
   */
  get precision(): Precision {
    return this.precisionAsked
  }
  set precision(value: Precision) {
    this.precisionAsked = resolvePrecision(value, 'ErnieModel.precision')
  }

  /** @internal The precision of one call: its option, else the model's. */
  callPrecision(requested: unknown, what: string): Precision {
    return requested === undefined ? this.precisionAsked : resolvePrecision(requested, what)
  }

  /** @internal Use fromPretrained() or random(). */
  constructor(parts: ModelParts) {
    this.config = parts.config
    this.weights = parts.weights
    this.source = parts.source
    this.release = parts.release
    this.directory = parts.directory
    this.tokenizer = parts.tokenizer
    const Model = native.Model as NativeModelCtor
    this.handle = new Model(nativeModelOptions(parts.config, parts.weights))
  }

  /**
   * Loads a checkpoint: a local directory, or a hub id such as 'baidu/ERNIE-4.5-0.3B-PT' resolved
   * through the Hugging Face cache (downloading when allowed). The safetensors file is memory-mapped
   * and its bf16 weights are used in place: nothing is copied.
   */
  static async fromPretrained(source: string, options: FromPretrainedOptions = {}): Promise<ErnieModel> {
    if (typeof source !== 'string' || source.length === 0) throw typeError('fromPretrained: source must be a directory or a hub id')
    resolveModelDevice(options.device, 'fromPretrained: device')
    const precision = resolvePrecision(options.precision, 'fromPretrained: precision')
    const dir = await resolveModel(source, options)
    const cfg = readConfig(dir)
    const file = openSafetensors(dir)
    try {
      const src = new SafetensorsSource(file)
      const weights = mapWeights(cfg, src)
      const hasTokenizer = ['tokenizer.json', 'tokenizer.model'].some((f) => fs.existsSync(path.join(dir, f)))
      const tokenizer = options.tokenizer !== false && hasTokenizer ? await Tokenizer.fromDirectory(dir) : undefined
      const model = new ErnieModel({ config: cfg, weights, source: src, release: () => file.dispose(), directory: dir, tokenizer })
      model.precision = precision
      return model
    } catch (e) {
      file.dispose()
      throw e
    }
  }

  /** A randomly initialised model (bf16 weights in memory) from config.json's own keys. */
  static random(config: ModelConfig | Record<string, unknown>, options: RandomOptions = {}): ErnieModel {
    resolveModelDevice(options.device, 'random: device')
    const precision = resolvePrecision(options.precision, 'random: precision')
    const cfg = resolveConfig(config)
    const source = randomTensors(cfg, options)
    const model = new ErnieModel({ config: cfg, weights: mapWeights(cfg, source), source })
    model.precision = precision
    return model
  }

  /** @internal The native handle, or an error if disposed. */
  native(): NativeModelHandle {
    if (!this.handle) throw new ErnieError('ERR_DISPOSED', 'this ErnieModel has been disposed')
    return this.handle
  }

  /** @internal Tracks a native call so dispose() can wait for it. */
  track<T>(p: Promise<T>): Promise<T> {
    this.running.add(p)
    const done = () => this.running.delete(p)
    p.then(done, done)
    return p
  }

  /** Hidden states and/or logits for a padded batch of token ids. */
  async forward(input: ForwardInput, options: ForwardOptions = {}): Promise<ForwardResult> {
    const handle = this.native()
    const precision = this.callPrecision(options.precision, 'forward: precision')
    const b = toFlatBatch(input)
    const want = options.output ?? ['hidden']
    const n = b.batch * b.seq
    const result: ForwardResult = { shape: [b.batch, b.seq] }
    if (want.includes('hidden')) result.hidden = new Float32Array(n * this.config.hidden_size)
    if (want.includes('logits')) result.logits = new Float32Array(n * this.config.vocab_size)
    if (want.includes('lastHidden')) result.lastHidden = new Float32Array(b.batch * this.config.hidden_size)
    await this.track(
      handle.forward({
        ...b,
        hidden: result.hidden,
        logits: result.logits,
        lastHidden: result.lastHidden,
        adapter: options.adapter?.handle,
        singleThread: options.singleThread,
        precision,
      }),
    )
    return result
  }

  /**
   * Mean next-token cross-entropy and its gradients, in one native call (forward, loss,
   * backward). `labels` are unshifted as in HF (position t predicts labels[t + 1]); -100 is
   * ignored; without labels, the input ids with padding ignored. Gradients are f32: PEFT
   * names for the adapter's tensors, HF names ([out, in]) for base weights with trainBase.
   * Pass `grads` (from a previous call) to add into it instead of allocating.
   */
  async lossAndGrad(
    input: ForwardInput & { labels?: TokenBatch },
    options: {
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
    } = {},
  ): Promise<{ loss: number; count: number; grads: Map<string, Float32Array> }> {
    const handle = this.native()
    const precision = this.callPrecision(options.precision, 'lossAndGrad: precision')
    const b = toFlatBatch(input)
    const labels = input.labels ? flatten(input.labels, 'labels', [b.batch, b.seq]).data : undefined
    const grads = options.grads ?? new Map<string, Float32Array>()
    const full = this.full
    const spec = gradientSpec(this.config, grads, options.trainBase === true, options.adapter, full && ((name) => full.masters.has(name)))
    const r = await this.track(
      handle.trainStep({
        ...b,
        adapter: options.adapter?.handle,
        recompute: options.recompute === true,
        dropoutSeed: options.dropoutSeed ?? hashIds(b.inputIds),
        loss: options.objective ?? { kind: 'lm', labels },
        grads: spec,
        precision,
      }),
    )
    return { loss: r.loss, count: r.count, grads }
  }

  /**
   * The mean next-token cross-entropy and its token count, without gradients (evaluation): a
   * forward and the loss, no backward. Same label conventions as lossAndGrad.
   */
  async loss(
    input: ForwardInput & { labels?: TokenBatch },
    options: { adapter?: LoraAdapter; precision?: Precision } = {},
  ): Promise<{ loss: number; count: number }> {
    const handle = this.native()
    const precision = this.callPrecision(options.precision, 'loss: precision')
    const b = toFlatBatch(input)
    const labels = input.labels ? flatten(input.labels, 'labels', [b.batch, b.seq]).data : undefined
    const r = await this.track(handle.trainStep({ ...b, adapter: options.adapter?.handle, loss: { kind: 'lm', labels }, grads: {}, precision }))
    return { loss: r.loss, count: r.count }
  }

  /**
   * Makes the base weights trainable (full fine-tuning): each weight not frozen gets an owned
   * fp32 master copy (HF name, [out, in]) and, with bf16 compute (the default), an owned bf16
   * copy the engine computes with; the native model is rebuilt to read them. Frozen weights (HF
   * names matching a `freeze` pattern) stay as they are and get no gradient. Afterwards
   * lossAndGrad with `trainBase` fills gradients for the trainable weights only; an optimiser
   * updates the masters in place and refreshes the bf16 copies (adamwStep's `paramsBf16`).
   * Returns the masters (also `trainableWeights`). Call it when no other call is running.
   */
  enableFullTraining(options: FullTrainingOptions = {}): Map<string, Float32Array> {
    this.native()
    if (this.full) throw new ErnieError('ERR_STATE', 'enableFullTraining: full training is already enabled for this model')
    if (this.running.size > 0) throw new ErnieError('ERR_BUSY', 'enableFullTraining: wait for the running calls to finish first')
    const freeze = options.freeze ?? []
    if (!Array.isArray(freeze) || !freeze.every((r) => r instanceof RegExp)) throw typeError('enableFullTraining: freeze must be an array of RegExp')
    const compute = options.compute ?? 'bf16'
    if (compute !== 'bf16' && compute !== 'f32') throw rangeError(`enableFullTraining: compute must be 'bf16' or 'f32', got ${JSON.stringify(compute)}`)

    const shapes = checkpointShapes(this.config)
    const masters = new Map<string, Float32Array>()
    const copies = new Map<string, Uint16Array>()
    const old = this.weights
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
    const Model = native.Model as NativeModelCtor
    const handle = new Model(nativeModelOptions(this.config, views, false))
    this.handle?.dispose()
    this.handle = handle
    this.weights = views
    this.full = { masters, compute: copies }
    return masters
  }

  /**
   * Folds a LoRA adapter into the weights it adapts: W' = W + scale B A, computed in f32 and
   * kept as f32 or rounded to bf16 (the default, as PEFT's merge_and_unload keeps the model's
   * dtype). The model then no longer needs the adapter; save() exports the merged checkpoint.
   */
  mergeAdapter(adapter: LoraAdapter, options: { dtype?: 'bf16' | 'f32' } = {}): void {
    this.native()
    if (!(adapter instanceof LoraAdapter)) throw typeError('mergeAdapter: expected a LoraAdapter')
    if (this.full) throw new ErnieError('ERR_STATE', 'mergeAdapter: not with full training enabled; merge before enableFullTraining')
    if (this.running.size > 0) throw new ErnieError('ERR_BUSY', 'mergeAdapter: wait for the running calls to finish first')
    const dtype = options.dtype ?? 'bf16'
    if (dtype !== 'bf16' && dtype !== 'f32') throw rangeError(`mergeAdapter: dtype must be 'bf16' or 'f32', got ${JSON.stringify(dtype)}`)
    const keys: Record<string, keyof LayerViews> = { q_proj: 'q', k_proj: 'k', v_proj: 'v', o_proj: 'o', gate_proj: 'gate', up_proj: 'up', down_proj: 'down' }
    const layers = this.weights.layers.map((layer, l) => {
      const out = { ...layer }
      for (const proj of adapter.config.targetModules) {
        const view = layer[keys[proj]] as MatrixView
        const a = adapter.tensors.get(peftName(l, proj, 'A'))!, b = adapter.tensors.get(peftName(l, proj, 'B'))!
        const base = materialize(view)
        const w = base instanceof Float32Array ? Float32Array.from(base) : bf16ToF32(base)
        // W[out, in] += scale * B[out, r] . A[r, in], in fp32 whatever the model's precision:
        // the merged weight is then rounded once, to its stored dtype
        gemmSync({ c: w, m: view.rows, n: view.cols, accumulate: true, alpha: adapter.scale, segments: [{ a: b, b: a, k: adapter.config.r, bLayout: 'kn' }], precision: 'fp32' })
        const data = dtype === 'f32' ? w : f32ToBf16(w)
        ;(out as Record<string, unknown>)[keys[proj]] = { data, offset: 0, rows: view.rows, cols: view.cols, ld: view.cols, transposed: false }
      }
      return out
    })
    const views: ModelViews = { ...this.weights, layers }
    const Model = native.Model as NativeModelCtor
    const handle = new Model(nativeModelOptions(this.config, views))
    this.handle?.dispose()
    this.handle = handle
    this.weights = views
  }

  /** The fp32 master weights that train (HF names), after enableFullTraining; empty before. */
  get trainableWeights(): ReadonlyMap<string, Float32Array> {
    return this.full?.masters ?? new Map()
  }

  /** The bf16 copies the engine computes with, by HF name (empty with f32 compute or before enableFullTraining). */
  get computeWeights(): ReadonlyMap<string, Uint16Array> {
    return this.full?.compute ?? new Map()
  }

  /**
   * Writes a standalone HF checkpoint directory: config.json, model.safetensors (weights as they
   * are held: bf16 or f32, in HF names and [out, in] layout whatever layout they were read in)
   * and the tokenizer files of the directory the model came from.
   */
  async save(dir: string): Promise<void> {
    this.native()
    await fs.promises.mkdir(dir, { recursive: true })
    const tensors: Record<string, TensorToSave> = {}
    for (const [name, shape] of checkpointShapes(this.config)) {
      const data = hfTensor(this.weights, name, shape)
      tensors[name] = { dtype: data instanceof Float32Array ? 'F32' : 'BF16', shape, data }
    }
    await saveSafetensors(path.join(dir, 'model.safetensors'), tensors, { format: 'pt' })
    const { arch: _arch, ...config } = this.config
    const tmp = path.join(dir, `.config.json.${process.pid}.tmp`)
    await fs.promises.writeFile(tmp, JSON.stringify(config, null, 2) + '\n')
    await fs.promises.rename(tmp, path.join(dir, 'config.json'))
    if (this.directory && path.resolve(this.directory) !== path.resolve(dir))
      await copyModelFiles(this.directory, dir, [...TOKENIZER_FILES, 'generation_config.json'])
  }

  /** @internal */
  requireTokenizer(what: string): Tokenizer {
    if (!this.tokenizer) throw new ErnieError('ERR_NO_TOKENIZER', `${what} needs a tokenizer; this model was loaded without one`)
    return this.tokenizer
  }

  /**
   * One vector per text: the final hidden state pooled over each text's tokens (last token by
   * default, as Qwen3-Embedding does; or mean, or first), optionally L2-normalised.
   */
  async embed(texts: string | string[], options: EmbedOptions = {}): Promise<Float32Array[]> {
    const list = typeof texts === 'string' ? [texts] : texts
    if (!Array.isArray(list) || list.some((x) => typeof x !== 'string')) throw typeError('embed: texts must be a string or an array of strings')
    const tok = this.requireTokenizer('embed')
    const pooling = options.pooling ?? 'last'
    if (!['last', 'mean', 'first'].includes(pooling)) throw rangeError(`embed: pooling must be 'last', 'mean' or 'first', got ${JSON.stringify(pooling)}`)
    const precision = this.callPrecision(options.precision, 'embed: precision')
    const batchSize = options.batchSize ?? 16
    const H = this.config.hidden_size
    const out: Float32Array[] = []
    for (let i = 0; i < list.length; i += batchSize) {
      const enc = tok.encodeBatch(list.slice(i, i + batchSize), { maxLength: options.maxLength ?? 512, padding: false, truncation: true })
      // an empty text (whitespace only, say) still gets one token to pool
      for (const row of enc.inputIds) if (row.length === 0) row.push(tok.unkTokenId ?? tok.padTokenId ?? 0)
      const T = Math.max(...enc.inputIds.map((r) => r.length))
      const pad = tok.padTokenId ?? 0
      const ids = enc.inputIds.map((r) => [...r, ...new Array<number>(T - r.length).fill(pad)])
      const mask = enc.inputIds.map((r) => [...r.map(() => 1), ...new Array<number>(T - r.length).fill(0)])
      // last-token pooling asks for those rows alone: the last layer then skips the others
      const { hidden, lastHidden } = await this.forward({ inputIds: ids, attentionMask: mask }, { output: [pooling === 'last' ? 'lastHidden' : 'hidden'], precision })
      ids.forEach((_, b) => {
        const len = mask[b].reduce((a, v) => a + v, 0)
        const v = pooling === 'last' ? lastHidden!.slice(b * H, (b + 1) * H) : new Float32Array(H)
        const rows = pooling === 'first' ? [0] : pooling === 'mean' ? Array.from({ length: len }, (_, t) => t) : []
        for (const t of rows) for (let j = 0; j < H; j++) v[j] += hidden![(b * T + t) * H + j] / rows.length
        if (options.normalize) {
          const norm = Math.hypot(...v) || 1
          for (let j = 0; j < H; j++) v[j] /= norm
        }
        out.push(v)
      })
    }
    return out
  }

  /**
   * Continues a prompt (text, token ids, or chat messages through the model's chat template)
   * with a KV cache: greedy by default, or sampled with temperature / topP (seeded).
   */
  async generate(prompt: string | number[] | ChatMessage[], options: GenerateOptions = {}): Promise<GenerateResult> {
    const handle = this.native() as NativeModelHandle & { decode(o: object): Promise<void> }
    const maxNewTokens = options.maxNewTokens ?? 64
    if (!Number.isInteger(maxNewTokens) || maxNewTokens < 1) throw rangeError('generate: maxNewTokens must be a positive integer')
    const temperature = options.temperature ?? 0
    const topP = options.topP ?? 1
    const precision = this.callPrecision(options.precision, 'generate: precision')
    if (!(temperature >= 0)) throw rangeError('generate: temperature must be >= 0')
    if (!(topP > 0 && topP <= 1)) throw rangeError('generate: topP must be in (0, 1]')
    let ids: number[]
    if (typeof prompt === 'string') ids = this.requireTokenizer('generate').encode(prompt, { parseSpecial: true })
    else if (Array.isArray(prompt) && prompt.every((x) => typeof x === 'number')) ids = [...(prompt as number[])]
    else if (Array.isArray(prompt)) ids = this.requireTokenizer('generate').encodeChat(prompt as ChatMessage[], { addGenerationPrompt: true })
    else throw typeError('generate: prompt must be a string, token ids or chat messages')
    if (ids.length === 0) throw rangeError('generate: the prompt is empty')
    const eos = new Set<number>(
      [this.config.eos_token_id, this.tokenizer?.eosTokenId, ...(options.eosTokenIds ?? [])].flat().filter((x): x is number => typeof x === 'number'),
    )
    const KvCache = native.KvCache as new (o: object) => { dispose(): void }
    const cache = new KvCache({ maxLength: ids.length + maxNewTokens })
    const logits = new Float32Array(this.config.vocab_size)
    // Rows of the embedding past the tokenizer's vocabulary (padding to a round size) are no
    // tokens: they are never picked (the tokenizer could not decode them).
    const pickable = this.tokenizer ? logits.subarray(0, Math.min(this.tokenizer.vocabSize, logits.length)) : logits
    const random = seededRandom(options.seed ?? 0)
    const out: number[] = []
    let finishReason: GenerateResult['finishReason'] = 'length'
    try {
      let next = ids
      for (let step = 0; step < maxNewTokens; step++) {
        if (options.signal?.aborted) {
          finishReason = 'aborted'
          break
        }
        await this.track(handle.decode({ cache, inputIds: Int32Array.from(next), logits, adapter: options.adapter?.handle, precision }))
        const token = temperature === 0 ? argmax(pickable) : sample(pickable, temperature, topP, random)
        if (eos.has(token)) {
          finishReason = 'eos'
          break
        }
        out.push(token)
        next = [token]
        if (options.stop && this.tokenizer) {
          const text = this.tokenizer.decode(out)
          const hit = options.stop.find((s) => text.includes(s))
          if (hit !== undefined) {
            finishReason = 'stop'
            break
          }
        }
      }
    } finally {
      cache.dispose()
    }
    let text = this.tokenizer ? this.tokenizer.decode(out, { skipSpecialTokens: true }) : ''
    if (finishReason === 'stop' && options.stop) {
      const cut = Math.min(...options.stop.map((s) => text.indexOf(s)).filter((i) => i >= 0))
      text = text.slice(0, cut)
    }
    return { text, tokens: out, finishReason }
  }

  /** Parameters of the model (the tied embedding counted once). */
  get numParameters(): number {
    let n = 0
    for (const name of this.source.names()) n += this.source.shape(name).reduce((a, b) => a * b, 1)
    return n
  }

  /** Waits for running calls, then frees the native model and unmaps the checkpoint. */
  async dispose(): Promise<void> {
    await Promise.allSettled([...this.running])
    this.handle?.dispose()
    this.handle = undefined
    this.release?.()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.dispose()
  }
}

// A weight in HF's [out, in] row-major layout: the view itself when it already is, else a copy.
function materialize(m: MatrixView): WeightArray {
  if (!m.transposed && m.offset === 0 && m.ld === m.cols && m.data.length === m.rows * m.cols) return m.data
  const out = m.data instanceof Float32Array ? new Float32Array(m.rows * m.cols) : new Uint16Array(m.rows * m.cols)
  for (let r = 0; r < m.rows; r++)
    for (let c = 0; c < m.cols; c++) out[r * m.cols + c] = m.data[m.offset + (m.transposed ? c * m.ld + r : r * m.ld + c)]
  return out
}

function hfTensor(v: ModelViews, name: string, shape: number[]): WeightArray {
  if (name === 'model.embed_tokens.weight') return materialize(v.embed)
  if (name === 'lm_head.weight') return materialize(v.lmHead)
  if (name === 'model.norm.weight') return v.finalNorm
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(name)
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

const LAYER_TENSOR: Record<string, string> = {
  q: 'self_attn.q_proj.weight',
  k: 'self_attn.k_proj.weight',
  v: 'self_attn.v_proj.weight',
  o: 'self_attn.o_proj.weight',
  gate: 'mlp.gate_proj.weight',
  up: 'mlp.up_proj.weight',
  down: 'mlp.down_proj.weight',
  inputNorm: 'input_layernorm.weight',
  postAttentionNorm: 'post_attention_layernorm.weight',
  qNorm: 'self_attn.q_norm.weight',
  kNorm: 'self_attn.k_norm.weight',
}

/**
 * The `grads` option of the native trainStep: f32 buffers taken from (or added to) `grads`
 * under HF names for base weights and PEFT names for the adapter.
 */
export function gradientSpec(
  cfg: ResolvedConfig,
  grads: Map<string, Float32Array>,
  trainBase: boolean,
  adapter?: LoraAdapter,
  include: (name: string) => boolean = () => true,
): Record<string, unknown> {
  const buffer = (name: string, size: number) => {
    let g = grads.get(name)
    if (!g) grads.set(name, (g = new Float32Array(size)))
    else if (g.length !== size) throw rangeError(`grads: "${name}" has ${g.length} elements, expected ${size}`)
    return g
  }
  const spec: Record<string, unknown> = {}
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
      const entry: Record<string, unknown> = {}
      for (const proj of PROJECTIONS) {
        const a = peftName(l, proj, 'A')
        if (!adapter.tensors.has(a)) continue
        const b = peftName(l, proj, 'B')
        entry[proj] = { a: buffer(a, adapter.tensors.get(a)!.length), b: buffer(b, adapter.tensors.get(b)!.length) }
      }
      lora.push(entry)
    }
    spec.lora = lora
  }
  return spec
}

// FNV-1a over the token ids: a stateless default seed for a batch's dropout masks.
function hashIds(ids: Int32Array): number {
  let h = 0x811c9dc5
  for (let i = 0; i < ids.length; i++) h = Math.imul(h ^ ids[i], 0x01000193) >>> 0
  return h
}

/** Reads and validates a directory's config.json. */
export function readConfig(dir: string): ResolvedConfig {
  const file = path.join(dir, 'config.json')
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (e) {
    throw new ErnieError('ERR_MODEL_NOT_FOUND', `${file}: cannot read config.json (${(e as Error).message})`, { cause: e })
  }
  let raw: unknown
  try {
    raw = JSON.parse(text)
  } catch (e) {
    throw new ErnieError('ERR_CONFIG', `${file}: invalid JSON (${(e as Error).message})`, { cause: e })
  }
  return resolveConfig(raw, file)
}
