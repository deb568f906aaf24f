// The host arrays of one call (typed arrays from JS: outputs, gradients, an adapter's A and B),
// as a model's backend sees them. On the CPU they are the backend's memory already and are used
// in place; on a backend with memory of its own (a GPU, the checked backend), each is copied
// there for the call, and those the call writes are copied back by finish().
#pragma once
#include <cstddef>
#include <vector>

#include "backend/backend.h"

namespace ernie::addon {

class Mirror {
 public:
  explicit Mirror(Backend& be) : be_(be) {}

  // An array the call reads.
  template <typename T>
  T* in(const T* host, size_t count) {
    if (!host || be_.host_memory()) return const_cast<T*>(host);
    T* dev = take<T>(count);
    be_.upload(dev, host, sizeof(T) * count);
    return dev;
  }
  // A weight-like array of any element type, by its size in bytes.
  const void* in_bytes(const void* host, size_t bytes) { return in(static_cast<const char*>(host), bytes); }
  // An array the call adds to (gradients): read and written.
  template <typename T>
  T* inout(T* host, size_t count) {
    T* dev = in(host, count);
    if (dev != host) back_.push_back({host, dev, sizeof(T) * count});
    return dev;
  }
  // An op's input and its output, which may be that very array (an op running in place): the
  // output is `in` as the backend sees it then, read and written.
  template <typename T>
  void in_place_or_apart(const T* input, T* output, size_t count, const T** input_d, T** output_d) {
    if (output == input) {
      *output_d = inout(output, count);
      *input_d = *output_d;
    } else {
      *input_d = in(input, count);
      *output_d = out(output, count);
    }
  }
  // An array the call writes whole.
  template <typename T>
  T* out(T* host, size_t count) {
    if (!host || be_.host_memory()) return host;
    T* dev = take<T>(count);
    back_.push_back({host, dev, sizeof(T) * count});
    return dev;
  }
  // Copies the written arrays back to the host (and so waits for the call's work).
  void finish() {
    for (const Back& b : back_) be_.download(b.host, b.dev, b.bytes);
    back_.clear();
  }

 private:
  template <typename T>
  T* take(size_t count) {
    buffers_.emplace_back(be_, sizeof(T) * (count ? count : 1));
    return buffers_.back().template as<T>();
  }
  struct Back {
    void* host;
    const void* dev;
    size_t bytes;
  };
  Backend& be_;
  std::vector<Buffer> buffers_;
  std::vector<Back> back_;
};

}  // namespace ernie::addon
