// npm run bench:kernels [-- --json] [-- --peer] [-- --only gemm,attention,ops,ce,optim] [-- --precision P]
// GEMM GFLOP/s at the ERNIE-4.5-0.3B shapes (M = 1024 tokens) and 2048^3: bf16_*, f32 activations
// times bf16 weights at the bench's precision (auto: bf16 products on AVX512_BF16, fp32 elsewhere);
// fp32_*, f32 x f32 at precision fp32. With --peer, PyTorch's figures from
// ../shared/bench/gemm_peer.py in the same run, interleaved with ours shape by shape (see benchGemm).
// ce_T1024_V103424: the chunked cross-entropy with its backward at the real head (1024 tokens,
// hidden 1024, vocab 103,424, bf16 weight, dhidden and dweight), in model GFLOP/s counting the
// three GEMMs of a head's forward and backward, 6 T V Hd; the engine also recomputes the logits
// in its second pass (8 T V Hd executed), so this is the useful rate, not the GEMM's.
// adamw / adamw8bit: optimiser steps over 16M fp32 params, in million params per second.
// The row ops (RMSNorm, RoPE, SwiGLU, embedding) in GB/s of compulsory memory traffic.
// Causal attention GFLOP/s at the 0.3B model's heads (H = 16, KV = 2, D = 128), counted as
// flash-attention's benchmarks count them: forward 4 B H T^2 D / 2, backward 2.5x that; attn_*
// at precision fp32, attn_bf16_* at bf16 (bf16 operands: vdpbf16ps on AVX512_BF16). T = 128 at
// batch 8 (a training batch), longer sequences at batch 1.
import { kernels } from '../lib/index'
import { randomF32Fast, randomBf16Fast } from './data'
import { benchPrecision, flagValue, median, peerDtype, refuseEmulatedBuild, report, runPeer, timeIt, wantPeer, type Row } from './common'

// --only picks sections (the cross-entropy alone runs about a minute on 2 cores).
const only = flagValue('--only')?.split(',')
const wanted = (section: string) => !only || only.includes(section)

const GEMM_SHAPES: [number, number, number][] = [
  [1024, 2048, 1024],
  [1024, 256, 1024],
  [1024, 1024, 2048],
  [1024, 3072, 1024],
  [1024, 1024, 3072],
  [2048, 2048, 2048],
]

// The peer script's own names for a shape: bfloat16_1024x2048x1024, float32_...
const peerKey = (dtype: 'bf16' | 'fp32', [m, n, k]: [number, number, number]) =>
  `${dtype === 'bf16' ? 'bfloat16' : 'float32'}_${m}x${n}x${k}`

// gemm_peer.py restricted to some dtypes and shapes (an edited copy; see runPeer), optionally
// timing `reps` products per shape instead of its 7 (the median either way).
function gemmPeer(dtypes: string, shapes: [number, number, number][], reps?: number): Record<string, number> {
  const edits: [string, string][] = [
    ['for dt in (torch.bfloat16, torch.float32):', `for dt in (${dtypes},):`],
    ['SHAPES = [', `SHAPES = [${shapes.map((s) => `(${s.join(', ')})`).join(', ')}]\n_ALL_SHAPES = [`],
  ]
  if (reps !== undefined)
    edits.push(['for _ in range(7):', `for _ in range(${reps}):`], ['t = sorted(ts)[3]', 't = sorted(ts)[len(ts) // 2]'])
  const out = runPeer('gemm_peer.py', [], edits) as { gflops?: Record<string, number> } | undefined
  return out?.gflops ?? {}
}


// Median of `reps` timed products after the peer's 3 warm-up ones. bf16: bf16 weights (B) at the
// bench's precision; fp32: f32 x f32 at precision fp32.
async function gemmGflops(dtype: 'bf16' | 'fp32', [m, n, k]: [number, number, number], reps = 7): Promise<number> {
  const a = randomF32Fast(m * k, 1)
  const b = dtype === 'bf16' ? randomBf16Fast(n * k, 2) : randomF32Fast(n * k, 2)
  const c = new Float32Array(m * n)
  const precision = dtype === 'bf16' ? benchPrecision : 'fp32'
  const s = await timeIt(() => kernels.gemm({ c, m, n, segments: [{ a, b, k }], precision }), reps, 3)
  return (2 * m * n * k) / s / 1e9
}

