// LoRA adapters in PEFT's format: y = x W^T + scale (x A^T) B^T on chosen projections, with
// scale = alpha / r (or alpha / sqrt(r) with rsLoRA). Tensors are named as PEFT names them
// (base_model.model.model.layers.L.self_attn.q_proj.lora_A.weight), so adapter directories
// move between this library and Python PEFT.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { ErnieError, rangeError, typeError } from '../errors'
import { writeDirectoryAtomically, writeFileDurable } from '../io/atomic'
import { parseJsonBytes } from '../io/json'
import { readSmallFile } from '../io/read'
import { openSafetensors, saveSafetensors, type TensorToSave } from '../io/safetensors'
import { RE2JS } from 're2js'
import type { NativeAdapterLayer } from '../addon-types'
import { NativeAdapter } from '../native'
import { seededRandom } from '../util/random'
import type { ResolvedConfig } from './config'
import { PROJECTIONS, modulePath, projectionShape, type Projection } from './projections'
import {
  TokenTables, hasTrainableTokens, peftTrainableTokenIndices, resolveTrainableTokens, tableRows, tiedHead, tokenRowsName, tokenTableOf,
  type TokenTable, type TrainableTokenIndices, type TrainableTokens,
} from './trainable-tokens'
import type { ModelViews } from './weights'

export interface LoraOptions {
  /** Rank (default 8). */
  r?: number
  /** Scaling numerator (default 8, as PEFT): scale = alpha / r. */
  alpha?: number
  /** Dropout on the adapter's input during training (default 0), as PEFT's lora_dropout. */
  dropout?: number
  /** Projections to adapt (default all seven). */
  targetModules?: Projection[]
  /** rsLoRA: scale alpha / sqrt(r) instead of alpha / r. */
  useRslora?: boolean
  seed?: number
  /**
   * Token rows that train beside the LoRA matrices (PEFT's `trainable_token_indices`), e.g. chat
   * markers added to a Base vocabulary: a list of ids (the embedding's rows, and a tied LM
   * head's, which are the same), or `{ embed_tokens?, lm_head? }` (an untied head's rows are
   * named under lm_head). The rows start as the model's and are saved as PEFT saves them.
   */
  trainableTokenIndices?: TrainableTokenIndices
}

export interface LoraConfig {
  r: number
  alpha: number
  dropout: number
  targetModules: Projection[]
  useRslora: boolean
}

/** The prefix PEFT gives every tensor of a LoRA adapter: the wrapped model's own names follow. */
const PEFT_PREFIX = 'base_model.model.'

/** PEFT's tensor name of a LoRA matrix. */
export function peftName(layer: number, proj: Projection, which: 'A' | 'B'): string {
  return `${PEFT_PREFIX}model.layers.${layer}.${modulePath(proj)}.lora_${which}.weight`
}

/** PEFT's tensor name of a parameter of a module saved whole (modules_to_save), e.g. base_model.model.score.weight. */
export function peftSavedModuleName(module: string, param: string): string {
  return `${PEFT_PREFIX}${module}.${param}`
}

/** adapter_config.json's task_type: a causal LM, or a sequence classifier (PEFT's SEQ_CLS, head in modules_to_save). */
export type PeftTaskType = 'CAUSAL_LM' | 'SEQ_CLS'

/** Modules saved whole beside the adapter (PEFT's modules_to_save): module name -> parameter name -> tensor. */
export type SavedModules = Record<string, Record<string, TensorToSave>>

/** A tensor read from an adapter file, as f32. */
export interface AdapterTensor {
  shape: number[]
  data: Float32Array
}

export { projectionShape } from './projections'
export type { TokenTable, TrainableTokenIndices, TrainableTokens } from './trainable-tokens'

/** What an adapter needs from its model. */
export interface ModelLike {
  config: ResolvedConfig
  /** The checkpoint directory, recorded as base_model_name_or_path. */
  directory?: string
  /** @internal The model's weights: trainable token rows copy its embedding (an ErnieModel has them). */
  weights?: ModelViews
}

