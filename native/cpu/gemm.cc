#include "cpu/gemm.h"

#include <algorithm>
#include <stdexcept>

#include "cpu/threadpool.h"

ERNIE_DEFINE_KERNELS(gemm, ERNIE_GEMM_KERNELS)

namespace ernie::cpu {
namespace {

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Each thread's packed block of B, kept between calls (pool threads live as long as the pool).
void* thread_b_buffer(size_t bytes) {
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
  // One parallel region per GEMM and no barrier inside it: each thread owns a band of C and
  // packs what that band reads. The band runs along the dimension with more micro-tiles, so a
  // narrow product (LoRA's rank-r ones, a 64-token batch) still gives both cores work. The
  // operand spanning the whole other dimension gets packed by every thread, which costs
  // 1 / (band width) of the multiply.
  const int64_t m_panels = (g.m + mr - 1) / mr, n_panels = (g.n + nr - 1) / nr;
  const bool split_n = n_panels > m_panels;
  // A product under ~1 MFLOP runs on one thread: waking the others costs more than it saves,
  // and far more when another process holds the second core.
  const bool serial = 2.0 * double(g.m) * double(g.n) * double(k_total) < 1e6;
  const int64_t panels = split_n ? n_panels : m_panels;
  parallel_for(serial ? 1 : panels, [&](int64_t part0, int64_t part1, int) {
    const int64_t p0 = serial ? 0 : part0, p1 = serial ? panels : part1;
    const int64_t r0 = split_n ? 0 : p0 * mr, r1 = split_n ? g.m : std::min(g.m, p1 * mr);
    const int64_t c0 = split_n ? p0 * nr : 0, c1 = split_n ? std::min(g.n, p1 * nr) : g.n;
    const int64_t mc_max = std::min<int64_t>(bl.mc, round_up(r1 - r0, mr));
    for (int64_t jc = c0; jc < c1; jc += bl.nc) {
      const int64_t nc = std::min<int64_t>(bl.nc, c1 - jc);
      bool first = true;
      for (const GemmSegment& seg : g.segments) {
        for (int64_t pc = 0; pc < seg.k; pc += bl.kc) {
          const int64_t kc = std::min<int64_t>(bl.kc, seg.k - pc);
          const int64_t kp = round_up(kc, bl.k_pack);
          void* bp = thread_b_buffer(size_t(round_up(nc, nr)) * kp * bl.elem_bytes);
          kt.gemm_pack_b(seg.b, jc, nc, pc, kc, bp);
          void* ap = thread_scratch(size_t(mc_max) * kp * bl.elem_bytes);
          const bool accumulate = g.accumulate || !first;
          for (int64_t ic = r0; ic < r1; ic += mc_max) {
            const int64_t mc = std::min(mc_max, r1 - ic);
            kt.gemm_pack_a(seg.a, ic, mc, pc, kc, g.alpha * seg.scale, ap);
            kt.gemm_macro(mc, nc, kc, ap, bp, g.c + ic * g.ldc + jc, g.ldc, accumulate);
          }
          first = false;
        }
      }
    }
  });
}

}  // namespace ernie::cpu
