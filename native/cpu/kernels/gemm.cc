// The per-ISA half of the GEMM: packing and the register-tiled micro-kernels.
// Compiled once per ISA (see cpu/dispatch.h); the #if ladder picks this copy's tile:
//   AVX-512F     14 x 32 tile, f32 FMA; with AVX512_BF16 also vdpbf16ps on bf16 pairs
//   AVX2 + FMA    6 x 16 tile, f32 FMA
//   generic       4 x 16 tile, plain C++ the compiler vectorises
//
// Packed layouts (one per GemmFormat, see cpu/gemm.h):
//   A: row-major rows of exactly KC elements (f32, or bf16 for the pair format), so that the
//      micro-kernel broadcasts A(i, k) from a constant offset i * KC: packing A is a conversion,
//      never a transpose (it is the activations, packed anew at every call). A panel is any MR
//      or fewer consecutive rows: a block's rows are cut into panels of equal size, each run by a
//      micro-kernel of its own row count.
//   B: panels of NR columns; for each k (f32) or k pair (bf16: two bf16 in one 32-bit word, low
//      half k even) the panel holds its NR values, one or two vectors the micro-kernel loads.
// Only the packing knows the operands' dtypes and layouts; the micro-kernels see one format.
#include "cpu/gemm.h"

#include <type_traits>