// With --peer, a dtype is measured in PEER_ROUNDS rounds, ours then the peer's for each shape in
// turn, and each side reports its median: this machine's speed drifts by tens of percent within
// minutes, and a comparison between two separate passes would mostly measure the drift. Each
// side times the same number of products per round, enough for about half a second at
// 140 GFLOP/s (7 at 2048^3, 131 at 1024x256x1024): the peer's own 7 would time a 4 ms product
// over 30 ms, a window this machine's drift swamps. The bf16 peer runs in rounds where PyTorch's
// bf16 is fast (AVX512_BF16: peerDtype is bfloat16), and once elsewhere (its slow fallback).
const PEER_ROUNDS = 5
const roundReps = ([m, n, k]: [number, number, number], gflops: number) => Math.max(7, Math.round((0.5 * gflops * 1e9) / (2 * m * n * k))) | 1

async function gemmRows(dtype: 'bf16' | 'fp32'): Promise<Row[]> {
  const torchDtype = dtype === 'bf16' ? 'torch.bfloat16' : 'torch.float32'
  const rounds = wantPeer && (dtype === 'fp32' || peerDtype() === 'bfloat16') ? PEER_ROUNDS : 1
  const rows: Row[] = []
  for (const shape of GEMM_SHAPES) {
    const ours: number[] = [], theirs: number[] = []
    for (let round = 0; round < rounds; round++) {
      const reps = rounds > 1 ? roundReps(shape, dtype === 'bf16' ? 400 : 140) : 7
      ours.push(await gemmGflops(dtype, shape, reps))
      if (rounds > 1) {
        const p = gemmPeer(torchDtype, [shape], reps)[peerKey(dtype, shape)]
        if (p !== undefined) theirs.push(p)
      }
    }
    rows.push({ key: `${dtype}_${shape.join('x')}`, value: median(ours), unit: 'GFLOP/s', peer: theirs.length ? median(theirs) : undefined })
  }
  if (wantPeer && rounds === 1) {
    const peer = gemmPeer(torchDtype, GEMM_SHAPES)
    for (const [i, shape] of GEMM_SHAPES.entries()) rows[i].peer = peer[peerKey(dtype, shape)]
  }
  return rows
}

async function benchGemm(): Promise<Row[]> {
  return [...(await gemmRows('bf16')), ...(await gemmRows('fp32'))]
}

async function benchCrossEntropy(): Promise<Row[]> {
  const T = 1024, V = 103424, H = 1024
  const hidden = randomF32Fast(T * H, 3)
  const weight = randomBf16Fast(V * H, 4)
  const targets = Int32Array.from({ length: T }, (_, i) => (i * 7919) % V)
  const dhidden = new Float32Array(T * H), dweight = new Float32Array(V * H)
  const s = await timeIt(() => kernels.crossEntropy({ hidden, weight, targets, tokens: T, hiddenSize: H, vocab: V, dhidden, dweight, precision: benchPrecision }), 3, 1)
  return [{ key: `ce_T${T}_V${V}`, value: (6 * T * V * H) / s / 1e9, unit: 'GFLOP/s' }]
}

async function benchOptimisers(): Promise<Row[]> {
  const n = 1 << 24
  const params = randomF32Fast(n, 5), grads = randomF32Fast(n, 6)
  const m = new Float32Array(n), v = new Float32Array(n), paramsBf16 = new Uint16Array(n)
  const blocks = Math.ceil(n / 256)
  const m8 = new Uint8Array(n), v8 = new Uint8Array(n), mAbsmax = new Float32Array(blocks), vAbsmax = new Float32Array(blocks)
  let step = 0
  const fp32 = await timeIt(() => kernels.adamwStep({ params, grads, m, v, paramsBf16, lr: 1e-4, step: ++step }), 5, 1)
  step = 0
  const q8 = await timeIt(() => kernels.adamw8bitStep({ params, grads, m: m8, v: v8, mAbsmax, vAbsmax, paramsBf16, lr: 1e-4, step: ++step }), 5, 1)
  return [
    { key: 'adamw_n16M', value: n / fp32 / 1e6, unit: 'Mparam/s' },
    { key: 'adamw8bit_n16M', value: n / q8 / 1e6, unit: 'Mparam/s' },
  ]
}

