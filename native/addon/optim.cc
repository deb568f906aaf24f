// Optimiser steps, in place, and gradient norms.
//   adamwStep({ params, grads, m, v, lr, beta1, beta2, eps, weightDecay, step, paramsBf16 })
//   adamw8bitStep({ params, grads, m, v, mAbsmax, vAbsmax, blockSize, lr, ..., step, paramsBf16 })
//       m, v: Uint8Array codes [n]; mAbsmax, vAbsmax: Float32Array [ceil(n / blockSize)]
//   sgdStep({ params, grads, lr, momentum, buffer, weightDecay, nesterov })
//   quantizeBlockwise({ input, codes, absmax, blockSize, signed })
//   dequantizeBlockwise({ codes, absmax, output, blockSize, signed })
//   gradNorm({ grads }) -> number;  clipGradNorm({ grads, maxNorm }) -> number (before clipping)
// Defaults follow torch.optim.AdamW: beta1 0.9, beta2 0.999, eps 1e-8, weightDecay 0.01.
// adamwStep and adamw8bitStep take `device`: 'cpu' (default) | 'cuda' | 'checked' (addon/op.h).
#include <algorithm>
#include <cstdio>
#include <limits>
#include <memory>
#include <numeric>
#include <string>
#include <utility>
#include <vector>

#include "addon/mirror.h"
#include "addon/op.h"
#include "cpu/optim.h"
#include "cuda/backend.h"

namespace ernie::addon {
namespace {

using Named = std::pair<const char*, const ArrayArg*>;

// Every output must be disjoint from every other array of the call.
void expect_all_disjoint(Args& args, std::initializer_list<Named> arrays) {
  for (auto i = arrays.begin(); i != arrays.end(); ++i)
    for (auto j = i + 1; j != arrays.end(); ++j)
      if (i->second->data && j->second->data) args.expect_disjoint(i->first, *i->second, j->first, *j->second);
}

std::string show(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", x);
  return buf;
}

double number_in(Args& args, const char* key, double fallback, double lo, double hi, bool hi_open, bool required) {
  const double x = required ? args.number(key) : args.number_or(key, fallback);
  if (x < lo || x > hi || (hi_open && x == hi))
    args.range_error(args.name(key) + " must be in [" + show(lo) + ", " + show(hi) + (hi_open ? ")" : "]") +
                     ", got " + show(x));
  return x;
}

AdamHyper adam_args(Args& args) {
  const double inf = std::numeric_limits<double>::infinity();
  const double lr = number_in(args, "lr", 0, 0, inf, false, true);
  const double beta1 = number_in(args, "beta1", 0.9, 0, 1, true, false);
  const double beta2 = number_in(args, "beta2", 0.999, 0, 1, true, false);
  const double eps = number_in(args, "eps", 1e-8, 0, inf, false, false);
  const double wd = number_in(args, "weightDecay", 0.01, 0, inf, false, false);
  const int64_t step = args.integer("step", 1, INT64_C(1) << 53);
  return adam_hyper(lr, beta1, beta2, eps, wd, step);
}

int64_t block_count(int64_t n, int64_t block_size) { return (n + block_size - 1) / block_size; }

// A list of gradients, none sharing memory with another (each would be counted or scaled twice).
std::vector<cpu::FloatSpan> grad_list(Args& args) {
  std::vector<ArrayArg> grads = args.f32_list("grads");
  std::vector<size_t> order(grads.size());
  std::iota(order.begin(), order.end(), size_t(0));
  auto begin = [&](size_t i) { return reinterpret_cast<uintptr_t>(grads[i].data); };
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return begin(a) < begin(b); });
  uintptr_t reach = 0;  // the furthest end so far, and whose it is
  size_t reach_of = 0;
  for (size_t i : order) {
    if (grads[i].length == 0) continue;
    if (reach > begin(i))
      args.range_error("'grads[" + std::to_string(std::min(i, reach_of)) + "]' and 'grads[" +
                       std::to_string(std::max(i, reach_of)) + "]' must not share memory");
    const uintptr_t end = begin(i) + grads[i].length * sizeof(float);
    if (end > reach) reach = end, reach_of = i;
  }
  std::vector<cpu::FloatSpan> spans;
  for (const ArrayArg& g : grads) spans.push_back({g.f32(), int64_t(g.length)});
  return spans;
}

