// Cross-entropy through a tied LM head without the [T, V] logits: logits are made one
// [row tile, vocab chunk] block at a time by the GEMM and reduced on the spot.
//   pass (a): per row, an online max / sum-exp over the vocab chunks, and the target's logit
//             -> lse = max + log(sum), loss_t = lse - logit[target]
//   pass (b): each block's logits again, dlogits = (softmax - onehot) * grad_scale, then
//             dhidden += dlogits . W_chunk and dweight_chunk += dlogits^T . hidden
// Rows whose target is negative are ignored: they are left out of the row tiles (no compute),
// add nothing to the loss or dweight, and get a zero dhidden row.
#pragma once
#include <cstdint>

#include "cpu/dispatch.h"
#include "cpu/precision.h"
#include "cpu/tensor.h"

namespace ernie::cpu {

CrossEntropyResult cross_entropy(const CrossEntropyArgs& args);

}  // namespace ernie::cpu

// Per-ISA row pieces (cpu/kernels/loss.cc), on one row of a logits block:
//   ce_chunk_stats(x, n, max, sum):     max = max_j x[j], sum = sum_j exp(x[j] - max)
//                                       (max = -inf, sum = 0 when every x is -inf)
//   ce_softmax_scaled(x, n, lse, s):    x[j] = exp(x[j] - lse) * s, in place
#define ERNIE_LOSS_KERNELS(X)                                    \
  X(ce_chunk_stats, void(const float*, int64_t, float*, float*)) \
  X(ce_softmax_scaled, void(float*, int64_t, float, float))

ERNIE_DECLARE_KERNELS(loss, ERNIE_LOSS_KERNELS)
