#include "check/safetensors.h"

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "check/check.h"

namespace ernie::check {
namespace {

class Parser {
 public:
  explicit Parser(const std::string& s) : s_(s) {}
  Json document() {
    Json v = value();
    ws();
    if (i_ != s_.size()) fail("trailing characters");
    return v;
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw std::runtime_error("JSON: " + why + " at offset " + std::to_string(i_));
  }
  void ws() {
    while (i_ < s_.size() && (s_[i_] == ' ' || s_[i_] == '\n' || s_[i_] == '\r' || s_[i_] == '\t')) ++i_;
  }
  bool eat(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) fail(std::string("expected '") + c + "'");
  }
  bool word(const char* w) {
    const size_t n = std::strlen(w);
    if (s_.compare(i_, n, w) != 0) return false;
    i_ += n;
    return true;
  }
  Json value() {
    ws();
    if (i_ >= s_.size()) fail("unexpected end");
    Json v;
    const char c = s_[i_];
    if (c == '{') {
      ++i_;
      v.kind = Json::object;
      if (eat('}')) return v;
      do {
        ws();
        std::string key = string();
        expect(':');
        v.fields[key] = value();
      } while (eat(','));
      expect('}');
    } else if (c == '[') {
      ++i_;
      v.kind = Json::array;
      if (eat(']')) return v;
      do v.items.push_back(value());
      while (eat(','));
      expect(']');
    } else if (c == '"') {
      v.kind = Json::string;
      v.str = string();
    } else if (word("true")) {
      v.kind = Json::boolean;
      v.b = true;
    } else if (word("false")) {
      v.kind = Json::boolean;
    } else if (word("null")) {
    } else {
      const char* begin = s_.c_str() + i_;
      char* end = nullptr;
      v.num = std::strtod(begin, &end);
      if (end == begin) fail("unexpected character");
      v.kind = Json::number;
      i_ += size_t(end - begin);
    }
    return v;
  }
  std::string string() {
    if (i_ >= s_.size() || s_[i_] != '"') fail("expected a string");
    ++i_;
    std::string out;
    while (i_ < s_.size() && s_[i_] != '"') {
      char c = s_[i_++];
      if (c != '\\') {
        out += c;
        continue;
      }
      if (i_ >= s_.size()) break;
      c = s_[i_++];
      switch (c) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {  // kept as UTF-8 for the basic plane (names here are ASCII)
          if (i_ + 4 > s_.size()) fail("bad \\u escape");
          const unsigned cp = unsigned(std::strtoul(s_.substr(i_, 4).c_str(), nullptr, 16));
          i_ += 4;
          if (cp < 0x80) out += char(cp);
          else if (cp < 0x800) out += char(0xc0 | (cp >> 6)), out += char(0x80 | (cp & 0x3f));
          else out += char(0xe0 | (cp >> 12)), out += char(0x80 | ((cp >> 6) & 0x3f)), out += char(0x80 | (cp & 0x3f));
          break;
        }
        default: out += c;  // \" \\ \/
      }
    }
    if (i_ >= s_.size()) fail("unterminated string");
    ++i_;
    return out;
  }
  const std::string& s_;
  size_t i_ = 0;
};

}  // namespace

Json Json::parse(const std::string& text) { return Parser(text).document(); }

const Json& Json::at(const std::string& key) const {
  auto it = fields.find(key);
  if (kind != object || it == fields.end()) throw std::runtime_error("JSON: no field '" + key + "'");
  return it->second;
}
double Json::number_or(const std::string& key, double fallback) const {
  return has(key) && at(key).kind == number ? at(key).num : fallback;
}
std::string Json::string_or(const std::string& key, const std::string& fallback) const {
  return has(key) && at(key).kind == string ? at(key).str : fallback;
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

int64_t Tensor::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::vector<double> Tensor::f64() const {
  const size_t n = size_t(numel());
  std::vector<double> out(n);
  if (dtype == "F64") std::memcpy(out.data(), data, n * 8);
  else if (dtype == "F32")
    for (size_t i = 0; i < n; ++i) {
      float f;
      std::memcpy(&f, data + 4 * i, 4);
      out[i] = f;
    }
  else if (dtype == "BF16")
    for (size_t i = 0; i < n; ++i) {
      uint16_t b;
      std::memcpy(&b, data + 2 * i, 2);
      out[i] = bf16_value(b);
    }
  else throw std::runtime_error("safetensors: cannot read " + dtype + " as floats");
  return out;
}

std::vector<float> Tensor::f32() const {
  const std::vector<double> d = f64();
  return std::vector<float>(d.begin(), d.end());
}

std::vector<int32_t> Tensor::i32() const {
  const size_t n = size_t(numel());
  std::vector<int32_t> out(n);
  if (dtype == "I32") std::memcpy(out.data(), data, n * 4);
  else if (dtype == "I64")
    for (size_t i = 0; i < n; ++i) {
      int64_t v;
      std::memcpy(&v, data + 8 * i, 8);
      out[i] = int32_t(v);
    }
  else throw std::runtime_error("safetensors: cannot read " + dtype + " as integers");
  return out;
}

std::vector<uint16_t> Tensor::bf16_bits() const {
  if (dtype != "BF16") throw std::runtime_error("safetensors: tensor is " + dtype + ", not BF16");
  std::vector<uint16_t> out(static_cast<size_t>(numel()));
  std::memcpy(out.data(), data, out.size() * 2);
  return out;
}

Safetensors::Safetensors(const std::string& path) : path_(path), bytes_(read_file(path)) {
  if (bytes_.size() < 8) throw std::runtime_error(path + ": not a safetensors file (too short)");
  uint64_t header = 0;
  for (int i = 7; i >= 0; --i) header = (header << 8) | uint8_t(bytes_[size_t(i)]);  // little-endian
  if (header > bytes_.size() - 8) throw std::runtime_error(path + ": header length past the end of the file");
  const Json h = Json::parse(bytes_.substr(8, size_t(header)));
  if (h.kind != Json::object) throw std::runtime_error(path + ": the header is not a JSON object");
  const size_t base = 8 + size_t(header), size = bytes_.size() - base;
  for (const auto& [name, t] : h.fields) {
    if (name == "__metadata__") continue;
    Tensor x;
    x.dtype = t.at("dtype").str;
    for (const Json& d : t.at("shape").items) x.shape.push_back(int64_t(d.num));
    const Json& off = t.at("data_offsets");
    if (off.items.size() != 2) throw std::runtime_error(path + ": " + name + ": bad data_offsets");
    const size_t b = size_t(off.items[0].num), e = size_t(off.items[1].num);
    if (b > e || e > size) throw std::runtime_error(path + ": " + name + ": data_offsets past the end of the file");
    const size_t elem = x.dtype == "F64" || x.dtype == "I64" ? 8 : x.dtype == "F32" || x.dtype == "I32" ? 4 : x.dtype == "BF16" || x.dtype == "F16" ? 2 : 1;
    if (size_t(x.numel()) * elem != e - b) throw std::runtime_error(path + ": " + name + ": size does not match its shape and dtype");
    x.data = reinterpret_cast<const uint8_t*>(bytes_.data()) + base + b;
    x.bytes = e - b;
    tensors_.emplace(name, std::move(x));
  }
}

const Tensor& Safetensors::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) throw std::runtime_error(path_ + ": no tensor '" + name + "'");
  return it->second;
}

std::vector<std::string> Safetensors::names() const {
  std::vector<std::string> out;
  for (const auto& kv : tensors_) out.push_back(kv.first);
  return out;
}

}  // namespace ernie::check
