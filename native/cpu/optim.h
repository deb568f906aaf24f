// Optimiser steps and gradient norms, in place on flat fp32 arrays.
//
// AdamW follows torch.optim.AdamW (decoupled weight decay, applied before the Adam update):
//   p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The 8-bit variant is the same update with m and v stored as bitsandbytes' blockwise 8-bit
// state: per block of `block_size` elements, one f32 absmax and a uint8 code per element;
// a value is map[code] * absmax. Each step dequantises a block, updates it in fp32, and
// re-quantises it to the nearest code against the block's new absmax.
#pragma once
#include <cstdint>
#include <cstring>
#include <vector>

#include "backend/ops.h"
#include "cpu/dispatch.h"

namespace ernie::cpu {

// A 256-entry quantisation map, sorted, and the midpoints between neighbours: the nearest code
// to q is the number of midpoints below q (ties go to the lower code). midpoints[255] is +inf.
// Counting them is a table look-up: |q| is cut into buckets by its exponent and top 8 mantissa
// bits (2^-23 <= |q| < 1, the rest clamped to the end buckets); no bucket holds more than one
// midpoint (the map's steps are >= 0.5% relative, a bucket < 0.4%; checked when built), so
// code = base + (midpoints[base] < q) with base the count below the bucket.
constexpr int kQuantBuckets = 23 << 8;
struct QuantMap {
  float values[256];
  float midpoints[256];
  // [q >= 0 | q < 0][bucket of |q|], and 4 spare bytes so a 32-bit gather may read any entry.
  uint8_t bucket_base[2 * kQuantBuckets + 4];
};
// `static`: every ISA copy of the kernels gets its own (see dispatch.h).
static inline int quant_bucket(float q) {
  uint32_t u;
  std::memcpy(&u, &q, 4);
  int32_t key = int32_t((u & 0x7fffffffu) >> 15) - (104 << 8);  // 104 = the biased exponent of 2^-23
  key = key < 0 ? 0 : key >= kQuantBuckets ? kQuantBuckets - 1 : key;
  return int(u >> 31) * kQuantBuckets + key;
}
static inline uint8_t nearest_code(const QuantMap& map, float q) {
  const int base = map.bucket_base[quant_bucket(q)];
  return uint8_t(base + (map.midpoints[base] < q ? 1 : 0));
}
// bitsandbytes' "dynamic" maps (see optim.cc): signed for m, unsigned for v.
const QuantMap& dynamic_map(bool is_signed);

void adamw_step(float* params, const float* grads, float* m, float* v, uint16_t* params_bf16, int64_t n,
                const AdamHyper& h);
// m_codes / v_codes [n], m_absmax / v_absmax [ceil(n / block_size)].
void adamw8bit_step(float* params, const float* grads, uint8_t* m_codes, uint8_t* v_codes, float* m_absmax,
                    float* v_absmax, uint16_t* params_bf16, int64_t n, int64_t block_size, const AdamHyper& h);
// buffer may be null when momentum is 0.
void sgd_step(float* params, const float* grads, float* buffer, int64_t n, float lr, float momentum,
              float weight_decay, bool nesterov);

void quantize_blockwise(const float* x, int64_t n, int64_t block_size, bool is_signed, uint8_t* codes, float* absmax);
void dequantize_blockwise(const uint8_t* codes, const float* absmax, int64_t n, int64_t block_size, bool is_signed,
                          float* out);

struct FloatSpan {
  float* data;
  int64_t size;
};
// Global L2 norm, accumulated in double over fixed-size pieces summed in a fixed order, so
// the result does not depend on the thread count.
double grad_norm(const std::vector<FloatSpan>& grads);
// torch.nn.utils.clip_grad_norm_: returns the norm before clipping; when it is finite and
// max_norm / (norm + 1e-6) < 1, multiplies every gradient by that factor.
double clip_grad_norm(const std::vector<FloatSpan>& grads, double max_norm);

}  // namespace ernie::cpu

// Per-ISA loops (cpu/kernels/optim.cc), each on one contiguous range:
//   adamw_update(p, g, m, v, p_bf16 or null, n, hyper)
//   adamw8bit_update(p, g, m_codes, v_codes, m_absmax, v_absmax, p_bf16 or null, n, block_size,
//                    hyper, m_map, v_map, scratch[2 * block_size]): n elements from a block start
//   sgd_update(p, g, buffer or null, n, lr, momentum, weight_decay, nesterov)
//   quantize_blocks(x, n, block_size, map, codes, absmax) / dequantize_blocks(codes, absmax, n,
//                    block_size, map, out): n elements from a block start
//   sum_squares(x, n) -> double;  scale_values(x, n, s): x *= s
#define ERNIE_OPTIM_KERNELS(X)                                                                                  \
  X(adamw_update, void(float*, const float*, float*, float*, uint16_t*, int64_t, const ::ernie::AdamHyper&)) \
  X(adamw8bit_update, void(float*, const float*, uint8_t*, uint8_t*, float*, float*, uint16_t*, int64_t, int64_t, \
                           const ::ernie::AdamHyper&, const ::ernie::cpu::QuantMap&,                        \
                           const ::ernie::cpu::QuantMap&, float*))                                               \
  X(sgd_update, void(float*, const float*, float*, int64_t, float, float, float, bool))                          \
  X(quantize_blocks, void(const float*, int64_t, int64_t, const ::ernie::cpu::QuantMap&, uint8_t*, float*))     \
  X(dequantize_blocks, void(const uint8_t*, const float*, int64_t, int64_t, const ::ernie::cpu::QuantMap&, float*)) \
  X(sum_squares, double(const float*, int64_t))                                                                 \
  X(scale_values, void(float*, int64_t, float))

ERNIE_DECLARE_KERNELS(optim, ERNIE_OPTIM_KERNELS)
