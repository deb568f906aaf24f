// The TS <-> native boundary, typed in one place: every export of the addon (native/addon/*.cc)
// with its exact type, and EXPORTS, the list lib/native.ts checks a loaded addon against.
// lib/native.ts is the only module that touches the binding; the rest of lib/ imports its typed
// members. The kernels' option types are the public ones of lib/kernels/*.ts (imported here);
// the native objects' types (Model, Adapter, KvCache, MappedFile) are declared here.
//
// A new native export: declare it in AddonBinding (an op: in AddonOps, which gives it both
// entry points) and add it to EXPORTS (the compiler insists), then export it from lib/native.ts.
import type { CudaInfo, OnDevice } from './device'
import type { AttentionBackwardOptions, AttentionForwardOptions } from './kernels/attention'
import type { CudaBenchmarkOptions } from './kernels/cuda'
import type { F32OrBf16, GemmOptions } from './kernels/gemm'
import type { Isa } from './kernels/index'
import type { LoraBackwardOptions, LoraForwardOptions } from './kernels/lora'
import type { CrossEntropyOptions, CrossEntropyResult } from './kernels/loss'
import type {
  EmbeddingBackwardOptions,
  EmbeddingForwardOptions,
  RmsNormBackwardOptions,
  RmsNormForwardOptions,
  RopeBackwardOptions,
  RopeForwardOptions,
  RopePairing,
  SwigluBackwardOptions,
  SwigluForwardOptions,
} from './kernels/ops'
import type {
  Adamw8bitStepOptions,
  AdamwStepOptions,
  ClipGradNormOptions,
  DequantizeBlockwiseOptions,
  GradNormOptions,
  QuantizeBlockwiseOptions,
  SgdStepOptions,
} from './kernels/optim'
import type { Objective } from './model/train'
import type { Projection } from './model/weights'
import type { Precision } from './precision'
import type { LinearHeadOptions, Pooling } from './model/forward'
import type { ProjectionSpec } from './model/projections'

// ---- ops ------------------------------------------------------------------------------------

/** An op's options object and what it returns (native/addon/op.h). */
export interface AddonOp<Options, Result = void> {
  options: Options
  result: Result
}

/**
 * The registered ops (ERNIE_OP in native/addon/*.cc). The addon exports each one twice:
 * `name(options)` returns a Promise, the work running on a libuv worker thread; `nameSync`
 * runs it on the calling thread (tests, tiny inputs, and the blocking `kernels.sync` API).
 */
export interface AddonOps {
  gemm: AddonOp<GemmOptions>
  attentionForward: AddonOp<AttentionForwardOptions>
  attentionBackward: AddonOp<AttentionBackwardOptions>
  loraForward: AddonOp<LoraForwardOptions>
  loraBackward: AddonOp<LoraBackwardOptions>
  crossEntropy: AddonOp<CrossEntropyOptions, CrossEntropyResult>
  rmsnormForward: AddonOp<RmsNormForwardOptions>
  rmsnormBackward: AddonOp<RmsNormBackwardOptions>
  ropeForward: AddonOp<RopeForwardOptions>
  ropeBackward: AddonOp<RopeBackwardOptions>
  swigluForward: AddonOp<SwigluForwardOptions>
  swigluBackward: AddonOp<SwigluBackwardOptions>
  embeddingForward: AddonOp<EmbeddingForwardOptions>
  embeddingBackward: AddonOp<EmbeddingBackwardOptions>
  adamwStep: AddonOp<AdamwStepOptions>
  adamw8bitStep: AddonOp<Adamw8bitStepOptions>
  sgdStep: AddonOp<SgdStepOptions>
  quantizeBlockwise: AddonOp<QuantizeBlockwiseOptions>
  dequantizeBlockwise: AddonOp<DequantizeBlockwiseOptions>
  /** The global L2 norm. */
  gradNorm: AddonOp<GradNormOptions, number>
  /** The norm before clipping. */
  clipGradNorm: AddonOp<ClipGradNormOptions, number>
  fillNormal: AddonOp<FillNormalOptions>
  /** The linear classification head on pooled features (native/addon/head.cc, engine/head.h). */
  classifierHead: AddonOp<ClassifierHeadOptions, ClassifierHeadResult>
  /** Median seconds per run; ERR_DEVICE without a CUDA build (native/addon/cuda.cc). */
  cudaBenchmark: AddonOp<CudaBenchmarkOptions, number>
}

