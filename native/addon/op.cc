#include "addon/op.h"

#include "addon/mmap.h"

#include <cmath>
#include <exception>
#include <map>
#include <memory>
#include <utility>

namespace ernie::addon {
namespace {

std::map<std::string, Parser>& registry() {
  static std::map<std::string, Parser> ops;
  return ops;
}

std::vector<Exporter>& exporters() {
  static std::vector<Exporter> list;
  return list;
}

[[noreturn]] void throw_with_code(Napi::Error err, const char* code) {
  err.Set("code", Napi::String::New(err.Env(), code));
  throw err;
}

const char* typed_array_name(napi_typedarray_type t) {
  switch (t) {
    case napi_int8_array: return "Int8Array";
    case napi_uint8_array: return "Uint8Array";
    case napi_uint8_clamped_array: return "Uint8ClampedArray";
    case napi_int16_array: return "Int16Array";
    case napi_uint16_array: return "Uint16Array";
    case napi_int32_array: return "Int32Array";
    case napi_uint32_array: return "Uint32Array";
    case napi_float32_array: return "Float32Array";
    case napi_float64_array: return "Float64Array";
    default: return "typed array";
  }
}

std::string describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) return typed_array_name(v.As<Napi::TypedArray>().TypedArrayType());
  if (v.IsArray()) return "an Array";
  if (v.IsNumber()) return "a number";
  if (v.IsString()) return "a string";
  if (v.IsBoolean()) return "a boolean";
  return "an object";
}

// Runs a Job on a libuv worker thread and settles a Promise with its result.
class JobWorker : public Napi::AsyncWorker {
 public:
  JobWorker(Napi::Env env, std::string op, Job job, std::vector<Napi::Reference<Napi::Value>> kept,
            std::vector<std::shared_ptr<void>> pins)
      : Napi::AsyncWorker(env, op.c_str()), op_(std::move(op)), job_(std::move(job)), kept_(std::move(kept)),
        pins_(std::move(pins)), deferred_(Napi::Promise::Deferred::New(env)) {}

  Napi::Promise promise() const { return deferred_.Promise(); }

  void Execute() override {
    try {
      job_.run();
    } catch (const std::exception& e) {
      SetError(op_ + ": " + e.what());
    } catch (...) {
      SetError(op_ + ": unknown native error");
    }
  }
  void OnOK() override {
    Napi::Env env = Env();
    try {
      deferred_.Resolve(job_.result ? job_.result(env) : env.Undefined());
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    }
  }
  void OnError(const Napi::Error& e) override { deferred_.Reject(e.Value()); }
  // A job that ends while its environment is stopping (a worker thread terminated) finds N-API
  // failing there, and node-addon-api would throw out of libuv's callback: the process would
  // abort. No JavaScript runs to take the answer any more; the worker is let go.
  void OnWorkComplete(Napi::Env env, napi_status status) override {
    try {
      Napi::AsyncWorker::OnWorkComplete(env, status);  // deletes this when it returns
    } catch (...) {
    }
  }

 private:
  std::string op_;
  Job job_;
  std::vector<Napi::Reference<Napi::Value>> kept_;  // the arrays the job reads and writes
  std::vector<std::shared_ptr<void>> pins_;          // the mapped files some of them live in
  Napi::Promise::Deferred deferred_;
};

Napi::Value call(const Napi::CallbackInfo& info, bool sync) {
  auto* name = static_cast<std::string*>(info.Data());
  Args args(info, name->c_str());
  Job job = registry().at(*name)(args);
  return run_job(info.Env(), *name, std::move(job), args, sync);
}

Napi::Value call_async(const Napi::CallbackInfo& info) { return call(info, false); }
Napi::Value call_sync(const Napi::CallbackInfo& info) { return call(info, true); }

}  // namespace

void throw_type_error(Napi::Env env, const std::string& msg) {
  throw_with_code(Napi::TypeError::New(env, msg), "ERR_INVALID_ARG_TYPE");
}
void throw_range_error(Napi::Env env, const std::string& msg) {
  throw_with_code(Napi::RangeError::New(env, msg), "ERR_OUT_OF_RANGE");
}

Args::Args(Napi::Env env, std::string op, std::string prefix, Napi::Object options,
           std::shared_ptr<std::vector<Napi::Reference<Napi::Value>>> kept,
           std::shared_ptr<std::vector<std::shared_ptr<void>>> pins)
    : env_(env), op_(std::move(op)), prefix_(std::move(prefix)), options_(options), kept_(std::move(kept)),
      pins_(std::move(pins)) {}

