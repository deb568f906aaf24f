// The CUDA backend's module surface: cudaInfo(), setCudaDevice(i), cudaPoolStats(),
// cudaTrimPool(), and the op cudaBenchmark({ kind, ... }) -> seconds per run. The kernel ops
// take `device: 'cuda'` (addon/op.h).
//
// Built without ERNIE_CUDA (node-gyp, `npm install`), this file also defines the entry points of
// cuda/backend.h to throw NotBuiltError; cudaInfo() then reports { built: false }.
#include <string>

#include "addon/op.h"
#include "cuda/backend.h"

namespace ernie::addon {
namespace {

Napi::Value cuda_info(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cuda::Info i = cuda::info();
  Napi::Object out = Napi::Object::New(env);
  out.Set("built", Napi::Boolean::New(env, i.built));
  out.Set("runtimeVersion", Napi::Number::New(env, i.runtime_version));
  out.Set("driverVersion", Napi::Number::New(env, i.driver_version));
  if (!i.error.empty()) out.Set("error", Napi::String::New(env, i.error));
  Napi::Array devices = Napi::Array::New(env, i.devices.size());
  for (uint32_t k = 0; k < i.devices.size(); ++k) {
    const cuda::DeviceInfo& d = i.devices[k];
    Napi::Object o = Napi::Object::New(env);
    o.Set("index", Napi::Number::New(env, d.index));
    o.Set("name", Napi::String::New(env, d.name));
    o.Set("computeCapability", Napi::String::New(env, std::to_string(d.major) + "." + std::to_string(d.minor)));
    o.Set("totalMemory", Napi::Number::New(env, double(d.total_memory)));
    o.Set("multiprocessors", Napi::Number::New(env, d.multiprocessors));
    devices.Set(k, o);
  }
  out.Set("devices", devices);
  return out;
}

Napi::Value set_cuda_device(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsNumber()) throw_type_error(env, "setCudaDevice: expected a device index");
  const double index = info[0].As<Napi::Number>().DoubleValue();
  if (index != double(int(index)) || index < 0) throw_range_error(env, "setCudaDevice: expected a device index >= 0");
  try {
    cuda::set_device(int(index));
  } catch (const std::out_of_range& e) {
    throw_range_error(env, std::string("setCudaDevice: ") + e.what());
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, std::string("setCudaDevice: ") + e.what());
  }
  return env.Undefined();
}

Napi::Value cuda_pool_stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const cuda::PoolStats s = cuda::pool_stats();
  Napi::Object out = Napi::Object::New(env);
  out.Set("inUse", Napi::Number::New(env, double(s.in_use)));
  out.Set("cached", Napi::Number::New(env, double(s.cached)));
  return out;
}

Napi::Value cuda_trim_pool(const Napi::CallbackInfo& info) {
  cuda::trim_pool();
  return info.Env().Undefined();
}

void export_cuda(Napi::Env env, Napi::Object exports) {
  exports.Set("cudaInfo", Napi::Function::New(env, cuda_info, "cudaInfo"));
  exports.Set("setCudaDevice", Napi::Function::New(env, set_cuda_device, "setCudaDevice"));
  exports.Set("cudaPoolStats", Napi::Function::New(env, cuda_pool_stats, "cudaPoolStats"));
  exports.Set("cudaTrimPool", Napi::Function::New(env, cuda_trim_pool, "cudaTrimPool"));
}

const bool cuda_exported = register_exporter(export_cuda);

}  // namespace

// cudaBenchmark({ kind, m, n, k, batch, seq, heads, kvHeads, headDim, hidden, intermediate,
//                 rank, iterations }) -> seconds per run (see cuda::benchmark)
ERNIE_OP(cudaBenchmark) {
  cuda::BenchArgs b;
  b.kind = args.string_or("kind", "");
  if (b.kind != "gemm" && b.kind != "attention_forward" && b.kind != "attention_backward" && b.kind != "lora_layer")
    args.range_error(args.name("kind") + " must be 'gemm', 'attention_forward', 'attention_backward' or 'lora_layer'");
  const int64_t big = int64_t(1) << 20;
  if (b.kind == "gemm") {
    b.m = args.integer("m", 1, big);
    b.n = args.integer("n", 1, big);
    b.k = args.integer("k", 1, big);
  } else {
    b.batch = args.integer("batch", 1, 4096);
    b.seq = args.integer("seq", 1, big);
    b.heads = args.integer("heads", 1, 1024);
    b.kv_heads = args.integer("kvHeads", 1, 1024);
    b.head_dim = args.integer("headDim", 1, cuda::kMaxHeadDim);
    if (b.heads % b.kv_heads != 0) args.range_error(args.name("heads") + " must be a multiple of " + args.name("kvHeads"));
    if (b.kind == "lora_layer") {
      b.hidden = args.integer("hidden", 1, big);
      b.intermediate = args.integer("intermediate", 1, big);
      b.rank = args.integer("rank", 1, 4096);
    }
  }
  b.iterations = int(args.integer_or("iterations", 10, 1, 1000));
  auto seconds = std::make_shared<double>(0.0);
  return Job{[b, seconds] { *seconds = cuda::benchmark(b); },
             [seconds](Napi::Env env) -> Napi::Value { return Napi::Number::New(env, *seconds); }};
}

}  // namespace ernie::addon

#if !defined(ERNIE_CUDA)
// No CUDA in this build: every entry point says so.
namespace ernie::cuda {

Info info() {
  Info i;
  i.built = false;
  i.error = "not built with CUDA (build the addon with `npm run build:cuda`)";
  return i;
}
void set_device(int) { throw NotBuiltError(); }
int current_device() { return 0; }
PoolStats pool_stats() { return {}; }
void trim_pool() {}
double benchmark(const BenchArgs&) { throw NotBuiltError(); }

}  // namespace ernie::cuda
#endif
