// ernie_check's op table: each op of the backend interface (backend/ops.h) on random inputs of
// awkward sizes, on every backend present, against the float64 references of check/reference.h.
// Outputs an op writes are NaN-filled first (an element left unwritten fails); outputs it adds
// to start from random values, and what was added is compared.
#include <algorithm>
#include <memory>
#include <sstream>
#include <stdexcept>

#include "check/check.h"
#include "check/reference.h"

namespace ernie::check {
namespace {

std::string dims(std::initializer_list<int64_t> v) {
  std::string s;
  for (int64_t x : v) s += (s.empty() ? "" : "x") + std::to_string(x);
  return s;
}
const char* dt(DType d) { return d == DType::bf16 ? "bf16" : "f32"; }

// A host operand in a backend's memory, as the MatrixRef the op reads.
struct DevMat {
  Buffer buf;
  MatrixRef ref;
  DevMat(Backend& be, const Operand& o) {
    const size_t n = o.v.size();
    if (o.dtype == DType::bf16) {
      const std::vector<uint16_t> bits = to_bf16_bits(o.v);
      buf = Buffer(be, n * 2);
      if (n) be.upload(buf.data(), bits.data(), n * 2);
    } else {
      buf = Buffer(be, n * 4);
      if (n) be.upload(buf.data(), o.v.data(), n * 4);
    }
    ref = MatrixRef{buf.data(), o.dtype, o.ld, o.trans};
  }
};

// The three references of a product: exact, the f32 level, bf16 operands.
struct GemmRefs {
  std::vector<double> exact, bf16;
  std::vector<float> f32;
  // fp32: the f32 level. bf16: the bf16 operands' error plus the f32 level (both sum in f32; with
  // operands already bf16 the rounding adds nothing and the f32 sums are what is left).
  // `start`: C's start when the product is added to it.
  double scale(Precision p, const std::vector<float>* start = nullptr) const {
    const double f32_level = start ? rel_err(accumulated_f32(*start, f32), exact) : rel_err(f32, exact);
    return p == Precision::fp32 ? f32_level : rel_err(bf16, exact) + f32_level;
  }
};
GemmRefs gemm_refs(int64_t m, int64_t n, const std::vector<RefSegment>& segs, float alpha) {
  return {ref_gemm<double>(m, n, segs, alpha, false), ref_gemm<double>(m, n, segs, alpha, true),
          ref_gemm<float>(m, n, segs, alpha, false)};
}

}  // namespace
// Whether a section is to run: --only takes a comma-separated list of sections.
bool wanted(const Options& o, const std::string& section) {
  return o.filter.empty() || ("," + o.filter + ",").find("," + section + ",") != std::string::npos;
}
namespace {

// ---- GEMM ----------------------------------------------------------------------------------------

// One segment, every layout (A as [m, k] or its transpose, B likewise) and dtype (f32 / bf16
// each), at every precision the backend has: 16 products per precision (`all` false: the four
// with A and B laid out alike, for the large shape whose references take longest).
void gemm_layouts(Report& report, std::vector<Target>& targets, int64_t m, int64_t n, int64_t k, uint64_t seed, bool all = true) {
  struct Combo {
    Operand a, b;
    GemmRefs refs;
    std::string what;
  };
  std::vector<Combo> combos;
  Rng rng(seed);
  for (int at = 0; at < 2; ++at)
    for (int bt = 0; bt < 2; ++bt)
      for (DType ad : {DType::f32, DType::bf16})
        for (DType bd : {DType::f32, DType::bf16}) {
          if (!all && (at != bt || ad != bd)) continue;
          Combo c;
          c.a = make_operand(rng, m, k, ad, at, at ? 3 : 0);  // a padded leading dimension when transposed
          c.b = make_operand(rng, n, k, bd, bt);
          c.refs = gemm_refs(m, n, {{&c.a, &c.b, k, 1.0f}}, 1.0f);
          c.what = std::string("a:") + dt(ad) + (at ? "^T" : "") + " b:" + dt(bd) + (bt ? "^T" : "");
          combos.push_back(std::move(c));
        }
  const std::string what = all ? "4 layouts x 4 dtypes" : "f32 x f32, bf16 x bf16, plain and transposed";
  for_each_target(report, targets, "gemm " + dims({m, n, k}) + ", " + what, [&](Target& t) {
    std::vector<Check> checks;
    for (Precision p : product_precisions(*t.be))
      for (Combo& c : combos) {
        DevMat a(*t.be, c.a), b(*t.be, c.b);
        Dev<float> out(*t.be, size_t(m * n), nan_f32());
        GemmArgs g;
        g.m = m;
        g.n = n;
        g.segments = std::vector<GemmSegment>{{a.ref, b.ref, k, 1.0f}};
        g.c = out.ptr();
        g.ldc = n;
        g.precision = p;
        t.be->gemm(g);
        checks.push_back(within(std::string(precision_name(p)) + " " + c.what, rel_err(out.get(), c.refs.exact), c.refs.scale(p)));
      }
    return checks;
  });
}

// Several K segments (a bf16 weight, an f32 LoRA pair with its scale, a transposed bf16 one with
// a ragged K), alpha, accumulate onto a C with a padded row stride; then k = 0.
void gemm_segments(Report& report, std::vector<Target>& targets) {
  const int64_t m = 77, n = 150, k1 = 200, r = 5, k3 = 13, ldc = n + 3;
  const float alpha = 0.5f;
  Rng rng(21);
  const Operand x = make_operand(rng, m, k1, DType::f32, false), w = make_operand(rng, n, k1, DType::bf16, false);
  const Operand u = make_operand(rng, m, r, DType::f32, false), bl = make_operand(rng, n, r, DType::f32, false);
  const Operand a3 = make_operand(rng, m, k3, DType::bf16, true), b3 = make_operand(rng, n, k3, DType::bf16, true, 2);
  const std::vector<RefSegment> segs = {{&x, &w, k1, 1.0f}, {&u, &bl, r, 3.0f}, {&a3, &b3, k3, -0.25f}};
  const GemmRefs refs = gemm_refs(m, n, segs, alpha);
  const std::vector<float> c0 = rng.vec(size_t(m * ldc));
  std::vector<float> c0_dense(static_cast<size_t>(m * n));
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) c0_dense[size_t(i * n + j)] = c0[size_t(i * ldc + j)];
  for_each_target(report, targets, "gemm 77x150, 3 K segments (200 bf16 W, 5 f32 LoRA x3, 13 transposed), alpha 0.5, accumulate, ldc n+3",
                  [&](Target& t) {
    std::vector<Check> checks;
    for (Precision p : product_precisions(*t.be)) {
      DevMat dx(*t.be, x), dw(*t.be, w), du(*t.be, u), db(*t.be, bl), d3a(*t.be, a3), d3b(*t.be, b3);
      Dev<float> c(*t.be, c0);
      GemmArgs g;
      g.m = m;
      g.n = n;
      g.segments = std::vector<GemmSegment>{{dx.ref, dw.ref, k1, 1.0f}, {du.ref, db.ref, r, 3.0f}, {d3a.ref, d3b.ref, k3, -0.25f}};
      g.c = c.ptr();
      g.ldc = ldc;
      g.alpha = alpha;
      g.accumulate = true;
      g.precision = p;
      t.be->gemm(g);
      const std::vector<float> got = c.get();
      std::vector<double> add(static_cast<size_t>(m * n));
      double pad = 0;
      for (int64_t i = 0; i < m; ++i) {
        for (int64_t j = 0; j < n; ++j) add[size_t(i * n + j)] = double(got[size_t(i * ldc + j)]) - double(c0[size_t(i * ldc + j)]);
        for (int64_t j = n; j < ldc; ++j) pad += got[size_t(i * ldc + j)] != c0[size_t(i * ldc + j)];
      }
      checks.push_back(within(std::string(precision_name(p)) + " C - C0", rel_err(add, refs.exact), refs.scale(p, &c0_dense)));
      checks.push_back(exact(std::string(precision_name(p)) + " the row padding untouched", pad));
    }
    // k = 0: C = 0, or unchanged when accumulating (operands of no element, in the backend's memory).
    Dev<float> z(*t.be, 6, nan_f32()), keep(*t.be, std::vector<float>{1, 2, 3, 4, 5, 6}), none(*t.be, 1, 0.0f);
    GemmArgs g;
    g.m = 2;
    g.n = 3;
    g.segments = std::vector<GemmSegment>{{MatrixRef{none.ptr(), DType::f32, 1, false}, MatrixRef{none.ptr(), DType::f32, 1, false}, 0, 1.0f}};
    g.ldc = 3;
    g.precision = Precision::bf16;
    g.c = z.ptr();
    t.be->gemm(g);
    g.c = keep.ptr();
    g.accumulate = true;
    t.be->gemm(g);
    const std::vector<double> zeros(6, 0.0), kept = {1, 2, 3, 4, 5, 6};
    checks.push_back(exact("k = 0: C = 0", rel_err(z.get(), zeros)));
    checks.push_back(exact("k = 0 accumulating: C unchanged", rel_err(keep.get(), kept)));
    return checks;
  });
}

// ---- attention ---------------------------------------------------------------------------------

AttnShape attention_shape(int64_t batch, int64_t tq, int64_t tk, int64_t heads, int64_t kv, int64_t d, float scale = 0) {
  return AttnShape{batch, tq, tk, heads, kv, d, scale > 0 ? scale : float(1.0 / std::sqrt(double(d))), {}, {}};
}

// Batch 1 padded at both ends (its first rows see no key at all) and every row in one of three
// packed documents.
void mask_and_pack(AttnShape& s) {
  s.key_valid.assign(size_t(s.batch * s.tk), 1);
  if (s.batch > 1)
    for (int64_t j = 0; j < s.tk; ++j)
      if (j < 8 || j >= s.tk - 9) s.key_valid[size_t(s.tk + j)] = 0;
  s.key_start.assign(size_t(s.batch * s.tq), 0);
  for (int64_t b = 0; b < s.batch; ++b)
    for (int64_t i = 0; i < s.tq; ++i) {
      const int64_t pos = i + s.tk - s.tq;
      s.key_start[size_t(b * s.tq + i)] = int32_t(pos >= 2 * s.tk / 3 ? 2 * s.tk / 3 : pos >= s.tk / 3 ? s.tk / 3 : 0);
    }
}

void attention_case(Report& report, std::vector<Target>& targets, const std::string& name, const AttnShape& s, uint64_t seed) {
  Rng rng(seed);
  const std::vector<float> q = rng.vec(size_t(s.q_size()), 2.0f), k = rng.vec(size_t(s.kv_size())),
                           v = rng.vec(size_t(s.kv_size())), dout = rng.vec(size_t(s.q_size()));
  const AttnRef<double> exact_ref = ref_attention<double>(s, q, k, v, &dout, false);
  const AttnRef<double> bf16_ref = ref_attention<double>(s, q, k, v, &dout, true);
  const AttnRef<float> f32_ref = ref_attention<float>(s, q, k, v, &dout, false);
  // lse where it is finite; the rows that see no key are checked apart.
  auto finite = [&](const auto& lse) {
    std::vector<double> out;
    for (size_t i = 0; i < lse.size(); ++i)
      if (std::isfinite(double(exact_ref.lse[i]))) out.push_back(double(lse[i]));
    return out;
  };
  const std::vector<double> lse_exact = finite(exact_ref.lse);
  const std::string label = name + " (B " + std::to_string(s.batch) + ", tq " + std::to_string(s.tq) + ", tk " + std::to_string(s.tk) +
                            ", H " + std::to_string(s.heads) + ":" + std::to_string(s.kv_heads) + ", D " + std::to_string(s.head_dim) + ")";
  for_each_target(report, targets, "attention " + label, [&](Target& t) {
    Backend& be = *t.be;
    const bool r = t.attention_bf16;
    // f32: the f32 level; bf16 products: the bf16 operands' error plus the f32 level.
    auto scale = [&](const auto& pick) {
      return (r ? rel_err(pick(bf16_ref), pick(exact_ref)) : 0.0) + rel_err(pick(f32_ref), pick(exact_ref));
    };
    Dev<float> dq_(be, q), dk_(be, k), dv_(be, v), dd(be, dout);
    Dev<float> out(be, size_t(s.q_size()), nan_f32()), lse(be, size_t(s.lse_size()), nan_f32());
    Dev<float> gq(be, size_t(s.q_size()), nan_f32()), gk(be, size_t(s.kv_size()), nan_f32()), gv(be, size_t(s.kv_size()), nan_f32());
    std::unique_ptr<Dev<uint8_t>> valid;
    std::unique_ptr<Dev<int32_t>> start;
    if (!s.key_valid.empty()) valid = std::make_unique<Dev<uint8_t>>(be, s.key_valid);
    if (!s.key_start.empty()) start = std::make_unique<Dev<int32_t>>(be, s.key_start);
    AttentionArgs a;
    a.batch = s.batch;
    a.tq = s.tq;
    a.tk = s.tk;
    a.heads = s.heads;
    a.kv_heads = s.kv_heads;
    a.head_dim = s.head_dim;
    a.scale = s.scale;
    a.q = dq_.ptr();
    a.k = dk_.ptr();
    a.v = dv_.ptr();
    a.key_valid = valid ? valid->ptr() : nullptr;
    a.key_start = start ? start->ptr() : nullptr;
    a.out = out.ptr();
    a.lse = lse.ptr();
    be.attention_forward(a);
    a.dout = dd.ptr();
    a.dq = gq.ptr();
    a.dk = gk.ptr();
    a.dv = gv.ptr();
    be.attention_backward(a);
    const std::vector<float> got_lse = lse.get();
    double wrong_inf = 0, unseen = 0;
    for (size_t i = 0; i < got_lse.size(); ++i)
      if (!std::isfinite(double(exact_ref.lse[i]))) {
        ++unseen;
        wrong_inf += !(std::isinf(got_lse[i]) && got_lse[i] < 0);
      }
    std::vector<Check> c;
    c.push_back(within("out", rel_err(out.get(), exact_ref.out), scale([](const auto& x) { return x.out; })));
    c.push_back(within("lse", rel_err(finite(got_lse), lse_exact), scale([&](const auto& x) { return finite(x.lse); })));
    c.push_back(exact("lse -inf on the " + std::to_string(int64_t(unseen)) + " rows that see no key", wrong_inf));
    c.push_back(within("dq", rel_err(gq.get(), exact_ref.dq), scale([](const auto& x) { return x.dq; })));
    c.push_back(within("dk", rel_err(gk.get(), exact_ref.dk), scale([](const auto& x) { return x.dk; })));
    c.push_back(within("dv", rel_err(gv.get(), exact_ref.dv), scale([](const auto& x) { return x.dv; })));
    return c;
  });
}

// ---- row ops -----------------------------------------------------------------------------------

// A weight vector in the backend's memory as f32 or bf16.
struct DevVec {
  Buffer buf;
  DevVec(Backend& be, const std::vector<float>& v, DType d) {
    if (d == DType::bf16) {
      const std::vector<uint16_t> bits = to_bf16_bits(v);
      buf = Buffer(be, bits.size() * 2);
      be.upload(buf.data(), bits.data(), bits.size() * 2);
    } else {
      buf = Buffer(be, v.size() * 4);
      be.upload(buf.data(), v.data(), v.size() * 4);
    }
  }
};

void rmsnorm_cases(Report& report, std::vector<Target>& targets) {
  struct Shape {
    int64_t rows, dim;
    DType wd;
    bool in_place;
  };
  for (const Shape& sh : {Shape{37, 1024, DType::f32, false}, Shape{5, 77, DType::bf16, true}}) {
    Rng rng(uint64_t(sh.rows * 1000 + sh.dim));
    const std::vector<float> x = rng.vec(size_t(sh.rows * sh.dim), 3.0f);
    std::vector<float> w = rng.vec(size_t(sh.dim));
    if (sh.wd == DType::bf16) for (float& v : w) v = round_bf16(v);
    const std::vector<float> dout = rng.vec(size_t(sh.rows * sh.dim)), dx0 = rng.vec(size_t(sh.rows * sh.dim)),
                             dw0 = rng.vec(size_t(sh.dim));
    const float eps = 1e-5f;
    std::vector<double> out_e, rstd_e, dx_e, dw_e;
    std::vector<float> out_f, rstd_f, dx_f, dw_f;
    ref_rmsnorm(x, w, sh.rows, sh.dim, eps, out_e, rstd_e);
    ref_rmsnorm(x, w, sh.rows, sh.dim, eps, out_f, rstd_f);
    ref_rmsnorm_backward(dout, x, w, sh.rows, sh.dim, eps, dx_e, dw_e);
    ref_rmsnorm_backward(dout, x, w, sh.rows, sh.dim, eps, dx_f, dw_f);
    const std::string name = std::string("rmsnorm forward and backward ") + dims({sh.rows, sh.dim}) + ", " + dt(sh.wd) + " weight" +
                             (sh.in_place ? ", forward in place" : "") + ", dx overwritten and accumulated, dweight accumulated";
    for_each_target(report, targets, name, [&](Target& t) {
      Backend& be = *t.be;
      DevVec wv(be, w, sh.wd);
      Dev<float> xd(be, x), out(be, x.size(), nan_f32()), rstd(be, size_t(sh.rows), nan_f32());
      RmsNormForwardArgs f;
      f.x = xd.ptr();
      f.weight = wv.buf.data();
      f.weight_dtype = sh.wd;
      f.rows = sh.rows;
      f.dim = sh.dim;
      f.eps = eps;
      f.out = sh.in_place ? xd.ptr() : out.ptr();
      f.rstd = rstd.ptr();
      be.rmsnorm_forward(f);
      std::vector<Check> c;
      c.push_back(within("out", rel_err((sh.in_place ? xd : out).get(), out_e), rel_err(out_f, out_e)));
      c.push_back(within("rstd", rel_err(rstd.get(), rstd_e), rel_err(rstd_f, rstd_e)));
      // The backward reads x: a fresh copy when the forward overwrote it.
      Dev<float> x2(be, x), gout(be, dout), dx(be, x.size(), nan_f32()), dxa(be, dx0), dw(be, dw0);
      RmsNormBackwardArgs b;
      b.dout = gout.ptr();
      b.x = x2.ptr();
      b.weight = wv.buf.data();
      b.weight_dtype = sh.wd;
      b.rstd = rstd.ptr();
      b.rows = sh.rows;
      b.dim = sh.dim;
      b.dx = dx.ptr();
      b.dweight = dw.ptr();
      be.rmsnorm_backward(b);
      b.dx = dxa.ptr();
      b.accumulate = true;
      b.dweight = nullptr;
      be.rmsnorm_backward(b);
      c.push_back(within("dx", rel_err(dx.get(), dx_e), rel_err(dx_f, dx_e)));
      c.push_back(within("dx accumulated: dx - dx0", rel_err(added(dxa.get(), dx0), dx_e), rel_err(accumulated_f32(dx0, dx_f), dx_e)));
      c.push_back(within("dweight - dweight0", rel_err(added(dw.get(), dw0), dw_e), rel_err(accumulated_f32(dw0, dw_f), dw_e)));
      return c;
    });
  }
}

void rope_cases(Report& report, std::vector<Target>& targets) {
  struct Shape {
    RopePairing pairing;
    int64_t rows, heads, hd;
    double theta;
  };
  for (const Shape& sh : {Shape{RopePairing::adjacent, 50, 3, 64, 500000.0}, Shape{RopePairing::half, 33, 2, 128, 1000000.0}}) {
    Rng rng(uint64_t(sh.rows * 7 + sh.hd));
    const std::vector<float> x = rng.vec(size_t(sh.rows * sh.heads * sh.hd));
    std::vector<int32_t> pos(static_cast<size_t>(sh.rows));
    for (int32_t& p : pos) p = int32_t(rng.below(4096));
    pos[0] = 0;
    if (sh.rows > 2) pos[2] = pos[1] + 1;  // consecutive positions too
    const std::vector<double> fwd_e = ref_rope<double>(x, pos, sh.rows, sh.heads, sh.hd, sh.theta, sh.pairing, false);
    const std::vector<float> fwd_f = ref_rope<float>(x, pos, sh.rows, sh.heads, sh.hd, sh.theta, sh.pairing, false);
    const std::vector<double> inv_e = ref_rope<double>(x, pos, sh.rows, sh.heads, sh.hd, sh.theta, sh.pairing, true);
    const std::vector<float> inv_f = ref_rope<float>(x, pos, sh.rows, sh.heads, sh.hd, sh.theta, sh.pairing, true);
    const std::string name = std::string("rope ") + (sh.pairing == RopePairing::adjacent ? "adjacent pairs" : "halves") + " " +
                             dims({sh.rows, sh.heads, sh.hd}) + ", theta " + std::to_string(int64_t(sh.theta)) +
                             ", positions < 4096, forward and inverse (in place)";
    for_each_target(report, targets, name, [&](Target& t) {
      Backend& be = *t.be;
      Dev<float> xd(be, x), out(be, x.size(), nan_f32()), inplace(be, x);
      Dev<int32_t> pd(be, pos);
      RopeArgs a;
      a.x = xd.ptr();
      a.out = out.ptr();
      a.positions = pd.ptr();
      a.rows = sh.rows;
      a.heads = sh.heads;
      a.head_dim = sh.hd;
      a.theta = sh.theta;
      a.pairing = sh.pairing;
      be.rope(a);
      a.x = a.out = inplace.ptr();
      a.inverse = true;
      be.rope(a);
      return std::vector<Check>{within("forward", rel_err(out.get(), fwd_e), rel_err(fwd_f, fwd_e)),
                                within("inverse, in place", rel_err(inplace.get(), inv_e), rel_err(inv_f, inv_e))};
    });
  }
}

void swiglu_case(Report& report, std::vector<Target>& targets) {
  const int64_t rows = 19, dim = 333;
  Rng rng(31);
  const std::vector<float> gu = rng.vec(size_t(rows * 2 * dim), 4.0f), dout = rng.vec(size_t(rows * dim));
  const std::vector<double> f_e = ref_swiglu<double>(gu, rows, dim), b_e = ref_swiglu_backward<double>(dout, gu, rows, dim);
  const std::vector<float> f_f = ref_swiglu<float>(gu, rows, dim), b_f = ref_swiglu_backward<float>(dout, gu, rows, dim);
  for_each_target(report, targets, "swiglu forward and backward 19x333, fused gate|up rows (in_ld = grad_ld = 2 dim)", [&](Target& t) {
    Backend& be = *t.be;
    Dev<float> g(be, gu), d(be, dout), out(be, size_t(rows * dim), nan_f32()), grad(be, gu.size(), nan_f32());
    SwigluForwardArgs f;
    f.gate = g.ptr();
    f.up = g.ptr() + dim;
    f.in_ld = 2 * dim;
    f.rows = rows;
    f.dim = dim;
    f.out = out.ptr();
    be.swiglu_forward(f);
    SwigluBackwardArgs b;
    b.dout = d.ptr();
    b.gate = g.ptr();
    b.up = g.ptr() + dim;
    b.in_ld = 2 * dim;
    b.rows = rows;
    b.dim = dim;
    b.dgate = grad.ptr();
    b.dup = grad.ptr() + dim;
    b.grad_ld = 2 * dim;
    be.swiglu_backward(b);
    return std::vector<Check>{within("out", rel_err(out.get(), f_e), rel_err(f_f, f_e)),
                              within("dgate | dup", rel_err(grad.get(), b_e), rel_err(b_f, b_e))};
  });
}

void embedding_case(Report& report, std::vector<Target>& targets) {
  const int64_t vocab = 300, dim = 72, n = 50, grad_vocab = 40, grad_n = 200;
  Rng rng(41);
  const std::vector<float> table = rng.vec(size_t(vocab * dim));
  std::vector<int32_t> ids(static_cast<size_t>(n)), gids(static_cast<size_t>(grad_n));
  for (int32_t& i : ids) i = int32_t(rng.below(vocab));
  ids[1] = ids[0];
  ids[n - 1] = int32_t(vocab - 1);
  for (int32_t& i : gids) i = int32_t(rng.below(grad_vocab));  // each id about 5 times
  const std::vector<float> gout = rng.vec(size_t(grad_n * dim)), d0 = rng.vec(size_t(grad_vocab * dim));
  const std::vector<double> g_e = ref_embedding_backward<double>(gids, gout, grad_vocab, dim);
  const std::vector<float> g_f = ref_embedding_backward<float>(gids, gout, grad_vocab, dim);
  for_each_target(report, targets, "embedding forward (f32 and bf16 tables, 300x72) and backward (200 ids into 40 rows, repeated)", [&](Target& t) {
    Backend& be = *t.be;
    std::vector<Check> c;
    Dev<int32_t> idd(be, ids);
    for (DType d : {DType::f32, DType::bf16}) {
      std::vector<float> tv = table;
      if (d == DType::bf16) for (float& v : tv) v = round_bf16(v);
      DevVec td(be, tv, d);
      Dev<float> out(be, size_t(n * dim), nan_f32());
      EmbeddingForwardArgs a;
      a.ids = idd.ptr();
      a.n = n;
      a.table = td.buf.data();
      a.table_dtype = d;
      a.dim = dim;
      a.out = out.ptr();
      be.embedding_forward(a);
      std::vector<double> want(static_cast<size_t>(n * dim));
      for (int64_t k = 0; k < n; ++k)
        for (int64_t j = 0; j < dim; ++j) want[size_t(k * dim + j)] = tv[size_t(ids[size_t(k)] * dim + j)];
      c.push_back(exact(std::string("forward, ") + dt(d) + " table: rows copied exactly", rel_err(out.get(), want)));
    }
    Dev<int32_t> gd(be, gids);
    Dev<float> go(be, gout), dt_(be, d0);
    EmbeddingBackwardArgs b;
    b.ids = gd.ptr();
    b.n = grad_n;
    b.dout = go.ptr();
    b.dim = dim;
    b.dtable = dt_.ptr();
    be.embedding_backward(b);
    c.push_back(within("backward: dtable - dtable0", rel_err(added(dt_.get(), d0), g_e), rel_err(accumulated_f32(d0, g_f), g_e)));
    return c;
  });
}

void cross_entropy_case(Report& report, std::vector<Target>& targets) {
  const int64_t tokens = 37, H = 64, V = 1000;
  Rng rng(51);
  const std::vector<float> hidden = rng.vec(size_t(tokens * H), 2.0f);
  std::vector<int32_t> targets_v(static_cast<size_t>(tokens));
  for (int64_t t = 0; t < tokens; ++t) targets_v[size_t(t)] = t % 7 == 3 ? -100 : int32_t(rng.below(V));
  const std::vector<float> dw0 = rng.vec(size_t(V * H));
  for (DType wd : {DType::f32, DType::bf16})
    for (bool gs : {false, true}) {
      std::vector<float> w = rng.vec(size_t(V * H), 0.5f);
      if (wd == DType::bf16) for (float& v : w) v = round_bf16(v);
      const float grad_scale = 0.37f;
      const auto e = ref_cross_entropy<double>(hidden, w, targets_v, tokens, H, V, gs, grad_scale, false);
      const auto r = ref_cross_entropy<double>(hidden, w, targets_v, tokens, H, V, gs, grad_scale, true);
      const auto f = ref_cross_entropy<float>(hidden, w, targets_v, tokens, H, V, gs, grad_scale, false);
      const std::string name = std::string("cross-entropy 37 tokens (6 ignored), hidden 64, vocab 1000 in chunks of 384, row tiles of 16, ") +
                               dt(wd) + " head" + (gs ? ", grad_scale 0.37" : ", mean") + ": loss, dhidden, dweight accumulated";
      for_each_target(report, targets, name, [&](Target& t) {
        Backend& be = *t.be;
        std::vector<Check> c;
        for (Precision p : product_precisions(be)) {
          const bool round = p == Precision::bf16;
          DevVec wdv(be, w, wd);
          Dev<float> hd(be, hidden), dh(be, hidden.size(), nan_f32()), dw(be, dw0);
          Dev<int32_t> td(be, targets_v);
          CrossEntropyArgs a;
          a.hidden = hd.ptr();
          a.weight = wdv.buf.data();
          a.weight_dtype = wd;
          a.targets = td.ptr();
          a.tokens = tokens;
          a.hidden_size = H;
          a.vocab = V;
          a.chunk = 384;
          a.row_tile = 16;
          a.dhidden = dh.ptr();
          a.dweight = dw.ptr();
          a.has_grad_scale = gs;
          a.grad_scale = grad_scale;
          a.precision = p;
          const CrossEntropyResult res = be.cross_entropy(a);
          const std::string pn = precision_name(p);
          // The loss is one number: its scale is the references' per-token error (rms, relative to
          // the loss), which bounds the mean's whether the tokens' errors cancel or not.
          auto token_rms = [&](const auto& ref) {
            double s2 = 0;
            for (int64_t i = 0; i < tokens; ++i) s2 += std::pow(double(ref.token_loss[size_t(i)]) - e.token_loss[size_t(i)], 2);
            return std::sqrt(s2 / double(e.count)) / std::abs(e.loss);
          };
          auto scale = [&](const auto& pick) { return (round ? rel_err(pick(r), pick(e)) : 0.0) + rel_err(pick(f), pick(e)); };
          c.push_back(within(pn + " loss", std::abs(res.loss - e.loss) / std::abs(e.loss), (round ? token_rms(r) : 0.0) + token_rms(f)));
          c.push_back(exact(pn + " count", double(std::abs(res.count - e.count))));
          c.push_back(within(pn + " dhidden", rel_err(dh.get(), e.dhidden), scale([](const auto& x) { return x.dhidden; })));
          c.push_back(within(pn + " dweight - dweight0", rel_err(added(dw.get(), dw0), e.dweight),
                             (round ? rel_err(r.dweight, e.dweight) : 0.0) + rel_err(accumulated_f32(dw0, f.dweight), e.dweight)));
        }
        return c;
      });
    }
}

void adamw_case(Report& report, std::vector<Target>& targets) {
  const int64_t n = 10007;
  const int steps = 3;
  Rng rng(61);
  const std::vector<float> p0 = rng.vec(size_t(n)), m0 = rng.vec(size_t(n), 0.01f);
  std::vector<float> v0(static_cast<size_t>(n));
  for (float& v : v0) v = float(rng.uniform() * 1e-4);
  std::vector<std::vector<float>> grads;
  for (int s = 0; s < steps; ++s) grads.push_back(rng.vec(size_t(n), 0.1f));
  const AdamSettings set;
  std::vector<double> pe(p0.begin(), p0.end()), me(m0.begin(), m0.end()), ve(v0.begin(), v0.end());
  std::vector<float> pf = p0, mf = m0, vf = v0;
  ref_adamw(set, grads, pe, me, ve);
  ref_adamw(set, grads, pf, mf, vf);
  // What the step changed: p - p0 and so on (the parameters move by ~lr, far below their size).
  auto delta = [](const auto& x, const std::vector<float>& x0) {
    std::vector<double> d(x.size());
    for (size_t i = 0; i < x.size(); ++i) d[i] = double(x[i]) - double(x0[i]);
    return d;
  };
  for_each_target(report, targets, "adamw 10007 parameters, 3 steps (lr 1e-3, wd 0.01), with the bf16 copy", [&](Target& t) {
    Backend& be = *t.be;
    Dev<float> p(be, p0), m(be, m0), v(be, v0);
    Dev<uint16_t> pb(be, size_t(n), uint16_t(0x7fc0));
    for (int s = 0; s < steps; ++s) {
      Dev<float> g(be, grads[size_t(s)]);
      AdamArgs a;
      a.params = p.ptr();
      a.grads = g.ptr();
      a.m = m.ptr();
      a.v = v.ptr();
      a.params_bf16 = pb.ptr();
      a.n = n;
      a.hyper = adam_hyper(set.lr, set.beta1, set.beta2, set.eps, set.weight_decay, s + 1);
      be.adamw(a);
    }
    const std::vector<float> pg = p.get();
    const std::vector<uint16_t> bits = pb.get();
    double wrong = 0;
    for (int64_t i = 0; i < n; ++i) wrong += bits[size_t(i)] != bf16_bits(pg[size_t(i)]);
    return std::vector<Check>{
        within("params", rel_err(pg, pe), rel_err(pf, pe)),
        within("params - params0", rel_err(delta(pg, p0), delta(pe, p0)), rel_err(delta(pf, p0), delta(pe, p0))),
        within("m", rel_err(m.get(), me), rel_err(mf, me)),
        within("v", rel_err(v.get(), ve), rel_err(vf, ve)),
        exact("params_bf16 = bf16(params)", wrong),
    };
  });
}

}  // namespace

