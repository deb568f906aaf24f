// The engine's thread pool: one thread per physical core (ERNIE_NUM_THREADS overrides), the
// calling thread counted as thread 0. A parallel region splits [0, n) into one contiguous range
// per thread. Regions from concurrent callers (two AsyncWorkers) take turns; a region started
// from inside a region, or inside run_on_this_thread, runs serially on the calling thread.
#pragma once
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

namespace ernie::cpu {

using RangeFn = std::function<void(int64_t begin, int64_t end, int thread)>;

class ThreadPool {
 public:
  static ThreadPool& instance();

  int num_threads() const { return num_threads_; }
  // Stops and restarts the workers; waits for any running region first.
  void resize(int num_threads);
  // fn(begin, end, thread) on contiguous parts of [0, n); returns when all are done.
  // An exception thrown by a part is rethrown here after every part has finished.
  void parallel_for(int64_t n, const RangeFn& fn);

  ~ThreadPool();

 private:
  explicit ThreadPool(int num_threads);
  void start(int num_threads);
  void stop();
  // `seen`: the generation at start; regions up to it are not this worker's to run.
  void worker_loop(int thread, uint64_t seen);
  void run_part(int thread);

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex region_mutex_;  // one region at a time

  // The current region, published by bumping generation_.
  std::mutex mutex_;
  std::condition_variable wake_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stopping_{false};
  const RangeFn* job_ = nullptr;
  int64_t job_n_ = 0;
  std::mutex error_mutex_;
  std::exception_ptr error_;

};

// Scratch memory of the calling thread, 64-byte aligned, valid until its next call on this
// thread. It belongs to the innermost region: code that holds scratch must not start a region.
void* thread_scratch(size_t bytes);

// Runs fn on the calling thread alone: parallel regions inside it run there, serially, without
// the pool. Two such calls on two threads keep two cores busy with none of a shared region's
// hand-offs (batched inference does this, one batch per core).
void run_on_this_thread(const std::function<void()>& fn);

// Physical cores available to this process (CPU affinity and SMT siblings taken into account).
int physical_core_count();

inline void parallel_for(int64_t n, const RangeFn& fn) { ThreadPool::instance().parallel_for(n, fn); }

}  // namespace ernie::cpu