/** Each op's Promise entry point. */
export type AddonAsyncOps = { [K in keyof AddonOps]: (options: AddonOps[K]['options']) => Promise<AddonOps[K]['result']> }
/** Each op's blocking twin, `${name}Sync`. */
export type AddonSyncOps = { [K in keyof AddonOps as `${K}Sync`]: (options: AddonOps[K]['options']) => AddonOps[K]['result'] }

/** classifierHead (native/addon/head.cc): logits of B pooled rows; with labels, the loss and its gradients. */
export interface ClassifierHeadOptions extends LinearHeadOptions {
  /** [batch, hidden] */
  features: Float32Array
  batch: number
  hidden: number
  /** [batch, classes], written. */
  logits?: Float32Array
  /** [batch], in [0, classes): the loss and gradients are computed with them. */
  labels?: Int32Array
  /** [classes]: the loss is the class-weighted mean, as torch's CrossEntropyLoss(weight=...). */
  classWeights?: Float32Array
  /** [classes, hidden] and [classes], added to. */
  dWeight?: Float32Array
  dBias?: Float32Array
  /** [batch, hidden], written: the gradient of the features. */
  dFeatures?: Float32Array
}
export interface ClassifierHeadResult {
  loss: number
  weightSum: number
  correct: number
}

/**
 * fillNormal (native/addon/random.cc): deterministic normal samples for random initialisation.
 * Element i depends only on (seed, i), so the result does not depend on the thread count.
 */
export interface FillNormalOptions {
  /** Written: f32, or bf16 bits (rounded to nearest even). */
  out: F32OrBf16
  /** Default 0. */
  mean?: number
  /** >= 0. */
  std: number
  /** An integer in [0, 2^53]. */
  seed: number
}

// ---- the model (native/addon/model.cc) ------------------------------------------------------

/**
 * A weight matrix: the logical [rows, cols] = [out, in] operand, element (r, c) at
 * data[offset + r*ld + c], or at data[offset + c*ld + r] when transposed (Paddle's [in, out]).
 */
export interface NativeMatrix {
  data: F32OrBf16
  /** Default 0. */
  offset?: number
  rows: number
  cols: number
  /** Leading dimension; default the inner size (cols, or rows when transposed). */
  ld?: number
  /** Default false. */
  transposed?: boolean
}

/** The decoder's dimensions (config.json's, resolved). */
export interface NativeModelDims {
  hidden: number
  intermediate: number
  layers: number
  heads: number
  /** Divides heads. */
  kvHeads: number
  /** Even. */
  headDim: number
  vocab: number
  /** RMSNorm's epsilon. */
  eps: number
  ropeTheta: number
  /** Default 'adjacent'. */
  ropePairing?: RopePairing
  /** Qwen3's per-head RMSNorm on q and k (then qNorm and kNorm are required). Default false. */
  qkNorm?: boolean
}

/** One decoder layer's weights: the seven projections and the norms ([dim], f32 or bf16 bits). */
export interface NativeLayerWeights {
  q: NativeMatrix
  k: NativeMatrix
  v: NativeMatrix
  o: NativeMatrix
  gate: NativeMatrix
  up: NativeMatrix
  down: NativeMatrix
  inputNorm: F32OrBf16
  postAttentionNorm: F32OrBf16
  qNorm?: F32OrBf16
  kNorm?: F32OrBf16
}

/**
 * `new Model(options)`. The model keeps the arrays alive; `device` is where its weights are
 * placed, once, and where every call runs ('cuda': on device `deviceIndex`, default 0).
 */
