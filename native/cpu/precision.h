// The precision contract of matrix products (README "Precision"). A product is one GEMM
// segment, A . B^T; what it rounds follows from the precision asked for, the ISA and how its own
// two operands are stored, never from what else is in the call:
//   fp32       f32 FMA on every ISA; bf16 operands are widened exactly.
//   bf16       both operands rounded to bf16 (nearest even; A after its scale factor), the products
//              summed in f32: vdpbf16ps on AVX512_BF16, elsewhere the rounded values through the
//              f32 FMA kernel.
//   automatic  bf16 for a product with an operand stored as bf16 (a checkpoint's weights) where
//              the ISA has a native bf16 dot product, fp32 otherwise (and for f32 x f32 products).
// Attention's products follow the same rule: their operands are f32 activations, so only bf16
// rounds them (backend/ops.h, AttentionArgs). Everything else (softmax, norms, activations,
// losses, optimisers) is f32 at every precision.
#pragma once
#include <string>

#include "backend/ops.h"
#include "cpu/isa.h"

namespace ernie::cpu {

// Whether the ISA multiplies bf16 pairs natively (vdpbf16ps).
inline bool isa_has_bf16_dot(Isa isa) { return isa == Isa::avx512bf16; }

// The precision one product runs at: fp32 or bf16, never automatic.
inline Precision product_precision(Precision asked, Isa isa, bool has_bf16_operand) {
  if (asked != Precision::automatic) return asked;
  return has_bf16_operand && isa_has_bf16_dot(isa) ? Precision::bf16 : Precision::fp32;
}

}  // namespace ernie::cpu
