// Typed access to the engine's kernels and settings. Each kernel runs off the JS thread and
// returns a Promise (argument errors reject it); `kernels.sync` holds blocking twins for tests
// and tiny inputs. One file per kernel family.
import * as addon from '../native'
import { attentionBackwardSync, attentionForwardSync } from './attention'
import { gemmSync } from './gemm'
import { loraSync } from './lora'
import { opsSync } from './ops'

export * from './attention'
export * from './gemm'
export * from './lora'
export * from './ops'
import { crossEntropySync } from './loss'
import {
  adamw8bitStepSync,
  adamwStepSync,
  clipGradNormSync,
  dequantizeBlockwiseSync,
  gradNormSync,
  quantizeBlockwiseSync,
  sgdStepSync,
} from './optim'

export * from './loss'
export * from './optim'
export { cuda, setCudaDevice, cudaPoolStats, cudaTrimPool, type CudaBenchmarkOptions } from './cuda'
export { cudaInfo, cudaBuilt, cudaDevices, type CudaDevice, type CudaInfo } from '../device'
export { PRECISIONS, precisionInForce, resolvePrecision, type Precision } from '../precision'

export type Isa = 'generic' | 'avx2' | 'avx512' | 'avx512bf16'

/** Instruction sets this CPU and binary support, lowest first. */
export function supportedIsas(): Isa[] {
  return addon.supportedIsas()
}
/** Whether the AVX-512 ISAs are emulated (the test-only build `npm run build:avx512-emu`). */
export function avx512Emulated(): boolean {
  return addon.avx512Emulated
}
/** The instruction set the kernels use now. */
export function activeIsa(): Isa {
  return addon.activeIsa()
}
/** Selects a lower (or the best) instruction set; RangeError if this CPU lacks it. */
export function setIsa(isa: Isa): void {
  addon.setIsa(isa)
}
/** Threads the engine computes on (physical cores unless ERNIE_NUM_THREADS says otherwise). */
export function numThreads(): number {
  return addon.numThreads()
}
export function setNumThreads(n: number): void {
  addon.setNumThreads(n)
}

/** Blocking twins of the kernels, for tests and tiny inputs. */
export const sync = {
  gemm: gemmSync,
  ...loraSync,
  ...opsSync,
  crossEntropy: crossEntropySync,
  adamwStep: adamwStepSync,
  adamw8bitStep: adamw8bitStepSync,
  sgdStep: sgdStepSync,
  quantizeBlockwise: quantizeBlockwiseSync,
  dequantizeBlockwise: dequantizeBlockwiseSync,
  gradNorm: gradNormSync,
  clipGradNorm: clipGradNormSync,
  attentionForward: attentionForwardSync,
  attentionBackward: attentionBackwardSync,
}

