// What the CUDA kernel families share: error checking, the per-job context (device, stream,
// pooled memory), bf16 helpers, the PTX wrappers for the tensor-core path (mma.sync,
// ldmatrix, cp.async), and the device-pointer GEMM the other families build on.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "cuda/backend.h"

namespace ernie::cuda {

// ---- errors ------------------------------------------------------------------------------------
[[noreturn]] void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line);
inline void check(cudaError_t err, const char* call, const char* file, int line) {
  if (err != cudaSuccess) throw_cuda_error(err, call, file, line);
}

}  // namespace ernie::cuda

// Every CUDA runtime call goes through this: a failure becomes a CudaError (a std::exception,
// which the addon turns into a rejected Promise) naming the call, file, line and error.
#define CUDA_CHECK(call) ::ernie::cuda::check((call), #call, __FILE__, __LINE__)
// After a kernel launch: a bad configuration shows up here, a fault at the next synchronise.
#define CUDA_CHECK_LAUNCH(kernel) ::ernie::cuda::check(cudaGetLastError(), "launch of " kernel, __FILE__, __LINE__)

namespace ernie::cuda {

// ---- memory pool and per-job context ----------------------------------------------------------
// A caching allocator: blocks freed by a job go to a per-device free list and are handed to the
// next job that asks for a size they fit (within 2x), instead of cudaFree / cudaMalloc each call.
// A block is released only after its job's stream has drained, so reuse needs no stream ordering.
void* pool_allocate(int device, size_t bytes, size_t* granted);
void pool_release(int device, void* p, size_t bytes);
// For a context whose stream failed (the device may be in an error state): freed, not cached.
void pool_discard(int device, void* p, size_t bytes);

cudaStream_t stream_acquire(int device);
void stream_release(int device, cudaStream_t s);

// One addon job's hold on the GPU: makes the chosen device current on this (worker) thread,
// takes a stream, and owns the device memory it allocates until it ends. The destructor waits
// for the stream, so nothing in flight can outlive the buffers it uses.
//
// Two owners use it: each host-pointer entry point (cuda/backend.h) makes one for its call, on
// the device setCudaDevice chose; the backend (cuda/cuda_backend.cu) keeps one per thread and
// device for the thread's lifetime, its queue, and runs every op in a Scope of it.
class Context {
 public:
  Context();                   // on current_device()
  explicit Context(int device);
  ~Context();
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  cudaStream_t stream() const { return stream_; }
  int device() const { return device_; }
  const cudaDeviceProp& props() const;

  void* alloc_bytes(size_t bytes);
  template <typename T>
  T* alloc(size_t count) {
    return static_cast<T*>(alloc_bytes(count * sizeof(T)));
  }
  template <typename T>
  T* upload(const T* host, size_t count) {
    T* d = alloc<T>(count);
    if (count) CUDA_CHECK(cudaMemcpyAsync(d, host, count * sizeof(T), cudaMemcpyHostToDevice, stream_));
    return d;
  }
  void* upload_bytes(const void* host, size_t bytes) {
    void* d = alloc_bytes(bytes);
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(d, host, bytes, cudaMemcpyHostToDevice, stream_));
    return d;
  }
  template <typename T>
  void download(T* host, const T* dev, size_t count) {
    if (count) CUDA_CHECK(cudaMemcpyAsync(host, dev, count * sizeof(T), cudaMemcpyDeviceToHost, stream_));
  }
  template <typename T>
  void zero(T* dev, size_t count) {
    if (count) CUDA_CHECK(cudaMemsetAsync(dev, 0, count * sizeof(T), stream_));
  }
  // Waits for everything queued on the stream; a kernel fault surfaces here as a CudaError.
  void sync();
  // Returns the blocks kept for reuse (see Scope) to the device's pool, for other streams to
  // take. Only when the stream has drained (after sync()) and no Scope holds blocks in use.
  void release_recycled();

  // Temporaries: what is allocated while a Scope lives is kept by the context for its own
  // later allocations when the Scope ends. Work on one stream runs in order, so a later kernel
  // reusing a block cannot overtake the earlier one still reading it; other jobs (other
  // streams) see the block only once the context ends and its stream has drained.
  class Scope {
   public:
    explicit Scope(Context& ctx) : ctx_(ctx), mark_(ctx.blocks_.size()) {}
    ~Scope() { ctx_.recycle_from(mark_); }
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;

   private:
    Context& ctx_;
    size_t mark_;
  };

 private:
  void recycle_from(size_t mark);

  int device_ = 0;
  cudaStream_t stream_ = nullptr;
  std::vector<std::pair<void*, size_t>> blocks_;       // in use
  std::vector<std::pair<void*, size_t>> recycled_;     // free for this context's next allocations
};

// ---- small helpers -----------------------------------------------------------------------------
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Blocks for a grid-stride elementwise kernel over n items.
inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = ceil_div(n, threads);
  return unsigned(blocks < 1 ? 1 : blocks > 65535 * 8 ? 65535 * 8 : blocks);
}