#include "cpu/kernels/bf16.h"
#include "cpu/kernels/transpose.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_epi32() (`__m512i __Y = __Y;`), which
// -Wmaybe-uninitialized reports wherever they are inlined: a false positive (GCC bug 105593).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace ernie::cpu::ERNIE_ISA_NS {
namespace {

#if defined(__AVX512F__)
constexpr int MR = 14, NR = 32, MC = 112, KC_F32 = 256;
#define ERNIE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)
#elif defined(__AVX2__)
constexpr int MR = 6, NR = 16, MC = 120, KC_F32 = 384;
#define ERNIE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#else
constexpr int MR = 4, NR = 16, MC = 128, KC_F32 = 256;
#endif
// Row counts a short last panel may have: every ISA's MR is at most 14.
#define ERNIE_ALL_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)
#if defined(__AVX512BF16__)
#define ERNIE_GEMM_BF16_PAIRS 1
constexpr int KC_BF16 = 1024;  // k values per slice: 512 pairs (the C tile is read and written once per slice)
#endif

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// ---- element access: the (dtype, trans) cases are template parameters of the packers.
template <DType T>
inline float elem(const void* p, int64_t i) {
  if constexpr (T == DType::f32) return static_cast<const float*>(p)[i];
  else return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
}
// Offset of logical element (r, c).
template <bool Trans>
inline int64_t at(int64_t ld, int64_t r, int64_t c) { return Trans ? c * ld + r : r * ld + c; }

// A value as packed in an f32 format: scaled, then rounded to bf16 for f32_bf16.
inline float f32_value(float v, float scale, bool round) {
  v *= scale;
  return round ? round_bf16(v) : v;
}

// ---- vectors of f32 (VL lanes): loads that widen bf16 (rounding to bf16 is in
// cpu/kernels/bf16.h, the transposes in cpu/kernels/transpose.h).
#if defined(__AVX512F__)
using Vec = __m512;
constexpr int VL = 16;
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec vset1(float x) { return _mm512_set1_ps(x); }
inline Vec vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
template <DType T>
inline Vec vload_as_f32(const void* p, int64_t i) {
  if constexpr (T == DType::f32) return _mm512_loadu_ps(static_cast<const float*>(p) + i);
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
#elif defined(__AVX2__)
using Vec = __m256;
constexpr int VL = 8;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec vset1(float x) { return _mm256_set1_ps(x); }
inline Vec vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
template <DType T>
inline Vec vload_as_f32(const void* p, int64_t i) {
  if constexpr (T == DType::f32) return _mm256_loadu_ps(static_cast<const float*>(p) + i);
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
#endif

#if defined(__AVX2__)
// VL values of an operand as they are packed in an f32 format.
template <DType T>
inline Vec vf32_value(const void* p, int64_t i, Vec scale, bool scaled, bool round) {
  Vec v = vload_as_f32<T>(p, i);
  if (scaled) v = vmul(v, scale);
  return round ? vround_bf16(v) : v;
}
#endif

// ---- packing for the f32 formats.

// Rows [r0, r0 + rows) x k [k0, k0 + kc) of a logical [R, K] matrix into rows of KC_F32 floats.
template <DType T, bool Trans>
void pack_a_f32(const MatrixRef& m, int64_t r0, int64_t rows, int64_t k0, int64_t kc, float scale, bool round,
                float* dst) {
  int64_t i = 0;
#if defined(__AVX2__)
  const Vec vs = vset1(scale);
  const bool scaled = scale != 1.0f;
  if constexpr (Trans) {  // stored [K, R]: VL x VL blocks through a register transpose
    for (; i + VL <= rows; i += VL) {
      int64_t k = 0;
      for (; k + VL <= kc; k += VL) {
        Vec v[VL];
        for (int j = 0; j < VL; ++j) v[j] = vf32_value<T>(m.data, at<Trans>(m.ld, r0 + i, k0 + k + j), vs, scaled, round);
        transpose_f32(v);
        for (int j = 0; j < VL; ++j) vstore(dst + (i + j) * KC_F32 + k, v[j]);
      }
      for (; k < kc; ++k)
        for (int j = 0; j < VL; ++j)
          dst[(i + j) * KC_F32 + k] = f32_value(elem<T>(m.data, at<Trans>(m.ld, r0 + i + j, k0 + k)), scale, round);
    }
  } else {  // each row contiguous along k
    for (; i < rows; ++i) {
      const int64_t base = at<Trans>(m.ld, r0 + i, k0);
      float* out = dst + i * KC_F32;
      int64_t k = 0;
      for (; k + VL <= kc; k += VL) vstore(out + k, vf32_value<T>(m.data, base + k, vs, scaled, round));
      for (; k < kc; ++k) out[k] = f32_value(elem<T>(m.data, base + k), scale, round);
    }
  }
#endif
  for (; i < rows; ++i)
    for (int64_t k = 0; k < kc; ++k) dst[i * KC_F32 + k] = f32_value(elem<T>(m.data, at<Trans>(m.ld, r0 + i, k0 + k)), scale, round);
}

// Columns [c0, c0 + cols) x k [k0, k0 + kc) of a logical [N, K] matrix into NR-column panels.
template <DType T, bool Trans>
void pack_b_f32(const MatrixRef& m, int64_t c0, int64_t cols, int64_t k0, int64_t kc, bool round, float* dst) {
  for (int64_t p = 0; p < cols; p += NR) {
    const int64_t pc = min64(NR, cols - p);
    float* panel = dst + (p / NR) * kc * NR;
    int64_t j = 0;
#if defined(__AVX2__)
    const Vec one = vset1(1.0f);
    if constexpr (Trans) {  // stored [K, N]: each k's columns are contiguous
      for (; j + VL <= pc; j += VL)
        for (int64_t k = 0; k < kc; ++k)
          vstore(panel + k * NR + j, vf32_value<T>(m.data, at<Trans>(m.ld, c0 + p + j, k0 + k), one, false, round));
    } else {  // each column's k contiguous: VL x VL blocks through a register transpose
      for (; j + VL <= pc; j += VL) {
        int64_t k = 0;
        for (; k + VL <= kc; k += VL) {
          Vec v[VL];
          for (int q = 0; q < VL; ++q) v[q] = vf32_value<T>(m.data, at<Trans>(m.ld, c0 + p + j + q, k0 + k), one, false, round);
          transpose_f32(v);
          for (int q = 0; q < VL; ++q) vstore(panel + (k + q) * NR + j, v[q]);
        }
        for (; k < kc; ++k)
          for (int q = 0; q < VL; ++q)
            panel[k * NR + j + q] = f32_value(elem<T>(m.data, at<Trans>(m.ld, c0 + p + j + q, k0 + k)), 1.0f, round);
      }
    }
#endif
    for (; j < NR; ++j)
      for (int64_t k = 0; k < kc; ++k)
        panel[k * NR + j] = j < pc ? f32_value(elem<T>(m.data, at<Trans>(m.ld, c0 + p + j, k0 + k)), 1.0f, round) : 0.0f;
  }
}

// ---- packing for the bf16 pair format (AVX512_BF16).
#if defined(ERNIE_GEMM_BF16_PAIRS)
using Pair = uint32_t;
constexpr int KP_BF16 = KC_BF16 / 2;  // pairs per packed A row

// Two bf16 as one pair word: lo is k even, hi k odd.
inline Pair pair(uint16_t lo, uint16_t hi) { return uint32_t(lo) | (uint32_t(hi) << 16); }
template <DType T>
inline uint16_t elem_bf16(const void* p, int64_t i, float scale) {
  if constexpr (T == DType::bf16)
    if (scale == 1.0f) return static_cast<const uint16_t*>(p)[i];
  return f32_to_bf16(scale * elem<T>(p, i));
}
// Logical element (r, k) as bf16, zero past kc (the odd k of the last pair).
template <DType T, bool Trans>
inline uint16_t bf16_at(const MatrixRef& m, int64_t r, int64_t k0, int64_t k, int64_t kc, float scale) {
  return k < kc ? elem_bf16<T>(m.data, at<Trans>(m.ld, r, k0 + k), scale) : 0;
}
// The pair of logical elements (r, k) and (r, k + 1), k even.
template <DType T, bool Trans>
inline Pair pair_at(const MatrixRef& m, int64_t r, int64_t k0, int64_t k, int64_t kc, float scale) {
  return pair(bf16_at<T, Trans>(m, r, k0, k, kc, scale), bf16_at<T, Trans>(m, r, k0, k + 1, kc, scale));
}
// 32 consecutive values of a row from element i, scaled, as 16 pairs (nearest even).
template <DType T>
inline __m512i pairs32(const void* p, int64_t i, float scale) {
  if constexpr (T == DType::bf16)
    if (scale == 1.0f) return _mm512_loadu_si512(static_cast<const uint16_t*>(p) + i);
  const Vec s = vset1(scale);
  const Vec lo = vmul(vload_as_f32<T>(p, i), s), hi = vmul(vload_as_f32<T>(p, i + 16), s);
  return (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
}
// 16 values of a row from element i, scaled, as bf16 in the low halves of 16 words.
template <DType T>
inline __m512i bf16_words16(const void* p, int64_t i, float scale) {
  if constexpr (T == DType::bf16)
    if (scale == 1.0f)
      return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i)));
  const Vec v = vmul(vload_as_f32<T>(p, i), vset1(scale));
  return _mm512_cvtepu16_epi32(_mm512_castsi512_si256((__m512i)_mm512_cvtne2ps_pbh(_mm512_setzero_ps(), v)));
}

// The pairs of 16 consecutive stored values from two stored rows (a transposed operand's k and
// k + 1): the even one's in the low halves.
inline __m512i pair_words16(__m512i even, __m512i odd) { return _mm512_or_si512(even, _mm512_slli_epi32(odd, 16)); }

// Rows [r0, r0 + rows) x k [k0, k0 + kc) into rows of KP_BF16 pairs.
template <DType T, bool Trans>
void pack_a_bf16(const MatrixRef& m, int64_t r0, int64_t rows, int64_t k0, int64_t kc, float scale, Pair* dst) {
  int64_t i = 0;
  if constexpr (Trans) {  // stored [K, R]: 16 rows x 16 pairs at a time through a transpose
    // 32 rows (H = 2 groups of 16) at a time where there are, then 16: two cache lines of each
    // stored row per visit, not one (each stored row is another page; reading half as many
    // lines per visit ran at half speed)
    auto rows_in_groups = [&](auto groups) {
      constexpr int H = decltype(groups)::value;
      for (; i + 16 * H <= rows; i += 16 * H) {
        int64_t kk = 0;
        for (; 2 * kk + 32 <= kc; kk += 16) {
          __m512i r[H][16];
          for (int q = 0; q < 16; ++q)
            for (int h = 0; h < H; ++h) {
              const int64_t even = at<Trans>(m.ld, r0 + i + 16 * h, k0 + 2 * (kk + q));
              r[h][q] = pair_words16(bf16_words16<T>(m.data, even, scale), bf16_words16<T>(m.data, even + m.ld, scale));
            }
          for (int h = 0; h < H; ++h) {
            transpose16(r[h]);  // r[h][j]: row i + 16 h + j, pairs kk..kk+15
            for (int j = 0; j < 16; ++j) _mm512_storeu_si512(dst + (i + 16 * h + j) * KP_BF16 + kk, r[h][j]);
          }
        }
        for (int j = 0; j < 16 * H; ++j)
          for (int64_t k = 2 * kk; k < kc; k += 2)
            dst[(i + j) * KP_BF16 + k / 2] = pair_at<T, Trans>(m, r0 + i + j, k0, k, kc, scale);
      }
    };
    rows_in_groups(std::integral_constant<int, 2>{});
    rows_in_groups(std::integral_constant<int, 1>{});
  } else {
    for (; i < rows; ++i) {
      const int64_t base = at<Trans>(m.ld, r0 + i, k0);
      Pair* out = dst + i * KP_BF16;
      int64_t k = 0;
      for (; k + 32 <= kc; k += 32) _mm512_storeu_si512(out + k / 2, pairs32<T>(m.data, base + k, scale));
      for (; k < kc; k += 2)
        out[k / 2] = pair_at<T, Trans>(m, r0 + i, k0, k, kc, scale);
    }
  }
  for (; i < rows; ++i)
    for (int64_t k = 0; k < kc; k += 2)
      dst[i * KP_BF16 + k / 2] = pair_at<T, Trans>(m, r0 + i, k0, k, kc, scale);
}

// Columns [c0, c0 + cols) x k [k0, k0 + kc) into NR-column panels of pairs.
template <DType T, bool Trans>
void pack_b_bf16(const MatrixRef& m, int64_t c0, int64_t cols, int64_t k0, int64_t kc, Pair* dst) {
  const int64_t kp = (kc + 1) / 2;
  int64_t whole = 0;  // columns packed by the wide walk below
  if constexpr (Trans) {
    // Whole panels, up to 4 in one walk down K: each stored row is another page, and reading 4
    // panels' columns of it per visit beats one panel's (dA's x^T: 24 -> 27 GB/s)
    while (whole + NR <= cols) {
      const int64_t groups = min64(4, (cols - whole) / NR) * (NR / 16);
      for (int64_t kk = 0; kk < kp; ++kk)
        for (int64_t q = 0; q < groups; ++q) {
          const int64_t col = whole + 16 * q;
          __m512i w = bf16_words16<T>(m.data, at<Trans>(m.ld, c0 + col, k0 + 2 * kk), 1.0f);
          if (2 * kk + 1 < kc)
            w = pair_words16(w, bf16_words16<T>(m.data, at<Trans>(m.ld, c0 + col, k0 + 2 * kk + 1), 1.0f));
          _mm512_storeu_si512(dst + (col / NR) * kp * NR + kk * NR + col % NR, w);
        }
      whole += groups * 16;
    }
  }
  for (int64_t p = whole; p < cols; p += NR) {
    const int64_t pc = min64(NR, cols - p);
    Pair* panel = dst + (p / NR) * kp * NR;
    int64_t j = 0;
    if constexpr (Trans) {  // stored [K, N]: a pair joins two stored rows, 16 columns at a time
      // (the last panel, part empty) k pairs outermost, so that a stored row's NR columns (a
      // cache line of bf16) are all used while the line is in L1
      const int64_t groups = pc / 16;
      for (int64_t kk = 0; kk < kp; ++kk)
        for (int64_t q = 0; q < groups; ++q) {
          const int64_t jq = 16 * q;
          __m512i w = bf16_words16<T>(m.data, at<Trans>(m.ld, c0 + p + jq, k0 + 2 * kk), 1.0f);
          if (2 * kk + 1 < kc)
            w = pair_words16(w, bf16_words16<T>(m.data, at<Trans>(m.ld, c0 + p + jq, k0 + 2 * kk + 1), 1.0f));
          _mm512_storeu_si512(panel + kk * NR + jq, w);
        }
      j = groups * 16;
    } else {  // each column's k contiguous: 16 columns x 16 pairs through a transpose
      for (; j + 16 <= pc; j += 16) {
        int64_t kk = 0;
        for (; 2 * kk + 32 <= kc; kk += 16) {
          __m512i r[16];
          for (int q = 0; q < 16; ++q) r[q] = pairs32<T>(m.data, at<Trans>(m.ld, c0 + p + j + q, k0 + 2 * kk), 1.0f);
          transpose16(r);  // r[q]: pair kk + q of the 16 columns
          for (int q = 0; q < 16; ++q) _mm512_storeu_si512(panel + (kk + q) * NR + j, r[q]);
        }
        for (; kk < kp; ++kk)
          for (int q = 0; q < 16; ++q)
            panel[kk * NR + j + q] = pair_at<T, Trans>(m, c0 + p + j + q, k0, 2 * kk, kc, 1.0f);
      }
    }
    for (; j < NR; ++j)
      for (int64_t kk = 0; kk < kp; ++kk)
        panel[kk * NR + j] = j < pc ? pair_at<T, Trans>(m, c0 + p + j, k0, 2 * kk, kc, 1.0f)
                                    : 0;
  }
}
#endif

// An operand's dtype and layout as a type, so one generic lambda reaches every packer instance.
template <DType T, bool Trans>
struct Layout {
  static constexpr DType dtype = T;
  static constexpr bool trans = Trans;
};
template <typename Fn>
void with_layout(const MatrixRef& m, Fn&& fn) {
  if (m.dtype == DType::f32) {
    if (m.trans) fn(Layout<DType::f32, true>{});
    else fn(Layout<DType::f32, false>{});
  } else {
    if (m.trans) fn(Layout<DType::bf16, true>{});
    else fn(Layout<DType::bf16, false>{});
  }
}

// ---- micro-kernels: C[MR, NR] (+)= sum_k A(i, k) B(k, j), the whole tile in registers.
// Partial tiles at the edges go through a local buffer, so no write leaves C's bounds.
inline void store_tile(const float* tile, float* c, int64_t ldc, bool accumulate, int64_t mr, int64_t nr) {
  for (int64_t i = 0; i < mr; ++i)
    for (int64_t j = 0; j < nr; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
}

#if defined(__AVX2__)
static_assert(NR == 2 * VL, "the micro-kernel holds two vectors per row");

// The tile is R <= MR rows of V (2, or 1 for a tile of at most VL columns) vectors, held in named
// variables c<i>0, c<i>1 (an array of vectors would be kept in memory by GCC inside the k loop).
// ERNIE_ROWS(X) expands X(i) per row; rows i >= R compile to nothing, so a short last row panel
// costs only its own rows, and a narrow tile (LoRA's rank-16 products) only its own columns.
#define ERNIE_DECL_ROW(i) [[maybe_unused]] Vec c##i##0 = vzero(), c##i##1 = vzero();
// The tile of C is read (when accumulating) and written only after the k loop: ask for its
// lines now, so they arrive while the loop runs instead of stalling the stores.
#define ERNIE_PREFETCH_ROW(i)                                                           \
  if constexpr ((i) < R) {                                                              \
    _mm_prefetch(reinterpret_cast<const char*>(c + (i) * ldc), _MM_HINT_T0);            \
    if constexpr (V == 2) _mm_prefetch(reinterpret_cast<const char*>(c + (i) * ldc + NR - 1), _MM_HINT_T0); \
  }
#define ERNIE_SPILL_ROW(i)                                                         \
  if constexpr ((i) < R) {                                                         \
    vstore(tile + (i) * NR, c##i##0);                                              \
    if constexpr (V == 2) vstore(tile + (i) * NR + VL, c##i##1);                   \
  }
#define ERNIE_STORE_ROW(i)                                                         \
  if constexpr ((i) < R) {                                                         \
    float* dst = c + (i) * ldc;                                                    \
    vstore(dst, accumulate ? vadd(vload(dst), c##i##0) : c##i##0);                 \
    if constexpr (V == 2) vstore(dst + VL, accumulate ? vadd(vload(dst + VL), c##i##1) : c##i##1); \
  }
// Writes the tile: straight into C when it has all NR columns, else through a buffer, so no
// write leaves C.
#define ERNIE_WRITE_TILE()                                                         \
  if (nr == V * VL) {                                                              \
    ERNIE_ROWS(ERNIE_STORE_ROW)                                                    \
  } else {                                                                         \
    alignas(64) float tile[MR * NR];                                               \
    ERNIE_ROWS(ERNIE_SPILL_ROW)                                                    \
    store_tile(tile, c, ldc, accumulate, R, nr);                                   \
  }

// A(i, k) is a[i * KC_F32 + k]: a constant offset from the moving pointer, no address arithmetic.
#define ERNIE_FMA_ROW(i)                                                           \
  if constexpr ((i) < R) {                                                         \
    const Vec av = vbroadcast(a + (i) * KC_F32);                                   \
    c##i##0 = vfma(av, b0, c##i##0);                                               \
    if constexpr (V == 2) c##i##1 = vfma(av, b1, c##i##1);                         \
  }
// A tile summed over the pieces: piece q's A panel at pa[q] (KC_F32 floats a row), its B panel
// at pb[q], kc[q] k each.
template <int R, int V>
void micro_f32(int count, const float* const* pa, const float* const* pb, const int64_t* kcs, float* c, int64_t ldc,
               bool accumulate, int64_t nr) {
  ERNIE_ROWS(ERNIE_PREFETCH_ROW)
  ERNIE_ROWS(ERNIE_DECL_ROW)
  for (int q = 0; q < count; ++q) {
    const float* a = pa[q];
    const float* b = pb[q];
    for (int64_t k = 0; k < kcs[q]; ++k, ++a, b += NR) {
      const Vec b0 = vload(b), b1 = V == 2 ? vload(b + VL) : vzero();
      ERNIE_ROWS(ERNIE_FMA_ROW)
    }
  }
  ERNIE_WRITE_TILE()
}
#undef ERNIE_FMA_ROW

#if defined(ERNIE_GEMM_BF16_PAIRS)
// One k pair per step: vdpbf16ps adds a[2k]*b[2k] + a[2k+1]*b[2k+1] into each f32 lane.
#define ERNIE_DOT_ROW(i)                                                                  \
  if constexpr ((i) < R) {                                                                \
    const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(a[(i) * KP_BF16]));  \
    c##i##0 = _mm512_dpbf16_ps(c##i##0, av, b0);                                          \
    if constexpr (V == 2) c##i##1 = _mm512_dpbf16_ps(c##i##1, av, b1);                    \
  }
// A tile summed over the pieces: piece q's A panel at pa[q] (KC_BF16 / 2 pairs a row), its B
// panel at pb[q], kps[q] k pairs each.
template <int R, int V>
void micro_bf16(int count, const Pair* const* pa, const Pair* const* pb, const int64_t* kps, float* c, int64_t ldc,
                bool accumulate, int64_t nr) {
  ERNIE_ROWS(ERNIE_PREFETCH_ROW)
  ERNIE_ROWS(ERNIE_DECL_ROW)
  for (int q = 0; q < count; ++q) {
    const Pair* a = pa[q];
    const Pair* b = pb[q];
    for (int64_t kk = 0; kk < kps[q]; ++kk, ++a, b += NR) {
      const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b);
      const __m512bh b1 = V == 2 ? (__m512bh)_mm512_loadu_si512(b + VL) : b0;
      ERNIE_ROWS(ERNIE_DOT_ROW)
    }
  }
  ERNIE_WRITE_TILE()
}
#undef ERNIE_DOT_ROW
#endif

#else  // generic
template <int R, int V>
void micro_f32(int count, const float* const* pa, const float* const* pb, const int64_t* kcs, float* c, int64_t ldc,
               bool accumulate, int64_t nr) {
  float acc[MR][NR] = {};
  for (int q = 0; q < count; ++q)
    for (int64_t k = 0; k < kcs[q]; ++k)
      for (int i = 0; i < R; ++i) {
        const float av = pa[q][i * KC_F32 + k];
        for (int j = 0; j < NR; ++j) acc[i][j] += av * pb[q][k * NR + j];
      }
  store_tile(&acc[0][0], c, ldc, accumulate, R, nr);
}
#endif

// Calls kernel(Rows<rows>{}) for `rows` in 1..MR: the full tile, or one made for a short panel.
template <int R>
struct Rows {
  static constexpr int value = R;
};
#define ERNIE_MICRO_CASE(i)                \
  case (i) + 1:                            \
    if constexpr ((i) + 1 <= MR) {         \
      kernel(Rows<(i) + 1>{});             \
      return;                              \
    }                                      \
    break;
template <typename Kernel>
void with_rows(int64_t rows, Kernel&& kernel) {
  switch (rows) { ERNIE_ALL_ROWS(ERNIE_MICRO_CASE) }
}
#undef ERNIE_MICRO_CASE

}  // namespace

GemmBlocking gemm_blocking(GemmFormat f) {
#if defined(ERNIE_GEMM_BF16_PAIRS)
  if (f == GemmFormat::bf16) return GemmBlocking{MR, NR, KC_BF16, MC, 2, 2};
#endif
  (void)f;
  return GemmBlocking{MR, NR, KC_F32, MC, 1, 4};
}

void gemm_pack_a(GemmFormat f, const MatrixRef& a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float alpha,
                 void* dst) {
#if defined(ERNIE_GEMM_BF16_PAIRS)
  if (f == GemmFormat::bf16) {
    with_layout(a, [&](auto l) { pack_a_bf16<decltype(l)::dtype, decltype(l)::trans>(a, m0, mc, k0, kc, alpha, static_cast<Pair*>(dst)); });
    return;
  }
#endif
  const bool round = f == GemmFormat::f32_bf16;
  with_layout(a, [&](auto l) { pack_a_f32<decltype(l)::dtype, decltype(l)::trans>(a, m0, mc, k0, kc, alpha, round, static_cast<float*>(dst)); });
}

void gemm_pack_b(GemmFormat f, const MatrixRef& b, int64_t n0, int64_t nc, int64_t k0, int64_t kc, void* dst) {
#if defined(ERNIE_GEMM_BF16_PAIRS)
  if (f == GemmFormat::bf16) {
    with_layout(b, [&](auto l) { pack_b_bf16<decltype(l)::dtype, decltype(l)::trans>(b, n0, nc, k0, kc, static_cast<Pair*>(dst)); });
    return;
  }
#endif
  const bool round = f == GemmFormat::f32_bf16;
  with_layout(b, [&](auto l) { pack_b_f32<decltype(l)::dtype, decltype(l)::trans>(b, n0, nc, k0, kc, round, static_cast<float*>(dst)); });
}

void gemm_macro(GemmFormat f, int64_t mc, int64_t nc, const GemmPiece* pieces, int count, float* c, int64_t ldc,
                bool accumulate) {
  int64_t ks[kGemmMaxPieces];
  for (int q = 0; q < count; ++q) ks[q] = f == GemmFormat::bf16 ? (pieces[q].kc + 1) / 2 : pieces[q].kc;
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int64_t nr = min64(NR, nc - jr);
    // Row panels of equal size, at most MR each (16 rows: 8 + 8, not 14 + a slow 2)
    const int64_t panels = (mc + MR - 1) / MR;
    for (int64_t pi = 0, ir = 0, rows; pi < panels; ++pi, ir += rows) {
      rows = (mc - ir + (panels - pi) - 1) / (panels - pi);
      float* ct = c + ir * ldc + jr;
#if defined(ERNIE_GEMM_BF16_PAIRS)
      if (f == GemmFormat::bf16) {
        const Pair* a[kGemmMaxPieces];
        const Pair* b[kGemmMaxPieces];
        for (int q = 0; q < count; ++q) {
          a[q] = static_cast<const Pair*>(pieces[q].a) + ir * (KC_BF16 / 2);
          b[q] = static_cast<const Pair*>(pieces[q].b) + (jr / NR) * pieces[q].b_panel;
        }
        if (nr > NR / 2)
          with_rows(rows, [&](auto r) { micro_bf16<decltype(r)::value, 2>(count, a, b, ks, ct, ldc, accumulate, nr); });
        else
          with_rows(rows, [&](auto r) { micro_bf16<decltype(r)::value, 1>(count, a, b, ks, ct, ldc, accumulate, nr); });
        continue;
      }
#endif
      const float* a[kGemmMaxPieces];
      const float* b[kGemmMaxPieces];
      for (int q = 0; q < count; ++q) {
        a[q] = static_cast<const float*>(pieces[q].a) + ir * KC_F32;
        b[q] = static_cast<const float*>(pieces[q].b) + (jr / NR) * pieces[q].b_panel;
      }
      if (nr > NR / 2)
        with_rows(rows, [&](auto r) { micro_f32<decltype(r)::value, 2>(count, a, b, ks, ct, ldc, accumulate, nr); });
      else
        with_rows(rows, [&](auto r) { micro_f32<decltype(r)::value, 1>(count, a, b, ks, ct, ldc, accumulate, nr); });
    }
  }
}

}  // namespace ernie::cpu::ERNIE_ISA_NS