// The rows of trainableTokenIndices, checked against the model, and its weights to copy them from.
function tokensFor(model: ModelLike, indices: unknown, where: string): { tokens: TrainableTokens; weights?: ModelViews } {
  if (indices === undefined || indices === null) return { tokens: { embed_tokens: [], lm_head: [], tiedHead: true } }
  if (!model.weights) throw typeError(`${where}: trainableTokenIndices needs the model's weights (pass an ErnieModel)`)
  return { tokens: resolveTrainableTokens(indices, model.config, tiedHead(model.weights), where), weights: model.weights }
}

// adapter_config.json's target_modules: names (a projection, or a module path ending in one),
// 'all-linear', or a regular expression PEFT full-matches against module paths.
/**
 * The projections adapter_config.json's target_modules names, as PEFT matches them against the
 * base model's module names (model.layers.L.self_attn.q_proj): a string is a regex that must
 * match a whole name (run on RE2: a file's pattern cannot backtrack for ever), a list entry the
 * end of a name after a dot. The engine adapts a projection in every layer or in none.
 */
function targetModulesOf(x: unknown, layers: number, fail: (msg: string) => never): Projection[] {
  if (x === 'all-linear') return [...PROJECTIONS]
  let matches: (name: string) => boolean
  if (typeof x === 'string') {
    let re: RE2JS
    try {
      re = RE2JS.compile(x)
    } catch (e) {
      return fail(`target_modules ${JSON.stringify(x)} is not a regular expression this reader runs (${(e as Error).message})`)
    }
    matches = (name) => re.matches(name)
  } else if (Array.isArray(x) && x.length > 0 && x.every((e) => typeof e === 'string' && e !== '')) {
    const entries = x as string[]
    matches = (name) => entries.some((e) => name === e || name.endsWith(`.${e}`))
    for (const e of entries)
      if (!PROJECTIONS.some((p) => Array.from({ length: layers }, (_, l) => `model.layers.${l}.${modulePath(p)}`).some((n) => n === e || n.endsWith(`.${e}`))))
        fail(`target module ${JSON.stringify(e)} names none of ${PROJECTIONS.join(', ')}`)
  } else return fail(`target_modules must be a non-empty list of module names or a string, got ${JSON.stringify(x)}`)
  const out: Projection[] = []
  for (const p of PROJECTIONS) {
    const hits = Array.from({ length: layers }, (_, l) => matches(`model.layers.${l}.${modulePath(p)}`))
    if (hits.every(Boolean)) out.push(p)
    else if (hits.some(Boolean)) fail(`target_modules ${JSON.stringify(x)} adapts ${p} in layers ${hits.flatMap((h, l) => (h ? [l] : [])).join(', ')} only; the engine adapts a projection in every layer`)
  }
  if (out.length === 0) fail(`target_modules ${JSON.stringify(x)} matches none of ${PROJECTIONS.join(', ')}`)
  return out
}

/**
 * adapter_config.json as LoraOptions. Every field PEFT reads is of its JSON type (PEFT takes
 * "true" as true: read as false here it would compute another adapter), and the features the
 * engine does not apply are refused rather than ignored.
 */
