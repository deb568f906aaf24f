// The per-ISA loops of the optimisers. They are memory-bound: plain loops the compiler
// vectorises, except where it cannot or does worse: AdamW's update fused with the bf16 copy of
// the params (one pass over p, not two), the 8-bit state's table look-ups (gathers), the block
// absmax, the double-precision sum of squares (FP reductions, which are not reordered without
// -ffast-math) and SGD. The vector paths compute each element with the scalar loop's
// operations, in its order (no FMA).
//
// Only AdamW has an AVX-512 path of its own. Elsewhere the AVX2 code serves the AVX-512 builds
// too: 512-bit versions measured no faster on Zen 4 (its 16-lane gathers cost what two 8-lane
// ones do; the norm and the absmax run at the same speed at either width), and SGD's 512-bit
// loop, the compiler's, 5-10% slower than the 256-bit one here.
#include <cmath>

#include "cpu/optim.h"
#include "cpu/tensor.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__) && __GNUC__ < 13
// GCC 12 flags the deliberately undefined pass-through operand inside AVX-512 intrinsics
// (GCC bug 105593, fixed in 13).
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace ernie::cpu::ERNIE_ISA_NS {
namespace {

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

#if defined(__AVX512F__)
inline __mmask16 tail_mask(int64_t k) { return __mmask16((1u << k) - 1); }  // k in [1, 16]

// Sixteen floats: all of them (full), or the lanes of k, the others read as 0.
inline __m512 load16(const float* p, __mmask16 k, bool full) {
  return full ? _mm512_loadu_ps(p) : _mm512_maskz_loadu_ps(k, p);
}
inline void store16(float* p, __m512 v, __mmask16 k, bool full) {
  if (full) _mm512_storeu_ps(p, v);
  else _mm512_mask_storeu_ps(p, k, v);
}

// f32_to_bf16 (cpu/tensor.h) on 16 lanes, to dst[0, 16) or to dst's lanes of k: nearest even,
// a NaN kept and made quiet.
inline void store_bf16_16(uint16_t* dst, __m512 x, __mmask16 k, bool full) {
  const __m512i u = _mm512_castps_si512(x), hi = _mm512_srli_epi32(u, 16);
  const __m512i rounded = _mm512_srli_epi32(
      _mm512_add_epi32(_mm512_add_epi32(u, _mm512_set1_epi32(0x7fff)), _mm512_and_si512(hi, _mm512_set1_epi32(1))), 16);
  const __m512i bits = _mm512_mask_mov_epi32(rounded, _mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q),
                                             _mm512_or_si512(hi, _mm512_set1_epi32(0x40)));
  if (full) _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm512_cvtepi32_epi16(bits));
  else _mm512_mask_cvtepi32_storeu_epi16(dst, k, bits);
}
#endif

#if defined(__AVX2__)
// f32_to_bf16 (cpu/tensor.h) on 8 lanes: nearest even, a NaN kept and made quiet.
inline void store_bf16_8(uint16_t* dst, __m256 x) {
  const __m256i u = _mm256_castps_si256(x), hi = _mm256_srli_epi32(u, 16);
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), _mm256_and_si256(hi, _mm256_set1_epi32(1))), 16);
  const __m256i bits = _mm256_blendv_epi8(rounded, _mm256_or_si256(hi, _mm256_set1_epi32(0x40)),
                                          _mm256_castps_si256(_mm256_cmp_ps(x, x, _CMP_UNORD_Q)));
  // Every lane is below 2^16, so the saturating pack is exact.
  _mm_storeu_si128(reinterpret_cast<__m128i*>(dst),
                   _mm_packus_epi32(_mm256_castsi256_si128(bits), _mm256_extracti128_si256(bits, 1)));
}

// nearest_code() for eight values: the bucket's base and its midpoint are two gathers.
inline __m256i nearest_codes8(const QuantMap& map, __m256 q) {
  const __m256i u = _mm256_castps_si256(q);
  __m256i key = _mm256_sub_epi32(_mm256_srli_epi32(_mm256_and_si256(u, _mm256_set1_epi32(0x7fffffff)), 15),
                                 _mm256_set1_epi32(104 << 8));
  key = _mm256_min_epi32(_mm256_max_epi32(key, _mm256_setzero_si256()), _mm256_set1_epi32(kQuantBuckets - 1));
  key = _mm256_add_epi32(key, _mm256_and_si256(_mm256_srai_epi32(u, 31), _mm256_set1_epi32(kQuantBuckets)));
  const __m256i base = _mm256_and_si256(
      _mm256_i32gather_epi32(reinterpret_cast<const int*>(map.bucket_base), key, 1), _mm256_set1_epi32(0xff));
  const __m256 mid = _mm256_i32gather_ps(map.midpoints, base, 4);
  return _mm256_sub_epi32(base, _mm256_castps_si256(_mm256_cmp_ps(mid, q, _CMP_LT_OQ)));  // true = -1
}

