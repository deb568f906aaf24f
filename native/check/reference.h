// The references of ernie_check's op table: straightforward loops over the op's definition
// (backend/ops.h), templated on the scalar they compute in: double is the exact reference (the
// f32 inputs are exact in it); float is the f32 level. `round` rounds the operands of each
// matrix product to bf16 first, as a backend computing that product on bf16 operands does: the
// same-precision reference of a bf16 backend.
#pragma once
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "check/check.h"

namespace ernie::check {

// x, or x rounded to bf16 (a double through f32 first).
template <typename V>
V maybe_bf16(V x, bool round) {
  return round ? V(round_bf16(float(x))) : x;
}

// ---- GEMM --------------------------------------------------------------------------------------

// A host matrix seen as logical [rows, k], stored plainly or as its transpose, with the values
// the backend will hold (bf16-exact when dtype is bf16).
struct Operand {
  std::vector<float> v;
  int64_t rows = 0, k = 0, ld = 0;
  bool trans = false;
  DType dtype = DType::f32;
  float at(int64_t r, int64_t p) const { return trans ? v[size_t(p * ld + r)] : v[size_t(r * ld + p)]; }
};

inline Operand make_operand(Rng& rng, int64_t rows, int64_t k, DType dtype, bool trans, int64_t pad = 0, float scale = 1.0f) {
  Operand o;
  o.rows = rows;
  o.k = k;
  o.trans = trans;
  o.dtype = dtype;
  o.ld = (trans ? rows : k) + pad;
  const size_t n = size_t(std::max<int64_t>(trans ? k * o.ld : rows * o.ld, 0));
  o.v = dtype == DType::bf16 ? rng.vec_bf16(n, scale) : rng.vec(n, scale);
  return o;
}

struct RefSegment {
  const Operand* a;
  const Operand* b;
  int64_t k;
  float scale;
};

// alpha * sum_s scale_s * A_s . B_s^T, [m, n]. Rounded: A after its factor (alpha * scale, in
// f32) when there are several segments, as the backends pack them; alone, the factor is
// applied to the result.
template <typename T>
std::vector<T> ref_gemm(int64_t m, int64_t n, const std::vector<RefSegment>& segs, float alpha, bool round) {
  std::vector<T> c(size_t(m * n), T(0));
  const bool one = segs.size() == 1;
  for (const RefSegment& s : segs) {
    const float f = alpha * s.scale;  // f32, as the backends form it
    const bool prescale = round && !one;
    const T factor = prescale ? T(1) : (round ? T(f) : T(alpha) * T(s.scale));
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) {
        T acc = 0;
        for (int64_t p = 0; p < s.k; ++p) {
          const float a = prescale ? round_bf16(f * s.a->at(i, p)) : maybe_bf16(s.a->at(i, p), round);
          acc += T(a) * T(maybe_bf16(s.b->at(j, p), round));
        }
        c[size_t(i * n + j)] += factor * acc;
      }
  }
  return c;
}

// ---- attention ---------------------------------------------------------------------------------
struct AttnShape {
  int64_t batch, tq, tk, heads, kv_heads, head_dim;
  float scale;
  std::vector<uint8_t> key_valid;  // [B, tk], empty: all keys real
  std::vector<int32_t> key_start;  // [B, tq], empty: from key 0
  int64_t q_size() const { return batch * tq * heads * head_dim; }
  int64_t kv_size() const { return batch * tk * kv_heads * head_dim; }
  int64_t lse_size() const { return batch * heads * tq; }
  bool sees(int64_t b, int64_t i, int64_t j) const {
    if (j > i + (tk - tq)) return false;
    if (!key_valid.empty() && !key_valid[size_t(b * tk + j)]) return false;
    if (!key_start.empty() && j < key_start[size_t(b * tq + i)]) return false;
    return true;
  }
};

template <typename T>
struct AttnRef {
  std::vector<T> out, lse, dq, dk, dv;
};

