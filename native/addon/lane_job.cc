// run_lane_job: a Job on a cpu::Lanes thread, its Promise settled on the JS thread through a
// thread-safe function. The JS thread queues a core's next batch while its current one runs;
// the lane starts it the moment it is free, whatever the JS thread is busy with then.
//
// Lifetime: the delivery object of an environment is never freed (lane threads may hold it at
// exit). When the environment is torn down, jobs not yet started are skipped and those running
// are waited for, so no lane thread writes into memory the environment has freed.
#include <condition_variable>
#include <exception>
#include <memory>
#include <mutex>
#include <string>
#include <utility>
#include <vector>

#include "addon/op.h"
#include "cpu/lanes.h"

namespace ernie::addon {
namespace {

struct LaneJob {
  std::string op;
  Job job;
  std::vector<Napi::Reference<Napi::Value>> kept;  // the arrays the job reads and writes
  std::vector<std::shared_ptr<void>> pins;          // the mapped files some of them live in
  Napi::Promise::Deferred deferred;
  std::string error;  // what job.run threw
  bool failed = false;
};

class LaneDelivery;
void deliver(Napi::Env env, Napi::Function, LaneDelivery* delivery, LaneJob* job);
using DeliveryFn = Napi::TypedThreadSafeFunction<LaneDelivery, LaneJob, deliver>;

class LaneDelivery {
 public:
  static LaneDelivery& of(Napi::Env env) {
    if (LaneDelivery* d = env.GetInstanceData<LaneDelivery>()) return *d;
    auto* d = new LaneDelivery(env);
    env.SetInstanceData<LaneDelivery, void, leave>(d, nullptr);
    return *d;
  }

  Napi::Promise submit(Napi::Env env, LaneJob* job) {
    Napi::Promise promise = job->deferred.Promise();
    if (pending_++ == 0) fn_.Ref(env);  // a job in flight keeps the process alive
    {
      std::lock_guard<std::mutex> lock(mutex_);
      ++running_;
    }
    cpu::Lanes::instance().submit([this, job] { run(job); });
    return promise;
  }

  // On the JS thread, after a job's Promise settled (or could not be: the environment is stopping).
  void settled(Napi::Env env) {
    if (--pending_ == 0) napi_unref_threadsafe_function(env, fn_);  // a failure here only means it is stopping
  }

 private:
  explicit LaneDelivery(Napi::Env env) : fn_(DeliveryFn::New(env, "ernie lane job", 0, 1, this)) {
    fn_.Unref(env);
    napi_add_env_cleanup_hook(env, close, this);
  }
  static void leave(Napi::Env, LaneDelivery*, void*) {}

  void run(LaneJob* job) {
    bool open;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      open = open_;
    }
    if (open) {
      try {
        job->job.run();
      } catch (const std::exception& e) {
        job->failed = true;
        job->error = job->op + ": " + e.what();
      } catch (...) {
        job->failed = true;
        job->error = job->op + ": unknown native error";
      }
    }
    std::lock_guard<std::mutex> lock(mutex_);
    if (open_) fn_.NonBlockingCall(job);  // else the environment is gone, and the job with it
    if (--running_ == 0) idle_.notify_all();
  }

  // Environment teardown: nothing more starts; the running jobs finish first.
  static void close(void* arg) {
    auto* self = static_cast<LaneDelivery*>(arg);
    std::unique_lock<std::mutex> lock(self->mutex_);
    self->open_ = false;
    self->idle_.wait(lock, [&] { return self->running_ == 0; });
    lock.unlock();
    self->fn_.Release();
  }

  DeliveryFn fn_;
  int64_t pending_ = 0;  // JS thread only: jobs whose Promise has not settled
  std::mutex mutex_;
  std::condition_variable idle_;
  bool open_ = true;
  int64_t running_ = 0;  // jobs submitted and not yet handed back
};

void deliver(Napi::Env env, Napi::Function, LaneDelivery* delivery, LaneJob* job) {
  if (env == nullptr) {  // teardown: the references go with the environment
    for (auto& r : job->kept) r.SuppressDestruct();
    return;
  }
  std::unique_ptr<LaneJob> owned(job);
  try {
    Napi::HandleScope scope(env);
    if (job->failed) {
      job->deferred.Reject(Napi::Error::New(env, job->error).Value());
    } else {
      try {
        job->deferred.Resolve(job->job.result ? job->job.result(env) : env.Undefined());
      } catch (const Napi::Error& e) {
        job->deferred.Reject(e.Value());
      }
    }
  } catch (...) {
    // The environment is stopping (a worker thread terminated): no JavaScript runs to take the
    // answer, and N-API calls fail. Nothing to do but let the job go.
  }
  delivery->settled(env);
}

}  // namespace

Napi::Value run_lane_job(Napi::Env env, const std::string& name, Job job, Args& args) {
  auto* lane_job = new LaneJob{name, std::move(job), std::move(args.kept()), std::move(args.pins()), Napi::Promise::Deferred::New(env), {}, false};
  return LaneDelivery::of(env).submit(env, lane_job);
}

}  // namespace ernie::addon
