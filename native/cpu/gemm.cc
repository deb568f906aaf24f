#include "cpu/gemm.h"

#include <algorithm>
#include <atomic>
#include <memory>

#include "cpu/threadpool.h"

ERNIE_DEFINE_KERNELS(gemm, ERNIE_GEMM_KERNELS)

namespace ernie::cpu {
namespace {

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Columns of C per tile: a tile is MC rows by this many columns, one sweep of the micro-kernel
// over a packed block of A (kept in L2) and one of B.
constexpr int64_t kTileCols = 256, kMinTileCols = 64;
// Bytes each shared packed operand may take at a time, per set of the two: rows (of A) or
// columns (of B) beyond it are done in further chunks, so that a 100k-row weight never gets
// packed whole.
constexpr int64_t kPackBudget = int64_t(4) << 20;

// One KC-wide slice of one segment's K, packed in its segment's format.
struct KSlice {
  const GemmSegment* seg;
  int64_t k0, kc;
  GemmFormat format;
};

// Consecutive slices of one format whose products go into C's tiles in one go: a tile's
// accumulators stay in registers from one slice to the next, and C is read and written once per
// pass. A pass is a slice followed by the short ones of the next segments (LoRA's rank-r product
// after its weight's), which would otherwise cost a whole pass over C for a few k each.
struct Pass {
  int first = 0, count = 0;
  GemmFormat format = GemmFormat::f32;
};
constexpr int kMaxPassSlices = kGemmMaxPieces;
constexpr int64_t kShortSlice = 64;  // a slice this short joins the pass before it

// The format a segment is packed in: its precision (cpu/precision.h), and for bf16 whether the
// ISA multiplies bf16 pairs itself or rounds the values for its f32 kernel.
GemmFormat segment_format(Precision asked, Isa isa, const GemmSegment& s) {
  const bool bf16_operand = s.a.dtype == DType::bf16 || s.b.dtype == DType::bf16;
  if (product_precision(asked, isa, bf16_operand) == Precision::fp32) return GemmFormat::f32;
  return isa_has_bf16_dot(isa) ? GemmFormat::bf16 : GemmFormat::f32_bf16;
}

}  // namespace

// What one gemm() does with its SharedPackedA: packs segment 0's slices of A into it (fill),
// reads them from it (read), or neither (no SharedPackedA, or one holding another A).
struct SharedAUse {
  enum class Mode { none, fill, read };
  Mode mode = Mode::none;
  SharedPackedA* owner = nullptr;
  int slices = 0;  // segment 0's slices: the first ones
  int64_t row_blocks = 0, block_bytes = 0;
  unsigned char* blocks = nullptr;

  SharedAUse() = default;
  // slices: all of the product's, segment 0's first; C's rows in `count` row blocks of at most
  // `max_rows`, and the micro-tile's mr: the plan's blocking.
  SharedAUse(SharedPackedA* shared, const GemmArgs& g, const std::vector<KSlice>& all, Isa isa, int64_t count,
             int64_t max_rows, int mr, const gemm_kernel_table& kt) {
    if (!shared || all.empty() || all.front().seg != &g.segments.front()) return;
    const GemmSegment& s0 = g.segments.front();
    const SharedPackedA::Key key{s0.a.data, s0.a.dtype, s0.a.ld, s0.a.trans, g.m, s0.k, g.alpha * s0.scale,
                                 all.front().format, isa};
    while (slices < int(all.size()) && all[size_t(slices)].seg == &s0) ++slices;
    const GemmBlocking bl = kt.gemm_blocking(key.format);
    row_blocks = count;
    block_bytes = round_up(max_rows, mr) * round_up(bl.kc, bl.k_pack) * bl.elem_bytes;
    owner = shared;
    if (shared->filled_) {
      const SharedPackedA::Key& k = shared->key_;
      const bool same = k.data == key.data && k.dtype == key.dtype && k.ld == key.ld && k.trans == key.trans &&
                        k.m == key.m && k.k == key.k && k.scale == key.scale && k.format == key.format && k.isa == key.isa;
      if (!same) return;
      mode = Mode::read;
    } else {
      const size_t bytes = size_t(slices * row_blocks * block_bytes);
      if (shared->capacity_ < bytes) {
        shared->memory_.reset(new unsigned char[bytes + 64]);
        shared->capacity_ = bytes;
      }
      shared->key_ = key;
      mode = Mode::fill;
    }
    blocks = reinterpret_cast<unsigned char*>((reinterpret_cast<uintptr_t>(shared->memory_.get()) + 63) & ~uintptr_t(63));
  }
  bool covers(int slice) const { return mode != Mode::none && slice < slices; }
  // Whether slice `slice`'s A is already packed (no need to pack it).
  bool ready(int slice) const { return mode == Mode::read && slice < slices; }
  unsigned char* block(int slice, int64_t rb) const { return blocks + (slice * row_blocks + rb) * block_bytes; }
  void finish() const {
    if (mode == Mode::fill) owner->filled_ = true;
  }
};

namespace {

struct Plan {
  const GemmArgs& g;
  const gemm_kernel_table& kt;
  int mr = 0, nr = 0;  // the micro-tile, the same for every format of the ISA
  int k_pack[3] = {};  // k values per packed element, by format
  std::vector<KSlice> slices;
  std::vector<Pass> passes;
  int max_pass = 1;  // slices in the longest pass: the packed blocks each pass needs at once
  int threads = 1;
  int64_t row_block = 0, col_block = 0, a_block_bytes = 0, b_block_bytes = 0;
  int64_t row_blocks = 0;  // C's rows in blocks of row_block; the last one holds the rest (see gemm())

