#include "cpu/gemm.h"

#include <algorithm>
#include <atomic>

#include "cpu/threadpool.h"

ERNIE_DEFINE_KERNELS(gemm, ERNIE_GEMM_KERNELS)

namespace ernie::cpu {
namespace {

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Columns of C per tile: a tile is MC rows by this many columns, one sweep of the micro-kernel
// over a packed block of A (kept in L2) and one of B (streamed from L3).
constexpr int64_t kTileCols = 256;
// Bytes each packed operand may take at a time: rows (of A) or columns (of B) beyond it are
// done in further chunks, so that a 100k-row weight never gets packed whole.
constexpr int64_t kPackBudget = int64_t(8) << 20;

// One KC-wide slice of one segment's K.
struct KSlice {
  const GemmSegment* seg;
  int64_t k0, kc;
};

}  // namespace

void gemm(const GemmArgs& g) {
  if (g.m <= 0 || g.n <= 0) return;
  // vdpbf16ps rounds both operands to bf16: take that path only when a weight (B) is bf16
  // already, so an f32 x f32 product (weight gradients, f32 weights) keeps f32 precision.
  bool any_bf16_b = false;
  for (const GemmSegment& s : g.segments) any_bf16_b = any_bf16_b || s.b.dtype == DType::bf16;
  const Isa isa = active_isa() == Isa::avx512bf16 && !any_bf16_b ? Isa::avx512 : active_isa();
  const gemm_kernel_table& kt = gemm_kernels_for(isa);
  const GemmBlocking bl = kt.gemm_blocking();

  std::vector<KSlice> slices;
  int64_t k_total = 0;
  for (const GemmSegment& s : g.segments) {
    for (int64_t k0 = 0; k0 < s.k; k0 += bl.kc) slices.push_back({&s, k0, std::min<int64_t>(bl.kc, s.k - k0)});
    k_total += s.k;
  }
  if (slices.empty()) {  // an empty product: C = 0 (or unchanged when accumulating)
    if (!g.accumulate)
      parallel_for(g.m, [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) std::fill(g.c + i * g.ldc, g.c + i * g.ldc + g.n, 0.0f);
      });
    return;
  }

  // Per K slice, two parallel regions: (1) pack the slice of A and of B once, in blocks shared
  // by all threads; (2) compute C's tiles from them, each thread taking the next tile from a
  // counter, so a core the OS slows down does fewer tiles instead of holding up the rest.
  // The packed slices (rows + columns) x KC stay in L3; C is updated once per slice.
  // A product under ~1 MFLOP runs on one thread: waking the others costs more than it saves.
  const bool serial = 2.0 * double(g.m) * double(g.n) * double(k_total) < 1e6;
  const int threads = serial ? 1 : ThreadPool::instance().num_threads();

  const int64_t elem = bl.elem_bytes, kc_max = round_up(bl.kc, bl.k_pack);
  const int64_t row_block = bl.mc, col_block = round_up(std::min<int64_t>(kTileCols, g.n), bl.nr);
  const int64_t a_block_bytes = round_up(row_block, bl.mr) * kc_max * elem, b_block_bytes = col_block * kc_max * elem;
  // Chunks of C: whole blocks, at least one, within the budget.
  const int64_t rows_per_chunk = row_block * std::max<int64_t>(1, kPackBudget / a_block_bytes);
  const int64_t cols_per_chunk = col_block * std::max<int64_t>(1, kPackBudget / b_block_bytes);
  const int64_t a_bytes = round_up((std::min(rows_per_chunk, g.m) + row_block - 1) / row_block * a_block_bytes, 64);
  const int64_t b_bytes = (std::min(cols_per_chunk, g.n) + col_block - 1) / col_block * b_block_bytes;
  auto* packed_a = static_cast<unsigned char*>(thread_scratch(size_t(a_bytes + b_bytes)));
  unsigned char* packed_b = packed_a + a_bytes;

  // Runs work(i) for i in [0, n), each index once, on whichever thread is free next.
  auto share = [&](int64_t n, auto&& work) {
    std::atomic<int64_t> next{0};
    parallel_for(std::min<int64_t>(threads, n), [&](int64_t, int64_t, int) {
      for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < n;) work(i);
    });
  };

  for (int64_t m0 = 0; m0 < g.m; m0 += rows_per_chunk) {
    const int64_t rows = std::min(rows_per_chunk, g.m - m0), row_blocks = (rows + row_block - 1) / row_block;
    for (int64_t n0 = 0; n0 < g.n; n0 += cols_per_chunk) {
      const int64_t cols = std::min(cols_per_chunk, g.n - n0), col_blocks = (cols + col_block - 1) / col_block;
      for (const KSlice& s : slices) {
        share(row_blocks + col_blocks, [&](int64_t u) {
          if (u < row_blocks) {
            const int64_t r = m0 + u * row_block;
            kt.gemm_pack_a(s.seg->a, r, std::min(row_block, m0 + rows - r), s.k0, s.kc, g.alpha * s.seg->scale,
                           packed_a + u * a_block_bytes);
          } else {
            const int64_t c = n0 + (u - row_blocks) * col_block;
            kt.gemm_pack_b(s.seg->b, c, std::min(col_block, n0 + cols - c), s.k0, s.kc,
                           packed_b + (u - row_blocks) * b_block_bytes);
          }
        });
        // Tiles go along a row block first: a thread's next tile often reuses its A block in L2.
        share(row_blocks * col_blocks, [&](int64_t t) {
          const int64_t rb = t / col_blocks, cb = t % col_blocks;
          const int64_t r = m0 + rb * row_block, c = n0 + cb * col_block;
          kt.gemm_macro(std::min(row_block, m0 + rows - r), std::min(col_block, n0 + cols - c), s.kc,
                        packed_a + rb * a_block_bytes, packed_b + cb * b_block_bytes, g.c + r * g.ldc + c, g.ldc,
                        g.accumulate || &s != &slices.front());
        });
      }
    }
  }
}

}  // namespace ernie::cpu