export interface NativeModelOptions extends OnDevice {
  /** With device 'cuda': the CUDA device, in [0, 1024] (default 0). */
  deviceIndex?: number
  dims: NativeModelDims
  /** [vocab, hidden], not transposed. */
  embed: NativeMatrix
  /** [vocab, hidden] (the embedding's view when tied). */
  lmHead: NativeMatrix
  finalNorm: F32OrBf16
  /** dims.layers of them. */
  layers: NativeLayerWeights[]
  /**
   * The CPU engine may keep its bf16 weights packed for bf16 products (AVX512_BF16), as much
   * memory again; false where the weights change between calls. Default true.
   */
  prepack?: boolean
}

/** The token batch of forward and trainStep: [batch, seq] each, row-major. */
export interface NativeBatch {
  /** Each in [0, vocab). */
  inputIds: Int32Array
  /** 1 for a real token, 0 for padding. Default all 1. */
  attentionMask?: Int32Array
  /** Packed documents: a run of equal ids is one document (its own keys, positions from 0). */
  segmentIds?: Int32Array
  batch: number
  seq: number
}

/** model.forward: the outputs asked for are written. */
export interface NativeForwardOptions extends NativeBatch {
  /** [batch, seq, hidden]: the final (normed) hidden states. */
  hidden?: Float32Array
  /** [batch, seq, vocab] */
  logits?: Float32Array
  /** [batch, hidden]: each row's last real token's hidden state. */
  lastHidden?: Float32Array
  /** [batch, hidden]: each row pooled as `pooling` says (native/engine/pooling.h). */
  pooled?: Float32Array
  pooling?: Pooling
  /** A linear classification head on the pooled rows; its logits go to headLogits [batch, classes]. */
  head?: LinearHeadOptions
  headLogits?: Float32Array
  /** Scoring: [batch, seq] token ids (negative: not scored); rowLogProbs [batch] gets each row's sum of log-probabilities. */
  targets?: Int32Array
  rowLogProbs?: Float64Array
  adapter?: NativeAdapter
  /** The call runs on its worker thread alone, not on the pool (calls side by side, one per core). */
  singleThread?: boolean
  /** Of every matrix product; default 'auto'. */
  precision?: Precision
}

/** model.decode: runs `inputIds` after the tokens in `cache` and writes the last one's logits. */
export interface NativeDecodeOptions {
  cache: NativeKvCache
  /** [count], count >= 1; each in [0, vocab). */
  inputIds: Int32Array
  /** [vocab], written. */
  logits: Float32Array
  adapter?: NativeAdapter
  precision?: Precision
}

/** The gradients of one layer's weights, added to (f32, [out, in] or [dim]). */
export type NativeLayerGrads = { [K in keyof NativeLayerWeights]?: Float32Array }
/** The gradients of one layer's LoRA matrices, added to: [rank, in] and [out, rank]. */
export type NativeLoraGrads = { [P in Projection]?: { a: Float32Array; b: Float32Array } }

/** trainStep's `grads`: the f32 arrays its gradients are added to; what is absent gets none. */
export interface NativeGrads {
  /** [vocab, hidden] */
  embed?: Float32Array
  /** [vocab, hidden] */
  lmHead?: Float32Array
  /** [hidden] */
  finalNorm?: Float32Array
  /** dims.layers entries when given (an absent `layers`: the base is frozen). */
  layers?: NativeLayerGrads[]
  /** dims.layers entries; needs `adapter`. */
  lora?: NativeLoraGrads[]
  /** The gradients of a few embedding rows alone (distinct ids; rows [ids.length, hidden]). */
  embedRows?: NativeTokenRowGrads
  /** The same for the LM head; a tied head passes embedRows' very arrays (both parts add up there). */
  lmHeadRows?: NativeTokenRowGrads
}

/** Trainable token rows' gradients: row j of `rows` gets the gradient of table row ids[j]. */
export interface NativeTokenRowGrads {
  ids: Int32Array
  rows: Float32Array
}

/** model.trainStep: forward, loss and backward in one call. */
export interface NativeTrainStepOptions extends NativeBatch {
  adapter?: NativeAdapter
  /** Recompute activations in the backward instead of keeping them. Default false. */
  recompute?: boolean
  /** Seeds the adapter's dropout masks; an integer in [0, 2^53]. Default 0. */
  dropoutSeed?: number
  precision?: Precision
  /** The step's forward (its dropout included) and loss, no backward. Default false. */
  forwardOnly?: boolean
  loss: Objective
  grads: NativeGrads
}

