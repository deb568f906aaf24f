// npm run bench:kernels [-- --json] [-- --peer]
// GEMM GFLOP/s at the ERNIE-4.5-0.3B shapes (M = 1024 tokens) and 2048^3, bf16 weights (B) and
// fp32; with --peer, PyTorch's figures from ../shared/bench/gemm_peer.py in the same run.
// Causal attention GFLOP/s at the 0.3B model's heads (H = 16, KV = 2, D = 128), counted as
// flash-attention's benchmarks count them: forward 4 B H T^2 D / 2, backward 2.5x that.
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

async function benchAttention(): Promise<Row[]> {
  const rows: Row[] = []
  const batch = 1, heads = 16, kvHeads = 2, headDim = 128
  for (const T of [128, 512, 2048]) {
    const shape = { batch, tq: T, tk: T, heads, kvHeads, headDim }
    const q = randomF32Fast(batch * T * heads * headDim, 3)
    const k = randomF32Fast(batch * T * kvHeads * headDim, 4)
    const v = randomF32Fast(batch * T * kvHeads * headDim, 5)
    const out = new Float32Array(q.length), lse = new Float32Array(batch * heads * T)
    const dout = randomF32Fast(q.length, 6)
    const dq = new Float32Array(q.length), dk = new Float32Array(k.length), dv = new Float32Array(v.length)
    const flops = (4 * batch * heads * T * T * headDim) / 2
    const repeats = T >= 2048 ? 3 : 7
    const fwd = await timeIt(() => kernels.attentionForward({ ...shape, q, k, v, out, lse }), repeats, 1)
    const bwd = await timeIt(() => kernels.attentionBackward({ ...shape, q, k, v, out, lse, dout, dq, dk, dv }), repeats, 1)
    rows.push({ key: `attn_fwd_T${T}`, value: flops / fwd / 1e9, unit: 'GFLOP/s' })
    rows.push({ key: `attn_bwd_T${T}`, value: (2.5 * flops) / bwd / 1e9, unit: 'GFLOP/s' })
  }
  return rows
}

async function main(): Promise<void> {
  const rows = [...(await benchGemm()), ...(await benchAttention())]
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
