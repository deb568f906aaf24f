// The CUDA backend (backend/backend.h) on one device: device memory from the caching pool
// (runtime.cu), and every op queued, on device pointers, on the calling thread's stream through
// the device-pointer layer of the kernel families (cuda/device.cuh).
//
// Rules (what each choice below leans on):
//   Queues. A thread gets its own queue per device on its first call: a Context (runtime.cu),
//     i.e. a stream from the stream pool plus the temporaries its ops keep for reuse, held in a
//     thread_local until the thread ends. The addon runs jobs on several libuv workers at once;
//     each job's ops go in order on its worker's stream, and jobs on different workers overlap.
//     Every call first makes the backend's device current on the thread (cudaSetDevice): a
//     worker may have run a job on another device just before.
//   Temporaries. Each op runs in a Context::Scope: what it allocates (packed bf16 operands,
//     partial sums, logits blocks) goes back to the thread's Context when it returns, for its
//     next ops; they run after it on the same stream, so reuse needs no wait. When the stream
//     has drained (download, synchronize, cross_entropy) those blocks go back to the shared
//     pool, where another thread's stream may take them.
//   alloc / release. Through the caching pool (pool_allocate / pool_release), so cudaPoolStats
//     and cudaTrimPool see the engine's memory. The pool hands a block to any stream at once, so
//     a block must be idle before it goes back: release() waits for the calling thread's stream
//     (a no-op when nothing is queued) and then returns it. That is correct for every buffer the
//     releasing thread's own ops used; a buffer that ops queued by ANOTHER thread use must be
//     released only after that thread has synchronized (downloaded) them, as the engine does
//     when a call ends. (cudaFreeAsync on the releasing stream would not help there either: it
//     orders the free after that stream's work only.) The wait costs nothing at the end of a
//     call, where buffers are released after the result's download; a release in the middle of
//     queued work stalls the host until the GPU catches up, but never frees memory in use.
//   upload waits for its copy (cudaMemcpyAsync on the stream, then a stream sync): the host
//     memory may go as soon as the call returns, the copy is ordered after the thread's earlier
//     ops (which may still read the destination), and once it returns every other thread's
//     stream sees the data (the weights, uploaded once, are read by every worker).
//   download queues its copy after the thread's ops and waits for the stream; synchronize
//     waits for the stream. A fault in any queued op surfaces there as a CudaError.
//
// Precision: every matrix product (GEMM, attention, LoRA, the loss's logits) runs on bf16 tensor
// cores with f32 accumulation (cuda/backend.h); fp32 products are not available, and asking
// for them is an error rather than a silent bf16. The rest is f32, as on the CPU.
//
// Compiled for sm_80 and sm_90, never run here (no GPU).
#include <algorithm>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

#include "backend/backend.h"
#include "cuda/device.cuh"