Napi::Value number_result(Napi::Env env, double x) { return Napi::Number::New(env, x); }

Job adamw_job(Args& args, Backend& be) {
  ArrayArg params = args.f32("params");
  const uint64_t n = params.length;
  ArrayArg grads = args.f32("grads"), m = args.f32("m"), v = args.f32("v");
  args.expect_length("grads", grads, n, "params.length");
  args.expect_length("m", m, n, "params.length");
  args.expect_length("v", v, n, "params.length");
  ArrayArg bf16;
  if (args.has("paramsBf16")) {
    bf16 = args.u16("paramsBf16");
    args.expect_length("paramsBf16", bf16, n, "params.length");
  }
  expect_all_disjoint(args, {{"params", &params}, {"grads", &grads}, {"m", &m}, {"v", &v}, {"paramsBf16", &bf16}});
  const AdamHyper h = adam_args(args);
  return Job{[=, &be] {
               Mirror mirror(be);
               AdamArgs a;
               a.n = int64_t(n);
               a.params = mirror.inout(params.f32(), n);
               a.grads = mirror.in(grads.f32(), n);
               a.m = mirror.inout(m.f32(), n);
               a.v = mirror.inout(v.f32(), n);
               a.params_bf16 = mirror.out(bf16.u16(), n);
               a.hyper = h;
               be.adamw(a);
               mirror.finish();
             },
             {}};
}

Job adamw8bit_job(Args& args, Backend& be) {
  ArrayArg params = args.f32("params");
  const uint64_t n = params.length;
  const int64_t block_size = args.integer_or("blockSize", 256, 1, 65536);
  const uint64_t blocks = uint64_t(block_count(int64_t(n), block_size));
  ArrayArg grads = args.f32("grads"), m = args.u8("m"), v = args.u8("v");
  ArrayArg m_absmax = args.f32("mAbsmax"), v_absmax = args.f32("vAbsmax");
  args.expect_length("grads", grads, n, "params.length");
  args.expect_length("m", m, n, "params.length");
  args.expect_length("v", v, n, "params.length");
  args.expect_length("mAbsmax", m_absmax, blocks, "ceil(params.length / blockSize)");
  args.expect_length("vAbsmax", v_absmax, blocks, "ceil(params.length / blockSize)");
  ArrayArg bf16;
  if (args.has("paramsBf16")) {
    bf16 = args.u16("paramsBf16");
    args.expect_length("paramsBf16", bf16, n, "params.length");
  }
  expect_all_disjoint(args, {{"params", &params}, {"grads", &grads}, {"m", &m}, {"v", &v}, {"mAbsmax", &m_absmax},
                             {"vAbsmax", &v_absmax}, {"paramsBf16", &bf16}});
  const AdamHyper h = adam_args(args);
  return Job{[=, &be] {
               Mirror mirror(be);
               Adam8bitArgs a;
               a.n = int64_t(n);
               a.block_size = block_size;
               a.params = mirror.inout(params.f32(), n);
               a.grads = mirror.in(grads.f32(), n);
               a.m_codes = mirror.inout(m.u8(), n);
               a.v_codes = mirror.inout(v.u8(), n);
               a.m_absmax = mirror.inout(m_absmax.f32(), blocks);
               a.v_absmax = mirror.inout(v_absmax.f32(), blocks);
               a.params_bf16 = mirror.out(bf16.u16(), n);
               a.hyper = h;
               be.adamw8bit(a);
               mirror.finish();
             },
             {}};
}

}  // namespace

