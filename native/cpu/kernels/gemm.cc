// The per-ISA half of the GEMM: packing and the register-tiled micro-kernel.
// Compiled once per ISA (see cpu/dispatch.h); the #if ladder picks this copy's micro-kernel:
//   AVX512_BF16  14 x 32 tile, bf16 pairs, vdpbf16ps (A and B rounded to bf16)
//   AVX-512F     14 x 32 tile, f32 FMA
//   AVX2 + FMA    6 x 16 tile, f32 FMA
//   generic       4 x 16 tile, plain C++ the compiler vectorises
// f32 paths widen bf16 operands while packing, so only the packing knows about dtypes.
#include "cpu/gemm.h"

#if defined(__AVX2__)
#include <immintrin.h>
#endif

namespace ernie::cpu::ERNIE_ISA_NS {
namespace {

#if defined(__AVX512BF16__)
#define ERNIE_GEMM_BF16_PAIRS 1
constexpr int MR = 14, NR = 32, KC = 384, MC = 112, KPACK = 2;
#define ERNIE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)
using Packed = uint32_t;  // two bf16 of consecutive k: low half k even, high half k odd
#elif defined(__AVX512F__)
constexpr int MR = 14, NR = 32, KC = 256, MC = 112, KPACK = 1;
#define ERNIE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13)
using Packed = float;
#elif defined(__AVX2__)
constexpr int MR = 6, NR = 16, KC = 384, MC = 120, KPACK = 1;
#define ERNIE_ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5)
using Packed = float;
#else
constexpr int MR = 4, NR = 16, KC = 256, MC = 128, KPACK = 1;
using Packed = float;
#endif

inline int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// ---- element access: the four (dtype, trans) cases are template parameters of the packers.
template <DType T>
inline float elem(const void* p, int64_t i) {
  if constexpr (T == DType::f32) return static_cast<const float*>(p)[i];
  else return bf16_to_f32(static_cast<const uint16_t*>(p)[i]);
}
template <DType T>
inline uint16_t elem_bf16(const void* p, int64_t i) {
  if constexpr (T == DType::f32) return f32_to_bf16(static_cast<const float*>(p)[i]);
  else return static_cast<const uint16_t*>(p)[i];
}
// Offset of logical element (r, c).
template <bool Trans>
inline int64_t at(int64_t ld, int64_t r, int64_t c) { return Trans ? c * ld + r : r * ld + c; }

#if defined(__AVX2__) && !defined(ERNIE_GEMM_BF16_PAIRS)
// Eight consecutive elements as f32 (bf16 widened by a 16-bit shift), times scale.
template <DType T>
inline __m256 load8(const void* p, int64_t i, float scale) {
  __m256 v;
  if constexpr (T == DType::f32) {
    v = _mm256_loadu_ps(static_cast<const float*>(p) + i);
  } else {
    const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i));
    v = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
  }
  return scale == 1.0f ? v : _mm256_mul_ps(v, _mm256_set1_ps(scale));
}

