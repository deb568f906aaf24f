// The decoder's row and elementwise ops on the GPU, as cpu/ops.h: RMSNorm (also the per-head
// q/k norm of Qwen3: rows = tokens * heads, dim = head_dim), RoPE in both pairings, SwiGLU and
// the embedding lookup, forward and backward. f32 throughout, memory-bound; a warp per row for
// the norms, so short rows (a 128-wide head) and long ones (the hidden size) both fill a warp.
//
// Determinism: RMSNorm's dweight is summed over fixed row chunks in a fixed order, like the CPU
// backend's. The embedding backward adds rows with atomics: its summation order for repeated
// ids is not fixed (the CPU backend's is).
//
// Each op has a device-pointer form (*_device, cuda/device.cuh), which the CUDA backend
// (cuda/cuda_backend.cu) queues on the calling thread's stream.
//
// Compiled for sm_80 and sm_90, never run here (no GPU).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <map>
#include <mutex>
#include <tuple>

#include "cuda/device.cuh"

namespace ernie::cuda {
namespace {

constexpr int kThreads = 256, kWarps = kThreads / 32;
constexpr int64_t kRowChunk = 64;  // rows per dweight partial sum

template <bool kWeightBf16>
__global__ void rmsnorm_fwd_kernel(const float* x, const void* w, int64_t rows, int64_t dim, float eps, float* out,
                                   float* rstd) {
  const int lane = int(threadIdx.x) % 32;
  for (int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; row < rows; row += int64_t(gridDim.x) * kWarps) {
    const float* xr = x + row * dim;
    float ss = 0.0f;
    for (int64_t c = lane; c < dim; c += 32) ss += xr[c] * xr[c];
    ss = warp_sum(ss);
    const float rs = 1.0f / sqrtf(ss / float(dim) + eps);
    if (rstd && lane == 0) rstd[row] = rs;
    float* yr = out + row * dim;
    for (int64_t c = lane; c < dim; c += 32) yr[c] = xr[c] * rs * load_as_f32(w, c, kWeightBf16);
  }
}

// dx_i = r w_i g_i - x_i r^3 / dim * sum_j g_j w_j x_j   (y = w x r, r = (mean(x^2) + eps)^-1/2)
template <bool kWeightBf16>
__global__ void rmsnorm_bwd_kernel(const float* dout, const float* x, const void* w, const float* rstd, int64_t rows,
                                   int64_t dim, float* dx, bool accumulate) {
  const int lane = int(threadIdx.x) % 32;
  for (int64_t row = int64_t(blockIdx.x) * kWarps + threadIdx.x / 32; row < rows; row += int64_t(gridDim.x) * kWarps) {
    const float* gr = dout + row * dim;
    const float* xr = x + row * dim;
    float dot = 0.0f;
    for (int64_t c = lane; c < dim; c += 32) dot += gr[c] * load_as_f32(w, c, kWeightBf16) * xr[c];
    dot = warp_sum(dot);
    const float rs = rstd[row];
    const float coef = rs * rs * rs * dot / float(dim);
    float* dxr = dx + row * dim;
    for (int64_t c = lane; c < dim; c += 32) {
      const float d = gr[c] * load_as_f32(w, c, kWeightBf16) * rs - xr[c] * coef;
      dxr[c] = accumulate ? dxr[c] + d : d;
    }
  }
}

// partial[chunk, j] = sum over the chunk's rows of dout * x * rstd (a thread per column).
__global__ void rmsnorm_dweight_partial_kernel(const float* dout, const float* x, const float* rstd, int64_t rows,
                                               int64_t dim, float* partial) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  if (j >= dim) return;
  const int64_t r1 = min(rows, (chunk + 1) * kRowChunk);
  float s = 0.0f;
  for (int64_t r = chunk * kRowChunk; r < r1; ++r) s += dout[r * dim + j] * x[r * dim + j] * rstd[r];
  partial[chunk * dim + j] = s;
}

// dweight[j] += the partial sums in chunk order.
__global__ void sum_partials_kernel(const float* partial, int64_t chunks, int64_t dim, float* dweight) {
  const int64_t j = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  if (j >= dim) return;
  float s = 0.0f;
  for (int64_t c = 0; c < chunks; ++c) s += partial[c * dim + j];
  dweight[j] += s;
}

// One thread per (token, rotation index i): the angle is taken in double (pos * inv_freq[i]),
// as on the CPU, and the pair (first, second) of every head rotated by it.
__global__ void rope_kernel(const float* x, float* out, const int32_t* positions, const double* inv_freq, int64_t rows,
                            int64_t heads, int64_t head_dim, bool half_pairing, double sign) {
  const int64_t half = head_dim / 2, total = rows * half;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = idx / half, i = idx % half;
    double s, c;
    sincos(double(positions[row]) * inv_freq[i], &s, &c);
    const float cf = float(c), sf = float(sign * s);
    const int64_t first = half_pairing ? i : 2 * i, second = half_pairing ? i + half : 2 * i + 1;
    for (int64_t h = 0; h < heads; ++h) {
      const int64_t base = (row * heads + h) * head_dim;
      const float a = x[base + first], b = x[base + second];  // both read first: out may be x
      out[base + first] = a * cf - b * sf;
      out[base + second] = b * cf + a * sf;
    }
  }
}

