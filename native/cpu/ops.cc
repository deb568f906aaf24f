#include "cpu/ops.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "cpu/threadpool.h"

ERNIE_DEFINE_KERNELS(ops, ERNIE_OPS_KERNELS)

namespace ernie::cpu {
namespace {

// Below this many elements a call runs on the calling thread: waking the pool costs more.
constexpr int64_t kSerialElements = 1 << 14;

// fn(begin, end) over [0, n), in parallel when n items of `cost` elements each are worth it.
template <typename Fn>
void for_range(int64_t n, int64_t cost, const Fn& fn) {
  if (n <= 0) return;
  if (n * cost <= kSerialElements) {
    fn(int64_t(0), n);
    return;
  }
  parallel_for(n, [&](int64_t begin, int64_t end, int) { fn(begin, end); });
}

// An f32 view of a weight vector: the data itself, or a widened copy held in `copy`.
const float* as_f32(const void* data, DType dtype, int64_t n, std::vector<float>& copy) {
  if (dtype == DType::f32) return static_cast<const float*>(data);
  copy.resize(size_t(n));
  ops_kernels().bf16_to_f32(static_cast<const uint16_t*>(data), copy.data(), n);
  return copy.data();
}

struct RopeBuffers {
  std::vector<int32_t> positions, distinct;
  std::vector<float> cos_table, sin_table;
};

// Column slices of the embedding gradient are whole cache lines, so threads never share one.
constexpr int64_t kColumnBlock = 16;

}  // namespace

void rmsnorm_forward(const RmsNormForwardArgs& a) {
  const ops_kernel_table& kt = ops_kernels();
  std::vector<float> widened;
  const float* w = as_f32(a.weight, a.weight_dtype, a.dim, widened);
  for_range(a.rows, a.dim, [&](int64_t r0, int64_t r1) {
    kt.rmsnorm_fwd(a.x + r0 * a.dim, w, r1 - r0, a.dim, a.eps, a.out + r0 * a.dim, a.rstd ? a.rstd + r0 : nullptr);
  });
}

void rmsnorm_backward(const RmsNormBackwardArgs& a) {
  const ops_kernel_table& kt = ops_kernels();
  std::vector<float> widened;
  const float* w = as_f32(a.weight, a.weight_dtype, a.dim, widened);
  auto rows = [&](int64_t r0, int64_t r1, float* dw_partial) {
    kt.rmsnorm_bwd(a.dout + r0 * a.dim, a.x + r0 * a.dim, w, a.rstd + r0, r1 - r0, a.dim, a.dx + r0 * a.dim,
                   a.accumulate, dw_partial);
  };
  if (!a.dweight) {
    for_range(a.rows, a.dim, [&](int64_t r0, int64_t r1) { rows(r0, r1, nullptr); });
    return;
  }
  if (a.rows == 0) return;
  // dweight: one partial sum per block of rows, the blocks fixed by the row count alone, then
  // summed in block order. The result does not depend on how threads split the blocks.
  const int64_t blocks = std::min<int64_t>(a.rows, 64);
  thread_local std::vector<float> partial_buffer;  // kept across calls, as rope() keeps its tables
  std::vector<float>& partial = partial_buffer;
  partial.assign(size_t(blocks * a.dim), 0.0f);
  for_range(blocks, a.rows / blocks * a.dim, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) rows(a.rows * b / blocks, a.rows * (b + 1) / blocks, partial.data() + b * a.dim);
  });
  const int64_t column_blocks = (a.dim + kColumnBlock - 1) / kColumnBlock;
  for_range(column_blocks, blocks * kColumnBlock, [&](int64_t c0, int64_t c1) {
    const int64_t j0 = c0 * kColumnBlock, j1 = std::min(a.dim, c1 * kColumnBlock);
    float* total = partial.data() + j0;
    for (int64_t b = 1; b < blocks; ++b) kt.add_into(total, partial.data() + b * a.dim + j0, j1 - j0);
    kt.add_into(a.dweight + j0, total, j1 - j0);
  });
}

