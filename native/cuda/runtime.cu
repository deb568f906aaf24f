// Device discovery, the error path, the caching memory pool, the stream pool and Context.
#include <algorithm>
#include <atomic>
#include <map>
#include <mutex>
#include <string>

#include "cuda/device.cuh"

namespace ernie::cuda {

void throw_cuda_error(cudaError_t err, const char* call, const char* file, int line) {
  // The file as the build passed it, from native/ on, so messages do not carry build paths.
  const char* shown = std::strstr(file, "native/");
  throw CudaError(std::string(call) + " failed at " + (shown ? shown : file) + ":" + std::to_string(line) + ": " +
                  cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")");
}

namespace {

std::atomic<int> g_device{0};

constexpr int kMaxDevices = 64;

// Blocks up to 1 MiB are rounded to 512 bytes, larger ones to 2 MiB: the large sizes a model
// asks for repeat, and a coarse grain lets neighbouring sizes share a block.
size_t rounded(size_t bytes) {
  if (bytes == 0) bytes = 1;
  return bytes <= (size_t(1) << 20) ? round_up(int64_t(bytes), 512) : round_up(int64_t(bytes), int64_t(2) << 20);
}

struct DevicePool {
  std::multimap<size_t, void*> free_blocks;  // size -> block
  uint64_t in_use = 0, cached = 0;
  std::vector<cudaStream_t> streams;
};

std::mutex g_pool_mutex;
DevicePool g_pools[kMaxDevices];

DevicePool& pool_of(int device) {
  if (device < 0 || device >= kMaxDevices) throw CudaError("device index " + std::to_string(device) + " out of range");
  return g_pools[device];
}

// Frees every cached block of a device (the caller holds the mutex and has made it current).
void free_cached(DevicePool& p) {
  for (auto& [size, ptr] : p.free_blocks) cudaFree(ptr);  // best effort: the blocks are idle
  p.free_blocks.clear();
  p.cached = 0;
}

}  // namespace

void* pool_allocate(int device, size_t bytes, size_t* granted) {
  const size_t want = rounded(bytes);
  {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    DevicePool& p = pool_of(device);
    auto it = p.free_blocks.lower_bound(want);
    if (it != p.free_blocks.end() && it->first <= 2 * want) {
      void* ptr = it->second;
      *granted = it->first;
      p.cached -= it->first;
      p.in_use += it->first;
      p.free_blocks.erase(it);
      return ptr;
    }
  }
  void* ptr = nullptr;
  cudaError_t err = cudaMalloc(&ptr, want);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear it, give the cache back, and try once more
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    free_cached(pool_of(device));
    err = cudaMalloc(&ptr, want);
  }
  if (err != cudaSuccess)
    throw_cuda_error(err, ("cudaMalloc(" + std::to_string(want) + " bytes)").c_str(), __FILE__, __LINE__);
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  pool_of(device).in_use += want;
  *granted = want;
  return ptr;
}

void pool_release(int device, void* ptr, size_t bytes) {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  DevicePool& p = pool_of(device);
  p.in_use -= bytes;
  p.cached += bytes;
  p.free_blocks.emplace(bytes, ptr);
}

void pool_discard(int device, void* ptr, size_t bytes) {
  cudaFree(ptr);  // may fail on a broken context; there is nothing better to do with it
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  pool_of(device).in_use -= bytes;
}

PoolStats pool_stats() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  PoolStats s;
  for (const DevicePool& p : g_pools) {
    s.in_use += p.in_use;
    s.cached += p.cached;
  }
  return s;
}

void trim_pool() {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  int current = 0;
  if (cudaGetDevice(&current) != cudaSuccess) return;
  for (int d = 0; d < kMaxDevices; ++d) {
    if (g_pools[d].free_blocks.empty()) continue;
    if (cudaSetDevice(d) != cudaSuccess) continue;
    free_cached(g_pools[d]);
  }
  cudaSetDevice(current);
}

cudaStream_t stream_acquire(int device) {
  {
    std::lock_guard<std::mutex> lock(g_pool_mutex);
    DevicePool& p = pool_of(device);
    if (!p.streams.empty()) {
      cudaStream_t s = p.streams.back();
      p.streams.pop_back();
      return s;
    }
  }
  cudaStream_t s = nullptr;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  return s;
}

