// The decoder's row ops (cpu/ops.h). Shapes are flattened typed arrays; sizes come as integers.
//   rmsnormForward({ x, weight, rows, dim, eps, out, rstd? })          out may be x itself
//   rmsnormBackward({ dout, x, weight, rstd, rows, dim, dx, dweight?, accumulate? })
//   ropeForward({ x, positions, heads, headDim, theta, pairing, out? }) in place without out
//   ropeBackward({ dout, positions, heads, headDim, theta, pairing, dx? })
//   swigluForward({ gate, up, out }  |  { gateUp, rows, dim, out })
//   swigluBackward({ dout, gate, up, dgate, dup }  |  { dout, gateUp, rows, dim, dgateUp })
//   embeddingForward({ ids, table, vocab, dim, out })
//   embeddingBackward({ ids, dout, dtable, vocab, dim })                dtable is added to
// Outputs must not share memory with any other argument, except the in-place forms named above.
// Each takes `device`: 'cpu' (default) | 'cuda' | 'checked' (addon/op.h).
#include <memory>
#include <string>
#include <vector>

#include "addon/mirror.h"
#include "addon/op.h"

namespace ernie::addon {
namespace {

constexpr int64_t kMaxDim = INT32_MAX;

struct Named {
  const char* key;
  const ArrayArg* array;  // null for an absent optional argument
};

// Every output against every other argument, outputs against each other included.
void expect_no_overlap(Args& args, std::initializer_list<Named> outputs, std::initializer_list<Named> inputs) {
  for (auto o = outputs.begin(); o != outputs.end(); ++o) {
    if (!o->array) continue;
    for (auto p = o + 1; p != outputs.end(); ++p)
      if (p->array) args.expect_disjoint(o->key, *o->array, p->key, *p->array);
    for (const Named& i : inputs)
      if (i.array) args.expect_disjoint(o->key, *o->array, i.key, *i.array);
  }
}

bool overlap(const ArrayArg& a, const ArrayArg& b) {  // both Float32Arrays
  const float *a0 = a.f32(), *b0 = b.f32();
  return a0 < b0 + b.length && b0 < a0 + a.length;
}

// An output that may work in place: exactly `in` (same memory, same length), or apart from it.
void expect_same_or_disjoint(Args& args, const char* out_key, const ArrayArg& out, const char* in_key,
                             const ArrayArg& in) {
  if (out.data == in.data && out.length == in.length) return;
  if (overlap(out, in))
    args.range_error(args.name(out_key) + " must be " + args.name(in_key) +
                     " itself (in place) or not share memory with it");
}

int64_t positive_dim(Args& args, const char* key) { return args.integer(key, 1, kMaxDim); }

RopePairing pairing(Args& args) {
  if (!args.has("pairing"))
    args.type_error(args.name("pairing") + " is required: 'adjacent' (ERNIE-4.5) or 'half' (Qwen3)");
  const std::string v = args.string_or("pairing", "");
  if (v == "adjacent") return RopePairing::adjacent;
  if (v == "half") return RopePairing::half;
  args.range_error(args.name("pairing") + " must be 'adjacent' or 'half', got '" + v + "'");
}

// The shared part of ropeForward / ropeBackward; `in` is rotated into `out` (or in place).
Job rope_job(Args& args, const char* in_key, const char* out_key, bool inverse, Backend& be) {
  ArrayArg positions = args.i32("positions");
  const int64_t heads = positive_dim(args, "heads");
  const int64_t head_dim = positive_dim(args, "headDim");
  if (head_dim % 2 != 0) args.range_error(args.name("headDim") + " must be even, got " + std::to_string(head_dim));
  const double theta = args.number("theta");
  if (!(theta > 0)) args.range_error(args.name("theta") + " must be positive, got " + std::to_string(theta));
  const RopePairing pair = pairing(args);
  ArrayArg x = args.f32(in_key);
  args.expect_length(in_key, x, uint64_t(positions.length) * heads * head_dim, "positions.length * heads * headDim");
  ArrayArg out = x;
  const bool has_out = args.has(out_key);
  if (has_out) {
    out = args.f32(out_key);
    args.expect_length(out_key, out, x.length, std::string("the length of ") + args.name(in_key));
    expect_same_or_disjoint(args, out_key, out, in_key, x);
  }
  args.expect_disjoint(has_out ? out_key : in_key, out, "positions", positions);
  for (size_t i = 0; i < positions.length; ++i)
    if (positions.i32()[i] < 0)
      args.range_error(args.name("positions") + "[" + std::to_string(i) + "] = " + std::to_string(positions.i32()[i]) +
                       " is negative");
  RopeArgs r;
  r.x = x.f32();
  r.out = out.f32();
  r.positions = positions.i32();
  r.rows = int64_t(positions.length);
  r.heads = heads;
  r.head_dim = head_dim;
  r.theta = theta;
  r.pairing = pair;
  r.inverse = inverse;
  return Job{[r, &be] {
               Mirror m(be);
               RopeArgs d = r;
               m.in_place_or_apart(r.x, r.out, size_t(r.rows * r.heads * r.head_dim), &d.x, &d.out);
               d.positions = m.in(r.positions, size_t(r.rows));
               be.rope(d);
               m.finish();
             },
             {}};
}

// Copies the ids, checking each against [0, vocab): the job uses the copy, so ids changed by
// JavaScript while it runs cannot index outside the table.
std::shared_ptr<std::vector<int32_t>> checked_ids(Args& args, const ArrayArg& ids, int64_t vocab) {
  auto copy = std::make_shared<std::vector<int32_t>>(ids.i32(), ids.i32() + ids.length);
  for (size_t k = 0; k < copy->size(); ++k) {
    const int32_t id = (*copy)[k];
    if (id < 0 || id >= vocab)
      args.range_error(args.name("ids") + "[" + std::to_string(k) + "] = " + std::to_string(id) +
                       " is outside [0, vocab = " + std::to_string(vocab) + ")");
  }
  return copy;
}


Job rmsnorm_forward_job(Args& args, Backend& be) {
  const int64_t rows = args.integer("rows", 0, kMaxDim), dim = positive_dim(args, "dim");
  const uint64_t n = uint64_t(rows) * dim;
  ArrayArg x = args.f32("x"), weight = args.f32_or_bf16("weight"), out = args.f32("out");
  args.expect_length("x", x, n, "rows * dim");
  args.expect_length("weight", weight, dim, "dim");
  args.expect_length("out", out, n, "rows * dim");
  const double eps = args.number("eps");
  if (eps < 0) args.range_error(args.name("eps") + " must be >= 0, got " + std::to_string(eps));
  ArrayArg rstd;
  const bool has_rstd = args.has("rstd");
  if (has_rstd) {
    rstd = args.f32("rstd");
    args.expect_length("rstd", rstd, rows, "rows");
  }
  expect_same_or_disjoint(args, "out", out, "x", x);
  expect_no_overlap(args, {{"out", &out}, {"rstd", has_rstd ? &rstd : nullptr}}, {{"weight", &weight}});
  if (has_rstd) args.expect_disjoint("rstd", rstd, "x", x);
  RmsNormForwardArgs a;
  a.x = x.f32();
  a.weight = weight.data;
  a.weight_dtype = weight.dtype();
  a.rows = rows;
  a.dim = dim;
  a.eps = float(eps);
  a.out = out.f32();
  a.rstd = has_rstd ? rstd.f32() : nullptr;
  return Job{[a, &be] {
               Mirror m(be);
               RmsNormForwardArgs d = a;
               m.in_place_or_apart(a.x, a.out, size_t(a.rows * a.dim), &d.x, &d.out);
               d.weight = m.in_bytes(a.weight, size_t(a.dim * dtype_size(a.weight_dtype)));
               d.rstd = m.out(a.rstd, size_t(a.rows));
               be.rmsnorm_forward(d);
               m.finish();
             },
             {}};
}

Job rmsnorm_backward_job(Args& args, Backend& be) {
  const int64_t rows = args.integer("rows", 0, kMaxDim), dim = positive_dim(args, "dim");
  const uint64_t n = uint64_t(rows) * dim;
  ArrayArg dout = args.f32("dout"), x = args.f32("x"), weight = args.f32_or_bf16("weight"), rstd = args.f32("rstd");
  ArrayArg dx = args.f32("dx");
  args.expect_length("dout", dout, n, "rows * dim");
  args.expect_length("x", x, n, "rows * dim");
  args.expect_length("weight", weight, dim, "dim");
  args.expect_length("rstd", rstd, rows, "rows");
  args.expect_length("dx", dx, n, "rows * dim");
  ArrayArg dweight;
  const bool has_dweight = args.has("dweight");
  if (has_dweight) {
    dweight = args.f32("dweight");
    args.expect_length("dweight", dweight, dim, "dim");
  }
  const bool accumulate = args.boolean_or("accumulate", false);
  expect_no_overlap(args, {{"dx", &dx}, {"dweight", has_dweight ? &dweight : nullptr}},
                    {{"dout", &dout}, {"x", &x}, {"weight", &weight}, {"rstd", &rstd}});
  RmsNormBackwardArgs a;
  a.dout = dout.f32();
  a.x = x.f32();
  a.weight = weight.data;
  a.weight_dtype = weight.dtype();
  a.rstd = rstd.f32();
  a.rows = rows;
  a.dim = dim;
  a.dx = dx.f32();
  a.accumulate = accumulate;
  a.dweight = has_dweight ? dweight.f32() : nullptr;
  return Job{[a, &be] {
               Mirror m(be);
               RmsNormBackwardArgs d = a;
               const size_t n = size_t(a.rows * a.dim);
               d.dout = m.in(a.dout, n);
               d.x = m.in(a.x, n);
               d.weight = m.in_bytes(a.weight, size_t(a.dim * dtype_size(a.weight_dtype)));
               d.rstd = m.in(a.rstd, size_t(a.rows));
               d.dx = a.accumulate ? m.inout(a.dx, n) : m.out(a.dx, n);
               d.dweight = m.inout(a.dweight, size_t(a.dim));
               be.rmsnorm_backward(d);
               m.finish();
             },
             {}};
}


Job swiglu_forward_job(Args& args, Backend& be) {
  SwigluForwardArgs a;
  ArrayArg out = args.f32("out");
  if (args.has("gateUp")) {
    if (args.has("gate") || args.has("up"))
      args.type_error("pass either 'gate' and 'up', or 'gateUp' (fused), not both");
    const int64_t rows = args.integer("rows", 0, kMaxDim), dim = positive_dim(args, "dim");
    ArrayArg gate_up = args.f32("gateUp");
    args.expect_length("gateUp", gate_up, uint64_t(rows) * dim * 2, "rows * 2 * dim");
    args.expect_length("out", out, uint64_t(rows) * dim, "rows * dim");
    expect_no_overlap(args, {{"out", &out}}, {{"gateUp", &gate_up}});
    a.gate = gate_up.f32();
    a.up = gate_up.f32() + dim;
    a.in_ld = 2 * dim;
    a.rows = rows;
    a.dim = dim;
  } else {
    ArrayArg gate = args.f32("gate"), up = args.f32("up");
    args.expect_length("up", up, gate.length, "the length of 'gate'");
    args.expect_length("out", out, gate.length, "the length of 'gate'");
    expect_no_overlap(args, {{"out", &out}}, {{"gate", &gate}, {"up", &up}});
    a.gate = gate.f32();
    a.up = up.f32();
    a.rows = 1;
    a.dim = int64_t(gate.length);
    a.in_ld = a.dim;
  }
  a.out = out.f32();
  return Job{[a, &be] {
               Mirror m(be);
               SwigluForwardArgs d = a;
               const size_t n = size_t(a.rows * a.dim);
               if (a.in_ld == 2 * a.dim && a.up == a.gate + a.dim) {  // fused gate|up: one array
                 d.gate = m.in(a.gate, 2 * n);
                 d.up = d.gate + a.dim;
               } else {
                 d.gate = m.in(a.gate, n);
                 d.up = m.in(a.up, n);
               }
               d.out = m.out(a.out, n);
               be.swiglu_forward(d);
               m.finish();
             },
             {}};
}

Job swiglu_backward_job(Args& args, Backend& be) {
  SwigluBackwardArgs a;
  ArrayArg dout = args.f32("dout");
  if (args.has("gateUp")) {
    if (args.has("gate") || args.has("up") || args.has("dgate") || args.has("dup"))
      args.type_error("pass either 'gate', 'up', 'dgate' and 'dup', or 'gateUp' and 'dgateUp' (fused), not both");
    const int64_t rows = args.integer("rows", 0, kMaxDim), dim = positive_dim(args, "dim");
    ArrayArg gate_up = args.f32("gateUp"), dgate_up = args.f32("dgateUp");
    args.expect_length("dout", dout, uint64_t(rows) * dim, "rows * dim");
    args.expect_length("gateUp", gate_up, uint64_t(rows) * dim * 2, "rows * 2 * dim");
    args.expect_length("dgateUp", dgate_up, uint64_t(rows) * dim * 2, "rows * 2 * dim");
    expect_no_overlap(args, {{"dgateUp", &dgate_up}}, {{"dout", &dout}, {"gateUp", &gate_up}});
    a.gate = gate_up.f32();
    a.up = gate_up.f32() + dim;
    a.dgate = dgate_up.f32();
    a.dup = dgate_up.f32() + dim;
    a.in_ld = a.grad_ld = 2 * dim;
    a.rows = rows;
    a.dim = dim;
  } else {
    ArrayArg gate = args.f32("gate"), up = args.f32("up"), dgate = args.f32("dgate"), dup = args.f32("dup");
    const std::string same = "the length of 'dout'";
    args.expect_length("gate", gate, dout.length, same);
    args.expect_length("up", up, dout.length, same);
    args.expect_length("dgate", dgate, dout.length, same);
    args.expect_length("dup", dup, dout.length, same);
    expect_no_overlap(args, {{"dgate", &dgate}, {"dup", &dup}}, {{"dout", &dout}, {"gate", &gate}, {"up", &up}});
    a.gate = gate.f32();
    a.up = up.f32();
    a.dgate = dgate.f32();
    a.dup = dup.f32();
    a.rows = 1;
    a.dim = int64_t(dout.length);
    a.in_ld = a.grad_ld = a.dim;
  }
  a.dout = dout.f32();
  return Job{[a, &be] {
               Mirror m(be);
               SwigluBackwardArgs d = a;
               const size_t n = size_t(a.rows * a.dim);
               d.dout = m.in(a.dout, n);
               if (a.in_ld == 2 * a.dim && a.up == a.gate + a.dim) {  // fused gate|up and dgate|dup
                 d.gate = m.in(a.gate, 2 * n);
                 d.up = d.gate + a.dim;
                 d.dgate = m.out(a.dgate, 2 * n);
                 d.dup = d.dgate + a.dim;
               } else {
                 d.gate = m.in(a.gate, n);
                 d.up = m.in(a.up, n);
                 d.dgate = m.out(a.dgate, n);
                 d.dup = m.out(a.dup, n);
               }
               be.swiglu_backward(d);
               m.finish();
             },
             {}};
}

Job embedding_forward_job(Args& args, Backend& be) {
  const int64_t vocab = positive_dim(args, "vocab"), dim = positive_dim(args, "dim");
  ArrayArg ids = args.i32("ids"), table = args.f32_or_bf16("table"), out = args.f32("out");
  args.expect_length("table", table, uint64_t(vocab) * dim, "vocab * dim");
  args.expect_length("out", out, uint64_t(ids.length) * dim, "ids.length * dim");
  expect_no_overlap(args, {{"out", &out}}, {{"table", &table}, {"ids", &ids}});
  auto checked = checked_ids(args, ids, vocab);
  EmbeddingForwardArgs a;
  a.ids = checked->data();
  a.n = int64_t(checked->size());
  a.table = table.data;
  a.table_dtype = table.dtype();
  a.dim = dim;
  a.out = out.f32();
  return Job{[a, checked, &be, vocab] {
               Mirror m(be);
               EmbeddingForwardArgs d = a;
               d.ids = m.in(a.ids, size_t(a.n));
               d.table = m.in_bytes(a.table, size_t(vocab * a.dim * dtype_size(a.table_dtype)));
               d.out = m.out(a.out, size_t(a.n * a.dim));
               be.embedding_forward(d);
               m.finish();
             },
             {}};
}

Job embedding_backward_job(Args& args, Backend& be) {
  const int64_t vocab = positive_dim(args, "vocab"), dim = positive_dim(args, "dim");
  ArrayArg ids = args.i32("ids"), dout = args.f32("dout"), dtable = args.f32("dtable");
  args.expect_length("dout", dout, uint64_t(ids.length) * dim, "ids.length * dim");
  args.expect_length("dtable", dtable, uint64_t(vocab) * dim, "vocab * dim");
  expect_no_overlap(args, {{"dtable", &dtable}}, {{"dout", &dout}, {"ids", &ids}});
  auto checked = checked_ids(args, ids, vocab);
  EmbeddingBackwardArgs a;
  a.ids = checked->data();
  a.n = int64_t(checked->size());
  a.dout = dout.f32();
  a.dim = dim;
  a.dtable = dtable.f32();
  return Job{[a, checked, &be, vocab] {
               Mirror m(be);
               EmbeddingBackwardArgs d = a;
               d.ids = m.in(a.ids, size_t(a.n));
               d.dout = m.in(a.dout, size_t(a.n * a.dim));
               d.dtable = m.inout(a.dtable, size_t(vocab * a.dim));
               be.embedding_backward(d);
               m.finish();
             },
             {}};
}

}  // namespace

ERNIE_OP(rmsnormForward) { return rmsnorm_forward_job(args, args.backend()); }
ERNIE_OP(rmsnormBackward) { return rmsnorm_backward_job(args, args.backend()); }
ERNIE_OP(ropeForward) { return rope_job(args, "x", "out", false, args.backend()); }
ERNIE_OP(ropeBackward) { return rope_job(args, "dout", "dx", true, args.backend()); }
ERNIE_OP(swigluForward) { return swiglu_forward_job(args, args.backend()); }
ERNIE_OP(swigluBackward) { return swiglu_backward_job(args, args.backend()); }
ERNIE_OP(embeddingForward) { return embedding_forward_job(args, args.backend()); }
ERNIE_OP(embeddingBackward) { return embedding_backward_job(args, args.backend()); }

}  // namespace ernie::addon
