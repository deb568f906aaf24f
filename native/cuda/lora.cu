// A linear layer with a LoRA adapter on the GPU, forward and backward, as cpu/lora.h:
//   y = x W^T + s (x A^T) B^T
// fused the way the CPU backend fuses it: the base product and the adapter's up-projection are
// two K-segments of one tensor-core GEMM (one pass over y), and so are dy W and s (dy B) A for
// dx. Dropout on the adapter's input uses the same hashed mask as the CPU (lora_keep), made
// on the device, so both backends drop the same elements.
//
// Compiled for sm_80 and sm_90, never run here (no GPU).
#include "cuda/device.cuh"

namespace ernie::cuda {
namespace {

MatrixRef f32_ref(const float* p, int64_t ld, bool trans) { return MatrixRef{p, DType::f32, ld, trans}; }

// out[i] = x[i] / (1 - p) where element i is kept, else 0.
__global__ void dropout_kernel(float* out, const float* x, int64_t n, uint64_t seed, float p, float keep_scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = lora_keep(seed, uint64_t(i), p) ? x[i] * keep_scale : 0.0f;
}

// dx[i] += path[i] / (1 - p) where element i was kept.
__global__ void add_kept_kernel(float* dx, const float* path, int64_t n, uint64_t seed, float p, float keep_scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    if (lora_keep(seed, uint64_t(i), p)) dx[i] += path[i] * keep_scale;
}

const float* dropped_input(Context& ctx, const float* x, int64_t n, const LoraRef& lora) {
  if (lora.dropout <= 0.0f || n == 0) return x;
  float* out = ctx.alloc<float>(size_t(n));
  dropout_kernel<<<grid_for(n, 256), 256, 0, ctx.stream()>>>(out, x, n, lora.seed, lora.dropout, 1.0f / (1.0f - lora.dropout));
  CUDA_CHECK_LAUNCH("dropout_kernel");
  return out;
}

GemmArgs product(int64_t m, int64_t n, float* c, int64_t ldc, float alpha = 1.0f, bool accumulate = false) {
  GemmArgs g;
  g.m = m;
  g.n = n;
  g.c = c;
  g.ldc = ldc;
  g.alpha = alpha;
  g.accumulate = accumulate;
  return g;
}

}  // namespace

// Every pointer in device memory; shapes and meaning as cpu::lora_linear_forward.
void lora_forward_device(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora,
                         float* u, float* y, bool accumulate, Context& ctx) {
  Context::Scope scope(ctx);
  const float* xd = dropped_input(ctx, x, sh.m * sh.k, lora);
  GemmArgs ua = product(sh.m, lora.r, u, lora.r);  // u = dropout(x) A^T
  ua.segments = {{f32_ref(xd, sh.k, false), f32_ref(lora.a, sh.k, false), sh.k}};
  gemm_device(ua, ctx);
  GemmArgs ya = product(sh.m, sh.n, y, sh.n, 1.0f, accumulate);  // y (+)= x W^T + s u B^T
  ya.segments = {{f32_ref(x, sh.k, false), w, sh.k},
                 {f32_ref(u, lora.r, false), f32_ref(lora.b, lora.r, false), lora.r, lora.scale}};
  gemm_device(ya, ctx);
}

void lora_backward_device(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora,
                          const float* u, const float* dy, float* dx, bool dx_accumulate, float* da, float* db,
                          Context& ctx) {
  Context::Scope scope(ctx);
  const int64_t m = sh.m, n = sh.n, k = sh.k, r = lora.r;
  float* g = ctx.alloc<float>(size_t(m * r));  // g = dy B  [m, r]
  GemmArgs ga = product(m, r, g, r);
  ga.segments = {{f32_ref(dy, n, false), f32_ref(lora.b, r, true), n}};
  gemm_device(ga, ctx);
  GemmArgs gb = product(n, r, db, r, lora.scale, true);  // dB += s dy^T u
  gb.segments = {{f32_ref(dy, n, true), f32_ref(u, r, true), m}};
  gemm_device(gb, ctx);
  const float* xd = dropped_input(ctx, x, m * k, lora);
  GemmArgs gA = product(r, k, da, k, lora.scale, true);  // dA += s g^T dropout(x)
  gA.segments = {{f32_ref(g, r, true), f32_ref(xd, k, true), m}};
  gemm_device(gA, ctx);
  if (dx == nullptr) return;
  if (lora.dropout > 0.0f) {
    // dx (+)= dy W, then the adapter's path s g A through the dropout mask
    float* path = ctx.alloc<float>(size_t(m * k));
    GemmArgs gp = product(m, k, path, k);
    gp.segments = {{f32_ref(g, r, false), f32_ref(lora.a, k, true), r, lora.scale}};
    gemm_device(gp, ctx);
    GemmArgs gx = product(m, k, dx, k, 1.0f, dx_accumulate);
    gx.segments = {{f32_ref(dy, n, false), transposed(w), n}};
    gemm_device(gx, ctx);
    if (m * k > 0) {
      add_kept_kernel<<<grid_for(m * k, 256), 256, 0, ctx.stream()>>>(dx, path, m * k, lora.seed, lora.dropout,
                                                                       1.0f / (1.0f - lora.dropout));
      CUDA_CHECK_LAUNCH("add_kept_kernel");
    }
    return;
  }
  GemmArgs gx = product(m, k, dx, k, 1.0f, dx_accumulate);  // dx (+)= dy W + s g A, one pass
  gx.segments = {{f32_ref(dy, n, false), transposed(w), n}, {f32_ref(g, r, false), f32_ref(lora.a, k, true), r, lora.scale}};
  gemm_device(gx, ctx);
}

namespace {

MatrixRef upload_weight(Context& ctx, const MatrixRef& w, int64_t n, int64_t k) {
  MatrixRef d = w;
  d.data = ctx.upload_bytes(w.data, size_t(n * k) * size_t(dtype_size(w.dtype)));
  return d;
}

}  // namespace

}  // namespace ernie::cuda
