// Module entry: the registered ops (see op.h) and the engine's settings.
#include <napi.h>

#include <stdexcept>

#include "addon/op.h"
#include "cpu/isa.h"
#include "cpu/threadpool.h"

namespace ernie::addon {
namespace {

Napi::Value supported_isas(const Napi::CallbackInfo& info) {
  auto list = cpu::supported_isas();
  Napi::Array out = Napi::Array::New(info.Env(), list.size());
  for (uint32_t i = 0; i < list.size(); ++i) out.Set(i, cpu::isa_name(list[i]));
  return out;
}

Napi::Value active_isa(const Napi::CallbackInfo& info) {
  return Napi::String::New(info.Env(), cpu::isa_name(cpu::active_isa()));
}

Napi::Value set_isa(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsString()) throw_type_error(info.Env(), "setIsa: expected an ISA name string");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  cpu::Isa isa;
  if (!cpu::isa_from_name(name, &isa))
    throw_range_error(info.Env(), "setIsa: unknown ISA '" + name + "' (expected generic, avx2, avx512 or avx512bf16)");
  if (!cpu::isa_supported(isa)) throw_range_error(info.Env(), "setIsa: ISA '" + name + "' is not supported by this CPU");
  cpu::set_isa(isa);
  return info.Env().Undefined();
}

Napi::Value num_threads(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cpu::ThreadPool::instance().num_threads());
}

Napi::Value set_num_threads(const Napi::CallbackInfo& info) {
  if (info.Length() < 1 || !info[0].IsNumber()) throw_type_error(info.Env(), "setNumThreads: expected a number");
  int64_t n = info[0].As<Napi::Number>().Int64Value();
  if (n < 1 || n > 1024) throw_range_error(info.Env(), "setNumThreads: must be in [1, 1024], got " + std::to_string(n));
  cpu::ThreadPool::instance().resize(int(n));
  return info.Env().Undefined();
}

Napi::Value physical_cores(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cpu::physical_core_count());
}

}  // namespace

Napi::Object init(Napi::Env env, Napi::Object exports) {
  exports.Set("supportedIsas", Napi::Function::New(env, supported_isas, "supportedIsas"));
  // The test-only build (CMake -DERNIE_EMULATE_AVX512=ON): its AVX-512 kernels are emulated.
  exports.Set("avx512Emulated", Napi::Boolean::New(env, cpu::isa_avx512_emulated()));
  exports.Set("activeIsa", Napi::Function::New(env, active_isa, "activeIsa"));
  exports.Set("setIsa", Napi::Function::New(env, set_isa, "setIsa"));
  exports.Set("numThreads", Napi::Function::New(env, num_threads, "numThreads"));
  exports.Set("setNumThreads", Napi::Function::New(env, set_num_threads, "setNumThreads"));
  exports.Set("physicalCores", Napi::Function::New(env, physical_cores, "physicalCores"));
  export_ops(env, exports);
  return exports;
}

}  // namespace ernie::addon

static Napi::Object ernie_init(Napi::Env env, Napi::Object exports) { return ernie::addon::init(env, exports); }
NODE_API_MODULE(ernie, ernie_init)
