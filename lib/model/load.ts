// Checkpoints read: config.json, the weights as a tensor source (a safetensors file viewed in
// place, or tensors in memory), random weights for a config, and fromPretrained's loading.
import * as fs from 'node:fs'
import * as path from 'node:path'

import { resolveModelDevice, type Device } from '../device'
import { resolvePrecision, type Precision } from '../precision'
import { ErnieError, typeError } from '../errors'
import { resolveModel, type ResolveOptions } from '../hub'
import { parseJsonBytes } from '../io/json'
import { readSmallFileSync } from '../io/read'
import { openSafetensors, type Safetensors } from '../io/safetensors'
import { fillNormalSync } from '../native'
import { hasTokenizerFiles, Tokenizer } from '../tokenizer'
import { withVocabulary } from './resize'
import { resolveConfig, type ResolvedConfig } from './config'
import { f16ToBf16 } from './dtype'
import { checkpointShapes } from './layout'
import { isClassificationHead, mapWeights, unusedTensors, type ModelViews, type TensorSource, type WeightArray } from './weights'

/** Reads and validates a directory's config.json. */
export function readConfig(dir: string): ResolvedConfig {
  const file = path.join(dir, 'config.json')
  let bytes: Buffer
  try {
    bytes = readSmallFileSync(file, 'config')
  } catch (e) {
    if (e instanceof ErnieError) throw e // not a regular file, or past its size cap: named by the reader
    throw new ErnieError('ERR_MODEL_NOT_FOUND', `${file}: cannot read config.json (${(e as Error).message})`, { cause: e })
  }
  let raw: unknown
  try {
    raw = parseJsonBytes(bytes)
  } catch (e) {
    throw new ErnieError('ERR_CONFIG', `${file}: invalid JSON (${(e as Error).message})`, { cause: e })
  }
  return resolveConfig(raw, file)
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
    this.file.checkUnchanged() // a truncated file read from JS would crash the process
    const v = this.file.view(name)
    if (info.dtype === 'BF16' || info.dtype === 'F32') return v as WeightArray
    if (info.dtype === 'F16') return f16ToBf16(v as Uint16Array)
    throw new ErnieError('ERR_CHECKPOINT', `${this.file.path}: tensor "${name}" has dtype ${info.dtype}; expected BF16, F16 or F32`)
  }
}

const ONE_BF16 = 0x3f80

export interface RandomOptions {
  /** 'cpu', 'auto' (default, or ERNIE_DEVICE) or 'cuda': see FromPretrainedOptions.device. */
  device?: Device
  /** See FromPretrainedOptions.precision. */
  precision?: Precision
  seed?: number
  /** Standard deviation of the weights (default: the config's initializer_range, as HF's, else 0.02); norms start at 1. */
  std?: number
  /** See FromPretrainedOptions.resizeTokenEmbeddings. */
  resizeTokenEmbeddings?: number
}

