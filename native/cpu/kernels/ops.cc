// The per-ISA half of the row kernels (see cpu/ops.h). Compiled once per ISA; a small vector
// layer (Vec, VL lanes) lets each kernel be written once:
//   AVX-512F   __m512, masked loads and stores for row tails
//   AVX2       __m256, vmaskmov for row tails
//   generic    an 8-float struct the compiler maps to whatever it has
// Row tails go through masked (fault-free) loads, so rows of any length need no scalar loop.
// The build has no -ffast-math: reductions are vectorised by hand (lane accumulators, then
// a fixed horizontal sum), and exp is a Cephes-style polynomial on the SIMD paths.
#include <cmath>

#include "cpu/ops.h"

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

#if defined(__AVX512F__)
using Vec = __m512;
constexpr int64_t VL = 16;
inline __mmask16 tail_mask(int64_t k) { return __mmask16((1u << k) - 1); }
inline Vec zero() { return _mm512_setzero_ps(); }
inline Vec set1(float v) { return _mm512_set1_ps(v); }
inline Vec load(const float* p) { return _mm512_loadu_ps(p); }
inline void store(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec load_n(const float* p, int64_t k) { return _mm512_maskz_loadu_ps(tail_mask(k), p); }
inline void store_n(float* p, Vec v, int64_t k) { _mm512_mask_storeu_ps(p, tail_mask(k), v); }
inline Vec add(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec div(Vec a, Vec b) { return _mm512_div_ps(a, b); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }  // a * b + c
inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
inline float hsum(Vec v) { return _mm512_reduce_add_ps(v); }
inline Vec swap_pairs(Vec v) { return _mm512_permute_ps(v, 0xB1); }  // lanes (1,0,3,2,...)
inline Vec neg_abs(Vec v) { return _mm512_or_ps(v, _mm512_set1_ps(-0.0f)); }
inline Vec round_nearest(Vec v) { return _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
// 2^n for integral n in [-126, 127], built in the exponent field.
inline Vec pow2i(Vec n) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
inline Vec zero_where_less(Vec v, Vec x, Vec limit) {
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(x, limit, _CMP_NLT_UQ), v);
}
inline Vec select_nonneg(Vec x, Vec if_nonneg, Vec otherwise) {
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ), otherwise, if_nonneg);
}
inline void widen_bf16(const uint16_t* src, float* dst) {  // VL values
  const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)));
  _mm512_storeu_ps(dst, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
}

