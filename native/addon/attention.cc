// attentionForward({ q, k, v, out, lse, keyMask?, batch, tq, tk, heads, kvHeads, headDim, scale?, precision? })
//   q [batch, tq, heads, headDim], k and v [batch, tk, kvHeads, headDim]: Float32Array
//   out [batch, tq, heads, headDim], lse [batch, heads, tq]: Float32Array, written
//   keyMask [batch, tk]: Int32Array or Uint8Array of 0 (padding) / 1 (real key)
//   keyStart [batch, tq]: Int32Array, the first key each query row sees (packed documents)
// attentionBackward({ ...the same, dout, dq, dk, dv }): out and lse as the forward left them,
//   dout like out; dq like q, dk and dv like k, overwritten.
// Causal, bottom-right aligned (tq <= tk: the queries are the last tq of tk positions).
// precision: 'auto' (default) | 'fp32' | 'bf16', of its products (backend/ops.h, AttentionArgs).
// device: 'cpu' (default) | 'cuda' (headDim <= 128) | 'checked' (addon/op.h).
#include <cmath>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "addon/mirror.h"
#include "addon/op.h"

namespace ernie::addon {
namespace {

uint64_t product(Args& args, std::initializer_list<int64_t> factors, const std::string& what) {
  uint64_t n = 1;
  for (int64_t f : factors)
    if (__builtin_mul_overflow(n, uint64_t(f), &n)) args.range_error(what + " is too large");
  return n;
}

struct Parsed {
  Backend* be = nullptr;
  AttentionArgs g;
  std::shared_ptr<std::vector<uint8_t>> key_valid;  // the mask as bytes, owned by the Job
  std::vector<std::pair<const char*, ArrayArg>> inputs;
};

// The fields both ops share: shape, q, k, v, keyMask, scale, precision.
Parsed parse_common(Args& args, Op op) {
  Parsed p;
  p.be = &args.backend();
  AttentionArgs& g = p.g;
  g.batch = args.integer("batch", 0, INT32_MAX);
  g.tq = args.integer("tq", 0, INT32_MAX);
  g.tk = args.integer("tk", 0, INT32_MAX);
  g.heads = args.integer("heads", 1, 1 << 16);
  g.kv_heads = args.integer("kvHeads", 1, 1 << 16);
  g.head_dim = args.integer("headDim", 1, p.be->max_head_dim());
  if (g.heads % g.kv_heads != 0)
    args.range_error(args.name("heads") + " (" + std::to_string(g.heads) + ") must be a multiple of " +
                     args.name("kvHeads") + " (" + std::to_string(g.kv_heads) + ")");
  if (g.tq > g.tk)
    args.range_error(args.name("tq") + " (" + std::to_string(g.tq) + ") must not exceed " + args.name("tk") + " (" +
                     std::to_string(g.tk) + "): the queries are the last tq of tk positions");
  const double scale = args.number_or("scale", 1.0 / std::sqrt(double(g.head_dim)));
  g.scale = float(scale);
  g.precision = args.precision(*p.be, op);

  const uint64_t q_len = product(args, {g.batch, g.tq, g.heads, g.head_dim}, "batch * tq * heads * headDim");
  const uint64_t kv_len = product(args, {g.batch, g.tk, g.kv_heads, g.head_dim}, "batch * tk * kvHeads * headDim");
  ArrayArg q = args.f32("q"), k = args.f32("k"), v = args.f32("v");
  args.expect_length("q", q, q_len, "batch * tq * heads * headDim");
  args.expect_length("k", k, kv_len, "batch * tk * kvHeads * headDim");
  args.expect_length("v", v, kv_len, "batch * tk * kvHeads * headDim");
  g.q = q.f32();
  g.k = k.f32();
  g.v = v.f32();
  p.inputs = {{"q", q}, {"k", k}, {"v", v}};

  if (args.has("keyMask")) {
    ArrayArg mask = args.i32_or_u8("keyMask");
    const uint64_t n = uint64_t(g.batch) * uint64_t(g.tk);
    args.expect_length("keyMask", mask, n, "batch * tk");
    auto bytes = std::make_shared<std::vector<uint8_t>>(n);
    for (uint64_t i = 0; i < n; ++i) {
      const int32_t value = mask.type == napi_int32_array ? mask.i32()[i] : mask.u8()[i];
      if (value != 0 && value != 1)
        args.range_error(args.name("keyMask") + " must hold 0 (padding) or 1 (real key), got " +
                         std::to_string(value) + " at index " + std::to_string(i));
      (*bytes)[i] = uint8_t(value);
    }
    p.key_valid = bytes;
    g.key_valid = bytes->data();
    p.inputs.push_back({"keyMask", mask});
  }
  if (args.has("keyStart")) {
    ArrayArg start = args.i32("keyStart");
    const uint64_t n = uint64_t(g.batch) * uint64_t(g.tq);
    args.expect_length("keyStart", start, n, "batch * tq");
    for (uint64_t i = 0; i < n; ++i)
      if (start.i32()[i] < 0 || start.i32()[i] > g.tk)
        args.range_error(args.name("keyStart") + " must hold key positions in [0, tk = " + std::to_string(g.tk) +
                         "], got " + std::to_string(start.i32()[i]) + " at index " + std::to_string(i));
    g.key_start = start.i32();
    p.inputs.push_back({"keyStart", start});
  }
  return p;
}

// Each output must not overlap any input or another output.
void expect_outputs_disjoint(Args& args, const std::vector<std::pair<const char*, ArrayArg>>& outputs,
                             const std::vector<std::pair<const char*, ArrayArg>>& inputs) {
  for (size_t i = 0; i < outputs.size(); ++i) {
    for (const auto& in : inputs) args.expect_disjoint(outputs[i].first, outputs[i].second, in.first, in.second);
    for (size_t j = i + 1; j < outputs.size(); ++j)
      args.expect_disjoint(outputs[i].first, outputs[i].second, outputs[j].first, outputs[j].second);
  }
}


// The arrays of a call as the backend sees them; `backward` adds dout and the gradients.
AttentionArgs mirrored(const AttentionArgs& g, bool backward, Mirror& m) {
  const size_t q_len = size_t(g.batch * g.tq * g.heads * g.head_dim);
  const size_t kv_len = size_t(g.batch * g.tk * g.kv_heads * g.head_dim);
  const size_t lse_len = size_t(g.batch * g.heads * g.tq);
  AttentionArgs d = g;
  d.q = m.in(g.q, q_len);
  d.k = m.in(g.k, kv_len);
  d.v = m.in(g.v, kv_len);
  d.key_valid = m.in(g.key_valid, size_t(g.batch * g.tk));
  d.key_start = m.in(g.key_start, size_t(g.batch * g.tq));
  if (!backward) {
    d.out = m.out(g.out, q_len);
    d.lse = m.out(g.lse, lse_len);
    return d;
  }
  d.out = m.in(g.out, q_len);
  d.lse = m.in(g.lse, lse_len);
  d.dout = m.in(g.dout, q_len);
  d.dq = m.out(g.dq, q_len);
  d.dk = m.out(g.dk, kv_len);
  d.dv = m.out(g.dv, kv_len);
  return d;
}

Job forward_job(Args& args) {
  Parsed p = parse_common(args, Op::attention_forward);
  AttentionArgs& g = p.g;
  ArrayArg out = args.f32("out"), lse = args.f32("lse");
  args.expect_length("out", out, uint64_t(g.batch) * g.tq * g.heads * g.head_dim, "batch * tq * heads * headDim");
  args.expect_length("lse", lse, uint64_t(g.batch) * g.heads * g.tq, "batch * heads * tq");
  expect_outputs_disjoint(args, {{"out", out}, {"lse", lse}}, p.inputs);
  g.out = out.f32();
  g.lse = lse.f32();
  // The lambda holds the mask's bytes (g.key_valid points into them) until the job is done.
  return Job{[g, mask = p.key_valid, be = p.be] {
               Mirror m(*be);
               be->attention_forward(mirrored(g, false, m));
               m.finish();
             },
             {}};
}

Job backward_job(Args& args) {
  Parsed p = parse_common(args, Op::attention_backward);
  AttentionArgs& g = p.g;
  const uint64_t q_len = uint64_t(g.batch) * g.tq * g.heads * g.head_dim;
  const uint64_t kv_len = uint64_t(g.batch) * g.tk * g.kv_heads * g.head_dim;
  ArrayArg out = args.f32("out"), lse = args.f32("lse"), dout = args.f32("dout");
  args.expect_length("out", out, q_len, "batch * tq * heads * headDim");
  args.expect_length("lse", lse, uint64_t(g.batch) * g.heads * g.tq, "batch * heads * tq");
  args.expect_length("dout", dout, q_len, "batch * tq * heads * headDim");
  ArrayArg dq = args.f32("dq"), dk = args.f32("dk"), dv = args.f32("dv");
  args.expect_length("dq", dq, q_len, "batch * tq * heads * headDim");
  args.expect_length("dk", dk, kv_len, "batch * tk * kvHeads * headDim");
  args.expect_length("dv", dv, kv_len, "batch * tk * kvHeads * headDim");
  p.inputs.push_back({"out", out});
  p.inputs.push_back({"lse", lse});
  p.inputs.push_back({"dout", dout});
  expect_outputs_disjoint(args, {{"dq", dq}, {"dk", dk}, {"dv", dv}}, p.inputs);
  g.out = out.f32();
  g.lse = lse.f32();
  g.dout = dout.f32();
  g.dq = dq.f32();
  g.dk = dk.f32();
  g.dv = dv.f32();
  return Job{[g, mask = p.key_valid, be = p.be] {  // mask: as in the forward
               Mirror m(*be);
               be->attention_backward(mirrored(g, true, m));
               m.finish();
             },
             {}};
}

}  // namespace

ERNIE_OP(attentionForward) { return forward_job(args); }
ERNIE_OP(attentionBackward) { return backward_job(args); }

}  // namespace ernie::addon