void run_ops(Report& report, std::vector<Target>& targets, const Options& o) {
  report.note("ops: each op against float64 loops; bound = 3 x (same-precision reference's error) + 4 f32 ulps");
  if (wanted(o, "gemm")) {
    gemm_layouts(report, targets, 1, 1, 1, 1);
    gemm_layouts(report, targets, 37, 45, 29, 2);
    gemm_layouts(report, targets, 131, 67, 300, 3);
    gemm_layouts(report, targets, 250, 33, 40, 4);
    gemm_layouts(report, targets, 130, 260, 64, 5);
    gemm_layouts(report, targets, 300, 520, 1000, 6, false);
    gemm_segments(report, targets);
  }
  if (wanted(o, "attention")) {
    attention_case(report, targets, "GQA", attention_shape(2, 67, 67, 4, 2, 64), 101);
    attention_case(report, targets, "a KV cache (tq < tk)", attention_shape(1, 7, 150, 2, 1, 128), 102);
    attention_case(report, targets, "three query tiles, scale 0.3", attention_shape(1, 130, 130, 2, 2, 64, 0.3f), 103);
    AttnShape packed = attention_shape(2, 70, 75, 2, 1, 128);
    mask_and_pack(packed);
    attention_case(report, targets, "padding and packed documents", packed, 104);
    AttnShape packed64 = attention_shape(2, 96, 96, 4, 2, 64);
    mask_and_pack(packed64);
    attention_case(report, targets, "padding and packed documents", packed64, 105);
    attention_case(report, targets, "GQA, several key tiles", attention_shape(1, 256, 256, 4, 2, 128), 106);
  }
  if (wanted(o, "rmsnorm")) rmsnorm_cases(report, targets);
  if (wanted(o, "rope")) rope_cases(report, targets);
  if (wanted(o, "swiglu")) swiglu_case(report, targets);
  if (wanted(o, "embedding")) embedding_case(report, targets);
  if (wanted(o, "cross-entropy")) cross_entropy_case(report, targets);
  if (wanted(o, "adamw")) adamw_case(report, targets);
}

}  // namespace ernie::check
