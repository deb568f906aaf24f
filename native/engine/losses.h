// Losses on the final hidden states, as engine::LossFn closures for train_step (the hidden states
// and their gradient are the backend's memory; the classification head is host memory: its
// pooled inputs come down, B rows, and their gradient goes up):
//   language modelling (next-token cross-entropy through the LM head, chunked),
//   classification (the linear head of engine/head.h on one pooled hidden state per sequence),
//   mean square of the hidden states (the benchmarks' stand-in for a head).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/model.h"
#include "engine/head.h"
#include "engine/pooling.h"

namespace ernie::engine {

struct LossResult {
  double loss = 0;
  int64_t count = 0;  // targets (tokens or sequences) the loss averages over
};

// labels [B, T] unshifted as in HF (position t predicts labels[t + 1]); negative = ignored;
// null: the input ids, padding ignored. The head gradient goes to grads.embed when tied.
// `precision`: of the head's products, as the step's.
LossFn lm_loss(const ModelDims& d, const ModelWeights& w, const Batch& batch, const int32_t* labels, Grads& grads,
               Precision precision, LossResult* result);

// Each row's summed next-token loss (negative log-likelihood) of its targets through the LM head:
// nll[b] = -sum_t log p(targets[b, t] | row b's tokens up to t), one cross-entropy call per row, so
// that a row's unscored tokens cost nothing. hidden [B, T, hidden] and targets [B, T] (negative:
// not scored) are backend memory. With dhidden (backend memory, written), also the gradient of
// sum_b row_weights[b] * nll[b] (row_weights: host), the head's part added to dweight when given.
// `count`, when given, receives the scored tokens. `drows`, with dhidden: the head's part on a few
// rows alone (trainable token rows; row_ids backend memory), as CrossEntropyArgs::drows.
std::vector<double> row_nll(Backend& be, const ModelDims& d, const ModelWeights& w, int64_t B, int64_t T,
                            const float* hidden, const int32_t* targets, Precision precision,
                            const double* row_weights = nullptr, float* dhidden = nullptr, float* dweight = nullptr,
                            int64_t* count = nullptr, const int32_t* row_ids = nullptr, int64_t row_count = 0,
                            float* drows = nullptr);

// Per-row weighted next-token losses: loss = sum_b row_weights[b] * nll[b] (row_nll), with targets
// [B, T] (host) in the scoring convention of ForwardOutputs (position t predicts targets[t];
// negative: not scored). A loss that is a function of each sequence's log-probability, such as
// DPO's, has the gradient sum_b (dL/dlogp_b) grad logp_b: this loss's with row_weights = -dL/dlogp.
// row_log_probs [B] (host), when not null, receives -nll[b] as this forward computed it.
LossFn weighted_rows_loss(const ModelDims& d, const ModelWeights& w, const Batch& batch, const int32_t* targets,
                          const double* row_weights, Grads& grads, Precision precision, double* row_log_probs,
                          LossResult* result);

LossFn classifier_loss(const ModelDims& d, const Batch& batch, const ClassifierHead& head, LossResult* result);

LossFn mean_square_loss(const ModelDims& d, const Batch& batch, LossResult* result);

}  // namespace ernie::engine