  SharedAUse shared;

  bool accumulate(const Pass& pass) const { return g.accumulate || &pass != &passes.front(); }
  int64_t block_rows(int64_t rb) const { return rb + 1 < row_blocks ? row_block : g.m - rb * row_block; }
  // Where slice `slice`'s packed A row block `rb` is: in the SharedPackedA it uses, or at `scratch`.
  unsigned char* a_block(int slice, int64_t rb, unsigned char* scratch) const {
    return shared.covers(slice) ? shared.block(slice, rb) : scratch;
  }
  void pack_a(const KSlice& s, int64_t r, int64_t rows, void* dst) const {
    kt.gemm_pack_a(s.format, s.seg->a, r, rows, s.k0, s.kc, g.alpha * s.seg->scale, dst);
  }
  void pack_b(const KSlice& s, int64_t c, int64_t cols, void* dst) const {
    kt.gemm_pack_b(s.format, s.seg->b, c, cols, s.k0, s.kc, dst);
  }
  // B's packed panels of the slice from column c, when the segment's B was packed beforehand
  // (PrepackedBf16) for this slice's format; null otherwise.
  const void* prepacked(const KSlice& s, int64_t c) const {
    const MatrixRef& b = s.seg->b;
    const Bf16Panels* panels = b.panels;
    if (!panels || s.format != GemmFormat::bf16) return nullptr;
    if (panels->source != b.data || panels->ld != b.ld || panels->trans != b.trans) return nullptr;
    return panels->data + (c / nr) * panels->stride + (s.k0 / 2) * nr;
  }
  // C[rows, cols] at c (+)= the pass's products: slice j's A block at a[j], its B block at b[j],
  // or, for a slice whose B was packed beforehand, its panels from column `col` (b[j] unused).
  void macro(const Pass& pass, int64_t rows, int64_t cols, int64_t col, unsigned char* const* a,
             unsigned char* const* b, float* c) const {
    GemmPiece pieces[kMaxPassSlices];
    for (int j = 0; j < pass.count; ++j) {
      const KSlice& s = slices[size_t(pass.first + j)];
      const void* panels = prepacked(s, col);
      const int64_t kp = (s.kc + k_pack[int(s.format)] - 1) / k_pack[int(s.format)];
      pieces[j] = GemmPiece{a[j], panels ? panels : b[j], s.kc, panels ? s.seg->b.panels->stride : kp * nr};
    }
    kt.gemm_macro(pass.format, rows, cols, pieces, pass.count, c, g.ldc, accumulate(pass));
  }
};

// Items [0, n) split into one contiguous range per thread. A thread takes its own range front
// to back; when that is empty it takes from the back of the others'. Split the same way for
// every K slice, each thread mostly gets back the C tiles (and A rows) it has in its caches,
// and a core the OS slows down still does fewer items instead of holding up the rest.
class SplitRanges {
 public:
  SplitRanges(int threads, int64_t n) : threads_(threads), slots_(new Slot[size_t(threads)]) {
    for (int t = 0; t < threads; ++t) slots_[t].v.store(pack(n * t / threads, n * (t + 1) / threads));
  }
  bool take_own(int t, int64_t* item) { return take(t, false, item); }
  bool steal(int t, int64_t* item) {
    for (int d = 1; d < threads_; ++d)
      if (take((t + d) % threads_, true, item)) return true;
    return false;
  }

