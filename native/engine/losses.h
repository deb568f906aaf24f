// Losses on the final hidden states, as engine::LossFn closures for train_step:
//   language modelling (next-token cross-entropy through the LM head, chunked),
//   classification (a linear head on one pooled hidden state per sequence),
//   mean square of the hidden states (the benchmarks' stand-in for a head).
#pragma once
#include <cstdint>
#include <vector>

#include "engine/model.h"

namespace ernie::engine {

struct LossResult {
  double loss = 0;
  int64_t count = 0;  // targets (tokens or sequences) the loss averages over
};

// labels [B, T] unshifted as in HF (position t predicts labels[t + 1]); negative = ignored;
// null: the input ids, padding ignored. The head gradient goes to grads.embed when tied.
// `precision`: of the head's products, as the step's.
LossFn lm_loss(const ModelDims& d, const ModelWeights& w, const Batch& batch, const int32_t* labels, Grads& grads,
               cpu::Precision precision, LossResult* result);

enum class Pooling { last, mean, first };

struct ClassifierHead {
  const float* weight = nullptr;  // [classes, hidden]
  const float* bias = nullptr;    // [classes]
  int64_t classes = 0;
  Pooling pooling = Pooling::last;
  const int32_t* labels = nullptr;         // [B], in [0, classes)
  const float* class_weights = nullptr;    // [classes] or null: weighted mean as torch's CrossEntropyLoss
  float* dweight = nullptr;                // added to, when not null
  float* dbias = nullptr;
  float* logits = nullptr;                 // [B, classes], written when not null
};

LossFn classifier_loss(const ModelDims& d, const Batch& batch, const ClassifierHead& head, LossResult* result);

// Pooled features [B, hidden] from final hidden states (for inference with a head).
void pool(const ModelDims& d, const Batch& batch, Pooling pooling, const float* hidden, float* pooled);

LossFn mean_square_loss(const ModelDims& d, const Batch& batch, LossResult* result);

}  // namespace ernie::engine