void stream_release(int device, cudaStream_t s) {
  std::lock_guard<std::mutex> lock(g_pool_mutex);
  pool_of(device).streams.push_back(s);
}

Context::Context() : Context(g_device.load()) {}

Context::Context(int device) : device_(device) {
  CUDA_CHECK(cudaSetDevice(device_));
  stream_ = stream_acquire(device_);
}

Context::~Context() {
  // Wait for the stream before any buffer goes back: a job that threw half-way may still have
  // kernels and copies in flight. If the stream reports an error the device may be unusable:
  // its memory is freed rather than cached, and the stream is dropped.
  const bool healthy = cudaStreamSynchronize(stream_) == cudaSuccess;
  for (auto* list : {&blocks_, &recycled_})
    for (auto& [ptr, bytes] : *list) {
      if (healthy) pool_release(device_, ptr, bytes);
      else pool_discard(device_, ptr, bytes);
    }
  if (healthy) stream_release(device_, stream_);
  else cudaStreamDestroy(stream_);
  cudaGetLastError();  // leave no error behind for the next job on this thread
}

const cudaDeviceProp& Context::props() const {
  static cudaDeviceProp props[kMaxDevices];
  static std::once_flag once[kMaxDevices];
  std::call_once(once[device_], [this] { CUDA_CHECK(cudaGetDeviceProperties(&props[device_], device_)); });
  return props[device_];
}

void* Context::alloc_bytes(size_t bytes) {
  // The smallest recycled block that fits within 2x, else one from the pool.
  size_t best = recycled_.size();
  for (size_t i = 0; i < recycled_.size(); ++i)
    if (recycled_[i].second >= bytes && recycled_[i].second <= 2 * std::max<size_t>(bytes, 512) &&
        (best == recycled_.size() || recycled_[i].second < recycled_[best].second))
      best = i;
  if (best < recycled_.size()) {
    blocks_.push_back(recycled_[best]);
    recycled_.erase(recycled_.begin() + std::ptrdiff_t(best));
    return blocks_.back().first;
  }
  size_t granted = 0;
  void* p = pool_allocate(device_, bytes, &granted);
  blocks_.emplace_back(p, granted);
  return p;
}

void Context::recycle_from(size_t mark) {
  while (blocks_.size() > mark) {
    recycled_.push_back(blocks_.back());
    blocks_.pop_back();
  }
}

void Context::sync() { CUDA_CHECK(cudaStreamSynchronize(stream_)); }

void Context::release_recycled() {
  for (auto& [ptr, bytes] : recycled_) pool_release(device_, ptr, bytes);
  recycled_.clear();
}

Info info() {
  Info out;
  out.built = true;
  out.runtime_version = CUDART_VERSION;
  int driver = 0;
  if (cudaDriverGetVersion(&driver) == cudaSuccess) out.driver_version = driver;
  int count = 0;
  const cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess) {
    out.error = std::string("cudaGetDeviceCount: ") + cudaGetErrorString(err) + " (" + cudaGetErrorName(err) + ")";
    cudaGetLastError();
    return out;
  }
  if (count == 0) out.error = "cudaGetDeviceCount: no CUDA device";
  for (int i = 0; i < count && i < kMaxDevices; ++i) {
    cudaDeviceProp p;
    if (cudaGetDeviceProperties(&p, i) != cudaSuccess) {
      cudaGetLastError();
      continue;
    }
    DeviceInfo d;
    d.index = i;
    d.name = p.name;
    d.major = p.major;
    d.minor = p.minor;
    d.total_memory = p.totalGlobalMem;
    d.multiprocessors = p.multiProcessorCount;
    out.devices.push_back(d);
  }
  return out;
}

void set_device(int index) {
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  if (index < 0 || index >= count || index >= kMaxDevices)
    throw std::out_of_range("CUDA device " + std::to_string(index) + " does not exist (" + std::to_string(count) +
                            " device" + (count == 1 ? "" : "s") + ")");
  g_device.store(index);
}

int current_device() { return g_device.load(); }

}  // namespace ernie::cuda
