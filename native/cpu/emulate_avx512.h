// Force-included (-include) into the kernels of the test-only emulated build
// (cmake -DERNIE_EMULATE_AVX512=ON, `npm run build:avx512-emu`), so that the AVX-512 and
// AVX512_BF16 kernel paths run, and are tested, on a CPU without AVX-512. SIMDe supplies the
// intrinsics as AVX2 code under their native names; only then are the __AVX512*__ macros
// defined, so the kernels' #if ladders take their AVX-512 branches unchanged. The build that
// uses this is for correctness only: slow, and SIMDe's rounding is not the silicon's.
#pragma once

#if defined(__AVX512F__)
#error "emulate_avx512.h is for builds without -mavx512*: the real instructions would be used"
#endif

#define SIMDE_ENABLE_NATIVE_ALIASES
#include <simde/x86/avx512.h>

#include <stdint.h>
#include <math.h>
#include <string.h>

#define __AVX512F__ 1
#define __AVX512BW__ 1
#define __AVX512VL__ 1
#define __AVX512DQ__ 1
#if defined(ERNIE_EMULATE_AVX512BF16)
#define __AVX512BF16__ 1
#endif

// Intrinsics the kernels use that SIMDe 0.7.4 lacks, written lane by lane from the Intel
// Intrinsics Guide's pseudo-code. Masked loads and stores touch only the selected elements,
// so a wrong mask reads or writes memory the hardware would have left alone.
namespace ernie_emu {

// vcvtps2dq: rounds by the current MXCSR mode (nearest even by default); NaN and values
// outside int32 give the "integer indefinite" 0x80000000.
static inline simde__m512i mm512_cvtps_epi32(simde__m512 a) {
  simde__m512_private a_ = simde__m512_to_private(a);
  simde__m512i_private r_;
  for (int i = 0; i < 16; ++i) {
    const float x = a_.f32[i];
    r_.i32[i] = (x >= -2147483648.0f && x < 2147483648.0f) ? int32_t(nearbyintf(x)) : INT32_MIN;
  }
  return simde__m512i_from_private(r_);
}

// The guide's REDUCE_ADD: halves added pairwise (lane j + lane j + 8, then + 4, + 2, + 1).
static inline float mm512_reduce_add_ps(simde__m512 a) {
  simde__m512_private a_ = simde__m512_to_private(a);
  float v[16];
  for (int i = 0; i < 16; ++i) v[i] = a_.f32[i];
  for (int len = 8; len >= 1; len /= 2)
    for (int j = 0; j < len; ++j) v[j] = v[j] + v[j + len];
  return v[0];
}

// The guide's REDUCE_MAX: halves compared pairwise (lane j against lane j + 8, then + 4, + 2,
// + 1), each step keeping a > b ? a : b.
static inline float mm512_reduce_max_ps(simde__m512 a) {
  simde__m512_private a_ = simde__m512_to_private(a);
  float v[16];
  for (int i = 0; i < 16; ++i) v[i] = a_.f32[i];
  for (int len = 8; len >= 1; len /= 2)
    for (int j = 0; j < len; ++j) v[j] = v[j] > v[j + len] ? v[j] : v[j + len];
  return v[0];
}

// vpmovdw: sixteen 32-bit integers truncated to their low 16 bits.
static inline simde__m256i mm512_cvtepi32_epi16(simde__m512i a) {
  simde__m512i_private a_ = simde__m512i_to_private(a);
  simde__m256i_private r_;
  for (int i = 0; i < 16; ++i) r_.u16[i] = uint16_t(uint32_t(a_.i32[i]));
  return simde__m256i_from_private(r_);
}

// vpmovdw to memory under a mask: element i (16 bits) written only where bit i of k is set.
static inline void mm512_mask_cvtepi32_storeu_epi16(void* mem, simde__mmask16 k, simde__m512i a) {
  uint16_t* p = static_cast<uint16_t*>(mem);
  simde__m512i_private a_ = simde__m512i_to_private(a);
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) p[i] = uint16_t(uint32_t(a_.i32[i]));
}

// vpermilps with an immediate: within each 128-bit lane, element i takes element imm8[2i+1:2i].
static inline simde__m512 mm512_permute_ps(simde__m512 a, int imm8) {
  simde__m512_private a_ = simde__m512_to_private(a), r_;
  for (int i = 0; i < 16; ++i) r_.f32[i] = a_.f32[(i & ~3) + ((imm8 >> (2 * (i & 3))) & 3)];
  return simde__m512_from_private(r_);
}

