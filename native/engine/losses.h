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




LossFn classifier_loss(const ModelDims& d, const Batch& batch, const ClassifierHead& head, LossResult* result);

LossFn mean_square_loss(const ModelDims& d, const Batch& batch, LossResult* result);

}  // namespace ernie::engine
