// AdamW and 8-bit blockwise AdamW on the GPU, as cpu/optim.h: the same update order, the same
// hyper-parameters (AdamHyper, derived in double on the host), and for the 8-bit variant
// the same state format and quantisation map: cpu::dynamic_map() (bitsandbytes' dynamic map)
// is built on the host and copied to each device once, and the nearest code is found with its
// bucket table exactly as the CPU does. Products and sums are rounded one by one (__fmul_rn,
// __fadd_rn: no FMA contraction), as the CPU backend's vector path rounds them.
//
// Compiled for sm_80 and sm_90, never run here (no GPU).
#include <mutex>
#include <stdexcept>

#include "cpu/optim.h"  // cpu::QuantMap, cpu::dynamic_map(): the 8-bit state format shared with the CPU
#include "cuda/device.cuh"

namespace ernie::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float adam_param(float p, float mi, float vi, const AdamHyper& h) {
  // p * decay - step_size * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)
  const float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(vi), h.bias2_sqrt), h.eps);
  return __fsub_rn(__fmul_rn(p, h.decay), __fdiv_rn(__fmul_rn(h.step_size, mi), denom));
}

__global__ void adamw_kernel(float* params, const float* grads, float* m, float* v, uint16_t* params_bf16, int64_t n,
                             AdamHyper h) {
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float g = grads[i];
    const float mi = __fadd_rn(__fmul_rn(h.beta1, m[i]), __fmul_rn(h.one_minus_beta1, g));
    const float vi = __fadd_rn(__fmul_rn(h.beta2, v[i]), __fmul_rn(__fmul_rn(h.one_minus_beta2, g), g));
    m[i] = mi;
    v[i] = vi;
    const float p = adam_param(params[i], mi, vi, h);
    params[i] = p;
    if (params_bf16) params_bf16[i] = f32_to_bf16_bits(p);
  }
}

// cpu::nearest_code on the device: the bucket of |q| (exponent and top mantissa bits) gives the
// count of midpoints below it, and one comparison settles the code.
__device__ __forceinline__ uint8_t nearest_code(const cpu::QuantMap* map, float q) {
  const uint32_t u = __float_as_uint(q);
  int32_t key = int32_t((u & 0x7fffffffu) >> 15) - (104 << 8);
  key = key < 0 ? 0 : key >= cpu::kQuantBuckets ? cpu::kQuantBuckets - 1 : key;
  const int bucket = int(u >> 31) * cpu::kQuantBuckets + key;
  const int base = __ldg(&map->bucket_base[bucket]);
  return uint8_t(base + (__ldg(&map->midpoints[base]) < q ? 1 : 0));
}

__device__ float block_max(float v, float* scratch) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));  // fmaxf drops a NaN, as the CPU's max does
  const int lane = int(threadIdx.x) % 32, warp = int(threadIdx.x) / 32;
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  float r = 0.0f;
  for (int w = 0; w < kThreads / 32; ++w) r = fmaxf(r, scratch[w]);
  __syncthreads();
  return r;
}

