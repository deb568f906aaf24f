// ernie_check: the backends' ops and the model graph against float64 references, on every
// backend present (cpu and checked always; cuda where the build has it and a device exists),
// then, on a GPU, the CUDA kernels' benchmarks as JSON lines. No Node.js: scripts/check-gpu.sh
// builds it with CMake (-DERNIE_CHECK=ON) and runs it.
//
//   ernie_check [--fixtures DIR] [--only SECTIONS] [--backends LIST] [--no-bench] [--iterations N]
//
// Output: a header (# lines), one line per case and backend (ok / FAIL / skip), a final
// "N passed, N failed, N skipped" line, then the bench JSON lines. Exit status 1 on a failure.
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <string>

#include "check/check.h"
#include "cpu/isa.h"
#include "cpu/threadpool.h"

#if defined(ERNIE_CUDA)
#include "cuda/backend.h"
#endif

namespace ernie::check {

namespace {

std::string fmt(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2e", v);
  return buf;
}

std::string describe(const Check& c) {
  std::string s = c.what + " " + fmt(c.err) + " <= ";
  if (c.scale == 0 && c.floor == 0) return s + "0 (exact)";
  if (c.scale == 0) return s + fmt(c.floor);
  return s + "3 x " + fmt(c.scale) + " + " + fmt(c.floor);
}

void line(const char* status, const std::string& backend, const std::string& rest) {
  std::printf("%-4s %-8s %s\n", status, backend.c_str(), rest.c_str());
  std::fflush(stdout);
}

}  // namespace

void Report::result(const std::string& backend, const std::string& name, const std::vector<Check>& checks) {
  const Check* worst = nullptr;
  double worst_ratio = -1;
  std::string failures;
  for (const Check& c : checks) {
    const double b = c.bound();
    const double ratio = !(c.err == c.err) ? 1e300 : b > 0 ? c.err / b : (c.err > 0 ? 1e300 : 0);
    if (ratio > worst_ratio) worst_ratio = ratio, worst = &c;
    if (!c.ok()) failures += (failures.empty() ? "" : "; ") + describe(c);
  }
  const std::string n = " (" + std::to_string(checks.size()) + " checks)";
  if (!failures.empty()) {
    ++failed;
    line("FAIL", backend, name + ": " + failures + n);
  } else {
    ++passed;
    line("ok", backend, name + (worst ? ": worst " + describe(*worst) : "") + n);
  }
}

void Report::error(const std::string& backend, const std::string& name, const std::string& message) {
  ++failed;
  line("FAIL", backend, name + ": threw: " + message);
}

void Report::skip(const std::string& backend, const std::string& name, const std::string& reason, int cases) {
  skipped += cases;
  line("skip", backend, name + ": " + reason);
}

void Report::note(const std::string& text) {
  std::printf("# %s\n", text.c_str());
  std::fflush(stdout);
}

void for_each_target(Report& report, std::vector<Target>& targets, const std::string& name,
                     const std::function<std::vector<Check>(Target&)>& body) {
  for (Target& t : targets) {
    if (!t.be) {
      report.skip(t.name, name, "no " + t.name + " backend");
      continue;
    }
    const auto start = std::chrono::steady_clock::now();
    try {
      std::vector<Check> checks = body(t);
      t.be->synchronize();
      const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      char buf[32];
      std::snprintf(buf, sizeof buf, " [%.0f ms]", ms);
      report.result(t.name, name + buf, checks);
    } catch (const std::exception& e) {
      report.error(t.name, name, e.what());
    }
  }
}

}  // namespace ernie::check

namespace {

void usage(FILE* f) {
  std::fprintf(f,
               "usage: ernie_check [--fixtures DIR] [--only SECTIONS] [--backends LIST] [--no-bench] [--iterations N]\n"
               "  --fixtures DIR    the fixture checkpoints (default test/fixtures)\n"
               "  --only SECTIONS   comma-separated: gemm,attention,rmsnorm,rope,swiglu,embedding,cross-entropy,adamw,model\n"
               "  --backends LIST   comma-separated: cpu,checked,cuda (default all)\n"
               "  --no-bench        no benchmarks (they run on a CUDA device only)\n"
               "  --iterations N    timed runs per benchmark (default 10; the median is reported)\n");
}

}  // namespace

int main(int argc, char** argv) {
  using namespace ernie;
  using namespace ernie::check;
  Options o;
  std::string backends = "cpu,checked,cuda";
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "ernie_check: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--fixtures") o.fixtures = next();
    else if (a == "--only") o.filter = next();
    else if (a == "--backends") backends = next();
    else if (a == "--no-bench") o.bench = false;
    else if (a == "--iterations") o.bench_iterations = std::atoi(next().c_str());
    else if (a == "--help" || a == "-h") {
      usage(stdout);
      return 0;
    } else {
      std::fprintf(stderr, "ernie_check: unknown argument '%s'\n", a.c_str());
      usage(stderr);
      return 2;
    }
  }
  auto listed = [&](const char* name) { return ("," + backends + ",").find(std::string(",") + name + ",") != std::string::npos; };

  Report report;
  std::vector<Target> targets;
  std::printf("# ernie_check: CPU ISA %s, %d threads\n", cpu::isa_name(cpu::active_isa()), cpu::ThreadPool::instance().num_threads());
  if (listed("cpu")) targets.push_back(Target{"cpu", &cpu_backend(), "", false});
  if (listed("checked")) targets.push_back(Target{"checked", &checked_backend(), "", false});
  Target gpu{"cuda", nullptr, "", true};
  if (!listed("cuda")) {
    gpu.reason = "not asked for (--backends)";
  } else {
    try {
      gpu.be = &cuda_backend(0);
    } catch (const std::exception& e) {
      gpu.reason = e.what();
    }
  }
#if defined(ERNIE_CUDA)
  {
    const cuda::Info info = cuda::info();
    std::printf("# cuda: built (runtime %d, driver %d), %zu device(s)%s%s\n", info.runtime_version, info.driver_version,
                info.devices.size(), info.error.empty() ? "" : ": ", info.error.c_str());
    for (const cuda::DeviceInfo& d : info.devices)
      std::printf("#   device %d: %s, compute capability %d.%d, %.1f GiB, %d SMs\n", d.index, d.name.c_str(), d.major, d.minor,
                  double(d.total_memory) / 1073741824.0, d.multiprocessors);
  }
#else
  std::printf("# cuda: this ernie_check was built without CUDA (CMake -DERNIE_CUDA=ON builds it in)\n");
#endif
  if (gpu.be) std::printf("# backend cuda: ready\n");
  else std::printf("# backend cuda: skipped: %s\n", gpu.reason.c_str());
  targets.push_back(gpu);
  // A backend not asked for is left out of the lines altogether; a missing CUDA is a skip.
  if (!listed("cuda")) targets.pop_back();
  std::fflush(stdout);

  const auto start = std::chrono::steady_clock::now();
  run_ops(report, targets, o);
  run_models(report, targets, o);
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  if (!o.bench) report.note("bench: not run (--no-bench)");
  else if (!gpu.be) report.note("bench: not run: no CUDA backend (" + gpu.reason + ")");
  std::printf("# checks took %.1f s\n", seconds);
  std::printf("%d passed, %d failed, %d skipped\n", report.passed, report.failed, report.skipped);
  std::fflush(stdout);
  if (gpu.be) run_bench(o, gpu);
  return report.failed ? 1 : 0;
}
