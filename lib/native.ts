// Loads the native addon (a prebuild from prebuilds/, or build/Release from a source build)
// through node-gyp-build, and describes its raw interface. Library code calls the typed
// wrappers in kernels.ts; this module is the only place that touches the binding object.
import * as fs from 'node:fs'
import * as path from 'node:path'

/** Matrix storage: a logical [rows, k] operand stored as is ('mk' / 'nk') or transposed. */
export type ALayout = 'mk' | 'km'
export type BLayout = 'nk' | 'kn'
/** bf16 values travel as their raw 16-bit patterns in a Uint16Array. */
export type F32OrBf16 = Float32Array | Uint16Array

export interface GemmSegment {
  a: F32OrBf16
  b: F32OrBf16
  k: number
  aLayout?: ALayout
  bLayout?: BLayout
}

export interface GemmOptions {
  c: Float32Array
  m: number
  n: number
  segments: GemmSegment[]
  alpha?: number
  accumulate?: boolean
}

/** The addon's exports. Each op `x` returns a Promise; `xSync` runs on the calling thread. */
export interface NativeBinding {
  supportedIsas(): string[]
  activeIsa(): string
  setIsa(isa: string): void
  numThreads(): number
  setNumThreads(n: number): void
  physicalCores(): number
  gemm(o: GemmOptions): Promise<void>
  gemmSync(o: GemmOptions): void
}

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

function load(): NativeBinding {
  const root = packageRoot()
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    return require('node-gyp-build')(root) as NativeBinding
  } catch (err) {
    const e = new Error(
      `ernie-sentiment: could not load its native addon for ${process.platform}-${process.arch} ` +
        `(Node ${process.versions.node}). No prebuilt binary matched and no source build was found ` +
        `or it failed to load. Build it from source with \`npm rebuild ernie-sentiment\` ` +
        `(needs python3, make and a C++17 compiler). Cause: ${(err as Error).message}`,
    ) as Error & { code: string; cause: unknown }
    e.code = 'ERR_ERNIE_NATIVE_LOAD'
    e.cause = err
    throw e
  }
}

export const native: NativeBinding = load()
