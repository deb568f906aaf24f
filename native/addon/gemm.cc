// gemm({ c, m, n, segments: [{ a, b, k, aLayout, bLayout, scale }], alpha, accumulate, precision })
//   c: Float32Array [m, n];  C (+)= alpha * sum over segments of scale * A . B^T
//   a: Float32Array | Uint16Array (bf16), logical [m, k], stored 'mk' (default) or 'km'
//   b: Float32Array | Uint16Array (bf16), logical [n, k], stored 'nk' (default) or 'kn'
//   precision: 'auto' (default) | 'fp32' | 'bf16', what each segment rounds (backend/ops.h)
//   device: 'cpu' (default) | 'cuda' | 'checked', the backend it runs on (addon/op.h); on a
//     backend with memory of its own the arrays are copied there and back (addon/mirror.h)
#include "addon/mirror.h"
#include "addon/op.h"

namespace ernie::addon {
namespace {

bool layout(Args& args, const char* key, const char* plain, const char* transposed) {
  std::string v = args.string_or(key, plain);
  if (v == plain) return false;
  if (v == transposed) return true;
  args.range_error(args.name(key) + " must be '" + plain + "' or '" + transposed + "', got '" + v + "'");
}

}  // namespace

ERNIE_OP(gemm) {
  const int64_t m = args.integer("m", 0, INT32_MAX), n = args.integer("n", 0, INT32_MAX);
  ArrayArg c = args.f32("c");
  args.expect_length("c", c, uint64_t(m) * n, "m * n");
  GemmArgs g;
  g.m = m;
  g.n = n;
  g.c = c.f32();
  g.ldc = n;
  g.alpha = float(args.number_or("alpha", 1.0));
  g.accumulate = args.boolean_or("accumulate", false);
  Backend& be = args.backend();
  g.precision = args.precision(be, Op::gemm);
  for (Args& s : args.objects("segments", 1, 8)) {
    GemmSegment seg;
    seg.k = s.integer("k", 0, INT32_MAX);
    seg.scale = float(s.number_or("scale", 1.0));
    ArrayArg a = s.f32_or_bf16("a"), b = s.f32_or_bf16("b");
    s.expect_length("a", a, uint64_t(m) * seg.k, "m * k");
    s.expect_length("b", b, uint64_t(n) * seg.k, "n * k");
    args.expect_disjoint("c", c, "a", a);
    args.expect_disjoint("c", c, "b", b);
    seg.a = {a.data, a.dtype(), 0, layout(s, "aLayout", "mk", "km")};
    seg.b = {b.data, b.dtype(), 0, layout(s, "bLayout", "nk", "kn")};
    seg.a.ld = seg.a.trans ? m : seg.k;
    seg.b.ld = seg.b.trans ? n : seg.k;
    g.segments.push_back(seg);
  }
  return Job{[g, &be] {
               Mirror mirror(be);
               GemmArgs d = g;
               const size_t c_len = size_t(g.m * g.n);
               d.c = g.accumulate ? mirror.inout(g.c, c_len) : mirror.out(g.c, c_len);
               for (GemmSegment& s : d.segments) {
                 const size_t a_len = size_t(g.m * s.k), b_len = size_t(g.n * s.k);
                 s.a.data = mirror.in(static_cast<const char*>(s.a.data), a_len * size_t(dtype_size(s.a.dtype)));
                 s.b.data = mirror.in(static_cast<const char*>(s.b.data), b_len * size_t(dtype_size(s.b.dtype)));
               }
               be.gemm(d);
               mirror.finish();
             },
             {}};
}

}  // namespace ernie::addon
