#include "engine/losses.h"

#include <cmath>
#include <stdexcept>

namespace ernie::engine {
namespace {

bool is_real(const Batch& b, int64_t i) { return !b.attention_mask || b.attention_mask[i] != 0; }

// Which token rows each sequence pools, with their weights (1/count for mean pooling).
void pooling_rows(const Batch& b, Pooling pooling, int64_t s, std::vector<std::pair<int64_t, float>>& rows) {
  rows.clear();
  const int64_t T = b.seq;
  int64_t first = -1, last = -1, count = 0;
  for (int64_t t = 0; t < T; ++t)
    if (is_real(b, s * T + t)) {
      if (first < 0) first = t;
      last = t;
      ++count;
    }
  if (count == 0) return;  // an all-padding row pools nothing (zero features)
  if (pooling == Pooling::last) rows.push_back({s * T + last, 1.0f});
  else if (pooling == Pooling::first) rows.push_back({s * T + first, 1.0f});
  else
    for (int64_t t = 0; t < T; ++t)
      if (is_real(b, s * T + t)) rows.push_back({s * T + t, 1.0f / float(count)});
}

// The pooling of a batch as gather ranges (backend/ops.h GatherRowsArgs), on the backend.
struct PoolRows {
  BufOf<int32_t> starts, rows;
  BufOf<float> weights;
  PoolRows(const Batch& batch, Pooling pooling, Workspace& ws) {
    std::vector<int32_t> s{0}, r;
    std::vector<float> w;
    std::vector<std::pair<int64_t, float>> picked;
    for (int64_t b = 0; b < batch.batch; ++b) {
      pooling_rows(batch, pooling, b, picked);
      for (auto [row, weight] : picked) {
        r.push_back(int32_t(row));
        w.push_back(weight);
      }
      s.push_back(int32_t(r.size()));
    }
    starts = ws.put(s);
    rows = ws.put(r);
    weights = ws.put(w);
  }
  GatherRowsArgs args(int64_t count, int64_t dim) const {
    GatherRowsArgs g;
    g.starts = starts.data();
    g.rows = rows.data();
    g.weights = weights.data();
    g.count = count;
    g.dim = dim;
    return g;
  }
};

}  // namespace

LossFn lm_loss(const ModelDims& d, const ModelWeights& w, const Batch& batch, const int32_t* labels, Grads& grads,
               Precision precision, LossResult* result) {
  if (w.lm_head.trans || w.lm_head.ld != d.hidden)
    throw std::invalid_argument("the LM loss needs a row-major [vocab, hidden] LM head (tied, or HF layout)");
  return [&d, &w, batch, labels, &grads, precision, result](const float* hidden, float* dhidden, Workspace& ws) {
    const int64_t B = batch.batch, T = batch.seq, n = B * T;
    std::vector<int32_t> targets(size_t(n), -100);
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t + 1 < T; ++t) {
        const int64_t next = b * T + t + 1;
        targets[b * T + t] = labels ? labels[next] : (is_real(batch, next) ? batch.input_ids[next] : -100);
      }
    CrossEntropyArgs ce;
    ce.hidden = hidden;
    ce.weight = w.lm_head.data;
    ce.weight_dtype = w.lm_head.dtype;
    ce.targets = ws.put(targets).data();
    ce.tokens = n;
    ce.hidden_size = d.hidden;
    ce.vocab = d.vocab;
    ce.dhidden = dhidden;
    ce.precision = precision;
    if (grads.base()) ce.dweight = grads.lm_head ? grads.lm_head : grads.embed;
    const CrossEntropyResult r = ws.backend().cross_entropy(ce);
    result->loss = r.loss;
    result->count = r.count;
    return r.loss;
  };
}

