// loraForward({ x, weight, loraA, loraB, m, n, k, rank, scale, u, out, accumulate })
// loraBackward({ x, weight, loraA, loraB, m, n, k, rank, scale, u, dout, dx?, dxAccumulate, dA, dB })
//   x [m, k] f32; weight [n, k] f32 | bf16; loraA [rank, k]; loraB [n, rank]; u [m, rank] = x A^T
//   out [m, n]; dx [m, k]; dA, dB accumulate.
//   precision: 'auto' (default) | 'fp32' | 'bf16', of every product (backend/ops.h).
//   device: 'cpu' (default) | 'cuda' | 'checked' (addon/op.h).
#include <tuple>

#include "addon/mirror.h"
#include "addon/op.h"

namespace ernie::addon {
namespace {

struct LoraCall {
  Backend* be;
  LinearShape shape;
  const float* x;
  MatrixRef w;
  LoraRef lora;
  ArrayArg u;
};

LoraCall parse_common(Args& args, Op op) {
  LoraCall c;
  c.be = &args.backend();
  c.shape.m = args.integer("m", 0, INT32_MAX);
  c.shape.n = args.integer("n", 1, INT32_MAX);
  c.shape.k = args.integer("k", 1, INT32_MAX);
  c.shape.precision = args.precision(*c.be, op);
  const int64_t r = args.integer("rank", 1, 4096);
  const auto [m, n, k] = std::tuple{uint64_t(c.shape.m), uint64_t(c.shape.n), uint64_t(c.shape.k)};
  ArrayArg x = args.f32("x"), w = args.f32_or_bf16("weight"), a = args.f32("loraA"), b = args.f32("loraB");
  args.expect_length("x", x, m * k, "m * k");
  args.expect_length("weight", w, n * k, "n * k");
  args.expect_length("loraA", a, uint64_t(r) * k, "rank * k");
  args.expect_length("loraB", b, n * r, "n * rank");
  c.u = args.f32("u");
  args.expect_length("u", c.u, m * r, "m * rank");
  c.x = x.f32();
  c.w = MatrixRef{w.data, w.dtype(), int64_t(k), false};
  c.lora = LoraRef{a.f32(), b.f32(), r, float(args.number("scale"))};
  c.lora.dropout = float(args.number_or("dropout", 0.0));
  if (c.lora.dropout < 0 || c.lora.dropout >= 1) args.range_error("'dropout' must be in [0, 1)");
  c.lora.seed = uint64_t(args.integer_or("seed", 0, 0, (int64_t(1) << 53)));
  return c;
}

// The operands both directions read, as the backend sees them.
void mirror_operands(const LoraCall& c, Mirror& m, const float** x, MatrixRef* w, LoraRef* lora, const float** u) {
  const size_t mk = size_t(c.shape.m * c.shape.k), nk = size_t(c.shape.n * c.shape.k);
  *x = m.in(c.x, mk);
  *w = c.w;
  w->data = m.in(static_cast<const char*>(c.w.data), nk * size_t(dtype_size(c.w.dtype)));
  *lora = c.lora;
  lora->a = m.in(c.lora.a, size_t(c.lora.r * c.shape.k));
  lora->b = m.in(c.lora.b, size_t(c.shape.n * c.lora.r));
  *u = c.u.f32();
}

Job forward_job(Args& args) {
  LoraCall c = parse_common(args, Op::lora_forward);
  ArrayArg out = args.f32("out");
  args.expect_length("out", out, uint64_t(c.shape.m) * c.shape.n, "m * n");
  ArrayArg x = args.f32("x");
  args.expect_disjoint("out", out, "x", x);
  args.expect_disjoint("u", c.u, "x", x);
  args.expect_disjoint("out", out, "u", c.u);
  const bool accumulate = args.boolean_or("accumulate", false);
  return Job{[c, out, accumulate] {
               Mirror m(*c.be);
               LoraForwardArgs f;
               f.shape = c.shape;
               const float* u;
               mirror_operands(c, m, &f.x, &f.w, &f.lora, &u);
               f.u = m.out(c.u.f32(), size_t(c.shape.m * c.lora.r));
               const size_t mn = size_t(c.shape.m * c.shape.n);
               f.y = accumulate ? m.inout(out.f32(), mn) : m.out(out.f32(), mn);
               f.accumulate = accumulate;
               c.be->lora_forward(f);
               m.finish();
             },
             {}};
}

Job backward_job(Args& args) {
  LoraCall c = parse_common(args, Op::lora_backward);
  const uint64_t m = c.shape.m, n = c.shape.n, k = c.shape.k, r = c.lora.r;
  ArrayArg dout = args.f32("dout"), da = args.f32("dA"), db = args.f32("dB");
  args.expect_length("dout", dout, m * n, "m * n");
  args.expect_length("dA", da, r * k, "rank * k");
  args.expect_length("dB", db, n * r, "n * rank");
  args.expect_disjoint("dA", da, "dB", db);
  float* dx = nullptr;
  if (args.has("dx")) {
    ArrayArg dxa = args.f32("dx");
    args.expect_length("dx", dxa, m * k, "m * k");
    args.expect_disjoint("dx", dxa, "dout", dout);
    args.expect_disjoint("dx", dxa, "x", args.f32("x"));
    dx = dxa.f32();
  }
  const bool dx_accumulate = args.boolean_or("dxAccumulate", false);
  return Job{[c, dout, dx, dx_accumulate, da, db] {
               Mirror m(*c.be);
               LoraBackwardArgs b;
               b.shape = c.shape;
               mirror_operands(c, m, &b.x, &b.w, &b.lora, &b.u);
               b.u = m.in(c.u.f32(), size_t(c.shape.m * c.lora.r));
               b.dy = m.in(dout.f32(), size_t(c.shape.m * c.shape.n));
               const size_t mk = size_t(c.shape.m * c.shape.k);
               b.dx = dx_accumulate ? m.inout(dx, mk) : m.out(dx, mk);
               b.dx_accumulate = dx_accumulate;
               b.da = m.inout(da.f32(), size_t(c.lora.r * c.shape.k));
               b.db = m.inout(db.f32(), size_t(c.shape.n * c.lora.r));
               c.be->lora_backward(b);
               m.finish();
             },
             {}};
}

}  // namespace

ERNIE_OP(loraForward) { return forward_job(args); }
ERNIE_OP(loraBackward) { return backward_job(args); }

}  // namespace ernie::addon
