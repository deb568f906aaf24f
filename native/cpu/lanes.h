// Lanes: one thread per core of the pool (ThreadPool::num_threads) for whole single-threaded
// jobs, such as one inference batch each. Jobs start in the order they were queued, each the
// moment a lane is free: a caller that queues a core's next batch before its current one ends
// keeps that core busy without waiting to hear back (on the JS thread, which may be busy
// answering HTTP requests) in between. Unlike libuv's worker pool, lanes are not capped at four
// threads and never run more jobs at once than there are cores.
#pragma once
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>

namespace ernie::cpu {

class Lanes {
 public:
  // Never destroyed: its threads may still be running when static destructors run at exit.
  static Lanes& instance();
  // Runs job() on a lane thread, inside run_on_this_thread (so it never takes the pool's
  // workers). job must not throw.
  void submit(std::function<void()> job);

 private:
  void work(int index);
  std::mutex mutex_;
  std::condition_variable ready_;
  std::deque<std::function<void()>> queue_;
  int started_ = 0;  // threads made so far; those at index >= wanted_ wait (the thread count went down)
  int wanted_ = 0;
};

}  // namespace ernie::cpu
