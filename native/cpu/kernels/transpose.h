// In-register transposes of square blocks of 32-bit lanes, shared by the kernels of one ISA
// (the GEMM's packing, attention's panels). Included by cpu/kernels/*.cc only, each copy in its
// own ISA namespace with internal linkage (see cpu/dispatch.h).
#pragma once
#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace ernie::cpu::ERNIE_ISA_NS {
namespace {

#if defined(__AVX512F__)
// r[i] lane j becomes r[j] lane i, for 16 vectors of 16 32-bit lanes.
inline void transpose16(__m512i (&r)[16]) {
  __m512i t[16], u[16];
  for (int j = 0; j < 16; j += 2) {
    t[j] = _mm512_unpacklo_epi32(r[j], r[j + 1]);
    t[j + 1] = _mm512_unpackhi_epi32(r[j], r[j + 1]);
  }
  // u[4g + q], per 128-bit lane L: column 4L + q of rows 4g..4g+3
  for (int g = 0; g < 16; g += 4) {
    u[g] = _mm512_unpacklo_epi64(t[g], t[g + 2]);
    u[g + 1] = _mm512_unpackhi_epi64(t[g], t[g + 2]);
    u[g + 2] = _mm512_unpacklo_epi64(t[g + 1], t[g + 3]);
    u[g + 3] = _mm512_unpackhi_epi64(t[g + 1], t[g + 3]);
  }
  for (int q = 0; q < 4; ++q) {
    const __m512i even01 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0x88), odd01 = _mm512_shuffle_i32x4(u[q], u[4 + q], 0xdd);
    const __m512i even23 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0x88), odd23 = _mm512_shuffle_i32x4(u[8 + q], u[12 + q], 0xdd);
    r[q] = _mm512_shuffle_i32x4(even01, even23, 0x88);
    r[4 + q] = _mm512_shuffle_i32x4(odd01, odd23, 0x88);
    r[8 + q] = _mm512_shuffle_i32x4(even01, even23, 0xdd);
    r[12 + q] = _mm512_shuffle_i32x4(odd01, odd23, 0xdd);
  }
}
inline void transpose_f32(__m512 (&v)[16]) {
  __m512i r[16];
  for (int j = 0; j < 16; ++j) r[j] = _mm512_castps_si512(v[j]);
  transpose16(r);
  for (int j = 0; j < 16; ++j) v[j] = _mm512_castsi512_ps(r[j]);
}
#elif defined(__AVX2__)
// r[i] lane j becomes r[j] lane i, for 8 vectors of 8 floats.
inline void transpose_f32(__m256 (&r)[8]) {
  __m256 t[8];
  for (int j = 0; j < 8; j += 2) {
    t[j] = _mm256_unpacklo_ps(r[j], r[j + 1]);
    t[j + 1] = _mm256_unpackhi_ps(r[j], r[j + 1]);
  }
  __m256 u[8];
  for (int j = 0; j < 8; j += 4) {
    u[j] = _mm256_shuffle_ps(t[j], t[j + 2], 0x44);
    u[j + 1] = _mm256_shuffle_ps(t[j], t[j + 2], 0xEE);
    u[j + 2] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0x44);
    u[j + 3] = _mm256_shuffle_ps(t[j + 1], t[j + 3], 0xEE);
  }
  for (int j = 0; j < 4; ++j) {
    r[j] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x20);
    r[j + 4] = _mm256_permute2f128_ps(u[j], u[j + 4], 0x31);
  }
}
#endif

}  // namespace
}  // namespace ernie::cpu::ERNIE_ISA_NS
