// npm run bench:kernels [-- --json] [-- --peer]
// GEMM GFLOP/s at the ERNIE-4.5-0.3B shapes (M = 1024 tokens) and 2048^3, bf16 weights (B) and
// fp32; with --peer, PyTorch's figures from ../shared/bench/gemm_peer.py in the same run.
import { kernels } from '../lib/index'
import { randomF32Fast, randomBf16Fast } from './data'
import { report, runPeer, timeIt, wantPeer, type Row } from './common'

const GEMM_SHAPES: [number, number, number][] = [
  [1024, 2048, 1024],
  [1024, 256, 1024],
  [1024, 1024, 2048],
  [1024, 3072, 1024],
  [1024, 1024, 3072],
  [2048, 2048, 2048],
]

async function benchGemm(): Promise<Row[]> {
  const rows: Row[] = []
  for (const dtype of ['bf16', 'fp32'] as const) {
    for (const [m, n, k] of GEMM_SHAPES) {
      const a = randomF32Fast(m * k, 1)
      const b = dtype === 'bf16' ? randomBf16Fast(n * k, 2) : randomF32Fast(n * k, 2)
      const c = new Float32Array(m * n)
      const s = await timeIt(() => kernels.gemm({ c, m, n, segments: [{ a, b, k }] }), 7, 2)
      rows.push({ key: `${dtype}_${m}x${n}x${k}`, value: (2 * m * n * k) / s / 1e9, unit: 'GFLOP/s' })
    }
  }
  return rows
}

async function main(): Promise<void> {
  const rows = await benchGemm()
  if (wantPeer) {
    const peer = runPeer('gemm_peer.py') as { gflops?: Record<string, number> } | undefined
    for (const r of rows) {
      const key = r.key.replace(/^bf16_/, 'bfloat16_').replace(/^fp32_/, 'float32_')
      if (peer?.gflops?.[key] !== undefined) r.peer = peer.gflops[key]
    }
  }
  report(`kernels (${kernels.activeIsa()}, ${kernels.numThreads()} threads)`, rows, {
    isa: kernels.activeIsa(),
    threads: kernels.numThreads(),
  })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
