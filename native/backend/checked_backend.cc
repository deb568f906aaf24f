// The checked backend: the CPU kernels behind a wall like a GPU's. Its memory is mapped
// PROT_NONE except while one of its own calls runs, so host code that reads or writes backend
// memory directly (as the engine must never do with a device's) faults at once; and every
// pointer an op is given must lie in its memory, so host memory passed to an op (a device would
// read garbage there) throws. Tests run the model graph on it to check, without a GPU, that the
// engine uploads what the ops read and downloads what it reads back. Slow: test use only
// (ERNIE_CHECKED_BACKEND=1, lib/device.ts).
#include <cstdint>
#include <cstring>
#include <map>
#include <mutex>
#include <stdexcept>
#include <string>

#if defined(__linux__) || defined(__APPLE__)
#include <sys/mman.h>
#include <unistd.h>
#define ERNIE_CHECKED_MPROTECT 1
#else  // no page protection: the pointer checks only
#define PROT_NONE 0
#define PROT_READ 1
#define PROT_WRITE 2
#endif

#include "backend/backend.h"

namespace ernie {
namespace {

class CheckedBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  bool host_memory() const override { return false; }
  const char* name() const override { return "checked"; }
  bool supports(Op op, DType dt, Precision p) const override { return inner().supports(op, dt, p); }
  Precision resolve(Precision asked, DType dt) const override { return inner().resolve(asked, dt); }
  int64_t max_head_dim() const override { return inner().max_head_dim(); }
  int64_t attention_scratch_floats(const AttentionArgs& a, bool backward) const override {
    return inner().attention_scratch_floats(a, backward);
  }

  void* alloc(size_t bytes) override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    const size_t size = round_up(bytes ? bytes : 1);
#if ERNIE_CHECKED_MPROTECT
    void* p = mmap(nullptr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
#else
    void* p = ::operator new[](size, std::align_val_t(64));
#endif
    blocks_[static_cast<char*>(p)] = size;
    return p;
  }
  void release(void* p, size_t) noexcept override {
    std::lock_guard<std::recursive_mutex> lock(mutex_);
    auto it = blocks_.find(static_cast<char*>(p));
    if (it == blocks_.end()) return;
#if ERNIE_CHECKED_MPROTECT
    munmap(p, it->second);
#else
    ::operator delete[](p, std::align_val_t(64));
#endif
    blocks_.erase(it);
  }
  void upload(void* dst, const void* host, size_t bytes) override {
    Open open(*this);
    expect(dst, bytes, "upload's destination");
    std::memcpy(dst, host, bytes);
  }
  void download(void* host, const void* src, size_t bytes) override {
    Open open(*this);
    expect(src, bytes, "download's source");
    std::memcpy(host, src, bytes);
  }
  void copy(void* dst, const void* src, size_t bytes) override {
    Open open(*this);
    expect(dst, bytes, "copy's destination");
    expect(src, bytes, "copy's source");
    std::memmove(dst, src, bytes);
  }
  void zero(void* dst, size_t bytes) override {
    Open open(*this);
    expect(dst, bytes, "zero's destination");
    std::memset(dst, 0, bytes);
  }
  void synchronize() override {}

