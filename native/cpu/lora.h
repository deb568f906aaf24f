// A linear layer with a LoRA adapter, forward and backward, on the GEMM's K-segments:
//   y = x W^T + s (x A^T) B^T      x [m, k], W [n, k] (f32 or bf16), A [r, k], B [n, r]
// The forward is one pass over y: segments (x, W) and (u = x A^T scaled by s, B).
#pragma once
#include <cstdint>

#include "cpu/precision.h"
#include "cpu/tensor.h"

namespace ernie::cpu {

// y (+)= x W^T + s (x A^T) B^T; u [m, r] receives x A^T, which the backward needs.
void lora_linear_forward(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora, float* u,
                         float* y, bool accumulate);

// Given dy [m, n] and the forward's u:  dB += s dy^T u,  dA += s (dy B)^T x,
// dx (+)= dy W + s (dy B) A  when dx is not null. dA and dB always accumulate.
void lora_linear_backward(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora,
                          const float* u, const float* dy, float* dx, bool dx_accumulate, float* da, float* db);

}  // namespace ernie::cpu
