// The per-ISA loops of the optimisers. They are memory-bound: plain loops the compiler
// vectorises, except the double-precision sum of squares (AVX2 by hand, since an FP reduction
// is not reordered without -ffast-math) and the 8-bit code search.
#include <cmath>

#include "cpu/optim.h"
#include "cpu/tensor.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace ernie::cpu::ERNIE_ISA_NS {
namespace {

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// The nearest code to x: how many of the 255 midpoints lie below x (a branchless binary
// search over 256 slots, the last one +inf). Ties go to the lower code; NaN gives code 0.
inline uint8_t nearest_code(const float* midpoints, float x) {
  int idx = 0;
  for (int step = 128; step >= 1; step >>= 1) idx += midpoints[idx + step - 1] < x ? step : 0;
  return uint8_t(idx);
}

void quantize_block(const float* x, int64_t len, float absmax, const QuantMap& map, uint8_t* codes) {
  const float inv = absmax > 0.0f ? 1.0f / absmax : 0.0f;  // an all-zero block: every value maps to 0
  int64_t j = 0;
#if defined(__AVX2__)
  // Eight lanes walk the same search with gathers.
  const __m256 vinv = _mm256_set1_ps(inv);
  for (; j + 8 <= len; j += 8) {
    const __m256 v = _mm256_mul_ps(_mm256_loadu_ps(x + j), vinv);
    __m256i idx = _mm256_setzero_si256();
    for (int step = 128; step >= 1; step >>= 1) {
      const __m256i probe = _mm256_add_epi32(idx, _mm256_set1_epi32(step - 1));
      const __m256 mid = _mm256_i32gather_ps(map.midpoints, probe, 4);
      const __m256i below = _mm256_castps_si256(_mm256_cmp_ps(mid, v, _CMP_LT_OQ));
      idx = _mm256_add_epi32(idx, _mm256_and_si256(below, _mm256_set1_epi32(step)));
    }
    alignas(32) int32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), idx);
    for (int l = 0; l < 8; ++l) codes[j + l] = uint8_t(lanes[l]);
  }
#endif
  for (; j < len; ++j) codes[j] = nearest_code(map.midpoints, x[j] * inv);
}

}  // namespace

void adamw_update(float* p, const float* g, float* m, float* v, uint16_t* p_bf16, int64_t n, const AdamHyper& h) {
  const float decay = h.decay;
  const float b1 = h.beta1, b2 = h.beta2, c1 = h.one_minus_beta1, c2 = h.one_minus_beta2;
  const float step_size = h.step_size, bias2_sqrt = h.bias2_sqrt, eps = h.eps;
  for (int64_t i = 0; i < n; ++i) {
    const float gi = g[i];
    const float mi = b1 * m[i] + c1 * gi;
    const float vi = b2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    p[i] = p[i] * decay - step_size * mi / (sqrtf(vi) / bias2_sqrt + eps);
  }
  if (p_bf16)
    for (int64_t i = 0; i < n; ++i) p_bf16[i] = f32_to_bf16(p[i]);
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
    for (int64_t j = 0; j < len; ++j) {
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
  if (!buffer) {
    for (int64_t i = 0; i < n; ++i) p[i] -= lr * (g[i] + weight_decay * p[i]);
    return;
  }
  for (int64_t i = 0; i < n; ++i) {
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
    float mx = 0.0f;
    for (int64_t j = 0; j < len; ++j) {
      const float a = fabsf(x[b0 + j]);
      mx = a > mx ? a : mx;
    }
    absmax[block] = mx;
    quantize_block(x + b0, len, mx, map, codes + b0);
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
