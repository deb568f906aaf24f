// The classification head: class logits from one pooled feature row per sequence,
//   z = x W^T + b,  x = the pooled row, standardised ((f - mean) / std) when the head has a
//   standardisation (the head method's, fixed from its training features),
// and with labels the class-weighted mean cross-entropy (torch's CrossEntropyLoss(weight=...):
// the sum of w[y] * -log p[y] over the sum of w[y]) with its gradients.
//
// One implementation for every use: the classify loss of lora and full training (through the
// whole model), forward's head output (predict), and the head method's training on cached
// features (the addon op classifierHead). Host memory, in double: B x classes x hidden is a few
// hundred thousand multiply-adds at most.
#pragma once
#include <cstdint>

#include "engine/pooling.h"

namespace ernie::engine {

struct ClassifierHead {
  const float* weight = nullptr;         // [classes, hidden]
  const float* bias = nullptr;           // [classes], or null
  int64_t classes = 0;
  const float* feature_mean = nullptr;   // [hidden]: standardisation of the input, or null
  const float* feature_std = nullptr;    // [hidden]
  Pooling pooling = Pooling::last;       // the classify loss's pooling (engine/pooling.h)
  const int32_t* labels = nullptr;       // [B], in [0, classes); null: logits only
  const float* class_weights = nullptr;  // [classes] or null
  float* dweight = nullptr;              // added to, when not null
  float* dbias = nullptr;
  float* logits = nullptr;               // [B, classes], written when not null
};

struct HeadResult {
  double loss = 0;        // the class-weighted mean cross-entropy (0 without labels)
  double weight_sum = 0;  // the sum of the rows' class weights
  int64_t correct = 0;    // rows whose top class is their label
};

// The head on pooled features [B, hidden]. With labels: the loss, dweight / dbias added to, and
// dfeatures [B, hidden] (the gradient of the pooled rows) written when not null.
HeadResult run_head(const ClassifierHead& head, const float* features, int64_t B, int64_t hidden, float* dfeatures);

}  // namespace ernie::engine
