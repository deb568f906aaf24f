// The per-ISA half of the fused attention: tile products, the online softmax and the
// backward's recomputed probabilities. Compiled once per ISA (see cpu/dispatch.h).
//
// Every matrix product here is one routine, block_product: C[M, N] (+)= A . B with B packed in
// NR-column panels (contiguous, so a panel stays in L1 while the MR-row micro-tiles of A stream
// past it) and A read in place, row-major or transposed. The products and their operands:
//   forward   S^T = K . Q^T      A = K rows               B = Q^T panels (scaled, once per item)
//             O  += P . V        A = (S^T)^T              B = V panels (packed once per call)
//   backward  S   = Q . K^T      A = Q rows               B = K^T panels  } packed once per call
//             dP  = dO . V^T     A = dO rows              B = V^T panels  }
//             dV += P^T . dO     A = P^T                  B = dO panels   } per query tile
//             dK += dS^T . Q     A = dS^T                 B = Q panels    }
//             dQ  = dS . K       A = dS rows              B = K panels (packed once per call)
// Tiles are multiples of both MR and NR, because one product's rows are another's columns;
// scratch rows and columns past the data are computed on padding and never read back.
#include <cmath>

#include "cpu/attention.h"
#include "cpu/kernels/bf16.h"
#include "cpu/kernels/transpose.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif
#if defined(__AVX512F__) && defined(__GNUC__) && !defined(__clang__)
// GCC 12's AVX-512 headers pass _mm512_undefined_ps() through masked builtins, which
// -Wmaybe-uninitialized reports at every inlined use (GCC PR 105593): a false positive.
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace ernie::cpu::ERNIE_ISA_NS {
namespace {

#if defined(__AVX512F__)
// Measured on Zen 4 at D = 128: 8 x 32 micro-tiles allow 64-row tiles (a multiple of both),
// which waste less of the causal diagonal than 96 (12 x 32): at T = 128 (training batches) the
// forward 1.2-1.35x, the backward 1.0-1.1x; at T = 2048 the same or better.
constexpr int MR = 8, NR = 32;
constexpr int FWD_BQ = 64, FWD_BK = 64, BWD_BQ = 64, BWD_BK = 64;
#define ERNIE_ATTN_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7)
#elif defined(__AVX2__)
constexpr int MR = 6, NR = 16;
// Measured on Zen 3 at D = 128: 48-row query tiles waste less of the causal diagonal than 96;
// the backward's ~10 live tiles of [48, D] fit a 512 KiB L2.
constexpr int FWD_BQ = 48, FWD_BK = 96, BWD_BQ = 48, BWD_BK = 48;
#define ERNIE_ATTN_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
#else
constexpr int MR = 4, NR = 16;
constexpr int FWD_BQ = 64, FWD_BK = 64, BWD_BQ = 64, BWD_BK = 64;
#endif
static_assert(FWD_BQ % MR == 0 && FWD_BQ % NR == 0 && FWD_BK % MR == 0 && FWD_BK % NR == 0, "tile sizes");
static_assert(BWD_BQ % MR == 0 && BWD_BQ % NR == 0 && BWD_BK % MR == 0 && BWD_BK % NR == 0, "tile sizes");

constexpr float LOG2E = 1.44269504088896340736f;
constexpr float LN2 = 0.693147180559945309417f;

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
// Columns of a score tile that `rows` rows of its transpose need: whole MR rows, whole NR panels.
inline int64_t padded_cols(int64_t rows) { return round_up(round_up(rows, MR), NR); }

// Whether this call's products take bf16-rounded operands (backend/ops.h, AttentionArgs).
inline bool rounds_bf16(const AttentionArgs& g) { return g.precision == Precision::bf16; }
inline float maybe_round(float x, bool round) { return round ? round_bf16(x) : x; }

// ---- vector helpers -------------------------------------------------------------------------
#if defined(__AVX512F__) || defined(__AVX2__)
#if defined(__AVX512F__)
using Vec = __m512;
constexpr int VL = 16;
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vset1(float x) { return _mm512_set1_ps(x); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec vsub(Vec a, Vec b) { return _mm512_sub_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm512_mul_ps(a, b); }
inline Vec vmax(Vec a, Vec b) { return _mm512_max_ps(a, b); }
inline Vec vmin(Vec a, Vec b) { return _mm512_min_ps(a, b); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
inline Vec vfms(Vec a, Vec b, Vec c) { return _mm512_fmsub_ps(a, b, c); }
inline Vec vround(Vec x) { return _mm512_roundscale_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Vec vpow2i(Vec n) {  // 2^n for integral n in [-127, 127] (2^-127 flushes to 0)
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
inline Vec vzero_where_below(Vec x, float limit, Vec r) {
  return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, vset1(limit), _CMP_LT_OQ), vzero());
}
inline Vec vreplace_neg_inf(Vec x, float replacement) {
  return _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, vset1(-INFINITY), _CMP_EQ_OQ), vset1(replacement));
}
inline float vsum(Vec v) { return _mm512_reduce_add_ps(v); }
#else
using Vec = __m256;
constexpr int VL = 8;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vset1(float x) { return _mm256_set1_ps(x); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec vsub(Vec a, Vec b) { return _mm256_sub_ps(a, b); }
inline Vec vmul(Vec a, Vec b) { return _mm256_mul_ps(a, b); }
inline Vec vmax(Vec a, Vec b) { return _mm256_max_ps(a, b); }
inline Vec vmin(Vec a, Vec b) { return _mm256_min_ps(a, b); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
inline Vec vfms(Vec a, Vec b, Vec c) { return _mm256_fmsub_ps(a, b, c); }
inline Vec vround(Vec x) { return _mm256_round_ps(x, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
inline Vec vpow2i(Vec n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
inline Vec vzero_where_below(Vec x, float limit, Vec r) {
  return _mm256_andnot_ps(_mm256_cmp_ps(x, vset1(limit), _CMP_LT_OQ), r);
}
inline Vec vreplace_neg_inf(Vec x, float replacement) {
  return _mm256_blendv_ps(x, vset1(replacement), _mm256_cmp_ps(x, vset1(-INFINITY), _CMP_EQ_OQ));
}
inline float vsum(Vec v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}
#endif

// 2^x: x = n + f with n integral and |f| <= 1/2; 2^f from its Taylor series to degree 7
// (relative error ~5e-9, below f32's rounding). Exactly 0 below 2^-126, -inf included, so
// masked scores contribute nothing.
inline Vec vexp2(Vec x) {
  const Vec xc = vmin(vmax(x, vset1(-127.0f)), vset1(127.0f));
  const Vec n = vround(xc);
  const Vec f = vsub(xc, n);
  Vec p = vset1(1.5252733804059840e-5f);
  p = vfma(p, f, vset1(1.5403530393381608e-4f));
  p = vfma(p, f, vset1(1.3333558146428443e-3f));
  p = vfma(p, f, vset1(9.6181291076284772e-3f));
  p = vfma(p, f, vset1(5.5504108664821580e-2f));
  p = vfma(p, f, vset1(2.4022650695910071e-1f));
  p = vfma(p, f, vset1(6.9314718055994531e-1f));
  p = vfma(p, f, vset1(1.0f));
  return vzero_where_below(x, -126.0f, vmul(p, vpow2i(n)));
}
inline Vec vmaybe_round(Vec v, bool round) { return round ? vround_bf16(v) : v; }
#endif

// ---- the tile product -----------------------------------------------------------------------
// One MR x NR tile: C = (accumulate ? row_scale[i] * C : 0) + sum_k A(i, k) B[k][:].
// A(i, k) = ATrans ? a[k * lda + i] : a[i * lda + k]. Non-transposed A is caller memory: rows at
// or past rows_valid read row 0 instead (their results land in padding). Transposed A is
// scratch with at least MR readable columns. row_scale may be null (scale 1).
#if defined(__AVX512F__) || defined(__AVX2__)
static_assert(NR == 2 * VL, "the micro-tile holds two vectors per row");

#define ERNIE_ATTN_DECL(i) Vec c##i##0 = vzero(), c##i##1 = vzero();
#define ERNIE_ATTN_ROWPTR(i) const float* a##i = a + ((i) < rows_valid ? int64_t(i) * lda : 0);
#define ERNIE_ATTN_FMA_ROWS(i)                                                     \
  {                                                                                \
    const Vec av = vbroadcast(a##i + k);                                           \
    c##i##0 = vfma(av, b0, c##i##0);                                               \
    c##i##1 = vfma(av, b1, c##i##1);                                               \
  }
#define ERNIE_ATTN_FMA_TRANS(i)                                                    \
  {                                                                                \
    const Vec av = vbroadcast(ak + (i));                                           \
    c##i##0 = vfma(av, b0, c##i##0);                                               \
    c##i##1 = vfma(av, b1, c##i##1);                                               \
  }
#define ERNIE_ATTN_STORE(i)                                                        \
  {                                                                                \
    float* dst = c + (i) * ldc;                                                    \
    if (accumulate) {                                                              \
      const Vec s = row_scale ? vset1(row_scale[i]) : vset1(1.0f);                 \
      c##i##0 = vfma(s, vload(dst), c##i##0);                                      \
      c##i##1 = vfma(s, vload(dst + VL), c##i##1);                                 \
    }                                                                              \
    vstore(dst, c##i##0);                                                          \
    vstore(dst + VL, c##i##1);                                                     \
  }

template <bool ATrans>
inline void micro_tile(int64_t K, const float* a, int64_t lda, int64_t rows_valid, const float* b, float* c,
                       int64_t ldc, bool accumulate, const float* row_scale) {
  ERNIE_ATTN_ROWS(ERNIE_ATTN_DECL)
  if constexpr (ATrans) {
    for (int64_t k = 0; k < K; ++k) {
      const Vec b0 = vload(b + k * NR), b1 = vload(b + k * NR + VL);
      const float* ak = a + k * lda;
      ERNIE_ATTN_ROWS(ERNIE_ATTN_FMA_TRANS)
    }
  } else {
    ERNIE_ATTN_ROWS(ERNIE_ATTN_ROWPTR)
    for (int64_t k = 0; k < K; ++k) {
      const Vec b0 = vload(b + k * NR), b1 = vload(b + k * NR + VL);
      ERNIE_ATTN_ROWS(ERNIE_ATTN_FMA_ROWS)
    }
  }
  ERNIE_ATTN_ROWS(ERNIE_ATTN_STORE)
}
#else  // generic: plain loops the compiler vectorises
template <bool ATrans>
inline void micro_tile(int64_t K, const float* a, int64_t lda, int64_t rows_valid, const float* b, float* c,
                       int64_t ldc, bool accumulate, const float* row_scale) {
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < K; ++k)
    for (int i = 0; i < MR; ++i) {
      const float av = ATrans ? a[k * lda + i] : a[(i < rows_valid ? i : 0) * lda + k];
      for (int j = 0; j < NR; ++j) acc[i][j] += av * b[k * NR + j];
    }
  for (int i = 0; i < MR; ++i) {
    const float s = row_scale ? row_scale[i] : 1.0f;
    for (int j = 0; j < NR; ++j) c[i * ldc + j] = accumulate ? s * c[i * ldc + j] + acc[i][j] : acc[i][j];
  }
}
#endif

// Where a product's causal mask leaves anything: only pairs (row r, x) with lo <= x - r <= hi
// can be non-zero, x being the column (axis columns) or the inner index k (axis inner).
struct Band {
  enum Axis { columns, inner } axis = inner;
  int64_t lo = -(int64_t(1) << 60), hi = int64_t(1) << 60;
};
constexpr Band kFull{};

// C[M, N] (+)= A[M, K] . B[K, N] over whole micro-tiles: N a multiple of NR; B packed as
// [N / NR][panel_rows][NR], panel_rows >= K. Non-transposed A computes only the tiles holding
// its rows_valid rows; transposed A needs M a multiple of MR and M readable columns.
// Outside the band, C tiles are skipped (left as they were: callers mask them) and k ranges
// are left out of the sums (their terms are zero).
// tile(ib, jb, k0, k1) for each micro-tile of the product the band leaves, with its k range.
// The products' lambdas are inlined by force: GCC otherwise calls them once per micro-tile,
// which cost the backward 3% at T = 128.
#define ERNIE_ATTN_INLINE __attribute__((always_inline))
template <bool ATrans, typename Tile>
inline void for_each_tile(int64_t M, int64_t N, int64_t K, int64_t rows_valid, Band band, Tile&& tile) {
  if (!ATrans) M = min64(M, round_up(rows_valid, MR));
  for (int64_t jb = 0; jb < N; jb += NR)
    for (int64_t ib = 0; ib < M; ib += MR) {
      int64_t k0 = 0, k1 = K;
      if (band.axis == Band::columns) {
        if (jb + NR - 1 - ib < band.lo || jb - (ib + MR - 1) > band.hi) continue;
      } else {
        k0 = max64(0, ib + band.lo);
        k1 = max64(k0, min64(K, ib + MR + band.hi));
      }
      tile(ib, jb, k0, k1);
    }
}

template <bool ATrans>
void block_product(int64_t M, int64_t N, int64_t K, const float* a, int64_t lda, int64_t rows_valid, const float* bp,
                   int64_t panel_rows, float* c, int64_t ldc, bool accumulate, const float* row_scale,
                   Band band = kFull) {
  for_each_tile<ATrans>(M, N, K, rows_valid, band, [&](int64_t ib, int64_t jb, int64_t k0, int64_t k1) ERNIE_ATTN_INLINE {
    const float* ai = ATrans ? a + ib + k0 * lda : a + ib * lda + k0;
    micro_tile<ATrans>(k1 - k0, ai, lda, rows_valid - ib, bp + ((jb / NR) * panel_rows + k0) * NR, c + ib * ldc + jb,
                       ldc, accumulate, row_scale ? row_scale + ib : nullptr);
  });
}

// ---- bf16 pairs (AVX512_BF16) ----------------------------------------------------------------
// At bf16 this ISA multiplies with vdpbf16ps: each 32-bit word holds two bf16, the even k in the
// low half, and a step of the micro-tile consumes one k pair. The products keep the f32 path's
// shapes, tiles and bands; only the operands' storage differs:
//   B panels     [N / NR][pairs][NR] words: word (p, n) = (B(2p, n), B(2p + 1, n)).
//   A rows       bf16 rows, in place: a row's consecutive k are already pairs.
//   transposed A [pairs][M] words (width M): word (p, i) = (A(i, 2p), A(i, 2p + 1)).
// A k range of a band is widened to whole pairs; the terms it adds are zero (masked scores,
// zero-padded rows). Pairs need an even head dim; at an odd one the rounded values go through the
// f32 kernels, as on the ISAs without a bf16 dot product.
#if defined(__AVX512BF16__)
inline bool native_pairs(const AttentionArgs& g) { return rounds_bf16(g) && g.head_dim % 2 == 0; }

inline uint32_t pair_of(float even, float odd) { return uint32_t(f32_to_bf16(even)) | uint32_t(f32_to_bf16(odd)) << 16; }
inline uint16_t bf16_of(float x) { return f32_to_bf16(x); }
inline uint16_t bf16_of(uint16_t x) { return x; }
// 16 consecutive values as bf16 in the low halves of 16 words.
inline __m512i low_halves16(const float* p) {
  return _mm512_cvtepu16_epi32(_mm512_castsi512_si256((__m512i)_mm512_cvtne2ps_pbh(_mm512_setzero_ps(), _mm512_loadu_ps(p))));
}
inline __m512i low_halves16(const uint16_t* p) {
  return _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

// n values as bf16.
void to_bf16(const float* src, int64_t n, uint16_t* dst) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    _mm512_storeu_si512(dst + i, (__m512i)_mm512_cvtne2ps_pbh(_mm512_loadu_ps(src + i + 16), _mm512_loadu_ps(src + i)));
  for (; i < n; ++i) dst[i] = f32_to_bf16(src[i]);
}

// B panels of the transpose of src's rows times mul, as pairs: word (p, n) = mul * (src[n][2p],
// src[n][2p + 1]) for n < rows, 2p < K (K even); columns [rows, cols) zero. dst is
// [cols / NR][K / 2][NR].
void pack_pairs_transposed(const float* src, int64_t ld, int64_t rows, int64_t cols, int64_t K, float mul, uint32_t* dst) {
  const int64_t P = K / 2;
  const __m512 vm = _mm512_set1_ps(mul);
  int64_t n = 0;
  for (; n + 16 <= rows; n += 16) {  // 16 rows x 16 pairs through a register transpose
    uint32_t* panel = dst + (n / NR) * P * NR + n % NR;
    int64_t p = 0;
    for (; p + 16 <= P; p += 16) {
      __m512i v[16];
      for (int j = 0; j < 16; ++j) {
        const float* r = src + (n + j) * ld + 2 * p;
        v[j] = (__m512i)_mm512_cvtne2ps_pbh(_mm512_mul_ps(_mm512_loadu_ps(r + 16), vm), _mm512_mul_ps(_mm512_loadu_ps(r), vm));
      }
      transpose16(v);
      for (int j = 0; j < 16; ++j) _mm512_storeu_si512(panel + (p + j) * NR, v[j]);
    }
    for (; p < P; ++p)
      for (int j = 0; j < 16; ++j)
        panel[p * NR + j] = pair_of(mul * src[(n + j) * ld + 2 * p], mul * src[(n + j) * ld + 2 * p + 1]);
  }
  for (; n < cols; ++n) {
    uint32_t* col = dst + (n / NR) * P * NR + n % NR;
    const float* r = src + n * ld;
    for (int64_t p = 0; p < P; ++p) col[p * NR] = n < rows ? pair_of(mul * r[2 * p], mul * r[2 * p + 1]) : 0u;
  }
}

// Pairs down src's rows: word (p, n) = (src[2p][n], src[2p + 1][n]) for p < ceil(K / 2), n < N,
// a row 2p + 1 = K zero; in panels of `width` columns (a multiple of 16), dst[(n / width) *
// panel_pairs * width + p * width + n % width]. Columns [N, round_up(N, width)) zero. B panels
// have width NR; a transposed A is one panel as wide as its rows.
template <typename T>  // float, or uint16_t (bf16 already)
void pack_pairs_down(const T* src, int64_t ld, int64_t K, int64_t N, int64_t width, int64_t panel_pairs, uint32_t* dst) {
  const int64_t cols = round_up(N, width);
  for (int64_t p = 0; p < (K + 1) / 2; ++p) {
    const T* even = src + 2 * p * ld;
    const T* odd = 2 * p + 1 < K ? even + ld : nullptr;
    int64_t n = 0;
    for (; n + 16 <= N; n += 16) {
      const __m512i lo = low_halves16(even + n);
      const __m512i hi = odd ? _mm512_slli_epi32(low_halves16(odd + n), 16) : _mm512_setzero_si512();
      _mm512_storeu_si512(dst + (n / width) * panel_pairs * width + p * width + n % width, _mm512_or_si512(lo, hi));
    }
    for (; n < cols; ++n) {
      uint32_t w = 0;
      if (n < N) w = uint32_t(bf16_of(even[n])) | (odd ? uint32_t(bf16_of(odd[n])) << 16 : 0u);
      dst[(n / width) * panel_pairs * width + p * width + n % width] = w;
    }
  }
}

#define ERNIE_ATTN_PAIR_ROWPTR(i) const uint32_t* a##i = a + ((i) < rows_valid ? int64_t(i) * lda : 0);
#define ERNIE_ATTN_DP(i, word)                                                     \
  {                                                                                \
    const __m512bh av = (__m512bh)_mm512_set1_epi32(int(word));                     \
    c##i##0 = _mm512_dpbf16_ps(c##i##0, av, b0);                                   \
    c##i##1 = _mm512_dpbf16_ps(c##i##1, av, b1);                                   \
  }
#define ERNIE_ATTN_DP_ROWS(i) ERNIE_ATTN_DP(i, a##i[p])
#define ERNIE_ATTN_DP_TRANS(i) ERNIE_ATTN_DP(i, ap[i])

// micro_tile on pairs: P k pairs; a and lda in words (A rows: bf16 rows seen as words).
template <bool ATrans>
inline void micro_tile_pairs(int64_t P, const uint32_t* a, int64_t lda, int64_t rows_valid, const uint32_t* b,
                             float* c, int64_t ldc, bool accumulate, const float* row_scale) {
  ERNIE_ATTN_ROWS(ERNIE_ATTN_DECL)
  if constexpr (ATrans) {
    for (int64_t p = 0; p < P; ++p) {
      const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + p * NR), b1 = (__m512bh)_mm512_loadu_si512(b + p * NR + 16);
      const uint32_t* ap = a + p * lda;
      ERNIE_ATTN_ROWS(ERNIE_ATTN_DP_TRANS)
    }
  } else {
    ERNIE_ATTN_ROWS(ERNIE_ATTN_PAIR_ROWPTR)
    for (int64_t p = 0; p < P; ++p) {
      const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + p * NR), b1 = (__m512bh)_mm512_loadu_si512(b + p * NR + 16);
      ERNIE_ATTN_ROWS(ERNIE_ATTN_DP_ROWS)
    }
  }
  ERNIE_ATTN_ROWS(ERNIE_ATTN_STORE)
}

// block_product on pairs: K still counts k values (the band's units); lda and panel_pairs in
// words and pairs.
template <bool ATrans>
void block_product_pairs(int64_t M, int64_t N, int64_t K, const uint32_t* a, int64_t lda, int64_t rows_valid,
                         const uint32_t* bp, int64_t panel_pairs, float* c, int64_t ldc, bool accumulate,
                         const float* row_scale, Band band = kFull) {
  for_each_tile<ATrans>(M, N, K, rows_valid, band, [&](int64_t ib, int64_t jb, int64_t k0, int64_t k1) ERNIE_ATTN_INLINE {
    const int64_t p0 = k0 / 2, p1 = (k1 + 1) / 2;
    const uint32_t* ai = ATrans ? a + ib + p0 * lda : a + ib * lda + p0;
    micro_tile_pairs<ATrans>(p1 - p0, ai, lda, rows_valid - ib, bp + ((jb / NR) * panel_pairs + p0) * NR,
                             c + ib * ldc + jb, ldc, accumulate, row_scale ? row_scale + ib : nullptr);
  });
}
#else
inline bool native_pairs(const AttentionArgs&) { return false; }
#endif

// B panels of the transpose of src's rows: B(k, n) = mul * src[n * ld + k] for n < rows, k < K,
// rounded to bf16 when `round`; columns [rows, cols) zero. dst is [cols / NR][K][NR].
void pack_transposed(const float* src, int64_t ld, int64_t rows, int64_t cols, int64_t K, float mul, bool round,
                     float* dst) {
  int64_t n = 0;
#if defined(__AVX512F__) || defined(__AVX2__)
  // VL rows at a time, VL k of each through a register transpose (NR is two vectors, so the
  // VL columns lie in one panel)
  const Vec vmul_by = vset1(mul);
  for (; n + VL <= rows; n += VL) {
    float* panel = dst + (n / NR) * K * NR + n % NR;
    int64_t k = 0;
    for (; k + VL <= K; k += VL) {
      Vec v[VL];
      for (int j = 0; j < VL; ++j) v[j] = vmaybe_round(vmul(vload(src + (n + j) * ld + k), vmul_by), round);
      transpose_f32(v);
      for (int j = 0; j < VL; ++j) vstore(panel + (k + j) * NR, v[j]);
    }
    for (; k < K; ++k)
      for (int j = 0; j < VL; ++j) panel[k * NR + j] = maybe_round(mul * src[(n + j) * ld + k], round);
  }
#endif
  for (; n < cols; ++n) {
    float* col = dst + (n / NR) * K * NR + n % NR;
    if (n < rows) {
      const float* s = src + n * ld;
      for (int64_t k = 0; k < K; ++k) col[k * NR] = maybe_round(mul * s[k], round);
    } else {
      for (int64_t k = 0; k < K; ++k) col[k * NR] = 0.0f;
    }
  }
}

// n values from src to dst, rounded to bf16 when `round`.
void copy_values(const float* src, int64_t n, bool round, float* dst) {
  int64_t i = 0;
#if defined(__AVX512F__) || defined(__AVX2__)
  for (; i + VL <= n; i += VL) vstore(dst + i, vmaybe_round(vload(src + i), round));
#endif
  for (; i < n; ++i) dst[i] = maybe_round(src[i], round);
}

// B panels of src's rows as they are (rounded to bf16 when `round`): B(k, n) = src[k * ld + n]
// for k < K, n < N; columns up to the next multiple of NR zero. dst is
// [ceil(N / NR)][panel_rows][NR], panel_rows >= K.
void pack_rows(const float* src, int64_t ld, int64_t K, int64_t N, int64_t panel_rows, bool round, float* dst) {
  for (int64_t n0 = 0; n0 < N; n0 += NR) {
    const int64_t w = min64(NR, N - n0);
    float* panel = dst + (n0 / NR) * panel_rows * NR;
    for (int64_t k = 0; k < K; ++k) {
      float* d = panel + k * NR;
      copy_values(src + k * ld + n0, w, round, d);
      for (int64_t j = w; j < NR; ++j) d[j] = 0.0f;
    }
  }
}

void fill(float* p, int64_t n, float value) {
  for (int64_t i = 0; i < n; ++i) p[i] = value;
}

float dot(const float* a, const float* b, int64_t n) {
  int64_t i = 0;
  float s = 0.0f;
#if defined(__AVX512F__) || defined(__AVX2__)
  Vec acc0 = vzero(), acc1 = vzero();
  for (; i + 2 * VL <= n; i += 2 * VL) {
    acc0 = vfma(vload(a + i), vload(b + i), acc0);
    acc1 = vfma(vload(a + i + VL), vload(b + i + VL), acc1);
  }
  s = vsum(vadd(acc0, acc1));
#endif
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

// ---- softmax pieces -------------------------------------------------------------------------
// Online softmax over one key tile of S^T ([kb rows][cols], ld), scores in log2 units: per
// query column, m = running max, l = running sum of 2^(s - m).
// Overwrites S^T with the probabilities relative to the new max (rounded to bf16 when `round`;
// l sums them unrounded) and sets alpha = 2^(m_old - m_new), the factor the output accumulated
// so far is rescaled by. A column with no key yet keeps m = -inf and uses 0 as its reference,
// so it produces zeros rather than NaN.
void online_softmax(float* st, int64_t ld, int64_t kb, int64_t cols, bool round, float* m, float* l, float* alpha) {
#if defined(__AVX512F__) || defined(__AVX2__)
  for (int64_t i = 0; i < cols; i += VL) {
    Vec mx = vload(st + i);
    for (int64_t j = 1; j < kb; ++j) mx = vmax(mx, vload(st + j * ld + i));
    const Vec m_old = vload(m + i);
    const Vec m_new = vmax(m_old, mx);
    const Vec ref = vreplace_neg_inf(m_new, 0.0f);
    const Vec a = vexp2(vsub(m_old, ref));
    Vec sum = vzero();
    for (int64_t j = 0; j < kb; ++j) {
      const Vec p = vexp2(vsub(vload(st + j * ld + i), ref));
      vstore(st + j * ld + i, vmaybe_round(p, round));
      sum = vadd(sum, p);
    }
    vstore(l + i, vfma(vload(l + i), a, sum));
    vstore(m + i, m_new);
    vstore(alpha + i, a);
  }
#else
  for (int64_t i = 0; i < cols; ++i) {
    float mx = m[i];
    for (int64_t j = 0; j < kb; ++j) mx = st[j * ld + i] > mx ? st[j * ld + i] : mx;
    const float ref = mx == -INFINITY ? 0.0f : mx;
    const float a = exp2f(m[i] - ref);
    float sum = 0.0f;
    for (int64_t j = 0; j < kb; ++j) {
      const float p = exp2f(st[j * ld + i] - ref);
      st[j * ld + i] = maybe_round(p, round);
      sum += p;
    }
    l[i] = l[i] * a + sum;
    m[i] = mx;
    alpha[i] = a;
  }
#endif
}

// One row of the backward: p = 2^(s * c - lse2) and ds = scale * p * (dp - delta) for the
// visible keys j < visible; both 0 for j in [visible, cols). p overwrites s, ds overwrites dp,
// each rounded to bf16 when `round` (ds from the unrounded p).
void probs_and_dscores(float* s, float* dp, int64_t visible, int64_t cols, float c, float lse2, float delta,
                       float scale, bool round) {
  int64_t j = 0;
#if defined(__AVX512F__) || defined(__AVX2__)
  const Vec vc = vset1(c), vl = vset1(lse2), vd = vset1(delta), vs = vset1(scale);
  // Whole vectors up to the next multiple of VL past `visible` (within cols); the loop below
  // then zeroes what lies past it.
  for (; j < visible; j += VL) {
    const Vec p = vexp2(vfms(vload(s + j), vc, vl));
    vstore(s + j, vmaybe_round(p, round));
    vstore(dp + j, vmaybe_round(vmul(vmul(p, vs), vsub(vload(dp + j), vd)), round));
  }
  j = visible;
#else
  for (; j < visible; ++j) {
    const float p = exp2f(s[j] * c - lse2);
    s[j] = maybe_round(p, round);
    dp[j] = maybe_round(p * scale * (dp[j] - delta), round);
  }
#endif
  for (; j < cols; ++j) s[j] = dp[j] = 0.0f;
}

// Scratch layouts (floats, or 32-bit words of bf16 pairs in the same room). Forward: Q^T panels
// [BQ][D], S^T [BK][BQ], O [BQ][Dpad], m, l, alpha [BQ]; on pairs also P as a transposed A
// [BK / 2][BQ].
struct FwdScratch {
  float *qt, *st, *o, *m, *l, *alpha;
  uint32_t* pt;
  FwdScratch(void* base, int64_t D) {
    const int64_t dpad = round_up(D, NR);
    qt = static_cast<float*>(base);
    st = qt + FWD_BQ * D;
    o = st + FWD_BK * FWD_BQ;
    m = o + FWD_BQ * dpad;
    l = m + FWD_BQ;
    alpha = l + FWD_BQ;
    pt = reinterpret_cast<uint32_t*>(alpha + FWD_BQ);
  }
  static size_t floats(int64_t D) {
    const int64_t dpad = round_up(D, NR);
    return size_t(FWD_BQ * D + FWD_BK * FWD_BQ + FWD_BQ * dpad + 3 * FWD_BQ + FWD_BK / 2 * FWD_BQ);
  }
};

// Backward: dV, dK sums [BK][Dpad]; Q, dO panels [Dpad][BQ]; P, dS [BQ][BK]; dQ part [BQ][Dpad];
// on pairs also P and dS as transposed A [BQ / 2][BK] and dS as bf16 rows [BQ][BK].
struct BwdScratch {
  float *dv, *dk, *qp, *dop, *p, *ds, *dq;
  uint32_t *pt, *dst;
  uint16_t* ds16;
  BwdScratch(void* base, int64_t D) {
    const int64_t dpad = round_up(D, NR);
    dv = static_cast<float*>(base);
    dk = dv + BWD_BK * dpad;
    qp = dk + BWD_BK * dpad;
    dop = qp + dpad * BWD_BQ;
    p = dop + dpad * BWD_BQ;
    ds = p + BWD_BQ * BWD_BK;
    dq = ds + BWD_BQ * BWD_BK;
    pt = reinterpret_cast<uint32_t*>(dq + BWD_BQ * dpad);
    dst = pt + BWD_BQ / 2 * BWD_BK;
    ds16 = reinterpret_cast<uint16_t*>(dst + BWD_BQ / 2 * BWD_BK);
  }
  static size_t floats(int64_t D) {
    const int64_t dpad = round_up(D, NR);
    return size_t(2 * BWD_BK * dpad + 3 * dpad * BWD_BQ + 2 * BWD_BQ * BWD_BK + 3 * (BWD_BQ / 2 * BWD_BK));
  }
};

}  // namespace

AttentionBlocking attention_blocking() { return AttentionBlocking{FWD_BQ, FWD_BK, BWD_BQ, BWD_BK}; }

size_t attention_fwd_scratch_bytes(int64_t D) { return FwdScratch::floats(D) * sizeof(float); }
// A packed key tile: its K rows contiguous, [BK][D], then its V panels, [Dpad / NR][BK][NR]. On
// pairs the K rows are bf16 and the V panels pairs, [Dpad / NR][BK / 2][NR] words, at the same
// offsets (each in the first half of its room).
size_t attention_fwd_kv_tile_floats(int64_t D) { return size_t(FWD_BK * D + round_up(D, NR) * FWD_BK); }

void attention_fwd_pack_kv(const AttentionArgs& g, int64_t b, int64_t kvh, int64_t j0, float* dst) {
  const int64_t D = g.head_dim, KV = g.kv_heads, Tk = g.tk;
  const int64_t kb = min64(FWD_BK, Tk - j0);
  const int64_t at = ((b * Tk + j0) * KV + kvh) * D;
#if defined(__AVX512BF16__)
  if (native_pairs(g)) {
    for (int64_t j = 0; j < kb; ++j) to_bf16(g.k + at + j * KV * D, D, reinterpret_cast<uint16_t*>(dst) + j * D);
    pack_pairs_down(g.v + at, KV * D, kb, D, NR, FWD_BK / 2, reinterpret_cast<uint32_t*>(dst + FWD_BK * D));
    return;
  }
#endif
  const bool round = rounds_bf16(g);
  for (int64_t j = 0; j < kb; ++j) copy_values(g.k + at + j * KV * D, D, round, dst + j * D);
  pack_rows(g.v + at, KV * D, kb, D, FWD_BK, round, dst + FWD_BK * D);
}
size_t attention_bwd_scratch_bytes(int64_t D) { return BwdScratch::floats(D) * sizeof(float); }

// A key tile as the backward reads it: K^T and V^T panels [padded BK / NR][D][NR], then K
// panels [Dpad / NR][kb][NR]. Every query head of the kv group and every query tile reads it.
// On pairs (E = uint32_t) the same panels hold pairs, D / 2 and ceil(kb / 2) of them.
template <typename E>  // float or uint32_t, const when reading it
struct BwdKvTile {
  E *kt, *vt, *kp;
  BwdKvTile(E* base, int64_t D, int64_t per_word)
      : kt(base), vt(kt + padded_cols(BWD_BK) * D / per_word), kp(vt + padded_cols(BWD_BK) * D / per_word) {}
};
size_t attention_bwd_kv_tile_floats(int64_t D) { return size_t(2 * padded_cols(BWD_BK) * D + round_up(D, NR) * BWD_BK); }

void attention_bwd_pack_kv(const AttentionArgs& g, int64_t b, int64_t kvh, int64_t j0, float* dst) {
  const int64_t D = g.head_dim, KV = g.kv_heads, Tk = g.tk;
  const int64_t kb = min64(BWD_BK, Tk - j0), kcols = padded_cols(kb);
  const float* k_rows = g.k + ((b * Tk + j0) * KV + kvh) * D;
  const float* v_rows = g.v + ((b * Tk + j0) * KV + kvh) * D;
#if defined(__AVX512BF16__)
  if (native_pairs(g)) {
    const BwdKvTile<uint32_t> t(reinterpret_cast<uint32_t*>(dst), D, 2);
    pack_pairs_transposed(k_rows, KV * D, kb, kcols, D, 1.0f, t.kt);
    pack_pairs_transposed(v_rows, KV * D, kb, kcols, D, 1.0f, t.vt);
    pack_pairs_down(k_rows, KV * D, kb, D, NR, (kb + 1) / 2, t.kp);
    return;
  }
#endif
  const bool round = rounds_bf16(g);
  const BwdKvTile<float> t(dst, D, 1);
  pack_transposed(k_rows, KV * D, kb, kcols, D, 1.0f, round, t.kt);
  pack_transposed(v_rows, KV * D, kb, kcols, D, 1.0f, round, t.vt);
  pack_rows(k_rows, KV * D, kb, D, kb, round, t.kp);
}

void attention_fwd_tile(const AttentionArgs& g, const float* kv_tiles, int64_t b, int64_t h, int64_t q0, void* scratch) {
  const int64_t D = g.head_dim, H = g.heads, KV = g.kv_heads, Tq = g.tq, Tk = g.tk;
  const int64_t kvh = h / (H / KV), offset = Tk - Tq, dpad = round_up(D, NR);
  const int64_t qb = min64(FWD_BQ, Tq - q0);
  const int64_t qrows = round_up(qb, MR), qcols = padded_cols(qb);
  FwdScratch w(scratch, D);
  const bool round = rounds_bf16(g), pairs = native_pairs(g);

  // Scores come out in log2 units: Q is scaled by scale * log2(e) once, here (before its rounding,
  // as a product's first operand is).
  const float* q_rows = g.q + ((b * Tq + q0) * H + h) * D;
#if defined(__AVX512BF16__)
  if (pairs) pack_pairs_transposed(q_rows, H * D, qb, qcols, D, g.scale * LOG2E, reinterpret_cast<uint32_t*>(w.qt));
#endif
  if (!pairs) pack_transposed(q_rows, H * D, qb, qcols, D, g.scale * LOG2E, round, w.qt);
  fill(w.m, qcols, -INFINITY);
  fill(w.l, qcols, 0.0f);
  fill(w.o, qrows * dpad, 0.0f);

  const int64_t tile_floats = int64_t(attention_fwd_kv_tile_floats(D));
  const float* kv_head = kv_tiles + (b * KV + kvh) * ((Tk + FWD_BK - 1) / FWD_BK) * tile_floats;
  const uint8_t* valid = g.key_valid ? g.key_valid + b * Tk : nullptr;
  const int64_t key_end = min64(Tk, q0 + qb + offset);  // the tile's last row sees keys < key_end
  // Packed documents: row i sees keys from start[i]; key tiles before every row's start are skipped.
  const int32_t* start = g.key_start ? g.key_start + b * Tq + q0 : nullptr;
  int64_t start_min = 0, start_max = 0;
  if (start) {
    start_min = start_max = start[0];
    for (int64_t i = 1; i < qb; ++i) {
      start_min = min64(start_min, start[i]);
      start_max = max64(start_max, start[i]);
    }
  }
  for (int64_t j0 = start_min / FWD_BK * FWD_BK; j0 < key_end; j0 += FWD_BK) {
    const int64_t kb = min64(FWD_BK, key_end - j0);
    int64_t padding = 0;
    if (valid)
      for (int64_t j = 0; j < kb; ++j) padding += valid[j0 + j] == 0;
    if (padding == kb) continue;

    // S^T[j][i] = K_j . Q_i (log2 units)
    const float* k_rows = kv_head + j0 / FWD_BK * tile_floats;
    const float* v_panels = k_rows + FWD_BK * D;
    // Key j0 + j is visible to query q0 + i when j - i <= diagonal.
    const int64_t diagonal = q0 + offset - j0;
    const Band queries_seen{Band::columns, -diagonal, kFull.hi}, keys_as_k{Band::inner, kFull.lo, diagonal};
#if defined(__AVX512BF16__)
    if (pairs)
      block_product_pairs<false>(kb, qcols, D, reinterpret_cast<const uint32_t*>(k_rows), D / 2, kb,
                                 reinterpret_cast<const uint32_t*>(w.qt), D / 2, w.st, FWD_BQ, false, nullptr, queries_seen);
#endif
    if (!pairs) block_product<false>(kb, qcols, D, k_rows, D, kb, w.qt, D, w.st, FWD_BQ, false, nullptr, queries_seen);
    // Masks: a padded key for every query; causally, key j0 + j from queries i < j - diagonal
    // (including the micro-tiles the product skipped). Only tiles past the diagonal need it.
    if (padding > 0 || kb - 1 > diagonal) {
      for (int64_t j = 0; j < kb; ++j) {
        const int64_t hidden = (valid && !valid[j0 + j]) ? qcols : max64(0, min64(qcols, j - diagonal));
        fill(w.st + j * FWD_BQ, hidden, -INFINITY);
      }
    }
    if (start && j0 < start_max) {
      for (int64_t j = 0; j < kb; ++j)
        for (int64_t i = 0; i < qb; ++i)
          if (j0 + j < start[i]) w.st[j * FWD_BQ + i] = -INFINITY;
    }
    online_softmax(w.st, FWD_BQ, kb, qcols, round && !pairs, w.m, w.l, w.alpha);
    // O = alpha * O + P . V
#if defined(__AVX512BF16__)
    if (pairs) {
      pack_pairs_down(w.st, FWD_BQ, kb, qcols, FWD_BQ, 0, w.pt);
      block_product_pairs<true>(qrows, dpad, kb, w.pt, FWD_BQ, qrows, reinterpret_cast<const uint32_t*>(v_panels),
                                FWD_BK / 2, w.o, dpad, true, w.alpha, keys_as_k);
    }
#endif
    if (!pairs) block_product<true>(qrows, dpad, kb, w.st, FWD_BQ, qrows, v_panels, FWD_BK, w.o, dpad, true, w.alpha, keys_as_k);
  }

  for (int64_t i = 0; i < qb; ++i) {
    float* dst = g.out + ((b * Tq + q0 + i) * H + h) * D;
    float& lse = g.lse[(b * H + h) * Tq + q0 + i];
    const float l = w.l[i];
    if (l > 0.0f) {
      const float inv = 1.0f / l;
      const float* o = w.o + i * dpad;
      for (int64_t d = 0; d < D; ++d) dst[d] = o[d] * inv;
      lse = (w.m[i] + std::log2(l)) * LN2;
    } else {  // no key visible: a defined result, not 0/0
      fill(dst, D, 0.0f);
      lse = -INFINITY;
    }
  }
}

// q and dout as the products take them: rounded to bf16 at that precision, stored as bf16 on
// pairs (in the first half of the same room).
void attention_bwd_gather(const AttentionArgs& g, int64_t row0, int64_t rows, const AttentionBwdRows& out) {
  const int64_t D = g.head_dim, H = g.heads, Tq = g.tq;
  const bool round = rounds_bf16(g), pairs = native_pairs(g);
  for (int64_t r = row0; r < row0 + rows; ++r) {
    const int64_t b = r / Tq, i = r % Tq;
    for (int64_t h = 0; h < H; ++h) {
      const int64_t from = (r * H + h) * D, to = (b * H + h) * Tq + i;
#if defined(__AVX512BF16__)
      if (pairs) {
        to_bf16(g.q + from, D, reinterpret_cast<uint16_t*>(out.q) + to * D);
        to_bf16(g.dout + from, D, reinterpret_cast<uint16_t*>(out.dout) + to * D);
      }
#endif
      if (!pairs) {
        copy_values(g.q + from, D, round, out.q + to * D);
        copy_values(g.dout + from, D, round, out.dout + to * D);
      }
      out.delta[to] = dot(g.dout + from, g.out + from, D);
    }
  }
}

void attention_bwd_tile(const AttentionArgs& g, const AttentionBwdRows& rows, const float* kv_tile, int64_t b,
                        int64_t h, int64_t j0, void* scratch) {
  const int64_t D = g.head_dim, H = g.heads, KV = g.kv_heads, Tq = g.tq, Tk = g.tk;
  const int64_t group = H / KV, kvh = h / group, offset = Tk - Tq, dpad = round_up(D, NR);
  const int64_t kb = min64(BWD_BK, Tk - j0);
  const int64_t krows = round_up(kb, MR), kcols = padded_cols(kb);
  const bool first_head = h % group == 0;  // the group's first head writes dk, dv; the others add
  BwdScratch w(scratch, D);
  const bool round = rounds_bf16(g), pairs = native_pairs(g);
  const float c = g.scale * LOG2E;

  float* dk_rows = g.dk + ((b * Tk + j0) * KV + kvh) * D;
  float* dv_rows = g.dv + ((b * Tk + j0) * KV + kvh) * D;
  const uint8_t* valid = g.key_valid ? g.key_valid + b * Tk + j0 : nullptr;
  int64_t padding = 0;
  if (valid)
    for (int64_t j = 0; j < kb; ++j) padding += valid[j] == 0;
  if (padding == kb) {  // only padding: no gradient flows through these keys
    if (first_head)
      for (int64_t j = 0; j < kb; ++j) {
        fill(dk_rows + j * KV * D, D, 0.0f);
        fill(dv_rows + j * KV * D, D, 0.0f);
      }
    return;
  }

  const BwdKvTile<const float> kv(kv_tile, D, 1);
  const BwdKvTile<const uint32_t> kvp(reinterpret_cast<const uint32_t*>(kv_tile), D, 2);
  fill(w.dv, krows * dpad, 0.0f);
  fill(w.dk, krows * dpad, 0.0f);

  // Query tiles whose last row sees key j0 onwards; query row i sees keys j <= i + offset.
  const int64_t first_q0 = max64(0, j0 - offset) / BWD_BQ * BWD_BQ;
  for (int64_t q0 = first_q0; q0 < Tq; q0 += BWD_BQ) {
    const int64_t qb = min64(BWD_BQ, Tq - q0);
    const int64_t row = (b * H + h) * Tq + q0;  // head-major: rows D floats apart
    const float* q_rows = rows.q + row * D;
    const float* do_rows = rows.dout + row * D;
#if defined(__AVX512BF16__)
    const uint16_t* q16 = reinterpret_cast<const uint16_t*>(rows.q) + row * D;  // on pairs: bf16 rows
    const uint16_t* do16 = reinterpret_cast<const uint16_t*>(rows.dout) + row * D;
#endif
    float* dq_rows = rows.dq + row * D;
    const float* lse = g.lse + row;
    const float* delta = rows.delta + row;
    // Packed documents: row i sees keys from start[i] on; a tile whose rows all start past these keys skips.
    const int32_t* start = g.key_start ? g.key_start + b * Tq + q0 : nullptr;
    if (start) {
      int64_t start_min = start[0];
      for (int64_t i = 1; i < qb; ++i) start_min = min64(start_min, start[i]);
      if (start_min >= j0 + kb) continue;
    }

    // S = Q K^T and dP = dO V^T, rows = queries, columns = keys
    // Key j0 + j is visible to query q0 + i when j - i <= diagonal.
    const int64_t diagonal = q0 + offset - j0;
    const Band keys_seen{Band::columns, kFull.lo, diagonal}, keys_as_k{Band::inner, kFull.lo, diagonal};
    const Band queries_as_k{Band::inner, -diagonal, kFull.hi};
#if defined(__AVX512BF16__)
    if (pairs) {
      block_product_pairs<false>(qb, kcols, D, reinterpret_cast<const uint32_t*>(q16), D / 2, qb, kvp.kt, D / 2, w.p,
                                 BWD_BK, false, nullptr, keys_seen);
      block_product_pairs<false>(qb, kcols, D, reinterpret_cast<const uint32_t*>(do16), D / 2, qb, kvp.vt, D / 2, w.ds,
                                 BWD_BK, false, nullptr, keys_seen);
    }
#endif
    if (!pairs) {
      block_product<false>(qb, kcols, D, q_rows, D, qb, kv.kt, D, w.p, BWD_BK, false, nullptr, keys_seen);
      block_product<false>(qb, kcols, D, do_rows, D, qb, kv.vt, D, w.ds, BWD_BK, false, nullptr, keys_seen);
    }
    for (int64_t i = 0; i < qb; ++i) {
      // A row with lse = -inf saw no key in the forward: it has no gradient.
      const int64_t visible = lse[i] == -INFINITY ? 0 : max64(0, min64(kb, i + diagonal + 1));
      float* p = w.p + i * BWD_BK;
      float* ds = w.ds + i * BWD_BK;
      probs_and_dscores(p, ds, visible, kcols, c, lse[i] * LOG2E, delta[i], g.scale, round && !pairs);
      if (padding > 0)
        for (int64_t j = 0; j < visible; ++j)
          if (!valid[j]) p[j] = ds[j] = 0.0f;
      if (start)
        for (int64_t j = 0; j < min64(visible, start[i] - j0); ++j) p[j] = ds[j] = 0.0f;
    }
    // dV += P^T dO, dK += dS^T Q (rows = keys); dQ = dS K (rows = queries)
#if defined(__AVX512BF16__)
    if (pairs) {
      const int64_t qpairs = (qb + 1) / 2;
      pack_pairs_down(w.p, BWD_BK, qb, kcols, BWD_BK, 0, w.pt);
      pack_pairs_down(w.ds, BWD_BK, qb, kcols, BWD_BK, 0, w.dst);
      for (int64_t i = 0; i < qb; ++i) to_bf16(w.ds + i * BWD_BK, kcols, w.ds16 + i * BWD_BK);
      uint32_t* qp = reinterpret_cast<uint32_t*>(w.qp);
      uint32_t* dop = reinterpret_cast<uint32_t*>(w.dop);
      pack_pairs_down(q16, D, qb, D, NR, qpairs, qp);
      pack_pairs_down(do16, D, qb, D, NR, qpairs, dop);
      block_product_pairs<true>(krows, dpad, qb, w.pt, BWD_BK, krows, dop, qpairs, w.dv, dpad, true, nullptr, queries_as_k);
      block_product_pairs<true>(krows, dpad, qb, w.dst, BWD_BK, krows, qp, qpairs, w.dk, dpad, true, nullptr, queries_as_k);
      const uint32_t* ds_rows = reinterpret_cast<const uint32_t*>(w.ds16);
      if (dpad == D && qb % MR == 0) {
        block_product_pairs<false>(qb, D, kb, ds_rows, BWD_BK / 2, qb, kvp.kp, (kb + 1) / 2, dq_rows, D, true, nullptr,
                                   keys_as_k);
      } else {
        block_product_pairs<false>(qb, dpad, kb, ds_rows, BWD_BK / 2, qb, kvp.kp, (kb + 1) / 2, w.dq, dpad, false,
                                   nullptr, keys_as_k);
        for (int64_t i = 0; i < qb; ++i)
          for (int64_t d = 0; d < D; ++d) dq_rows[i * D + d] += w.dq[i * dpad + d];
      }
      continue;
    }
#endif
    pack_rows(q_rows, D, qb, D, qb, false, w.qp);  // already rounded by the gather when round
    pack_rows(do_rows, D, qb, D, qb, false, w.dop);
    block_product<true>(krows, dpad, qb, w.p, BWD_BK, krows, w.dop, qb, w.dv, dpad, true, nullptr, queries_as_k);
    block_product<true>(krows, dpad, qb, w.ds, BWD_BK, krows, w.qp, qb, w.dk, dpad, true, nullptr, queries_as_k);
    if (dpad == D && qb % MR == 0) {  // whole micro-tiles: added straight into dq's rows
      block_product<false>(qb, D, kb, w.ds, BWD_BK, qb, kv.kp, kb, dq_rows, D, true, nullptr, keys_as_k);
    } else {
      block_product<false>(qb, dpad, kb, w.ds, BWD_BK, qb, kv.kp, kb, w.dq, dpad, false, nullptr, keys_as_k);
      for (int64_t i = 0; i < qb; ++i)
        for (int64_t d = 0; d < D; ++d) dq_rows[i * D + d] += w.dq[i * dpad + d];
    }
  }
  for (int64_t j = 0; j < kb; ++j) {
    float* dk = dk_rows + j * KV * D;
    float* dv = dv_rows + j * KV * D;
    const float* sk = w.dk + j * dpad;
    const float* sv = w.dv + j * dpad;
    if (first_head) {
      for (int64_t d = 0; d < D; ++d) {
        dk[d] = sk[d];
        dv[d] = sv[d];
      }
    } else {
      for (int64_t d = 0; d < D; ++d) {
        dk[d] += sk[d];
        dv[d] += sv[d];
      }
    }
  }
}

}  // namespace ernie::cpu::ERNIE_ISA_NS
