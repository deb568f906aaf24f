// Cross-entropy through a tied LM head on the GPU, chunked as cpu/loss.h: the [tokens, vocab]
// logits never exist whole. Rows with a target are gathered into a compact block; for each tile
// of rows and each vocab chunk the logits block comes from the tensor-core GEMM, and
//   pass (a): a block per row folds the chunk into a running max and sum of exponentials
//             (merged in double, as on the CPU) and picks out the target's logit;
//   pass (b): the block again, turned into dlogits = (softmax - onehot) * grad_scale in place,
//             then dhidden += dlogits . W_chunk and dweight_chunk += dlogits^T . hidden.
// The loss is summed on the host in row order from the per-row values, so it is reproducible.
// The logits come from bf16 operands (f32 accumulation): expect ~1e-3 relative error in them.
//
// Compiled for sm_80 and sm_90, never run here (no GPU).
#include <algorithm>
#include <cmath>

#include "cuda/device.cuh"

namespace ernie::cuda {
namespace {

constexpr int kThreads = 256;

__device__ float block_reduce_max(float v, float* scratch) {
  v = warp_max(v);
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x) / 32 ? scratch[lane] : -INFINITY;
    v = warp_max(v);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  v = scratch[0];
  __syncthreads();  // scratch is reused by the next reduction
  return v;
}

__device__ float block_reduce_sum(float v, float* scratch) {
  v = warp_sum(v);
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < int(blockDim.x) / 32 ? scratch[lane] : 0.0f;
    v = warp_sum(v);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  v = scratch[0];
  __syncthreads();
  return v;
}

// rows[i] = hidden[index[i]]
__global__ void gather_rows_kernel(float* rows, const float* hidden, const int32_t* index, int64_t n, int64_t width) {
  const int64_t total = n * width;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    rows[i] = hidden[int64_t(index[i / width]) * width + i % width];
}

// dhidden[index[i]] = rows[i]
__global__ void scatter_rows_kernel(float* dhidden, const float* rows, const int32_t* index, int64_t n, int64_t width) {
  const int64_t total = n * width;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    dhidden[int64_t(index[i / width]) * width + i % width] = rows[i];
}

__global__ void init_stats_kernel(double* run_max, double* run_sum, float* target_logit, int64_t n) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    run_max[i] = -INFINITY;
    run_sum[i] = 0.0;
    target_logit[i] = 0.0f;
  }
}

// Pass (a) for one chunk: a block per row.
__global__ void chunk_stats_kernel(const float* logits, int64_t cn, int64_t c0, const int32_t* targets, double* run_max,
                                   double* run_sum, float* target_logit) {
  __shared__ float scratch[32];
  const int64_t i = blockIdx.x;
  const float* row = logits + i * cn;
  float mx = -INFINITY;
  for (int64_t j = threadIdx.x; j < cn; j += blockDim.x) mx = fmaxf(mx, row[j]);
  mx = block_reduce_max(mx, scratch);
  float sum = 0.0f;
  if (mx != -INFINITY)  // every logit -inf: this chunk carries no mass
    for (int64_t j = threadIdx.x; j < cn; j += blockDim.x) sum += expf(row[j] - mx);
  sum = block_reduce_sum(sum, scratch);
  if (threadIdx.x == 0) {
    const double m_old = run_max[i];
    const double m_new = double(mx) <= m_old ? m_old : double(mx);
    if (sum > 0.0f || isnan(sum)) run_sum[i] = run_sum[i] * exp(m_old - m_new) + double(sum) * exp(double(mx) - m_new);
    run_max[i] = m_new;
    const int64_t target = targets[i];
    if (target >= c0 && target < c0 + cn) target_logit[i] = row[target - c0];
  }
}

// lse = max + log(sum); loss_i = lse - logit[target] (double, summed on the host).
__global__ void finish_rows_kernel(const double* run_max, const double* run_sum, const float* target_logit, int64_t n,
                                   float* lse, double* row_loss) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const double l = run_max[i] + log(run_sum[i]);
    lse[i] = float(l);
    row_loss[i] = l - double(target_logit[i]);
  }
}

// Pass (b): logits -> (softmax - onehot) * scale, in place; a block per row.
__global__ void dlogits_kernel(float* logits, int64_t cn, int64_t c0, const int32_t* targets, const float* lse, float scale) {
  const int64_t i = blockIdx.x;
  float* row = logits + i * cn;
  const float l = lse[i];
  const int64_t target = targets[i];
  for (int64_t j = threadIdx.x; j < cn; j += blockDim.x) {
    float d = expf(row[j] - l) * scale;
    if (c0 + j == target) d -= scale;
    row[j] = d;
  }
}

}  // namespace

