// Plain descriptors shared by the kernels and the addon: element types and strided matrices.
#pragma once
#include <cstdint>
#include <cstring>

#include "backend/ops.h"

namespace ernie::cpu {

// `static`: each translation unit, each ISA copy of the kernels included, gets its own.
// bf16 <-> f32. bf16 is the top half of an f32; rounding to nearest even, NaN kept quiet.
static inline float bf16_to_f32(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static inline uint16_t f32_to_bf16(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffff) > 0x7f800000) return uint16_t((u >> 16) | 0x40);
  u += 0x7fff + ((u >> 16) & 1);
  return uint16_t(u >> 16);
}

// A matrix already packed as the B operand of bf16 products (cpu::PrepackedBf16): NR-column
// panels of bf16 pairs over all of K, panel p at data + p * stride. `source`, `ld` and `trans`
// name the operand it was packed from: a view derived from it (transposed, say) is another
// operand, for which the GEMM ignores these panels.
struct Bf16Panels {
  const uint32_t* data = nullptr;
  int64_t stride = 0;  // 32-bit words per panel
  const void* source = nullptr;
  int64_t ld = 0;
  bool trans = false;
};

}  // namespace ernie::cpu