#elif defined(__AVX2__)
using Vec = __m256;
constexpr int64_t VL = 8;
inline __m256i tail_mask(int64_t k) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(k)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline Vec zero() { return _mm256_setzero_ps(); }
inline Vec set1(float v) { return _mm256_set1_ps(v); }
inline Vec load(const float* p) { return _mm256_loadu_ps(p); }
inline void store(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec load_n(const float* p, int64_t k) { return _mm256_maskload_ps(p, tail_mask(k)); }
inline void store_n(float* p, Vec v, int64_t k) { _mm256_maskstore_ps(p, tail_mask(k), v); }
inline Vec add(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec sub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
inline Vec mul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec div(Vec a, Vec b) { return _mm256_div_ps(a, b); }
inline Vec fma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
inline float hsum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
inline Vec swap_pairs(Vec v) { return _mm256_permute_ps(v, 0xB1); }
inline Vec neg_abs(Vec v) { return _mm256_or_ps(v, _mm256_set1_ps(-0.0f)); }
inline Vec round_nearest(Vec v) { return _mm256_round_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Vec pow2i(Vec n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
inline Vec zero_where_less(Vec v, Vec x, Vec limit) { return _mm256_andnot_ps(_mm256_cmp_ps(x, limit, _CMP_LT_OQ), v); }
inline Vec select_nonneg(Vec x, Vec if_nonneg, Vec otherwise) {
  return _mm256_blendv_ps(otherwise, if_nonneg, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_GE_OQ));
}
inline void widen_bf16(const uint16_t* src, float* dst) {
  const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)));
  _mm256_storeu_ps(dst, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
}

#else
constexpr int64_t VL = 8;
struct Vec {
  float v[VL];
};
#define ERNIE_LANEWISE(expr) \
  Vec r;                     \
  for (int64_t j = 0; j < VL; ++j) r.v[j] = (expr); \
  return r;
inline Vec zero() { ERNIE_LANEWISE(0.0f) }
inline Vec set1(float x) { ERNIE_LANEWISE(x) }
inline Vec load(const float* p) { ERNIE_LANEWISE(p[j]) }
inline Vec load_n(const float* p, int64_t k) { ERNIE_LANEWISE(j < k ? p[j] : 0.0f) }
inline void store(float* p, Vec v) {
  for (int64_t j = 0; j < VL; ++j) p[j] = v.v[j];
}
inline void store_n(float* p, Vec v, int64_t k) {
  for (int64_t j = 0; j < k; ++j) p[j] = v.v[j];
}
inline Vec add(Vec a, Vec b) { ERNIE_LANEWISE(a.v[j] + b.v[j]) }
inline Vec sub(Vec a, Vec b) { ERNIE_LANEWISE(a.v[j] - b.v[j]) }
inline Vec mul(Vec a, Vec b) { ERNIE_LANEWISE(a.v[j] * b.v[j]) }
inline Vec fma(Vec a, Vec b, Vec c) { ERNIE_LANEWISE(a.v[j] * b.v[j] + c.v[j]) }
inline float hsum(Vec v) {
  float s = 0.0f;
  for (int64_t j = 0; j < VL; ++j) s += v.v[j];
  return s;
}
inline Vec swap_pairs(Vec v) { ERNIE_LANEWISE(v.v[j ^ 1]) }
// Stable logistic: exp only of -|x|, so nothing overflows.
inline float sigmoid1(float x) {
  const float e = std::exp(-std::fabs(x));
  return x >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
}
inline Vec sigmoid(Vec x) { ERNIE_LANEWISE(sigmoid1(x.v[j])) }
#undef ERNIE_LANEWISE
#endif

#if defined(__AVX2__)
// exp(x) for x <= 0 (Cephes expf: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial; ~1 ulp),
// subnormal results included: silu(-95) = -95 e^-95 is a normal float although e^-95 is not.
inline Vec exp_nonpositive(Vec x) {
  const Vec lo = set1(-103.972077f);  // ln(2^-150): below it exp rounds to 0
  const Vec xc = vmax(x, lo);
  const Vec n = round_nearest(mul(xc, set1(1.44269504088896341f)));
  Vec r = fma(n, set1(-0.693359375f), xc);  // ln2 split in two for an exact first product
  r = fma(n, set1(2.12194440e-4f), r);
  Vec p = set1(1.9875691500e-4f);
  p = fma(p, r, set1(1.3981999507e-3f));
  p = fma(p, r, set1(8.3334519073e-3f));
  p = fma(p, r, set1(4.1665795894e-2f));
  p = fma(p, r, set1(1.6666665459e-1f));
  p = fma(p, r, set1(5.0000001201e-1f));
  p = fma(p, mul(r, r), add(r, set1(1.0f)));
  // 2^n (n >= -150) as two normal factors, 2^max(n, -126) and the rest.
  const Vec n_hi = vmax(n, set1(-126.0f));
  return zero_where_less(mul(mul(p, pow2i(n_hi)), pow2i(sub(n, n_hi))), x, lo);
}
// Stable logistic: exp only of -|x|, so nothing overflows.
inline Vec sigmoid(Vec x) {
  const Vec e = exp_nonpositive(neg_abs(x));
  const Vec d = div(set1(1.0f), add(set1(1.0f), e));
  return select_nonneg(x, d, mul(e, d));
}
#endif

inline int64_t lanes(int64_t n, int64_t i) { return n - i < VL ? n - i : VL; }
inline Vec loadk(const float* p, int64_t k) { return k == VL ? load(p) : load_n(p, k); }
inline void storek(float* p, Vec v, int64_t k) {
  if (k == VL) store(p, v);
  else store_n(p, v, k);
}

// Two accumulators hide the FMA latency; the tail's masked-off lanes add zeros.
inline float sum_squares(const float* x, int64_t n) {
  Vec a0 = zero(), a1 = zero();
  int64_t i = 0;
  for (; i + 2 * VL <= n; i += 2 * VL) {
    const Vec u = load(x + i), v = load(x + i + VL);
    a0 = fma(u, u, a0);
    a1 = fma(v, v, a1);
  }
  for (; i < n; i += VL) {
    const Vec u = loadk(x + i, lanes(n, i));
    a0 = fma(u, u, a0);
  }
  return hsum(add(a0, a1));
}

// sum of a * b * c
inline float dot3(const float* a, const float* b, const float* c, int64_t n) {
  Vec s0 = zero(), s1 = zero();
  int64_t i = 0;
  for (; i + 2 * VL <= n; i += 2 * VL) {
    s0 = fma(mul(load(a + i), load(b + i)), load(c + i), s0);
    s1 = fma(mul(load(a + i + VL), load(b + i + VL)), load(c + i + VL), s1);
  }
  for (; i < n; i += VL) {
    const int64_t k = lanes(n, i);
    s0 = fma(mul(loadk(a + i, k), loadk(b + i, k)), loadk(c + i, k), s0);
  }
  return hsum(add(s0, s1));
}

}  // namespace