__device__ __forceinline__ float sigmoid(float v) {
  const float e = expf(-fabsf(v));  // exp of -|v| only: nothing overflows
  return v >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}

__global__ void swiglu_fwd_kernel(const float* gate, const float* up, int64_t in_ld, int64_t rows, int64_t dim, float* out) {
  const int64_t total = rows * dim;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / dim, j = idx % dim;
    const float g = gate[r * in_ld + j];
    out[idx] = g * sigmoid(g) * up[r * in_ld + j];
  }
}

// silu'(g) = s (1 + g (1 - s)), s = sigmoid(g)
__global__ void swiglu_bwd_kernel(const float* dout, const float* gate, const float* up, int64_t in_ld, int64_t rows,
                                  int64_t dim, float* dgate, float* dup, int64_t grad_ld) {
  const int64_t total = rows * dim;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = idx / dim, j = idx % dim;
    const float g = gate[r * in_ld + j], u = up[r * in_ld + j], d = dout[idx];
    const float s = sigmoid(g);
    dup[r * grad_ld + j] = d * (g * s);
    dgate[r * grad_ld + j] = d * u * (s * (1.0f + g * (1.0f - s)));
  }
}

template <bool kTableBf16>
__global__ void embedding_fwd_kernel(const int32_t* ids, int64_t n, const void* table, int64_t dim, float* out) {
  const int64_t total = n * dim;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = idx / dim, j = idx % dim;
    out[idx] = load_as_f32(table, int64_t(ids[k]) * dim + j, kTableBf16);
  }
}

__global__ void embedding_bwd_kernel(const int32_t* ids, int64_t n, const float* dout, int64_t dim, float* dtable) {
  const int64_t total = n * dim;
  for (int64_t idx = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; idx < total; idx += int64_t(gridDim.x) * blockDim.x) {
    const int64_t k = idx / dim, j = idx % dim;
    atomicAdd(dtable + int64_t(ids[k]) * dim + j, dout[idx]);
  }
}

unsigned row_blocks(int64_t rows) { return unsigned(std::max<int64_t>(1, std::min<int64_t>(ceil_div(rows, kWarps), 65535 * 8))); }

// Device copies of host float arrays that may overlap or interleave (the fused gate|up layout):
// each maximal run of overlapping host ranges becomes one device buffer, so pointers into it
// keep their relative offsets, and copying a run back never writes what another range holds.
class Mirror {
 public:
  explicit Mirror(Context& ctx) : ctx_(ctx) {}
  // Registers [p, p + count) before map() / upload() / download().
  void add(const float* p, int64_t count) {
    if (count > 0) ranges_.push_back({p, p + count});
  }
  void upload() {
    build();
    for (Run& r : runs_) r.dev = ctx_.upload(r.begin, size_t(r.end - r.begin));
  }
  float* map(const float* p) const {
    for (const Run& r : runs_)
      if (p >= r.begin && p < r.end) return r.dev + (p - r.begin);
    return nullptr;
  }
  void download() {
    for (Run& r : runs_) ctx_.download(const_cast<float*>(r.begin), r.dev, size_t(r.end - r.begin));
  }