function readPeftConfig(c: Record<string, unknown>, layers: number, fail: (msg: string) => never): LoraOptions & { savedModules: string[] } {
  const given = (key: string) => c[key] !== undefined && c[key] !== null
  const flag = (key: string): boolean => {
    if (!given(key)) return false
    if (typeof c[key] !== 'boolean') fail(`${key} must be true or false, got ${JSON.stringify(c[key])}`)
    return c[key] as boolean
  }
  const number = (key: string, fallback: number, valid: (v: number) => boolean, range: string): number => {
    const v = c[key] === undefined ? fallback : c[key]
    if (typeof v !== 'number' || !Number.isFinite(v) || !valid(v)) fail(`${key} must be ${range}, got ${JSON.stringify(v)}`)
    return v as number
  }
  if (c.peft_type !== undefined && c.peft_type !== 'LORA') fail(`peft_type is ${JSON.stringify(c.peft_type)}; only LORA adapters are supported`)
  if (flag('fan_in_fan_out')) fail('fan_in_fan_out adapters are not supported')
  if (flag('use_dora')) fail('DoRA adapters are not supported')
  if (flag('lora_bias')) fail('lora_bias (a bias on lora_B) is not supported')
  if (c.bias !== undefined && c.bias !== 'none') fail(`bias ${JSON.stringify(c.bias)} is not supported (only "none")`)
  for (const key of ['rank_pattern', 'alpha_pattern']) {
    const v = c[key]
    if (!given(key)) continue
    if (typeof v !== 'object' || Array.isArray(v)) fail(`${key} must be an object, got ${JSON.stringify(v)}`)
    if (Object.keys(v as object).length > 0) fail(`${key} (per-module ranks) is not supported`)
  }
  for (const key of ['layers_to_transform', 'layer_replication']) if (given(key)) fail(`${key} is not supported`)
  const saved = given('modules_to_save') ? c.modules_to_save : []
  if (!Array.isArray(saved) || !saved.every((m) => typeof m === 'string')) fail(`modules_to_save must be a list of module names, got ${JSON.stringify(saved)}`)
  return {
    // PEFT's defaults where the file leaves a field out: r 8, lora_alpha 8, lora_dropout 0
    r: number('r', 8, (v) => Number.isInteger(v) && v >= 1 && v <= 4096, 'an integer in [1, 4096]'),
    alpha: number('lora_alpha', 8, () => true, 'a number'),
    dropout: number('lora_dropout', 0, (v) => v >= 0 && v < 1, 'a number in [0, 1)'),
    targetModules: targetModulesOf(c.target_modules, layers, fail),
    useRslora: flag('use_rslora'),
    // PEFT's TrainableTokens beside LoRA: a list of ids, or per table (checked by resolveTrainableTokens)
    ...(given('trainable_token_indices') ? { trainableTokenIndices: c.trainable_token_indices as TrainableTokenIndices } : {}),
    savedModules: saved as string[],
  }
}

/** Refuses a tensor holding NaN or an infinity (it would turn every output it touches to NaN). */
function finite(data: Float32Array, where: string): Float32Array {
  for (let i = 0; i < data.length; i++)
    if (!Number.isFinite(data[i])) throw new ErnieError('ERR_ADAPTER', `${where} holds ${data[i]} at element ${i}; an adapter's weights must be finite numbers`)
  return data
}

const f32Scratch = new Float32Array(1)
const u32Scratch = new Uint32Array(f32Scratch.buffer)

// An adapter tensor as f32 (copied: the file is closed after loading).
function toF32(v: Float32Array | Uint16Array, dtype: string, where: string): Float32Array {
  if (dtype === 'F32') return v as Float32Array
  const src = v as Uint16Array
  const out = new Float32Array(src.length)
  if (dtype === 'BF16') {
    new Uint32Array(out.buffer).set(src)
    const u = new Uint32Array(out.buffer)
    for (let i = 0; i < u.length; i++) u[i] = u[i] << 16
    return out
  }
  if (dtype === 'F16') {
    for (let i = 0; i < src.length; i++) {
      const h = src[i]
      const sign = h & 0x8000 ? -1 : 1
      const exp = (h >> 10) & 0x1f
      const man = h & 0x3ff
      if (exp === 0) out[i] = sign * man * 2 ** -24
      else if (exp === 31) {
        u32Scratch[0] = ((h & 0x8000) << 16) | 0x7f800000 | (man << 13)
        out[i] = f32Scratch[0]
      } else out[i] = sign * (1 + man / 1024) * 2 ** (exp - 15)
    }
    return out
  }
  throw new ErnieError('ERR_ADAPTER', `${where} has dtype ${dtype}; expected F32, BF16 or F16`)
}

export type NativeAdapterHandle = NativeAdapter

