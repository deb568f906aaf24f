#include "cpu/lanes.h"

#include <thread>
#include <utility>

#include "cpu/threadpool.h"

namespace ernie::cpu {

Lanes& Lanes::instance() {
  static Lanes* lanes = new Lanes();
  return *lanes;
}

void Lanes::submit(std::function<void()> job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    wanted_ = ThreadPool::instance().num_threads();
    for (; started_ < wanted_; ++started_) std::thread([this, index = started_] { work(index); }).detach();
    queue_.push_back(std::move(job));
  }
  ready_.notify_all();
}

void Lanes::work(int index) {
  for (;;) {
    std::function<void()> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      ready_.wait(lock, [&] { return !queue_.empty() && index < wanted_; });
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    run_on_this_thread(job);
  }
}

}  // namespace ernie::cpu
