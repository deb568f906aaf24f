// Activation memory for a model's calls, in its backend's memory (backend/backend.h). A training step of the 0.3B model takes about a gigabyte
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

#include "backend/backend.h"

namespace ernie::engine {

// A buffer of T from a Workspace (valid until the workspace is reset).
template <typename T>
struct BufOf {
  T* ptr = nullptr;
  int64_t count = 0;
  T* data() const { return ptr; }
  int64_t size() const { return count; }
};
using Buf = BufOf<float>;

class Workspace {
 public:
  explicit Workspace(Backend& be) : be_(be) {}
  Backend& backend() const { return be_; }

  // n floats, 64-byte aligned, uninitialised.
  Buf take(int64_t n) { return take_of<float>(n); }
  template <typename T>
  BufOf<T> take_of(int64_t n) {
    const size_t bytes = (size_t(n > 0 ? n : 1) * sizeof(T) + 63) / 64 * 64;
    if (blocks_.empty() || blocks_.back().used + bytes > blocks_.back().size) grow(bytes);
    Block& b = blocks_.back();
    T* p = reinterpret_cast<T*>(static_cast<char*>(b.memory.data()) + b.used);
    b.used += bytes;
    used_ += bytes;
    return BufOf<T>{p, n};
  }
  // A copy of host data [n] in the workspace.
  template <typename T>
  BufOf<T> put(const T* host, int64_t n) {
    BufOf<T> b = take_of<T>(n);
    if (n > 0) be_.upload(b.data(), host, sizeof(T) * size_t(n));
    return b;
  }
  template <typename T>
  BufOf<T> put(const std::vector<T>& host) { return put(host.data(), int64_t(host.size())); }

  // Makes all memory reusable for the next call. A call that needed several blocks leaves one
  // block of what it used, so the next one takes it whole; one that used under a quarter of the
  // block (a prediction after training, say) shrinks it to twice its use.
  void reset() {
    size_t capacity = 0;
    for (const Block& b : blocks_) capacity += b.size;
    const size_t want = blocks_.size() > 1 ? used_ : (used_ * 4 < capacity ? used_ * 2 : 0);
    if (want > 0) {
      blocks_.clear();
      blocks_.push_back(Block(be_, want));
    }
    for (Block& b : blocks_) b.used = 0;
    used_ = 0;
  }

 private:
  struct Block {
    Block(Backend& be, size_t bytes) : memory(be, bytes), size(bytes) {}
    Buffer memory;
    size_t size = 0, used = 0;
  };
  void grow(size_t bytes) {
    const size_t last = blocks_.empty() ? 0 : blocks_.back().size;
    blocks_.push_back(Block(be_, bytes > 2 * last ? bytes : 2 * last));
  }
  Backend& be_;
  std::vector<Block> blocks_;
  size_t used_ = 0;
};

// A model's workspaces, on its backend: a call leases one (a new one when every one is in use, as when predict
// runs one batch per core) and returns it, reset, when it ends.
class WorkspacePool {
 public:
  class Lease {
   public:
    Lease(WorkspacePool* pool, std::unique_ptr<Workspace> ws) : pool_(pool), ws_(std::move(ws)) {}
    Lease(Lease&&) = default;
    ~Lease() {
      if (!ws_) return;
      // A call that threw may have left work queued on a device: let it drain before another
      // call (maybe on another thread) reuses the memory. Its error was already reported.
      try {
        ws_->backend().synchronize();
      } catch (...) {
      }
      ws_->reset();
      std::lock_guard<std::mutex> lock(pool_->mutex_);
      pool_->idle_.push_back(std::move(ws_));
    }
    Workspace& operator*() const { return *ws_; }

   private:
    WorkspacePool* pool_;
    std::unique_ptr<Workspace> ws_;
  };

  explicit WorkspacePool(Backend& be) : be_(be) {}
  Backend& backend() const { return be_; }

  Lease acquire() {
    std::lock_guard<std::mutex> lock(mutex_);
    if (idle_.empty()) return Lease(this, std::make_unique<Workspace>(be_));
    std::unique_ptr<Workspace> ws = std::move(idle_.back());
    idle_.pop_back();
    return Lease(this, std::move(ws));
  }

 private:
  Backend& be_;
  std::mutex mutex_;
  std::vector<std::unique_ptr<Workspace>> idle_;
};

}  // namespace ernie::engine
