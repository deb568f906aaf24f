// Shared test utilities: a seeded RNG, float64 reference math, bf16 rounding, error norms.
import { spawn } from 'node:child_process'
import { kernels } from '../../lib/index'
import { seededRandom } from '../../lib/util/random'

/** Deterministic uniform random numbers (the library's seeded generator). */
export const rng = seededRandom

/** n values uniform in [-scale, scale). */
export function randomF32(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed)
  const out = new Float32Array(n)
  for (let i = 0; i < n; i++) out[i] = (2 * r() - 1) * scale
  return out
}

const f32 = new Float32Array(1)
const u32 = new Uint32Array(f32.buffer)
/** f32 -> bf16 bits, round to nearest even (what the engine and PyTorch do). */
export function toBf16Bits(x: number): number {
  f32[0] = x
  const u = u32[0]
  if ((u & 0x7fffffff) > 0x7f800000) return ((u >>> 16) | 0x40) & 0xffff
  return ((u + 0x7fff + ((u >>> 16) & 1)) >>> 16) & 0xffff
}
export function fromBf16Bits(h: number): number {
  u32[0] = h << 16
  return f32[0]
}
export function toBf16(a: Float32Array): Uint16Array {
  const out = new Uint16Array(a.length)
  for (let i = 0; i < a.length; i++) out[i] = toBf16Bits(a[i])
  return out
}
export function bf16ToF64(a: Uint16Array): Float64Array {
  const out = new Float64Array(a.length)
  for (let i = 0; i < a.length; i++) out[i] = fromBf16Bits(a[i])
  return out
}
/** The values an operand holds, as float64: bf16 bits decoded, f32 widened. */
export function valuesOf(a: Float32Array | Uint16Array): Float64Array {
  return a instanceof Uint16Array ? bf16ToF64(a) : Float64Array.from(a)
}

/** ||out - ref|| / ||ref|| over all elements (ref taken as float64). */
export function relErr(out: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (out.length !== ref.length) throw new Error(`length ${out.length} vs ${ref.length}`)
  let num = 0
  let den = 0
  for (let i = 0; i < ref.length; i++) {
    const d = out[i] - ref[i]
    num += d * d
    den += ref[i] * ref[i]
  }
  return Math.sqrt(num / (den || 1))
}

/** Index of the first NaN (an element the kernel never wrote), or -1. */
export function firstNaN(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (Number.isNaN(a[i])) return i
  return -1
}

export function nanFilled(n: number): Float32Array {
  return new Float32Array(n).fill(NaN)
}

/**
 * The ISAs forEachIsa runs: all this machine supports, or those ERNIE_TEST_ISAS lists (comma
 * separated; the emulated-AVX-512 suite names the two it adds to `npm test`). A listed ISA the
 * addon cannot run is an error, so the suite never passes by testing nothing.
 */
export function testedIsas(): kernels.Isa[] {
  const supported = kernels.supportedIsas()
  const wanted = process.env.ERNIE_TEST_ISAS
  if (!wanted) return supported
  const isas = wanted.split(',').map((s) => s.trim()) as kernels.Isa[]
  for (const isa of isas)
    if (!supported.includes(isa)) throw new Error(`ERNIE_TEST_ISAS names '${isa}', which this addon cannot run (it runs ${supported.join(', ')})`)
  return isas
}

/**
 * Runs fn once per instruction set this machine supports (or ERNIE_TEST_ISAS lists), restoring
 * the one active before after: the best, or the one ERNIE_ISA chose (ERNIE_ISA=avx2 then stays in
 * force outside the loops, as on an AVX2-only CPU).
 */
export async function forEachIsa(fn: (isa: kernels.Isa) => void | Promise<void>): Promise<void> {
  const isas = testedIsas()
  const before = kernels.activeIsa()
  try {
    for (const isa of isas) {
      kernels.setIsa(isa)
      await fn(isa)
    }
  } finally {
    kernels.setIsa(before)
  }
}

/** Every precision a user can ask for (README "Precision"). */
export const PRECISIONS: readonly kernels.Precision[] = ['fp32', 'bf16', 'auto']

/**
 * Whether a product rounds both its operands to bf16, as the README's precision table states
 * it (the tests' own statement of the contract, not the engine's): 'bf16' always, 'fp32' never,
 * 'auto' when an operand is stored as bf16 and the ISA multiplies bf16 natively (avx512bf16).
 */
