#include "cpu/attention.h"

#include <algorithm>
#include <atomic>
#include <functional>
#include <memory>
#include <vector>

#include "cpu/threadpool.h"

ERNIE_DEFINE_KERNELS(attention, ERNIE_ATTENTION_KERNELS)

namespace ernie::cpu {
namespace {

// Memory the backward's dq accumulators may take when it splits key tiles into chunks for
// balance (see attention_backward); one accumulator is allocated whatever its size.
constexpr int64_t kMaxDqPartialBytes = int64_t(256) << 20;

// work(i, scratch) for every i in [0, n): the pool's threads take items one at a time from a
// shared counter, so items of unequal cost (causal tiles) still finish together when they are
// listed heaviest first.
void run_items(int64_t n, size_t scratch_bytes, const std::function<void(int64_t, void*)>& work) {
  if (n <= 0) return;
  ThreadPool& pool = ThreadPool::instance();
  std::atomic<int64_t> next{0};
  parallel_for(std::min<int64_t>(n, pool.num_threads()), [&](int64_t, int64_t, int) {
    void* scratch = thread_scratch(scratch_bytes);
    for (int64_t i = next.fetch_add(1); i < n; i = next.fetch_add(1)) work(i, scratch);
  });
}

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// The temporary floats of one call: the caller's scratch when it is large enough (a training
// step passes memory it reuses, see Backend::attention_scratch_floats); otherwise up to
// kKeptBytes stay allocated per calling thread for the next call, and more is allocated for this
// call alone: at short sequences, fresh pages (faults and zeroing) took ~10% of the time.
constexpr size_t kKeptBytes = size_t(16) << 20;
class Workspace {
 public:
  Workspace(const AttentionArgs& g, int64_t floats) {
    thread_local std::vector<float> kept;
    if (g.scratch && g.scratch_floats >= floats) {
      data_ = g.scratch;
    } else if (size_t(floats) * sizeof(float) <= kKeptBytes) {
      if (kept.size() < size_t(floats)) kept.resize(size_t(floats));
      data_ = kept.data();
    } else {
      owned_.reset(new float[size_t(floats)]);  // uninitialised: every user writes before reading
      data_ = owned_.get();
    }
  }
  float* data() const { return data_; }

 private:
  float* data_ = nullptr;
  std::unique_ptr<float[]> owned_;
};

// The forward's temporary memory: every key tile, packed.
int64_t forward_floats(const AttentionArgs& g) {
  const attention_kernel_table& kt = attention_kernels();
  const int64_t k_tiles = ceil_div(g.tk, kt.attention_blocking().fwd_k_tile);
  return g.batch * g.kv_heads * k_tiles * int64_t(kt.attention_fwd_kv_tile_floats(g.head_dim));
}

// How the backward splits its work, and the temporary memory that takes (see attention_backward).
struct BackwardPlan {
  int64_t q_size, k_tile, k_tiles, groups, chunks, kv_tile_floats;
  explicit BackwardPlan(const AttentionArgs& g) {
    const attention_kernel_table& kt = attention_kernels();
    const int64_t threads = ThreadPool::instance().num_threads();
    q_size = g.batch * g.tq * g.heads * g.head_dim;
    k_tile = kt.attention_blocking().bwd_k_tile;
    k_tiles = ceil_div(g.tk, k_tile);
    groups = g.batch * g.kv_heads;
    chunks = 1;
    if (groups % threads != 0 && groups < 4 * threads) chunks = ceil_div(4 * threads, groups);
    chunks = std::max<int64_t>(1, std::min({chunks, k_tiles, kMaxDqPartialBytes / std::max<int64_t>(1, q_size * 4)}));
    kv_tile_floats = int64_t(kt.attention_bwd_kv_tile_floats(g.head_dim));
  }
  // q and dout head-major, the dq accumulators, delta, the packed key tiles.
  int64_t floats(const AttentionArgs& g) const {
    return (2 + chunks) * q_size + g.batch * g.heads * g.tq + groups * k_tiles * kv_tile_floats;
  }
};

}  // namespace

int64_t attention_scratch_floats(const AttentionArgs& g, bool backward) {
  return backward ? BackwardPlan(g).floats(g) : forward_floats(g);
}

// K and V are packed once, tile by tile (K rows contiguous, V as the panels P . V reads), and
// shared by every query head of their group and every query tile.
void attention_forward(const AttentionArgs& g) {
  const attention_kernel_table& kt = attention_kernels();
  const AttentionBlocking bl = kt.attention_blocking();
  const int64_t k_tiles = ceil_div(g.tk, bl.fwd_k_tile), kv_rows = g.batch * g.kv_heads;
  const int64_t tile_floats = int64_t(kt.attention_fwd_kv_tile_floats(g.head_dim));
  Workspace kv_tiles(g, forward_floats(g));
  parallel_for(kv_rows * k_tiles, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t)
      kt.attention_fwd_pack_kv(g, t / k_tiles / g.kv_heads, t / k_tiles % g.kv_heads, t % k_tiles * bl.fwd_k_tile,
                               kv_tiles.data() + t * tile_floats);
  });

  const int64_t q_tiles = ceil_div(g.tq, bl.fwd_q_tile), rows = g.batch * g.heads;
  // Items (query tile, batch, head), the last query tiles first: they see the most keys.
  run_items(q_tiles * rows, kt.attention_fwd_scratch_bytes(g.head_dim), [&](int64_t i, void* scratch) {
    const int64_t tile = q_tiles - 1 - i / rows, bh = i % rows;
    kt.attention_fwd_tile(g, kv_tiles.data(), bh / g.heads, bh % g.heads, tile * bl.fwd_q_tile, scratch);
  });
}