namespace ernie::cuda {
namespace {

constexpr int kMaxDevices = 64;  // as runtime.cu's pool
constexpr int kThreads = 256;

const char* const kNoFp32 = "the CUDA backend computes matrix products in bf16 only (precision 'fp32' is not available)";

// ---- gather_rows / scatter_rows ----------------------------------------------------------------

// out[i] = sum over j in [starts[i], starts[i + 1]) of weights[j] * src[rows[j]]: a block per
// output row (grid-stride), a thread per column, the range summed in order from zero with
// each product and sum rounded on its own (no FMA), as the CPU backend's loop rounds them.
__global__ void gather_rows_op_kernel(const float* src, const int32_t* starts, const int32_t* rows,
                                      const float* weights, int64_t count, int64_t dim, float* out) {
  for (int64_t i = blockIdx.x; i < count; i += gridDim.x) {
    const int32_t j0 = starts[i], j1 = starts[i + 1];
    float* o = out + i * dim;
    for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) {
      float acc = 0.0f;
      for (int32_t j = j0; j < j1; ++j) {
        const float w = weights ? weights[j] : 1.0f;
        acc = __fadd_rn(acc, __fmul_rn(w, src[int64_t(rows[j]) * dim + c]));
      }
      o[c] = acc;
    }
  }
}

// dsrc[rows[j]] += weights[j] * dout[i] for j in [starts[i], starts[i + 1]): a block per range
// (grid-stride), a thread per column. Two ranges (or one range twice) may name the same row, and
// their blocks run at once: the additions are atomic, so none is lost, but their order (and so
// the rounding of a row named more than once) varies from run to run.
__global__ void scatter_rows_op_kernel(const float* dout, const int32_t* starts, const int32_t* rows,
                                       const float* weights, int64_t count, int64_t dim, float* dsrc) {
  for (int64_t i = blockIdx.x; i < count; i += gridDim.x) {
    const int32_t j0 = starts[i], j1 = starts[i + 1];
    const float* d = dout + i * dim;
    for (int32_t j = j0; j < j1; ++j) {
      const float w = weights ? weights[j] : 1.0f;
      float* dst = dsrc + int64_t(rows[j]) * dim;
      for (int64_t c = threadIdx.x; c < dim; c += blockDim.x) atomicAdd(dst + c, __fmul_rn(w, d[c]));
    }
  }
}

// A block per row, up to 65535 blocks; threads: the row's width in warps, at most kThreads.
dim3 rows_grid(int64_t count) { return dim3(unsigned(std::min<int64_t>(count, 65535))); }
dim3 rows_block(int64_t dim) { return dim3(unsigned(std::min<int64_t>(round_up(dim, 32), kThreads))); }

// ---- the calling thread's queues ---------------------------------------------------------------

// One per device the thread has used: made on first use, kept until the thread ends (the
// Context's destructor then waits for the stream and returns its blocks and stream to the pool).
struct ThreadQueues {
  std::unique_ptr<Context> on[kMaxDevices];
};
thread_local ThreadQueues t_queues;

// This thread's queue on `device`, made if need be, with the device made current.
Context& queue(int device) {
  std::unique_ptr<Context>& q = t_queues.on[device];
  if (!q) q = std::make_unique<Context>(device);  // sets the device
  else CUDA_CHECK(cudaSetDevice(device));
  return *q;
}

// The queue if this thread has one on `device` (it has queued nothing there otherwise).
Context* existing_queue(int device) { return t_queues.on[device].get(); }

// Waits for the stream; then the temporaries the thread's ops kept go back to the pool.
void drain(Context& q) {
  q.sync();
  q.release_recycled();
}

bool is_matrix_op(Op op) {
  switch (op) {
    case Op::gemm:
    case Op::attention_forward:
    case Op::attention_backward:
    case Op::lora_forward:
    case Op::lora_backward:
    case Op::cross_entropy:
      return true;
    default:
      return false;
  }
}

void check_precision(Precision p) {
  if (p == Precision::fp32) throw std::invalid_argument(kNoFp32);
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(int device) : device_(device) {}

  Device device() const override { return Device::cuda; }
  const char* name() const override { return "cuda"; }
  bool host_memory() const override { return false; }

  // Every op, with f32 or bf16 weights; the matrix ops at bf16 only. (Attention also needs
  // head_dim <= kMaxHeadDim, a shape limit this signature cannot express: the op throws.)
  bool supports(Op op, DType, Precision precision) const override {
    return !(precision == Precision::fp32 && is_matrix_op(op));
  }
  int64_t max_head_dim() const override { return kMaxHeadDim; }
  Precision resolve(Precision asked, DType) const override {
    check_precision(asked);
    return Precision::bf16;
  }

  // ---- memory ----------------------------------------------------------------------------------
  void* alloc(size_t bytes) override {
    CUDA_CHECK(cudaSetDevice(device_));  // a new block is cudaMalloc'd on the current device
    size_t granted = 0;
    void* p = pool_allocate(device_, bytes, &granted);  // cudaMalloc'd: 256-byte aligned
    try {
      std::lock_guard<std::mutex> lock(mutex_);
      granted_.emplace(p, granted);
    } catch (...) {
      pool_release(device_, p, granted);
      throw;
    }
    return p;
  }

  void release(void* p, size_t) noexcept override {
    if (!p) return;
    try {
      size_t granted = 0;
      {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = granted_.find(p);
        if (it == granted_.end()) return;  // not this backend's
        granted = it->second;
        granted_.erase(it);
      }
      // Stream-ordered: the thread's queued ops that use the block finish before the pool may
      // hand it to another stream (see the rules at the top).
      bool healthy = true;
      if (Context* q = existing_queue(device_)) healthy = cudaStreamSynchronize(q->stream()) == cudaSuccess;
      if (healthy) {
        pool_release(device_, p, granted);
      } else {  // a faulted stream: the device may be unusable; free the block rather than cache it
        cudaSetDevice(device_);
        pool_discard(device_, p, granted);
      }
    } catch (...) {
      // release is noexcept: at worst the block is lost to the pool
    }
  }

  void upload(void* dst, const void* host, size_t bytes) override {
    if (bytes == 0) return;
    Context& q = queue(device_);
    CUDA_CHECK(cudaMemcpyAsync(dst, host, bytes, cudaMemcpyHostToDevice, q.stream()));
    q.sync();  // the host memory may go when this returns, and every stream sees the data
  }
  void download(void* host, const void* src, size_t bytes) override {
    Context& q = queue(device_);
    if (bytes) CUDA_CHECK(cudaMemcpyAsync(host, src, bytes, cudaMemcpyDeviceToHost, q.stream()));
    drain(q);
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    if (bytes == 0 || dst == src) return;
    Context& q = queue(device_);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, q.stream()));
  }
  void zero(void* dst, size_t bytes) override {
    if (bytes == 0) return;
    Context& q = queue(device_);
    CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, q.stream()));
  }
  void synchronize() override {
    Context* q = existing_queue(device_);
    if (!q) return;  // this thread has queued nothing on the device
    CUDA_CHECK(cudaSetDevice(device_));
    drain(*q);
  }

  // ---- the op set ------------------------------------------------------------------------------
  void gemm(const GemmArgs& a) override {
    check_precision(a.precision);
    run([&](Context& q) { gemm_device(a, q); });
  }
  void attention_forward(const AttentionArgs& a) override {
    check_head_dim(a.head_dim);
    run([&](Context& q) { attention_forward_device(a, q); });
  }
  void attention_backward(const AttentionArgs& a) override {
    check_head_dim(a.head_dim);
    run([&](Context& q) { attention_backward_device(a, q); });
  }
  void lora_forward(const LoraForwardArgs& a) override {
    check_precision(a.shape.precision);
    run([&](Context& q) { lora_forward_device(a.shape, a.x, a.w, a.lora, a.u, a.y, a.accumulate, q); });
  }
  void lora_backward(const LoraBackwardArgs& a) override {
    check_precision(a.shape.precision);
    run([&](Context& q) {
      lora_backward_device(a.shape, a.x, a.w, a.lora, a.u, a.dy, a.dx, a.dx_accumulate, a.da, a.db, q);
    });
  }
  void rmsnorm_forward(const RmsNormForwardArgs& a) override { run([&](Context& q) { rmsnorm_forward_device(a, q); }); }
  void rmsnorm_backward(const RmsNormBackwardArgs& a) override { run([&](Context& q) { rmsnorm_backward_device(a, q); }); }
  void rope(const RopeArgs& a) override { run([&](Context& q) { rope_device(a, q); }); }
  void swiglu_forward(const SwigluForwardArgs& a) override { run([&](Context& q) { swiglu_forward_device(a, q); }); }
  void swiglu_backward(const SwigluBackwardArgs& a) override { run([&](Context& q) { swiglu_backward_device(a, q); }); }
  void embedding_forward(const EmbeddingForwardArgs& a) override {
    run([&](Context& q) { embedding_forward_device(a, q); });
  }
  // Atomic adds: repeated ids are summed in no fixed order (the CPU backend's order is fixed).
  void embedding_backward(const EmbeddingBackwardArgs& a) override {
    run([&](Context& q) { embedding_backward_device(a, q); });
  }

  void gather_rows(const GatherRowsArgs& a) override {
    if (a.count <= 0 || a.dim <= 0) return;
    run([&](Context& q) {
      gather_rows_op_kernel<<<rows_grid(a.count), rows_block(a.dim), 0, q.stream()>>>(a.src, a.starts, a.rows, a.weights,
                                                                                       a.count, a.dim, a.out);
      CUDA_CHECK_LAUNCH("gather_rows_op_kernel");
    });
  }
  void scatter_rows(const GatherRowsArgs& a) override {
    if (a.count <= 0 || a.dim <= 0) return;
    run([&](Context& q) {
      scatter_rows_op_kernel<<<rows_grid(a.count), rows_block(a.dim), 0, q.stream()>>>(a.dout, a.starts, a.rows, a.weights,
                                                                                        a.count, a.dim, a.out);
      CUDA_CHECK_LAUNCH("scatter_rows_op_kernel");
    });
  }

  // The rows with a target are picked on the host (they size the loop and the mean), so the
  // targets come down first: one wait for the thread's earlier ops, before the loss's are
  // queued. Then the loss runs on the device and only its sum comes back (a second wait).
  CrossEntropyResult cross_entropy(const CrossEntropyArgs& a) override {
    check_precision(a.precision);
    Context& q = queue(device_);
    std::vector<int32_t> targets(size_t(a.tokens > 0 ? a.tokens : 0));
    if (!targets.empty())
      CUDA_CHECK(cudaMemcpyAsync(targets.data(), a.targets, targets.size() * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                 q.stream()));
    std::vector<int32_t> row_ids(size_t(a.drows && a.row_count > 0 ? a.row_count : 0));
    if (!row_ids.empty())
      CUDA_CHECK(cudaMemcpyAsync(row_ids.data(), a.row_ids, row_ids.size() * sizeof(int32_t), cudaMemcpyDeviceToHost,
                                 q.stream()));
    q.sync();
    CrossEntropyResult r;
    {
      Context::Scope scope(q);
      r = cross_entropy_device(a, targets.data(), row_ids.data(), q);
    }
    // With no target, cross_entropy_device only queued the zeroing of dhidden: the stream may
    // not have drained, so the kept blocks go back at the next download or synchronize.
    if (r.count > 0) q.release_recycled();
    return r;
  }

  void adamw(const AdamArgs& a) override { run([&](Context& q) { adamw_device(a, q); }); }
  void adamw8bit(const Adam8bitArgs& a) override { run([&](Context& q) { adamw8bit_device(a, q); }); }

 private:
  // Runs f(queue) with the device current; what f allocates is kept by the queue for its next
  // ops when f returns (or throws).
  template <typename F>
  void run(F&& f) {
    Context& q = queue(device_);
    Context::Scope scope(q);
    f(q);
  }

  static void check_head_dim(int64_t d) {
    if (d < 1 || d > kMaxHeadDim)
      throw std::invalid_argument("attention: head_dim " + std::to_string(d) + " is not supported by the CUDA backend (1 to " +
                                  std::to_string(kMaxHeadDim) + ")");
  }

  const int device_;
  std::mutex mutex_;
  std::unordered_map<void*, size_t> granted_;  // block -> the size the pool granted (pool_release needs it)
};

}  // namespace
}  // namespace ernie::cuda

