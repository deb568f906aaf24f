// LoRA adapters in PEFT's format: y = x W^T + scale (x A^T) B^T on chosen projections, with
// scale = alpha / r (or alpha / sqrt(r) with rsLoRA). Tensors are named as PEFT names them
// (base_model.model.model.layers.L.self_attn.q_proj.lora_A.weight), so adapter directories
// move between this library and Python PEFT.
import { ErnieError, rangeError, typeError } from '../errors'
import { native } from '../native'
import { seededRandom } from '../util/random'
import type { ResolvedConfig } from './config'
import { PROJECTIONS, type Projection } from './weights'

export interface LoraOptions {
  /** Rank (default 8). */
  r?: number
  /** Scaling numerator (default 8, as PEFT): scale = alpha / r. */
  alpha?: number
  /** Dropout on the adapter's input during training (default 0). */
  dropout?: number
  /** Projections to adapt (default all seven). */
  targetModules?: Projection[]
  /** rsLoRA: scale alpha / sqrt(r) instead of alpha / r. */
  useRslora?: boolean
  seed?: number
}

export interface LoraConfig {
  r: number
  alpha: number
  dropout: number
  targetModules: Projection[]
  useRslora: boolean
}

const MODULE_PATH: Record<Projection, string> = {
  q_proj: 'self_attn.q_proj',
  k_proj: 'self_attn.k_proj',
  v_proj: 'self_attn.v_proj',
  o_proj: 'self_attn.o_proj',
  gate_proj: 'mlp.gate_proj',
  up_proj: 'mlp.up_proj',
  down_proj: 'mlp.down_proj',
}

/** PEFT's tensor name of a LoRA matrix. */
export function peftName(layer: number, proj: Projection, which: 'A' | 'B'): string {
  return `base_model.model.model.layers.${layer}.${MODULE_PATH[proj]}.lora_${which}.weight`
}

/** [out, in] of a projection. */
export function projectionShape(cfg: ResolvedConfig, proj: Projection): [number, number] {
  const H = cfg.hidden_size, I = cfg.intermediate_size
  const q = cfg.num_attention_heads * cfg.head_dim, kv = cfg.num_key_value_heads * cfg.head_dim
  const shapes: Record<Projection, [number, number]> = {
    q_proj: [q, H],
    k_proj: [kv, H],
    v_proj: [kv, H],
    o_proj: [H, q],
    gate_proj: [I, H],
    up_proj: [I, H],
    down_proj: [H, I],
  }
  return shapes[proj]
}

export interface NativeAdapterHandle {
  dispose(): void
}

export function validateLoraConfig(o: LoraOptions | Record<string, unknown>, where = 'LoRA options'): LoraConfig {
  const opts = o as LoraOptions
  const r = opts.r ?? 8
  if (!Number.isInteger(r) || r < 1 || r > 4096) throw rangeError(`${where}: r must be an integer in [1, 4096], got ${r}`)
  const alpha = opts.alpha ?? 8
  if (typeof alpha !== 'number' || !Number.isFinite(alpha)) throw typeError(`${where}: alpha must be a number`)
  const dropout = opts.dropout ?? 0
  if (typeof dropout !== 'number' || dropout < 0 || dropout >= 1) throw rangeError(`${where}: dropout must be in [0, 1)`)
  const targetModules = opts.targetModules ?? [...PROJECTIONS]
  if (!Array.isArray(targetModules) || targetModules.length === 0)
    throw typeError(`${where}: targetModules must be a non-empty array of ${PROJECTIONS.join(', ')}`)
  for (const m of targetModules)
    if (!PROJECTIONS.includes(m)) throw rangeError(`${where}: unknown target module ${JSON.stringify(m)} (expected ${PROJECTIONS.join(', ')})`)
  return { r, alpha, dropout, targetModules: [...targetModules], useRslora: opts.useRslora === true }
}

export class LoraAdapter {
  readonly config: LoraConfig
  readonly modelConfig: ResolvedConfig
  /** PEFT name -> f32 values ([r, in] for A, [out, r] for B); the trainer updates them in place. */
  readonly tensors: Map<string, Float32Array>
  private handle_: NativeAdapterHandle | undefined