 private:
  struct alignas(64) Slot {
    std::atomic<uint64_t> v;  // front in the high half, end in the low half
  };
  static uint64_t pack(int64_t front, int64_t end) { return uint64_t(front) << 32 | uint64_t(end); }
  bool take(int t, bool from_back, int64_t* item) {
    uint64_t cur = slots_[t].v.load(std::memory_order_relaxed);
    for (;;) {
      const int64_t front = int64_t(cur >> 32), end = int64_t(cur & 0xffffffffu);
      if (front >= end) return false;
      const uint64_t next = from_back ? pack(front, end - 1) : pack(front + 1, end);
      if (slots_[t].v.compare_exchange_weak(cur, next, std::memory_order_relaxed)) {
        *item = from_back ? end - 1 : front;
        return true;
      }
    }
  }
  int threads_;
  std::unique_ptr<Slot[]> slots_;
};

// Few rows (a short batch, decoding): B dominates and each packed block of B is used once, so
// the thread that packs it uses it. One region: each thread packs all of A for itself, then
// takes column blocks from the counter and runs them through every pass.
void gemm_few_rows(const Plan& p) {
  const GemmArgs& g = p.g;
  const int64_t row_blocks = p.row_blocks;
  const int64_t a_slice_bytes = row_blocks * p.a_block_bytes;
  const int64_t col_blocks = (g.n + p.col_block - 1) / p.col_block;
  std::atomic<int64_t> next{0};
  parallel_for(std::min<int64_t>(p.threads, col_blocks), [&](int64_t, int64_t, int) {
    const int64_t a_bytes = a_slice_bytes * int64_t(p.slices.size());
    auto* packed_a = static_cast<unsigned char*>(thread_scratch(size_t(a_bytes + p.max_pass * p.b_block_bytes)));
    unsigned char* packed_b = packed_a + a_bytes;
    for (size_t si = 0; si < p.slices.size(); ++si)
      for (int64_t rb = 0; rb < row_blocks && !p.shared.ready(int(si)); ++rb)
        p.pack_a(p.slices[si], rb * p.row_block, p.block_rows(rb),
                 packed_a + int64_t(si) * a_slice_bytes + rb * p.a_block_bytes);
    unsigned char* a[kMaxPassSlices];
    unsigned char* b[kMaxPassSlices];
    for (int64_t cb; (cb = next.fetch_add(1, std::memory_order_relaxed)) < col_blocks;) {
      const int64_t c = cb * p.col_block, nc = std::min(p.col_block, g.n - c);
      for (const Pass& pass : p.passes) {
        for (int j = 0; j < pass.count; ++j) {
          const KSlice& s = p.slices[size_t(pass.first + j)];
          b[j] = packed_b + j * p.b_block_bytes;
          if (!p.prepacked(s, c)) p.pack_b(s, c, nc, b[j]);
        }
        for (int64_t rb = 0; rb < row_blocks; ++rb) {
          const int64_t r = rb * p.row_block;
          for (int j = 0; j < pass.count; ++j) {
            const int si = pass.first + j;
            a[j] = p.a_block(si, rb, packed_a + int64_t(si) * a_slice_bytes + rb * p.a_block_bytes);
          }
          p.macro(pass, p.block_rows(rb), nc, c, a, b, g.c + r * g.ldc + c);
        }
      }
    }
  });
}

// Few columns (LoRA's rank-r products: C is one column block): A dominates and each packed block
// of A is used once, so the thread that packs it uses it at once, from its L2. Each thread packs
// all of B for itself, then takes row blocks from the counter and runs them through every pass.
void gemm_few_cols(const Plan& p) {
  const GemmArgs& g = p.g;
  const int64_t row_blocks = p.row_blocks;
  std::atomic<int64_t> next{0};
  parallel_for(std::min<int64_t>(p.threads, row_blocks), [&](int64_t, int64_t, int) {
    const int64_t b_bytes = p.b_block_bytes * int64_t(p.slices.size());
    auto* packed_b = static_cast<unsigned char*>(thread_scratch(size_t(b_bytes + p.max_pass * p.a_block_bytes)));
    unsigned char* packed_a = packed_b + b_bytes;
    for (size_t si = 0; si < p.slices.size(); ++si)
      if (!p.prepacked(p.slices[si], 0)) p.pack_b(p.slices[si], 0, g.n, packed_b + int64_t(si) * p.b_block_bytes);
    unsigned char* a[kMaxPassSlices];
    unsigned char* b[kMaxPassSlices];
    for (int64_t rb; (rb = next.fetch_add(1, std::memory_order_relaxed)) < row_blocks;) {
      const int64_t r = rb * p.row_block, rows = p.block_rows(rb);
      for (const Pass& pass : p.passes) {
        for (int j = 0; j < pass.count; ++j) {
          const int si = pass.first + j;
          a[j] = p.a_block(si, rb, packed_a + j * p.a_block_bytes);
          b[j] = packed_b + int64_t(si) * p.b_block_bytes;
          if (!p.shared.ready(si)) p.pack_a(p.slices[size_t(si)], r, rows, a[j]);
        }
        p.macro(pass, rows, g.n, 0, a, b, g.c + r * g.ldc);
      }
    }
  });
}

// Packs each K slice of A and B once, into blocks the threads share, and computes C's tiles
// from them, the items split between the threads by SplitRanges. Two sets of packed blocks
// alternate: the region that computes pass p's tiles also packs pass p + 1's slices, so a GEMM
// of P passes has P + 1 regions, and a thread out of tiles packs or steals instead of waiting.
// The packed slices, (rows + columns) x KC each, stay in L3; C is updated once per pass.
void gemm_shared_slices(const Plan& p) {
  const GemmArgs& g = p.g;
  // Chunks of C: whole blocks, at least one, within the budget.
  const int64_t blocks_per_chunk = std::max<int64_t>(1, kPackBudget / p.a_block_bytes);
  const int64_t cols_per_chunk = p.col_block * std::max<int64_t>(1, kPackBudget / p.b_block_bytes);
  const int64_t a_bytes = std::min(blocks_per_chunk, p.row_blocks) * p.a_block_bytes;
  const int64_t b_bytes = (std::min(cols_per_chunk, g.n) + p.col_block - 1) / p.col_block * p.b_block_bytes;
  // [set][slot]: the packed A and B of slice `slot` of a pass, in one of the two alternating sets
  const int64_t slots = p.max_pass;
  auto* scratch = static_cast<unsigned char*>(thread_scratch(size_t(2 * slots * (a_bytes + b_bytes))));
  auto packed_a = [&](int64_t set, int64_t slot) { return scratch + (set * slots + slot) * a_bytes; };
  auto packed_b = [&](int64_t set, int64_t slot) { return scratch + 2 * slots * a_bytes + (set * slots + slot) * b_bytes; };
  const int64_t passes = int64_t(p.passes.size());

  for (int64_t b0 = 0; b0 < p.row_blocks; b0 += blocks_per_chunk) {
    const int64_t row_blocks = std::min(blocks_per_chunk, p.row_blocks - b0), m0 = b0 * p.row_block;
    for (int64_t n0 = 0; n0 < g.n; n0 += cols_per_chunk) {
      const int64_t cols = std::min(cols_per_chunk, g.n - n0), col_blocks = (cols + p.col_block - 1) / p.col_block;
      // Pack unit u of pass pi: slice u / units_per_slice of the pass, its A row block or B column block.
      const int64_t units_per_slice = row_blocks + col_blocks;
      auto pack = [&](int64_t pi, int64_t u) {
        const int64_t j = u / units_per_slice, v = u % units_per_slice;
        const int si = p.passes[size_t(pi)].first + int(j);
        const KSlice& s = p.slices[size_t(si)];
        if (v < row_blocks) {
          if (!p.shared.ready(si))
            p.pack_a(s, m0 + v * p.row_block, p.block_rows(b0 + v),
                     p.a_block(si, b0 + v, packed_a(pi & 1, j) + v * p.a_block_bytes));
        } else if (const int64_t cb = v - row_blocks, c = n0 + cb * p.col_block; !p.prepacked(s, c)) {
          p.pack_b(s, c, std::min(p.col_block, n0 + cols - c), packed_b(pi & 1, j) + cb * p.b_block_bytes);
        }
      };
      // Tiles go along a row block first: a thread's next tile often reuses its A block in L2.
      auto tile = [&](int64_t pi, int64_t t) {
        const Pass& pass = p.passes[size_t(pi)];
        const int64_t rb = t / col_blocks, cb = t % col_blocks;
        const int64_t r = m0 + rb * p.row_block, c = n0 + cb * p.col_block;
        unsigned char* a[kMaxPassSlices];
        unsigned char* b[kMaxPassSlices];
        for (int j = 0; j < pass.count; ++j) {
          a[j] = p.a_block(pass.first + j, b0 + rb, packed_a(pi & 1, j) + rb * p.a_block_bytes);
          b[j] = packed_b(pi & 1, j) + cb * p.b_block_bytes;
        }
        p.macro(pass, p.block_rows(b0 + rb), std::min(p.col_block, n0 + cols - c), c, a, b, g.c + r * g.ldc + c);
      };
      const int threads = int(std::min<int64_t>(p.threads, row_blocks * col_blocks));
      for (int64_t pi = 0; pi <= passes; ++pi) {
        SplitRanges tiles(threads, pi > 0 ? row_blocks * col_blocks : 0);
        SplitRanges packs(threads, pi < passes ? p.passes[size_t(pi)].count * units_per_slice : 0);
        // Ranges are numbered by the region's items, not by pool thread: a region nested in
        // another runs them all, one after the other, on the calling thread.
        parallel_for(threads, [&](int64_t begin, int64_t end, int) {
          for (int t = int(begin); t < int(end); ++t) {
            int64_t u;
            while (tiles.take_own(t, &u)) tile(pi - 1, u);
            while (packs.take_own(t, &u)) pack(pi, u);
            while (tiles.steal(t, &u)) tile(pi - 1, u);
            while (packs.steal(t, &u)) pack(pi, u);
          }
        });
      }
    }
  }
}

}  // namespace

void gemm(const GemmArgs& g, SharedPackedA* shared_a) {
  if (g.m <= 0 || g.n <= 0) return;
  const Isa isa = active_isa();
  Plan p{g, gemm_kernels_for(isa), 0, 0, {}, {}, {}, 1, 1, 0, 0, 0, 0, 0, {}};
  // Each segment is cut into slices of its format's KC; mc is shared by the formats.
  int64_t k_total = 0, mc = 0;
  bool uses[3] = {};
  for (const GemmSegment& s : g.segments) {
    const GemmFormat f = segment_format(g.precision, isa, s);
    const GemmBlocking bl = p.kt.gemm_blocking(f);
    for (int64_t k0 = 0; k0 < s.k; k0 += bl.kc) p.slices.push_back({&s, k0, std::min<int64_t>(bl.kc, s.k - k0), f});
    k_total += s.k;
    uses[int(f)] = true;
    p.k_pack[int(f)] = bl.k_pack;
    p.mr = bl.mr;
    p.nr = bl.nr;
    mc = bl.mc;
  }
  for (int i = 0; i < int(p.slices.size()); ++i) {
    const KSlice& s = p.slices[size_t(i)];
    Pass* last = p.passes.empty() ? nullptr : &p.passes.back();
    if (last && last->format == s.format && s.kc <= kShortSlice && last->count < kMaxPassSlices) ++last->count;
    else p.passes.push_back(Pass{i, 1, s.format});
    p.max_pass = std::max(p.max_pass, p.passes.back().count);
  }
  if (p.slices.empty()) {  // an empty product: C = 0 (or unchanged when accumulating)
    if (!g.accumulate)
      parallel_for(g.m, [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) std::fill(g.c + i * g.ldc, g.c + i * g.ldc + g.n, 0.0f);
      });
    return;
  }

