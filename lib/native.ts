// The native addon: loaded once (a prebuild from prebuilds/, build/Release from a source build,
// or the file ERNIE_ADDON names), checked against the exports lib/addon-types.ts declares before
// anything uses it, and handed out as typed functions and classes. This is the only module that
// touches the binding object; the rest of lib/ imports the members below (lib/kernels/ wraps
// the ops for the public API).
import * as fs from 'node:fs'
import * as path from 'node:path'

import {
  EXPORTS,
  type AddonBinding,
  type NativeAdapter as NativeAdapterInstance,
  type NativeKvCache as NativeKvCacheInstance,
  type NativeMappedFile as NativeMappedFileInstance,
  type NativeModel as NativeModelInstance,
} from './addon-types'
import { ErnieError } from './errors'

// The package root: lib/ when run from source, dist/lib/ when compiled.
function packageRoot(): string {
  let dir = __dirname
  while (!fs.existsSync(path.join(dir, 'package.json'))) {
    const up = path.dirname(dir)
    if (up === dir) throw new Error(`ernie-sentiment: no package.json above ${__dirname}`)
    dir = up
  }
  return dir
}

// The addon's module object and the file it came from.
function requireAddon(): { exports: unknown; file: string } {
  // An explicit addon file (e.g. build-cuda/Release/ernie.node, the CUDA build) instead of the
  // one node-gyp-build finds.
  const explicit = process.env.ERNIE_ADDON
  if (explicit) {
    const file = path.resolve(explicit)
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return { exports: require(file), file }
    } catch (err) {
      throw new ErnieError('ERR_ERNIE_NATIVE_LOAD', `ernie-sentiment: could not load the addon ERNIE_ADDON=${explicit}: ${(err as Error).message}`, { cause: err })
    }
  }
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    const file = (require('node-gyp-build') as { resolve(dir: string): string }).resolve(packageRoot())
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return { exports: require(file), file }
  } catch (err) {
    throw new ErnieError(
      'ERR_ERNIE_NATIVE_LOAD',
      `ernie-sentiment: could not load its native addon for ${process.platform}-${process.arch} ` +
        `(Node ${process.versions.node}). No prebuilt binary matched and no source build was found ` +
        `or it failed to load. Build it from source with \`npm rebuild ernie-sentiment\` ` +
        `(needs python3, make and a C++17 compiler). Cause: ${(err as Error).message}`,
      { cause: err },
    )
  }
}

/**
 * `exports` as the binding, once it has every export AddonBinding declares (EXPORTS), each of
 * the declared kind. Otherwise an ErnieError ERR_ERNIE_NATIVE_LOAD that names every one missing
 * or of another kind: an addon built from other sources (a stale build), caught here at load
 * rather than at the first call of what it lacks.
 */
export function checkBinding(exports: unknown, file: string): AddonBinding {
  const found = (typeof exports === 'object' && exports !== null ? exports : {}) as Record<string, unknown>
  const missing: string[] = []
  const otherKind: string[] = []
  for (const [name, kind] of Object.entries(EXPORTS)) {
    const actual = typeof found[name]
    if (actual === 'undefined') missing.push(name)
    else if (actual !== kind) otherKind.push(`${name} (a ${actual}, expected a ${kind})`)
  }
  if (missing.length > 0 || otherKind.length > 0)
    throw new ErnieError(
      'ERR_ERNIE_NATIVE_LOAD',
      `ernie-sentiment: the native addon ${file} does not match this version of the library (a stale build?): ` +
        [missing.length > 0 && `it lacks ${missing.join(', ')}`, otherKind.length > 0 && `of another kind: ${otherKind.join(', ')}`].filter(Boolean).join('; ') +
        '. Rebuild it (npm rebuild ernie-sentiment)',
    )
  return exports as AddonBinding
}

function load(): AddonBinding {
  const { exports, file } = requireAddon()
  return checkBinding(exports, file)
}

/** @internal The binding object itself, for tests of the raw native entry points. */
export const native: AddonBinding = load()

// The engine's settings.
export const { supportedIsas, activeIsa, setIsa, numThreads, setNumThreads, physicalCores, avx512Emulated } = native

// The ops: a Promise each (the work on a libuv worker thread), and its blocking twin for tests
// and the public `kernels.sync` API. Library code calls the Promise forms, except behind one
// public synchronous API: ErnieModel.random / randomTensors (fillNormalSync: random weights).
export const {
  gemm,
  gemmSync,
  attentionForward,
  attentionForwardSync,
  attentionBackward,
  attentionBackwardSync,
  loraForward,
  loraForwardSync,
  loraBackward,
  loraBackwardSync,
  crossEntropy,
  crossEntropySync,
  rmsnormForward,
  rmsnormForwardSync,
  rmsnormBackward,
  rmsnormBackwardSync,
  ropeForward,
  ropeForwardSync,
  ropeBackward,
  ropeBackwardSync,
  swigluForward,
  swigluForwardSync,
  swigluBackward,
  swigluBackwardSync,
  embeddingForward,
  embeddingForwardSync,
  embeddingBackward,
  embeddingBackwardSync,
  adamwStep,
  adamwStepSync,
  adamw8bitStep,
  adamw8bitStepSync,
  sgdStep,
  sgdStepSync,
  quantizeBlockwise,
  quantizeBlockwiseSync,
  dequantizeBlockwise,
  dequantizeBlockwiseSync,
  gradNorm,
  gradNormSync,
  clipGradNorm,
  clipGradNormSync,
  fillNormal,
  fillNormalSync,
  cudaBenchmark,
  cudaBenchmarkSync,
  classifierHead,
  classifierHeadSync,
} = native

/** The seven projections of a layer, as the engine states them. */
export const { projections } = native

// CUDA: present in every build; cudaInfo() says whether this one has the backend.
export const { cudaInfo, setCudaDevice, cudaPoolStats, cudaTrimPool } = native

// The native objects, each a class: its constructor and its instances' type.
/** The decoder on its backend (`new NativeModel(options)`, see NativeModelOptions). */
export const NativeModel = native.Model
export type NativeModel = NativeModelInstance
/** A LoRA adapter for a model's calls. */
export const NativeAdapter = native.Adapter
export type NativeAdapter = NativeAdapterInstance
/** A generation cache for model.decode. */
export const NativeKvCache = native.KvCache
export type NativeKvCache = NativeKvCacheInstance
/** A file mapped into memory (lib/io/mmap.ts wraps it as MappedFile). */
export const NativeMappedFile = native.MappedFile
export type NativeMappedFile = NativeMappedFileInstance
