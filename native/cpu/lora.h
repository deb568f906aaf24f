// A linear layer with a LoRA adapter, forward and backward, on the GEMM's K-segments:
//   y = x W^T + s (x A^T) B^T      x [m, k], W [n, k] (f32 or bf16), A [r, k], B [n, r]
// The forward is one pass over y: segments (x, W) and (u = x A^T scaled by s, B).
#pragma once
#include <cstdint>

#include "cpu/precision.h"
#include "cpu/tensor.h"

namespace ernie::cpu {

struct LoraRef {
  const float* a = nullptr;  // [r, k]
  const float* b = nullptr;  // [n, r]
  int64_t r = 0;
  float scale = 1.0f;        // alpha / r (or alpha / sqrt(r) for rsLoRA)
  // Training only: dropout on the adapter's input, as PEFT's lora_dropout. Element i of x is
  // kept, times 1 / (1 - p), when lora_keep(seed, i, p); the mask is recomputed, never stored.
  float dropout = 0.0f;
  uint64_t seed = 0;
};

// The CUDA backend (cuda/lora.cu) computes the same mask on the device.
#if defined(__CUDACC__)
#define ERNIE_HOST_DEVICE __host__ __device__
#else
#define ERNIE_HOST_DEVICE
#endif

ERNIE_HOST_DEVICE inline uint64_t lora_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Whether element i survives dropout p under `seed`: splitmix64-hashed, so forward, backward
// and recompute agree without a stored mask.
ERNIE_HOST_DEVICE inline bool lora_keep(uint64_t seed, uint64_t i, float p) {
  return double(lora_mix(seed ^ lora_mix(i)) >> 11) * 0x1.0p-53 >= double(p);
}

struct LinearShape {
  int64_t m, n, k;  // tokens, out features, in features
  Precision precision = Precision::automatic;  // of every product below (cpu/precision.h)
};

// y (+)= x W^T + s (x A^T) B^T; u [m, r] receives x A^T, which the backward needs.
void lora_linear_forward(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora, float* u,
                         float* y, bool accumulate);

// Given dy [m, n] and the forward's u:  dB += s dy^T u,  dA += s (dy B)^T x,
// dx (+)= dy W + s (dy B) A  when dx is not null. dA and dB always accumulate.
void lora_linear_backward(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora,
                          const float* u, const float* dy, float* dx, bool dx_accumulate, float* da, float* db);

}  // namespace ernie::cpu
