#include "cpu/gemm.h"

#include <algorithm>
#include <stdexcept>

#include "cpu/threadpool.h"

ERNIE_DEFINE_KERNELS(gemm, ERNIE_GEMM_KERNELS)

namespace ernie::cpu {
namespace {

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// The packed B block is shared by all threads; it belongs to the calling thread (one per
// concurrent GEMM), so it is reused across calls without locking.
void* shared_b_buffer(size_t bytes) {
  thread_local std::vector<unsigned char> buffer;
  if (buffer.size() < bytes + 64) buffer.resize(bytes + 64);
  auto p = reinterpret_cast<uintptr_t>(buffer.data());
  return reinterpret_cast<void*>((p + 63) & ~uintptr_t(63));
}

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
  ThreadPool& pool = ThreadPool::instance();
  const int threads = pool.num_threads();

  int64_t k_total = 0;
  for (const GemmSegment& s : g.segments) k_total += s.k;
  if (k_total == 0) {  // an empty product: C = 0 (or unchanged when accumulating)
    if (!g.accumulate)
      parallel_for(g.m, [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) std::fill(g.c + i * g.ldc, g.c + i * g.ldc + g.n, 0.0f);
      });
    return;
  }

  const int64_t mr = bl.mr, nr = bl.nr;
  // Tiles of C handed to threads: MC rows by a slice of the NC block. Small M gets shorter
  // row blocks and N gets sliced, so that both cores have several tiles to share.
  int64_t mc = std::min<int64_t>(bl.mc, round_up(g.m, mr));
  while (mc > mr && (g.m + mc - 1) / mc < 2 * threads) mc = std::max<int64_t>(mr, round_up(mc / 2, mr));
  const int64_t m_blocks = (g.m + mc - 1) / mc;

  for (int64_t jc = 0; jc < g.n; jc += bl.nc) {
    const int64_t nc = std::min<int64_t>(bl.nc, g.n - jc);
    const int64_t n_panels = (nc + nr - 1) / nr;
    // Enough tiles that a static split leaves little imbalance (threads own contiguous runs
    // of tiles, so A is still packed about once per row block per thread).
    int64_t n_slices = std::min<int64_t>(n_panels, std::max<int64_t>(1, (16 * threads + m_blocks - 1) / m_blocks));
    const int64_t panels_per_slice = (n_panels + n_slices - 1) / n_slices;
    n_slices = (n_panels + panels_per_slice - 1) / panels_per_slice;
    bool first = true;
    for (const GemmSegment& seg : g.segments) {
      for (int64_t pc = 0; pc < seg.k; pc += bl.kc) {
        const int64_t kc = std::min<int64_t>(bl.kc, seg.k - pc);
        const int64_t kp = round_up(kc, bl.k_pack);
        const size_t b_panel_bytes = size_t(kp) * nr * bl.elem_bytes;
        unsigned char* bp = static_cast<unsigned char*>(shared_b_buffer(b_panel_bytes * n_panels));
        // 1. all threads pack B[jc:jc+nc, pc:pc+kc], a few NR-column panels each
        parallel_for(n_panels, [&](int64_t p0, int64_t p1, int) {
          const int64_t n0 = p0 * nr, n1 = std::min(nc, p1 * nr);
          kt.gemm_pack_b(seg.b, jc + n0, n1 - n0, pc, kc, bp + p0 * b_panel_bytes);
        });
        // 2. threads split the tiles; a thread packs its rows of A once for consecutive tiles
        const bool accumulate = g.accumulate || !first;
        parallel_for(m_blocks * n_slices, [&](int64_t t0, int64_t t1, int thread) {
          const size_t a_bytes = size_t(round_up(mc, mr)) * kp * bl.elem_bytes;
          void* ap = pool.scratch(thread, a_bytes);
          int64_t packed_block = -1;
          for (int64_t t = t0; t < t1; ++t) {
            const int64_t ib = t / n_slices, slice = t % n_slices;
            const int64_t i0 = ib * mc, rows = std::min(mc, g.m - i0);
            if (ib != packed_block) {
              kt.gemm_pack_a(seg.a, i0, rows, pc, kc, g.alpha * seg.scale, ap);
              packed_block = ib;
            }
            const int64_t p0 = slice * panels_per_slice;
            const int64_t n0 = p0 * nr, n1 = std::min(nc, (p0 + panels_per_slice) * nr);
            if (n0 >= n1) continue;
            kt.gemm_macro(rows, n1 - n0, kc, ap, bp + p0 * b_panel_bytes, g.c + i0 * g.ldc + jc + n0, g.ldc,
                          accumulate);
          }
        });
        first = false;
      }
    }
  }
}

}  // namespace ernie::cpu