  void gemm(const GemmArgs& a) override {
    Open open(*this);
    for (const GemmSegment& s : a.segments) {
      expect(s.a.data, size_t(a.m * s.k * dtype_size(s.a.dtype)), "gemm segment A");
      expect(s.b.data, size_t(a.n * s.k * dtype_size(s.b.dtype)), "gemm segment B");
    }
    expect(a.c, 4 * size_t(a.m > 0 ? (a.m - 1) * a.ldc + a.n : 0), "gemm C");
    inner().gemm(a);
  }
  void attention_forward(const AttentionArgs& a) override {
    Open open(*this);
    attention_common(a);
    inner().attention_forward(a);
  }
  void attention_backward(const AttentionArgs& a) override {
    Open open(*this);
    attention_common(a);
    expect(a.dout, 1, "attention dout");
    expect(a.dq, 1, "attention dq");
    expect(a.dk, 1, "attention dk");
    expect(a.dv, 1, "attention dv");
    inner().attention_backward(a);
  }
  void lora_forward(const LoraForwardArgs& a) override {
    Open open(*this);
    linear_common(a.shape, a.x, a.w, a.lora);
    expect(a.u, 4 * size_t(a.shape.m * a.lora.r), "LoRA u");
    expect(a.y, 4 * size_t(a.shape.m * a.shape.n), "LoRA y");
    inner().lora_forward(a);
  }
  void lora_backward(const LoraBackwardArgs& a) override {
    Open open(*this);
    linear_common(a.shape, a.x, a.w, a.lora);
    expect(a.u, 4 * size_t(a.shape.m * a.lora.r), "LoRA u");
    expect(a.dy, 4 * size_t(a.shape.m * a.shape.n), "LoRA dy");
    if (a.dx) expect(a.dx, 4 * size_t(a.shape.m * a.shape.k), "LoRA dx");
    expect(a.da, 4 * size_t(a.lora.r * a.shape.k), "LoRA dA");
    expect(a.db, 4 * size_t(a.shape.n * a.lora.r), "LoRA dB");
    inner().lora_backward(a);
  }
  void rmsnorm_forward(const RmsNormForwardArgs& a) override {
    Open open(*this);
    expect(a.x, 4 * size_t(a.rows * a.dim), "rmsnorm x");
    expect(a.weight, size_t(a.dim * dtype_size(a.weight_dtype)), "rmsnorm weight");
    expect(a.out, 4 * size_t(a.rows * a.dim), "rmsnorm out");
    maybe(a.rstd, "rmsnorm rstd");
    inner().rmsnorm_forward(a);
  }
  void rmsnorm_backward(const RmsNormBackwardArgs& a) override {
    Open open(*this);
    expect(a.dout, 4 * size_t(a.rows * a.dim), "rmsnorm dout");
    expect(a.x, 4 * size_t(a.rows * a.dim), "rmsnorm x");
    expect(a.weight, size_t(a.dim * dtype_size(a.weight_dtype)), "rmsnorm weight");
    expect(a.rstd, 4 * size_t(a.rows), "rmsnorm rstd");
    expect(a.dx, 4 * size_t(a.rows * a.dim), "rmsnorm dx");
    maybe(a.dweight, "rmsnorm dweight");
    inner().rmsnorm_backward(a);
  }
  void rope(const RopeArgs& a) override {
    Open open(*this);
    expect(a.x, 4 * size_t(a.rows * a.heads * a.head_dim), "rope x");
    expect(a.out, 4 * size_t(a.rows * a.heads * a.head_dim), "rope out");
    expect(a.positions, 4 * size_t(a.rows), "rope positions");
    inner().rope(a);
  }
  void swiglu_forward(const SwigluForwardArgs& a) override {
    Open open(*this);
    expect(a.gate, 4 * size_t(a.rows * a.dim), "swiglu gate");
    expect(a.up, 4 * size_t(a.rows * a.dim), "swiglu up");
    expect(a.out, 4 * size_t(a.rows * a.dim), "swiglu out");
    inner().swiglu_forward(a);
  }
  void swiglu_backward(const SwigluBackwardArgs& a) override {
    Open open(*this);
    expect(a.dout, 4 * size_t(a.rows * a.dim), "swiglu dout");
    expect(a.gate, 4 * size_t(a.rows * a.dim), "swiglu gate");
    expect(a.up, 4 * size_t(a.rows * a.dim), "swiglu up");
    expect(a.dgate, 4 * size_t(a.rows * a.dim), "swiglu dgate");
    expect(a.dup, 4 * size_t(a.rows * a.dim), "swiglu dup");
    inner().swiglu_backward(a);
  }
  void embedding_forward(const EmbeddingForwardArgs& a) override {
    Open open(*this);
    expect(a.ids, 4 * size_t(a.n), "embedding ids");
    expect(a.table, a.n > 0 ? 1 : 0, "embedding table");
    expect(a.out, 4 * size_t(a.n * a.dim), "embedding out");
    inner().embedding_forward(a);
  }
  void embedding_backward(const EmbeddingBackwardArgs& a) override {
    Open open(*this);
    expect(a.ids, 4 * size_t(a.n), "embedding ids");
    expect(a.dout, 4 * size_t(a.n * a.dim), "embedding dout");
    expect(a.dtable, a.n > 0 ? 1 : 0, "embedding dtable");
    inner().embedding_backward(a);
  }
  void gather_rows(const GatherRowsArgs& a) override {
    Open open(*this);
    rows_common(a);
    expect(a.out, 4 * size_t(a.count * a.dim), "gather out");
    inner().gather_rows(a);
  }
  void scatter_rows(const GatherRowsArgs& a) override {
    Open open(*this);
    rows_common(a);
    expect(a.dout, 4 * size_t(a.count * a.dim), "scatter dout");
    expect(a.out, 1, "scatter out");
    inner().scatter_rows(a);
  }
  CrossEntropyResult cross_entropy(const CrossEntropyArgs& a) override {
    Open open(*this);
    expect(a.hidden, 4 * size_t(a.tokens * a.hidden_size), "cross-entropy hidden");
    expect(a.weight, size_t(a.vocab * a.hidden_size * dtype_size(a.weight_dtype)), "cross-entropy weight");
    expect(a.targets, 4 * size_t(a.tokens), "cross-entropy targets");
    maybe(a.dhidden, "cross-entropy dhidden");
    maybe(a.dweight, "cross-entropy dweight");
    if (a.drows) {
      expect(a.row_ids, 4 * size_t(a.row_count), "cross-entropy row ids");
      expect(a.drows, 4 * size_t(a.row_count * a.hidden_size), "cross-entropy drows");
    }
    return inner().cross_entropy(a);
  }
  void adamw(const AdamArgs& a) override {
    Open open(*this);
    expect(a.params, 4 * size_t(a.n), "adamw params");
    expect(a.grads, 4 * size_t(a.n), "adamw grads");
    expect(a.m, 4 * size_t(a.n), "adamw m");
    expect(a.v, 4 * size_t(a.n), "adamw v");
    maybe(a.params_bf16, "adamw params_bf16");
    inner().adamw(a);
  }
  void adamw8bit(const Adam8bitArgs& a) override {
    Open open(*this);
    expect(a.params, 4 * size_t(a.n), "adamw8bit params");
    expect(a.grads, 4 * size_t(a.n), "adamw8bit grads");
    expect(a.m_codes, size_t(a.n), "adamw8bit m");
    expect(a.v_codes, size_t(a.n), "adamw8bit v");
    inner().adamw8bit(a);
  }