// Forward (out, lse) and, when dout is given, backward (dq, dk, dv). Rounded: q, k, v, dout and
// the probabilities as products' operands (and dS for dq, dk), FlashAttention's way; the
// softmax's sums and the row's delta stay unrounded.
template <typename T, typename In = float>
AttnRef<T> ref_attention(const AttnShape& s, const std::vector<In>& q, const std::vector<In>& k, const std::vector<In>& v,
                         const std::vector<In>* dout, bool round) {
  const int64_t D = s.head_dim, H = s.heads, KV = s.kv_heads, group = H / KV;
  AttnRef<T> r;
  r.out.assign(size_t(s.q_size()), T(0));
  r.lse.assign(size_t(s.lse_size()), -std::numeric_limits<T>::infinity());
  if (dout) {
    r.dq.assign(size_t(s.q_size()), T(0));
    r.dk.assign(size_t(s.kv_size()), T(0));
    r.dv.assign(size_t(s.kv_size()), T(0));
  }
  auto qi = [&](int64_t b, int64_t i, int64_t h) { return size_t(((b * s.tq + i) * H + h) * D); };
  auto ki = [&](int64_t b, int64_t j, int64_t h) { return size_t(((b * s.tk + j) * KV + h) * D); };
  std::vector<T> sc(size_t(s.tk)), p(size_t(s.tk));
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t h = 0; h < H; ++h) {
      const int64_t kh = h / group;
      for (int64_t i = 0; i < s.tq; ++i) {
        const size_t q0 = qi(b, i, h);
        T mx = -std::numeric_limits<T>::infinity();
        for (int64_t j = 0; j < s.tk; ++j) {
          if (!s.sees(b, i, j)) continue;
          const size_t k0 = ki(b, j, kh);
          T dot = 0;
          for (int64_t d = 0; d < D; ++d) dot += T(maybe_bf16(q[q0 + d], round)) * T(maybe_bf16(k[k0 + d], round));
          sc[size_t(j)] = T(s.scale) * dot;
          mx = std::max(mx, sc[size_t(j)]);
        }
        if (mx == -std::numeric_limits<T>::infinity()) continue;  // sees no key: out 0, lse -inf
        T sum = 0;
        for (int64_t j = 0; j < s.tk; ++j)
          if (s.sees(b, i, j)) sum += (p[size_t(j)] = std::exp(sc[size_t(j)] - mx));
        T* o = r.out.data() + q0;
        for (int64_t j = 0; j < s.tk; ++j) {
          if (!s.sees(b, i, j)) continue;
          const T pj = round ? T(round_bf16(float(p[size_t(j)]))) : p[size_t(j)];
          const size_t k0 = ki(b, j, kh);
          for (int64_t d = 0; d < D; ++d) o[d] += pj * T(maybe_bf16(v[k0 + d], round));
        }
        for (int64_t d = 0; d < D; ++d) o[d] /= sum;
        const T lse = mx + std::log(sum);
        r.lse[size_t((b * H + h) * s.tq + i)] = lse;
        if (!dout) continue;
        // Backward of this row: P = exp(S - lse), dV += P^T dO, dP = dO V^T, dS = P (dP - delta),
        // dQ += scale dS K, dK += scale dS^T Q.
        T delta = 0;
        for (int64_t d = 0; d < D; ++d) delta += T((*dout)[q0 + d]) * o[d];
        for (int64_t j = 0; j < s.tk; ++j) {
          if (!s.sees(b, i, j)) continue;
          const size_t k0 = ki(b, j, kh);
          const T pj = std::exp(sc[size_t(j)] - lse);
          const T pr = round ? T(round_bf16(float(pj))) : pj;
          T dp = 0;
          for (int64_t d = 0; d < D; ++d) {
            const T g = T(maybe_bf16((*dout)[q0 + d], round));
            r.dv[k0 + d] += pr * g;
            dp += g * T(maybe_bf16(v[k0 + d], round));
          }
          const T ds = pj * (dp - delta);
          const T dsr = round ? T(round_bf16(float(ds))) : ds;
          for (int64_t d = 0; d < D; ++d) {
            r.dq[q0 + d] += T(s.scale) * dsr * T(maybe_bf16(k[k0 + d], round));
            r.dk[k0 + d] += T(s.scale) * dsr * T(maybe_bf16(q[q0 + d], round));
          }
        }
      }
    }
  return r;
}

// ---- row ops -----------------------------------------------------------------------------------
template <typename T>
void ref_rmsnorm(const std::vector<float>& x, const std::vector<float>& w, int64_t rows, int64_t dim, float eps,
                 std::vector<T>& out, std::vector<T>& rstd) {
  out.assign(size_t(rows * dim), T(0));
  rstd.assign(size_t(rows), T(0));
  for (int64_t r = 0; r < rows; ++r) {
    T ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += T(x[size_t(r * dim + j)]) * T(x[size_t(r * dim + j)]);
    const T rs = T(1) / std::sqrt(ss / T(dim) + T(eps));
    rstd[size_t(r)] = rs;
    for (int64_t j = 0; j < dim; ++j) out[size_t(r * dim + j)] = T(x[size_t(r * dim + j)]) * rs * T(w[size_t(j)]);
  }
}

