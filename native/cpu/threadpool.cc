#include "cpu/threadpool.h"

#include <sched.h>

#include <cstdlib>
#include <fstream>
#include <set>
#include <string>
#include <utility>

namespace ernie::cpu {
namespace {

thread_local bool t_in_region = false;
thread_local int t_thread = 0;  // this thread's index in the region it runs a part of

int read_int_file(const std::string& path, int fallback) {
  std::ifstream f(path);
  int v;
  return (f >> v) ? v : fallback;
}

int default_thread_count() {
  if (const char* env = std::getenv("ERNIE_NUM_THREADS")) {
    int n = std::atoi(env);
    if (n > 0) return n;
  }
  return physical_core_count();
}

}  // namespace

int physical_core_count() {
  int logical = static_cast<int>(std::thread::hardware_concurrency());
#if defined(__linux__)
  cpu_set_t set;
  if (sched_getaffinity(0, sizeof(set), &set) == 0) {
    std::set<std::pair<int, int>> cores;  // (package, core) of each CPU we may run on
    int allowed = 0;
    for (int cpu = 0; cpu < CPU_SETSIZE; ++cpu) {
      if (!CPU_ISSET(cpu, &set)) continue;
      ++allowed;
      std::string base = "/sys/devices/system/cpu/cpu" + std::to_string(cpu) + "/topology/";
      cores.emplace(read_int_file(base + "physical_package_id", 0), read_int_file(base + "core_id", cpu));
    }
    if (!cores.empty()) return static_cast<int>(cores.size());
    if (allowed > 0) return allowed;
  }
#endif
  return logical > 0 ? logical : 1;
}

ThreadPool& ThreadPool::instance() {
  static ThreadPool pool(default_thread_count());
  return pool;
}

ThreadPool::ThreadPool(int num_threads) { start(num_threads); }

ThreadPool::~ThreadPool() { stop(); }

void ThreadPool::start(int num_threads) {
  num_threads_ = num_threads < 1 ? 1 : num_threads;
  stopping_ = false;
  // Workers start from the current generation: after resize() it is past 0, and a new worker
  // starting from 0 would run a finished region again (with job_ already null).
  const uint64_t generation = generation_.load(std::memory_order_acquire);
  for (int t = 1; t < num_threads_; ++t) workers_.emplace_back([this, t, generation] { worker_loop(t, generation); });
}

void ThreadPool::stop() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
  }
  wake_.notify_all();
  for (auto& w : workers_) w.join();
  workers_.clear();
}

void ThreadPool::resize(int num_threads) {
  std::lock_guard<std::mutex> region(region_mutex_);
  stop();
  start(num_threads);
}

void* thread_scratch(size_t bytes) {
  thread_local std::unique_ptr<unsigned char[]> data;
  thread_local size_t size = 0;
  if (size < bytes) {
    data.reset(new unsigned char[bytes + 64]);
    size = bytes;
  }
  auto p = reinterpret_cast<uintptr_t>(data.get());
  return reinterpret_cast<void*>((p + 63) & ~uintptr_t(63));
}

void run_on_this_thread(const std::function<void()>& fn) {
  struct Restore {
    bool in_region;
    int thread;
    ~Restore() {
      t_in_region = in_region;
      t_thread = thread;
    }
  } restore{t_in_region, t_thread};
  t_in_region = true;
  t_thread = 0;
  fn();
}

void ThreadPool::run_part(int thread) {
  const int64_t n = job_n_, T = num_threads_;
  const int64_t begin = n * thread / T, end = n * (thread + 1) / T;
  if (begin >= end) return;
  t_in_region = true;
  t_thread = thread;
  try {
    (*job_)(begin, end, thread);
  } catch (...) {
    std::lock_guard<std::mutex> lock(error_mutex_);
    if (!error_) error_ = std::current_exception();
  }
  t_in_region = false;
}

void ThreadPool::worker_loop(int thread, uint64_t seen) {
  for (;;) {
    // Spin briefly: GEMMs issue regions back to back, and a sleeping worker costs ~50 us to wake.
    for (int spin = 0; spin < 20000 && generation_.load(std::memory_order_acquire) == seen && !stopping_; ++spin) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    }
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [&] { return stopping_ || generation_.load(std::memory_order_acquire) != seen; });
      if (stopping_) return;
    }
    seen = generation_.load(std::memory_order_acquire);
    run_part(thread);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::parallel_for(int64_t n, const RangeFn& fn) {
  if (n <= 0) return;
  if (t_in_region) {  // nested: run here, as the thread this part already is
    fn(0, n, t_thread);
    return;
  }
  std::lock_guard<std::mutex> region(region_mutex_);
  if (num_threads_ == 1 || n == 1) {
    t_in_region = true;
    t_thread = 0;
    try {
      fn(0, n, 0);
    } catch (...) {
      t_in_region = false;
      throw;
    }
    t_in_region = false;
    return;
  }
  error_ = nullptr;
  job_ = &fn;
  job_n_ = n;
  pending_.store(num_threads_ - 1, std::memory_order_release);
  {
    std::lock_guard<std::mutex> lock(mutex_);
    generation_.fetch_add(1, std::memory_order_acq_rel);
  }
  wake_.notify_all();
  run_part(0);
  // Wait for the other parts; after a short spin, yield, so that a worker the OS has put off
  // (another process on its core) gets the CPU sooner than a spinning caller would let it.
  for (int spin = 0; pending_.load(std::memory_order_acquire) != 0; ++spin) {
    if (spin < 4000) {
#if defined(__x86_64__)
      __builtin_ia32_pause();
#endif
    } else {
      std::this_thread::yield();
    }
  }
  job_ = nullptr;
  if (error_) std::rethrow_exception(error_);
}

}  // namespace ernie::cpu
