// The decoder graph of ERNIE-4.5 and Qwen3: embedding, N pre-norm layers (attention with GQA
// and RoPE, SwiGLU MLP), final RMSNorm, tied or separate LM head. One call runs the whole stack
// on a backend (backend/backend.h), the one of the Workspace it is given; the graph never names
// a backend.
//
// Memory: the weights, the adapter, the outputs and the gradient buffers are the backend's
// memory (on the CPU, the weights are read in place: bf16 straight from the mapped checkpoint;
// on a GPU they were uploaded once). A Batch is host memory: the engine derives positions and
// masks from it and uploads what the ops read.
//
// The two architectures differ only in data: RoPE pairing (adjacent pairs / halves) and
// Qwen3's per-head q/k RMSNorm. Checkpoint layouts (HF [out, in], Paddle [in, out] with fused
// qkv / gate-up) differ only in each weight's MatrixRef (transposed, offset, leading dimension).
#pragma once
#include <array>
#include <cstdint>
#include <functional>
#include <vector>

#include "backend/backend.h"
#include "engine/workspace.h"

namespace ernie::engine {

struct ModelDims {
  int64_t hidden = 0, intermediate = 0, layers = 0, heads = 0, kv_heads = 0, head_dim = 0, vocab = 0;
  float eps = 1e-5f;
  double rope_theta = 10000.0;
  RopePairing pairing = RopePairing::adjacent;
  bool qk_norm = false;
  int64_t q_dim() const { return heads * head_dim; }
  int64_t kv_dim() const { return kv_heads * head_dim; }
};

// A norm weight [dim].
struct VectorRef {
  const void* data = nullptr;
  DType dtype = DType::f32;
};

// The seven projections of a layer, in the order PEFT's target modules name them. Their names
// and shapes are stated here once (kProjections); the addon exports the table, and TypeScript
// reads it from there (lib/model/projections.ts).
enum Proj { kQ = 0, kK, kV, kO, kGate, kUp, kDown, kNumProj };
// A projection's side, in model dimensions.
enum class ProjDim { hidden, intermediate, q, kv };
struct ProjSpec {
  const char* name;    // PEFT's module name: "q_proj", ...
  const char* key;     // the native Model's (and the JS weight views') field: "q", ...
  const char* module;  // its block in HF names, model.layers.N.<module>.<name>.weight: "self_attn" | "mlp"
  ProjDim out, in;     // the logical [out, in] operand
};
const char* proj_dim_name(ProjDim which);  // "hidden" | "intermediate" | "q" | "kv"
extern const ProjSpec kProjections[kNumProj];
const char* proj_name(int proj);  // kProjections[proj].name
int64_t proj_dim(const ModelDims& d, ProjDim which);
struct ProjShape {
  int64_t out, in;
};
ProjShape proj_shape(const ModelDims& d, int proj);

struct LayerWeights {
  MatrixRef proj[kNumProj];  // each the logical [out, in] operand
  VectorRef input_norm, post_attention_norm, q_norm, k_norm;
};

struct ModelWeights {
  MatrixRef embed;    // [vocab, hidden], row-major
  std::vector<LayerWeights> layers;
  VectorRef final_norm;
  MatrixRef lm_head;  // [vocab, hidden]: the embedding when tied
};

// LoRA on any of the projections; a null `a` means none on that projection.
struct Adapter {
  std::vector<std::array<LoraRef, kNumProj>> layers;
  float dropout = 0.0f;  // on each LoRA's input, in training only (train_step)
};

struct Batch {
  const int32_t* input_ids = nullptr;       // [B, T]
  const int32_t* attention_mask = nullptr;  // [B, T], 1 = token, 0 = padding; null: all tokens
  // [B, T]: packed documents. A run of equal ids is one document: its tokens attend only to each
  // other and their positions restart at 0. Null: each row is one document.
  const int32_t* segment_ids = nullptr;
  int64_t batch = 0, seq = 0;
};

enum class Pooling : int;  // engine/pooling.h

struct ForwardOutputs {
  float* hidden = nullptr;  // [B, T, hidden] after the final norm, when not null
  float* logits = nullptr;  // [B, T, vocab], when not null
  // [B, hidden]: the final hidden state (after the final norm) of each row's last real token;
  // zeros for a row without one. Asked for alone, the last layer computes its queries, attention
  // output and MLP for those B rows only (about a quarter of a 4-layer model's work is skipped).
  float* last_hidden = nullptr;
  // [B, hidden]: each sequence's final hidden states pooled as `pooling` says (engine/pooling.h);
  // 'last' is last_hidden's rows, with its pruned last layer.
  float* pooled = nullptr;
  Pooling pooling{};
  // Scoring: with `targets` [B, T] (host; negative = not scored), row_log_probs [B] (host) gets
  // each row's sum over t of log p(targets[t] | the row's tokens up to t), through the LM head,
  // computed chunk by chunk without the [T, vocab] logits (the generative classifier's answers).
  const int32_t* targets = nullptr;
  double* row_log_probs = nullptr;
};

// `precision`: of every matrix product in the call (cpu/precision.h). `ws`: the call's
// activation memory (engine/workspace.h), here and in the other entry points.
void forward(const ModelDims& dims, const ModelWeights& w, const Adapter* adapter, const Batch& batch,
             const ForwardOutputs& out, Precision precision, Workspace& ws);

// ---- generation: one sequence, its keys and values kept between calls, on the model's backend.
struct KvCache {
  int64_t capacity = 0, length = 0;
  std::vector<Buffer> k, v;  // per layer [capacity, kv_heads * head_dim] floats
  void reset(Backend& be, const ModelDims& dims, int64_t max_len);
  bool fits(const ModelDims& dims) const {
    return k.size() == size_t(dims.layers) && (k.empty() || k[0].bytes() == sizeof(float) * size_t(capacity * dims.kv_dim()));
  }
};

// Runs `count` new tokens (host ids) after the cached ones, appends their keys and values, and
// writes the logits of the last one ([vocab]).
void forward_cached(const ModelDims& dims, const ModelWeights& w, const Adapter* adapter, KvCache& cache,
                    const int32_t* ids, int64_t count, float* last_logits, Precision precision, Workspace& ws);

// ---- training: forward keeping activations, a loss on the final hidden states, backward.

// Gradient buffers, f32, [out, in] for projections whatever the checkpoint's layout; a null
// pointer skips that gradient. All are added to (the caller zeroes them between steps).
struct Grads {
  struct Layer {
    float* proj[kNumProj] = {};
    float* input_norm = nullptr;
    float* post_attention_norm = nullptr;
    float* q_norm = nullptr;
    float* k_norm = nullptr;
  };
  float* embed = nullptr;       // also receives the tied LM head's gradient
  float* lm_head = nullptr;     // when untied
  float* final_norm = nullptr;
  std::vector<Layer> layers;    // empty: base frozen
  struct LoraGrad {
    float* a = nullptr;
    float* b = nullptr;
  };
  std::vector<std::array<LoraGrad, kNumProj>> lora;  // empty: no adapter training
  // Trainable token rows (PEFT's trainable tokens): the gradients of a few rows of the embedding
  // and of the LM head alone, without their [vocab, hidden] gradients, with the base frozen.
  struct TokenRows {
    const int32_t* ids = nullptr;  // [count] (host memory), distinct, < vocab
    int64_t count = 0;
    float* rows = nullptr;         // [count, hidden]: row j gets the gradient of row ids[j]; null: none
  };
  TokenRows embed_rows;    // the lookup's part
  TokenRows lm_head_rows;  // the LM head's part; a tied head's is embed_rows itself (both parts add up)
  bool base() const { return !layers.empty(); }
};

// The loss on the final hidden states [B, T, hidden] (after the final norm, backend memory):
// returns the loss and writes its gradient dhidden (same shape), adding any head-weight
// gradients itself. dhidden is null when no gradient is wanted (evaluation).
using LossFn = std::function<double(const float* hidden, float* dhidden, Workspace& ws)>;

struct TrainOptions {
  bool recompute = false;  // keep only each layer's input; recompute the layer in the backward
  uint64_t dropout_seed = 0;  // LoRA dropout masks of this step derive from it
  Precision precision = Precision::automatic;  // of every matrix product in the step
  // The step's forward and loss only, as the step computes them (LoRA dropout included), no
  // backward: for a loss whose row weights need this forward's results first (weighted_rows_loss).
  bool forward_only = false;
};

// One micro-batch: forward, loss, backward. Returns the loss. With no gradient buffer in
// `grads` it is an evaluation: forward and loss only, no dropout.
double train_step(const ModelDims& dims, const ModelWeights& w, const Adapter* adapter, const Batch& batch,
                  const LossFn& loss, Grads& grads, const TrainOptions& options, Workspace& ws);

}  // namespace ernie::engine
