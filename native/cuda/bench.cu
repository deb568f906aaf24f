// Device-resident benchmarks for `npm run bench:cuda`: inputs are made on the GPU, each run is
// timed with CUDA events on the job's stream, and the median of the runs is returned. Nothing
// crosses PCIe inside the timed region.
//
// Compiled for sm_80 and sm_90, never run here (no GPU).
#include <algorithm>
#include <stdexcept>

#include "cuda/device.cuh"

namespace ernie::cuda {

namespace {

__device__ __forceinline__ float hashed_uniform(uint64_t i, uint64_t seed) {
  return float(double(lora_mix(seed ^ lora_mix(i)) >> 11) * 0x1.0p-53) * 2.0f - 1.0f;
}

__global__ void fill_f32_kernel(float* out, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = hashed_uniform(uint64_t(i), seed) * scale;
}

__global__ void fill_bf16_kernel(uint16_t* out, int64_t n, uint64_t seed, float scale) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = f32_to_bf16_bits(hashed_uniform(uint64_t(i), seed) * scale);
}

class Bench {
 public:
  Bench() { seed_ = 1; }
  float* f32(int64_t n, float scale = 1.0f) {
    float* p = ctx.alloc<float>(size_t(n));
    fill_f32_kernel<<<grid_for(n, 256), 256, 0, ctx.stream()>>>(p, n, seed_++, scale);
    CUDA_CHECK_LAUNCH("fill_f32_kernel");
    return p;
  }
  uint16_t* bf16(int64_t n, float scale = 1.0f) {
    uint16_t* p = ctx.alloc<uint16_t>(size_t(n));
    fill_bf16_kernel<<<grid_for(n, 256), 256, 0, ctx.stream()>>>(p, n, seed_++, scale);
    CUDA_CHECK_LAUNCH("fill_bf16_kernel");
    return p;
  }
  // Median seconds of `iterations` runs of fn after one warm-up run.
  template <typename Fn>
  double time(int iterations, Fn fn) {
    fn();
    cudaEvent_t start, stop;
    CUDA_CHECK(cudaEventCreate(&start));
    CUDA_CHECK(cudaEventCreate(&stop));
    std::vector<double> seconds;
    try {
      for (int i = 0; i < iterations; ++i) {
        CUDA_CHECK(cudaEventRecord(start, ctx.stream()));
        fn();
        CUDA_CHECK(cudaEventRecord(stop, ctx.stream()));
        CUDA_CHECK(cudaEventSynchronize(stop));
        float ms = 0.0f;
        CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
        seconds.push_back(double(ms) / 1e3);
      }
    } catch (...) {
      cudaEventDestroy(start);
      cudaEventDestroy(stop);
      throw;
    }
    cudaEventDestroy(start);
    cudaEventDestroy(stop);
    std::sort(seconds.begin(), seconds.end());
    return seconds[seconds.size() / 2];
  }
  Context ctx;

 private:
  uint64_t seed_;
};

AttentionArgs attention_args(Bench& b, const BenchArgs& a, bool backward) {
  AttentionArgs g;
  g.batch = a.batch;
  g.tq = g.tk = a.seq;
  g.heads = a.heads;
  g.kv_heads = a.kv_heads;
  g.head_dim = a.head_dim;
  g.scale = 1.0f / std::sqrt(float(a.head_dim));
  const int64_t q = a.batch * a.seq * a.heads * a.head_dim, kv = a.batch * a.seq * a.kv_heads * a.head_dim;
  g.q = b.f32(q);
  g.k = b.f32(kv);
  g.v = b.f32(kv);
  g.out = b.ctx.alloc<float>(size_t(q));
  g.lse = b.ctx.alloc<float>(size_t(a.batch * a.heads * a.seq));
  if (backward) {
    attention_forward_device(g, b.ctx);
    g.dout = b.f32(q);
    g.dq = b.ctx.alloc<float>(size_t(q));
    g.dk = b.ctx.alloc<float>(size_t(kv));
    g.dv = b.ctx.alloc<float>(size_t(kv));
  }
  return g;
}

}  // namespace

double benchmark(const BenchArgs& a) {
  if (a.iterations < 1 || a.iterations > 1000) throw std::invalid_argument("benchmark: iterations must be in [1, 1000]");
  Bench b;
  if (a.kind == "gemm") {  // bf16 A [m, k] and B [n, k] read in place, f32 C
    GemmArgs g;
    g.m = a.m;
    g.n = a.n;
    g.segments.push_back({{b.bf16(a.m * a.k), DType::bf16, a.k, false}, {b.bf16(a.n * a.k, 0.05f), DType::bf16, a.k, false}, a.k});
    g.c = b.ctx.alloc<float>(size_t(a.m * a.n));
    g.ldc = a.n;
    return b.time(a.iterations, [&] { gemm_device(g, b.ctx); });
  }
  if (a.kind == "attention_forward") {
    const AttentionArgs g = attention_args(b, a, false);
    return b.time(a.iterations, [&] { attention_forward_device(g, b.ctx); });
  }
  if (a.kind == "attention_backward") {
    const AttentionArgs g = attention_args(b, a, true);
    return b.time(a.iterations, [&] { attention_backward_device(g, b.ctx); });
  }
  if (a.kind == "lora_layer") {
    // One decoder layer's LoRA linears (q, k, v, o, gate, up, down; bf16 base weights, f32
    // adapters), forward and backward with dx, plus attention forward and backward: the tensor-
    // core work of a LoRA training step per layer. Norms, RoPE, SwiGLU and the loss are left out.
    const int64_t tokens = a.batch * a.seq, hd = a.hidden, q_dim = a.heads * a.head_dim,
                  kv_dim = a.kv_heads * a.head_dim, inter = a.intermediate, r = a.rank;
    struct Linear {
      int64_t n, k;
    };
    const Linear linears[] = {{q_dim, hd}, {kv_dim, hd}, {kv_dim, hd}, {hd, q_dim}, {inter, hd}, {inter, hd}, {hd, inter}};
    struct Buffers {
      LinearShape sh;
      const float* x;
      MatrixRef w;
      LoraRef lora;
      float *u, *y, *dy, *dx, *da, *db;
    };
    std::vector<Buffers> bufs;
    for (const Linear& l : linears) {
      Buffers f;
      f.sh = {tokens, l.n, l.k};
      f.x = b.f32(tokens * l.k);
      f.w = {b.bf16(l.n * l.k, 0.02f), DType::bf16, l.k, false};
      f.lora = {b.f32(r * l.k, 0.02f), b.f32(l.n * r, 0.02f), r, 2.0f};
      f.u = b.ctx.alloc<float>(size_t(tokens * r));
      f.y = b.ctx.alloc<float>(size_t(tokens * l.n));
      f.dy = b.f32(tokens * l.n);
      f.dx = b.ctx.alloc<float>(size_t(tokens * l.k));
      f.da = b.f32(r * l.k);
      f.db = b.f32(l.n * r);
      bufs.push_back(f);
    }
    const AttentionArgs att = attention_args(b, a, true);
    return b.time(a.iterations, [&] {
      for (Buffers& f : bufs) lora_forward_device(f.sh, f.x, f.w, f.lora, f.u, f.y, false, b.ctx);
      attention_forward_device(att, b.ctx);
      attention_backward_device(att, b.ctx);
      for (Buffers& f : bufs) lora_backward_device(f.sh, f.x, f.w, f.lora, f.u, f.dy, f.dx, false, f.da, f.db, b.ctx);
    });
  }
  throw std::invalid_argument("benchmark: unknown kind '" + a.kind + "'");
}

}  // namespace ernie::cuda
