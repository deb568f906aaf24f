// npm run bench:cuda [-- --json] [-- --batch 8 --seq 512 --rank 16 --device 0]
// The CUDA backend at the ERNIE-4.5-0.3B shapes (hidden 1024, 16 heads, 2 kv heads, head dim 128,
// intermediate 3072, 18 layers), inputs resident on the GPU, timed with CUDA events (median):
// - GEMM TFLOP/s (2 m n k) for each projection of a layer at batch x seq tokens, bf16 operands;
// - causal attention TFLOP/s, forward and backward, counted as flash-attention's benchmarks
//   count them: forward 4 B H T^2 D / 2, backward 2.5x that;
// - LoRA training tokens/s, of the tensor-core part of a step: one layer's seven LoRA linears
//   forward and backward with attention forward and backward, times 18 layers. The model graph
//   itself (norms, RoPE, SwiGLU, the loss, the optimiser) runs on the CPU in this version, so this
//   is the GPU kernels' rate, an upper bound on a full GPU step's, not an end-to-end figure.
// Without a CUDA build or device it prints why (a JSON object with --json) and exits 0.
import { cudaDevices, cudaUnavailableReason } from '../lib/device'
import { ERNIE_4_5_0_3B_CONFIG, kernels } from '../lib/index'
import { flagValue, report, wantJson, type Row } from './common'

async function main(): Promise<void> {
  const reason = cudaUnavailableReason()
  if (reason !== undefined) {
    const out = { benchmark: 'cuda', available: false, reason }
    console.log(wantJson ? JSON.stringify(out) : `bench:cuda: nothing to run: ${reason}`)
    return
  }
  const deviceIndex = Number(flagValue('--device') ?? 0)
  kernels.setCudaDevice(deviceIndex)
  const device = cudaDevices()[deviceIndex]
  const cfg = ERNIE_4_5_0_3B_CONFIG
  const B = Number(flagValue('--batch') ?? 8), T = Number(flagValue('--seq') ?? 512), rank = Number(flagValue('--rank') ?? 16)
  const tokens = B * T
  const H = cfg.hidden_size, heads = cfg.num_attention_heads, kvHeads = cfg.num_key_value_heads, D = cfg.head_dim ?? H / heads
  const I = cfg.intermediate_size, layers = cfg.num_hidden_layers

  const rows: Row[] = []
  const gemms: [string, number, number][] = [
    ['q_proj', heads * D, H],
    ['k_proj', kvHeads * D, H],
    ['o_proj', H, heads * D],
    ['gate_up_proj', 2 * I, H],
    ['down_proj', H, I],
    ['lm_head_chunk', 8192, H],
  ]
  for (const [name, n, k] of gemms) {
    const s = await kernels.cuda.benchmark({ kind: 'gemm', m: tokens, n, k, iterations: 20 })
    rows.push({ key: `gemm_${name}_${tokens}x${n}x${k}`, value: (2 * tokens * n * k) / s / 1e12, unit: 'TFLOP/s' })
  }
  const shape = { batch: B, seq: T, heads, kvHeads, headDim: D }
  const attentionFlops = (4 * B * heads * T * T * D) / 2
  const fwd = await kernels.cuda.benchmark({ kind: 'attention_forward', ...shape, iterations: 20 })
  rows.push({ key: `attention_fwd_${B}x${T}`, value: attentionFlops / fwd / 1e12, unit: 'TFLOP/s' })
  const bwd = await kernels.cuda.benchmark({ kind: 'attention_backward', ...shape, iterations: 20 })
  rows.push({ key: `attention_bwd_${B}x${T}`, value: (2.5 * attentionFlops) / bwd / 1e12, unit: 'TFLOP/s' })
  const layer = await kernels.cuda.benchmark({ kind: 'lora_layer', ...shape, hidden: H, intermediate: I, rank, iterations: 10 })
  rows.push({ key: `lora_train_kernels_${B}x${T}`, value: tokens / (layer * layers), unit: 'tokens/s' })

  report(`CUDA backend: ERNIE-4.5-0.3B shapes, ${tokens} tokens (${device?.name ?? 'device ' + deviceIndex}, sm_${device?.computeCapability.replace('.', '')})`, rows, {
    benchmark: 'cuda',
    available: 1,
    device: device?.name ?? String(deviceIndex),
    compute_capability: device?.computeCapability ?? '',
    lora_rank: rank,
    lora_train_note: 'GPU kernels only (7 LoRA linears + attention, fwd+bwd, x 18 layers); the model graph runs on the CPU in this version',
  })
}

main().catch((e) => {
  console.error(e)
  process.exit(1)
})
