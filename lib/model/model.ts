// ErnieModel: an ERNIE-4.5 or Qwen3 decoder loaded from a checkpoint (or made at random),
// running on the native engine. Weights stay where the checkpoint mapping put them; the whole
// layer stack runs in one native call per batch, off the JS thread.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieError, rangeError, typeError } from '../errors'
import { native } from '../native'
import { resolveConfig, type ModelConfig, type ResolvedConfig } from './config'
import { LoraAdapter, peftName } from './lora'
import { mapWeights, PROJECTIONS, type MatrixView, type ModelViews, type TensorSource, type WeightArray } from './weights'

/** Token ids as rows (all the same length, right-padded), or a flat Int32Array with a shape. */
export type TokenBatch = number[][] | { data: Int32Array; shape: [number, number] }

export interface ForwardInput {
  inputIds: TokenBatch
  /** 1 for tokens, 0 for padding; all ones when omitted. */
  attentionMask?: TokenBatch
}

export interface ForwardOptions {
  /** What to return (default ['hidden']). Logits are [B, T, vocab]: large for real vocabularies. */
  output?: Array<'hidden' | 'logits'>
  /** A LoRA adapter applied on top of the base weights. */
  adapter?: LoraAdapter
}

export interface ForwardResult {
  /** [B, T, hidden_size], after the final norm. */
  hidden?: Float32Array
  /** [B, T, vocab_size]. */
  logits?: Float32Array
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
  batch: number
  seq: number
}

function flatten(x: TokenBatch, what: string, shape?: [number, number]): { data: Int32Array; shape: [number, number] } {
  if (Array.isArray(x)) {
    const B = x.length
    if (B === 0) throw rangeError(`${what}: the batch is empty`)
    const T = Array.isArray(x[0]) ? x[0].length : -1
    if (T <= 0) throw typeError(`${what}: expected number[][] with non-empty rows`)
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
  return { inputIds: ids.data, attentionMask: mask, batch: ids.shape[0], seq: ids.shape[1] }
}

function nativeMatrix(m: MatrixView): Record<string, unknown> {
  return { data: m.data, offset: m.offset, rows: m.rows, cols: m.cols, ld: m.ld, transposed: m.transposed }
}

/** The options object of `new native.Model(...)` for a config and its weight views. */
export function nativeModelOptions(cfg: ResolvedConfig, v: ModelViews): Record<string, unknown> {
  return {
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
}

export class ErnieModel implements AsyncDisposable {
  readonly config: ResolvedConfig
  /** Where the checkpoint was loaded from, when it came from disk. */
  readonly directory: string | undefined
  /** @internal */ readonly weights: ModelViews
  /** @internal */ readonly source: TensorSource
  /** @internal */ handle: NativeModelHandle | undefined
  private readonly release: (() => void) | undefined
  private readonly running = new Set<Promise<unknown>>()

  /** @internal Use fromPretrained() or random(). */
  constructor(parts: ModelParts) {
    this.config = parts.config
    this.weights = parts.weights
    this.source = parts.source
    this.release = parts.release
    this.directory = parts.directory
    const Model = native.Model as NativeModelCtor
    this.handle = new Model(nativeModelOptions(parts.config, parts.weights))
  }

  /** A randomly initialised model (bf16 weights in memory) from config.json's own keys. */
  static random(config: ModelConfig | Record<string, unknown>, options: RandomOptions = {}): ErnieModel {
    const cfg = resolveConfig(config)
    const source = randomTensors(cfg, options)
    return new ErnieModel({ config: cfg, weights: mapWeights(cfg, source), source })
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
    const b = toFlatBatch(input)
    const want = options.output ?? ['hidden']
    const n = b.batch * b.seq
    const result: ForwardResult = { shape: [b.batch, b.seq] }
    if (want.includes('hidden')) result.hidden = new Float32Array(n * this.config.hidden_size)
    if (want.includes('logits')) result.logits = new Float32Array(n * this.config.vocab_size)
    await this.track(handle.forward({ ...b, hidden: result.hidden, logits: result.logits, adapter: options.adapter?.handle }))
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
    options: { adapter?: LoraAdapter; trainBase?: boolean; recompute?: boolean; grads?: Map<string, Float32Array> } = {},
  ): Promise<{ loss: number; count: number; grads: Map<string, Float32Array> }> {
    const handle = this.native()
    const b = toFlatBatch(input)
    const labels = input.labels ? flatten(input.labels, 'labels', [b.batch, b.seq]).data : undefined
    const grads = options.grads ?? new Map<string, Float32Array>()
    const spec = gradientSpec(this.config, grads, options.trainBase === true, options.adapter)
    const r = await this.track(
      handle.trainStep({
        ...b,
        adapter: options.adapter?.handle,
        recompute: options.recompute === true,
        loss: { kind: 'lm', labels },
        grads: spec,
      }),
    )
    return { loss: r.loss, count: r.count, grads }
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
    spec.embed = buffer('model.embed_tokens.weight', size('model.embed_tokens.weight'))
    if (!cfg.tie_word_embeddings) spec.lmHead = buffer('lm_head.weight', size('lm_head.weight'))
    spec.finalNorm = buffer('model.norm.weight', cfg.hidden_size)
    const layers = []
    for (let l = 0; l < cfg.num_hidden_layers; l++) {
      const entry: Record<string, Float32Array> = {}
      for (const [key, suffix] of Object.entries(LAYER_TENSOR)) {
        const name = `model.layers.${l}.${suffix}`
        if (shapes.has(name)) entry[key] = buffer(name, size(name))
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