  // A product under ~1 MFLOP runs on one thread: waking the others costs more than it saves.
  p.threads = 2.0 * double(g.m) * double(g.n) * double(k_total) < 1e6 ? 1 : ThreadPool::instance().num_threads();
  p.row_block = mc;
  // Rows past the last whole block make a block of their own when they are at least half one,
  // and join the last whole block otherwise: a block of a few rows would read every B block
  // again for little work (1024 rows: 8 blocks of 112 and one of 128, not 9 and one of 16).
  const int64_t whole = g.m / mc, rest = g.m % mc;
  p.row_blocks = whole == 0 ? 1 : whole + (2 * rest >= mc ? 1 : 0);
  const int64_t row_blocks = p.row_blocks, max_block_rows = std::max(p.row_block, p.block_rows(row_blocks - 1));
  // Narrower tiles when C has few, so every thread gets several: the last tile of each region
  // keeps one thread busy while the others wait.
  p.col_block = round_up(std::min<int64_t>(kTileCols, g.n), p.nr);
  while (p.col_block / 2 >= kMinTileCols && row_blocks * ((g.n + p.col_block - 1) / p.col_block) < 8 * p.threads)
    p.col_block = round_up(p.col_block / 2, p.nr);
  // A packed block holds whole rows of KC elements, a B block KC (rounded to whole pairs) per
  // column; the largest of the formats in use. Both are multiples of 64 bytes, so every packed
  // block starts on a cache line.
  for (int f = 0; f < 3; ++f) {
    if (!uses[f]) continue;
    const GemmBlocking bl = p.kt.gemm_blocking(GemmFormat(f));
    const int64_t kc = round_up(bl.kc, bl.k_pack);
    p.a_block_bytes = std::max(p.a_block_bytes, round_up(max_block_rows, p.mr) * kc * bl.elem_bytes);
    p.b_block_bytes = std::max(p.b_block_bytes, p.col_block * kc * bl.elem_bytes);
  }
  const bool few_rows = row_blocks <= 2;
  p.shared = SharedAUse(shared_a, g, p.slices, isa, row_blocks, max_block_rows, p.mr, p.kt);
  // Each thread of gemm_few_rows packs all of A for itself: it reads a SharedPackedA, never fills one.
  if (few_rows && p.shared.mode == SharedAUse::Mode::fill) p.shared = SharedAUse();
  if (few_rows)
    gemm_few_rows(p);
  else if (g.n <= p.col_block)
    gemm_few_cols(p);
  else
    gemm_shared_slices(p);
  p.shared.finish();
}

