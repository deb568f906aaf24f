// gemm({ c, m, n, segments: [{ a, b, k, aLayout, bLayout, scale }], alpha, accumulate, precision })
//   c: Float32Array [m, n];  C (+)= alpha * sum over segments of scale * A . B^T
//   a: Float32Array | Uint16Array (bf16), logical [m, k], stored 'mk' (default) or 'km'
//   b: Float32Array | Uint16Array (bf16), logical [n, k], stored 'nk' (default) or 'kn'
//   precision: 'auto' (default) | 'fp32' | 'bf16', what each segment rounds (cpu/precision.h)
// cudaGemm(...): the same on the CUDA backend (cuda/backend.h).
#include "addon/op.h"
#include "cpu/gemm.h"
#include "cuda/backend.h"

namespace ernie::addon {
namespace {

bool layout(Args& args, const char* key, const char* plain, const char* transposed) {
  std::string v = args.string_or(key, plain);
  if (v == plain) return false;
  if (v == transposed) return true;
  args.range_error(args.name(key) + " must be '" + plain + "' or '" + transposed + "', got '" + v + "'");
}

// The op's arguments, for either backend (cudaGemm takes the same object).
Job gemm_job(Args& args, bool on_cuda) {
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
  g.precision = args.precision_or_auto(on_cuda);
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
  return Job{[g, on_cuda] { on_cuda ? cuda::gemm(g) : cpu::gemm(g); }, {}};
}

}  // namespace

ERNIE_OP(gemm) { return gemm_job(args, false); }
ERNIE_OP(cudaGemm) { return gemm_job(args, true); }

}  // namespace ernie::addon