void rmsnorm_fwd(const float* x, const float* w, int64_t rows, int64_t dim, float eps, float* out, float* rstd) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * dim;
    float* yr = out + r * dim;
    const float rs = 1.0f / std::sqrt(sum_squares(xr, dim) / float(dim) + eps);
    if (rstd) rstd[r] = rs;
    const Vec vrs = set1(rs);
    // Element i is read before it is written: out may equal x.
    for (int64_t i = 0; i < dim; i += VL) {
      const int64_t k = lanes(dim, i);
      storek(yr + i, mul(mul(loadk(xr + i, k), vrs), loadk(w + i, k)), k);
    }
  }
}

// With y = w x r, r = (mean(x^2) + eps)^-1/2:
//   dx_i = r w_i g_i - x_i r^3 / dim * sum_j g_j w_j x_j,   dw_i += g_i x_i r.
void rmsnorm_bwd(const float* dout, const float* x, const float* w, const float* rstd, int64_t rows, int64_t dim,
                 float* dx, bool accumulate, float* dw_partial) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* gr = dout + r * dim;
    const float* xr = x + r * dim;
    float* dxr = dx + r * dim;
    const float rs = rstd[r];
    const float c = rs * rs * rs * dot3(gr, w, xr, dim) / float(dim);
    const Vec vrs = set1(rs), vc = set1(c);
    for (int64_t i = 0; i < dim; i += VL) {
      const int64_t k = lanes(dim, i);
      const Vec g = loadk(gr + i, k), xv = loadk(xr + i, k);
      Vec d = sub(mul(mul(g, loadk(w + i, k)), vrs), mul(xv, vc));
      if (accumulate) d = add(loadk(dxr + i, k), d);
      storek(dxr + i, d, k);
      if (dw_partial) storek(dw_partial + i, fma(mul(g, xv), vrs, loadk(dw_partial + i, k)), k);
    }
  }
}

// out[j] = x[j] cos[j] + x[partner(j)] sin[j]; the caller bakes the rotation's signs into sin.
// Both elements of a pair are loaded before either is stored: out may equal x.
void rope_rotate(const float* x, float* out, const float* cs, const float* sn, int64_t heads, int64_t head_dim,
                 int pairing) {
  const int64_t half = head_dim / 2;
  for (int64_t h = 0; h < heads; ++h) {
    const float* xh = x + h * head_dim;
    float* oh = out + h * head_dim;
    if (pairing == int(RopePairing::adjacent)) {
      // VL is even and head_dim is even, so a vector (or masked tail) never splits a pair.
      for (int64_t i = 0; i < head_dim; i += VL) {
        const int64_t k = lanes(head_dim, i);
        const Vec v = loadk(xh + i, k);
        storek(oh + i, fma(v, loadk(cs + i, k), mul(swap_pairs(v), loadk(sn + i, k))), k);
      }
    } else {
      for (int64_t i = 0; i < half; i += VL) {
        const int64_t k = lanes(half, i);
        const Vec a = loadk(xh + i, k), b = loadk(xh + half + i, k);
        storek(oh + i, fma(a, loadk(cs + i, k), mul(b, loadk(sn + i, k))), k);
        storek(oh + half + i, fma(b, loadk(cs + half + i, k), mul(a, loadk(sn + half + i, k))), k);
      }
    }
  }
}

void swiglu_fwd(const float* gate, const float* up, float* out, int64_t n) {
  for (int64_t i = 0; i < n; i += VL) {
    const int64_t k = lanes(n, i);
    const Vec g = loadk(gate + i, k);
    storek(out + i, mul(mul(g, sigmoid(g)), loadk(up + i, k)), k);
  }
}

// silu'(g) = s (1 + g (1 - s)), s = sigmoid(g).
void swiglu_bwd(const float* dout, const float* gate, const float* up, float* dgate, float* dup, int64_t n) {
  const Vec one = set1(1.0f);
  for (int64_t i = 0; i < n; i += VL) {
    const int64_t k = lanes(n, i);
    const Vec g = loadk(gate + i, k), u = loadk(up + i, k), d = loadk(dout + i, k);
    const Vec s = sigmoid(g);
    storek(dup + i, mul(d, mul(g, s)), k);
    const Vec dsilu = mul(s, fma(g, sub(one, s), one));
    storek(dgate + i, mul(mul(d, u), dsilu), k);
  }
}

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
  int64_t i = 0;
#if defined(__AVX2__)
  for (; i + VL <= n; i += VL) widen_bf16(src + i, dst + i);
#endif
  for (; i < n; ++i) dst[i] = ::ernie::cpu::bf16_to_f32(src[i]);
}

void add_into(float* dst, const float* src, int64_t n) {
  for (int64_t i = 0; i < n; i += VL) {
    const int64_t k = lanes(n, i);
    storek(dst + i, add(loadk(dst + i, k), loadk(src + i, k)), k);
  }
}

}  // namespace ernie::cpu::ERNIE_ISA_NS
