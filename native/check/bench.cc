// ernie_check's benchmarks (a CUDA build with a device only): one JSON object per line on
// stdout, from cuda::benchmark (device-resident inputs, CUDA events, the median of the runs):
//   GEMM TFLOP/s (2 m n k; bf16 A [m, k] and B [n, k], f32 C) at the ERNIE-4.5-0.3B layer
//     shapes for 1024 tokens, and 4096^3;
//   causal attention TFLOP/s, forward (4 B H T^2 D / 2) and backward (2.5x that), 16 heads,
//     2 kv heads, head dim 128, at T = 512, 2048, 8192 with B T = 16384 tokens;
//   the LoRA layer (cuda::BenchArgs kind lora_layer: 7 LoRA linears and attention, forward and
//     backward) at the 0.3B dims, 8 x 512 tokens, rank 16;
//   the device memory: the caching pool's high-water mark over the runs, and what
//     cudaMemGetInfo reports in use.
// scripts/gpu_peer.py prints PyTorch's figures at the same shapes, in the same form.
#include <algorithm>
#include <cstdio>
#include <string>

#include "check/check.h"

#if defined(ERNIE_CUDA)
#include <cuda_runtime.h>

#include "cuda/backend.h"
#endif

namespace ernie::check {

#if defined(ERNIE_CUDA)
namespace {

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\', out += c;
    else if (uint8_t(c) < 0x20) out += ' ';
    else out += c;
  }
  return out + "\"";
}

struct Memory {
  uint64_t pool_peak = 0, device_used_peak = 0, device_total = 0;
  void sample() {
    const cuda::PoolStats s = cuda::pool_stats();
    pool_peak = std::max<uint64_t>(pool_peak, s.in_use + s.cached);
    size_t free = 0, total = 0;
    if (cudaMemGetInfo(&free, &total) == cudaSuccess) {
      device_total = total;
      device_used_peak = std::max<uint64_t>(device_used_peak, uint64_t(total - free));
    } else {
      cudaGetLastError();
    }
  }
};

}  // namespace

void run_bench(const Options& o, const Target& target) {
  if (!target.be || !o.bench) return;
  const cuda::Info info = cuda::info();
  const int dev = cuda::current_device();
  std::string device = "cuda:" + std::to_string(dev), cc;
  for (const cuda::DeviceInfo& d : info.devices)
    if (d.index == dev) {
      device = d.name;
      cc = std::to_string(d.major) + "." + std::to_string(d.minor);
    }
  const std::string common = "\"impl\":\"ernie\",\"device\":" + quoted(device) + ",\"cc\":" + quoted(cc);
  Memory mem;
  mem.sample();
  auto run = [&](const std::string& label, const cuda::BenchArgs& a, const std::string& fields, double flops, double tokens) {
    std::string line = "{\"bench\":" + quoted(label) + "," + common + "," + fields;
    try {
      const double s = cuda::benchmark(a);
      char buf[160];
      std::snprintf(buf, sizeof buf, ",\"seconds\":%.6e", s);
      line += buf;
      if (flops > 0) std::snprintf(buf, sizeof buf, ",\"tflops\":%.2f", flops / s / 1e12), line += buf;
      if (tokens > 0) std::snprintf(buf, sizeof buf, ",\"tokens_per_s\":%.0f", tokens / s), line += buf;
    } catch (const std::exception& e) {
      line += ",\"error\":" + quoted(e.what());
    }
    mem.sample();
    std::printf("%s}\n", line.c_str());
    std::fflush(stdout);
  };

  const int64_t shapes[][3] = {{1024, 2048, 1024}, {1024, 256, 1024}, {1024, 1024, 2048},
                               {1024, 3072, 1024}, {1024, 1024, 3072}, {4096, 4096, 4096}};
  for (const auto& s : shapes) {
    cuda::BenchArgs a;
    a.kind = "gemm";
    a.m = s[0];
    a.n = s[1];
    a.k = s[2];
    a.iterations = o.bench_iterations;
    run("gemm", a,
        "\"m\":" + std::to_string(s[0]) + ",\"n\":" + std::to_string(s[1]) + ",\"k\":" + std::to_string(s[2]) + ",\"dtype\":\"bf16\"",
        2.0 * double(s[0]) * double(s[1]) * double(s[2]), 0);
  }
  const int64_t heads = 16, kv_heads = 2, head_dim = 128, tokens = 16384;
  for (int64_t T : {512, 2048, 8192}) {
    const int64_t B = tokens / T;
    const double fwd = 4.0 * double(B) * double(heads) * double(T) * double(T) * double(head_dim) / 2.0;
    for (const char* kind : {"attention_forward", "attention_backward"}) {
      cuda::BenchArgs a;
      a.kind = kind;
      a.batch = B;
      a.seq = T;
      a.heads = heads;
      a.kv_heads = kv_heads;
      a.head_dim = head_dim;
      a.iterations = o.bench_iterations;
      const bool bwd = std::string(kind) == "attention_backward";
      run(kind, a,
          "\"batch\":" + std::to_string(B) + ",\"seq\":" + std::to_string(T) + ",\"heads\":16,\"kv_heads\":2,\"head_dim\":128,\"causal\":true",
          bwd ? 2.5 * fwd : fwd, 0);
    }
  }
  {
    cuda::BenchArgs a;
    a.kind = "lora_layer";
    a.batch = 8;
    a.seq = 512;
    a.heads = heads;
    a.kv_heads = kv_heads;
    a.head_dim = head_dim;
    a.hidden = 1024;
    a.intermediate = 3072;
    a.rank = 16;
    a.iterations = o.bench_iterations;
    // tokens_per_s: of one layer; a step of the 18-layer model takes 18 of them.
    run("lora_layer", a, "\"batch\":8,\"seq\":512,\"hidden\":1024,\"intermediate\":3072,\"heads\":16,\"kv_heads\":2,\"head_dim\":128,\"rank\":16,\"layers_per_step\":18",
        0, 8.0 * 512.0);
  }
  std::printf("{\"bench\":\"memory\",%s,\"pool_peak_bytes\":%llu,\"device_used_peak_bytes\":%llu,\"device_total_bytes\":%llu}\n",
              common.c_str(), (unsigned long long)mem.pool_peak, (unsigned long long)mem.device_used_peak,
              (unsigned long long)mem.device_total);
  std::fflush(stdout);
}

#else

void run_bench(const Options&, const Target&) {}  // no CUDA in this build: nothing to time

#endif

}  // namespace ernie::check
