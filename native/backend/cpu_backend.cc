// The CPU backend: host memory, ops run on the calling thread and the thread pool before the
// call returns, each dispatched to the active ISA's kernels (cpu/).
#include <algorithm>
#include <cstring>
#include <new>

#include "backend/backend.h"
#include "cpu/attention.h"
#include "cpu/gemm.h"
#include "cpu/isa.h"
#include "cpu/lora.h"
#include "cpu/loss.h"
#include "cpu/ops.h"
#include "cpu/optim.h"
#include "cpu/precision.h"
#include "cpu/threadpool.h"

namespace ernie {
namespace {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::cpu; }
  bool host_memory() const override { return true; }
  const char* name() const override { return "cpu"; }

  bool supports(Op, DType, Precision) const override { return true; }
  int64_t max_head_dim() const override { return int64_t(1) << 16; }
  int64_t attention_scratch_floats(const AttentionArgs& a, bool backward) const override {
    return cpu::attention_scratch_floats(a, backward);
  }

  // bf16 weights pre-packed as GEMM B operands (cpu::PrepackedBf16): products with few rows
  // (inference, generation) otherwise spend much of their time packing them anew at every call.
  bool prepares_weights(Precision precision) const override {
    return cpu::isa_has_bf16_dot(cpu::active_isa()) && precision != Precision::fp32;
  }
  MatrixRef prepare_weight(const MatrixRef& w, int64_t rows, int64_t cols, std::shared_ptr<void>* owner) const override {
    if (w.dtype != DType::bf16) return w;
    auto packed = std::make_shared<cpu::PrepackedBf16>(w, rows, cols);
    *owner = packed;
    return packed->attach(w);
  }
  Precision resolve(Precision asked, DType weight_dtype) const override {
    return cpu::product_precision(asked, cpu::active_isa(), weight_dtype == DType::bf16);
  }

  void* alloc(size_t bytes) override { return ::operator new[](bytes ? bytes : 1, std::align_val_t(64)); }
  void release(void* p, size_t) noexcept override { ::operator delete[](p, std::align_val_t(64)); }
  void upload(void* dst, const void* host, size_t bytes) override { copy(dst, host, bytes); }
  void download(void* host, const void* src, size_t bytes) override { copy(host, src, bytes); }
  // Large copies (a layer's input, kept for the backward) on every core: one core's memcpy does
  // not reach the memory bandwidth of the two.
  void copy(void* dst, const void* src, size_t bytes) override {
    if (!bytes || dst == src) return;
    constexpr size_t kPiece = size_t(1) << 20;
    if (bytes < 2 * kPiece) {
      std::memcpy(dst, src, bytes);
      return;
    }
    cpu::ThreadPool::instance().parallel_for(int64_t((bytes + kPiece - 1) / kPiece), [&](int64_t begin, int64_t end, int) {
      const size_t from = size_t(begin) * kPiece, to = std::min(bytes, size_t(end) * kPiece);
      std::memcpy(static_cast<char*>(dst) + from, static_cast<const char*>(src) + from, to - from);
    });
  }
  void zero(void* dst, size_t bytes) override {
    if (bytes) std::memset(dst, 0, bytes);
  }
  void synchronize() override {}

  void gemm(const GemmArgs& a) override { cpu::gemm(a); }
  void attention_forward(const AttentionArgs& a) override { cpu::attention_forward(a); }
  void attention_backward(const AttentionArgs& a) override { cpu::attention_backward(a); }
  void lora_forward(const LoraForwardArgs& a) override {
    cpu::lora_linear_forward(a.shape, a.x, a.w, a.lora, a.u, a.y, a.accumulate);
  }
  void lora_backward(const LoraBackwardArgs& a) override {
    cpu::lora_linear_backward(a.shape, a.x, a.w, a.lora, a.u, a.dy, a.dx, a.dx_accumulate, a.da, a.db);
  }
  void rmsnorm_forward(const RmsNormForwardArgs& a) override { cpu::rmsnorm_forward(a); }
  void rmsnorm_backward(const RmsNormBackwardArgs& a) override { cpu::rmsnorm_backward(a); }
  void rope(const RopeArgs& a) override { cpu::rope(a); }
  void swiglu_forward(const SwigluForwardArgs& a) override { cpu::swiglu_forward(a); }
  void swiglu_backward(const SwigluBackwardArgs& a) override { cpu::swiglu_backward(a); }
  void embedding_forward(const EmbeddingForwardArgs& a) override { cpu::embedding_forward(a); }
  void embedding_backward(const EmbeddingBackwardArgs& a) override { cpu::embedding_backward(a); }

  // Few rows (one per sequence, or per pooled token): plain loops, rows split over the pool.
  void gather_rows(const GatherRowsArgs& a) override {
    cpu::ThreadPool::instance().parallel_for(a.count, [&](int64_t begin, int64_t end, int) {
      for (int64_t i = begin; i < end; ++i) {
        float* out = a.out + i * a.dim;
        std::memset(out, 0, sizeof(float) * size_t(a.dim));
        for (int32_t j = a.starts[i]; j < a.starts[i + 1]; ++j) {
          const float w = a.weights ? a.weights[j] : 1.0f;
          const float* src = a.src + int64_t(a.rows[j]) * a.dim;
          for (int64_t c = 0; c < a.dim; ++c) out[c] += w * src[c];
        }
      }
    });
  }
  // Serial: two ranges may name the same row.
  void scatter_rows(const GatherRowsArgs& a) override {
    for (int64_t i = 0; i < a.count; ++i) {
      const float* dout = a.dout + i * a.dim;
      for (int32_t j = a.starts[i]; j < a.starts[i + 1]; ++j) {
        const float w = a.weights ? a.weights[j] : 1.0f;
        float* dst = a.out + int64_t(a.rows[j]) * a.dim;
        for (int64_t c = 0; c < a.dim; ++c) dst[c] += w * dout[c];
      }
    }
  }
  CrossEntropyResult cross_entropy(const CrossEntropyArgs& a) override { return cpu::cross_entropy(a); }
  void adamw(const AdamArgs& a) override { cpu::adamw_step(a.params, a.grads, a.m, a.v, a.params_bf16, a.n, a.hyper); }
  void adamw8bit(const Adam8bitArgs& a) override {
    cpu::adamw8bit_step(a.params, a.grads, a.m_codes, a.v_codes, a.m_absmax, a.v_absmax, a.params_bf16, a.n,
                        a.block_size, a.hyper);
  }
};

}  // namespace

Backend& cpu_backend() {
  static CpuBackend backend;
  return backend;
}

const char* device_name(Device d) { return d == Device::cuda ? "cuda" : "cpu"; }

}  // namespace ernie