static inline simde__m512 mm512_maskz_loadu_ps(simde__mmask16 k, const void* mem) {
  const float* p = static_cast<const float*>(mem);
  simde__m512_private r_;
  for (int i = 0; i < 16; ++i) r_.f32[i] = ((k >> i) & 1) ? p[i] : 0.0f;
  return simde__m512_from_private(r_);
}

static inline void mm512_mask_storeu_ps(void* mem, simde__mmask16 k, simde__m512 a) {
  float* p = static_cast<float*>(mem);
  simde__m512_private a_ = simde__m512_to_private(a);
  for (int i = 0; i < 16; ++i)
    if ((k >> i) & 1) p[i] = a_.f32[i];
}

// vpmovzxwd: sixteen unsigned 16-bit integers zero-extended to 32 bits.
static inline simde__m512i mm512_cvtepu16_epi32(simde__m256i a) {
  simde__m256i_private a_ = simde__m256i_to_private(a);
  simde__m512i_private r_;
  for (int i = 0; i < 16; ++i) r_.i32[i] = int32_t(uint32_t(a_.u16[i]));
  return simde__m512i_from_private(r_);
}

#if defined(ERNIE_EMULATE_AVX512BF16)
// vcvtne2ps2bf16: words 0-15 from b, 16-31 from a; each the SDM's convert_fp32_to_bfloat16:
// a NaN made quiet, a denormal taken as zero of its sign (DAZ), else rounded to nearest even.
static inline uint16_t fp32_to_bf16_sdm(float x) {
  uint32_t u;
  memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);
  if ((u & 0x7f800000u) == 0) u &= 0x80000000u;
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
static inline simde__m512bh mm512_cvtne2ps_pbh(simde__m512 a, simde__m512 b) {
  simde__m512_private a_ = simde__m512_to_private(a), b_ = simde__m512_to_private(b);
  simde__m512i_private r_;
  for (int i = 0; i < 16; ++i) {
    r_.u16[i] = fp32_to_bf16_sdm(b_.f32[i]);
    r_.u16[16 + i] = fp32_to_bf16_sdm(a_.f32[i]);
  }
  simde__m512bh r;
  simde__m512i ri = simde__m512i_from_private(r_);
  memcpy(&r, &ri, sizeof r);
  return r;
}
#endif

}  // namespace ernie_emu

// GCC's <immintrin.h> declares these for AVX-512 targets only; the macros take the calls first.
#undef _mm512_cvtps_epi32
#define _mm512_cvtps_epi32(a) ernie_emu::mm512_cvtps_epi32(a)
#undef _mm512_reduce_add_ps
#define _mm512_reduce_add_ps(a) ernie_emu::mm512_reduce_add_ps(a)
#undef _mm512_reduce_max_ps
#define _mm512_reduce_max_ps(a) ernie_emu::mm512_reduce_max_ps(a)
#undef _mm512_cvtepi32_epi16
#define _mm512_cvtepi32_epi16(a) ernie_emu::mm512_cvtepi32_epi16(a)
#undef _mm512_mask_cvtepi32_storeu_epi16
#define _mm512_mask_cvtepi32_storeu_epi16(mem, k, a) ernie_emu::mm512_mask_cvtepi32_storeu_epi16((mem), (k), (a))
#undef _mm512_permute_ps
#define _mm512_permute_ps(a, imm8) ernie_emu::mm512_permute_ps((a), (imm8))
#undef _mm512_maskz_loadu_ps
#define _mm512_maskz_loadu_ps(k, mem) ernie_emu::mm512_maskz_loadu_ps((k), (mem))
#undef _mm512_mask_storeu_ps
#define _mm512_mask_storeu_ps(mem, k, a) ernie_emu::mm512_mask_storeu_ps((mem), (k), (a))
#undef _mm512_cvtepu16_epi32
#define _mm512_cvtepu16_epi32(a) ernie_emu::mm512_cvtepu16_epi32(a)
#if defined(ERNIE_EMULATE_AVX512BF16)
#undef _mm512_cvtne2ps_pbh
#define _mm512_cvtne2ps_pbh(a, b) ernie_emu::mm512_cvtne2ps_pbh((a), (b))
#endif