LossFn classifier_loss(const ModelDims& d, const Batch& batch, const ClassifierHead& head, LossResult* result) {
  return [&d, batch, head, result](const float* hidden, float* dhidden, Workspace& ws) {
    Backend& be = ws.backend();
    const int64_t B = batch.batch, H = d.hidden, C = head.classes;
    const PoolRows pool_rows(batch, head.pooling, ws);
    GatherRowsArgs gather = pool_rows.args(B, H);
    gather.src = hidden;
    gather.out = ws.take(B * H).data();
    be.gather_rows(gather);
    std::vector<float> pooled(size_t(B * H));
    be.download(pooled.data(), gather.out, sizeof(float) * pooled.size());
    std::vector<double> dlogits(size_t(B * C));
    double loss = 0, weight_sum = 0;
    for (int64_t s = 0; s < B; ++s) {
      std::vector<double> z(static_cast<size_t>(C));
      double mx = -INFINITY;
      for (int64_t c = 0; c < C; ++c) {
        double v = head.bias ? head.bias[c] : 0.0;
        for (int64_t j = 0; j < H; ++j) v += double(head.weight[c * H + j]) * pooled[s * H + j];
        z[c] = v;
        if (head.logits) head.logits[s * C + c] = float(v);
        mx = v > mx ? v : mx;
      }
      double sum = 0;
      for (int64_t c = 0; c < C; ++c) sum += std::exp(z[c] - mx);
      const int32_t y = head.labels[s];
      const double wy = head.class_weights ? head.class_weights[y] : 1.0;
      loss += wy * (mx + std::log(sum) - z[y]);
      weight_sum += wy;
      for (int64_t c = 0; c < C; ++c) dlogits[s * C + c] = wy * (std::exp(z[c] - mx) / sum - (c == y ? 1.0 : 0.0));
    }
    const double inv = weight_sum > 0 ? 1.0 / weight_sum : 0.0;
    for (auto& v : dlogits) v *= inv;
    // head gradients, and the pooled rows' gradient, which the backend scatters to their tokens
    std::vector<float> dpooled(dhidden ? size_t(B * H) : 0);
    for (int64_t s = 0; s < B; ++s) {
      for (int64_t c = 0; c < C; ++c) {
        const double g = dlogits[s * C + c];
        if (head.dbias) head.dbias[c] += float(g);
        if (head.dweight)
          for (int64_t j = 0; j < H; ++j) head.dweight[c * H + j] += float(g * pooled[s * H + j]);
      }
      if (dhidden)
        for (int64_t j = 0; j < H; ++j) {
          double g = 0;
          for (int64_t c = 0; c < C; ++c) g += dlogits[s * C + c] * head.weight[c * H + j];
          dpooled[s * H + j] = float(g);
        }
    }
    if (dhidden) {
      be.zero(dhidden, sizeof(float) * size_t(B * batch.seq * H));
      GatherRowsArgs scatter = pool_rows.args(B, H);
      scatter.dout = ws.put(dpooled).data();
      scatter.out = dhidden;
      be.scatter_rows(scatter);
    }
    result->loss = loss * inv;
    result->count = B;
    return result->loss;
  };
}

// On the host: the benchmarks' stand-in for a head, not a hot path on a GPU.
LossFn mean_square_loss(const ModelDims& d, const Batch& batch, LossResult* result) {
  return [&d, batch, result](const float* hidden_d, float* dhidden_d, Workspace& ws) {
    Backend& be = ws.backend();
    const int64_t n = batch.batch * batch.seq * d.hidden;
    std::vector<float> hidden(static_cast<size_t>(n)), dhidden(dhidden_d ? static_cast<size_t>(n) : 0);
    be.download(hidden.data(), hidden_d, sizeof(float) * size_t(n));
    double sum = 0;
    for (int64_t i = 0; i < n; ++i) {
      sum += double(hidden[i]) * hidden[i];
      if (dhidden_d) dhidden[i] = float(2.0 * hidden[i] / double(n));
    }
    if (dhidden_d) be.upload(dhidden_d, dhidden.data(), sizeof(float) * size_t(n));
    result->loss = sum / double(n);
    result->count = n;
    return result->loss;
  };
}

}  // namespace ernie::engine
