// The backend seam, in the spirit of ggml's ggml-backend-impl.h: a backend owns memory its ops
// can address (alloc, upload, download), an ordered queue of work (synchronize), and one entry
// per op of the engine's op set (backend/ops.h). The engine's model graph (engine/) is written
// once against this interface and never names a backend.
//
// Backends: the CPU (always built; each op dispatched to the active ISA's kernels, cpu/) and
// CUDA (a build with ERNIE_CUDA; cuda/). Ops are queued in order on the calling thread's queue:
// on the CPU they run before the call returns; on CUDA they run on the calling thread's stream,
// and `download` (or `synchronize`) waits for them. Every call may throw std::exception (a
// CudaError names the call, file and line); the addon turns it into a rejected Promise.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

#include "backend/ops.h"

namespace ernie {

enum class Device : int { cpu = 0, cuda = 1 };

// The ops a backend may or may not have (supports()).
enum class Op : int {
  gemm,
  attention_forward,
  attention_backward,
  lora_forward,
  lora_backward,
  rmsnorm_forward,
  rmsnorm_backward,
  rope,
  swiglu_forward,
  swiglu_backward,
  embedding_forward,
  embedding_backward,
  gather_rows,
  scatter_rows,
  cross_entropy,
  adamw,
  adamw8bit,
};

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual const char* name() const = 0;  // "cpu" | "cuda" | "checked"
  // Whether host memory is this backend's memory (the CPU's): then arrays are used in place.
  virtual bool host_memory() const = 0;

  // Whether the backend runs `op` with weights of `weight_dtype` at `precision`.
  virtual bool supports(Op op, DType weight_dtype, Precision precision) const = 0;
  // The precision a call asking for `asked` runs at (never automatic), for a product with a
  // weight of `weight_dtype`.
  virtual Precision resolve(Precision asked, DType weight_dtype) const = 0;
  // The largest attention head dimension its attention kernels take.
  virtual int64_t max_head_dim() const = 0;
  // Floats of temporary memory attention_forward / _backward can take from AttentionArgs::scratch
  // for these shapes (0: it needs none, or keeps its own). A caller that runs many such calls
  // (a training step: two per layer) passes memory it reuses. Memory allocated at every call is
  // page-faulted in and zeroed afresh whenever the allocator has given it back to the system in
  // between: in one build of a 0.3B LoRA step (8 x 128), 26 MB a backward call, 120k faults a
  // step and 5-8% of its time.
  virtual int64_t attention_scratch_floats(const AttentionArgs&, bool /*backward*/) const { return 0; }

  // Weights that many calls read may be kept in a form of the backend's own for its products
  // (the CPU packs bf16 weights into vdpbf16ps's pairs on AVX512_BF16). prepares_weights says
  // whether it keeps one for products at `precision`; prepare_weight returns the logical
  // [rows, cols] operand `w` with that form attached (or `w` itself), the form owned by `owner`.
  virtual bool prepares_weights(Precision) const { return false; }
  virtual MatrixRef prepare_weight(const MatrixRef& w, int64_t /*rows*/, int64_t /*cols*/,
                                   std::shared_ptr<void>* /*owner*/) const {
    return w;
  }

  // ---- memory: bytes the ops can address. alloc'd memory is uninitialised, 64-byte aligned.
  virtual void* alloc(size_t bytes) = 0;
  virtual void release(void* p, size_t bytes) noexcept = 0;
  virtual void upload(void* dst, const void* host, size_t bytes) = 0;
  // Waits for the queued ops that write `src`.
  virtual void download(void* host, const void* src, size_t bytes) = 0;
  virtual void copy(void* dst, const void* src, size_t bytes) = 0;
  virtual void zero(void* dst, size_t bytes) = 0;
  // Waits for every op queued by this thread; a failure of one of them surfaces here.
  virtual void synchronize() = 0;

  // ---- the op set (backend/ops.h states what each computes) ----------------------------------
  virtual void gemm(const GemmArgs& a) = 0;
  virtual void attention_forward(const AttentionArgs& a) = 0;
  virtual void attention_backward(const AttentionArgs& a) = 0;
  virtual void lora_forward(const LoraForwardArgs& a) = 0;
  virtual void lora_backward(const LoraBackwardArgs& a) = 0;
  virtual void rmsnorm_forward(const RmsNormForwardArgs& a) = 0;
  virtual void rmsnorm_backward(const RmsNormBackwardArgs& a) = 0;
  virtual void rope(const RopeArgs& a) = 0;
  virtual void swiglu_forward(const SwigluForwardArgs& a) = 0;
  virtual void swiglu_backward(const SwigluBackwardArgs& a) = 0;
  virtual void embedding_forward(const EmbeddingForwardArgs& a) = 0;
  virtual void embedding_backward(const EmbeddingBackwardArgs& a) = 0;
  virtual void gather_rows(const GatherRowsArgs& a) = 0;
  virtual void scatter_rows(const GatherRowsArgs& a) = 0;
  // Returns once the loss is known (on a GPU: after a download of its sums).
  virtual CrossEntropyResult cross_entropy(const CrossEntropyArgs& a) = 0;
  virtual void adamw(const AdamArgs& a) = 0;
  virtual void adamw8bit(const Adam8bitArgs& a) = 0;
};

// The CPU backend (one for the process; thread-safe: each op splits over the thread pool).
Backend& cpu_backend();

// The CPU kernels behind a wall like a device's (backend/checked_backend.cc): for tests that
// check the engine keeps to this interface's memory rules without a GPU.
Backend& checked_backend();

// The CUDA backend on device `index`. Throws cuda::NotBuiltError in a build without CUDA, and
// std::runtime_error naming the reason when the device cannot be used.
Backend& cuda_backend(int index = 0);

const char* device_name(Device d);

// Memory of a backend, freed with its owner.
class Buffer {
 public:
  Buffer() = default;
  Buffer(Backend& be, size_t bytes) : be_(&be), bytes_(bytes), data_(bytes ? be.alloc(bytes) : nullptr) {}
  ~Buffer() { reset(); }
  Buffer(Buffer&& o) noexcept : be_(o.be_), bytes_(o.bytes_), data_(o.data_) { o.data_ = nullptr; }
  Buffer& operator=(Buffer&& o) noexcept {
    if (this != &o) {
      reset();
      be_ = o.be_;
      bytes_ = o.bytes_;
      data_ = o.data_;
      o.data_ = nullptr;
    }
    return *this;
  }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  void* data() const { return data_; }
  template <typename T>
  T* as() const { return static_cast<T*>(data_); }
  size_t bytes() const { return bytes_; }
  void reset() {
    if (data_) be_->release(data_, bytes_);
    data_ = nullptr;
  }

 private:
  Backend* be_ = nullptr;
  size_t bytes_ = 0;
  void* data_ = nullptr;
};

}  // namespace ernie
