// The N-API boundary. Every native operation is registered once, with a parser that checks
// its arguments on the JS thread and returns a Job; the module then exports it twice:
//   name(args)      -> Promise, the Job running on a libuv worker thread (AsyncWorker)
//   nameSync(args)  -> the result, run on the calling thread (tests and tiny inputs only)
// Arguments come as one options object, so errors can name the field at fault. Bad arguments
// throw TypeError (wrong type) or RangeError (wrong length, shape or value) with a `code`.
#pragma once
#include <napi.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "backend/backend.h"
#include "cpu/precision.h"
#include "cpu/tensor.h"

namespace ernie::addon {

struct Job {
  std::function<void()> run;                        // the heavy part; may throw std::exception
  std::function<Napi::Value(Napi::Env)> result;     // on the JS thread afterwards; empty: undefined
};

// A typed array argument: Float32Array (f32), Uint16Array (bf16 bits), Int32Array, Float64Array or Uint8Array.
struct ArrayArg {
  void* data = nullptr;
  size_t length = 0;
  napi_typedarray_type type = napi_float32_array;
  DType dtype() const { return type == napi_uint16_array ? DType::bf16 : DType::f32; }
  float* f32() const { return static_cast<float*>(data); }
  int32_t* i32() const { return static_cast<int32_t*>(data); }
  double* f64() const { return static_cast<double*>(data); }
  uint16_t* u16() const { return static_cast<uint16_t*>(data); }
  uint8_t* u8() const { return static_cast<uint8_t*>(data); }
};

[[noreturn]] void throw_type_error(Napi::Env env, const std::string& msg);
[[noreturn]] void throw_range_error(Napi::Env env, const std::string& msg);

// Reads the fields of an op's options object, prefixing errors with the op's name, and keeps
// every typed array it hands out alive until the Job is done.
class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* op);
  // The objects of an array field, e.g. gemm's `segments`: errors then name "segments[1].k".
  std::vector<Args> objects(const char* key, size_t min_count, size_t max_count);
  // A nested object field: errors then name "dims.heads".
  Args object(const char* key);
  // The raw value of a field, for ops that take native objects (a Model, an Adapter).
  Napi::Value value(const char* key) const { return field(key); }
  // Keeps any JS value alive until the Job is done (e.g. the object whose method runs).
  void keep(Napi::Value v) { kept_->push_back(Napi::Persistent(v)); }
  Napi::Env env() const { return env_; }
  const std::string& op() const { return op_; }

  bool has(const char* key) const;
  // Float32Array only.
  ArrayArg f32(const char* key);
  // Float32Array (f32) or Uint16Array (bf16 bits).
  ArrayArg f32_or_bf16(const char* key);
  ArrayArg i32(const char* key);
  // Float64Array only.
  ArrayArg f64(const char* key);
  ArrayArg u8(const char* key);
  // Int32Array or Uint8Array (masks: either is accepted).
  ArrayArg i32_or_u8(const char* key);
  // An integer in [min, max].
  int64_t integer(const char* key, int64_t min = 0, int64_t max = INT64_MAX);
  int64_t integer_or(const char* key, int64_t fallback, int64_t min = 0, int64_t max = INT64_MAX);
  double number(const char* key);
  double number_or(const char* key, double fallback);
  bool boolean_or(const char* key, bool fallback);
  std::string string_or(const char* key, const std::string& fallback);
  // The backend the call runs on, from 'device': 'cpu' (default) | 'cuda' | 'checked' (the CPU
  // kernels behind a device-like wall, for tests), and 'deviceIndex' for CUDA. A backend that
  // cannot be used (a build without CUDA, no device) is an Error with code ERR_DEVICE.
  Backend& backend(const char* key = "device");
  // 'auto' | 'fp32' | 'bf16' (backend/ops.h); absent: automatic. RangeError for a precision the
  // backend does not run `op` at (CUDA's products run on bf16 tensor cores only: no 'fp32').
  Precision precision(Backend& be, Op op, const char* key = "precision");

  // RangeError unless the array holds exactly `expected` elements ("`what` = expected").
  void expect_length(const char* key, const ArrayArg& a, uint64_t expected, const std::string& what);
  // RangeError if the byte ranges of two arrays overlap (an output aliasing an input).
  void expect_disjoint(const char* key_a, const ArrayArg& a, const char* key_b, const ArrayArg& b);
  // The field's name as errors print it, quoted, with the nesting prefix: 'segments[0].a'.
  std::string name(const char* key) const { return "'" + prefix_ + key + "'"; }
  [[noreturn]] void range_error(const std::string& msg);
  [[noreturn]] void type_error(const std::string& msg);

  std::vector<Napi::Reference<Napi::Value>>& kept() { return *kept_; }
  // An Array of Float32Arrays, e.g. clipGradNorm's `grads`: errors name "grads[2]".
  std::vector<ArrayArg> f32_list(const char* key);
  // Uint16Array only: raw bf16 bits that are written, e.g. an optimiser's bf16 copy of the params.
  ArrayArg u16(const char* key);
  // Memory-mapped files that arrays handed out live in (see mmap.h), held until the Job is done.
  std::vector<std::shared_ptr<void>>& pins() { return *pins_; }

 private:
  Args(Napi::Env env, std::string op, std::string prefix, Napi::Object options,
       std::shared_ptr<std::vector<Napi::Reference<Napi::Value>>> kept,
       std::shared_ptr<std::vector<std::shared_ptr<void>>> pins);

  Napi::Value field(const char* key) const;
  ArrayArg array(const char* key, std::initializer_list<napi_typedarray_type> types, const char* expected);

  Napi::Env env_;
  std::string op_;
  std::string prefix_;  // "segments[1]." for a nested object
  Napi::Object options_;
  std::shared_ptr<std::vector<Napi::Reference<Napi::Value>>> kept_;
  std::shared_ptr<std::vector<std::shared_ptr<void>>> pins_;
};

using Parser = Job (*)(Args&);

// Runs a parsed Job: on a libuv worker, returning a Promise, or here when `sync`.
// For methods of native objects (ObjectWrap), which register themselves.
Napi::Value run_job(Napi::Env env, const std::string& name, Job job, Args& args, bool sync);
// Runs a single-threaded Job on one of cpu::Lanes' threads (lane_job.cc), returning a Promise:
// for work queued a batch per core and more, which libuv's four workers would cap.
Napi::Value run_lane_job(Napi::Env env, const std::string& name, Job job, Args& args);

// Registers an op under `name`; returns true so it can initialise a static.
bool register_op(const char* name, Parser parser);
// Registers a function that adds other exports (classes such as MappedFile) at module load.
using Exporter = void (*)(Napi::Env env, Napi::Object exports);
bool register_exporter(Exporter exporter);
// Exports the ops, twice each, and everything registered with register_exporter.
void export_ops(Napi::Env env, Napi::Object exports);

}  // namespace ernie::addon

// Defines and registers an op: ERNIE_OP(gemm) { ...; return Job{...}; }  (`args` is an Args&)
#define ERNIE_OP(name)                                                             \
  static ::ernie::addon::Job ernie_op_##name(::ernie::addon::Args& args);         \
  static const bool ernie_op_registered_##name = ::ernie::addon::register_op(#name, ernie_op_##name); \
  static ::ernie::addon::Job ernie_op_##name(::ernie::addon::Args& args)
