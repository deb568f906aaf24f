// The engine's op set: the argument of each op, the same for every backend (backend/backend.h).
// A pointer in these structs addresses memory of the backend that runs the op: host memory for
// the CPU, device memory for CUDA. Row-major f32 unless a field says otherwise; weights may be
// f32 or bf16 (DType). The meaning of each op is stated here once; the backends implement it.
#pragma once
#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

namespace ernie {

// The functions here are `static`: the CPU kernels are compiled once per ISA, and an inline
// function shared between those copies would be one symbol, maybe the AVX-512 one (cpu/dispatch.h).

// ---- element types, matrices, precision -------------------------------------------------------

enum class DType : int { f32 = 0, bf16 = 1 };

static inline int dtype_size(DType t) { return t == DType::f32 ? 4 : 2; }

namespace cpu {
struct Bf16Panels;  // the CPU backend's pre-packed form of a weight (cpu/tensor.h)
}

// A matrix seen as logical [rows, cols]. Element (r, c) is at data[r * ld + c], or at
// data[c * ld + r] when `trans` is set (the matrix is stored as its transpose). `panels`, when
// set, holds the same matrix pre-packed by the CPU backend for its bf16 products, and
// `panels_t` its transpose (a frozen weight's in the backward's dy . W); other backends ignore
// them.
struct MatrixRef {
  const void* data = nullptr;
  DType dtype = DType::f32;
  int64_t ld = 0;
  bool trans = false;
  const cpu::Bf16Panels* panels = nullptr;
  const cpu::Bf16Panels* panels_t = nullptr;
};

// The same memory seen as the logical transpose, [cols, rows].
inline MatrixRef transposed(MatrixRef m) {
  m.trans = !m.trans;
  const cpu::Bf16Panels* p = m.panels;
  m.panels = m.panels_t;
  m.panels_t = p;
  return m;
}

// The precision of matrix products (README "Precision"; per backend and ISA in cpu/precision.h
// and cuda/backend.h):
//   fp32       f32 FMA; bf16 operands are widened exactly.
//   bf16       both operands rounded to bf16 (A after its scale factor), products summed in f32.
//   automatic  bf16 for a product with an operand stored as bf16 where the backend has a native
//              bf16 dot product, fp32 otherwise.
// Attention's products are matrix products too (see AttentionArgs). Everything outside the
// matrix products (norms, activations, softmax, optimisers) is f32.
enum class Precision : int { automatic = 0, fp32 = 1, bf16 = 2 };

static inline const char* precision_name(Precision p) {
  return p == Precision::fp32 ? "fp32" : p == Precision::bf16 ? "bf16" : "auto";
}

static inline bool precision_from_name(const std::string& name, Precision* out) {
  if (name == "auto") *out = Precision::automatic;
  else if (name == "fp32") *out = Precision::fp32;
  else if (name == "bf16") *out = Precision::bf16;
  else return false;
  return true;
}

// ---- GEMM: C[M, N] = alpha * sum_s scale_s * A_s[M, K_s] . B_s[N, K_s]^T  (+ C) --------------
// Several K-segments share one pass over C: LoRA's y = x W^T + s (x A^T) B^T is the segments
// (x, W) and (s.u, B_lora). What each segment rounds follows from `precision`, the backend and
// that segment's own operands, never from the other segments.
struct GemmSegment {
  MatrixRef a;  // logical [M, k]
  MatrixRef b;  // logical [N, k]
  int64_t k = 0;
  float scale = 1.0f;  // this segment's factor, on top of GemmArgs::alpha
};

struct GemmArgs {
  int64_t m = 0, n = 0;
  std::vector<GemmSegment> segments;
  float* c = nullptr;
  int64_t ldc = 0;
  float alpha = 1.0f;
  bool accumulate = false;
  Precision precision = Precision::automatic;
};

// ---- attention: fused causal attention with GQA, forward and backward -------------------------
// q [B, Tq, H, D]; k, v [B, Tk, KV, D]; out [B, Tq, H, D]; lse [B, H, Tq] (natural log of the
// softmax denominator of the scaled scores). Query head h reads kv head h / (H / KV). Causal
// with bottom-right alignment: query row i sits at absolute position i + (Tk - Tq) and sees keys
// j <= that position; keys whose key_valid byte is 0 are excluded too, and so are keys before a
// row's key_start (packed documents). A row that sees no key gets out = 0 and lse = -inf.
// The backward overwrites dq, dk, dv.
// Precision: attention's operands are activations, stored as f32, so 'automatic' is fp32 here.
// At bf16, each of its products takes its operands rounded to bf16 and sums in f32: forward
// (c q).k with c = scale * log2(e) and p.v (p the unnormalised exponentials, relative to the
// running maximum); backward q.k (recomputing p from lse), dout.v, p^T.dout, ds^T.q and ds.k
// (ds = scale * p * (dp - delta)). The softmax (maximum, sum, lse) and delta =
// rowsum(dout * out) stay f32. The CUDA backend computes them so at every precision.
struct AttentionArgs {
  int64_t batch = 0, tq = 0, tk = 0, heads = 0, kv_heads = 0, head_dim = 0;
  float scale = 1.0f;
  Precision precision = Precision::automatic;
  const float* q = nullptr;
  const float* k = nullptr;
  const float* v = nullptr;
  const uint8_t* key_valid = nullptr;  // [B, Tk], 1 = real key; null: all real
  const int32_t* key_start = nullptr;  // [B, Tq], the first key a query row sees; null: key 0
  float* out = nullptr;                // written by the forward, read by the backward
  float* lse = nullptr;
  // Backward only.
  const float* dout = nullptr;
  float* dq = nullptr;
  float* dk = nullptr;
  float* dv = nullptr;
  // Temporary memory the call may use instead of allocating its own: the caller's, reused from
  // call to call (Backend::attention_scratch_floats says how much). Null: the backend allocates.
  float* scratch = nullptr;
  int64_t scratch_floats = 0;
};

// ---- a linear layer with LoRA: y (+)= x W^T + s (x A^T) B^T ------------------------------------
// x [m, k], W [n, k] (f32 or bf16), A [r, k], B [n, r]. The forward writes u = x A^T [m, r],
// which the backward reads. Backward, given dy [m, n]: dB += s dy^T u, dA += s (dy B)^T x,
// dx (+)= dy W + s (dy B) A when dx is not null; dA and dB always accumulate.
struct LoraRef {
  const float* a = nullptr;  // [r, k]
  const float* b = nullptr;  // [n, r]
  int64_t r = 0;
  float scale = 1.0f;        // alpha / r (or alpha / sqrt(r) for rsLoRA)
  // Training only: dropout on the adapter's input, as PEFT's lora_dropout. Element i of x is
  // kept, times 1 / (1 - p), when lora_keep(seed, i, p); the mask is recomputed, never stored.
  float dropout = 0.0f;
  uint64_t seed = 0;
};

#if defined(__CUDACC__)
#define ERNIE_HOST_DEVICE __host__ __device__
#else
#define ERNIE_HOST_DEVICE
#endif
ERNIE_HOST_DEVICE static inline uint64_t lora_mix(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}
// Whether element i survives dropout p under `seed`: splitmix64-hashed, so forward, backward
// and recompute agree without a stored mask, on every backend.
ERNIE_HOST_DEVICE static inline bool lora_keep(uint64_t seed, uint64_t i, float p) {
  return double(lora_mix(seed ^ lora_mix(i)) >> 11) * 0x1.0p-53 >= double(p);
}

struct LinearShape {
  int64_t m, n, k;  // tokens, out features, in features
  Precision precision = Precision::automatic;  // of every product of the layer
};

struct LoraForwardArgs {
  LinearShape shape;
  const float* x = nullptr;
  MatrixRef w;
  LoraRef lora;
  float* u = nullptr;  // [m, r]
  float* y = nullptr;  // [m, n]
  bool accumulate = false;
};

struct LoraBackwardArgs {
  LinearShape shape;
  const float* x = nullptr;
  MatrixRef w;
  LoraRef lora;
  const float* u = nullptr;
  const float* dy = nullptr;
  float* dx = nullptr;  // null: no input gradient
  bool dx_accumulate = false;
  float* da = nullptr;  // [r, k], added to
  float* db = nullptr;  // [n, r], added to
};

// ---- row ops -----------------------------------------------------------------------------------
// Outputs never overlap inputs, except where a comment says "may equal": then the output may be
// exactly that input (same pointer, same shape), and the op runs in place.

// y = x * rsqrt(mean(x^2) + eps) * w over each row of [rows, dim].
struct RmsNormForwardArgs {
  const float* x = nullptr;       // [rows, dim]
  const void* weight = nullptr;   // [dim]
  DType weight_dtype = DType::f32;
  int64_t rows = 0, dim = 0;
  float eps = 0;
  float* out = nullptr;           // [rows, dim]; may equal x
  float* rstd = nullptr;          // [rows], optional: rsqrt(mean(x^2) + eps), for the backward
};

// dx (+)= d/dx, and dweight += d/dweight, of sum(dout * y).
struct RmsNormBackwardArgs {
  const float* dout = nullptr;    // [rows, dim]
  const float* x = nullptr;       // [rows, dim]
  const void* weight = nullptr;   // [dim]
  DType weight_dtype = DType::f32;
  const float* rstd = nullptr;    // [rows], from the forward
  int64_t rows = 0, dim = 0;
  float* dx = nullptr;            // [rows, dim]
  bool accumulate = false;        // add to dx instead of overwriting it
  float* dweight = nullptr;       // [dim], optional, always added to
};

enum class RopePairing : int {
  adjacent = 0,  // (2i, 2i+1): ERNIE-4.5, GPT-J
  half = 1,      // (i, i + head_dim/2): Qwen3, LLaMA
};

// Rotates each head of x [rows, heads, head_dim] by angles pos * theta^(-2i/head_dim), one
// position per row. `inverse` rotates by minus the angle: the backward.
struct RopeArgs {
  const float* x = nullptr;            // [rows, heads, head_dim]
  float* out = nullptr;                // same shape; may equal x
  const int32_t* positions = nullptr;  // [rows]
  int64_t rows = 0, heads = 0, head_dim = 0;  // head_dim even
  double theta = 10000.0;
  RopePairing pairing = RopePairing::adjacent;
  bool inverse = false;
};

// out = silu(gate) * up over rows of `dim` elements. Row r of gate starts at gate + r * in_ld,
// and likewise up: the fused gate|up layout is gate = gu, up = gu + dim, in_ld = 2 * dim.
struct SwigluForwardArgs {
  const float* gate = nullptr;
  const float* up = nullptr;
  int64_t in_ld = 0;
  int64_t rows = 0, dim = 0;
  float* out = nullptr;  // [rows, dim]
};

// dgate = dout * up * silu'(gate), dup = dout * silu(gate); dgate/dup rows are grad_ld apart.
struct SwigluBackwardArgs {
  const float* dout = nullptr;  // [rows, dim]
  const float* gate = nullptr;
  const float* up = nullptr;
  int64_t in_ld = 0;
  int64_t rows = 0, dim = 0;
  float* dgate = nullptr;
  float* dup = nullptr;
  int64_t grad_ld = 0;
};

// out[k] = table[ids[k]] (widened from bf16); every id in [0, vocab).
struct EmbeddingForwardArgs {
  const int32_t* ids = nullptr;  // [n]
  int64_t n = 0;
  const void* table = nullptr;   // [vocab, dim]
  DType table_dtype = DType::f32;
  int64_t dim = 0;
  float* out = nullptr;          // [n, dim]
};

// dtable[ids[k]] += dout[k], in a fixed order of additions (repeated ids included).
struct EmbeddingBackwardArgs {
  const int32_t* ids = nullptr;  // [n]
  int64_t n = 0;
  const float* dout = nullptr;   // [n, dim]
  int64_t dim = 0;
  float* dtable = nullptr;       // [vocab, dim]
};

// Rows picked and weighted: out[i] = sum over j in [starts[i], starts[i + 1]) of
// weights[j] * src[rows[j]] ([count, dim]; an empty range gives a zero row). Pooling (one range
// per sequence), the last tokens' rows, and the KV cache's gathers are this op; its backward,
// the scatter dsrc[rows[j]] += weights[j] * dout[i], is `scatter_rows`.
struct GatherRowsArgs {
  const float* src = nullptr;      // [.., dim]
  const int32_t* starts = nullptr; // [count + 1]
  const int32_t* rows = nullptr;   // [starts[count]]
  const float* weights = nullptr;  // [starts[count]]; null: every weight 1
  int64_t count = 0, dim = 0;
  float* out = nullptr;            // gather: [count, dim], written. scatter: the dsrc, added to
  const float* dout = nullptr;     // scatter only: [count, dim]
};

// ---- losses ------------------------------------------------------------------------------------
// Cross-entropy through an LM head without the [T, V] logits: logits are made one [row tile,
// vocab chunk] block at a time and reduced on the spot; dhidden is written, dweight added to.
// Rows whose target is negative are ignored: no compute, no loss, a zero dhidden row.
struct CrossEntropyArgs {
  const float* hidden = nullptr;      // [tokens, hidden_size]
  const void* weight = nullptr;       // [vocab, hidden_size], f32 or bf16
  DType weight_dtype = DType::f32;
  const int32_t* targets = nullptr;   // [tokens]: negative = ignored, else < vocab (the caller checks)
  int64_t tokens = 0, hidden_size = 0, vocab = 0;
  int64_t chunk = 8192;               // vocab rows per logits block
  int64_t row_tile = 512;             // tokens per logits block
  float* dhidden = nullptr;           // [tokens, hidden_size]: written when given
  float* dweight = nullptr;           // [vocab, hidden_size]: added to when given
  // A few rows of dweight alone (trainable token rows), without its [vocab, hidden_size]:
  // drows[j] += what dweight's row row_ids[j] would get. Ids distinct, in [0, vocab).
  const int32_t* row_ids = nullptr;   // [row_count]
  int64_t row_count = 0;
  float* drows = nullptr;             // [row_count, hidden_size]: added to when given
  bool has_grad_scale = false;        // false: 1 / count, the gradient of the mean loss
  float grad_scale = 1.0f;
  Precision precision = Precision::automatic;  // of the logits' and gradients' products
};

struct CrossEntropyResult {
  double loss = 0;      // mean over the counted rows; 0 when there are none
  double loss_sum = 0;
  int64_t count = 0;    // rows with a target
};

// ---- optimisers --------------------------------------------------------------------------------
// AdamW as torch.optim.AdamW (decoupled weight decay, applied before the Adam update):
//   p *= 1 - lr * wd;  m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g^2
//   p -= lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
// The constants are derived in double and rounded once: 1 - beta2 taken in f32 would be off by
// 1e-5 relative.
struct AdamHyper {
  float beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f;
  float one_minus_beta1 = 0.1f, one_minus_beta2 = 0.001f;
  float decay = 1;           // 1 - lr * weight_decay
  float step_size = 0;       // lr / (1 - beta1^step)
  float bias2_sqrt = 1;      // sqrt(1 - beta2^step)
};

// The constants of a 1-based step.
static inline AdamHyper adam_hyper(double lr, double beta1, double beta2, double eps, double weight_decay, int64_t step) {
  AdamHyper h;
  h.beta1 = float(beta1);
  h.beta2 = float(beta2);
  h.eps = float(eps);
  h.one_minus_beta1 = float(1.0 - beta1);
  h.one_minus_beta2 = float(1.0 - beta2);
  h.decay = float(1.0 - lr * weight_decay);
  h.step_size = float(lr / (1.0 - std::pow(beta1, double(step))));
  h.bias2_sqrt = float(std::sqrt(1.0 - std::pow(beta2, double(step))));
  return h;
}

struct AdamArgs {
  float* params = nullptr;
  const float* grads = nullptr;
  float* m = nullptr;
  float* v = nullptr;
  uint16_t* params_bf16 = nullptr;  // optional: a bf16 copy of the updated params
  int64_t n = 0;
  AdamHyper hyper;
};

// The same update with m and v stored as bitsandbytes' blockwise 8-bit state: per block of
// `block_size` elements, one f32 absmax and a uint8 code per element (m signed, v unsigned).
struct Adam8bitArgs {
  float* params = nullptr;
  const float* grads = nullptr;
  uint8_t* m_codes = nullptr;  // [n]
  uint8_t* v_codes = nullptr;  // [n]
  float* m_absmax = nullptr;   // [ceil(n / block_size)]
  float* v_absmax = nullptr;
  uint16_t* params_bf16 = nullptr;
  int64_t n = 0, block_size = 256;
  AdamHyper hyper;
};

}  // namespace ernie