// ERNIE-4.5-0.3B: 1024 tokens, hidden 1024, 16 query heads of 128, intermediate 3072.
async function benchOps(): Promise<Row[]> {
  const T = 1024, H = 1024, heads = 16, hd = 128, I = 3072, V = 103424
  const rows: Row[] = []
  const gbps = async (key: string, bytes: number, fn: () => Promise<void>) => {
    rows.push({ key, value: bytes / (await timeIt(fn, 9, 2)) / 1e9, unit: 'GB/s' })
  }
  const x = randomF32Fast(T * H, 1), dout = randomF32Fast(T * H, 2), out = new Float32Array(T * H)
  const weight = randomBf16Fast(H, 3), rstd = new Float32Array(T), dx = new Float32Array(T * H), dweight = new Float32Array(H)
  await gbps('rmsnorm_fwd_1024x1024', 8 * T * H, () => kernels.rmsnormForward({ x, weight, rows: T, dim: H, eps: 1e-5, out, rstd }))
  await gbps('rmsnorm_bwd_1024x1024', 12 * T * H, () =>
    kernels.rmsnormBackward({ dout, x, weight, rstd, rows: T, dim: H, dx, dweight }),
  )
  const q = randomF32Fast(T * heads * hd, 4), positions = Int32Array.from({ length: T }, (_, i) => i)
  await gbps('rope_fwd_1024x16x128', 8 * T * heads * hd, () =>
    kernels.ropeForward({ x: q, positions, heads, headDim: hd, theta: 500000, pairing: 'adjacent' }),
  )
  const gateUp = randomF32Fast(T * 2 * I, 5), act = new Float32Array(T * I), dact = randomF32Fast(T * I, 6)
  const dgateUp = new Float32Array(T * 2 * I)
  await gbps('swiglu_fwd_1024x3072', 12 * T * I, () => kernels.swigluForward({ gateUp, rows: T, dim: I, out: act }))
  await gbps('swiglu_bwd_1024x3072', 20 * T * I, () =>
    kernels.swigluBackward({ dout: dact, gateUp, rows: T, dim: I, dgateUp }),
  )
  const table = randomBf16Fast(V * H, 7), dtable = new Float32Array(V * H)
  const ids = Int32Array.from({ length: T }, (_, i) => (i * 7919) % V)
  await gbps('embedding_fwd_bf16_1024x1024', 6 * T * H, () => kernels.embeddingForward({ ids, table, vocab: V, dim: H, out }))
  await gbps('embedding_bwd_1024x1024', 12 * T * H, () => kernels.embeddingBackward({ ids, dout, dtable, vocab: V, dim: H }))
  return rows
}

async function benchAttention(): Promise<Row[]> {
  const rows: Row[] = []
  const heads = 16, kvHeads = 2, headDim = 128
  for (const T of [128, 512, 2048]) {
    const batch = T === 128 ? 8 : 1
    const shape = { batch, tq: T, tk: T, heads, kvHeads, headDim }
    const q = randomF32Fast(batch * T * heads * headDim, 3)
    const k = randomF32Fast(batch * T * kvHeads * headDim, 4)
    const v = randomF32Fast(batch * T * kvHeads * headDim, 5)
    const out = new Float32Array(q.length), lse = new Float32Array(batch * heads * T)
    const dout = randomF32Fast(q.length, 6)
    const dq = new Float32Array(q.length), dk = new Float32Array(k.length), dv = new Float32Array(v.length)
    const flops = (4 * batch * heads * T * T * headDim) / 2
    const repeats = T >= 2048 ? 3 : 7
    for (const precision of ['fp32', 'bf16'] as const) {
      const fwd = await timeIt(() => kernels.attentionForward({ ...shape, q, k, v, out, lse, precision }), repeats, 3)
      const bwd = await timeIt(() => kernels.attentionBackward({ ...shape, q, k, v, out, lse, dout, dq, dk, dv, precision }), repeats, 3)
      const name = precision === 'fp32' ? 'attn' : 'attn_bf16'
      rows.push({ key: `${name}_fwd_T${T}`, value: flops / fwd / 1e9, unit: 'GFLOP/s' })
      rows.push({ key: `${name}_bwd_T${T}`, value: (2.5 * flops) / bwd / 1e9, unit: 'GFLOP/s' })
    }
  }
  return rows
}

async function main(): Promise<void> {
  refuseEmulatedBuild()
  const rows = wanted('gemm') ? await benchGemm() : []
  if (wanted('attention')) rows.push(...(await benchAttention()))
  if (wanted('ops')) rows.push(...(await benchOps()))
  if (wanted('ce')) rows.push(...(await benchCrossEntropy()))
  if (wanted('optim')) rows.push(...(await benchOptimisers()))
  report(`kernels (${kernels.activeIsa()}, ${kernels.numThreads()} threads, bf16 rows at precision ${benchPrecision})`, rows, {
    isa: kernels.activeIsa(),
    threads: kernels.numThreads(),
  })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