/** `dir`/adapter_config.json as a JSON object (strict UTF-8 JSON); anything else is ERR_ADAPTER naming the file. */
export async function readAdapterConfig(dir: string): Promise<Record<string, unknown>> {
  const configFile = path.join(dir, 'adapter_config.json')
  let raw: unknown
  try {
    raw = parseJsonBytes(await readSmallFile(configFile, 'config'))
  } catch (e) {
    if (e instanceof ErnieError) throw e // not a regular file, or past its size cap: named by the reader
    const code = (e as { code?: string }).code
    throw new ErnieError('ERR_ADAPTER', `${configFile}: ${code ? `cannot read (${code})` : `invalid JSON (${(e as Error).message})`}`, { cause: e })
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new ErnieError('ERR_ADAPTER', `${configFile}: expected a JSON object`)
  return raw as Record<string, unknown>
}

/** The base model a PEFT adapter names (base_model_name_or_path), or undefined when it names none. */
export async function adapterBaseModel(dir: string): Promise<string | undefined> {
  const base = (await readAdapterConfig(dir)).base_model_name_or_path
  return typeof base === 'string' && base.length > 0 ? base : undefined
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

  /** base_model_name_or_path written to adapter_config.json (the model's directory when known). */
  baseModel: string
  /** Modules saved whole in the adapter file (load with modulesToSave): module -> parameter -> tensor. */
  readonly savedModules = new Map<string, Map<string, AdapterTensor>>()
  /** The token rows that train beside the LoRA matrices (LoraOptions.trainableTokenIndices); empty lists when none. */
  readonly trainableTokens: TrainableTokens
  private readonly tokenTables: TokenTables | undefined
  private handle_: NativeAdapterHandle | undefined

  private constructor(
    modelConfig: ResolvedConfig,
    config: LoraConfig,
    tensors: Map<string, Float32Array>,
    baseModel = '',
    tokens: { tokens: TrainableTokens; weights?: ModelViews } = { tokens: { embed_tokens: [], lm_head: [], tiedHead: true } },
  ) {
    this.baseModel = baseModel
    this.modelConfig = modelConfig
    this.config = config
    this.tensors = tensors
    this.trainableTokens = tokens.tokens
    this.tokenTables = tokens.weights && hasTrainableTokens(tokens.tokens) ? new TokenTables(tokens.weights, modelConfig, tokens.tokens) : undefined
    const layers = []
    for (let l = 0; l < modelConfig.num_hidden_layers; l++) {
      const entry: NativeAdapterLayer = {}
      for (const proj of config.targetModules) {
        const [out, inp] = projectionShape(modelConfig, proj)
        entry[proj] = { a: tensors.get(peftName(l, proj, 'A'))!, b: tensors.get(peftName(l, proj, 'B'))!, rank: config.r, scale: this.scale, inFeatures: inp, outFeatures: out }
      }
      layers.push(entry)
    }
    this.handle_ = new NativeAdapter({ layers, dropout: config.dropout, ...this.tokenTables?.native() })
  }

  /** alpha / r, or alpha / sqrt(r) with rsLoRA. */
  get scale(): number {
    return this.config.useRslora ? this.config.alpha / Math.sqrt(this.config.r) : this.config.alpha / this.config.r
  }

  /**
   * @internal The native adapter for a call. Trainable token rows are written into its tables
   * here, so that the next call sees an optimiser's in-place update of `tensors`, as it sees A and B.
   */
  get handle(): NativeAdapterHandle {
    if (!this.handle_) throw new ErnieError('ERR_DISPOSED', 'this LoraAdapter has been disposed')
    this.tokenTables?.sync(this.tensors)
    return this.handle_
  }

  /** A new adapter, initialised as PEFT does: A Kaiming-uniform (bound 1/sqrt(in)), B zero. */
  static create(model: ModelLike, options: LoraOptions = {}): LoraAdapter {
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
    // PEFT's initialisation of trainable tokens: the rows as the model has them.
    const tokens = tokensFor(model, options.trainableTokenIndices, 'LoraAdapter.create')
    for (const table of ['embed_tokens', 'lm_head'] as const)
      if (tokens.tokens[table].length > 0) tensors.set(tokenRowsName(table), tableRows(table === 'embed_tokens' ? tokens.weights!.embed : tokens.weights!.lmHead, tokens.tokens[table]))
    return new LoraAdapter(model.config, config, tensors, model.directory ?? '', tokens)
  }

  /** An adapter from PEFT-named tensors (checked against the model's shapes). */
  static fromTensors(
    model: ModelLike,
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
    const tokens = tokensFor(model, options.trainableTokenIndices, where)
    for (const table of ['embed_tokens', 'lm_head'] as const) {
      if (tokens.tokens[table].length === 0) continue
      const name = tokenRowsName(table)
      const shape = [tokens.tokens[table].length, model.config.hidden_size]
      const t = get(name)
      if (!t) throw new ErnieError('ERR_ADAPTER', `${where}: missing tensor "${name}" (the ${table} rows of trainable_token_indices)`)
      if (t.shape.length !== 2 || t.shape[0] !== shape[0] || t.shape[1] !== shape[1])
        throw new ErnieError('ERR_ADAPTER', `${where}: tensor "${name}" has shape [${t.shape.join(', ')}], its ${shape[0]} token ids need [${shape.join(', ')}]`)
      tensors.set(name, Float32Array.from(t.data))
    }
    return new LoraAdapter(model.config, config, tensors, model.directory ?? '', tokens)
  }

  /**
   * Loads a PEFT LoRA adapter directory (adapter_config.json + adapter_model.safetensors, F32,
   * BF16 or F16 tensors) for `model`. Features this engine does not apply (DoRA, biases,
   * per-module ranks, fan_in_fan_out) are refused rather than ignored; so are modules_to_save,
   * unless `options.modulesToSave` names the modules the caller applies itself: their tensors
   * are then in `savedModules` (a listed module without tensors, as PEFT's SEQ_CLS default
   * "classifier" on a decoder, is passed over).
   */
  static async load(dir: string, model: ModelLike, options: { modulesToSave?: readonly string[] } = {}): Promise<LoraAdapter> {
    if (typeof dir !== 'string' || dir.length === 0) throw typeError('LoraAdapter.load: dir must be a directory path')
    const configFile = path.join(dir, 'adapter_config.json')
    const fail = (msg: string): never => {
      throw new ErnieError('ERR_ADAPTER', `${configFile}: ${msg}`)
    }
    const c = await readAdapterConfig(dir)
    const { savedModules, ...loraOptions } = readPeftConfig(c, model.config.num_hidden_layers, fail)
    if (savedModules.length > 0 && options.modulesToSave === undefined) fail('modules_to_save is not supported')
    // Its ids checked here, so that an error names the config file.
    if (loraOptions.trainableTokenIndices !== undefined && model.weights)
      resolveTrainableTokens(loraOptions.trainableTokenIndices, model.config, tiedHead(model.weights), configFile)

    const weights = path.join(dir, 'adapter_model.safetensors')
    const weightsInfo = fs.statSync(weights, { throwIfNoEntry: false })
    if (weightsInfo?.isDirectory()) throw new ErnieError('ERR_ADAPTER', `${weights}: is a directory, not the adapter's weights`)
    if (!weightsInfo)
      throw new ErnieError(
        'ERR_ADAPTER',
        fs.existsSync(path.join(dir, 'adapter_model.bin'))
          ? `${dir}: adapter_model.bin (pickle) is not supported; save the adapter with safe_serialization=True`
          : `${dir}: no adapter_model.safetensors`,
      )
    const file = openSafetensors(weights)
    try {
      const used = new Set<string>()
      const adapter = LoraAdapter.fromTensors(
        model,
        loraOptions,
        (name) => {
          if (!file.has(name)) return undefined
          used.add(name)
          const info = file.tensors[name]
          const where = `${weights}: tensor "${name}"`
          return { shape: info.shape, data: finite(toF32(file.view(name) as Float32Array | Uint16Array, info.dtype, where), where) }
        },
        weights,
      )
      const read = (name: string): AdapterTensor => {
        used.add(name)
        const info = file.tensors[name]
        const where = `${weights}: tensor "${name}"`
        return { shape: info.shape, data: finite(Float32Array.from(toF32(file.view(name) as Float32Array | Uint16Array, info.dtype, where)), where) }
      }
      for (const m of savedModules) {
        const prefix = typeof m === 'string' ? peftSavedModuleName(m, '') : undefined
        const names = prefix ? Object.keys(file.tensors).filter((n) => n.startsWith(prefix)) : []
        if (prefix && names.length === 0) continue
        if (!prefix || !options.modulesToSave!.includes(m as string)) {
          adapter.dispose()
          fail(`modules_to_save: ${JSON.stringify(m)} is not a module the caller applies (${options.modulesToSave!.join(', ')})`)
        }
        adapter.savedModules.set(m as string, new Map(names.map((n) => [n.slice(prefix!.length), read(n)])))
      }
      const unused = Object.keys(file.tensors).filter((n) => !used.has(n))
      if (unused.length > 0) {
        adapter.dispose()
        throw new ErnieError('ERR_ADAPTER', `${weights}: tensor "${unused[0]}" is not a LoRA matrix this model applies (${unused.length} such)`)
      }
      if (typeof c.base_model_name_or_path === 'string') adapter.baseModel = c.base_model_name_or_path
      return adapter
    } finally {
      file.dispose()
    }
  }

  /**
   * Saves a PEFT adapter directory (adapter_config.json + adapter_model.safetensors, F32, PEFT
   * names) atomically: written into a temporary directory beside `dir`, flushed, then renamed
   * over it, so `dir` never holds a half-written adapter. Other files already in `dir` are kept.
   */
  async save(dir: string): Promise<void> {
    if (typeof dir !== 'string' || dir.length === 0) throw typeError('LoraAdapter.save: dir must be a directory path')
    this.handle // throws when disposed
    await writeDirectoryAtomically(dir, (tmp) => this.writeFiles(tmp))
  }

  /**
   * @internal Writes the adapter's two files into an existing directory (each flushed, not atomic
   * as a pair); `options` make it a PEFT adapter of another task with modules saved whole beside it.
   */
  async writeFiles(dir: string, options: { taskType?: PeftTaskType; modulesToSave?: SavedModules; baseModel?: string } = {}): Promise<void> {
    const tensors: Record<string, TensorToSave> = {}
    for (const [name, data] of this.tensors) tensors[name] = { dtype: 'F32', shape: this.shapeOf(name), data }
    const saved = options.modulesToSave ?? {}
    for (const [module, params] of Object.entries(saved))
      for (const [param, t] of Object.entries(params)) tensors[peftSavedModuleName(module, param)] = t
    const config = this.peftConfig(options.baseModel ?? this.baseModel, options.taskType, Object.keys(saved))
    await writeFileDurable(path.join(dir, 'adapter_config.json'), JSON.stringify(config, null, 2) + '\n')
    await saveSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' })
  }

  /** [r, in] for an A matrix, [out, r] for a B matrix, [tokens, hidden] for trainable token rows. */
  shapeOf(name: string): [number, number] {
    const table: TokenTable | undefined = tokenTableOf(name)
    if (table && this.tensors.has(name)) return [this.trainableTokens[table].length, this.modelConfig.hidden_size]
    const m = /\.layers\.\d+\.(?:self_attn|mlp)\.(\w+)\.lora_([AB])\.weight$/.exec(name)
    if (!m || !this.tensors.has(name)) throw rangeError(`shapeOf: "${name}" is not a tensor of this adapter`)
    const [out, inp] = projectionShape(this.modelConfig, m[1] as Projection)
    return m[2] === 'A' ? [this.config.r, inp] : [out, this.config.r]
  }

  /** Trainable parameters. */
  get numParameters(): number {
    let n = 0
    for (const t of this.tensors.values()) n += t.length
    return n
  }

  /** adapter_config.json's content, as PEFT writes it. */
  peftConfig(baseModel = this.baseModel, taskType: PeftTaskType = 'CAUSAL_LM', modulesToSave: readonly string[] = []): Record<string, unknown> {
    return {
      peft_type: 'LORA',
      task_type: taskType,
      r: this.config.r,
      lora_alpha: this.config.alpha,
      lora_dropout: this.config.dropout,
      bias: 'none',
      use_rslora: this.config.useRslora,
      fan_in_fan_out: false,
      inference_mode: false,
      target_modules: this.config.targetModules,
      ...(modulesToSave.length > 0 ? { modules_to_save: [...modulesToSave] } : {}),
      ...(hasTrainableTokens(this.trainableTokens) ? { trainable_token_indices: peftTrainableTokenIndices(this.trainableTokens) } : {}),
      base_model_name_or_path: baseModel,
    }
  }

  dispose(): void {
    this.handle_?.dispose()
    this.handle_ = undefined
  }
}
