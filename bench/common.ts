// Shared benchmark plumbing: argument flags, timing (median of repeats), the table, and the
// peer scripts in ../shared/bench run in the same process tree so ratios come from one run.
import { execFileSync } from 'node:child_process'
import * as fs from 'node:fs'
import * as os from 'node:os'
import * as path from 'node:path'
import { kernels, precisionInForce, precisionRecord, resolvePrecision, type Precision } from '../lib/index'

export const argv = process.argv.slice(2)
export const wantJson = argv.includes('--json')
export const wantPeer = argv.includes('--peer')

export function flagValue(name: string): string | undefined {
  const i = argv.indexOf(name)
  return i >= 0 ? argv[i + 1] : undefined
}

/**
 * The precision the benchmark's products run at: --precision, else ERNIE_PRECISION, else 'auto'
 * (README "Precision"). Every JSON line records it, as asked and as in force.
 */
export const benchPrecision: Precision = resolvePrecision(flagValue('--precision'), '--precision')

/** PyTorch's dtype for the peer of a precision: bf16 where ours multiplies bf16, else fp32. */
export function peerDtype(precision: Precision = benchPrecision): 'bfloat16' | 'float32' {
  return precisionInForce(precision) === 'bf16' ? 'bfloat16' : 'float32'
}

/**
 * Exits with an error on the test-only addon whose AVX-512 kernels are emulated
 * (`npm run build:avx512-emu`): its timings would be of SIMDe's emulation, not of the engine.
 */
export function refuseEmulatedBuild(): void {
  if (!kernels.avx512Emulated()) return
  console.error(
    'error: this addon emulates AVX-512 with AVX2 (the test-only build:avx512-emu, loaded through ERNIE_ADDON); ' +
      'its timings mean nothing. Benchmark a normal build (npm run build:gyp or npm run build) without ERNIE_ADDON pointing at it.',
  )
  process.exit(1)
}

/** Median seconds of `repeats` runs after `warmup` runs. */
export async function timeIt(fn: () => unknown, repeats = 5, warmup = 1): Promise<number> {
  for (let i = 0; i < warmup; i++) await fn()
  const ts: number[] = []
  for (let i = 0; i < repeats; i++) {
    const t0 = process.hrtime.bigint()
    await fn()
    ts.push(Number(process.hrtime.bigint() - t0) / 1e9)
  }
  ts.sort((a, b) => a - b)
  return ts[Math.floor(ts.length / 2)]
}

/** The middle value (the upper one of an even count). */
export const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]

export interface Row {
  key: string
  value: number
  unit: string
  peer?: number
}

/** Prints the table (and the peer's figure and ratio where there is one), then the JSON line. */
export function report(title: string, rows: Row[], extra: Record<string, unknown> = {}): void {
  const out: Record<string, unknown> = { precision: precisionRecord(benchPrecision), ...extra }
  console.log(`\n${title}`)
  const hasPeer = rows.some((r) => r.peer !== undefined)
  console.log(
    `${'benchmark'.padEnd(30)} ${'value'.padStart(10)}  ${'unit'.padEnd(9)}` + (hasPeer ? ` ${'peer'.padStart(10)} ${'ratio'.padStart(7)}` : ''),
  )
  for (const r of rows) {
    let line = `${r.key.padEnd(30)} ${r.value.toFixed(1).padStart(10)}  ${r.unit.padEnd(9)}`
    if (r.peer !== undefined) line += ` ${r.peer.toFixed(1).padStart(10)} ${(r.value / r.peer).toFixed(2).padStart(6)}x`
    console.log(line)
    out[r.key] = Number(r.value.toFixed(2))
    if (r.peer !== undefined) {
      out[`peer_${r.key}`] = Number(r.peer.toFixed(2))
      out[`ratio_${r.key}`] = Number((r.value / r.peer).toFixed(3))
    }
  }
  if (wantJson) console.log(JSON.stringify(out))
}

function peerDir(): string {
  return process.env.ERNIE_PEER_DIR ?? path.join(__dirname, '..', '..', '..', 'shared', 'bench')
}

/**
 * Runs a peer script from ../shared/bench (ERNIE_PEER_DIR), or from `dir`, with Debian's python3
 * and returns its last JSON line. `edits` run a copy with each [from, to] replaced (each must
 * match, so a changed script fails loudly instead of measuring something else).
 */
export function runPeer(
  script: string,
  args: string[] = [],
  edits: [string, string][] = [],
  dir = peerDir(),
): Record<string, unknown> | undefined {
  let file = path.join(dir, script)
  if (!fs.existsSync(file)) {
    console.error(`peer ${file} not found (set ERNIE_PEER_DIR)`)
    return undefined
  }
  if (edits.length > 0) {
    let src = fs.readFileSync(file, 'utf8')
    for (const [from, to] of edits) {
      if (!src.includes(from)) throw new Error(`${script} changed: cannot find ${JSON.stringify(from)}`)
      src = src.replace(from, to)
    }
    file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ernie-peer-')), script)
    fs.writeFileSync(file, src)
  }
  const python = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'
  console.error(`running peer: ${python} ${script} ${args.join(' ')}${edits.length ? ' (edited copy)' : ''}`)
  const out = execFileSync(python, [file, ...args], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], cwd: dir })
  const last = out.trim().split('\n').filter((l) => l.startsWith('{')).pop()
  return last ? JSON.parse(last) : undefined
}

/** Peak resident memory of this process so far, in MB. */
export function peakRssMb(): number {
  return Math.round(process.resourceUsage().maxRSS / 1024)
}

/**
 * ../shared/bench/torch_peer.py in the same run, in the one dtype that is the peer of our
 * precision (peerDtype): bf16 where ours multiplies bf16 (AVX512_BF16, where PyTorch's bf16 goes
 * through oneDNN's fast path), fp32 elsewhere (without AVX512_BF16 PyTorch's bf16 matmul falls
 * back to about 1.4 GFLOP/s: hours of running that say nothing). Returns tokens_per_s by key,
 * e.g. infer_bfloat16_1x64, lora_train_float32_8x128. `edits` change the script further (see runPeer).
 */
export function runTorchPeer(layers: number, dtype = peerDtype(), edits: [string, string][] = []): Record<string, number> | undefined {
  const out = runPeer('torch_peer.py', [String(layers)], [
    ['for dtype in (torch.bfloat16, torch.float32):', `for dtype in (torch.${dtype},):`],
    ...edits,
  ])
  return (out as { tokens_per_s?: Record<string, number> } | undefined)?.tokens_per_s
}