namespace ernie {

// One backend per device, made on first use and kept for the process (never destroyed: worker
// threads may still hold queues on it while the process exits).
Backend& cuda_backend(int index) {
  using cuda::CudaError;
  if (index < 0 || index >= cuda::kMaxDevices)
    throw std::out_of_range("CUDA device " + std::to_string(index) + " does not exist");
  static std::mutex mutex;
  static cuda::CudaBackend* backends[cuda::kMaxDevices] = {};
  std::lock_guard<std::mutex> lock(mutex);
  if (backends[index]) return *backends[index];
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    cudaGetLastError();
    throw CudaError(std::string("the CUDA backend has no device: cudaGetDeviceCount: ") + cudaGetErrorString(err) + " (" +
                    cudaGetErrorName(err) + ")");
  }
  if (count == 0) throw CudaError("the CUDA backend has no device: cudaGetDeviceCount found no CUDA device");
  if (index >= count)
    throw std::out_of_range("CUDA device " + std::to_string(index) + " does not exist (" + std::to_string(count) +
                            " device" + (count == 1 ? "" : "s") + ")");
  cudaDeviceProp props;
  CUDA_CHECK(cudaGetDeviceProperties(&props, index));
  if (props.major < 8)
    throw CudaError("CUDA device " + std::to_string(index) + " (" + props.name + ") has compute capability " +
                    std::to_string(props.major) + "." + std::to_string(props.minor) +
                    "; the CUDA backend needs 8.0 or later (bf16 mma.sync, ldmatrix, cp.async)");
  backends[index] = new cuda::CudaBackend(index);
  return *backends[index];
}

}  // namespace ernie