// One CTA per quantisation block. Pass 1 dequantises this step's moments from the old codes,
// updates them and the parameters, and finds the new absmax; pass 2 recomputes the same
// moments from the old codes (each thread owns the same elements in both passes, so a code is
// read before it is overwritten) and writes their codes against the new absmax.
__global__ void __launch_bounds__(kThreads) adamw8bit_kernel(float* params, const float* grads, uint8_t* m_codes,
                                                             uint8_t* v_codes, float* m_absmax, float* v_absmax,
                                                             uint16_t* params_bf16, int64_t n, int64_t block_size,
                                                             AdamHyper h, const cpu::QuantMap* m_map,
                                                             const cpu::QuantMap* v_map) {
  __shared__ float scratch[kThreads / 32];
  const int64_t block = blockIdx.x, b0 = block * block_size;
  const int64_t len = min(block_size, n - b0);
  const float m_scale = m_absmax[block], v_scale = v_absmax[block];
  auto moments = [&](int64_t j, float* mi, float* vi) {
    const float g = grads[b0 + j];
    *mi = __fadd_rn(__fmul_rn(h.beta1, __fmul_rn(__ldg(&m_map->values[m_codes[b0 + j]]), m_scale)),
                    __fmul_rn(h.one_minus_beta1, g));
    *vi = __fadd_rn(__fmul_rn(h.beta2, __fmul_rn(__ldg(&v_map->values[v_codes[b0 + j]]), v_scale)),
                    __fmul_rn(__fmul_rn(h.one_minus_beta2, g), g));
  };
  float m_max = 0.0f, v_max = 0.0f;
  for (int64_t j = threadIdx.x; j < len; j += kThreads) {
    float mi, vi;
    moments(j, &mi, &vi);
    m_max = fmaxf(m_max, fabsf(mi));
    v_max = fmaxf(v_max, vi);
    // The parameter sees this step's unquantised moments, as in bitsandbytes.
    const float p = adam_param(params[b0 + j], mi, vi, h);
    params[b0 + j] = p;
    if (params_bf16) params_bf16[b0 + j] = f32_to_bf16_bits(p);
  }
  m_max = block_max(m_max, scratch);
  v_max = block_max(v_max, scratch);  // every thread has read its old absmax values above
  const float m_inv = m_max > 0.0f ? 1.0f / m_max : 0.0f, v_inv = v_max > 0.0f ? 1.0f / v_max : 0.0f;
  for (int64_t j = threadIdx.x; j < len; j += kThreads) {
    float mi, vi;
    moments(j, &mi, &vi);
    m_codes[b0 + j] = nearest_code(m_map, __fmul_rn(mi, m_inv));
    v_codes[b0 + j] = nearest_code(v_map, __fmul_rn(vi, v_inv));
  }
  if (threadIdx.x == 0) {
    m_absmax[block] = m_max;
    v_absmax[block] = v_max;
  }
}

// The two quantisation maps in each device's memory, copied on first use and kept.
struct DeviceMaps {
  const cpu::QuantMap* signed_map = nullptr;
  const cpu::QuantMap* unsigned_map = nullptr;
};

DeviceMaps device_maps(int device) {
  static std::mutex mutex;
  static DeviceMaps maps[64];
  std::lock_guard<std::mutex> lock(mutex);
  DeviceMaps& d = maps[device];
  if (!d.signed_map) {
    cpu::QuantMap* s = nullptr;
    cpu::QuantMap* u = nullptr;
    CUDA_CHECK(cudaMalloc(&s, sizeof(cpu::QuantMap)));
    CUDA_CHECK(cudaMalloc(&u, sizeof(cpu::QuantMap)));
    CUDA_CHECK(cudaMemcpy(s, &cpu::dynamic_map(true), sizeof(cpu::QuantMap), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(u, &cpu::dynamic_map(false), sizeof(cpu::QuantMap), cudaMemcpyHostToDevice));
    d.signed_map = s;
    d.unsigned_map = u;
  }
  return d;
}

}  // namespace

void adamw_device(const AdamArgs& a, Context& ctx) {
  if (a.n == 0) return;
  adamw_kernel<<<grid_for(a.n, kThreads), kThreads, 0, ctx.stream()>>>(a.params, a.grads, a.m, a.v, a.params_bf16, a.n,
                                                                        a.hyper);
  CUDA_CHECK_LAUNCH("adamw_kernel");
}

void adamw8bit_device(const Adam8bitArgs& a, Context& ctx) {
  if (a.n == 0) return;
  if (a.block_size <= 0) throw std::invalid_argument("adamw8bit: block_size must be positive");
  const int64_t blocks = ceil_div(a.n, a.block_size);
  if (blocks > INT32_MAX) throw std::invalid_argument("adamw8bit: too many blocks");
  const DeviceMaps maps = device_maps(ctx.device());
  adamw8bit_kernel<<<unsigned(blocks), kThreads, 0, ctx.stream()>>>(a.params, a.grads, a.m_codes, a.v_codes, a.m_absmax,
                                                                    a.v_absmax, a.params_bf16, a.n, a.block_size, a.hyper,
                                                                    maps.signed_map, maps.unsigned_map);
  CUDA_CHECK_LAUNCH("adamw8bit_kernel");
}

}  // namespace ernie::cuda
