// GEMM on bf16 tensor cores: C[M, N] (+)= A[M, K] . B[N, K]^T, f32 accumulation.
//
// The kernel (sm_80 and later; sm_90 runs the same mma.sync code): a CTA computes a 128 x 128
// tile of C with 8 warps, each a 64 x 32 sub-tile of 4 x 4 m16n8k16 MMAs. K advances 32 at a
// time through shared memory filled by cp.async, two stages deep, so the next K tile loads
// while the tensor cores work on this one. Fragments come from shared memory with ldmatrix;
// each 64-byte row of a tile holds four 16-byte chunks stored at chunk ^ ((row / 2) % 4), which
// puts the 8 rows one ldmatrix reads in 8 different bank groups.
//
// Operands reach the kernel as bf16 with K contiguous. gemm_device() packs the others first
// (f32 -> bf16, transposed layouts, several K segments laid end to end): the packing pass is a
// 32 x 32 shared-memory transpose tile, coalesced on both sides.
//
// Compiled for sm_80 and sm_90 (scripts/check-cuda.sh checks registers and spills). No GPU was
// available where this was written: the kernels have been compiled, not run; test/kernels/cuda.test.ts
// holds the parity tests that run them where a device exists.
#include <algorithm>
#include <stdexcept>

#include "cuda/device.cuh"