// bf16 bits <-> f32, bit for bit as cpu/tensor.h (round to nearest even, NaN kept quiet).
__host__ __device__ inline float bf16_bits_to_f32(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(uint32_t(h) << 16);
#else
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
#endif
}
__host__ __device__ inline uint16_t f32_to_bf16_bits(float f) {
#if defined(__CUDA_ARCH__)
  uint32_t u = __float_as_uint(f);
#else
  uint32_t u;
  std::memcpy(&u, &f, 4);
#endif
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}

// An f32 or bf16 element of a weight-like array.
__device__ __forceinline__ float load_as_f32(const void* p, int64_t i, bool is_bf16) {
  return is_bf16 ? bf16_bits_to_f32(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
  return v;
}

// ---- PTX wrappers (sm_80+) ---------------------------------------------------------------------
__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes global -> shared, bypassing L1; src_bytes < 16 zero-fills the rest (0: all zeros,
// and nothing is read from `src`).
__device__ __forceinline__ void cp_async16(void* dst_smem, const void* src, int src_bytes) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(smem_addr(dst_smem)), "l"(src), "r"(src_bytes)
               : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
// Four 8x8 b16 matrices; lanes 8i..8i+7 give the row addresses of matrix i, and each lane gets
// from matrix i the pair at row lane/4, columns 2(lane%4), +1 (with .trans: of the transpose).
__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(smem_addr(p)));
}
// D[16x8] += A[16x16] . B[16x8], bf16 in, f32 accumulate. Fragments (g = lane/4, t = lane%4):
//   A: a0 (row g, cols 2t,2t+1), a1 (row g+8), a2 (row g, cols 2t+8,+9), a3 (row g+8, cols 2t+8,+9)
//   B: b0 (rows 2t,2t+1 of K, col g), b1 (rows 2t+8,+9)
//   C: c0,c1 (row g, cols 2t,2t+1), c2,c3 (row g+8)
__device__ __forceinline__ void mma_bf16_16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
      "{%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
// Two f32 as a bf16 pair in one register: `lo` in the low half (the lower column index).
__device__ __forceinline__ uint32_t pack_bf16x2(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);
  uint32_t r;
  memcpy(&r, &v, 4);
  return r;
}

// ---- the device-pointer GEMM -------------------------------------------------------------------
// GemmArgs with every pointer (segments' A and B, C) in device memory:
//   C[m, n] (+)= alpha * sum_s scale_s * A_s . B_s^T
// The tensor-core kernel reads bf16 operands whose K is contiguous. An operand that already is
// (bf16, not transposed, 16-byte aligned rows, one segment, scale 1) is read in place; the rest
// are packed first (converted to bf16, transposed, scaled by alpha * scale for A, and the
// segments laid end to end along K with each padded to the K tile).
void gemm_device(const GemmArgs& g, Context& ctx);

// Attention with every array of the args in device memory (the layouts of cpu/attention.h);
// the backward overwrites dq, dk, dv.
void attention_forward_device(const AttentionArgs& a, Context& ctx);
void attention_backward_device(const AttentionArgs& a, Context& ctx);

// LoRA linear forward / backward with every pointer (x, w, lora.a, lora.b, u, y, dy, dx, da,
// db) in device memory; the meaning of cpu::lora_linear_forward / _backward.
void lora_forward_device(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora,
                         float* u, float* y, bool accumulate, Context& ctx);
void lora_backward_device(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora,
                          const float* u, const float* dy, float* dx, bool dx_accumulate, float* da, float* db,
                          Context& ctx);

// The row ops with every array of the args in device memory, queued on ctx's stream (the
// meaning of backend/ops.h). Temporaries (RMSNorm's dweight partial sums) come from ctx.
void rmsnorm_forward_device(const RmsNormForwardArgs& a, Context& ctx);
void rmsnorm_backward_device(const RmsNormBackwardArgs& a, Context& ctx);
void rope_device(const RopeArgs& a, Context& ctx);
void swiglu_forward_device(const SwigluForwardArgs& a, Context& ctx);
void swiglu_backward_device(const SwigluBackwardArgs& a, Context& ctx);
void embedding_forward_device(const EmbeddingForwardArgs& a, Context& ctx);
void embedding_backward_device(const EmbeddingBackwardArgs& a, Context& ctx);

// The cross-entropy with every array of the args in device memory. `host_targets` is a host
// copy of a.targets [a.tokens]: the rows with a target are picked on the host, which sizes the
// loop. Waits for the stream (the loss sum is downloaded) before it returns.
// host_targets, host_row_ids: host copies of a.targets and a.row_ids (they size the loops).
CrossEntropyResult cross_entropy_device(const CrossEntropyArgs& a, const int32_t* host_targets,
                                        const int32_t* host_row_ids, Context& ctx);

// The optimiser steps on device arrays, queued on ctx's stream.
void adamw_device(const AdamArgs& a, Context& ctx);
void adamw8bit_device(const Adam8bitArgs& a, Context& ctx);

}  // namespace ernie::cuda