export interface NativeTrainStepResult {
  /** Mean over the positions (or sequences) with a target. */
  loss: number
  count: number
}

/** A native model (`new Model(options)`); calls after dispose() throw. */
export interface NativeModel {
  forward(options: NativeForwardOptions): Promise<void>
  forwardSync(options: NativeForwardOptions): void
  trainStep(options: NativeTrainStepOptions): Promise<NativeTrainStepResult>
  trainStepSync(options: NativeTrainStepOptions): NativeTrainStepResult
  /** Promise only: generation runs off the JS thread. */
  decode(options: NativeDecodeOptions): Promise<void>
  /** The backend its weights live on and its calls run on. */
  readonly backend: 'cpu' | 'cuda' | 'checked'
  /** Drops the native state (a running call keeps its own reference). */
  dispose(): void
}
export interface NativeModelConstructor {
  new (options: NativeModelOptions): NativeModel
}

/** One LoRA: A [rank, inFeatures] and B [outFeatures, rank], y += scale (x A^T) B^T. */
export interface NativeLoraMatrices {
  a: Float32Array
  b: Float32Array
  /** In [1, 4096]. */
  rank: number
  scale: number
  inFeatures: number
  outFeatures: number
}
/** A layer's LoRAs, by PEFT module name; checked against the model's shapes at each call. */
export type NativeAdapterLayer = { [P in Projection]?: NativeLoraMatrices }
export interface NativeAdapterOptions {
  layers: NativeAdapterLayer[]
  /** On the adapter's input in training, in [0, 1). Default 0. */
  dropout?: number
  /**
   * Trainable token rows: [vocab, hidden] row-major tables the adapter's calls read in place of
   * the model's embedding / LM head (a tied head: lmHead views embed's array).
   */
  embed?: NativeMatrix
  lmHead?: NativeMatrix
}
/** A LoRA adapter for a model's calls (`adapter`); keeps its arrays alive. */
export interface NativeAdapter {
  dispose(): void
}
export interface NativeAdapterConstructor {
  new (options: NativeAdapterOptions): NativeAdapter
}

export interface NativeKvCacheOptions {
  /** Tokens it holds, in [1, 2^20]. */
  maxLength: number
}
/** A generation cache, sized for a model at its first decode. */
export interface NativeKvCache {
  /** Tokens in the cache (0 once disposed). */
  readonly length: number
  dispose(): void
}
export interface NativeKvCacheConstructor {
  new (options: NativeKvCacheOptions): NativeKvCache
}

// ---- memory-mapped files (native/addon/mmap.cc) ---------------------------------------------

/**
 * A whole file mapped private copy-on-write. Opening errors carry `code` (ENOENT, EACCES,
 * EISDIR, ERR_EMPTY_FILE, ERR_NOT_A_FILE) and `path`.
 */
export interface NativeMappedFile {
  readonly byteLength: number
  readonly path: string
  readonly disposed: boolean
  /** A new ArrayBuffer over [offset, offset + length) of the mapping (no copy). */
  buffer(offset?: number, length?: number): ArrayBuffer
  /** Detaches every ArrayBuffer handed out, then unmaps (after running native jobs). Idempotent. */
  dispose(): void
  /** Throws ERR_FILE_CHANGED (with `path`) when the file was truncated or rewritten in place since it was mapped. */
  checkUnchanged(): void
}
export interface NativeMappedFileConstructor {
  new (path: string): NativeMappedFile
}

// ---- CUDA (native/addon/cuda.cc) ------------------------------------------------------------

/** Device memory of the caching pool, in bytes. */
export interface CudaPoolStats {
  inUse: number
  cached: number
}

// ---- the binding ----------------------------------------------------------------------------

