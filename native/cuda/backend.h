// The CUDA backend's host-side entry points: device discovery, the memory pool's statistics and
// the benchmarks. The ops themselves are ernie::cuda_backend() (backend/backend.h;
// cuda/cuda_backend.cu), on DEVICE pointers, queued on the calling thread's stream; the addon's
// ops reach it with `device: 'cuda'`, copying their host arrays there and back (addon/mirror.h).
//
// This header needs no CUDA headers, so plain C++ (the addon) includes it. In a build without
// ERNIE_CUDA (node-gyp, `npm install`) addon/cuda.cc defines these to throw NotBuiltError (info()
// reports built = false), and so does ernie::cuda_backend() (backend/cuda_stub.cc).
//
// Precision: the matrix products (GEMM, attention, LoRA, the loss's logits) run on bf16 tensor
// cores with f32 accumulation, so f32 operands are rounded to bf16 on the way in (as under
// PyTorch's bf16 autocast); the row ops and the optimisers are f32 as on the CPU.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "backend/ops.h"

namespace ernie::cuda {

// A failed CUDA runtime call: the message names the call, the file and line, and the error.
struct CudaError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// What a build without ERNIE_CUDA throws from every entry point.
struct NotBuiltError : std::runtime_error {
  NotBuiltError() : std::runtime_error("not built with CUDA (build the addon with `npm run build:cuda`)") {}
};

struct DeviceInfo {
  int index = 0;
  std::string name;
  int major = 0, minor = 0;    // compute capability
  uint64_t total_memory = 0;   // bytes
  int multiprocessors = 0;
};

struct Info {
  bool built = false;
  std::vector<DeviceInfo> devices;
  std::string error;            // why there are no devices (driver missing, ...), when there are none
  int runtime_version = 0;      // CUDART_VERSION the addon was built with
  int driver_version = 0;       // 0 when no driver
};

// Never throws: a missing driver or device is reported in `error`.
Info info();
// The device the ops run on (default 0); RangeError-style std::out_of_range on a bad index.
void set_device(int index);
int current_device();
// Device memory the pool holds: in use by running jobs, and cached for reuse.
struct PoolStats {
  uint64_t in_use = 0, cached = 0;
};
PoolStats pool_stats();
// Returns the cached blocks to the driver.
void trim_pool();

// The head dims the attention kernels take (1 .. kMaxHeadDim; padded to 32, 64 or 128).
constexpr int64_t kMaxHeadDim = 128;

// ---- benchmarks: device-resident inputs, timed with CUDA events ------------------------------
struct BenchArgs {
  std::string kind;  // "gemm" | "attention_forward" | "attention_backward" | "lora_layer"
  int64_t m = 0, n = 0, k = 0;                                   // gemm; lora_layer: tokens, and the 0.3B dims below
  int64_t batch = 0, seq = 0, heads = 0, kv_heads = 0, head_dim = 0;  // attention; lora_layer
  int64_t hidden = 0, intermediate = 0, rank = 0;                // lora_layer
  int iterations = 10;
};
// Seconds per iteration (the median of `iterations` timed runs after one warm-up).
double benchmark(const BenchArgs& args);

}  // namespace ernie::cuda