 private:
  static Backend& inner() { return cpu_backend(); }
  static size_t round_up(size_t bytes) {
#if ERNIE_CHECKED_MPROTECT
    const size_t page = size_t(sysconf(_SC_PAGESIZE));
#else
    const size_t page = 64;
#endif
    return (bytes + page - 1) / page * page;
  }

  // While it lives, the backend's memory is readable and writable; one call at a time.
  class Open {
   public:
    explicit Open(CheckedBackend& be) : be_(be), lock_(be.mutex_) {
      if (be_.open_++ == 0) be_.protect(PROT_READ | PROT_WRITE);
    }
    ~Open() {
      if (--be_.open_ == 0) be_.protect(PROT_NONE);
    }

   private:
    CheckedBackend& be_;
    std::lock_guard<std::recursive_mutex> lock_;
  };

  void protect(int prot) {
#if ERNIE_CHECKED_MPROTECT
    for (auto& [p, size] : blocks_)
      if (mprotect(p, size, prot) != 0) throw std::runtime_error("checked backend: mprotect failed");
#else
    (void)prot;
#endif
  }

  // Throws unless [p, p + bytes) lies inside one of the backend's blocks.
  void expect(const void* p, size_t bytes, const char* what) const {
    if (bytes == 0) return;  // an empty array (which may come as a null pointer)
    const char* c = static_cast<const char*>(p);
    auto it = blocks_.upper_bound(const_cast<char*>(c));
    if (p && it != blocks_.begin()) {
      --it;
      if (c >= it->first && c + bytes <= it->first + it->second) return;
    }
    throw std::logic_error(std::string("checked backend: ") + what + " is not the backend's memory" +
                           (p ? "" : " (null)"));
  }
  void maybe(const void* p, const char* what) const {
    if (p) expect(p, 1, what);
  }
  void attention_common(const AttentionArgs& a) const {
    expect(a.q, 4 * size_t(a.batch * a.tq * a.heads * a.head_dim), "attention q");
    expect(a.k, 4 * size_t(a.batch * a.tk * a.kv_heads * a.head_dim), "attention k");
    expect(a.v, 4 * size_t(a.batch * a.tk * a.kv_heads * a.head_dim), "attention v");
    maybe(a.key_valid, "attention key_valid");
    maybe(a.key_start, "attention key_start");
    expect(a.out, 4 * size_t(a.batch * a.tq * a.heads * a.head_dim), "attention out");
    expect(a.lse, 4 * size_t(a.batch * a.heads * a.tq), "attention lse");
    if (a.scratch) expect(a.scratch, 4 * size_t(a.scratch_floats), "attention scratch");
  }
  void linear_common(const LinearShape& sh, const float* x, const MatrixRef& w, const LoraRef& lora) const {
    expect(x, 4 * size_t(sh.m * sh.k), "linear x");
    expect(w.data, size_t(sh.n * sh.k * dtype_size(w.dtype)), "linear weight");
    expect(lora.a, 4 * size_t(lora.r * sh.k), "LoRA A");
    expect(lora.b, 4 * size_t(sh.n * lora.r), "LoRA B");
  }
  void rows_common(const GatherRowsArgs& a) const {
    expect(a.src ? static_cast<const void*>(a.src) : static_cast<const void*>(a.out), a.count > 0 ? 1 : 0, "rows source");
    expect(a.starts, 4 * size_t(a.count + 1), "rows starts");
    if (a.count > 0) {
      maybe(a.rows, "rows rows");
      maybe(a.weights, "rows weights");
    }
  }

  std::recursive_mutex mutex_;
  int open_ = 0;
  std::map<char*, size_t> blocks_;
};

}  // namespace

Backend& checked_backend() {
  static CheckedBackend backend;
  return backend;
}

}  // namespace ernie