 private:
  struct Range {
    const float *begin, *end;
  };
  struct Run {
    const float *begin, *end;
    float* dev;
  };
  void build() {
    std::sort(ranges_.begin(), ranges_.end(), [](const Range& a, const Range& b) { return a.begin < b.begin; });
    for (const Range& r : ranges_) {
      if (!runs_.empty() && r.begin <= runs_.back().end) runs_.back().end = std::max(runs_.back().end, r.end);
      else runs_.push_back({r.begin, r.end, nullptr});
    }
  }
  Context& ctx_;
  std::vector<Range> ranges_;
  std::vector<Run> runs_;
};

// Elements a run of `rows` rows of `dim` values, `ld` apart, spans.
int64_t extent(int64_t rows, int64_t dim, int64_t ld) { return rows == 0 || dim == 0 ? 0 : (rows - 1) * ld + dim; }

// RoPE's inverse frequencies theta^(-2i/head_dim), computed on the host in double as the CPU
// does, in each device's memory: made on first use per (device, theta, head_dim) with a
// synchronous copy (so every stream may read them at once) and kept for the process, like the
// optimiser's quantisation maps. A model has one or two such tables.
const double* rope_inv_freq(int device, double theta, int64_t head_dim) {
  static std::mutex mutex;
  static std::map<std::tuple<int, uint64_t, int64_t>, double*> tables;
  uint64_t theta_bits;
  std::memcpy(&theta_bits, &theta, sizeof theta_bits);
  const auto key = std::make_tuple(device, theta_bits, head_dim);
  std::lock_guard<std::mutex> lock(mutex);
  auto it = tables.find(key);
  if (it != tables.end()) return it->second;
  const int64_t half = head_dim / 2;
  std::vector<double> inv_freq(static_cast<size_t>(half));
  for (int64_t i = 0; i < half; ++i) inv_freq[size_t(i)] = std::pow(theta, -2.0 * double(i) / double(head_dim));
  double* table = nullptr;
  CUDA_CHECK(cudaMalloc(&table, inv_freq.size() * sizeof(double)));
  CUDA_CHECK(cudaMemcpy(table, inv_freq.data(), inv_freq.size() * sizeof(double), cudaMemcpyHostToDevice));
  tables.emplace(key, table);
  return table;
}

}  // namespace

// ---- the device-pointer layer ------------------------------------------------------------------

void rmsnorm_forward_device(const RmsNormForwardArgs& a, Context& ctx) {
  if (a.rows == 0) return;
  // In place (out == x) is safe: each lane reads its columns for the sum of squares, the warp
  // reduces, and only then does the same lane write those columns.
  if (a.weight_dtype == DType::bf16)
    rmsnorm_fwd_kernel<true><<<row_blocks(a.rows), kThreads, 0, ctx.stream()>>>(a.x, a.weight, a.rows, a.dim, a.eps, a.out, a.rstd);
  else
    rmsnorm_fwd_kernel<false><<<row_blocks(a.rows), kThreads, 0, ctx.stream()>>>(a.x, a.weight, a.rows, a.dim, a.eps, a.out, a.rstd);
  CUDA_CHECK_LAUNCH("rmsnorm_fwd_kernel");
}

