// GEMM: C[M, N] = alpha * sum_s scale_s * A_s[M, K_s] . B_s[N, K_s]^T  (+ C when accumulating).
//
// Operands are MatrixRefs, so the forward (x . W^T), the input gradient (dY . W: B stored
// transposed) and the weight gradient (dY^T . x) are one routine. Several K-segments share
// one pass over C: LoRA's y = x W^T + s (x A^T) B^T is the segments (x, W) and (s.u, B_lora).
// A and B may each be f32 or bf16; accumulation is f32. On AVX512_BF16 CPUs a product with a
// bf16 B is done with vdpbf16ps (A rounded to bf16); f32 x f32 stays f32 (AVX-512F); elsewhere
// bf16 operands are widened to f32.
//
// The blocking is BLIS's (K slices, packed panels of A and B, a micro-kernel keeping an MR x NR
// tile of C in registers). The threads pack each K slice of A and B once, together, and split
// C's tiles between them, each stealing from the other when its own run out (see gemm.cc).
#pragma once
#include <cstdint>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/tensor.h"

namespace ernie::cpu {

struct GemmBlocking {
  int mr, nr;          // micro-tile
  int kc, mc;          // K slice and rows of A per packed block
  int k_pack;          // K is packed in groups of this many (2 for bf16 pairs)
  int elem_bytes;      // bytes per packed element
};

struct GemmSegment {
  MatrixRef a;  // logical [M, k]
  MatrixRef b;  // logical [N, k]
  int64_t k = 0;
  float scale = 1.0f;  // this segment's factor, on top of GemmArgs::alpha
};

struct GemmArgs {
  int64_t m = 0, n = 0;
  std::vector<GemmSegment> segments;
  float* c = nullptr;
  int64_t ldc = 0;
  float alpha = 1.0f;
  bool accumulate = false;
};

void gemm(const GemmArgs& args);

}  // namespace ernie::cpu

// Per-ISA pieces of the GEMM (cpu/kernels/gemm.cc).
//   gemm_blocking():  this ISA's tile and block sizes.
//   gemm_pack_a(A, m0, mc, k0, kc, alpha, dst): rows [m0, m0+mc) x cols [k0, k0+kc) of A,
//       times alpha, into MR-row panels; rows past mc and K past kc are zero.
//   gemm_pack_b(B, n0, nc, k0, kc, dst): the same for B into NR-column panels.
//   gemm_macro(mc, nc, kc, Ap, Bp, C, ldc, accumulate): C[mc, nc] (+)= Ap . Bp^T from packed panels.
#define ERNIE_GEMM_KERNELS(X)                                                                       \
  X(gemm_blocking, ::ernie::cpu::GemmBlocking())                                                    \
  X(gemm_pack_a, void(const ::ernie::cpu::MatrixRef&, int64_t, int64_t, int64_t, int64_t, float, void*)) \
  X(gemm_pack_b, void(const ::ernie::cpu::MatrixRef&, int64_t, int64_t, int64_t, int64_t, void*))  \
  X(gemm_macro, void(int64_t, int64_t, int64_t, const void*, const void*, float*, int64_t, bool))

ERNIE_DECLARE_KERNELS(gemm, ERNIE_GEMM_KERNELS)