namespace ernie::cuda {
namespace {

constexpr int kBM = 128, kBN = 128, kBK = 32;
constexpr int kThreads = 256;  // 8 warps: 2 along M x 4 along N
constexpr int kWarpM = 64, kWarpN = 32;
constexpr int kChunksPerRow = kBK / 8;  // 16-byte chunks of 8 bf16

struct GemmParams {
  const __nv_bfloat16* a;  // [m, lda], K contiguous
  const __nv_bfloat16* b;  // [n, ldb], K contiguous
  float* c;                // [m, ldc]
  int m, n, k;             // k: a multiple of 8; chunks at or past k read as zeros
  int64_t lda, ldb, ldc;
  float out_scale;
  bool accumulate;
};

// Element offset of (row, 16-byte chunk) in a [rows x kBK] tile, swizzled.
__device__ __forceinline__ int tile_offset(int row, int chunk) {
  return row * kBK + ((chunk ^ ((row >> 1) & 3)) << 3);
}

// rows x kBK elements of `src` (rows from row0, K from k0) into a shared tile; rows past
// `rows_total` and chunks past k are zero-filled.
template <int ROWS>
__device__ __forceinline__ void load_tile(__nv_bfloat16* tile, const __nv_bfloat16* src, int64_t ld, int rows_total,
                                          int row0, int k0, int k) {
  constexpr int kChunks = ROWS * kChunksPerRow;
  static_assert(kChunks % kThreads == 0, "each thread copies the same number of chunks");
#pragma unroll
  for (int i = 0; i < kChunks / kThreads; ++i) {
    const int idx = int(threadIdx.x) + i * kThreads;
    const int row = idx / kChunksPerRow, chunk = idx % kChunksPerRow;
    const int grow = row0 + row, gk = k0 + chunk * 8;
    const bool ok = grow < rows_total && gk < k;
    const __nv_bfloat16* from = ok ? src + int64_t(grow) * ld + gk : src;
    cp_async16(tile + tile_offset(row, chunk), from, ok ? 16 : 0);
  }
}

__global__ void __launch_bounds__(kThreads, 2) gemm_bf16_kernel(GemmParams p) {
  __shared__ __align__(128) __nv_bfloat16 As[2][kBM * kBK];
  __shared__ __align__(128) __nv_bfloat16 Bs[2][kBN * kBK];

  const int warp = int(threadIdx.x) / 32, lane = int(threadIdx.x) % 32;
  const int warp_m = warp / 4, warp_n = warp % 4;
  const int row0 = int(blockIdx.y) * kBM, col0 = int(blockIdx.x) * kBN;
  const int k_tiles = (p.k + kBK - 1) / kBK;

  float acc[4][4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) acc[i][j][e] = 0.0f;

  if (k_tiles > 0) {
    load_tile<kBM>(As[0], p.a, p.lda, p.m, row0, 0, p.k);
    load_tile<kBN>(Bs[0], p.b, p.ldb, p.n, col0, 0, p.k);
  }
  cp_async_commit();

  for (int kt = 0; kt < k_tiles; ++kt) {
    const int stage = kt & 1;
    if (kt + 1 < k_tiles) {  // the other stage was last read in iteration kt - 1, before its closing barrier
      load_tile<kBM>(As[stage ^ 1], p.a, p.lda, p.m, row0, (kt + 1) * kBK, p.k);
      load_tile<kBN>(Bs[stage ^ 1], p.b, p.ldb, p.n, col0, (kt + 1) * kBK, p.k);
      cp_async_commit();
      cp_async_wait<1>();  // this stage's group has landed; the next may still be in flight
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();

    const __nv_bfloat16* a_tile = As[stage];
    const __nv_bfloat16* b_tile = Bs[stage];
#pragma unroll
    for (int kk = 0; kk < kBK / 16; ++kk) {
      uint32_t af[4][4];
      uint32_t bf[4][2];
#pragma unroll
      for (int mi = 0; mi < 4; ++mi) {
        // lanes 0-15: rows 0-15 at the k-low chunk, lanes 16-31: the same rows at the k-high chunk
        const int row = warp_m * kWarpM + mi * 16 + (lane & 15);
        ldmatrix_x4(af[mi], a_tile + tile_offset(row, kk * 2 + (lane >> 4)));
      }
#pragma unroll
      for (int nj = 0; nj < 2; ++nj) {
        // matrices: (n 0-7, k low), (n 0-7, k high), (n 8-15, k low), (n 8-15, k high)
        const int row = warp_n * kWarpN + nj * 16 + (lane & 7) + ((lane >> 4) << 3);
        uint32_t r[4];
        ldmatrix_x4(r, b_tile + tile_offset(row, kk * 2 + ((lane >> 3) & 1)));
        bf[2 * nj][0] = r[0];
        bf[2 * nj][1] = r[1];
        bf[2 * nj + 1][0] = r[2];
        bf[2 * nj + 1][1] = r[3];
      }
#pragma unroll
      for (int mi = 0; mi < 4; ++mi)
#pragma unroll
        for (int ni = 0; ni < 4; ++ni) mma_bf16_16816(acc[mi][ni], af[mi], bf[ni][0], bf[ni][1]);
    }
    __syncthreads();
  }

  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int mi = 0; mi < 4; ++mi)
#pragma unroll
    for (int ni = 0; ni < 4; ++ni)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = row0 + warp_m * kWarpM + mi * 16 + g + (e >= 2 ? 8 : 0);
        const int c = col0 + warp_n * kWarpN + ni * 8 + 2 * t + (e & 1);
        if (r < p.m && c < p.n) {
          float* dst = p.c + int64_t(r) * p.ldc + c;
          const float v = acc[mi][ni][e] * p.out_scale;
          *dst = p.accumulate ? *dst + v : v;
        }
      }
}

// dst[r, k_offset + q] = bf16(scale * src(r, q)) for q < k, 0 for k <= q < k_padded; src(r, q)
// is src[r * ld + q], or src[q * ld + r] when `trans`. 32 x 32 tiles through shared memory, so
// the reads run along the source's contiguous axis and the writes along K.
template <bool kSrcBf16, bool kTrans>
__global__ void pack_bf16_kernel(__nv_bfloat16* dst, int64_t ldd, int64_t k_offset, const void* src, int64_t ld,
                                 int rows, int k, int k_padded, float scale) {
  __shared__ float tile[32][33];
  const int r0 = int(blockIdx.y) * 32, q0 = int(blockIdx.x) * 32;
  const int tx = int(threadIdx.x), ty = int(threadIdx.y);  // 32 x 8
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    if (!kTrans) {
      const int r = r0 + ty + 8 * i, q = q0 + tx;
      float v = 0.0f;
      if (r < rows && q < k) v = load_as_f32(src, int64_t(r) * ld + q, kSrcBf16);
      tile[ty + 8 * i][tx] = v;
    } else {
      const int q = q0 + ty + 8 * i, r = r0 + tx;
      float v = 0.0f;
      if (r < rows && q < k) v = load_as_f32(src, int64_t(q) * ld + r, kSrcBf16);
      tile[tx][ty + 8 * i] = v;
    }
  }
  __syncthreads();
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const int r = r0 + ty + 8 * i, q = q0 + tx;
    if (r < rows && q < k_padded) dst[int64_t(r) * ldd + k_offset + q] = __float2bfloat16_rn(scale * tile[ty + 8 * i][tx]);
  }
}

// C[m, n] = 0 with row stride ldc.
__global__ void zero_rows_kernel(float* c, int64_t ldc, int m, int n) {
  const int64_t total = int64_t(m) * n;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x)
    c[(i / n) * ldc + i % n] = 0.0f;
}

void pack(Context& ctx, __nv_bfloat16* dst, int64_t ldd, int64_t k_offset, const MatrixRef& src, int64_t rows,
          int64_t k, int64_t k_padded, float scale) {
  const dim3 block(32, 8), grid(unsigned(ceil_div(k_padded, 32)), unsigned(ceil_div(rows, 32)));
  if (grid.y > 65535) throw std::invalid_argument("gemm: more than 2 million rows");
  const bool bf16 = src.dtype == DType::bf16;
  auto launch = [&](auto kernel) {
    kernel<<<grid, block, 0, ctx.stream()>>>(dst, ldd, k_offset, src.data, src.ld, int(rows), int(k), int(k_padded), scale);
  };
  if (bf16 && src.trans) launch(pack_bf16_kernel<true, true>);
  else if (bf16) launch(pack_bf16_kernel<true, false>);
  else if (src.trans) launch(pack_bf16_kernel<false, true>);
  else launch(pack_bf16_kernel<false, false>);
  CUDA_CHECK_LAUNCH("pack_bf16_kernel");
}