void rmsnorm_backward_device(const RmsNormBackwardArgs& a, Context& ctx) {
  if (a.rows == 0) return;
  Context::Scope scope(ctx);  // the dweight partial sums
  if (a.weight_dtype == DType::bf16)
    rmsnorm_bwd_kernel<true><<<row_blocks(a.rows), kThreads, 0, ctx.stream()>>>(a.dout, a.x, a.weight, a.rstd, a.rows, a.dim,
                                                                                 a.dx, a.accumulate);
  else
    rmsnorm_bwd_kernel<false><<<row_blocks(a.rows), kThreads, 0, ctx.stream()>>>(a.dout, a.x, a.weight, a.rstd, a.rows, a.dim,
                                                                                  a.dx, a.accumulate);
  CUDA_CHECK_LAUNCH("rmsnorm_bwd_kernel");
  if (a.dweight) {
    const int64_t chunks = ceil_div(a.rows, kRowChunk);
    if (chunks > 65535) throw std::invalid_argument("rmsnorm: too many rows for the CUDA dweight reduction");
    float* partial = ctx.alloc<float>(size_t(chunks * a.dim));
    const dim3 grid(unsigned(ceil_div(a.dim, 256)), unsigned(chunks));
    rmsnorm_dweight_partial_kernel<<<grid, 256, 0, ctx.stream()>>>(a.dout, a.x, a.rstd, a.rows, a.dim, partial);
    CUDA_CHECK_LAUNCH("rmsnorm_dweight_partial_kernel");
    sum_partials_kernel<<<unsigned(ceil_div(a.dim, 256)), 256, 0, ctx.stream()>>>(partial, chunks, a.dim, a.dweight);
    CUDA_CHECK_LAUNCH("sum_partials_kernel");
  }
}

void rope_device(const RopeArgs& a, Context& ctx) {
  if (a.rows == 0 || a.heads == 0 || a.head_dim < 2) return;
  const int64_t half = a.head_dim / 2;
  const double* freq = rope_inv_freq(ctx.device(), a.theta, a.head_dim);
  // In place (out == x) is safe: each thread reads both elements of its pairs before writing them.
  rope_kernel<<<grid_for(a.rows * half, 256), 256, 0, ctx.stream()>>>(a.x, a.out, a.positions, freq, a.rows, a.heads,
                                                                       a.head_dim, a.pairing == RopePairing::half,
                                                                       a.inverse ? -1.0 : 1.0);
  CUDA_CHECK_LAUNCH("rope_kernel");
}

void swiglu_forward_device(const SwigluForwardArgs& a, Context& ctx) {
  if (a.rows == 0 || a.dim == 0) return;
  swiglu_fwd_kernel<<<grid_for(a.rows * a.dim, 256), 256, 0, ctx.stream()>>>(a.gate, a.up, a.in_ld, a.rows, a.dim, a.out);
  CUDA_CHECK_LAUNCH("swiglu_fwd_kernel");
}

void swiglu_backward_device(const SwigluBackwardArgs& a, Context& ctx) {
  if (a.rows == 0 || a.dim == 0) return;
  swiglu_bwd_kernel<<<grid_for(a.rows * a.dim, 256), 256, 0, ctx.stream()>>>(a.dout, a.gate, a.up, a.in_ld, a.rows, a.dim,
                                                                               a.dgate, a.dup, a.grad_ld);
  CUDA_CHECK_LAUNCH("swiglu_bwd_kernel");
}

void embedding_forward_device(const EmbeddingForwardArgs& a, Context& ctx) {
  if (a.n == 0 || a.dim == 0) return;
  if (a.table_dtype == DType::bf16)
    embedding_fwd_kernel<true><<<grid_for(a.n * a.dim, 256), 256, 0, ctx.stream()>>>(a.ids, a.n, a.table, a.dim, a.out);
  else
    embedding_fwd_kernel<false><<<grid_for(a.n * a.dim, 256), 256, 0, ctx.stream()>>>(a.ids, a.n, a.table, a.dim, a.out);
  CUDA_CHECK_LAUNCH("embedding_fwd_kernel");
}

void embedding_backward_device(const EmbeddingBackwardArgs& a, Context& ctx) {
  if (a.n == 0 || a.dim == 0) return;
  embedding_bwd_kernel<<<grid_for(a.n * a.dim, 256), 256, 0, ctx.stream()>>>(a.ids, a.n, a.dout, a.dim, a.dtable);
  CUDA_CHECK_LAUNCH("embedding_bwd_kernel");
}

}  // namespace ernie::cuda
