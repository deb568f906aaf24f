// The per-ISA half of the cross-entropy: the exp-heavy row passes over a logits block.
// AVX-512 and AVX2 use the same vector exp (16 or 8 lanes; AVX-512 row tails through masked
// loads and stores); generic calls expf.
#include <cmath>

#include "cpu/loss.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
// GCC 12 flags the deliberately undefined pass-through operand inside AVX-512 intrinsics
// (GCC bug 105593, fixed in 13); _mm512_reduce_max_ps's inside trips -Wuninitialized too.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#pragma GCC diagnostic ignored "-Wuninitialized"
#endif

namespace ernie::cpu::ERNIE_ISA_NS {
namespace {

// e^x to about 2 ulp: x = n ln2 + r with |r| <= ln2 / 2, e^r from a degree-7 polynomial
// (Cephes' expf coefficients), 2^n put into the exponent bits. x below ln(FLT_MIN) gives 0
// (so -inf gives 0); NaN stays NaN, which the max/min operand order below lets through.
// Written once over Vec, 16 lanes on AVX-512, 8 on AVX2.
#if defined(__AVX512F__)
inline __mmask16 tail_mask(int64_t k) { return __mmask16((1u << k) - 1); }  // k in [1, 16]

using Vec = __m512;
inline Vec vset1(float x) { return _mm512_set1_ps(x); }
inline Vec vmin(Vec a, Vec b) { return _mm512_min_ps(a, b); }
inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec vfnma(Vec a, Vec b, Vec c) { return _mm512_fnmadd_ps(a, b, c); }
inline Vec vround(Vec x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Vec vpow2i(Vec n) {  // 2^n for integral n in [-126, 127]
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
inline Vec vzero_where_below(Vec x, Vec lo, Vec r) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, lo, _CMP_NLT_UQ), r); }
#elif defined(__AVX2__)
using Vec = __m256;
inline Vec vset1(float x) { return _mm256_set1_ps(x); }
inline Vec vmin(Vec a, Vec b) { return _mm256_min_ps(a, b); }
inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vfnma(Vec a, Vec b, Vec c) { return _mm256_fnmadd_ps(a, b, c); }
inline Vec vround(Vec x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Vec vpow2i(Vec n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
inline Vec vzero_where_below(Vec x, Vec lo, Vec r) { return _mm256_andnot_ps(_mm256_cmp_ps(x, lo, _CMP_LT_OQ), r); }
#endif

#if defined(__AVX2__)
inline Vec exp_ps(Vec x) {
  const Vec lo = vset1(-87.33654f), hi = vset1(88.0f);
  const Vec xc = vmin(hi, vmax(lo, x));
  const Vec n = vround(vmul(xc, vset1(1.44269504088896341f)));
  Vec r = vfnma(n, vset1(0.693359375f), xc);  // ln2 split in two for accuracy
  r = vfnma(n, vset1(-2.12194440e-4f), r);
  Vec p = vset1(1.9875691500e-4f);
  p = vfma(p, r, vset1(1.3981999507e-3f));
  p = vfma(p, r, vset1(8.3334519073e-3f));
  p = vfma(p, r, vset1(4.1665795894e-2f));
  p = vfma(p, r, vset1(1.6666665459e-1f));
  p = vfma(p, r, vset1(5.0000001201e-1f));
  const Vec y = vadd(vfma(p, vmul(r, r), r), vset1(1.0f));
  return vzero_where_below(x, lo, vmul(y, vpow2i(n)));
}
#endif

#if defined(__AVX2__) && !defined(__AVX512F__)
inline float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
#endif

}  // namespace

void ce_chunk_stats(const float* x, int64_t n, float* out_max, float* out_sum) {
  int64_t j = 0;
  float mx = -INFINITY;
#if defined(__AVX512F__)
  {
    __m512 vmax0 = _mm512_set1_ps(-INFINITY), vmax1 = vmax0;
    for (; j + 32 <= n; j += 32) {
      vmax0 = _mm512_max_ps(vmax0, _mm512_loadu_ps(x + j));
      vmax1 = _mm512_max_ps(vmax1, _mm512_loadu_ps(x + j + 16));
    }
    for (; j < n; j += 16) {
      const __mmask16 k = tail_mask(n - j < 16 ? n - j : 16);
      vmax0 = _mm512_mask_max_ps(vmax0, k, vmax0, _mm512_maskz_loadu_ps(k, x + j));
    }
    mx = _mm512_reduce_max_ps(_mm512_max_ps(vmax0, vmax1));
  }
#elif defined(__AVX2__)
  __m256 vmax = _mm256_set1_ps(-INFINITY);
  for (; j + 8 <= n; j += 8) vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(x + j));
  mx = hmax(vmax);
#endif
  for (; j < n; ++j) mx = x[j] > mx ? x[j] : mx;
  *out_max = mx;
  if (mx == -INFINITY) {  // exp(x - max) would be NaN; these logits carry no mass
    *out_sum = 0.0f;
    return;
  }
  // A NaN the max skipped still reaches the sum through exp(NaN) and poisons the loss.
  float sum = 0.0f;
  j = 0;
#if defined(__AVX512F__)
  {
    const __m512 vm = _mm512_set1_ps(mx);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    for (; j + 32 <= n; j += 32) {
      s0 = _mm512_add_ps(s0, exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), vm)));
      s1 = _mm512_add_ps(s1, exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j + 16), vm)));
    }
    for (; j < n; j += 16) {
      const __mmask16 k = tail_mask(n - j < 16 ? n - j : 16);
      s0 = _mm512_mask_add_ps(s0, k, s0, exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), vm)));
    }
    sum = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
  }
#elif defined(__AVX2__)
  const __m256 vm = _mm256_set1_ps(mx);
  __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
  for (; j + 16 <= n; j += 16) {
    s0 = _mm256_add_ps(s0, exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm)));
    s1 = _mm256_add_ps(s1, exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j + 8), vm)));
  }
  for (; j + 8 <= n; j += 8) s0 = _mm256_add_ps(s0, exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vm)));
  sum = hsum(_mm256_add_ps(s0, s1));
#endif
  for (; j < n; ++j) sum += expf(x[j] - mx);
  *out_sum = sum;
}

void ce_softmax_scaled(float* x, int64_t n, float lse, float scale) {
  int64_t j = 0;
#if defined(__AVX512F__)
  const __m512 vl = _mm512_set1_ps(lse), vs = _mm512_set1_ps(scale);
  for (; j + 16 <= n; j += 16)
    _mm512_storeu_ps(x + j, _mm512_mul_ps(exp_ps(_mm512_sub_ps(_mm512_loadu_ps(x + j), vl)), vs));
  if (j < n) {
    const __mmask16 k = tail_mask(n - j);
    _mm512_mask_storeu_ps(x + j, k, _mm512_mul_ps(exp_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + j), vl)), vs));
    j = n;
  }
#elif defined(__AVX2__)
  const __m256 vl = _mm256_set1_ps(lse), vs = _mm256_set1_ps(scale);
  for (; j + 8 <= n; j += 8)
    _mm256_storeu_ps(x + j, _mm256_mul_ps(exp_ps(_mm256_sub_ps(_mm256_loadu_ps(x + j), vl)), vs));
#endif
  for (; j < n; ++j) x[j] = expf(x[j] - lse) * scale;
}

}  // namespace ernie::cpu::ERNIE_ISA_NS