PrepackedBf16::PrepackedBf16(const MatrixRef& b, int64_t n, int64_t k) {
  if (!isa_supported(Isa::avx512bf16) || n <= 0 || k <= 0) return;
  const gemm_kernel_table& kt = gemm_kernels_for(Isa::avx512bf16);
  const GemmBlocking bl = kt.gemm_blocking(GemmFormat::bf16);
  const int64_t panels = (n + bl.nr - 1) / bl.nr, stride = (k + 1) / 2 * bl.nr;
  words_.reset(new uint32_t[size_t(panels * stride)]);
  // One whole-K packing per group of panels: the B packing of a product, with KC = k.
  constexpr int64_t kGroup = 8;
  parallel_for((panels + kGroup - 1) / kGroup, [&](int64_t begin, int64_t end, int) {
    for (int64_t g = begin; g < end; ++g) {
      const int64_t c0 = g * kGroup * bl.nr, cols = std::min(kGroup * bl.nr, n - c0);
      kt.gemm_pack_b(GemmFormat::bf16, b, c0, cols, 0, k, words_.get() + g * kGroup * stride);
    }
  });
  panels_ = Bf16Panels{words_.get(), stride, b.data, b.ld, b.trans};
}

MatrixRef PrepackedBf16::attach(MatrixRef b) const {
  if (words_) b.panels = &panels_;
  return b;
}

}  // namespace ernie::cpu
