// Activation memory for a model's calls. A training step of the 0.3B model takes about a gigabyte
// of activations; allocated anew at every step, that memory is zero-filled by the allocator (or
// page-faulted in by the kernel) on one thread while the pool waits. A Workspace hands out
// uninitialised buffers from blocks it keeps between calls, and a model keeps a pool of them
// (one per call in flight), freed with the model.
//
// Rule for its users: every buffer taken from a workspace is written before it is read.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <new>
#include <vector>

namespace ernie::engine {

// A buffer of floats from a Workspace (valid until the workspace is reset).
struct Buf {
  float* ptr = nullptr;
  int64_t count = 0;
  float* data() const { return ptr; }
  int64_t size() const { return count; }
};

class Workspace {
 public:
  // n floats, 64-byte aligned, uninitialised.
  Buf take(int64_t n) {
    const size_t bytes = (size_t(n > 0 ? n : 1) * sizeof(float) + 63) / 64 * 64;
    if (blocks_.empty() || blocks_.back().used + bytes > blocks_.back().size) grow(bytes);
    Block& b = blocks_.back();
    float* p = reinterpret_cast<float*>(b.data.get() + b.used);
    b.used += bytes;
    used_ += bytes;
    return Buf{p, n};
  }

  // Makes all memory reusable for the next call. A call that needed several blocks leaves one
  // block of what it used, so the next one takes it whole; one that used under a quarter of the
  // block (a prediction after training, say) shrinks it to twice its use.
  void reset() {
    size_t capacity = 0;
    for (const Block& b : blocks_) capacity += b.size;
    const size_t want = blocks_.size() > 1 ? used_ : (used_ * 4 < capacity ? used_ * 2 : 0);
    if (want > 0) {
      blocks_.clear();
      blocks_.push_back(Block(want));
    }
    for (Block& b : blocks_) b.used = 0;
    used_ = 0;
  }

 private:
  struct Free {
    void operator()(char* p) const { ::operator delete[](p, std::align_val_t(64)); }
  };
  struct Block {
    explicit Block(size_t bytes) : data(static_cast<char*>(::operator new[](bytes, std::align_val_t(64)))), size(bytes) {}
    std::unique_ptr<char[], Free> data;
    size_t size = 0, used = 0;
  };
  void grow(size_t bytes) {
    const size_t last = blocks_.empty() ? 0 : blocks_.back().size;
    blocks_.push_back(Block(bytes > 2 * last ? bytes : 2 * last));
  }
  std::vector<Block> blocks_;
  size_t used_ = 0;
};

// A model's workspaces: a call leases one (a new one when every one is in use, as when predict
// runs one batch per core) and returns it, reset, when it ends.
class WorkspacePool {
 public:
  class Lease {
   public:
    Lease(WorkspacePool* pool, std::unique_ptr<Workspace> ws) : pool_(pool), ws_(std::move(ws)) {}
    Lease(Lease&&) = default;
    ~Lease() {
      if (!ws_) return;
      ws_->reset();
      std::lock_guard<std::mutex> lock(pool_->mutex_);
      pool_->idle_.push_back(std::move(ws_));
    }
    Workspace& operator*() const { return *ws_; }

   private:
    WorkspacePool* pool_;
    std::unique_ptr<Workspace> ws_;
  };

  Lease acquire() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (idle_.empty()) return Lease(this, std::make_unique<Workspace>());
    std::unique_ptr<Workspace> ws = std::move(idle_.back());
    idle_.pop_back();
    return Lease(this, std::move(ws));
  }

 private:
  std::mutex mutex_;
  std::vector<std::unique_ptr<Workspace>> idle_;
};

}  // namespace ernie::engine