inline void transpose8x8(__m256 (&r)[8]) {
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

// Packs rows [r0, r0+rows) x cols [k0, k0+kc) of a logical [R, K] matrix into panels of P rows:
// panel p holds, for each k (or k pair), its P row values. Missing rows and k are zero.
template <DType T, bool Trans, int P>
void pack_panels(const MatrixRef& m, int64_t r0, int64_t rows, int64_t k0, int64_t kc, float scale,
                 Packed* dst) {
  const int64_t kp = round_up(kc, KPACK);
  for (int64_t p = 0; p < rows; p += P) {
    const int64_t pr = min64(P, rows - p);
    Packed* panel = dst + (p / P) * (kp / KPACK) * P;
#if defined(ERNIE_GEMM_BF16_PAIRS)
    for (int64_t i = 0; i < P; ++i) {
      for (int64_t kk = 0; kk < kp / 2; ++kk) {
        uint32_t lo = 0, hi = 0;
        if (i < pr) {
          const int64_t k = 2 * kk;
          if (scale == 1.0f) {
            lo = elem_bf16<T>(m.data, at<Trans>(m.ld, r0 + p + i, k0 + k));
            if (k + 1 < kc) hi = elem_bf16<T>(m.data, at<Trans>(m.ld, r0 + p + i, k0 + k + 1));
          } else {
            lo = f32_to_bf16(scale * elem<T>(m.data, at<Trans>(m.ld, r0 + p + i, k0 + k)));
            if (k + 1 < kc) hi = f32_to_bf16(scale * elem<T>(m.data, at<Trans>(m.ld, r0 + p + i, k0 + k + 1)));
          }
        }
        panel[kk * P + i] = lo | (hi << 16);
      }
    }
#else
    if (Trans) {  // rows are contiguous for each k
      for (int64_t k = 0; k < kc; ++k) {
        const int64_t base = at<Trans>(m.ld, r0 + p, k0 + k);
        Packed* out = panel + k * P;
        for (int64_t i = 0; i < pr; ++i) out[i] = scale * elem<T>(m.data, base + i);
        for (int64_t i = pr; i < P; ++i) out[i] = 0.0f;
      }
    } else {  // each row is contiguous along k: read rows, write strided
      int64_t i = 0;
#if defined(__AVX2__)
      // Whole groups of 8 rows go through 8x8 register transposes (the weights' packing path).
      for (; i + 8 <= pr; i += 8) {
        int64_t k = 0;
        for (; k + 8 <= kc; k += 8) {
          __m256 r[8];
          for (int j = 0; j < 8; ++j) r[j] = load8<T>(m.data, at<Trans>(m.ld, r0 + p + i + j, k0 + k), scale);
          transpose8x8(r);
          for (int j = 0; j < 8; ++j) _mm256_storeu_ps(panel + (k + j) * P + i, r[j]);
        }
        for (; k < kc; ++k)
          for (int j = 0; j < 8; ++j) panel[k * P + i + j] = scale * elem<T>(m.data, at<Trans>(m.ld, r0 + p + i + j, k0 + k));
      }
      // A whole 6-row panel (AVX2's MR, the activations' path): 8 k of its 6 rows are 48
      // contiguous floats, written as in-order overlapping 8-float stores of an 8x8 transpose
      // (rows 6 and 7 zero); the last one is split 4 + 2 so nothing lands past the 48.
      if constexpr (P == 6) {
        if (pr == 6) {
          int64_t k = 0;
          for (; k + 8 <= kc; k += 8) {
            __m256 r[8];
            for (int j = 0; j < 6; ++j) r[j] = load8<T>(m.data, at<Trans>(m.ld, r0 + p + j, k0 + k), scale);
            r[6] = r[7] = _mm256_setzero_ps();
            transpose8x8(r);
            float* out = panel + k * 6;
            for (int j = 0; j < 7; ++j) _mm256_storeu_ps(out + 6 * j, r[j]);
            _mm_storeu_ps(out + 42, _mm256_castps256_ps128(r[7]));
            _mm_storel_pi(reinterpret_cast<__m64*>(out + 46), _mm256_extractf128_ps(r[7], 1));
          }
          for (; k < kc; ++k)
            for (int j = 0; j < 6; ++j) panel[k * 6 + j] = scale * elem<T>(m.data, at<Trans>(m.ld, r0 + p + j, k0 + k));
          i = 6;
        }
      }
#endif
      for (; i < pr; ++i) {
        const int64_t base = at<Trans>(m.ld, r0 + p + i, k0);
        for (int64_t k = 0; k < kc; ++k) panel[k * P + i] = scale * elem<T>(m.data, base + k);
      }
      for (int64_t i = pr; i < P; ++i)
        for (int64_t k = 0; k < kc; ++k) panel[k * P + i] = 0.0f;
    }
#endif
  }
}

template <int P>
void pack_dispatch(const MatrixRef& m, int64_t r0, int64_t rows, int64_t k0, int64_t kc, float scale,
                   void* dst) {
  Packed* out = static_cast<Packed*>(dst);
  if (m.dtype == DType::f32) {
    if (m.trans) pack_panels<DType::f32, true, P>(m, r0, rows, k0, kc, scale, out);
    else pack_panels<DType::f32, false, P>(m, r0, rows, k0, kc, scale, out);
  } else {
    if (m.trans) pack_panels<DType::bf16, true, P>(m, r0, rows, k0, kc, scale, out);
    else pack_panels<DType::bf16, false, P>(m, r0, rows, k0, kc, scale, out);
  }
}

// ---- micro-kernels: C[MR, NR] (+)= sum_k A[k][MR] * B[k][NR], a whole tile in registers.
// Partial tiles at the edges go through a local buffer, so no write leaves C's bounds.
inline void store_tile(const float* tile, float* c, int64_t ldc, bool accumulate, int64_t mr, int64_t nr) {
  for (int64_t i = 0; i < mr; ++i)
    for (int64_t j = 0; j < nr; ++j) c[i * ldc + j] = accumulate ? c[i * ldc + j] + tile[i * NR + j] : tile[i * NR + j];
}

#if defined(__AVX512F__) || defined(__AVX2__)
#if defined(__AVX512F__)
using Vec = __m512;
constexpr int VL = 16;
inline Vec vzero() { return _mm512_setzero_ps(); }
inline Vec vload(const float* p) { return _mm512_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm512_storeu_ps(p, v); }
inline Vec vadd(Vec a, Vec b) { return _mm512_add_ps(a, b); }
inline Vec vbroadcast(const float* p) { return _mm512_set1_ps(*p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm512_fmadd_ps(a, b, c); }
#else
using Vec = __m256;
constexpr int VL = 8;
inline Vec vzero() { return _mm256_setzero_ps(); }
inline Vec vload(const float* p) { return _mm256_loadu_ps(p); }
inline void vstore(float* p, Vec v) { _mm256_storeu_ps(p, v); }
inline Vec vadd(Vec a, Vec b) { return _mm256_add_ps(a, b); }
inline Vec vbroadcast(const float* p) { return _mm256_broadcast_ss(p); }
inline Vec vfma(Vec a, Vec b, Vec c) { return _mm256_fmadd_ps(a, b, c); }
#endif
static_assert(NR == 2 * VL, "the micro-kernel holds two vectors per row");

// The tile is MR rows of two vectors, held in named variables c<i>0, c<i>1 (an array of
// vectors would be kept in memory by GCC inside the k loop). ERNIE_ROWS(X) expands X(i) per row.
#define ERNIE_DECL_ROW(i) Vec c##i##0 = vzero(), c##i##1 = vzero();
// The tile of C is read (when accumulating) and written only after the k loop: ask for its
// lines now, so they arrive while the loop runs instead of stalling the stores.
#define ERNIE_PREFETCH_ROW(i)                                       \
  if ((i) < mr) {                                                   \
    _mm_prefetch(reinterpret_cast<const char*>(c + (i) * ldc), _MM_HINT_T0);        \
    _mm_prefetch(reinterpret_cast<const char*>(c + (i) * ldc + NR - 1), _MM_HINT_T0); \
  }
#define ERNIE_SPILL_ROW(i) vstore(tile + (i) * NR, c##i##0); vstore(tile + (i) * NR + VL, c##i##1);
#define ERNIE_STORE_ROW(i)                                                         \
  {                                                                                \
    float* dst = c + (i) * ldc;                                                    \
    vstore(dst, accumulate ? vadd(vload(dst), c##i##0) : c##i##0);                 \
    vstore(dst + VL, accumulate ? vadd(vload(dst + VL), c##i##1) : c##i##1);       \
  }

// Writes the tile: straight into C when whole, else through a buffer, so no write leaves C.
#define ERNIE_WRITE_TILE()                                                         \
  if (mr == MR && nr == NR) {                                                      \
    ERNIE_ROWS(ERNIE_STORE_ROW)                                                    \
  } else {                                                                         \
    alignas(64) float tile[MR * NR];                                               \
    ERNIE_ROWS(ERNIE_SPILL_ROW)                                                    \
    store_tile(tile, c, ldc, accumulate, mr, nr);                                  \
  }

#if defined(ERNIE_GEMM_BF16_PAIRS)
// One k pair per step: vdpbf16ps adds a[2j]*b[2j] + a[2j+1]*b[2j+1] into each f32 lane.
#define ERNIE_FMA_ROW(i)                                                           \
  {                                                                                \
    const __m512bh av = (__m512bh)_mm512_set1_epi32(static_cast<int>(ak[i]));      \
    c##i##0 = _mm512_dpbf16_ps(c##i##0, av, b0);                                   \
    c##i##1 = _mm512_dpbf16_ps(c##i##1, av, b1);                                   \
  }
inline void micro_kernel(int64_t kp, const Packed* a, const Packed* b, float* c, int64_t ldc, bool accumulate,
                         int64_t mr, int64_t nr) {
  ERNIE_ROWS(ERNIE_PREFETCH_ROW)
  ERNIE_ROWS(ERNIE_DECL_ROW)
  for (int64_t kk = 0; kk < kp / 2; ++kk) {
    const __m512bh b0 = (__m512bh)_mm512_loadu_si512(b + kk * NR);
    const __m512bh b1 = (__m512bh)_mm512_loadu_si512(b + kk * NR + VL);
    const Packed* ak = a + kk * MR;
    ERNIE_ROWS(ERNIE_FMA_ROW)
  }
  ERNIE_WRITE_TILE()
}
#else
#define ERNIE_FMA_ROW(i)                                                           \
  {                                                                                \
    const Vec av = vbroadcast(ak + (i));                                           \
    c##i##0 = vfma(av, b0, c##i##0);                                               \
    c##i##1 = vfma(av, b1, c##i##1);                                               \
  }
inline void micro_kernel(int64_t kc, const Packed* a, const Packed* b, float* c, int64_t ldc, bool accumulate,
                         int64_t mr, int64_t nr) {
  ERNIE_ROWS(ERNIE_PREFETCH_ROW)
  ERNIE_ROWS(ERNIE_DECL_ROW)
  for (int64_t k = 0; k < kc; ++k) {
    const Vec b0 = vload(b + k * NR), b1 = vload(b + k * NR + VL);
    const Packed* ak = a + k * MR;
    ERNIE_ROWS(ERNIE_FMA_ROW)
  }
  ERNIE_WRITE_TILE()
}
#endif

#else  // generic
inline void micro_kernel(int64_t kc, const Packed* a, const Packed* b, float* c, int64_t ldc, bool accumulate,
                         int64_t mr, int64_t nr) {
  float acc[MR][NR] = {};
  for (int64_t k = 0; k < kc; ++k)
    for (int i = 0; i < MR; ++i) {
      const float av = a[k * MR + i];
      for (int j = 0; j < NR; ++j) acc[i][j] += av * b[k * NR + j];
    }
  store_tile(&acc[0][0], c, ldc, accumulate, mr, nr);
}
#endif

}  // namespace

GemmBlocking gemm_blocking() { return GemmBlocking{MR, NR, KC, MC, KPACK, int(sizeof(Packed)) / KPACK}; }

void gemm_pack_a(const MatrixRef& a, int64_t m0, int64_t mc, int64_t k0, int64_t kc, float alpha, void* dst) {
  pack_dispatch<MR>(a, m0, mc, k0, kc, alpha, dst);
}

void gemm_pack_b(const MatrixRef& b, int64_t n0, int64_t nc, int64_t k0, int64_t kc, void* dst) {
  pack_dispatch<NR>(b, n0, nc, k0, kc, 1.0f, dst);
}

void gemm_macro(int64_t mc, int64_t nc, int64_t kc, const void* ap, const void* bp, float* c, int64_t ldc,
                bool accumulate) {
  const Packed* a = static_cast<const Packed*>(ap);
  const Packed* b = static_cast<const Packed*>(bp);
  const int64_t kp = round_up(kc, KPACK);
  const int64_t panel = kp / KPACK;  // packed elements per row of a panel
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const Packed* bpanel = b + (jr / NR) * panel * NR;
    for (int64_t ir = 0; ir < mc; ir += MR) {
      micro_kernel(kp, a + (ir / MR) * panel * MR, bpanel, c + ir * ldc + jr, ldc, accumulate, min64(MR, mc - ir),
                   min64(NR, nc - jr));
    }
  }
}

}  // namespace ernie::cpu::ERNIE_ISA_NS
