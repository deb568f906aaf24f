// A minimal JSON parser and safetensors reader for ernie_check (no third-party code): enough
// of JSON for a safetensors header and a config.json, and a safetensors file read whole
// (the fixtures are a few MB).
#pragma once
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace ernie::check {

struct Json {
  enum Kind { null, boolean, number, string, array, object } kind = null;
  bool b = false;
  double num = 0;
  std::string str;
  std::vector<Json> items;
  std::map<std::string, Json> fields;

  static Json parse(const std::string& text);  // throws std::runtime_error
  bool has(const std::string& key) const { return kind == object && fields.count(key) != 0; }
  const Json& at(const std::string& key) const;  // throws when missing
  double number_or(const std::string& key, double fallback) const;
  std::string string_or(const std::string& key, const std::string& fallback) const;
};

std::string read_file(const std::string& path);  // throws std::runtime_error

struct Tensor {
  std::string dtype;  // "F32" | "F64" | "BF16" | "F16" | "I32" | "I64" | ...
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t bytes = 0;
  int64_t numel() const;
  // The values converted (F32, F64, BF16 to float / double; I32, I64 to int32).
  std::vector<float> f32() const;
  std::vector<double> f64() const;
  std::vector<int32_t> i32() const;
  // BF16 only: the raw bits.
  std::vector<uint16_t> bf16_bits() const;
};

class Safetensors {
 public:
  explicit Safetensors(const std::string& path);  // throws std::runtime_error
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const Tensor& get(const std::string& name) const;  // throws when missing
  std::vector<std::string> names() const;

 private:
  std::string path_;
  std::string bytes_;
  std::map<std::string, Tensor> tensors_;
};

}  // namespace ernie::check