export function roundsToBf16(precision: kernels.Precision, isa: kernels.Isa, aBf16: boolean, bBf16: boolean): boolean {
  if (precision === 'bf16') return true
  if (precision === 'fp32') return false
  return (aBf16 || bBf16) && isa === 'avx512bf16'
}

/** Runs fn once per (ISA, precision) pair: forEachIsa's ISAs, every precision. */
export async function forEachIsaAndPrecision(fn: (isa: kernels.Isa, precision: kernels.Precision) => void | Promise<void>): Promise<void> {
  await forEachIsa(async (isa) => {
    for (const precision of PRECISIONS) await fn(isa, precision)
  })
}

/** x rounded to bf16 (nearest even), as a number. */
export function roundBf16(x: number): number {
  return fromBf16Bits(toBf16Bits(x))
}

/**
 * One product's reference, C[r, n] += sum_k A(i, k) B(j, k) for the rows `rows` of C, with A's
 * elements scaled by `scale` and both operands rounded to bf16 when `round`, as the contract
 * says (A after its scale). `exact` sums in float64; `f32` is a same-precision reference: the
 * same operands summed one after another in f32 (a rounding per multiply and per add), whose
 * error bounds what an f32-accumulating kernel may do.
 */
export function contractProduct(
  rows: readonly number[],
  n: number,
  k: number,
  a: (i: number, p: number) => number,
  b: (j: number, p: number) => number,
  scale: number,
  round: boolean,
  into: { exact: Float64Array; f32: Float64Array },
): void {
  const f = Math.fround
  const bv = new Float64Array(n * k)
  for (let j = 0; j < n; j++) for (let p = 0; p < k; p++) bv[j * k + p] = round ? roundBf16(b(j, p)) : b(j, p)
  const av = new Float64Array(k)
  rows.forEach((i, r) => {
    for (let p = 0; p < k; p++) av[p] = round ? roundBf16(f(scale * a(i, p))) : scale * a(i, p)
    for (let j = 0; j < n; j++) {
      let exact = 0
      let acc = 0
      for (let p = 0; p < k; p++) {
        exact += av[p] * bv[j * k + p]
        acc = f(acc + f(f(av[p]) * bv[j * k + p]))
      }
      into.exact[r * n + j] += exact
      into.f32[r * n + j] += acc
    }
  })
}

/** float64 C[m, n] = sum_k A(i, k) B(j, k), with accessors for any layout. */
export function refGemm(
  m: number,
  n: number,
  k: number,
  a: (i: number, p: number) => number,
  b: (j: number, p: number) => number,
): Float64Array {
  const c = new Float64Array(m * n)
  for (let i = 0; i < m; i++)
    for (let j = 0; j < n; j++) {
      let s = 0
      for (let p = 0; p < k; p++) s += a(i, p) * b(j, p)
      c[i * n + j] = s
    }
  return c
}

/**
 * A small, independent safetensors reader for tests (copies; no validation beyond JSON):
 * name -> { dtype, shape, raw }, with raw the typed array as stored (Uint16Array for BF16).
 */
