// Loads the native addon (a prebuild from prebuilds/, or build/Release from a source build)
// through node-gyp-build, or the file ERNIE_ADDON names. Library code calls the typed wrappers
// in lib/kernels/; this module is the only place that touches the binding object.
import * as fs from 'node:fs'
import * as path from 'node:path'

/**
 * The addon's exports. Each op `x` returns a Promise and has a blocking twin `xSync`; the
 * typed signatures live beside their wrappers in lib/kernels/ (gemm.ts, ...).
 */
export interface NativeBinding {
  supportedIsas(): string[]
  /**
   * True in the test-only build (`npm run build:avx512-emu`) whose AVX-512 kernels are AVX2 code
   * emulating AVX-512: right answers, meaningless speed. Absent from addons built before it.
   */
  avx512Emulated?: boolean
  activeIsa(): string
  setIsa(isa: string): void
  numThreads(): number
  setNumThreads(n: number): void
  physicalCores(): number
  [op: string]: unknown
}

/** One op's two entry points, typed: `const gemm = nativeOp<GemmOptions>('gemm')`. */
export function nativeOp<O, R = void>(name: string): { run: (o: O) => Promise<R>; sync: (o: O) => R } {
  const run = native[name] as ((o: O) => Promise<R>) | undefined
  const sync = native[`${name}Sync`] as ((o: O) => R) | undefined
  if (typeof run !== 'function' || typeof sync !== 'function')
    throw new Error(`ernie-sentiment: the native addon has no op '${name}'; rebuild it (npm rebuild ernie-sentiment)`)
  return { run, sync }
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
  // An explicit addon file (e.g. build-cuda/Release/ernie.node, the CUDA build) instead of the
  // one node-gyp-build finds.
  const explicit = process.env.ERNIE_ADDON
  if (explicit) {
    try {
      // eslint-disable-next-line @typescript-eslint/no-require-imports
      return require(path.resolve(explicit)) as NativeBinding
    } catch (err) {
      const e = new Error(`ernie-sentiment: could not load the addon ERNIE_ADDON=${explicit}: ${(err as Error).message}`) as Error & { code: string; cause: unknown }
      e.code = 'ERR_ERNIE_NATIVE_LOAD'
      e.cause = err
      throw e
    }
  }
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