// The low byte of each 32-bit lane, in order, to 8 bytes at dst.
inline void store_codes8(uint8_t* dst, __m256i codes) {
  const __m256i low_bytes = _mm256_shuffle_epi8(
      codes, _mm256_setr_epi8(0, 4, 8, 12, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, 0, 4, 8, 12, -1, -1, -1,
                              -1, -1, -1, -1, -1, -1, -1, -1, -1));
  const __m256i packed = _mm256_permutevar8x32_epi32(low_bytes, _mm256_setr_epi32(0, 4, 0, 0, 0, 0, 0, 0));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), _mm256_castsi256_si128(packed));
}

inline __m256 load_codes8(const QuantMap& map, const uint8_t* codes) {
  const __m256i c = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes)));
  return _mm256_i32gather_ps(map.values, c, 4);
}
#endif

void quantize_block(const float* x, int64_t len, float absmax, const QuantMap& map, uint8_t* codes) {
  const float inv = absmax > 0.0f ? 1.0f / absmax : 0.0f;  // an all-zero block: every value maps to 0
  int64_t j = 0;
#if defined(__AVX2__)
  const __m256 vinv = _mm256_set1_ps(inv);
  for (; j + 8 <= len; j += 8) store_codes8(codes + j, nearest_codes8(map, _mm256_mul_ps(_mm256_loadu_ps(x + j), vinv)));
#endif
  for (; j < len; ++j) codes[j] = nearest_code(map, x[j] * inv);
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, uint16_t* p_bf16, int64_t n, const AdamHyper& h) {
  const float decay = h.decay;
  const float b1 = h.beta1, b2 = h.beta2, c1 = h.one_minus_beta1, c2 = h.one_minus_beta2;
  const float step_size = h.step_size, bias2_sqrt = h.bias2_sqrt, eps = h.eps;
  int64_t i = 0;
#if defined(__AVX512F__)
  {
    const __m512 vb1 = _mm512_set1_ps(b1), vc1 = _mm512_set1_ps(c1), vb2 = _mm512_set1_ps(b2), vc2 = _mm512_set1_ps(c2);
    const __m512 vdecay = _mm512_set1_ps(decay), vstep = _mm512_set1_ps(step_size);
    const __m512 vbias2 = _mm512_set1_ps(bias2_sqrt), veps = _mm512_set1_ps(eps);
    auto step16 = [&](int64_t i, __mmask16 k, bool full) {
      const __m512 gi = load16(g + i, k, full);
      const __m512 mi = _mm512_add_ps(_mm512_mul_ps(vb1, load16(m + i, k, full)), _mm512_mul_ps(vc1, gi));
      const __m512 vi = _mm512_add_ps(_mm512_mul_ps(vb2, load16(v + i, k, full)), _mm512_mul_ps(_mm512_mul_ps(vc2, gi), gi));
      store16(m + i, mi, k, full);
      store16(v + i, vi, k, full);
      const __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vi), vbias2), veps);
      const __m512 pi = _mm512_sub_ps(_mm512_mul_ps(load16(p + i, k, full), vdecay),
                                      _mm512_div_ps(_mm512_mul_ps(vstep, mi), denom));
      store16(p + i, pi, k, full);
      if (p_bf16) store_bf16_16(p_bf16 + i, pi, k, full);
    };
    for (; i + 16 <= n; i += 16) step16(i, 0xffff, true);
    if (i < n) step16(i, tail_mask(n - i), false);
    i = n;
  }
#elif defined(__AVX2__)
  {
    const __m256 vb1 = _mm256_set1_ps(b1), vc1 = _mm256_set1_ps(c1), vb2 = _mm256_set1_ps(b2), vc2 = _mm256_set1_ps(c2);
    const __m256 vdecay = _mm256_set1_ps(decay), vstep = _mm256_set1_ps(step_size);
    const __m256 vbias2 = _mm256_set1_ps(bias2_sqrt), veps = _mm256_set1_ps(eps);
    for (; i + 8 <= n; i += 8) {
      const __m256 gi = _mm256_loadu_ps(g + i);
      const __m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(vc1, gi));
      const __m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(vc2, gi), gi));
      _mm256_storeu_ps(m + i, mi);
      _mm256_storeu_ps(v + i, vi);
      const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbias2), veps);
      const __m256 pi = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), vdecay),
                                      _mm256_div_ps(_mm256_mul_ps(vstep, mi), denom));
      _mm256_storeu_ps(p + i, pi);
      if (p_bf16) store_bf16_8(p_bf16 + i, pi);
    }
  }
