// The kernels on the CUDA backend: the same options as their CPU forms (gemm.ts, attention.ts,
// ...) with device 'cuda', host arrays in and out. Each call copies its inputs to the GPU, runs
// there and copies the results back: these are for checking the backend against the CPU and for
// standalone use, not a hot path (a model on 'cuda' keeps its weights and activations there).
// Differences from the CPU forms: products (GEMM, attention, LoRA, the loss's logits) use bf16
// tensor cores with f32 accumulation, so `precision` 'fp32' is a RangeError there (and
// ERNIE_PRECISION=fp32 too); attention takes headDim <= 128; sums made with atomics
// (attention's dq, the embedding backward) are not bitwise reproducible.
//
// Without a CUDA build or device each call throws (sync) or rejects (async) an ErnieError with
// code ERR_DEVICE that says which is missing (see lib/device.ts).
import type { CudaPoolStats } from '../addon-types'
import { cudaUnavailableReason, type OnDevice } from '../device'
import { ErnieError } from '../errors'
import * as addon from '../native'
import { withPrecision } from '../precision'
import type { AttentionBackwardOptions, AttentionForwardOptions } from './attention'
import type { GemmOptions } from './gemm'
import type { LoraBackwardOptions, LoraForwardOptions } from './lora'
import type { CrossEntropyOptions, CrossEntropyResult } from './loss'
import type {
  EmbeddingBackwardOptions,
  EmbeddingForwardOptions,
  RmsNormBackwardOptions,
  RmsNormForwardOptions,
  RopeBackwardOptions,
  RopeForwardOptions,
  SwigluBackwardOptions,
  SwigluForwardOptions,
} from './ops'
import type { Adamw8bitStepOptions, AdamwStepOptions } from './optim'

function requireCuda(op: string): void {
  const reason = cudaUnavailableReason()
  if (reason !== undefined) throw new ErnieError('ERR_DEVICE', `kernels.cuda.${op}: device "cuda" is not available: ${reason}`)
}

// An op's two entry points (Promise, blocking) on device 'cuda', checking for CUDA first. The
// matrix products' ops (`products`) get their precision resolved as on the CPU (ERNIE_PRECISION).
function onCuda<O extends OnDevice, R>(name: string, run: (o: O) => Promise<R>, sync: (o: O) => R, products = false) {
  const args = (o: O): O => ({ ...(products ? withPrecision(o) : o), device: 'cuda' })
  return {
    run: async (o: O): Promise<R> => {
      requireCuda(name)
      return run(args(o))
    },
    sync: (o: O): R => {
      requireCuda(name)
      return sync(args(o))
    },
  }
}

const gemmOp = onCuda('gemm', addon.gemm, addon.gemmSync, true)
const attentionForwardOp = onCuda('attentionForward', addon.attentionForward, addon.attentionForwardSync, true)
const attentionBackwardOp = onCuda('attentionBackward', addon.attentionBackward, addon.attentionBackwardSync, true)
const loraForwardOp = onCuda('loraForward', addon.loraForward, addon.loraForwardSync, true)
const loraBackwardOp = onCuda('loraBackward', addon.loraBackward, addon.loraBackwardSync, true)
const rmsnormForwardOp = onCuda('rmsnormForward', addon.rmsnormForward, addon.rmsnormForwardSync)
const rmsnormBackwardOp = onCuda('rmsnormBackward', addon.rmsnormBackward, addon.rmsnormBackwardSync)
const ropeForwardOp = onCuda('ropeForward', addon.ropeForward, addon.ropeForwardSync)
const ropeBackwardOp = onCuda('ropeBackward', addon.ropeBackward, addon.ropeBackwardSync)
const swigluForwardOp = onCuda('swigluForward', addon.swigluForward, addon.swigluForwardSync)
const swigluBackwardOp = onCuda('swigluBackward', addon.swigluBackward, addon.swigluBackwardSync)
const embeddingForwardOp = onCuda('embeddingForward', addon.embeddingForward, addon.embeddingForwardSync)
const embeddingBackwardOp = onCuda('embeddingBackward', addon.embeddingBackward, addon.embeddingBackwardSync)
const crossEntropyOp = onCuda('crossEntropy', addon.crossEntropy, addon.crossEntropySync, true)
const adamwStepOp = onCuda('adamwStep', addon.adamwStep, addon.adamwStepSync)
const adamw8bitStepOp = onCuda('adamw8bitStep', addon.adamw8bitStep, addon.adamw8bitStepSync)