std::vector<Args> Args::objects(const char* key, size_t min_count, size_t max_count) {
  Napi::Value v = field(key);
  if (!v.IsArray()) type_error(name(key) + " must be an Array of objects, got " + describe(v));
  auto arr = v.As<Napi::Array>();
  if (arr.Length() < min_count || arr.Length() > max_count)
    range_error(name(key) + " must have " + std::to_string(min_count) + " to " + std::to_string(max_count) +
                " elements, got " + std::to_string(arr.Length()));
  std::vector<Args> out;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value item = arr.Get(i);
    std::string child = prefix_ + key + "[" + std::to_string(i) + "]";
    if (!item.IsObject() || item.IsArray() || item.IsTypedArray())
      type_error("'" + child + "' must be an object, got " + describe(item));
    out.push_back(Args(env_, op_, child + ".", item.As<Napi::Object>(), kept_, pins_));
  }
  return out;
}

Args::Args(const Napi::CallbackInfo& info, const char* op)
    : env_(info.Env()), op_(op), kept_(std::make_shared<std::vector<Napi::Reference<Napi::Value>>>()),
      pins_(std::make_shared<std::vector<std::shared_ptr<void>>>()) {
  if (info.Length() < 1 || !info[0].IsObject() || info[0].IsArray() || info[0].IsTypedArray())
    throw_type_error(env_, op_ + ": expected one options object, got " + (info.Length() ? describe(info[0]) : "nothing"));
  options_ = info[0].As<Napi::Object>();
}

Napi::Value Args::field(const char* key) const { return options_.Get(key); }

bool Args::has(const char* key) const {
  Napi::Value v = field(key);
  return !v.IsUndefined() && !v.IsNull();
}

void Args::type_error(const std::string& msg) { throw_type_error(env_, op_ + ": " + msg); }
void Args::range_error(const std::string& msg) { throw_range_error(env_, op_ + ": " + msg); }

ArrayArg Args::array(const char* key, std::initializer_list<napi_typedarray_type> types, const char* expected) {
  Napi::Value v = field(key);
  if (!v.IsTypedArray()) type_error(name(key) + " must be " + expected + ", got " + describe(v));
  auto ta = v.As<Napi::TypedArray>();
  bool ok = false;
  for (auto t : types) ok = ok || ta.TypedArrayType() == t;
  if (!ok) type_error(name(key) + " must be " + expected + ", got " + describe(v));
  ArrayArg a;
  a.type = ta.TypedArrayType();
  a.length = ta.ElementLength();
  a.data = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
  kept_->push_back(Napi::Persistent(v));
  if (auto pin = pin_mapped(a.data, ta.ByteLength())) {
    check_mapped_unchanged(env_, pin);
    pins_->push_back(std::move(pin));
  }
  return a;
}

ArrayArg Args::f32(const char* key) { return array(key, {napi_float32_array}, "a Float32Array"); }
ArrayArg Args::f32_or_bf16(const char* key) {
  return array(key, {napi_float32_array, napi_uint16_array}, "a Float32Array or a Uint16Array of bf16 values");
}
ArrayArg Args::i32(const char* key) { return array(key, {napi_int32_array}, "an Int32Array"); }
ArrayArg Args::f64(const char* key) { return array(key, {napi_float64_array}, "a Float64Array"); }
ArrayArg Args::u8(const char* key) { return array(key, {napi_uint8_array}, "a Uint8Array"); }
ArrayArg Args::i32_or_u8(const char* key) {
  return array(key, {napi_int32_array, napi_uint8_array}, "an Int32Array or a Uint8Array");
}

int64_t Args::integer(const char* key, int64_t min, int64_t max) {
  Napi::Value v = field(key);
  if (!v.IsNumber()) type_error(name(key) + " must be an integer, got " + describe(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || d != std::floor(d)) range_error(name(key) + " must be an integer, got " + std::to_string(d));
  if (d < double(min) || d > double(max))
    range_error(name(key) + " must be in [" + std::to_string(min) + ", " + std::to_string(max) + "], got " +
                std::to_string(int64_t(d)));
  return int64_t(d);
}

int64_t Args::integer_or(const char* key, int64_t fallback, int64_t min, int64_t max) {
  return has(key) ? integer(key, min, max) : fallback;
}

double Args::number(const char* key) {
  Napi::Value v = field(key);
  if (!v.IsNumber()) type_error(name(key) + " must be a number, got " + describe(v));
  double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) range_error(name(key) + " must be finite");
  return d;
}

double Args::number_or(const char* key, double fallback) { return has(key) ? number(key) : fallback; }

bool Args::boolean_or(const char* key, bool fallback) {
  if (!has(key)) return fallback;
  Napi::Value v = field(key);
  if (!v.IsBoolean()) type_error(name(key) + " must be a boolean, got " + describe(v));
  return v.As<Napi::Boolean>().Value();
}

