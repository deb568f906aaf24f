// fillNormal({ out: Float32Array | Uint16Array (bf16), mean?, std, seed }): deterministic normal
// samples for random initialisation. Element i depends only on (seed, i), through a counter-
// based generator (splitmix64 then Box-Muller), so the result does not depend on threads.
#include <cmath>

#include "addon/op.h"
#include "cpu/threadpool.h"

namespace ernie::addon {
namespace {

uint64_t splitmix64(uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// A standard normal sample for index i: one Box-Muller pair per two consecutive indices.
double normal_at(uint64_t seed, uint64_t i) {
  const uint64_t pair = i >> 1;
  const uint64_t r1 = splitmix64(seed ^ splitmix64(2 * pair)), r2 = splitmix64(seed ^ splitmix64(2 * pair + 1));
  const double u1 = (double(r1 >> 11) + 1.0) * 0x1.0p-53;  // (0, 1]
  const double u2 = double(r2 >> 11) * 0x1.0p-53;
  const double radius = std::sqrt(-2.0 * std::log(u1));
  return (i & 1) ? radius * std::sin(2 * M_PI * u2) : radius * std::cos(2 * M_PI * u2);
}

}  // namespace

ERNIE_OP(fillNormal) {
  ArrayArg out = args.f32_or_bf16("out");
  const double mean = args.number_or("mean", 0.0), std_dev = args.number("std");
  if (std_dev < 0) args.range_error("'std' must be >= 0");
  const uint64_t seed = splitmix64(uint64_t(args.integer("seed", 0, (int64_t(1) << 53))));
  return Job{[out, mean, std_dev, seed] {
               cpu::parallel_for(int64_t(out.length), [&](int64_t b, int64_t e, int) {
                 for (int64_t i = b; i < e; ++i) {
                   const float v = float(mean + std_dev * normal_at(seed, uint64_t(i)));
                   if (out.dtype() == DType::f32) out.f32()[i] = v;
                   else out.u16()[i] = cpu::f32_to_bf16(v);
                 }
               });
             },
             {}};
}

}  // namespace ernie::addon