// dx and dweight of sum(dout * y) (dweight over all rows, from zero).
template <typename T>
void ref_rmsnorm_backward(const std::vector<float>& dout, const std::vector<float>& x, const std::vector<float>& w,
                          int64_t rows, int64_t dim, float eps, std::vector<T>& dx, std::vector<T>& dw) {
  dx.assign(size_t(rows * dim), T(0));
  dw.assign(size_t(dim), T(0));
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x.data() + r * dim;
    const float* gr = dout.data() + r * dim;
    T ss = 0, dot = 0;
    for (int64_t j = 0; j < dim; ++j) {
      ss += T(xr[j]) * T(xr[j]);
      dot += T(gr[j]) * T(w[size_t(j)]) * T(xr[j]);
    }
    const T rs = T(1) / std::sqrt(ss / T(dim) + T(eps));
    for (int64_t j = 0; j < dim; ++j) {
      dx[size_t(r * dim + j)] = rs * T(gr[j]) * T(w[size_t(j)]) - T(xr[j]) * rs * rs * rs * dot / T(dim);
      dw[size_t(j)] += T(gr[j]) * T(xr[j]) * rs;
    }
  }
}

// Angles in double (as the backends take them); the rotation in T.
template <typename T>
std::vector<T> ref_rope(const std::vector<float>& x, const std::vector<int32_t>& pos, int64_t rows, int64_t heads,
                        int64_t hd, double theta, RopePairing pairing, bool inverse) {
  std::vector<T> out(x.size());
  const int64_t half = hd / 2;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < half; ++i) {
      const double angle = double(pos[size_t(r)]) * std::pow(theta, -2.0 * double(i) / double(hd));
      const T c = T(std::cos(angle)), sn = T((inverse ? -1.0 : 1.0) * std::sin(angle));
      const int64_t f = pairing == RopePairing::adjacent ? 2 * i : i;
      const int64_t g = pairing == RopePairing::adjacent ? 2 * i + 1 : i + half;
      for (int64_t h = 0; h < heads; ++h) {
        const size_t base = size_t((r * heads + h) * hd);
        const T a = T(x[base + size_t(f)]), b = T(x[base + size_t(g)]);
        out[base + size_t(f)] = a * c - b * sn;
        out[base + size_t(g)] = b * c + a * sn;
      }
    }
  return out;
}

template <typename T>
T ref_sigmoid(T v) {
  return T(1) / (T(1) + std::exp(-v));
}

// gu: [rows, 2 dim], gate | up. out [rows, dim].
template <typename T>
std::vector<T> ref_swiglu(const std::vector<float>& gu, int64_t rows, int64_t dim) {
  std::vector<T> out(size_t(rows * dim));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < dim; ++j) {
      const T g = T(gu[size_t(r * 2 * dim + j)]), u = T(gu[size_t(r * 2 * dim + dim + j)]);
      out[size_t(r * dim + j)] = g * ref_sigmoid(g) * u;
    }
  return out;
}

// [rows, 2 dim]: dgate | dup.
template <typename T>
std::vector<T> ref_swiglu_backward(const std::vector<float>& dout, const std::vector<float>& gu, int64_t rows, int64_t dim) {
  std::vector<T> d(size_t(rows * 2 * dim));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < dim; ++j) {
      const T g = T(gu[size_t(r * 2 * dim + j)]), u = T(gu[size_t(r * 2 * dim + dim + j)]), o = T(dout[size_t(r * dim + j)]);
      const T sg = ref_sigmoid(g);
      d[size_t(r * 2 * dim + j)] = o * u * sg * (T(1) + g * (T(1) - sg));
      d[size_t(r * 2 * dim + dim + j)] = o * g * sg;
    }
  return d;
}

// dtable[ids[k]] += dout[k], from zero, in id order.
template <typename T>
std::vector<T> ref_embedding_backward(const std::vector<int32_t>& ids, const std::vector<float>& dout, int64_t vocab, int64_t dim) {
  std::vector<T> d(size_t(vocab * dim), T(0));
  for (size_t k = 0; k < ids.size(); ++k)
    for (int64_t j = 0; j < dim; ++j) d[size_t(ids[k] * dim + j)] += T(dout[k * size_t(dim) + size_t(j)]);
  return d;
}

