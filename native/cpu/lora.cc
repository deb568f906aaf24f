#include "cpu/lora.h"

#include <vector>

#include "cpu/gemm.h"

namespace ernie::cpu {
namespace {

MatrixRef f32_ref(const float* p, int64_t ld, bool trans) { return MatrixRef{p, DType::f32, ld, trans}; }

// x with the adapter's dropout applied (a copy), or x itself when there is none.
const float* dropped_input(const float* x, int64_t count, const LoraRef& lora, std::vector<float>& buffer) {
  if (lora.dropout <= 0.0f) return x;
  buffer.resize(size_t(count));
  const float keep_scale = 1.0f / (1.0f - lora.dropout);
  for (int64_t i = 0; i < count; ++i) buffer[i] = lora_keep(lora.seed, uint64_t(i), lora.dropout) ? x[i] * keep_scale : 0.0f;
  return buffer.data();
}

// The calling thread's packed copy of the A operand that a LoRA call's products share (x in the
// forward, dy in the backward), kept between calls so that its pages stay mapped.
SharedPackedA& shared_input() {
  thread_local SharedPackedA shared;
  shared.reset();
  return shared;
}

}  // namespace

void lora_linear_forward(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora, float* u,
                         float* y, bool accumulate) {
  // u = dropout(x) A^T  [m, r]; without dropout, x packed once for both products
  SharedPackedA& packed_x = shared_input();
  std::vector<float> dropped;
  const float* xd = dropped_input(x, sh.m * sh.k, lora, dropped);
  GemmArgs ua;
  ua.precision = sh.precision;
  ua.m = sh.m;
  ua.n = lora.r;
  ua.segments = {{f32_ref(xd, sh.k, false), f32_ref(lora.a, sh.k, false), sh.k}};
  ua.c = u;
  ua.ldc = lora.r;
  gemm(ua, &packed_x);
  // y (+)= x W^T + s u B^T, one pass over y
  GemmArgs ya;
  ya.precision = sh.precision;
  ya.m = sh.m;
  ya.n = sh.n;
  ya.segments = {{f32_ref(x, sh.k, false), w, sh.k}, {f32_ref(u, lora.r, false), f32_ref(lora.b, lora.r, false), lora.r, lora.scale}};
  ya.c = y;
  ya.ldc = sh.n;
  ya.accumulate = accumulate;
  gemm(ya, &packed_x);
}

void lora_linear_backward(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora,
                          const float* u, const float* dy, float* dx, bool dx_accumulate, float* da, float* db) {
  const int64_t m = sh.m, n = sh.n, k = sh.k, r = lora.r;
  // g = dy B  [m, r]: B [n, r] is the logical [r, n] operand stored transposed; dy packed once
  // for g and dx
  SharedPackedA& packed_dy = shared_input();
  std::vector<float> g(size_t(m * r));
  GemmArgs ga;
  ga.precision = sh.precision;
  ga.m = m;
  ga.n = r;
  ga.segments = {{f32_ref(dy, n, false), f32_ref(lora.b, r, true), n}};
  ga.c = g.data();
  ga.ldc = r;
  gemm(ga, &packed_dy);
  // dB += s dy^T u  [n, r]
  GemmArgs gb;
  gb.precision = sh.precision;
  gb.m = n;
  gb.n = r;
  gb.segments = {{f32_ref(dy, n, true), f32_ref(u, r, true), m}};
  gb.c = db;
  gb.ldc = r;
  gb.alpha = lora.scale;
  gb.accumulate = true;
  gemm(gb);
  // dA += s g^T dropout(x)  [r, k]
  std::vector<float> dropped;
  const float* xd = dropped_input(x, m * k, lora, dropped);
  GemmArgs gA;
  gA.precision = sh.precision;
  gA.m = r;
  gA.n = k;
  gA.segments = {{f32_ref(g.data(), r, true), f32_ref(xd, k, true), m}};
  gA.c = da;
  gA.ldc = k;
  gA.alpha = lora.scale;
  gA.accumulate = true;
  gemm(gA);
  if (dx == nullptr) return;
  if (lora.dropout > 0.0f) {
    // dx (+)= dy W, then + the adapter's path s g A through the dropout mask
    std::vector<float> path(size_t(m * k));
    GemmArgs gp;
    gp.precision = sh.precision;
    gp.m = m;
    gp.n = k;
    gp.segments = {{f32_ref(g.data(), r, false), f32_ref(lora.a, k, true), r, lora.scale}};
    gp.c = path.data();
    gp.ldc = k;
    gemm(gp);
    GemmArgs gx;
    gx.precision = sh.precision;
    gx.m = m;
    gx.n = k;
    gx.segments = {{f32_ref(dy, n, false), transposed(w), n}};
    gx.c = dx;
    gx.ldc = k;
    gx.accumulate = dx_accumulate;
    gemm(gx, &packed_dy);
    const float keep_scale = 1.0f / (1.0f - lora.dropout);
    for (int64_t i = 0; i < m * k; ++i)
      if (lora_keep(lora.seed, uint64_t(i), lora.dropout)) dx[i] += path[i] * keep_scale;
    return;
  }
  // dx (+)= dy W + s g A, one pass over dx
  GemmArgs gx;
  gx.precision = sh.precision;
  gx.m = m;
  gx.n = k;
  gx.segments = {{f32_ref(dy, n, false), transposed(w), n}, {f32_ref(g.data(), r, false), f32_ref(lora.a, k, true), r, lora.scale}};
  gx.c = dx;
  gx.ldc = k;
  gx.accumulate = dx_accumulate;
  gemm(gx, &packed_dy);
}

}  // namespace ernie::cpu
