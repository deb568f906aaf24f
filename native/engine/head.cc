#include "engine/head.h"

#include <cmath>
#include <vector>

namespace ernie::engine {

HeadResult run_head(const ClassifierHead& head, const float* features, int64_t B, int64_t H, float* dfeatures) {
  const int64_t C = head.classes;
  // the standardised input
  std::vector<double> x(size_t(B * H));
  for (int64_t s = 0; s < B; ++s)
    for (int64_t j = 0; j < H; ++j) {
      const double f = features[s * H + j];
      x[s * H + j] = head.feature_mean ? (f - head.feature_mean[j]) / head.feature_std[j] : f;
    }
  HeadResult r;
  std::vector<double> z(static_cast<size_t>(C)), dlogits(head.labels ? static_cast<size_t>(B * C) : 0);
  for (int64_t s = 0; s < B; ++s) {
    double mx = -INFINITY;
    int64_t best = 0;
    for (int64_t c = 0; c < C; ++c) {
      double v = head.bias ? head.bias[c] : 0.0;
      for (int64_t j = 0; j < H; ++j) v += double(head.weight[c * H + j]) * x[s * H + j];
      z[c] = v;
      if (head.logits) head.logits[s * C + c] = float(v);
      if (v > mx) mx = v;
      if (v > z[best]) best = c;
    }
    if (!head.labels) continue;
    double sum = 0;
    for (int64_t c = 0; c < C; ++c) sum += std::exp(z[c] - mx);
    const int32_t y = head.labels[s];
    const double wy = head.class_weights ? head.class_weights[y] : 1.0;
    r.loss += wy * (mx + std::log(sum) - z[y]);
    r.weight_sum += wy;
    if (best == y) ++r.correct;
    for (int64_t c = 0; c < C; ++c) dlogits[s * C + c] = wy * (std::exp(z[c] - mx) / sum - (c == y ? 1.0 : 0.0));
  }
  if (!head.labels) return r;
  const double inv = r.weight_sum > 0 ? 1.0 / r.weight_sum : 0.0;
  r.loss *= inv;
  for (double& v : dlogits) v *= inv;
  for (int64_t s = 0; s < B; ++s) {
    for (int64_t c = 0; c < C; ++c) {
      const double g = dlogits[s * C + c];
      if (head.dbias) head.dbias[c] += float(g);
      if (head.dweight)
        for (int64_t j = 0; j < H; ++j) head.dweight[c * H + j] += float(g * x[s * H + j]);
    }
    if (dfeatures)
      for (int64_t j = 0; j < H; ++j) {
        double g = 0;
        for (int64_t c = 0; c < C; ++c) g += dlogits[s * C + c] * head.weight[c * H + j];
        dfeatures[s * H + j] = float(head.feature_std ? g / head.feature_std[j] : g);
      }
  }
  return r;
}

}  // namespace ernie::engine