ERNIE_OP(adamwStep) { return adamw_job(args, args.backend()); }
ERNIE_OP(adamw8bitStep) { return adamw8bit_job(args, args.backend()); }

ERNIE_OP(sgdStep) {
  ArrayArg params = args.f32("params");
  const uint64_t n = params.length;
  ArrayArg grads = args.f32("grads");
  args.expect_length("grads", grads, n, "params.length");
  const double inf = std::numeric_limits<double>::infinity();
  const float lr = float(number_in(args, "lr", 0, 0, inf, false, true));
  const float momentum = float(number_in(args, "momentum", 0, 0, inf, false, false));
  const float wd = float(number_in(args, "weightDecay", 0, 0, inf, false, false));
  const bool nesterov = args.boolean_or("nesterov", false);
  ArrayArg buffer;
  if (momentum != 0.0f) {
    if (!args.has("buffer")) args.type_error(args.name("buffer") + " is required when momentum is not 0");
    buffer = args.f32("buffer");
    args.expect_length("buffer", buffer, n, "params.length");
  } else if (nesterov) {
    args.range_error(args.name("nesterov") + " needs a momentum above 0");
  }
  expect_all_disjoint(args, {{"params", &params}, {"grads", &grads}, {"buffer", &buffer}});
  return Job{[=] { cpu::sgd_step(params.f32(), grads.f32(), buffer.f32(), int64_t(n), lr, momentum, wd, nesterov); },
             {}};
}

ERNIE_OP(quantizeBlockwise) {
  ArrayArg input = args.f32("input");
  const uint64_t n = input.length;
  const int64_t block_size = args.integer_or("blockSize", 256, 1, 65536);
  const bool is_signed = args.boolean_or("signed", true);
  ArrayArg codes = args.u8("codes"), absmax = args.f32("absmax");
  args.expect_length("codes", codes, n, "input.length");
  args.expect_length("absmax", absmax, uint64_t(block_count(int64_t(n), block_size)), "ceil(input.length / blockSize)");
  expect_all_disjoint(args, {{"input", &input}, {"codes", &codes}, {"absmax", &absmax}});
  return Job{[=] { cpu::quantize_blockwise(input.f32(), int64_t(n), block_size, is_signed, codes.u8(), absmax.f32()); },
             {}};
}

ERNIE_OP(dequantizeBlockwise) {
  ArrayArg codes = args.u8("codes");
  const uint64_t n = codes.length;
  const int64_t block_size = args.integer_or("blockSize", 256, 1, 65536);
  const bool is_signed = args.boolean_or("signed", true);
  ArrayArg absmax = args.f32("absmax"), output = args.f32("output");
  args.expect_length("absmax", absmax, uint64_t(block_count(int64_t(n), block_size)), "ceil(codes.length / blockSize)");
  args.expect_length("output", output, n, "codes.length");
  expect_all_disjoint(args, {{"output", &output}, {"codes", &codes}, {"absmax", &absmax}});
  return Job{
      [=] { cpu::dequantize_blockwise(codes.u8(), absmax.f32(), int64_t(n), block_size, is_signed, output.f32()); },
      {}};
}

ERNIE_OP(gradNorm) {
  auto grads = grad_list(args);
  auto out = std::make_shared<double>(0.0);
  return Job{[grads, out] { *out = cpu::grad_norm(grads); },
             [out](Napi::Env env) { return number_result(env, *out); }};
}

ERNIE_OP(clipGradNorm) {
  auto grads = grad_list(args);
  const double max_norm = number_in(args, "maxNorm", 0, 0, std::numeric_limits<double>::infinity(), false, true);
  auto out = std::make_shared<double>(0.0);
  return Job{[grads, max_norm, out] { *out = cpu::clip_grad_norm(grads, max_norm); },
             [out](Napi::Env env) { return number_result(env, *out); }};
}

}  // namespace ernie::addon