std::string Args::string_or(const char* key, const std::string& fallback) {
  if (!has(key)) return fallback;
  Napi::Value v = field(key);
  if (!v.IsString()) type_error(name(key) + " must be a string, got " + describe(v));
  return v.As<Napi::String>().Utf8Value();
}

Backend& Args::backend(const char* key) {
  const std::string device = string_or(key, "cpu");
  try {
    if (device == "cpu") return cpu_backend();
    if (device == "checked") return checked_backend();
    if (device == "cuda") return cuda_backend(int(integer_or("deviceIndex", 0, 0, 1024)));
  } catch (const std::exception& e) {
    throw_with_code(Napi::Error::New(env_, op_ + ": device '" + device + "' is not available: " + e.what()), "ERR_DEVICE");
  }
  range_error(name(key) + " must be 'cpu', 'cuda' or 'checked', got '" + device + "'");
}

Precision Args::precision(Backend& be, Op op, const char* key) {
  const std::string v = string_or(key, "auto");
  Precision p;
  if (!precision_from_name(v, &p)) range_error(name(key) + " must be 'auto', 'fp32' or 'bf16', got '" + v + "'");
  if (!be.supports(op, DType::bf16, p))
    range_error(name(key) + " '" + v + "' is not available on the " + be.name() +
                " backend (its matrix products run on bf16 tensor cores only)");
  return p;
}

void Args::expect_length(const char* key, const ArrayArg& a, uint64_t expected, const std::string& what) {
  if (a.length != expected)
    range_error(name(key) + " has " + std::to_string(a.length) + " elements, expected " + what + " = " +
                std::to_string(expected));
}

void Args::expect_disjoint(const char* key_a, const ArrayArg& a, const char* key_b, const ArrayArg& b) {
  auto lo_a = reinterpret_cast<uintptr_t>(a.data), lo_b = reinterpret_cast<uintptr_t>(b.data);
  uintptr_t hi_a = lo_a + a.length * (a.type == napi_float32_array || a.type == napi_int32_array ? 4 : a.type == napi_uint16_array ? 2 : 1);
  uintptr_t hi_b = lo_b + b.length * (b.type == napi_float32_array || b.type == napi_int32_array ? 4 : b.type == napi_uint16_array ? 2 : 1);
  if (lo_a < hi_b && lo_b < hi_a) range_error(name(key_a) + " and " + name(key_b) + " must not share memory");
}

Napi::Value run_job(Napi::Env env, const std::string& name, Job job, Args& args, bool sync) {
  if (!sync) {
    auto* worker = new JobWorker(env, name, std::move(job), std::move(args.kept()), std::move(args.pins()));
    Napi::Promise promise = worker->promise();
    worker->Queue();
    return promise;
  }
  try {
    job.run();
  } catch (const std::exception& e) {
    throw Napi::Error::New(env, name + ": " + e.what());
  }
  return job.result ? job.result(env) : env.Undefined();
}

Args Args::object(const char* key) {
  Napi::Value v = field(key);
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray()) type_error(name(key) + " must be an object, got " + describe(v));
  return Args(env_, op_, prefix_ + key + ".", v.As<Napi::Object>(), kept_, pins_);
}

std::vector<ArrayArg> Args::f32_list(const char* key) {
  Napi::Value v = field(key);
  if (!v.IsArray()) type_error(name(key) + " must be an Array of Float32Arrays, got " + describe(v));
  auto arr = v.As<Napi::Array>();
  std::vector<ArrayArg> out;
  for (uint32_t i = 0; i < arr.Length(); ++i) {
    Napi::Value item = arr.Get(i);
    const std::string item_name = "'" + prefix_ + key + "[" + std::to_string(i) + "]'";
    if (!item.IsTypedArray() || item.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array)
      type_error(item_name + " must be a Float32Array, got " + describe(item));
    auto ta = item.As<Napi::TypedArray>();
    ArrayArg a;
    a.type = napi_float32_array;
    a.length = ta.ElementLength();
    a.data = static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset();
    kept_->push_back(Napi::Persistent(item));
    out.push_back(a);
  }
  return out;
}

ArrayArg Args::u16(const char* key) { return array(key, {napi_uint16_array}, "a Uint16Array of bf16 values"); }

bool register_op(const char* name, Parser parser) {
  registry()[name] = parser;
  return true;
}

bool register_exporter(Exporter exporter) {
  exporters().push_back(exporter);
  return true;
}

void export_ops(Napi::Env env, Napi::Object exports) {
  for (auto& [name, parser] : registry()) {
    auto* data = new std::string(name);  // lives as long as the module
    exports.Set(name, Napi::Function::New(env, call_async, name, data));
    exports.Set(name + "Sync", Napi::Function::New(env, call_sync, name + "Sync", data));
  }
  for (Exporter exporter : exporters()) exporter(env, exports);
}

}  // namespace ernie::addon