/** What `npm run bench:cuda` times (device-resident inputs, CUDA events). */
export type CudaBenchmarkOptions =
  | { kind: 'gemm'; m: number; n: number; k: number; iterations?: number }
  | {
      kind: 'attention_forward' | 'attention_backward'
      batch: number
      seq: number
      heads: number
      kvHeads: number
      headDim: number
      iterations?: number
    }
  | {
      kind: 'lora_layer'
      batch: number
      seq: number
      heads: number
      kvHeads: number
      headDim: number
      hidden: number
      intermediate: number
      rank: number
      iterations?: number
    }

// The benchmark runs on the CUDA backend itself: it takes no `device`.
async function benchmark(o: CudaBenchmarkOptions): Promise<number> {
  requireCuda('cudaBenchmark')
  return addon.cudaBenchmark(o)
}

/** The kernels on the CUDA backend (Promise forms; `cuda.sync` holds the blocking twins). */
export const cuda = {
  gemm: gemmOp.run,
  attentionForward: attentionForwardOp.run,
  attentionBackward: attentionBackwardOp.run,
  loraForward: loraForwardOp.run,
  loraBackward: loraBackwardOp.run,
  rmsnormForward: rmsnormForwardOp.run,
  rmsnormBackward: rmsnormBackwardOp.run,
  ropeForward: ropeForwardOp.run,
  ropeBackward: ropeBackwardOp.run,
  swigluForward: swigluForwardOp.run,
  swigluBackward: swigluBackwardOp.run,
  embeddingForward: embeddingForwardOp.run,
  embeddingBackward: embeddingBackwardOp.run,
  crossEntropy: crossEntropyOp.run,
  adamwStep: adamwStepOp.run,
  adamw8bitStep: adamw8bitStepOp.run,
  /** Median seconds per run of a device-resident benchmark. */
  benchmark,
  sync: {
    gemm: gemmOp.sync,
    attentionForward: attentionForwardOp.sync,
    attentionBackward: attentionBackwardOp.sync,
    loraForward: loraForwardOp.sync,
    loraBackward: loraBackwardOp.sync,
    rmsnormForward: rmsnormForwardOp.sync,
    rmsnormBackward: rmsnormBackwardOp.sync,
    ropeForward: ropeForwardOp.sync,
    ropeBackward: ropeBackwardOp.sync,
    swigluForward: swigluForwardOp.sync,
    swigluBackward: swigluBackwardOp.sync,
    embeddingForward: embeddingForwardOp.sync,
    embeddingBackward: embeddingBackwardOp.sync,
    crossEntropy: crossEntropyOp.sync,
    adamwStep: adamwStepOp.sync,
    adamw8bitStep: adamw8bitStepOp.sync,
  },
}

/** Selects the CUDA device the kernels run on (default 0); RangeError for one that does not exist. */
export function setCudaDevice(index: number): void {
  requireCuda('setCudaDevice')
  addon.setCudaDevice(index)
}

/** Device memory the caching pool holds: in use by running calls, and cached for reuse (bytes). */
export function cudaPoolStats(): CudaPoolStats {
  return addon.cudaPoolStats()
}

/** Returns the pool's cached device memory to the driver. */
export function cudaTrimPool(): void {
  addon.cudaTrimPool()
}