// The backward runs over key tiles: a work item owns the dk/dv rows of its keys (summed over
// the query heads of their kv group inside the item), so they need no synchronisation. dq is
// what several items would add into: every key tile of a (batch, kv head) touches the same dq
// rows. Items are (chunk, batch, kv head), a chunk being every C-th key tile; chunk c adds into
// its own dq accumulator, and the accumulators are summed into dq at the end. Items with the
// same chunk write disjoint rows, items of different chunks different buffers: no races, and a
// summation order fixed by C. C = 1 when the (batch, kv head) pairs alone split evenly over the
// threads; otherwise enough chunks to balance, within kMaxDqPartialBytes.
// Temporary memory: head-major copies of q and dout, C dq accumulators (each like q), and the key
// tiles packed (K^T, V^T and K panels: about 3x k).
void attention_backward(const AttentionArgs& g) {
  const attention_kernel_table& kt = attention_kernels();
  const int64_t B = g.batch, H = g.heads, KV = g.kv_heads, D = g.head_dim, Tq = g.tq;
  const BackwardPlan plan(g);
  const int64_t q_size = plan.q_size, k_tile = plan.k_tile, k_tiles = plan.k_tiles, groups = plan.groups;
  const int64_t chunks = plan.chunks, kv_tile_floats = plan.kv_tile_floats;
  if (k_tiles == 0 || groups == 0) return;

  // q and dout head-major, the dq accumulators, delta: the gather pass writes or zeroes them all.
  // Then the key tiles, packed once for every query head of their group.
  Workspace work(g, plan.floats(g));
  float* dq_acc = work.data() + 2 * q_size;
  AttentionBwdRows rows{work.data(), work.data() + q_size, dq_acc + chunks * q_size, nullptr};
  float* kv_tiles = rows.delta + B * H * Tq;
  parallel_for(groups * k_tiles, [&](int64_t t0, int64_t t1, int) {
    for (int64_t t = t0; t < t1; ++t)
      kt.attention_bwd_pack_kv(g, t / k_tiles / KV, t / k_tiles % KV, t % k_tiles * k_tile, kv_tiles + t * kv_tile_floats);
  });
  parallel_for(B * Tq, [&](int64_t r0, int64_t r1, int) {
    kt.attention_bwd_gather(g, r0, r1 - r0, rows);
    for (int64_t r = r0; r < r1; ++r)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t c = 0; c < chunks; ++c) {
          float* acc = dq_acc + c * q_size + ((r / Tq * H + h) * Tq + r % Tq) * D;
          std::fill(acc, acc + D, 0.0f);
        }
  });

  run_items(chunks * groups, kt.attention_bwd_scratch_bytes(D), [&](int64_t i, void* scratch) {
    const int64_t chunk = i / groups, b = (i % groups) / KV, kv = i % KV;
    AttentionBwdRows mine = rows;
    mine.dq = dq_acc + chunk * q_size;
    // Head by head: one head's rows of q, dout and dq are what each key tile streams through,
    // and they stay in cache from one key tile to the next, where all the group's would not.
    for (int64_t h = kv * (H / KV); h < (kv + 1) * (H / KV); ++h)
      for (int64_t tile = chunk; tile < k_tiles; tile += chunks)
        kt.attention_bwd_tile(g, mine, kv_tiles + ((b * KV + kv) * k_tiles + tile) * kv_tile_floats, b, h,
                              tile * k_tile, scratch);
  });

  // dq = the sum of the accumulators, back in [B, Tq, H, D].
  parallel_for(B * Tq, [&](int64_t r0, int64_t r1, int) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / Tq, i = r % Tq;
      for (int64_t h = 0; h < H; ++h) {
        float* dst = g.dq + (r * H + h) * D;
        const float* src = dq_acc + ((b * H + h) * Tq + i) * D;
        std::copy(src, src + D, dst);
        for (int64_t c = 1; c < chunks; ++c)
          for (int64_t d = 0; d < D; ++d) dst[d] += src[c * q_size + d];
      }
    }
  });
}

}  // namespace ernie::cpu
