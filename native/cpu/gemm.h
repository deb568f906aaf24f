// GEMM: C[M, N] = alpha * sum_s scale_s * A_s[M, K_s] . B_s[N, K_s]^T  (+ C when accumulating).
//
// Operands are MatrixRefs, so the forward (x . W^T), the input gradient (dY . W: B stored
// transposed) and the weight gradient (dY^T . x) are one routine. Several K-segments share
// one pass over C: LoRA's y = x W^T + s (x A^T) B^T is the segments (x, W) and (s.u, B_lora).
// A and B may each be f32 or bf16; accumulation is f32. What each segment rounds is the
// precision contract (cpu/precision.h): per segment, from GemmArgs::precision, the ISA and that
// segment's own operands.
//
// The blocking is BLIS's (K slices, packed panels of A and B, a micro-kernel keeping an MR x NR
// tile of C in registers). The threads pack each K slice of A and B once, together, and split
// C's tiles between them, each stealing from the other when its own run out (see gemm.cc).
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cpu/dispatch.h"
#include "cpu/precision.h"
#include "cpu/tensor.h"

namespace ernie::cpu {

// How a K slice's operands are packed, which is how its products are computed:
//   f32       f32 values (bf16 operands widened exactly): the fp32 precision
//   f32_bf16  each value rounded to bf16, held as f32: the bf16 precision on an ISA without a
//             bf16 dot product (the same rounding, then f32 FMA)
//   bf16      bf16 with k pairs side by side, vdpbf16ps's operands: AVX512_BF16 only
enum class GemmFormat : int { f32 = 0, f32_bf16 = 1, bf16 = 2 };

// One K slice's part of a tile's product, for gemm_macro: its packed A block and B block (or B
// panels packed beforehand), its K, and the packed elements between B's NR-column panels.
struct GemmPiece {
  const void* a;
  const void* b;
  int64_t kc;
  int64_t b_panel;
};
constexpr int kGemmMaxPieces = 4;  // pieces per gemm_macro call

// One ISA's blocking for one format. mr, nr and mc are the same for every format of an ISA, so
// slices of different formats can share C's tiles.
struct GemmBlocking {
  int mr, nr;          // micro-tile
  int kc, mc;          // K slice (also the packed A rows' length) and rows of A per packed block
  int k_pack;          // K is packed in groups of this many (2 for bf16 pairs)
  int elem_bytes;      // bytes per packed element
};

// The packed blocks of a product's A, kept for the next product with the same A. LoRA packs x
// once for u = x A^T and y = x W^T + s u B^T, and dy once for g = dy B and dx = dy W + s g A:
// the first gemm() given it packs segment 0's A into it, a later one whose segment 0 has the same
// A (matrix, rows, K, scale) packed in the same format reads it instead of packing. Any other
// product ignores it and packs as usual, so it changes no result. Its memory is kept between
// uses; reset() before a new A.
class SharedPackedA {
 public:
  void reset() { filled_ = false; }

 private:
  friend struct SharedAUse;
  struct Key {
    const void* data;
    DType dtype;
    int64_t ld;
    bool trans;
    int64_t m, k;
    float scale;
    GemmFormat format;
    Isa isa;
  };
  Key key_{};
  bool filled_ = false;
  std::unique_ptr<unsigned char[]> memory_;
  size_t capacity_ = 0;
};

void gemm(const GemmArgs& args, SharedPackedA* shared_a = nullptr);

// A weight packed once as the B operand of bf16 products (AVX512_BF16's pair format): products
// with few rows (inference, generation) otherwise spend much of their time packing it anew at
// every call. As large as the weight itself. Empty when the CPU has no bf16 dot product.
class PrepackedBf16 {
 public:
  PrepackedBf16() = default;
  // b: the logical [n, k] B operand (any dtype and layout).
  PrepackedBf16(const MatrixRef& b, int64_t n, int64_t k);
  // `b` with these panels attached (b itself when there are none).
  MatrixRef attach(MatrixRef b) const;

 private:
  std::unique_ptr<uint32_t[]> words_;
  Bf16Panels panels_;
};

}  // namespace ernie::cpu

// Per-ISA pieces of the GEMM (cpu/kernels/gemm.cc), each for one GemmFormat:
//   gemm_blocking(f):  this ISA's tile and block sizes.
//   gemm_pack_a(f, A, m0, mc, k0, kc, alpha, dst): rows [m0, m0+mc) x cols [k0, k0+kc) of A,
//       times alpha, as rows of KC elements.
//   gemm_pack_b(f, B, n0, nc, k0, kc, dst): the same for B into NR-column panels, each k (or k
//       pair) holding its NR values; columns past nc are zero.
//   gemm_macro(f, mc, nc, pieces, count, C, ldc, accumulate): C[mc, nc] (+)= the sum over the
//       pieces of A . B^T, each tile summed in registers over all the pieces and stored once.
#define ERNIE_GEMM_KERNELS(X)                                                                      \
  X(gemm_blocking, ::ernie::cpu::GemmBlocking(::ernie::cpu::GemmFormat))                           \
  X(gemm_pack_a, void(::ernie::cpu::GemmFormat, const ::ernie::MatrixRef&, int64_t, int64_t, int64_t, \
                      int64_t, float, void*))                                                      \
  X(gemm_pack_b, void(::ernie::cpu::GemmFormat, const ::ernie::MatrixRef&, int64_t, int64_t, int64_t, \
                      int64_t, void*))                                                             \
  X(gemm_macro, void(::ernie::cpu::GemmFormat, int64_t, int64_t, const ::ernie::cpu::GemmPiece*, int, float*, \
                     int64_t, bool))

ERNIE_DECLARE_KERNELS(gemm, ERNIE_GEMM_KERNELS)