#endif
  const int64_t tail = i;
  for (; i < n; ++i) {
    const float gi = g[i];
    const float mi = b1 * m[i] + c1 * gi;
    const float vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) / bias2_sqrt + eps);
  }
  if (p_bf16)
    for (i = tail; i < n; ++i) p_bf16[i] = f32_to_bf16(p[i]);
}

void adamw8bit_update(float* p, const float* g, uint8_t* m_codes, uint8_t* v_codes, float* m_absmax, float* v_absmax,
                      uint16_t* p_bf16, int64_t n, int64_t block_size, const AdamHyper& h, const QuantMap& m_map,
                      const QuantMap& v_map, float* scratch) {
  const float decay = h.decay;
  const float b1 = h.beta1, b2 = h.beta2, c1 = h.one_minus_beta1, c2 = h.one_minus_beta2;
  const float step_size = h.step_size, bias2_sqrt = h.bias2_sqrt, eps = h.eps;
  float* ms = scratch;
  float* vs = scratch + block_size;
  for (int64_t b0 = 0, block = 0; b0 < n; b0 += block_size, ++block) {
    const int64_t len = min64(block_size, n - b0);
    const float m_scale = m_absmax[block], v_scale = v_absmax[block];
    const uint8_t* mc = m_codes + b0;
    const uint8_t* vc = v_codes + b0;
    const float* gb = g + b0;
    float* pb = p + b0;
    float m_max = 0.0f, v_max = 0.0f;
    int64_t j = 0;
#if defined(__AVX2__)
    {
      const __m256 vb1 = _mm256_set1_ps(b1), vc1 = _mm256_set1_ps(c1), vb2 = _mm256_set1_ps(b2), vc2 = _mm256_set1_ps(c2);
      const __m256 vms = _mm256_set1_ps(m_scale), vvs = _mm256_set1_ps(v_scale), vdecay = _mm256_set1_ps(decay);
      const __m256 vstep = _mm256_set1_ps(step_size), vbias2 = _mm256_set1_ps(bias2_sqrt), veps = _mm256_set1_ps(eps);
      const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
      __m256 mmax = _mm256_setzero_ps(), vmax = _mm256_setzero_ps();
      for (; j + 8 <= len; j += 8) {
        const __m256 gi = _mm256_loadu_ps(gb + j);
        const __m256 mi = _mm256_add_ps(_mm256_mul_ps(vb1, _mm256_mul_ps(load_codes8(m_map, mc + j), vms)), _mm256_mul_ps(vc1, gi));
        const __m256 vi = _mm256_add_ps(_mm256_mul_ps(vb2, _mm256_mul_ps(load_codes8(v_map, vc + j), vvs)),
                                        _mm256_mul_ps(_mm256_mul_ps(vc2, gi), gi));
        _mm256_storeu_ps(ms + j, mi);
        _mm256_storeu_ps(vs + j, vi);
        mmax = _mm256_max_ps(_mm256_and_ps(mi, abs_mask), mmax);  // a NaN lane keeps the old max, as below
        vmax = _mm256_max_ps(vi, vmax);
        const __m256 denom = _mm256_add_ps(_mm256_div_ps(_mm256_sqrt_ps(vi), vbias2), veps);
        const __m256 p = _mm256_sub_ps(_mm256_mul_ps(_mm256_loadu_ps(pb + j), vdecay), _mm256_div_ps(_mm256_mul_ps(vstep, mi), denom));
        _mm256_storeu_ps(pb + j, p);
      }
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, mmax);
      for (int l = 0; l < 8; ++l) m_max = lanes[l] > m_max ? lanes[l] : m_max;
      _mm256_store_ps(lanes, vmax);
      for (int l = 0; l < 8; ++l) v_max = lanes[l] > v_max ? lanes[l] : v_max;
    }
#endif
    for (; j < len; ++j) {
      const float gi = gb[j];
      const float mi = b1 * (m_map.values[mc[j]] * m_scale) + c1 * gi;
      const float vi = b2 * (v_map.values[vc[j]] * v_scale) + c2 * gi * gi;
      ms[j] = mi;
      vs[j] = vi;
      const float am = fabsf(mi);
      m_max = am > m_max ? am : m_max;
      v_max = vi > v_max ? vi : v_max;
      // The parameter sees this step's unquantised moments, as in bitsandbytes.
      pb[j] = pb[j] * decay - step_size * mi / (sqrtf(vi) / bias2_sqrt + eps);
    }
    m_absmax[block] = m_max;
    v_absmax[block] = v_max;
    quantize_block(ms, len, m_max, m_map, m_codes + b0);
    quantize_block(vs, len, v_max, v_map, v_codes + b0);
    if (p_bf16)
      for (int64_t j = 0; j < len; ++j) p_bf16[b0 + j] = f32_to_bf16(pb[j]);
  }
}

