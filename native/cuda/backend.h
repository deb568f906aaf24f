// The CUDA backend's host-side entry points. The engine does not use these: it runs on
// ernie::cuda_backend() (backend/backend.h; cuda/cuda_backend.cu), whose ops take DEVICE pointers
// and queue on the calling thread's stream.
//
// What is here: device discovery and the pool's statistics, and the op set as host-copy
// wrappers for the single-op tests (the addon's cuda* twins of the ops, addon/gemm.cc, ...): the CPU backend's
// signatures (cpu/*.h), the same argument structs with HOST pointers. Each call copies its
// inputs to the device, runs the device-pointer layer (cuda/device.cuh, the same code the
// backend runs) on a stream of its own, copies the outputs back and waits.
//
// This header needs no CUDA headers, so plain C++ (the addon) includes it. In a build without
// ERNIE_CUDA (node-gyp, `npm install`) addon/cuda.cc defines every function to throw
// NotBuiltError, and info() reports built = false; so does ernie::cuda_backend()
// (backend/cuda_stub.cc).
//
// Precision: the matrix products (GEMM, attention, LoRA, the loss's logits) run on bf16 tensor
// cores with f32 accumulation, so f32 operands are rounded to bf16 on the way in (as under
// PyTorch's bf16 autocast); the row ops and the optimisers are f32 as on the CPU.
#pragma once
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "cpu/attention.h"
#include "cpu/gemm.h"
#include "cpu/lora.h"
#include "cpu/loss.h"
#include "cpu/ops.h"
#include "cpu/optim.h"

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

// ---- the ops, as the CPU backend's (host pointers): the host-copy wrappers -------------------
void gemm(const GemmArgs& args);
void attention_forward(const AttentionArgs& args);
void attention_backward(const AttentionArgs& args);
// The head dims the attention kernels take (1 .. kMaxHeadDim; padded to 32, 64 or 128).
constexpr int64_t kMaxHeadDim = 128;
void lora_linear_forward(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora,
                         float* u, float* y, bool accumulate);
void lora_linear_backward(const LinearShape& sh, const float* x, const MatrixRef& w,
                          const LoraRef& lora, const float* u, const float* dy, float* dx, bool dx_accumulate,
                          float* da, float* db);
void rmsnorm_forward(const RmsNormForwardArgs& a);
void rmsnorm_backward(const RmsNormBackwardArgs& a);
void rope(const RopeArgs& a);
void swiglu_forward(const SwigluForwardArgs& a);
void swiglu_backward(const SwigluBackwardArgs& a);
void embedding_forward(const EmbeddingForwardArgs& a);
void embedding_backward(const EmbeddingBackwardArgs& a);
CrossEntropyResult cross_entropy(const CrossEntropyArgs& args);
void adamw_step(float* params, const float* grads, float* m, float* v, uint16_t* params_bf16, int64_t n,
                const AdamHyper& h);
void adamw8bit_step(float* params, const float* grads, uint8_t* m_codes, uint8_t* v_codes, float* m_absmax,
                    float* v_absmax, uint16_t* params_bf16, int64_t n, int64_t block_size, const AdamHyper& h);

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
