// Rounding f32 lanes to bf16, shared by the kernels of one ISA (the GEMM's packing, attention's
// operands). Included by cpu/kernels/*.cc only, each copy in its own ISA namespace with internal
// linkage (see cpu/dispatch.h). The scalar form is cpu/tensor.h's f32_to_bf16.
#pragma once
#include "cpu/tensor.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace ernie::cpu::ERNIE_ISA_NS {
namespace {

// x rounded to bf16 (nearest even) and widened back.
inline float round_bf16(float x) { return bf16_to_f32(f32_to_bf16(x)); }

#if defined(__AVX512F__)
// f32_to_bf16 on each lane, widened back: nearest even, a NaN kept (made quiet).
inline __m512 vround_bf16(__m512 v) {
  const __m512i u = _mm512_castps_si512(v);
  const __m512i lsb = _mm512_and_si512(_mm512_srli_epi32(u, 16), _mm512_set1_epi32(1));
  const __m512i hi = _mm512_set1_epi32(int(0xffff0000u));
  __m512i r = _mm512_and_si512(_mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), lsb), hi);
  const __mmask16 nan = _mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q);
  r = _mm512_mask_mov_epi32(r, nan, _mm512_or_si512(_mm512_and_si512(u, hi), _mm512_set1_epi32(0x00400000)));
  return _mm512_castsi512_ps(r);
}
#endif
#if defined(__AVX2__)
inline __m256 vround_bf16(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i hi = _mm256_set1_epi32(int(0xffff0000u));
  const __m256i r = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb), hi);
  const __m256i quiet = _mm256_or_si256(_mm256_and_si256(u, hi), _mm256_set1_epi32(0x00400000));
  return _mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(quiet), _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
}
#endif

}  // namespace
}  // namespace ernie::cpu::ERNIE_ISA_NS
