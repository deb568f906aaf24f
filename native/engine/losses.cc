#include "engine/losses.h"

#include <cmath>
#include <stdexcept>

namespace ernie::engine {
namespace {

bool is_real(const Batch& b, int64_t i) { return !b.attention_mask || b.attention_mask[i] != 0; }

// The LM head's gradient on the trainable token rows alone (Grads::lm_head_rows), when asked.
void ask_token_rows(CrossEntropyArgs& ce, const Grads::TokenRows& tr, Workspace& ws) {
  if (!tr.rows) return;
  ce.row_ids = ws.put(tr.ids, tr.count).data();
  ce.row_count = tr.count;
  ce.drows = tr.rows;
}

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
    if (dhidden) ask_token_rows(ce, grads.lm_head_rows, ws);
    const CrossEntropyResult r = ws.backend().cross_entropy(ce);
    result->loss = r.loss;
    result->count = r.count;
    return r.loss;
  };
}

std::vector<double> row_nll(Backend& be, const ModelDims& d, const ModelWeights& w, int64_t B, int64_t T,
                            const float* hidden, const int32_t* targets, Precision precision, const double* row_weights,
                            float* dhidden, float* dweight, int64_t* count, const int32_t* row_ids, int64_t row_count,
                            float* drows) {
  if (w.lm_head.trans || w.lm_head.ld != d.hidden)
    throw std::invalid_argument("scoring needs a row-major [vocab, hidden] LM head (tied, or HF layout)");
  std::vector<double> nll(size_t(B), 0.0);
  if (count) *count = 0;
  for (int64_t b = 0; b < B; ++b) {
    CrossEntropyArgs ce;
    ce.hidden = hidden + b * T * d.hidden;
    ce.weight = w.lm_head.data;
    ce.weight_dtype = w.lm_head.dtype;
    ce.targets = targets + b * T;
    ce.tokens = T;
    ce.hidden_size = d.hidden;
    ce.vocab = d.vocab;
    ce.precision = precision;
    if (dhidden) {
      ce.dhidden = dhidden + b * T * d.hidden;
      ce.dweight = dweight;
      ce.row_ids = row_ids;
      ce.row_count = row_count;
      ce.drows = drows;
      // the gradient of row_weights[b] times the row's summed (not mean) loss
      ce.has_grad_scale = true;
      ce.grad_scale = float(row_weights[b]);
    }
    const CrossEntropyResult r = be.cross_entropy(ce);
    nll[size_t(b)] = r.loss_sum;
    if (count) *count += r.count;
  }
  return nll;
}

LossFn weighted_rows_loss(const ModelDims& d, const ModelWeights& w, const Batch& batch, const int32_t* targets,
                          const double* row_weights, Grads& grads, Precision precision, double* row_log_probs,
                          LossResult* result) {
  return [&d, &w, batch, targets, row_weights, &grads, precision, row_log_probs, result](
             const float* hidden, float* dhidden, Workspace& ws) {
    const int64_t B = batch.batch, T = batch.seq;
    float* dweight = dhidden && grads.base() ? (grads.lm_head ? grads.lm_head : grads.embed) : nullptr;
    int64_t count = 0;
    CrossEntropyArgs rows;  // the trainable token rows' part of the head's gradient, when asked
    if (dhidden) ask_token_rows(rows, grads.lm_head_rows, ws);
    const std::vector<double> nll = row_nll(ws.backend(), d, w, B, T, hidden, ws.put(targets, B * T).data(), precision,
                                            row_weights, dhidden, dweight, &count, rows.row_ids, rows.row_count,
                                            rows.drows);
    double loss = 0;
    for (int64_t b = 0; b < B; ++b) {
      loss += row_weights[b] * nll[size_t(b)];
      if (row_log_probs) row_log_probs[b] = -nll[size_t(b)];
    }
    result->loss = loss;
    result->count = count;
    return loss;
  };
}

LossFn classifier_loss(const ModelDims& d, const Batch& batch, const ClassifierHead& head, LossResult* result) {
  return [&d, batch, head, result](const float* hidden, float* dhidden, Workspace& ws) {
    Backend& be = ws.backend();
    const int64_t B = batch.batch, H = d.hidden;
    const PoolRows pool_rows(batch, head.pooling, ws);
    float* pooled_d = ws.take(B * H).data();
    pool_rows.gather(be, hidden, H, pooled_d);
    std::vector<float> pooled(size_t(B * H));
    be.download(pooled.data(), pooled_d, sizeof(float) * pooled.size());
    std::vector<float> dpooled(dhidden ? size_t(B * H) : 0);
    const HeadResult r = run_head(head, pooled.data(), B, H, dhidden ? dpooled.data() : nullptr);
    if (dhidden) {
      be.zero(dhidden, sizeof(float) * size_t(B * batch.seq * H));
      pool_rows.scatter(be, ws.put(dpooled).data(), H, dhidden);
    }
    result->loss = r.loss;
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