export function readSafetensorsForTest(file: string): Map<string, { dtype: string; shape: number[]; raw: Float32Array | Uint16Array | Int32Array }> {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const fs = require('node:fs') as typeof import('node:fs')
  const buf = fs.readFileSync(file)
  const n = Number(buf.readBigUInt64LE(0))
  const header = JSON.parse(buf.subarray(8, 8 + n).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>
  const out = new Map<string, { dtype: string; shape: number[]; raw: Float32Array | Uint16Array | Int32Array }>()
  for (const [name, t] of Object.entries(header)) {
    if (name === '__metadata__') continue
    const bytes = buf.subarray(8 + n + t.data_offsets[0], 8 + n + t.data_offsets[1])
    const copy = new Uint8Array(bytes).buffer
    const raw = t.dtype === 'BF16' ? new Uint16Array(copy) : t.dtype === 'I32' ? new Int32Array(copy) : new Float32Array(copy)
    out.set(name, { dtype: t.dtype, shape: t.shape, raw })
  }
  return out
}

/** A stored tensor's values as float64 (BF16 decoded). */
export function tensorValues(t: { raw: Float32Array | Uint16Array | Int32Array }): Float64Array {
  return t.raw instanceof Uint16Array ? bf16ToF64(t.raw) : Float64Array.from(t.raw)
}

/** Relative error over the positions whose mask is 1 (rows of `width` values per token). */
export function maskedRelErr(out: ArrayLike<number>, ref: ArrayLike<number>, mask: ArrayLike<number>, width: number): number {
  let num = 0
  let den = 0
  for (let tok = 0; tok < mask.length; tok++) {
    if (!mask[tok]) continue
    for (let j = 0; j < width; j++) {
      const d = out[tok * width + j] - ref[tok * width + j]
      num += d * d
      den += ref[tok * width + j] ** 2
    }
  }
  return Math.sqrt(num / (den || 1))
}

/** Central differences of a scalar function of `v` ((f(v + h) - f(v - h)) / 2h per element; v is restored). */
export function numericGrad(v: Float32Array | Float64Array, loss: () => number, h: number): Float64Array {
  const g = new Float64Array(v.length)
  for (let i = 0; i < v.length; i++) {
    const v0 = v[i]
    v[i] = v0 + h
    const up = loss()
    v[i] = v0 - h
    const down = loss()
    v[i] = v0
    g[i] = (up - down) / (2 * h)
  }
  return g
}

/** Rows [B, width] of per-token values [B, T, width]: each row's last position with mask 1. */
export function lastTokenRows(values: ArrayLike<number>, mask: ArrayLike<number>, B: number, T: number, width: number): Float64Array {
  const out = new Float64Array(B * width)
  for (let b = 0; b < B; b++) {
    let last = -1
    for (let t = 0; t < T; t++) if (mask[b * T + t]) last = t
    if (last < 0) throw new Error(`row ${b} has no token`)
    for (let j = 0; j < width; j++) out[b * width + j] = values[(b * T + last) * width + j]
  }
  return out
}

/**
 * Counts turns of the event loop (a setImmediate loop) while promises are pending: how a test
 * checks, without timing anything, that a call does its work off the JS thread. A call that
 * computes on the JS thread, even one that returns a promise, lets no turn run before it settles;
 * a native AsyncWorker's promise settles on a later turn, and the loop turns while it works.
 * The loop spins (one core busy) until stop(): keep what runs between short.
 */
export class LoopTurns {
  turns = 0
  /** For each tracked promise, the turns that ran between its call and its settling. */
  readonly during: number[] = []
  private running = true
  constructor() {
    const spin = () => {
      this.turns++
      if (this.running) setImmediate(spin)
    }
    setImmediate(spin)
  }
  /** Pass a call's promise as soon as the call returns. */
  track<T>(p: Promise<T>): Promise<T> {
    const start = this.turns
    return p.finally(() => this.during.push(this.turns - start))
  }
  /** Calls that saw the loop turn while they were in flight. */
  get interleaved(): number {
    return this.during.filter((n) => n > 0).length
  }
  stop(): void {
    this.running = false
  }
}

/**
 * Whether the event loop turned while a call of `call` was in flight: false for a call that
 * blocks the JS thread. Up to `tries` calls, since a short one may finish before a busy
 * machine gives this thread its next turn.
 */
export async function loopTurnsDuring(call: () => Promise<unknown>, tries = 20): Promise<boolean> {
  const loop = new LoopTurns()
  try {
    for (let i = 0; i < tries && loop.interleaved === 0; i++) await loop.track(call())
  } finally {
    loop.stop()
  }
  return loop.interleaved > 0
}

/**
 * Runs a TypeScript script in a child process (through tap's loader) with
 * ERNIE_TEST_PAUSE_AT=stage, the writers' test hook (lib/io/test-pause.ts), and SIGKILLs it as
 * soon as it reports pausing there: a crash at exactly that point. `paused` is false when the
 * child ended without reaching the stage.
 */
export function killAtPause(script: string, args: string[], stage: string): Promise<{ paused: boolean; signal: NodeJS.Signals | null; stderr: string }> {
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'))
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [...loader, script, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ERNIE_TEST_PAUSE_AT: stage } })
    let stderr = ''
    let paused = false
    child.stderr.on('data', (d) => {
      stderr += d
      if (!paused && stderr.includes(`ERNIE_TEST_PAUSED ${stage}\n`)) {
        paused = true
        child.kill('SIGKILL')
      }
    })
    child.on('error', reject)
    child.on('close', (_code, signal) => resolve({ paused, signal, stderr }))
  })
}
