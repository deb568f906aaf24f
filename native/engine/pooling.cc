#include "engine/pooling.h"

namespace ernie::engine {

const char* pooling_name(Pooling p) { return p == Pooling::mean ? "mean" : p == Pooling::first ? "first" : "last"; }

bool pooling_from_name(const std::string& name, Pooling* out) {
  if (name == "last") *out = Pooling::last;
  else if (name == "mean") *out = Pooling::mean;
  else if (name == "first") *out = Pooling::first;
  else return false;
  return true;
}

void pooling_rows(const Batch& b, Pooling pooling, int64_t s, std::vector<std::pair<int64_t, float>>& rows) {
  rows.clear();
  const int64_t T = b.seq;
  auto real = [&](int64_t i) { return !b.attention_mask || b.attention_mask[i] != 0; };
  int64_t first = -1, last = -1, count = 0;
  for (int64_t t = 0; t < T; ++t)
    if (real(s * T + t)) {
      if (first < 0) first = t;
      last = t;
      ++count;
    }
  if (count == 0) return;  // an all-padding row pools nothing (zero features)
  if (pooling == Pooling::last) rows.push_back({s * T + last, 1.0f});
  else if (pooling == Pooling::first) rows.push_back({s * T + first, 1.0f});
  else
    for (int64_t t = 0; t < T; ++t)
      if (real(s * T + t)) rows.push_back({s * T + t, 1.0f / float(count)});
}

PoolRows::PoolRows(const Batch& batch, Pooling pooling, Workspace& ws) : count_(batch.batch) {
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
  starts_ = ws.put(s);
  rows_ = ws.put(r);
  weights_ = ws.put(w);
}

GatherRowsArgs PoolRows::args(int64_t dim) const {
  GatherRowsArgs g;
  g.starts = starts_.data();
  g.rows = rows_.data();
  g.weights = weights_.data();
  g.count = count_;
  g.dim = dim;
  return g;
}

void PoolRows::gather(Backend& be, const float* src, int64_t dim, float* out) const {
  GatherRowsArgs g = args(dim);
  g.src = src;
  g.out = out;
  be.gather_rows(g);
}

void PoolRows::scatter(Backend& be, const float* dout, int64_t dim, float* dsrc) const {
  GatherRowsArgs g = args(dim);
  g.dout = dout;
  g.out = dsrc;
  be.scatter_rows(g);
}

}  // namespace ernie::engine