/** Random bf16 weights for a config, as HF initialises them. */
export function randomTensors(cfg: ResolvedConfig, options: RandomOptions = {}): MemoryTensors {
  const seed = options.seed ?? 0
  const std = options.std ?? (cfg.initializer_range as number | undefined) ?? 0.02
  const tensors = new Map<string, { shape: number[]; data: WeightArray }>()
  let i = 0
  for (const [name, shape] of checkpointShapes(cfg)) {
    const data = new Uint16Array(shape.reduce((a, b) => a * b, 1))
    if (name.endsWith('norm.weight')) data.fill(ONE_BF16)
    else fillNormalSync({ out: data, std, seed: seed * 1000 + i++ })
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
  /** Where the weights are placed and the graph runs (default 'cpu'). */
  device?: 'cpu' | 'cuda'
  /** Tensors of the checkpoint the model does not use, when loaded with unusedTensors: 'ignore'. */
  ignoredTensors?: string[]
}

export interface FromPretrainedOptions extends ResolveOptions {
  /**
   * Load the directory's tokenizer too (true, the default when it has one), none (false), or use
   * this one: a tokenizer saved beside an adapter with the special tokens it trained
   * (`withSpecialTokens`). When its ids pass the checkpoint's rows, the vocabulary grows to its
   * size as resizeTokenEmbeddings grows it (unless that option says otherwise).
   */
  tokenizer?: boolean | Tokenizer
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
  /**
   * A checkpoint tensor that no part of the model uses (a config with fewer layers than the
   * file, a file holding both the HF and the Paddle layout, an extra module) is an error
   * ('error', the default), or is left unread and listed in `model.ignoredTensors` ('ignore').
   */
  unusedTensors?: 'error' | 'ignore'
  /** Load weights holding NaN or infinity (default false: ERR_CHECKPOINT naming the tensor). */
  allowNonFinite?: boolean
  /**
   * Grow the vocabulary to this many rows (more than config.json's vocab_size), for special tokens a
   * tokenizer adds past the checkpoint's rows (`tokenizer.withSpecialTokens`): the embedding, and an
   * untied LM head, get new rows set to the mean of the old ones (transformers' mean resizing,
   * without its noise); the old rows, and so everything the model computes on old tokens, are
   * unchanged. The grown model saves with the new vocab_size. Held in memory (the embedding's size).
   */
  resizeTokenEmbeddings?: number
  /**
   * true (default): the weights are memory-mapped, shared with the page cache and read in place;
   * a file truncated or rewritten later is ERR_FILE_CHANGED at the next call. false: they are read
   * into memory of the process's own (the files' size), which nothing done to the files can reach.
   */
  mmap?: boolean
}

/**
 * ErnieModel.fromPretrained: the checkpoint resolved (directory or hub id), its config read and
 * its safetensors mapped, and the model made by `create` from those parts.
 */
export async function loadPretrained<M extends { precision: Precision }>(source: string, options: FromPretrainedOptions, create: (parts: ModelParts) => M): Promise<M> {
  if (typeof source !== 'string' || source.length === 0) throw typeError('fromPretrained: source must be a directory or a hub id')
  const device = resolveModelDevice(options.device, 'fromPretrained: device')
  const precision = resolvePrecision(options.precision, 'fromPretrained: precision')
  const dir = await resolveModel(source, options)
  const checkpointConfig = readConfig(dir)
  const single = path.join(dir, 'model.safetensors')
  if (!fs.existsSync(single) && !fs.existsSync(path.join(dir, 'model.safetensors.index.json')))
    throw new ErnieError('ERR_MODEL_NOT_FOUND', `${single}: no such file (nor a sharded model.safetensors.index.json) beside config.json`)
  const file = openSafetensors(dir)
  try {
    if (options.mmap === false) await file.readIntoMemory()
    // A tokenizer given with ids past the checkpoint's rows (special tokens it added) needs them.
    const given = options.tokenizer instanceof Tokenizer ? options.tokenizer : undefined
    const rows = options.resizeTokenEmbeddings ?? (given && given.vocabSize > checkpointConfig.vocab_size ? given.vocabSize : undefined)
    const { config: cfg, source: src } = withVocabulary(checkpointConfig, new SafetensorsSource(file), rows)
    const weights = mapWeights(cfg, src)
    const unused = unusedTensors(src, weights)
    // A *ForSequenceClassification checkpoint's head is explained by its config: not the decoder's, not an error.
    const unexplained = unused.filter((n) => !isClassificationHead(cfg, n))
    if (unexplained.length > 0 && options.unusedTensors !== 'ignore')
      throw new ErnieError(
        'ERR_CHECKPOINT',
        `${file.path}: ${unexplained.length} tensor(s) that no part of the model config.json describes uses: ${unexplained.slice(0, 5).join(', ')}` +
          `${unexplained.length > 5 ? ', ...' : ''} (num_hidden_layers ${cfg.num_hidden_layers}, ${weights.layout} layout). ` +
          `A config with fewer layers than the checkpoint, a file holding two layouts, or an extra module? Pass unusedTensors: 'ignore' to load past them`,
      )
    if (options.allowNonFinite !== true) await refuseNonFinite(src, weights.tensorNames)
    const tokenizer = given ?? (options.tokenizer !== false && hasTokenizerFiles(dir) ? await Tokenizer.fromDirectory(dir) : undefined)
    const model = create({ config: cfg, weights, source: src, release: () => file.dispose(), directory: dir, tokenizer, device, ignoredTensors: unused })
    model.precision = precision
    return model
  } catch (e) {
    file.dispose()
    throw e
  }
}

// Elements scanned between yields to the event loop: a few milliseconds of work.
const SCAN_CHUNK = 1 << 22

/**
 * A NaN or infinity in the weights (a corrupted or badly converted file) would turn every logit
 * to NaN without a word: refused, naming the tensor and the first bad element. The scan reads
 * each weight once, in chunks that yield to the event loop.
 */
async function refuseNonFinite(src: TensorSource, names: Iterable<string>): Promise<void> {
  for (const name of names) {
    if (!src.has(name)) continue
    const v = src.view(name)
    // All exponent bits set: infinity (mantissa 0) or NaN, in bf16 and in f32 alike.
    const f32 = v instanceof Float32Array
    const bits = f32 ? new Uint32Array(v.buffer, v.byteOffset, v.length) : v
    const exponent = f32 ? 0x7f800000 : 0x7f80
    const mantissa = f32 ? 0x7fffff : 0x7f
    for (let start = 0; start < bits.length; start += SCAN_CHUNK) {
      const end = Math.min(bits.length, start + SCAN_CHUNK)
      for (let i = start; i < end; i++) {
        if ((bits[i] & exponent) !== exponent) continue
        const what = (bits[i] & mantissa) !== 0 ? 'NaN' : 'an infinity'
        throw new ErnieError('ERR_CHECKPOINT', `${src.description}: tensor "${name}" holds ${what} at element ${i}; pass allowNonFinite: true to load it anyway`)
      }
      if (end < bits.length) await new Promise((resolve) => setImmediate(resolve))
    }
  }
}
