// Cross-entropy through a tied LM head on the GPU, chunked as cpu/loss.h: the [tokens, vocab]
// logits never exist whole. Rows with a target are gathered into a compact block; for each tile
// of rows and each vocab chunk the logits block comes from the tensor-core GEMM, and
//   pass (a): a block per row folds the chunk into a running max and sum of exponentials
//             (merged in double, as on the CPU) and picks out the target's logit;
//   pass (b): the block again, turned into dlogits = (softmax - onehot) * grad_scale in place,
//             then dhidden += dlogits . W_chunk and dweight_chunk += dlogits^T . hidden (or only
//             the chosen rows of it, drows).
// The loss is summed on the device in a fixed order from the per-row values (reproducible),
// and only that sum comes back. The rows with a target are picked on the host (they size the
// loop), so the device layer takes a host copy of the targets beside the device one.
// The logits come from bf16 operands (f32 accumulation): expect ~1e-3 relative error in them.
//
// Compiled for sm_80 and sm_90, never run here (no GPU).
#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <vector>

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

// drow[c] += sum_i dlogits[i, col] * h[i, c]: one chosen row of dweight (trainable token rows),
// a thread per column, the rows summed in order.
__global__ void row_grad_kernel(float* drow, const float* dlogits, int64_t cn, int64_t col, const float* h, int64_t n,
                                int64_t hd) {
  for (int64_t c = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; c < hd; c += int64_t(gridDim.x) * blockDim.x) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; ++i) s += dlogits[i * cn + col] * h[i * hd + c];
    drow[c] += s;
  }
}

// *sum = the sum of loss[0, n), one block: each thread adds a strided slice in order, then a
// tree over the threads. The order is fixed, so the sum is the same from run to run.
__global__ void sum_losses_kernel(const double* loss, int64_t n, double* sum) {
  __shared__ double partial[kThreads];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) s += loss[i];
  partial[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (int(threadIdx.x) < stride) partial[threadIdx.x] += partial[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) *sum = partial[0];
}

}  // namespace

CrossEntropyResult cross_entropy_device(const CrossEntropyArgs& a, const int32_t* host_targets,
                                        const int32_t* host_row_ids, Context& ctx) {
  const int64_t hd = a.hidden_size, vocab = a.vocab;
  if (a.chunk <= 0 || a.row_tile <= 0) throw std::invalid_argument("cross_entropy: chunk and row_tile must be positive");
  std::vector<int32_t> rows, row_targets;
  for (int64_t t = 0; t < a.tokens; ++t)
    if (host_targets[t] >= 0) {
      rows.push_back(int32_t(t));
      row_targets.push_back(host_targets[t]);
    }
  CrossEntropyResult res;
  res.count = int64_t(rows.size());
  if (a.dhidden) ctx.zero(a.dhidden, size_t(a.tokens * hd));  // ignored rows stay zero
  if (res.count == 0) return res;
  const bool want_grad = a.dhidden || a.dweight || a.drows;
  const float scale = a.has_grad_scale ? a.grad_scale : float(1.0 / double(res.count));

  Context::Scope scope(ctx);  // the compacted rows, the logits block, the per-row statistics
  const int64_t count = res.count;
  const int64_t chunk = std::min(a.chunk, vocab), tile = std::min(a.row_tile, count);
  const size_t welem = size_t(dtype_size(a.weight_dtype));
  const auto* weight = static_cast<const unsigned char*>(a.weight);
  // The host vectors live until the download at the end has waited for the stream.
  const int32_t* targets = ctx.upload(row_targets.data(), row_targets.size());
  // Every row has a target (the usual case): hidden and dhidden are used where they are.
  // Otherwise the rows with one are gathered into a compact block, and their dhidden rows
  // scattered back at the end.
  const bool compact = count < a.tokens;
  const int32_t* index = compact ? ctx.upload(rows.data(), rows.size()) : nullptr;
  const float* hidden = a.hidden;
  float* dhidden = a.dhidden;
  if (compact) {
    float* rows_hidden = ctx.alloc<float>(size_t(count * hd));
    gather_rows_kernel<<<grid_for(count * hd, 256), 256, 0, ctx.stream()>>>(rows_hidden, a.hidden, index, count, hd);
    CUDA_CHECK_LAUNCH("gather_rows_kernel");
    hidden = rows_hidden;
    if (a.dhidden) {
      dhidden = ctx.alloc<float>(size_t(count * hd));
      ctx.zero(dhidden, size_t(count * hd));
    }
  }
  float* dweight = a.dweight;
  float* logits = ctx.alloc<float>(size_t(tile * chunk));
  double* run_max = ctx.alloc<double>(size_t(count));
  double* run_sum = ctx.alloc<double>(size_t(count));
  float* target_logit = ctx.alloc<float>(size_t(count));
  float* lse = ctx.alloc<float>(size_t(count));
  double* row_loss = ctx.alloc<double>(size_t(count));
  double* loss_sum = ctx.alloc<double>(1);
  init_stats_kernel<<<grid_for(count, 256), 256, 0, ctx.stream()>>>(run_max, run_sum, target_logit, count);
  CUDA_CHECK_LAUNCH("init_stats_kernel");

  auto chunk_logits = [&](const float* h, int64_t n, int64_t c0, int64_t cn) {  // logits[n, cn] = h . W[c0 : c0 + cn]^T
    GemmArgs g;
    g.m = n;
    g.n = cn;
    g.segments.push_back({{h, DType::f32, hd, false}, {weight + size_t(c0 * hd) * welem, a.weight_dtype, hd, false}, hd});
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
        GemmArgs g;
        g.m = n;
        g.n = hd;
        g.segments.push_back({{logits, DType::f32, cn, false}, {weight + size_t(c0 * hd) * welem, a.weight_dtype, hd, true}, cn});
        g.c = dhidden + r0 * hd;
        g.ldc = hd;
        g.accumulate = true;
        gemm_device(g, ctx);
      }
      if (dweight) {  // dW[c0 : c0 + cn] += dlogits^T[cn, n] . h[n, hd]
        GemmArgs g;
        g.m = cn;
        g.n = hd;
        g.segments.push_back({{logits, DType::f32, cn, true}, {h, DType::f32, hd, true}, n});
        g.c = dweight + c0 * hd;
        g.ldc = hd;
        g.accumulate = true;
        gemm_device(g, ctx);
      }
      for (int64_t j = 0; a.drows && j < a.row_count; ++j) {  // chosen rows of dW alone
        const int64_t id = host_row_ids[j];
        if (id < c0 || id >= c0 + cn) continue;
        row_grad_kernel<<<grid_for(hd, 256), 256, 0, ctx.stream()>>>(a.drows + j * hd, logits, cn, id - c0, h, n, hd);
        CUDA_CHECK_LAUNCH("row_grad_kernel");
      }
    }
  }

  if (compact && a.dhidden) {  // back to the token positions (a.dhidden is zero elsewhere)
    scatter_rows_kernel<<<grid_for(count * hd, 256), 256, 0, ctx.stream()>>>(a.dhidden, dhidden, index, count, hd);
    CUDA_CHECK_LAUNCH("scatter_rows_kernel");
  }
  sum_losses_kernel<<<1, kThreads, 0, ctx.stream()>>>(row_loss, count, loss_sum);
  CUDA_CHECK_LAUNCH("sum_losses_kernel");
  ctx.download(&res.loss_sum, loss_sum, 1);
  ctx.sync();
  res.loss = res.loss_sum / double(count);
  return res;
}

}  // namespace ernie::cuda