cpu::CrossEntropyResult cross_entropy(const cpu::CrossEntropyArgs& a) {
  const int64_t hd = a.hidden_size, vocab = a.vocab;
  std::vector<int32_t> rows, row_targets;
  for (int64_t t = 0; t < a.tokens; ++t)
    if (a.targets[t] >= 0) {
      rows.push_back(int32_t(t));
      row_targets.push_back(a.targets[t]);
    }
  cpu::CrossEntropyResult res;
  res.count = int64_t(rows.size());
  if (a.dhidden) std::fill(a.dhidden, a.dhidden + a.tokens * hd, 0.0f);
  if (res.count == 0) return res;
  const bool want_grad = a.dhidden || a.dweight;
  const float scale = a.has_grad_scale ? a.grad_scale : float(1.0 / double(res.count));

  Context ctx;
  const int64_t count = res.count;
  const int64_t chunk = std::min(a.chunk, vocab), tile = std::min(a.row_tile, count);
  const size_t welem = size_t(cpu::dtype_size(a.weight_dtype));
  const auto* weight = static_cast<const unsigned char*>(ctx.upload_bytes(a.weight, size_t(vocab * hd) * welem));
  const int32_t* index = ctx.upload(rows.data(), rows.size());
  const int32_t* targets = ctx.upload(row_targets.data(), row_targets.size());
  const float* hidden_all = ctx.upload(a.hidden, size_t(a.tokens * hd));
  float* hidden = ctx.alloc<float>(size_t(count * hd));  // the rows with a target, compacted
  gather_rows_kernel<<<grid_for(count * hd, 256), 256, 0, ctx.stream()>>>(hidden, hidden_all, index, count, hd);
  CUDA_CHECK_LAUNCH("gather_rows_kernel");
  float* logits = ctx.alloc<float>(size_t(tile * chunk));
  double* run_max = ctx.alloc<double>(size_t(count));
  double* run_sum = ctx.alloc<double>(size_t(count));
  float* target_logit = ctx.alloc<float>(size_t(count));
  float* lse = ctx.alloc<float>(size_t(count));
  double* row_loss = ctx.alloc<double>(size_t(count));
  float* dhidden = a.dhidden ? ctx.alloc<float>(size_t(count * hd)) : nullptr;
  float* dweight = a.dweight ? ctx.upload(a.dweight, size_t(vocab * hd)) : nullptr;
  if (dhidden) ctx.zero(dhidden, size_t(count * hd));
  init_stats_kernel<<<grid_for(count, 256), 256, 0, ctx.stream()>>>(run_max, run_sum, target_logit, count);
  CUDA_CHECK_LAUNCH("init_stats_kernel");

  auto chunk_logits = [&](const float* h, int64_t n, int64_t c0, int64_t cn) {  // logits[n, cn] = h . W[c0 : c0 + cn]^T
    cpu::GemmArgs g;
    g.m = n;
    g.n = cn;
    g.segments.push_back({{h, cpu::DType::f32, hd, false}, {weight + size_t(c0 * hd) * welem, a.weight_dtype, hd, false}, hd});
    g.c = logits;
    g.ldc = cn;
    gemm_device(g, ctx);
  };

  for (int64_t r0 = 0; r0 < count; r0 += tile) {
    const int64_t n = std::min(tile, count - r0);
    const float* h = hidden + r0 * hd;
    for (int64_t c0 = 0; c0 < vocab; c0 += chunk) {
      const int64_t cn = std::min(chunk, vocab - c0);
      chunk_logits(h, n, c0, cn);
      chunk_stats_kernel<<<unsigned(n), kThreads, 0, ctx.stream()>>>(logits, cn, c0, targets + r0, run_max + r0,
                                                                     run_sum + r0, target_logit + r0);
      CUDA_CHECK_LAUNCH("chunk_stats_kernel");
    }
    finish_rows_kernel<<<grid_for(n, 256), 256, 0, ctx.stream()>>>(run_max + r0, run_sum + r0, target_logit + r0, n,
                                                                    lse + r0, row_loss + r0);
    CUDA_CHECK_LAUNCH("finish_rows_kernel");
    if (!want_grad) continue;
    for (int64_t c0 = 0; c0 < vocab; c0 += chunk) {
      const int64_t cn = std::min(chunk, vocab - c0);
      chunk_logits(h, n, c0, cn);
      dlogits_kernel<<<unsigned(n), kThreads, 0, ctx.stream()>>>(logits, cn, c0, targets + r0, lse + r0, scale);
      CUDA_CHECK_LAUNCH("dlogits_kernel");
      if (dhidden) {  // dh[n, hd] += dlogits[n, cn] . W_chunk[cn, hd]  (B = W_chunk^T, logical [hd, cn])
        cpu::GemmArgs g;
        g.m = n;
        g.n = hd;
        g.segments.push_back({{logits, cpu::DType::f32, cn, false}, {weight + size_t(c0 * hd) * welem, a.weight_dtype, hd, true}, cn});
        g.c = dhidden + r0 * hd;
        g.ldc = hd;
        g.accumulate = true;
        gemm_device(g, ctx);
      }
      if (dweight) {  // dW[c0 : c0 + cn] += dlogits^T[cn, n] . h[n, hd]
        cpu::GemmArgs g;
        g.m = cn;
        g.n = hd;
        g.segments.push_back({{logits, cpu::DType::f32, cn, true}, {h, cpu::DType::f32, hd, true}, n});
        g.c = dweight + c0 * hd;
        g.ldc = hd;
        g.accumulate = true;
        gemm_device(g, ctx);
      }
    }
  }

  std::vector<double> losses(static_cast<size_t>(count));
  ctx.download(losses.data(), row_loss, losses.size());
  if (dhidden) {  // back to the token positions, in a device copy of dhidden (zeros elsewhere)
    float* full = ctx.alloc<float>(size_t(a.tokens * hd));
    ctx.zero(full, size_t(a.tokens * hd));
    scatter_rows_kernel<<<grid_for(count * hd, 256), 256, 0, ctx.stream()>>>(full, dhidden, index, count, hd);
    CUDA_CHECK_LAUNCH("scatter_rows_kernel");
    ctx.download(a.dhidden, full, size_t(a.tokens * hd));
  }
  if (dweight) ctx.download(a.dweight, dweight, size_t(vocab * hd));
  ctx.sync();
  for (double l : losses) res.loss_sum += l;
  res.loss = res.loss_sum / double(count);
  return res;
}

}  // namespace ernie::cuda