/** Everything the addon exports (native/addon/addon.cc, op.cc's registry and exporters). */
export interface AddonBinding extends AddonAsyncOps, AddonSyncOps {
  // The engine's settings (addon.cc).
  /** Instruction sets this CPU and binary support, lowest first. */
  supportedIsas(): Isa[]
  /** The instruction set the kernels use now. */
  activeIsa(): Isa
  /** RangeError for an ISA this CPU lacks. */
  setIsa(isa: Isa): void
  numThreads(): number
  /** In [1, 1024]. */
  setNumThreads(n: number): void
  physicalCores(): number
  /**
   * True in the test-only build (`npm run build:avx512-emu`) whose AVX-512 kernels are AVX2 code
   * emulating AVX-512: right answers, meaningless speed.
   */
  avx512Emulated: boolean

  /** The seven projections of a layer as the engine states them (native/engine/model.h kProjections). */
  projections: ProjectionSpec[]

  // The native objects (model.cc, mmap.cc).
  Model: NativeModelConstructor
  Adapter: NativeAdapterConstructor
  KvCache: NativeKvCacheConstructor
  MappedFile: NativeMappedFileConstructor

  // CUDA (cuda.cc); a build without CUDA has them all: cudaInfo() then says { built: false }.
  cudaInfo(): CudaInfo
  /** RangeError for a device that does not exist; an Error in a build without CUDA. */
  setCudaDevice(index: number): void
  cudaPoolStats(): CudaPoolStats
  cudaTrimPool(): void
}

/** What `typeof` says of an export of type T. */
type ExportKind<T> = T extends (...args: never[]) => unknown
  ? 'function'
  : T extends abstract new (...args: never[]) => unknown
    ? 'function'
    : T extends boolean
      ? 'boolean'
      : T extends object
        ? 'object'
        : never

/**
 * Every export AddonBinding declares, with its `typeof`: lib/native.ts checks a loaded addon
 * against this list before anything uses it. The `satisfies` makes it complete and exact (a
 * declared export missing here, or one here that is not declared, fails to compile).
 */
export const EXPORTS = {
  supportedIsas: 'function',
  activeIsa: 'function',
  setIsa: 'function',
  numThreads: 'function',
  setNumThreads: 'function',
  physicalCores: 'function',
  avx512Emulated: 'boolean',
  Model: 'function',
  Adapter: 'function',
  KvCache: 'function',
  MappedFile: 'function',
  cudaInfo: 'function',
  setCudaDevice: 'function',
  cudaPoolStats: 'function',
  cudaTrimPool: 'function',
  gemm: 'function',
  gemmSync: 'function',
  attentionForward: 'function',
  attentionForwardSync: 'function',
  attentionBackward: 'function',
  attentionBackwardSync: 'function',
  loraForward: 'function',
  loraForwardSync: 'function',
  loraBackward: 'function',
  loraBackwardSync: 'function',
  crossEntropy: 'function',
  crossEntropySync: 'function',
  rmsnormForward: 'function',
  rmsnormForwardSync: 'function',
  rmsnormBackward: 'function',
  rmsnormBackwardSync: 'function',
  ropeForward: 'function',
  ropeForwardSync: 'function',
  ropeBackward: 'function',
  ropeBackwardSync: 'function',
  swigluForward: 'function',
  swigluForwardSync: 'function',
  swigluBackward: 'function',
  swigluBackwardSync: 'function',
  embeddingForward: 'function',
  embeddingForwardSync: 'function',
  embeddingBackward: 'function',
  embeddingBackwardSync: 'function',
  adamwStep: 'function',
  adamwStepSync: 'function',
  adamw8bitStep: 'function',
  adamw8bitStepSync: 'function',
  sgdStep: 'function',
  sgdStepSync: 'function',
  quantizeBlockwise: 'function',
  quantizeBlockwiseSync: 'function',
  dequantizeBlockwise: 'function',
  dequantizeBlockwiseSync: 'function',
  gradNorm: 'function',
  gradNormSync: 'function',
  clipGradNorm: 'function',
  clipGradNormSync: 'function',
  fillNormal: 'function',
  fillNormalSync: 'function',
  cudaBenchmark: 'function',
  cudaBenchmarkSync: 'function',
  classifierHead: 'function',
  classifierHeadSync: 'function',
  projections: 'object',
} as const satisfies { readonly [K in keyof AddonBinding]-?: ExportKind<AddonBinding[K]> }
