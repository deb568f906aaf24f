#include "cpu/loss.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu/gemm.h"
#include "cpu/threadpool.h"

ERNIE_DEFINE_KERNELS(loss, ERNIE_LOSS_KERNELS)

namespace ernie::cpu {
namespace {

std::unique_ptr<float[]> uninitialised(int64_t n) { return std::unique_ptr<float[]>(new float[size_t(n)]); }

// drows[j] += dlogits[:, id - c0]^T . h[n, hd] for each chosen id in the chunk [c0, c0 + cn):
// dweight's product restricted to those rows (the same operands, the same precision).
void add_row_grads(const CrossEntropyArgs& a, const float* dlogits, const float* h, int64_t n, int64_t c0, int64_t cn) {
  const int64_t hd = a.hidden_size;
  for (int64_t j = 0; j < a.row_count; ++j) {
    const int64_t id = a.row_ids[j];
    if (id < c0 || id >= c0 + cn) continue;
    GemmArgs g;
    g.precision = a.precision;
    g.m = 1;
    g.n = hd;
    g.segments.push_back({{dlogits + (id - c0), DType::f32, cn, true}, {h, DType::f32, hd, true}, n});
    g.c = a.drows + j * hd;
    g.ldc = hd;
    g.accumulate = true;
    gemm(g);
  }
}

}  // namespace

CrossEntropyResult cross_entropy(const CrossEntropyArgs& a) {
  const loss_kernel_table& kt = loss_kernels();
  const int64_t hd = a.hidden_size, vocab = a.vocab;
  const bool want_grad = a.dhidden || a.dweight || a.drows;
  if (a.dhidden) {
    parallel_for(a.tokens, [&](int64_t b, int64_t e, int) {
      std::memset(a.dhidden + b * hd, 0, size_t((e - b) * hd) * sizeof(float));
    });
  }

  // Only rows with a target are computed: padded and prompt tokens cost nothing.
  std::vector<int64_t> rows;
  for (int64_t t = 0; t < a.tokens; ++t)
    if (a.targets[t] >= 0) rows.push_back(t);
  CrossEntropyResult res;
  res.count = int64_t(rows.size());
  if (res.count == 0) return res;
  const float scale = a.has_grad_scale ? a.grad_scale : float(1.0 / double(res.count));

  const int64_t chunk = std::min(a.chunk, vocab), tile = std::min(a.row_tile, res.count);
  auto logits = uninitialised(tile * chunk);
  std::unique_ptr<float[]> hidden_tile, dhidden_tile;  // for tiles whose rows are not contiguous
  std::vector<double> run_max(static_cast<size_t>(tile)), run_sum(static_cast<size_t>(tile));
  std::vector<float> target_logit(static_cast<size_t>(tile)), lse(static_cast<size_t>(tile));
  const size_t welem = size_t(dtype_size(a.weight_dtype));
  auto weight_rows = [&](int64_t v0) { return static_cast<const unsigned char*>(a.weight) + size_t(v0 * hd) * welem; };

  // logits[n, cn] = h[n, hd] . W[c0 : c0 + cn]^T
  auto chunk_logits = [&](const float* h, int64_t n, int64_t c0, int64_t cn) {
    GemmArgs g;
    g.precision = a.precision;
    g.m = n;
    g.n = cn;
    g.segments.push_back({{h, DType::f32, hd, false}, {weight_rows(c0), a.weight_dtype, hd, false}, hd});
    g.c = logits.get();
    g.ldc = cn;
    gemm(g);
  };

  for (int64_t r0 = 0; r0 < res.count; r0 += tile) {
    const int64_t n = std::min(tile, res.count - r0);
    const int64_t* tile_rows = rows.data() + r0;
    const bool contiguous = tile_rows[n - 1] - tile_rows[0] == n - 1;
    const float* h = a.hidden + tile_rows[0] * hd;
    if (!contiguous) {
      if (!hidden_tile) hidden_tile = uninitialised(tile * hd);
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(hidden_tile.get() + i * hd, a.hidden + tile_rows[i] * hd, size_t(hd) * sizeof(float));
      h = hidden_tile.get();
    }

    // (a) online max / sum-exp over the chunks, and the target's logit
    std::fill(run_max.begin(), run_max.end(), -INFINITY);
    std::fill(run_sum.begin(), run_sum.end(), 0.0);
    for (int64_t c0 = 0; c0 < vocab; c0 += chunk) {
      const int64_t cn = std::min(chunk, vocab - c0);
      chunk_logits(h, n, c0, cn);
      parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) {
          const float* row = logits.get() + i * cn;
          float cmax, csum;
          kt.ce_chunk_stats(row, cn, &cmax, &csum);
          const double m_old = run_max[i];
          const double m_new = cmax <= m_old ? m_old : double(cmax);  // a NaN cmax carries on
          if (csum > 0.0f || std::isnan(csum))
            run_sum[i] = run_sum[i] * std::exp(m_old - m_new) + double(csum) * std::exp(double(cmax) - m_new);
          run_max[i] = m_new;
          const int64_t target = a.targets[tile_rows[i]];
          if (target >= c0 && target < c0 + cn) target_logit[i] = row[target - c0];
        }
      });
    }
    for (int64_t i = 0; i < n; ++i) {
      const double row_lse = run_max[i] + std::log(run_sum[i]);
      lse[i] = float(row_lse);
      res.loss_sum += row_lse - double(target_logit[i]);
    }
    if (!want_grad) continue;

    // (b) the same logits again, turned into dlogits, then the two products
    float* dh = nullptr;
    if (a.dhidden) {
      if (contiguous) {
        dh = a.dhidden + tile_rows[0] * hd;  // zeroed above
      } else {
        if (!dhidden_tile) dhidden_tile = uninitialised(tile * hd);
        dh = dhidden_tile.get();
        std::memset(dh, 0, size_t(n * hd) * sizeof(float));
      }
    }
    for (int64_t c0 = 0; c0 < vocab; c0 += chunk) {
      const int64_t cn = std::min(chunk, vocab - c0);
      chunk_logits(h, n, c0, cn);
      parallel_for(n, [&](int64_t b, int64_t e, int) {
        for (int64_t i = b; i < e; ++i) {
          float* row = logits.get() + i * cn;
          kt.ce_softmax_scaled(row, cn, lse[i], scale);
          const int64_t target = a.targets[tile_rows[i]];
          if (target >= c0 && target < c0 + cn) row[target - c0] -= scale;
        }
      });
      if (dh) {  // dh[n, hd] += dlogits[n, cn] . W_chunk[cn, hd]  (B = W_chunk^T, logical [hd, cn])
        GemmArgs g;
        g.precision = a.precision;
        g.m = n;
        g.n = hd;
        g.segments.push_back({{logits.get(), DType::f32, cn, false}, {weight_rows(c0), a.weight_dtype, hd, true}, cn});
        g.c = dh;
        g.ldc = hd;
        g.accumulate = true;
        gemm(g);
      }
      if (a.dweight) {  // dW[c0 : c0 + cn] += dlogits^T[cn, n] . h[n, hd]
        GemmArgs g;
        g.precision = a.precision;
        g.m = cn;
        g.n = hd;
        g.segments.push_back({{logits.get(), DType::f32, cn, true}, {h, DType::f32, hd, true}, n});
        g.c = a.dweight + c0 * hd;
        g.ldc = hd;
        g.accumulate = true;
        gemm(g);
      }
      if (a.drows) add_row_grads(a, logits.get(), h, n, c0, cn);
    }
    if (dh && !contiguous)
      for (int64_t i = 0; i < n; ++i)
        std::memcpy(a.dhidden + tile_rows[i] * hd, dh + i * hd, size_t(hd) * sizeof(float));
  }
  res.loss = res.loss_sum / double(res.count);
  return res;
}

}  // namespace ernie::cpu
