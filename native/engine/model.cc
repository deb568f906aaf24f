// The decoder graph, forward and backward, written by hand in the llm.c way: each block's
// forward keeps what its backward needs, and the backward walks the same steps in reverse.
#include "engine/model.h"

#include "engine/losses.h"
#include "engine/pooling.h"

#include <cmath>
#include <cstring>
#include <memory>
#include <stdexcept>


namespace ernie::engine {
namespace {


MatrixRef acts(const float* p, int64_t ld, bool trans = false) { return MatrixRef{p, DType::f32, ld, trans}; }

const LoraRef* lora_at(const Adapter* adapter, int64_t layer, int p) {
  if (!adapter) return nullptr;
  const LoraRef& l = adapter->layers[layer][p];
  return l.a ? &l : nullptr;
}

// y[m, out] (+)= x[m, in] W^T (+ LoRA, whose x A^T lands in u [m, rank]).
void linear(Backend& be, Precision prec, const MatrixRef& w, const LoraRef* lora, const float* x, int64_t m,
            int64_t out_dim, int64_t in_dim, float* y, bool accumulate, float* u) {
  if (lora) {
    LoraForwardArgs f;
    f.shape = {m, out_dim, in_dim, prec};
    f.x = x;
    f.w = w;
    f.lora = *lora;
    f.u = u;
    f.y = y;
    f.accumulate = accumulate;
    be.lora_forward(f);
    return;
  }
  GemmArgs g;
  g.precision = prec;
  g.m = m;
  g.n = out_dim;
  g.segments = {{acts(x, in_dim), w, in_dim}};
  g.c = y;
  g.ldc = out_dim;
  g.accumulate = accumulate;
  be.gemm(g);
}

// dW[out, in] += dy^T x over m rows.
void weight_grad(Backend& be, Precision prec, float* dw, const float* dy, const float* x, int64_t m, int64_t out_dim,
                 int64_t in_dim) {
  GemmArgs g;
  g.precision = prec;
  g.m = out_dim;
  g.n = in_dim;
  g.segments = {{acts(dy, out_dim, true), acts(x, in_dim, true), m}};
  g.c = dw;
  g.ldc = in_dim;
  g.accumulate = true;
  be.gemm(g);
}

void rmsnorm(Backend& be, const float* x, const VectorRef& w, int64_t rows, int64_t dim, float eps, float* out, float* rstd) {
  RmsNormForwardArgs a;
  a.x = x;
  a.weight = w.data;
  a.weight_dtype = w.dtype;
  a.rows = rows;
  a.dim = dim;
  a.eps = eps;
  a.out = out;
  a.rstd = rstd;
  be.rmsnorm_forward(a);
}

// dx (+)= the norm's input gradient; dw += its weight gradient when not null.
void rmsnorm_grad(Backend& be, const float* dout, const float* x, const VectorRef& w, const float* rstd, int64_t rows, int64_t dim,
                  float* dx, bool accumulate, float* dw) {
  RmsNormBackwardArgs a;
  a.dout = dout;
  a.x = x;
  a.weight = w.data;
  a.weight_dtype = w.dtype;
  a.rstd = rstd;
  a.rows = rows;
  a.dim = dim;
  a.dx = dx;
  a.accumulate = accumulate;
  a.dweight = dw;
  be.rmsnorm_backward(a);
}

void rope(Backend& be, const float* x, float* out, const int32_t* positions, int64_t rows, int64_t heads, const ModelDims& d,
          bool inverse) {
  RopeArgs a;
  a.x = x;
  a.out = out;
  a.positions = positions;
  a.rows = rows;
  a.heads = heads;
  a.head_dim = d.head_dim;
  a.theta = d.rope_theta;
  a.pairing = d.pairing;
  a.inverse = inverse;
  be.rope(a);
}

// What a batch shares across layers: the ids, positions and which keys are real, derived on the
// host and uploaded once (the *_d buffers are the backend's copies).
struct BatchInfo {
  int64_t B, T, n;
  int64_t past = 0;  // tokens already in the KV cache (generation); their keys are all real
  std::vector<int32_t> positions;
  std::vector<uint8_t> key_valid;  // [B, past + T]
  std::vector<int32_t> key_start;  // [B, T], the first key each token sees: packed documents only
  BufOf<int32_t> ids_d, positions_d, key_start_d;
  BufOf<uint8_t> key_valid_d;
  // The attention calls' temporary memory, one buffer for them all, taken at the first call that
  // wants more than it holds (see Backend::attention_scratch_floats).
  Workspace& ws;
  mutable Buf attention_scratch;
  BatchInfo(const Batch& batch, Workspace& workspace, int64_t past_tokens = 0)
      : B(batch.batch), T(batch.seq), n(batch.batch * batch.seq), past(past_tokens), ws(workspace) {
    positions.resize(size_t(n));
    key_valid.assign(size_t(B * (past + T)), 1);
    if (batch.segment_ids) key_start.resize(size_t(n));
    // Positions count real tokens from 0 in each sequence (right or left padding alike), and
    // from 0 again at each packed document's first token.
    for (int64_t b = 0; b < B; ++b) {
      int32_t pos = int32_t(past), doc_start = 0;
      for (int64_t t = 0; t < T; ++t) {
        if (batch.segment_ids && t > 0 && batch.segment_ids[b * T + t] != batch.segment_ids[b * T + t - 1]) {
          doc_start = int32_t(t);
          pos = 0;
        }
        if (batch.segment_ids) key_start[b * T + t] = int32_t(past) + doc_start;
        const bool real = !batch.attention_mask || batch.attention_mask[b * T + t] != 0;
        key_valid[b * (past + T) + past + t] = real ? 1 : 0;
        positions[b * T + t] = real ? pos++ : (pos > 0 ? pos - 1 : 0);
      }
    }
    ids_d = ws.put(batch.input_ids, n);
    positions_d = ws.put(positions);
    key_valid_d = ws.put(key_valid);
    if (!key_start.empty()) key_start_d = ws.put(key_start);
  }
};

AttentionArgs attention_args(const ModelDims& d, const BatchInfo& bi, Precision prec, bool backward) {
  AttentionArgs at;
  at.precision = prec;
  at.batch = bi.B;
  at.tq = bi.T;
  at.tk = bi.past + bi.T;
  at.heads = d.heads;
  at.kv_heads = d.kv_heads;
  at.head_dim = d.head_dim;
  at.scale = float(1.0 / std::sqrt(double(d.head_dim)));
  at.key_valid = bi.key_valid_d.data();
  at.key_start = bi.key_start_d.data();
  const int64_t floats = bi.ws.backend().attention_scratch_floats(at, backward);
  if (floats > bi.attention_scratch.size()) bi.attention_scratch = bi.ws.take(floats);
  at.scratch = bi.attention_scratch.data();
  at.scratch_floats = bi.attention_scratch.size();
  return at;
}

// LoRA ranks by projection (0: none), of one layer or the largest over all layers.
using Ranks = std::array<int64_t, kNumProj>;
Ranks lora_ranks(const Adapter* adapter, int64_t layer) {
  Ranks r{};
  for (int p = 0; p < kNumProj; ++p)
    if (const LoraRef* l = lora_at(adapter, layer, p)) r[p] = l->r;
  return r;
}
Ranks max_lora_ranks(const Adapter* adapter) {
  Ranks r{};
  if (adapter)
    for (int64_t l = 0; l < int64_t(adapter->layers.size()); ++l) {
      const Ranks lr = lora_ranks(adapter, l);
      for (int p = 0; p < kNumProj; ++p) r[p] = std::max(r[p], lr[p]);
    }
  return r;
}

// One layer's intermediate activations: what its backward reads. From the call's workspace,
// uninitialised: the forward writes each before anything reads it.
struct LayerActs {
  Buf xn1, q_pre, k_pre, q, k, v, attn, lse, h_mid, xn2, gate, up, act;
  Buf rstd1, rstd2, q_rstd, k_rstd;
  Buf u[kNumProj];  // x A^T of each projection's LoRA, room for `ranks`
  LayerActs(const ModelDims& d, const BatchInfo& bi, const Ranks& ranks, Workspace& ws) {
    const int64_t n = bi.n;
    xn1 = ws.take(n * d.hidden);
    q = ws.take(n * d.q_dim());
    k = ws.take(n * d.kv_dim());
    v = ws.take(n * d.kv_dim());
    if (d.qk_norm) {
      q_pre = ws.take(n * d.q_dim());
      k_pre = ws.take(n * d.kv_dim());
      q_rstd = ws.take(n * d.heads);
      k_rstd = ws.take(n * d.kv_heads);
    }
    attn = ws.take(n * d.q_dim());
    lse = ws.take(bi.B * d.heads * bi.T);
    h_mid = ws.take(n * d.hidden);
    xn2 = ws.take(n * d.hidden);
    gate = ws.take(n * d.intermediate);
    up = ws.take(n * d.intermediate);
    act = ws.take(n * d.intermediate);
    rstd1 = ws.take(n);
    rstd2 = ws.take(n);
    for (int p = 0; p < kNumProj; ++p)
      if (ranks[p] > 0) u[p] = ws.take(n * ranks[p]);
  }
};

// Where a layer's keys and values go: the activations, or a KV cache of one sequence whose
// rows [0, past) hold earlier tokens (the new ones are written after them).
struct KvSlot {
  float* k = nullptr;
  float* v = nullptr;
};

// The last real token of each sequence: the one row per sequence that the last layer carries
// past its keys and values when only those rows' final states are wanted.
struct LastRows {
  std::vector<int32_t> row;       // [B], index into the batch's B * T rows
  std::vector<int32_t> position;  // [B], its RoPE position
  std::vector<uint8_t> empty;     // [B], 1: the sequence has no real token (its output is zeroed)
  BufOf<int32_t> starts_d, row_d, position_d;  // the backend's copies; starts: 0, 1, ..., B
  LastRows(const BatchInfo& bi, Workspace& ws) : row(size_t(bi.B)), position(size_t(bi.B)), empty(size_t(bi.B), 1) {
    for (int64_t b = 0; b < bi.B; ++b) {
      row[b] = b * bi.T + bi.T - 1;
      for (int64_t t = bi.T - 1; t >= 0; --t)
        if (bi.key_valid[b * (bi.past + bi.T) + bi.past + t]) {
          row[b] = int32_t(b * bi.T + t);
          empty[b] = 0;
          break;
        }
      position[b] = bi.positions[row[b]];
    }
    std::vector<int32_t> starts(size_t(bi.B + 1));
    for (int64_t b = 0; b <= bi.B; ++b) starts[b] = int32_t(b);
    starts_d = ws.put(starts);
    row_d = ws.put(row);
    position_d = ws.put(position);
  }
  // dst [B, dim] = the last rows of src [B * T, dim].
  void gather(Backend& be, const float* src, int64_t dim, float* dst) const {
    GatherRowsArgs g;
    g.src = src;
    g.starts = starts_d.data();
    g.rows = row_d.data();
    g.count = int64_t(row.size());
    g.dim = dim;
    g.out = dst;
    be.gather_rows(g);
  }
};

// h (in place) = layer(h); a receives the intermediates.
// With `last`, keys and values are made for every row, but the queries and everything after
// attention only for last->row: those rows' outputs go to `last_out` [B, hidden] and h is left
// as it was. A last real token sees every real key of its sequence, so one query row per
// sequence aligned to the last key (Tq = 1) is exactly its causal attention.
void layer_forward(Backend& be, const ModelDims& d, Precision prec, const LayerWeights& lw, const Adapter* adapter,
                   int64_t l, const BatchInfo& bi, float* h, LayerActs& a, const KvSlot* cache = nullptr,
                   const LastRows* last = nullptr, float* last_out = nullptr) {
  const int64_t n = bi.n;
  const int64_t nq = last ? bi.B : n;  // the rows that go on past the keys and values
  auto lora = [&](int p) { return lora_at(adapter, l, p); };
  // attention block: h += o(attn(rope(q(norm(h))), rope(k(norm(h))), v(norm(h))))
  rmsnorm(be, h, lw.input_norm, n, d.hidden, d.eps, a.xn1.data(), a.rstd1.data());
  float* q_out = d.qk_norm ? a.q_pre.data() : a.q.data();
  float* k_new = cache ? cache->k + bi.past * d.kv_dim() : a.k.data();
  float* v_new = cache ? cache->v + bi.past * d.kv_dim() : a.v.data();
  float* k_out = d.qk_norm ? a.k_pre.data() : k_new;
  const float* xq = a.xn1.data();
  if (last) {  // xn2 is free until the MLP block
    last->gather(be, a.xn1.data(), d.hidden, a.xn2.data());
    xq = a.xn2.data();
  }
  linear(be, prec, lw.proj[kQ], lora(kQ), xq, nq, d.q_dim(), d.hidden, q_out, false, a.u[kQ].data());
  linear(be, prec, lw.proj[kK], lora(kK), a.xn1.data(), n, d.kv_dim(), d.hidden, k_out, false, a.u[kK].data());
  linear(be, prec, lw.proj[kV], lora(kV), a.xn1.data(), n, d.kv_dim(), d.hidden, v_new, false, a.u[kV].data());
  if (d.qk_norm) {  // Qwen3: RMSNorm over each head before RoPE
    rmsnorm(be, a.q_pre.data(), lw.q_norm, nq * d.heads, d.head_dim, d.eps, a.q.data(), a.q_rstd.data());
    rmsnorm(be, a.k_pre.data(), lw.k_norm, n * d.kv_heads, d.head_dim, d.eps, k_new, a.k_rstd.data());
  }
  rope(be, a.q.data(), a.q.data(), last ? last->position_d.data() : bi.positions_d.data(), nq, d.heads, d, false);
  rope(be, k_new, k_new, bi.positions_d.data(), n, d.kv_heads, d, false);
  AttentionArgs at = attention_args(d, bi, prec, false);
  if (last) at.tq = 1;
  at.q = a.q.data();
  at.k = cache ? cache->k : a.k.data();
  at.v = cache ? cache->v : a.v.data();
  at.out = a.attn.data();
  at.lse = a.lse.data();
  be.attention_forward(at);
  float* hq = h;
  if (last) {
    last->gather(be, h, d.hidden, last_out);
    hq = last_out;
  }
  linear(be, prec, lw.proj[kO], lora(kO), a.attn.data(), nq, d.hidden, d.q_dim(), hq, true, a.u[kO].data());
  be.copy(a.h_mid.data(), hq, sizeof(float) * size_t(nq * d.hidden));

  // MLP block: h += down(silu(gate(norm(h))) * up(norm(h)))
  rmsnorm(be, hq, lw.post_attention_norm, nq, d.hidden, d.eps, a.xn2.data(), a.rstd2.data());
  linear(be, prec, lw.proj[kGate], lora(kGate), a.xn2.data(), nq, d.intermediate, d.hidden, a.gate.data(), false, a.u[kGate].data());
  linear(be, prec, lw.proj[kUp], lora(kUp), a.xn2.data(), nq, d.intermediate, d.hidden, a.up.data(), false, a.u[kUp].data());
  SwigluForwardArgs sw;
  sw.gate = a.gate.data();
  sw.up = a.up.data();
  sw.in_ld = d.intermediate;
  sw.rows = nq;
  sw.dim = d.intermediate;
  sw.out = a.act.data();
  be.swiglu_forward(sw);
  linear(be, prec, lw.proj[kDown], lora(kDown), a.act.data(), nq, d.hidden, d.intermediate, hq, true, a.u[kDown].data());
}

// Scratch for one layer's backward (from the workspace: each is written before it is read).
struct LayerGradScratch {
  Buf dact, dgate, dup, dxn, dattn, dq, dk, dv, dq_pre, dk_pre;
  LayerGradScratch(const ModelDims& d, int64_t n, Workspace& ws) {
    dact = ws.take(n * d.intermediate);
    dgate = ws.take(n * d.intermediate);
    dup = ws.take(n * d.intermediate);
    dxn = ws.take(n * d.hidden);
    dattn = ws.take(n * d.q_dim());
    dq = ws.take(n * d.q_dim());
    dk = ws.take(n * d.kv_dim());
    dv = ws.take(n * d.kv_dim());
    if (d.qk_norm) {
      dq_pre = ws.take(n * d.q_dim());
      dk_pre = ws.take(n * d.kv_dim());
    }
  }
};

// Backward through projection p: dx (+)= dy W (+ LoRA), and the weight / adapter gradients.
void linear_grad(Backend& be, Workspace& ws, const ModelDims& d, Precision prec, const LayerWeights& lw,
                 const Adapter* adapter, Grads& g, int64_t l, int p, const LayerActs& a, const float* x,
                 const float* dy, int64_t n, float* dx, bool dx_accumulate) {
  const ProjShape shape = proj_shape(d, p);
  const int64_t out_dim = shape.out, in_dim = shape.in;
  const LoraRef* lora = lora_at(adapter, l, p);
  if (lora) {
    Grads::LoraGrad lg = g.lora.empty() ? Grads::LoraGrad{} : g.lora[l][p];
    LoraBackwardArgs lb;
    lb.shape = {n, out_dim, in_dim, prec};
    lb.x = x;
    lb.w = lw.proj[p];
    lb.lora = *lora;
    lb.u = a.u[p].data();
    lb.dy = dy;
    lb.dx = dx;
    lb.dx_accumulate = dx_accumulate;
    lb.da = lg.a;
    lb.db = lg.b;
    if (lg.a && lg.b) {
      be.lora_backward(lb);
    } else if (dx) {  // adapter frozen: its path still carries the input gradient (into scratch dA, dB)
      lb.da = ws.take(lora->r * in_dim).data();
      lb.db = ws.take(out_dim * lora->r).data();
      be.zero(lb.da, sizeof(float) * size_t(lora->r * in_dim));
      be.zero(lb.db, sizeof(float) * size_t(out_dim * lora->r));
      be.lora_backward(lb);
    }
  } else if (dx) {
    GemmArgs gx;
    gx.precision = prec;
    gx.m = n;
    gx.n = in_dim;
    gx.segments = {{acts(dy, out_dim), transposed(lw.proj[p]), out_dim}};
    gx.c = dx;
    gx.ldc = in_dim;
    gx.accumulate = dx_accumulate;
    be.gemm(gx);
  }
  if (g.base() && g.layers[l].proj[p]) weight_grad(be, prec, g.layers[l].proj[p], dy, x, n, out_dim, in_dim);
}

// dh: in, the gradient of the layer's output; out, of its input h_in when `input_grad` (otherwise
// left as it was: the first layer's input gradient is wanted only when the embedding, or some
// of its rows, trains).
void layer_backward(Backend& be, Workspace& ws, const ModelDims& d, Precision prec, const LayerWeights& lw,
                    const Adapter* adapter, int64_t l, const BatchInfo& bi, const float* h_in, const LayerActs& a,
                    float* dh, bool input_grad, Grads& g, LayerGradScratch& s) {
  const int64_t n = bi.n;
  Grads::Layer* gl = g.base() ? &g.layers[l] : nullptr;

  // MLP block
  linear_grad(be, ws, d, prec, lw, adapter, g, l, kDown, a, a.act.data(), dh, n, s.dact.data(), false);
  SwigluBackwardArgs sb;
  sb.dout = s.dact.data();
  sb.gate = a.gate.data();
  sb.up = a.up.data();
  sb.in_ld = d.intermediate;
  sb.rows = n;
  sb.dim = d.intermediate;
  sb.dgate = s.dgate.data();
  sb.dup = s.dup.data();
  sb.grad_ld = d.intermediate;
  be.swiglu_backward(sb);
  linear_grad(be, ws, d, prec, lw, adapter, g, l, kGate, a, a.xn2.data(), s.dgate.data(), n, s.dxn.data(), false);
  linear_grad(be, ws, d, prec, lw, adapter, g, l, kUp, a, a.xn2.data(), s.dup.data(), n, s.dxn.data(), true);
  rmsnorm_grad(be, s.dxn.data(), a.h_mid.data(), lw.post_attention_norm, a.rstd2.data(), n, d.hidden, dh, true,
               gl ? gl->post_attention_norm : nullptr);

  // attention block
  linear_grad(be, ws, d, prec, lw, adapter, g, l, kO, a, a.attn.data(), dh, n, s.dattn.data(), false);
  AttentionArgs at = attention_args(d, bi, prec, true);
  at.q = a.q.data();
  at.k = a.k.data();
  at.v = a.v.data();
  at.out = const_cast<float*>(a.attn.data());
  at.lse = const_cast<float*>(a.lse.data());
  at.dout = s.dattn.data();
  at.dq = s.dq.data();
  at.dk = s.dk.data();
  at.dv = s.dv.data();
  be.attention_backward(at);
  rope(be, s.dq.data(), s.dq.data(), bi.positions_d.data(), n, d.heads, d, true);
  rope(be, s.dk.data(), s.dk.data(), bi.positions_d.data(), n, d.kv_heads, d, true);
  const float* dq = s.dq.data();
  const float* dk = s.dk.data();
  if (d.qk_norm) {
    rmsnorm_grad(be, s.dq.data(), a.q_pre.data(), lw.q_norm, a.q_rstd.data(), n * d.heads, d.head_dim, s.dq_pre.data(), false,
                 gl ? gl->q_norm : nullptr);
    rmsnorm_grad(be, s.dk.data(), a.k_pre.data(), lw.k_norm, a.k_rstd.data(), n * d.kv_heads, d.head_dim, s.dk_pre.data(),
                 false, gl ? gl->k_norm : nullptr);
    dq = s.dq_pre.data();
    dk = s.dk_pre.data();
  }
  // The input norm's weight gradient needs dxn too.
  float* dxn = input_grad || (gl && gl->input_norm) ? s.dxn.data() : nullptr;
  linear_grad(be, ws, d, prec, lw, adapter, g, l, kQ, a, a.xn1.data(), dq, n, dxn, false);
  linear_grad(be, ws, d, prec, lw, adapter, g, l, kK, a, a.xn1.data(), dk, n, dxn, true);
  linear_grad(be, ws, d, prec, lw, adapter, g, l, kV, a, a.xn1.data(), s.dv.data(), n, dxn, true);
  if (dxn) rmsnorm_grad(be, dxn, h_in, lw.input_norm, a.rstd1.data(), n, d.hidden, dh, true, gl ? gl->input_norm : nullptr);
}

void embed(Backend& be, const ModelWeights& w, const ModelDims& d, const BatchInfo& bi, float* h) {
  EmbeddingForwardArgs emb;
  emb.ids = bi.ids_d.data();
  emb.n = bi.n;
  emb.table = w.embed.data;
  emb.table_dtype = w.embed.dtype;
  emb.dim = d.hidden;
  emb.out = h;
  be.embedding_forward(emb);
}

// The embedding's gradient on a few rows alone: rows[j] += the sum of dh over the positions whose
// token is ids[j] (gathered, then added), never the [vocab, hidden] table's.
void token_rows_backward(Backend& be, Workspace& ws, const ModelDims& d, const Batch& batch, const float* dh,
                         const Grads::TokenRows& tr) {
  std::vector<int32_t> starts(size_t(tr.count + 1), 0), positions;
  for (int64_t j = 0; j < tr.count; ++j) {
    for (int64_t i = 0; i < batch.batch * batch.seq; ++i)
      if (batch.input_ids[i] == tr.ids[j]) positions.push_back(int32_t(i));
    starts[size_t(j + 1)] = int32_t(positions.size());
  }
  if (positions.empty()) return;
  std::vector<int32_t> slots(size_t(tr.count));
  for (int64_t j = 0; j < tr.count; ++j) slots[size_t(j)] = int32_t(j);
  Buf summed = ws.take(tr.count * d.hidden);
  GatherRowsArgs gather;
  gather.src = dh;
  gather.starts = ws.put(starts).data();
  gather.rows = ws.put(positions).data();
  gather.count = tr.count;
  gather.dim = d.hidden;
  gather.out = summed.data();
  be.gather_rows(gather);
  EmbeddingBackwardArgs eb;
  eb.ids = ws.put(slots).data();
  eb.n = tr.count;
  eb.dout = summed.data();
  eb.dim = d.hidden;
  eb.dtable = tr.rows;
  be.embedding_backward(eb);
}

}  // namespace

const ProjSpec kProjections[kNumProj] = {
    {"q_proj", "q", "self_attn", ProjDim::q, ProjDim::hidden},
    {"k_proj", "k", "self_attn", ProjDim::kv, ProjDim::hidden},
    {"v_proj", "v", "self_attn", ProjDim::kv, ProjDim::hidden},
    {"o_proj", "o", "self_attn", ProjDim::hidden, ProjDim::q},
    {"gate_proj", "gate", "mlp", ProjDim::intermediate, ProjDim::hidden},
    {"up_proj", "up", "mlp", ProjDim::intermediate, ProjDim::hidden},
    {"down_proj", "down", "mlp", ProjDim::hidden, ProjDim::intermediate},
};

const char* proj_dim_name(ProjDim which) {
  switch (which) {
    case ProjDim::hidden: return "hidden";
    case ProjDim::intermediate: return "intermediate";
    case ProjDim::q: return "q";
    case ProjDim::kv: return "kv";
  }
  return "";
}

const char* proj_name(int proj) { return kProjections[proj].name; }

int64_t proj_dim(const ModelDims& d, ProjDim which) {
  switch (which) {
    case ProjDim::hidden: return d.hidden;
    case ProjDim::intermediate: return d.intermediate;
    case ProjDim::q: return d.q_dim();
    case ProjDim::kv: return d.kv_dim();
  }
  return 0;
}

ProjShape proj_shape(const ModelDims& d, int proj) {
  return {proj_dim(d, kProjections[proj].out), proj_dim(d, kProjections[proj].in)};
}

void forward(const ModelDims& d, const ModelWeights& w, const Adapter* adapter, const Batch& batch,
             const ForwardOutputs& out, Precision prec, Workspace& ws) {
  Backend& be = ws.backend();
  BatchInfo bi(batch, ws);
  Buf h = ws.take(bi.n * d.hidden);
  embed(be, w, d, bi, h.data());
  // Inference keeps one set of activations, its LoRA scratch sized for the largest ranks anywhere.
  LayerActs a(d, bi, max_lora_ranks(adapter), ws);
  // Last-token pooling is last_hidden's rows.
  const bool pool_last = out.pooled && out.pooling == Pooling::last;
  float* last_hidden = out.last_hidden ? out.last_hidden : pool_last ? out.pooled : nullptr;
  std::unique_ptr<LastRows> last;
  if (last_hidden) last = std::make_unique<LastRows>(bi, ws);
  // Only the last tokens' states wanted: the last layer runs its queries onwards on those rows.
  // (Packed documents keep the full path: their rows see keys from their own document only.)
  const bool last_only = last && !out.hidden && !out.logits && !(out.pooled && !pool_last) && !out.row_log_probs &&
                         !batch.segment_ids && d.layers > 0;
  Buf last_h = last_only ? ws.take(bi.B * d.hidden) : Buf{};
  for (int64_t l = 0; l < d.layers; ++l) {
    const bool prune = last_only && l == d.layers - 1;
    layer_forward(be, d, prec, w.layers[l], adapter, l, bi, h.data(), a, nullptr, prune ? last.get() : nullptr,
                  prune ? last_h.data() : nullptr);
  }
  if (last_only) {
    rmsnorm(be, last_h.data(), w.final_norm, bi.B, d.hidden, d.eps, last_hidden, nullptr);
  } else {
    float* final_hidden = out.hidden ? out.hidden : a.xn1.data();
    rmsnorm(be, h.data(), w.final_norm, bi.n, d.hidden, d.eps, final_hidden, nullptr);
    if (out.logits) linear(be, prec, w.lm_head, nullptr, final_hidden, bi.n, d.vocab, d.hidden, out.logits, false, nullptr);
    if (last) last->gather(be, final_hidden, d.hidden, last_hidden);
    if (out.pooled && !pool_last) PoolRows(batch, out.pooling, ws).gather(be, final_hidden, d.hidden, out.pooled);
    if (out.row_log_probs) {
      const std::vector<double> nll = row_nll(be, d, w, bi.B, bi.T, final_hidden, ws.put(out.targets, bi.n).data(), prec);
      for (int64_t b = 0; b < bi.B; ++b) out.row_log_probs[b] = -nll[size_t(b)];
    }
  }
  if (last)
    for (int64_t b = 0; b < bi.B; ++b)
      if (last->empty[b]) be.zero(last_hidden + b * d.hidden, sizeof(float) * size_t(d.hidden));
  if (pool_last && last_hidden != out.pooled) be.copy(out.pooled, last_hidden, sizeof(float) * size_t(bi.B * d.hidden));
}

void KvCache::reset(Backend& be, const ModelDims& d, int64_t max_len) {
  capacity = max_len;
  length = 0;
  k.clear();
  v.clear();
  for (int64_t l = 0; l < d.layers; ++l) {
    k.emplace_back(be, sizeof(float) * size_t(max_len * d.kv_dim()));
    v.emplace_back(be, sizeof(float) * size_t(max_len * d.kv_dim()));
  }
}

void forward_cached(const ModelDims& d, const ModelWeights& w, const Adapter* adapter, KvCache& cache,
                    const int32_t* ids, int64_t count, float* last_logits, Precision prec, Workspace& ws) {
  if (cache.length + count > cache.capacity) throw std::length_error("the KV cache is full");
  Backend& be = ws.backend();
  Batch batch;
  batch.input_ids = ids;
  batch.batch = 1;
  batch.seq = count;
  BatchInfo bi(batch, ws, cache.length);
  Buf h = ws.take(count * d.hidden);
  embed(be, w, d, bi, h.data());
  LayerActs a(d, bi, max_lora_ranks(adapter), ws);
  for (int64_t l = 0; l < d.layers; ++l) {
    KvSlot slot{cache.k[l].as<float>(), cache.v[l].as<float>()};
    layer_forward(be, d, prec, w.layers[l], adapter, l, bi, h.data(), a, &slot);
  }
  cache.length += count;
  // only the last position's logits are needed to pick the next token
  const float* last = h.data() + (count - 1) * d.hidden;
  Buf normed = ws.take(d.hidden);
  rmsnorm(be, last, w.final_norm, 1, d.hidden, d.eps, normed.data(), nullptr);
  linear(be, prec, w.lm_head, nullptr, normed.data(), 1, d.vocab, d.hidden, last_logits, false, nullptr);
}

double train_step(const ModelDims& d, const ModelWeights& w, const Adapter* trained_adapter, const Batch& batch,
                  const LossFn& loss_fn, Grads& g, const TrainOptions& options, Workspace& ws) {
  Backend& be = ws.backend();
  const bool evaluation = !g.base() && g.lora.empty() && !g.embed_rows.rows && !g.lm_head_rows.rows;
  // LoRA dropout in training: each (layer, projection) gets its own mask seed for this step.
  Adapter with_dropout;
  const Adapter* adapter = trained_adapter;
  if (trained_adapter && trained_adapter->dropout > 0.0f && (!evaluation || options.forward_only)) {
    with_dropout = *trained_adapter;
    for (size_t l = 0; l < with_dropout.layers.size(); ++l)
      for (int p = 0; p < kNumProj; ++p) {
        LoraRef& ref = with_dropout.layers[l][p];
        ref.dropout = trained_adapter->dropout;
        ref.seed = options.dropout_seed * 0x9e3779b97f4a7c15ull + uint64_t(l * kNumProj + p) * 0xbf58476d1ce4e5b9ull + 1;
      }
    adapter = &with_dropout;
  }
  // No backward (an evaluation, or forward_only): the inference forward and the loss.
  if (evaluation || options.forward_only) {
    Buf hidden = ws.take(batch.batch * batch.seq * d.hidden);
    forward(d, w, adapter, batch, ForwardOutputs{hidden.data(), nullptr}, options.precision, ws);
    return loss_fn(hidden.data(), nullptr, ws);
  }
  const Precision prec = options.precision;
  BatchInfo bi(batch, ws);
  const int64_t nh = bi.n * d.hidden;
  const size_t nh_bytes = sizeof(float) * size_t(nh);
  // Each layer's input, kept for the backward (and, with recompute, to replay the layer).
  std::vector<Buf> h_in(size_t(d.layers));
  std::vector<LayerActs> saved;
  saved.reserve(options.recompute ? 1 : size_t(d.layers));
  Buf h = ws.take(nh);
  embed(be, w, d, bi, h.data());
  for (int64_t l = 0; l < d.layers; ++l) {
    h_in[l] = ws.take(nh);
    be.copy(h_in[l].data(), h.data(), nh_bytes);
    if (options.recompute) {  // one set of activations, room for the largest ranks of any layer
      if (saved.empty()) saved.emplace_back(d, bi, max_lora_ranks(adapter), ws);
      layer_forward(be, d, prec, w.layers[l], adapter, l, bi, h.data(), saved[0]);
    } else {
      saved.emplace_back(d, bi, lora_ranks(adapter, l), ws);
      layer_forward(be, d, prec, w.layers[l], adapter, l, bi, h.data(), saved.back());
    }
  }
  Buf hidden = ws.take(nh), dhidden = ws.take(nh), rstd_final = ws.take(bi.n);
  rmsnorm(be, h.data(), w.final_norm, bi.n, d.hidden, d.eps, hidden.data(), rstd_final.data());

  const double loss = loss_fn(hidden.data(), dhidden.data(), ws);

  // dh: gradient of the last layer's output
  Buf dh = ws.take(nh);
  rmsnorm_grad(be, dhidden.data(), h.data(), w.final_norm, rstd_final.data(), bi.n, d.hidden, dh.data(), false,
               g.base() ? g.final_norm : nullptr);
  LayerGradScratch scratch(d, bi.n, ws);
  for (int64_t l = d.layers - 1; l >= 0; --l) {
    LayerActs* a;
    if (options.recompute) {
      a = &saved[0];
      be.copy(h.data(), h_in[l].data(), nh_bytes);
      layer_forward(be, d, prec, w.layers[l], adapter, l, bi, h.data(), *a);
    } else {
      a = &saved[size_t(l)];
    }
    const bool input_grad = l > 0 || (g.base() && g.embed) || g.embed_rows.rows;
    layer_backward(be, ws, d, prec, w.layers[l], adapter, l, bi, h_in[l].data(), *a, dh.data(), input_grad, g, scratch);
  }
  if (g.base() && g.embed) {
    EmbeddingBackwardArgs eb;
    eb.ids = bi.ids_d.data();
    eb.n = bi.n;
    eb.dout = dh.data();
    eb.dim = d.hidden;
    eb.dtable = g.embed;
    be.embedding_backward(eb);
  }
  if (g.embed_rows.rows) token_rows_backward(be, ws, d, batch, dh.data(), g.embed_rows);
  return loss;
}

}  // namespace ernie::engine