// Whether a [rows, k] operand can be read by the kernel as it is.
bool usable_in_place(const MatrixRef& x, int64_t k) {
  return x.dtype == DType::bf16 && !x.trans && k % 8 == 0 && x.ld % 8 == 0 &&
         reinterpret_cast<uintptr_t>(x.data) % 16 == 0;
}

}  // namespace

void gemm_device(const GemmArgs& g, Context& ctx) {
  if (g.m <= 0 || g.n <= 0) return;
  Context::Scope scope(ctx);  // the packed operands
  if (g.m > INT32_MAX || g.n > INT32_MAX) throw std::invalid_argument("gemm: m and n must fit in 32 bits");
  int64_t k_total = 0;
  for (const GemmSegment& s : g.segments) k_total += s.k;
  if (k_total == 0) {
    if (!g.accumulate) {
      zero_rows_kernel<<<grid_for(g.m * g.n, 256), 256, 0, ctx.stream()>>>(g.c, g.ldc, int(g.m), int(g.n));
      CUDA_CHECK_LAUNCH("zero_rows_kernel");
    }
    return;
  }

  GemmParams p{};
  p.c = g.c;
  p.m = int(g.m);
  p.n = int(g.n);
  p.ldc = g.ldc;
  p.accumulate = g.accumulate;
  if (g.segments.size() == 1) {
    // One segment: the scale goes on the result, and an operand already in the kernel's form is
    // read where it is (the usual case for a bf16 weight as B).
    const GemmSegment& s = g.segments[0];
    const int64_t k8 = round_up(s.k, 8), kp = round_up(s.k, kBK);
    p.k = int(k8);
    p.out_scale = g.alpha * s.scale;
    if (usable_in_place(s.a, s.k)) {
      p.a = static_cast<const __nv_bfloat16*>(s.a.data);
      p.lda = s.a.ld;
    } else {
      auto* a = ctx.alloc<__nv_bfloat16>(size_t(g.m * kp));
      pack(ctx, a, kp, 0, s.a, g.m, s.k, kp, 1.0f);
      p.a = a;
      p.lda = kp;
    }
    if (usable_in_place(s.b, s.k)) {
      p.b = static_cast<const __nv_bfloat16*>(s.b.data);
      p.ldb = s.b.ld;
    } else {
      auto* b = ctx.alloc<__nv_bfloat16>(size_t(g.n * kp));
      pack(ctx, b, kp, 0, s.b, g.n, s.k, kp, 1.0f);
      p.b = b;
      p.ldb = kp;
    }
  } else {
    // Several segments: one K axis, each segment padded to the K tile; A carries the scales.
    int64_t kp_total = 0;
    for (const GemmSegment& s : g.segments) kp_total += round_up(s.k, kBK);
    auto* a = ctx.alloc<__nv_bfloat16>(size_t(g.m * kp_total));
    auto* b = ctx.alloc<__nv_bfloat16>(size_t(g.n * kp_total));
    int64_t offset = 0;
    for (const GemmSegment& s : g.segments) {
      const int64_t kp = round_up(s.k, kBK);
      if (kp == 0) continue;
      pack(ctx, a, kp_total, offset, s.a, g.m, s.k, kp, g.alpha * s.scale);
      pack(ctx, b, kp_total, offset, s.b, g.n, s.k, kp, 1.0f);
      offset += kp;
    }
    p.a = a;
    p.b = b;
    p.lda = p.ldb = kp_total;
    p.k = int(kp_total);
    p.out_scale = 1.0f;
  }
  if (int64_t(p.k) > INT32_MAX - kBK) throw std::invalid_argument("gemm: k too large");
  const dim3 grid(unsigned(ceil_div(g.n, kBN)), unsigned(ceil_div(g.m, kBM)));
  if (grid.y > 65535) throw std::invalid_argument("gemm: m too large for one launch");
  gemm_bf16_kernel<<<grid, kThreads, 0, ctx.stream()>>>(p);
  CUDA_CHECK_LAUNCH("gemm_bf16_kernel");
}

// Elements a [rows, k] operand spans in memory, stored plainly or as its transpose.
static size_t stored_extent(const MatrixRef& x, int64_t rows, int64_t k) {
  if (rows == 0 || k == 0) return 0;
  return size_t(x.trans ? (k - 1) * x.ld + rows : (rows - 1) * x.ld + k);
}

}  // namespace ernie::cuda