void rope(const RopeArgs& a) {
  if (a.rows == 0 || a.heads == 0) return;
  const ops_kernel_table& kt = ops_kernels();
  const int64_t hd = a.head_dim, half = hd / 2;
  // Buffers kept by the calling thread across calls: fresh allocations of this size cost more in
  // page faults than the rotation itself. Workers reach them through these references (a
  // thread_local named inside a lambda would be the worker's own).
  thread_local RopeBuffers buffers;
  std::vector<int32_t>& pos = buffers.positions;
  std::vector<int32_t>& distinct = buffers.distinct;
  std::vector<float>& cos_table = buffers.cos_table;
  std::vector<float>& sin_table = buffers.sin_table;
  // The positions are read once: a caller's array changing underneath cannot misindex the table.
  pos.assign(a.positions, a.positions + a.rows);
  distinct.assign(pos.begin(), pos.end());
  std::sort(distinct.begin(), distinct.end());
  distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
  const int64_t n_distinct = int64_t(distinct.size());

  std::vector<double> inv_freq(static_cast<size_t>(half)), step_cos(inv_freq), step_sin(inv_freq);
  for (int64_t i = 0; i < half; ++i) {
    inv_freq[i] = std::pow(a.theta, -2.0 * double(i) / double(hd));
    step_cos[i] = std::cos(inv_freq[i]);
    step_sin[i] = std::sin(inv_freq[i]);
  }

  // Per distinct position, each element's cos and signed sin (see rope_rotate):
  //   adjacent: out[2i] = x[2i] c - x[2i+1] s,  out[2i+1] = x[2i+1] c + x[2i] s
  //   half:     out[i] = x[i] c - x[i+half] s,  out[i+half] = x[i+half] c + x[i] s
  // Angles are taken in double (in f32, pos ~1e5 would be off by ~4e-3 rad). cos and sin are
  // called afresh at the start of each block of kTableBlock positions and after a gap; from a
  // position to the next they follow by one rotation by inv_freq, in double (error ~1e-16 per
  // step), which is much cheaper. Blocks are fixed, so the table does not depend on threads.
  constexpr int64_t kTableBlock = 256;
  cos_table.resize(size_t(n_distinct * hd));
  sin_table.resize(size_t(n_distinct * hd));
  const double sign = a.inverse ? -1.0 : 1.0;
  const int64_t table_blocks = (n_distinct + kTableBlock - 1) / kTableBlock;
  for_range(table_blocks, kTableBlock * hd, [&](int64_t b0, int64_t b1) {
    std::vector<double> c(static_cast<size_t>(half)), s(static_cast<size_t>(half));
    for (int64_t u = b0 * kTableBlock; u < std::min(n_distinct, b1 * kTableBlock); ++u) {
      const bool next = u % kTableBlock != 0 && distinct[u] == distinct[u - 1] + 1;
      float* ct = cos_table.data() + u * hd;
      float* st = sin_table.data() + u * hd;
      for (int64_t i = 0; i < half; ++i) {
        if (next) {
          const double ci = c[i] * step_cos[i] - s[i] * step_sin[i];
          s[i] = s[i] * step_cos[i] + c[i] * step_sin[i];
          c[i] = ci;
        } else {
          const double angle = double(distinct[u]) * inv_freq[i];
          c[i] = std::cos(angle);
          s[i] = std::sin(angle);
        }
        const int64_t first = a.pairing == RopePairing::adjacent ? 2 * i : i;
        const int64_t second = a.pairing == RopePairing::adjacent ? 2 * i + 1 : i + half;
        ct[first] = ct[second] = float(c[i]);
        st[first] = float(-sign * s[i]);
        st[second] = float(sign * s[i]);
      }
    }
  });

  const int64_t row_elems = a.heads * hd;
  for_range(a.rows, row_elems, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t u = std::lower_bound(distinct.begin(), distinct.end(), pos[r]) - distinct.begin();
      kt.rope_rotate(a.x + r * row_elems, a.out + r * row_elems, cos_table.data() + u * hd, sin_table.data() + u * hd,
                     a.heads, hd, int(a.pairing));
    }
  });
}

// SwiGLU's rows are split into chunks too: the split form is a single row of all n elements.
constexpr int64_t kSwigluChunk = 8192;

// fn(r, j, n) for the chunks [j, j + n) of every row r of a rows x dim SwiGLU, in parallel.
template <typename Fn>
void for_swiglu_chunks(int64_t rows, int64_t dim, Fn fn) {
  if (rows == 0 || dim == 0) return;
  const int64_t chunk = std::min(dim, kSwigluChunk), per_row = (dim + chunk - 1) / chunk;
  for_range(rows * per_row, chunk, [&](int64_t t0, int64_t t1) {
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t j = t % per_row * chunk;
      fn(t / per_row, j, std::min(chunk, dim - j));
    }
  });
}

void swiglu_forward(const SwigluForwardArgs& a) {
  const ops_kernel_table& kt = ops_kernels();
  for_swiglu_chunks(a.rows, a.dim, [&](int64_t r, int64_t j, int64_t n) {
    kt.swiglu_fwd(a.gate + r * a.in_ld + j, a.up + r * a.in_ld + j, a.out + r * a.dim + j, n);
  });
}

void swiglu_backward(const SwigluBackwardArgs& a) {
  const ops_kernel_table& kt = ops_kernels();
  for_swiglu_chunks(a.rows, a.dim, [&](int64_t r, int64_t j, int64_t n) {
    kt.swiglu_bwd(a.dout + r * a.dim + j, a.gate + r * a.in_ld + j, a.up + r * a.in_ld + j,
                  a.dgate + r * a.grad_ld + j, a.dup + r * a.grad_ld + j, n);
  });
}

void embedding_forward(const EmbeddingForwardArgs& a) {
  const ops_kernel_table& kt = ops_kernels();
  for_range(a.n, a.dim, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const int64_t row = int64_t(a.ids[k]) * a.dim;
      if (a.table_dtype == DType::f32)
        std::memcpy(a.out + k * a.dim, static_cast<const float*>(a.table) + row, size_t(a.dim) * sizeof(float));
      else
        kt.bf16_to_f32(static_cast<const uint16_t*>(a.table) + row, a.out + k * a.dim, a.dim);
    }
  });
}

void embedding_backward(const EmbeddingBackwardArgs& a) {
  const ops_kernel_table& kt = ops_kernels();
  const int64_t column_blocks = (a.dim + kColumnBlock - 1) / kColumnBlock;
  for_range(column_blocks, a.n * kColumnBlock, [&](int64_t c0, int64_t c1) {
    const int64_t j0 = c0 * kColumnBlock, j1 = std::min(a.dim, c1 * kColumnBlock);
    for (int64_t k = 0; k < a.n; ++k)
      kt.add_into(a.dtable + int64_t(a.ids[k]) * a.dim + j0, a.dout + k * a.dim + j0, j1 - j0);
  });
}

}  // namespace ernie::cpu
