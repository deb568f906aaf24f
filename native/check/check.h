// ernie_check (scripts/check-gpu.sh): a standalone binary, no Node.js, that runs the backends'
// ops and the model graph against float64 references on every backend present, then (on a GPU)
// benchmarks the CUDA kernels. This header: what the sections share (bf16 rounding, random
// inputs, errors, memory on a backend, the report).
//
// Bounds follow the precision computed, as the TypeScript tests' (test/helpers/precision-helpers.ts):
//   err(backend vs exact float64) <= kFactor * err(same-precision reference vs exact) + kFloor
// where the same-precision reference is the float64 computation with the operands the backend
// rounds to bf16 rounded the same way (bf16 products: the CUDA backend always, the CPU backend
// at precision 'bf16'), or, for f32 work, the same straightforward loops run in f32 (the f32
// level). Errors are relative Frobenius norms: ||got - ref|| / ||ref||.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "backend/backend.h"

namespace ernie::check {

// ---- bf16 --------------------------------------------------------------------------------------
inline uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x40);  // NaN stays NaN
  u += 0x7fffu + ((u >> 16) & 1u);  // round to nearest even
  return uint16_t(u >> 16);
}
inline float bf16_value(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float round_bf16(float f) { return bf16_value(bf16_bits(f)); }
inline std::vector<uint16_t> to_bf16_bits(const std::vector<float>& v) {
  std::vector<uint16_t> out(v.size());
  for (size_t i = 0; i < v.size(); ++i) out[i] = bf16_bits(v[i]);
  return out;
}

// ---- random inputs (splitmix64: the same values on every machine) ------------------------------
struct Rng {
  uint64_t state;
  explicit Rng(uint64_t seed) : state(seed * 0x9e3779b97f4a7c15ull + 1) {}
  uint64_t next() {
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }  // [0, 1)
  float sym(float scale = 1.0f) { return float((2.0 * uniform() - 1.0) * scale); }
  int64_t below(int64_t n) { return int64_t(next() % uint64_t(n)); }
  std::vector<float> vec(size_t n, float scale = 1.0f) {
    std::vector<float> v(n);
    for (float& x : v) x = sym(scale);
    return v;
  }
  // Values already bf16 (stored as bf16 on the backend, exactly these floats).
  std::vector<float> vec_bf16(size_t n, float scale = 1.0f) {
    std::vector<float> v = vec(n, scale);
    for (float& x : v) x = round_bf16(x);
    return v;
  }
};

// ---- errors and bounds -------------------------------------------------------------------------
constexpr double kFactor = 3.0;
// A few f32 ulps, relative: what an f32 result may be off by when the reference's own error
// happens to be ~0 (exact inputs, one rounding).
constexpr double kFloor = 4.0 * 0x1.0p-24;

// ||got - ref|| / ||ref||; NaN when got holds a NaN or an infinity where ref is finite (an
// element never written, its NaN fill left). Both ranges have n elements.
template <typename G, typename R>
double rel_err(const G* got, const R* ref, size_t n) {
  double num = 0, den = 0;
  for (size_t i = 0; i < n; ++i) {
    const double g = double(got[i]), r = double(ref[i]);
    if (!std::isfinite(g) && std::isfinite(r)) return std::numeric_limits<double>::quiet_NaN();
    num += (g - r) * (g - r);
    den += r * r;
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}
template <typename G, typename R>
double rel_err(const std::vector<G>& got, const std::vector<R>& ref) {
  if (got.size() != ref.size()) return std::numeric_limits<double>::quiet_NaN();
  return rel_err(got.data(), ref.data(), got.size());
}

// One quantity of a case: its error and the bound kFactor * scale + floor.
struct Check {
  std::string what;
  double err = 0, scale = 0, floor = kFloor;
  double bound() const { return kFactor * scale + floor; }
  bool ok() const { return err <= bound(); }  // false for NaN
};
inline Check within(std::string what, double err, double scale, double floor = kFloor) {
  return Check{std::move(what), err, scale, floor};
}
// A quantity that must come out exactly (copies, bf16 widening).
inline Check exact(std::string what, double err) { return Check{std::move(what), err, 0, 0}; }

// ---- the backends ------------------------------------------------------------------------------
struct Target {
  std::string name;           // "cpu" | "checked" | "cuda"
  Backend* be = nullptr;      // null: skipped, for `reason`
  std::string reason;
  // Whether attention's products run on bf16 tensor cores (q, k, v and the probabilities
  // rounded): the CUDA backend's (cuda/backend.h); the CPU's attention is f32.
  bool attention_bf16 = false;
};

// The precisions of matrix products a backend runs: fp32 where it has it, and bf16.
inline std::vector<Precision> product_precisions(Backend& be) {
  std::vector<Precision> out;
  if (be.supports(Op::gemm, DType::f32, Precision::fp32)) out.push_back(Precision::fp32);
  out.push_back(Precision::bf16);
  return out;
}

// Memory of a backend holding n values of T, uploaded from the host or filled.
template <typename T>
class Dev {
 public:
  Dev(Backend& be, const std::vector<T>& host) : be_(&be), n_(host.size()), buf_(be, bytes()) {
    be.upload(buf_.data(), host.data(), bytes());
  }
  Dev(Backend& be, size_t n, T fill) : Dev(be, std::vector<T>(n, fill)) {}
  T* ptr() const { return buf_.as<T>(); }
  size_t size() const { return n_; }
  std::vector<T> get() const {
    std::vector<T> out(n_);
    be_->download(out.data(), buf_.data(), bytes());
    return out;
  }

 private:
  size_t bytes() const { return n_ * sizeof(T); }
  Backend* be_;
  size_t n_;
  Buffer buf_;
};

inline float nan_f32() { return std::numeric_limits<float>::quiet_NaN(); }

// got - start, element by element, in double: what an accumulating op added.
inline std::vector<double> added(const std::vector<float>& got, const std::vector<float>& start) {
  std::vector<double> d(got.size());
  for (size_t i = 0; i < got.size(); ++i) d[i] = double(got[i]) - double(start[i]);
  return d;
}

// The f32 level of an output an op adds to: the f32 reference added to the start in f32, less
// the start (the sum's own rounding, at the start's magnitude, is part of what f32 can do).
template <typename F>
std::vector<double> accumulated_f32(const std::vector<float>& start, const std::vector<F>& add) {
  std::vector<double> d(start.size());
  for (size_t i = 0; i < start.size(); ++i) d[i] = double(start[i] + float(add[i])) - double(start[i]);
  return d;
}

// ---- the report --------------------------------------------------------------------------------
class Report {
 public:
  // One line per case and backend: ok / FAIL with the worst quantity (its error, bound and
  // scale), and every failing quantity on a FAIL.
  void result(const std::string& backend, const std::string& name, const std::vector<Check>& checks);
  void error(const std::string& backend, const std::string& name, const std::string& message);
  void skip(const std::string& backend, const std::string& name, const std::string& reason, int cases = 1);
  void note(const std::string& line);
  int passed = 0, failed = 0, skipped = 0;
};

// Runs body(target) on every present backend, one report line each (an exception is a FAIL);
// counts the case as skipped on the others.
void for_each_target(Report& report, std::vector<Target>& targets, const std::string& name,
                     const std::function<std::vector<Check>(Target&)>& body);

// ---- sections ----------------------------------------------------------------------------------
struct Options {
  std::string fixtures = "test/fixtures";
  std::string filter;  // --only: a comma-separated list of sections (gemm,attention,...,model); empty: all
  bool bench = true;
  int bench_iterations = 10;
};

bool wanted(const Options& options, const std::string& section);
void run_ops(Report& report, std::vector<Target>& targets, const Options& options);
void run_models(Report& report, std::vector<Target>& targets, const Options& options);
// Bench JSON lines on stdout (CUDA only).
void run_bench(const Options& options, const Target& cuda);

}  // namespace ernie::check
