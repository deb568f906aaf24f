// The decoder's elementwise and row kernels, forward and backward: RMSNorm, RoPE, SwiGLU and
// the embedding lookup. Activations and gradients are f32; weights may be f32 or bf16.
//
// The functions here split the work over the thread pool (cpu/ops.cc); the per-ISA kernels
// (cpu/kernels/ops.cc) each handle a run of rows and see f32 data only, except the bf16
// widening kernel. Callers validate shapes and ids; nothing is checked again here.
//
// Outputs never overlap inputs, except where a comment says "may equal": then the output may be
// exactly that input (same pointer, same shape), and the op runs in place.
#pragma once
#include <cstdint>

#include "cpu/dispatch.h"
#include "cpu/tensor.h"

namespace ernie::cpu {

// y = x * rsqrt(mean(x^2) + eps) * w over each row of [rows, dim]; fp32 throughout.
void rmsnorm_forward(const RmsNormForwardArgs& a);

// dx (+)= d/dx, and dweight += d/dweight, of sum(dout * y). dweight's sum over rows is taken in
// a fixed blocking (independent of the thread count), so it is bitwise reproducible.
void rmsnorm_backward(const RmsNormBackwardArgs& a);

// Rotates each head of x [rows, heads, head_dim] by angles pos * theta^(-2i/head_dim), with
// rows = B*T tokens and one position each. `inverse` rotates by minus the angle: the backward.
// Angles and their cos/sin are computed in double, once per distinct position.
void rope(const RopeArgs& a);

// out = silu(gate) * up over rows of `dim` elements. Row r of gate starts at gate + r * in_ld,
// and likewise up: the fused gate|up layout is gate = gu, up = gu + dim, in_ld = 2 * dim.
void swiglu_forward(const SwigluForwardArgs& a);

// dgate = dout * up * silu'(gate), dup = dout * silu(gate); dgate/dup rows are grad_ld apart.
void swiglu_backward(const SwigluBackwardArgs& a);

// out[k] = table[ids[k]] (widened from bf16); every id in [0, vocab).
void embedding_forward(const EmbeddingForwardArgs& a);

// dtable[ids[k]] += dout[k]. Threads own column slices and add rows in id order: no races, and
// a fixed order of additions, repeated ids included.
void embedding_backward(const EmbeddingBackwardArgs& a);

}  // namespace ernie::cpu

// Per-ISA pieces (cpu/kernels/ops.cc), each over a run of rows or elements:
//   rmsnorm_fwd(x, w, rows, dim, eps, out, rstd?)           out may equal x
//   rmsnorm_bwd(dout, x, w, rstd, rows, dim, dx, accumulate, dw_partial?)   dw_partial += per row
//   rope_rotate(x, out, cos, sin, heads, head_dim, pairing)  one token; out may equal x.
//       cos/sin [head_dim] give each element's factors: out[j] = x[j] cos[j] + x[partner(j)] sin[j]
//   swiglu_fwd(gate, up, out, n) / swiglu_bwd(dout, gate, up, dgate, dup, n)
//   bf16_to_f32(src, dst, n)
//   add_into(dst, src, n)                                    dst += src
#define ERNIE_OPS_KERNELS(X)                                                                             \
  X(rmsnorm_fwd, void(const float*, const float*, int64_t, int64_t, float, float*, float*))              \
  X(rmsnorm_bwd, void(const float*, const float*, const float*, const float*, int64_t, int64_t, float*, \
                      bool, float*))                                                                     \
  X(rope_rotate, void(const float*, float*, const float*, const float*, int64_t, int64_t, int))          \
  X(swiglu_fwd, void(const float*, const float*, float*, int64_t))                                       \
  X(swiglu_bwd, void(const float*, const float*, const float*, float*, float*, int64_t))                 \
  X(bf16_to_f32, void(const uint16_t*, float*, int64_t))                                                 \
  X(add_into, void(float*, const float*, int64_t))

ERNIE_DECLARE_KERNELS(ops, ERNIE_OPS_KERNELS)