// ---- cross-entropy through a head: mean loss, dhidden, dweight (from zero) ---------------------
template <typename T>
struct CrossEntropyRef {
  T loss = 0;
  int64_t count = 0;
  std::vector<T> token_loss;  // [tokens]: lse - logit[target], 0 where ignored
  std::vector<T> dhidden, dweight;
};

template <typename T>
CrossEntropyRef<T> ref_cross_entropy(const std::vector<float>& hidden, const std::vector<float>& weight,
                                     const std::vector<int32_t>& targets, int64_t tokens, int64_t H, int64_t V,
                                     bool has_grad_scale, float grad_scale, bool round) {
  CrossEntropyRef<T> r;
  r.dhidden.assign(size_t(tokens * H), T(0));
  r.dweight.assign(size_t(V * H), T(0));
  r.token_loss.assign(size_t(tokens), T(0));
  for (int64_t t = 0; t < tokens; ++t) r.count += targets[size_t(t)] >= 0;
  const T gs = has_grad_scale ? T(grad_scale) : (r.count ? T(1) / T(r.count) : T(0));
  std::vector<T> logits(static_cast<size_t>(V));
  T loss_sum = 0;
  for (int64_t t = 0; t < tokens; ++t) {
    if (targets[size_t(t)] < 0) continue;
    const float* h = hidden.data() + t * H;
    T mx = -std::numeric_limits<T>::infinity();
    for (int64_t v = 0; v < V; ++v) {
      T acc = 0;
      for (int64_t j = 0; j < H; ++j) acc += T(maybe_bf16(h[j], round)) * T(maybe_bf16(weight[size_t(v * H + j)], round));
      logits[size_t(v)] = acc;
      mx = std::max(mx, acc);
    }
    T sum = 0;
    for (int64_t v = 0; v < V; ++v) sum += std::exp(logits[size_t(v)] - mx);
    const T lse = mx + std::log(sum);
    r.token_loss[size_t(t)] = lse - logits[size_t(targets[size_t(t)])];
    loss_sum += r.token_loss[size_t(t)];
    for (int64_t v = 0; v < V; ++v) {
      T dl = (std::exp(logits[size_t(v)] - lse) - T(v == targets[size_t(t)] ? 1 : 0)) * gs;
      if (round) dl = T(round_bf16(float(dl)));
      for (int64_t j = 0; j < H; ++j) {
        r.dhidden[size_t(t * H + j)] += dl * T(maybe_bf16(weight[size_t(v * H + j)], round));
        r.dweight[size_t(v * H + j)] += dl * T(maybe_bf16(h[j], round));
      }
    }
  }
  r.loss = r.count ? loss_sum / T(r.count) : T(0);
  return r;
}

// ---- AdamW: `steps` steps from (p, m, v), the gradients grads[step] -----------------------------
struct AdamSettings {
  double lr = 1e-3, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, weight_decay = 0.01;
};

template <typename T>
void ref_adamw(const AdamSettings& a, const std::vector<std::vector<float>>& grads, std::vector<T>& p, std::vector<T>& m,
               std::vector<T>& v) {
  for (size_t s = 0; s < grads.size(); ++s) {
    const int64_t step = int64_t(s) + 1;
    // Exact: the formula in double. f32 level: the f32 constants the backends use (adam_hyper).
    const AdamHyper h = adam_hyper(a.lr, a.beta1, a.beta2, a.eps, a.weight_decay, step);
    const bool f32 = sizeof(T) == sizeof(float);
    const T b1 = f32 ? T(h.beta1) : T(a.beta1), b2 = f32 ? T(h.beta2) : T(a.beta2);
    const T omb1 = f32 ? T(h.one_minus_beta1) : T(1.0 - a.beta1), omb2 = f32 ? T(h.one_minus_beta2) : T(1.0 - a.beta2);
    const T decay = f32 ? T(h.decay) : T(1.0 - a.lr * a.weight_decay);
    const T step_size = f32 ? T(h.step_size) : T(a.lr / (1.0 - std::pow(a.beta1, double(step))));
    const T bias2 = f32 ? T(h.bias2_sqrt) : T(std::sqrt(1.0 - std::pow(a.beta2, double(step))));
    const T eps = f32 ? T(h.eps) : T(a.eps);
    for (size_t i = 0; i < p.size(); ++i) {
      const T g = T(grads[s][i]);
      p[i] *= decay;
      m[i] = b1 * m[i] + omb1 * g;
      v[i] = b2 * v[i] + omb2 * g * g;
      p[i] -= step_size * m[i] / (std::sqrt(v[i]) / bias2 + eps);
    }
  }
}

}  // namespace ernie::check