  private constructor(modelConfig: ResolvedConfig, config: LoraConfig, tensors: Map<string, Float32Array>) {
    this.modelConfig = modelConfig
    this.config = config
    this.tensors = tensors
    const layers = []
    for (let l = 0; l < modelConfig.num_hidden_layers; l++) {
      const entry: Record<string, unknown> = {}
      for (const proj of config.targetModules) {
        const [out, inp] = projectionShape(modelConfig, proj)
        entry[proj] = { a: tensors.get(peftName(l, proj, 'A')), b: tensors.get(peftName(l, proj, 'B')), rank: config.r, scale: this.scale, inFeatures: inp, outFeatures: out }
      }
      layers.push(entry)
    }
    const Adapter = native.Adapter as new (o: object) => NativeAdapterHandle
    this.handle_ = new Adapter({ layers })
  }

  /** alpha / r, or alpha / sqrt(r) with rsLoRA. */
  get scale(): number {
    return this.config.useRslora ? this.config.alpha / Math.sqrt(this.config.r) : this.config.alpha / this.config.r
  }

  /** @internal */
  get handle(): NativeAdapterHandle {
    if (!this.handle_) throw new ErnieError('ERR_DISPOSED', 'this LoraAdapter has been disposed')
    return this.handle_
  }

  /** A new adapter, initialised as PEFT does: A Kaiming-uniform (bound 1/sqrt(in)), B zero. */
  static create(model: { config: ResolvedConfig }, options: LoraOptions = {}): LoraAdapter {
    const config = validateLoraConfig(options)
    const next = seededRandom(options.seed ?? 0)
    const tensors = new Map<string, Float32Array>()
    for (let l = 0; l < model.config.num_hidden_layers; l++)
      for (const proj of config.targetModules) {
        const [out, inp] = projectionShape(model.config, proj)
        const a = new Float32Array(config.r * inp)
        const bound = 1 / Math.sqrt(inp)
        for (let i = 0; i < a.length; i++) a[i] = (2 * next() - 1) * bound
        tensors.set(peftName(l, proj, 'A'), a)
        tensors.set(peftName(l, proj, 'B'), new Float32Array(out * config.r))
      }
    return new LoraAdapter(model.config, config, tensors)
  }

  /** An adapter from PEFT-named tensors (checked against the model's shapes). */
  static fromTensors(
    model: { config: ResolvedConfig },
    options: LoraOptions,
    get: (name: string) => { shape: number[]; data: Float32Array } | undefined,
    where = 'adapter',
  ): LoraAdapter {
    const config = validateLoraConfig(options, where)
    const tensors = new Map<string, Float32Array>()
    for (let l = 0; l < model.config.num_hidden_layers; l++)
      for (const proj of config.targetModules) {
        const [out, inp] = projectionShape(model.config, proj)
        for (const [which, shape] of [['A', [config.r, inp]], ['B', [out, config.r]]] as const) {
          const name = peftName(l, proj, which)
          const t = get(name)
          if (!t) throw new ErnieError('ERR_ADAPTER', `${where}: missing tensor "${name}"`)
          if (t.shape.length !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1])
            throw new ErnieError('ERR_ADAPTER', `${where}: tensor "${name}" has shape [${t.shape.join(', ')}], the model needs [${shape.join(', ')}]`)
          tensors.set(name, Float32Array.from(t.data))
        }
      }
    return new LoraAdapter(model.config, config, tensors)
  }

  /** Trainable parameters. */
  get numParameters(): number {
    let n = 0
    for (const t of this.tensors.values()) n += t.length
    return n
  }

  /** adapter_config.json's content, as PEFT writes it. */
  peftConfig(baseModel = ''): Record<string, unknown> {
    return {
      peft_type: 'LORA',
      task_type: 'CAUSAL_LM',
      r: this.config.r,
      lora_alpha: this.config.alpha,
      lora_dropout: this.config.dropout,
      bias: 'none',
      use_rslora: this.config.useRslora,
      fan_in_fan_out: false,
      inference_mode: false,
      target_modules: this.config.targetModules,
      base_model_name_or_path: baseModel,
    }
  }

  dispose(): void {
    this.handle_?.dispose()
    this.handle_ = undefined
  }
}