void sgd_update(float* p, const float* g, float* buffer, int64_t n, float lr, float momentum, float weight_decay,
                bool nesterov) {
  int64_t i = 0;
#if defined(__AVX2__)  // also in the AVX-512 builds, where the 512-bit loop measured slower
  {
    const __m256 vlr = _mm256_set1_ps(lr), vmom = _mm256_set1_ps(momentum), vwd = _mm256_set1_ps(weight_decay);
    if (!buffer) {
      for (; i + 8 <= n; i += 8) {
        const __m256 pi = _mm256_loadu_ps(p + i);
        const __m256 d = _mm256_add_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(vwd, pi));
        _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_mul_ps(vlr, d)));
      }
    } else {
      for (; i + 8 <= n; i += 8) {
        const __m256 pi = _mm256_loadu_ps(p + i);
        const __m256 d = _mm256_add_ps(_mm256_loadu_ps(g + i), _mm256_mul_ps(vwd, pi));
        const __m256 b = _mm256_add_ps(_mm256_mul_ps(vmom, _mm256_loadu_ps(buffer + i)), d);
        _mm256_storeu_ps(buffer + i, b);
        const __m256 u = nesterov ? _mm256_add_ps(d, _mm256_mul_ps(vmom, b)) : b;
        _mm256_storeu_ps(p + i, _mm256_sub_ps(pi, _mm256_mul_ps(vlr, u)));
      }
    }
  }
#endif
  if (!buffer) {
    for (; i < n; ++i) p[i] -= lr * (g[i] + weight_decay * p[i]);
    return;
  }
  for (; i < n; ++i) {
    const float d = g[i] + weight_decay * p[i];
    const float b = momentum * buffer[i] + d;
    buffer[i] = b;
    p[i] -= lr * (nesterov ? d + momentum * b : b);
  }
}

void quantize_blocks(const float* x, int64_t n, int64_t block_size, const QuantMap& map, uint8_t* codes,
                     float* absmax) {
  for (int64_t b0 = 0, block = 0; b0 < n; b0 += block_size, ++block) {
    const int64_t len = min64(block_size, n - b0);
    const float* xb = x + b0;
    // max |x| as `a > mx ? a : mx` takes it: a NaN never becomes the max (max_ps(a, acc) keeps acc).
    float mx = 0.0f;
    int64_t j = 0;
#if defined(__AVX2__)  // also in the AVX-512 builds: a 512-bit version measured no faster
    {
      const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
      __m256 m0 = _mm256_setzero_ps(), m1 = _mm256_setzero_ps();
      for (; j + 16 <= len; j += 16) {
        m0 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(xb + j), abs_mask), m0);
        m1 = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(xb + j + 8), abs_mask), m1);
      }
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, _mm256_max_ps(m0, m1));
      for (int l = 0; l < 8; ++l) mx = lanes[l] > mx ? lanes[l] : mx;
    }
#endif
    for (; j < len; ++j) {
      const float a = fabsf(xb[j]);
      mx = a > mx ? a : mx;
    }
    absmax[block] = mx;
    quantize_block(xb, len, mx, map, codes + b0);
  }
}

void dequantize_blocks(const uint8_t* codes, const float* absmax, int64_t n, int64_t block_size, const QuantMap& map,
                       float* out) {
  for (int64_t b0 = 0, block = 0; b0 < n; b0 += block_size, ++block) {
    const int64_t len = min64(block_size, n - b0);
    const float s = absmax[block];
    for (int64_t j = 0; j < len; ++j) out[b0 + j] = map.values[codes[b0 + j]] * s;
  }
}

double sum_squares(const float* x, int64_t n) {
  int64_t i = 0;
  double total = 0.0;
#if defined(__AVX2__)
  __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd(), s2 = _mm256_setzero_pd(), s3 = _mm256_setzero_pd();
  for (; i + 16 <= n; i += 16) {
    const __m256d a = _mm256_cvtps_pd(_mm_loadu_ps(x + i)), b = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4));
    const __m256d c = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 8)), d = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 12));
    s0 = _mm256_fmadd_pd(a, a, s0);
    s1 = _mm256_fmadd_pd(b, b, s1);
    s2 = _mm256_fmadd_pd(c, c, s2);
    s3 = _mm256_fmadd_pd(d, d, s3);
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(_mm256_add_pd(s0, s1), _mm256_add_pd(s2, s3)));
  total = (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]);
#endif
  for (; i < n; ++i) total += double(x[i]) * double(x[i]);
  return total;
}

void scale_values(float* x, int64_t n, float s) {
  for (int64_t i = 0; i < n; ++i) x[i] *= s;
}

}  // namespace ernie::cpu::ERNIE_ISA_NS
