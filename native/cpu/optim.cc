#include "cpu/optim.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "cpu/threadpool.h"

ERNIE_DEFINE_KERNELS(optim, ERNIE_OPTIM_KERNELS)

namespace ernie::cpu {
namespace {

// Elementwise work is handed to threads in pieces of this many elements; the norm's partial
// sums follow the same pieces, which fixes its summation order.
constexpr int64_t kPiece = int64_t(1) << 15;

int64_t pieces(int64_t n) { return (n + kPiece - 1) / kPiece; }

// The value range of |q| that bucket b stands for (the end buckets take everything clamped).
float bucket_edge(int b) {
  if (b <= 0) return 0.0f;
  if (b >= kQuantBuckets) return std::numeric_limits<float>::infinity();
  const uint32_t u = uint32_t(b + (104 << 8)) << 15;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// bucket_base = how many midpoints lie below every q of the bucket; quant_bucket() then needs
// one comparison, which is exact only if the bucket holds at most one midpoint: checked here.
void fill_buckets(QuantMap& map) {
  const float* mid = map.midpoints;
  auto count_below = [&](float x, bool inclusive) {
    int c = 0;
    while (c < 255 && (mid[c] < x || (inclusive && mid[c] == x))) ++c;
    return c;
  };
  for (int b = 0; b < kQuantBuckets; ++b) {
    const float lo = bucket_edge(b), hi = bucket_edge(b + 1);
    const int pos = count_below(lo, false);           // q in [lo, hi)
    const int neg = count_below(-hi, true);           // q in (-hi, -lo]
    if (count_below(hi, false) - pos > 1 || count_below(-lo, true) - neg > 1)
      throw std::logic_error("quantisation map: a bucket holds two midpoints");
    map.bucket_base[b] = uint8_t(pos);
    map.bucket_base[kQuantBuckets + b] = uint8_t(neg);
  }
  for (int i = 2 * kQuantBuckets; i < 2 * kQuantBuckets + 4; ++i) map.bucket_base[i] = 0;
}

// bitsandbytes' dynamic ("dynamic tree") map, as create_dynamic_map(signed, 7, 8) builds it.
// Each decade i = 0..6 covers magnitudes [10^(i-6) * 0.1, 10^(i-6)]: the interval (0.1, 1) is
// cut into equal parts and their centres, scaled by 10^(i-6), are codes. Larger decades get
// more parts (2^i signed, 2^(i+1) unsigned), so the relative step shrinks for large values
// while tiny values still have a code within a decade. Signed: 127 magnitudes with both signs;
// unsigned: 254 magnitudes. Both add 0 and 1 (so an absmax-normalised block keeps its maximum
// exactly when it is positive). Computed in double, sorted, rounded to f32.
QuantMap build_dynamic_map(bool is_signed) {
  std::vector<double> values;
  for (int i = 0; i < 7; ++i) {
    const int parts = is_signed ? (1 << i) : (1 << (i + 1));
    const double decade = std::pow(10.0, i - 6);
    for (int j = 0; j < parts; ++j) {
      const double centre = 0.1 + (j + 0.5) * 0.9 / parts;
      values.push_back(decade * centre);
      if (is_signed) values.push_back(-decade * centre);
    }
  }
  values.push_back(0.0);
  values.push_back(1.0);
  std::sort(values.begin(), values.end());
  QuantMap map;
  for (int i = 0; i < 256; ++i) map.values[i] = float(values[size_t(i)]);
  for (int i = 0; i < 255; ++i) map.midpoints[i] = float(0.5 * (values[size_t(i)] + values[size_t(i) + 1]));
  map.midpoints[255] = std::numeric_limits<float>::infinity();
  fill_buckets(map);
  return map;
}

}  // namespace

const QuantMap& dynamic_map(bool is_signed) {
  static const QuantMap signed_map = build_dynamic_map(true);
  static const QuantMap unsigned_map = build_dynamic_map(false);
  return is_signed ? signed_map : unsigned_map;
}

void adamw_step(float* params, const float* grads, float* m, float* v, uint16_t* params_bf16, int64_t n,
                const AdamHyper& h) {
  const optim_kernel_table& kt = optim_kernels();
  parallel_for(pieces(n), [&](int64_t b, int64_t e, int) {
    const int64_t i0 = b * kPiece, len = std::min(e * kPiece, n) - i0;
    kt.adamw_update(params + i0, grads + i0, m + i0, v + i0, params_bf16 ? params_bf16 + i0 : nullptr, len, h);
  });
}

void adamw8bit_step(float* params, const float* grads, uint8_t* m_codes, uint8_t* v_codes, float* m_absmax,
                    float* v_absmax, uint16_t* params_bf16, int64_t n, int64_t block_size, const AdamHyper& h) {
  const optim_kernel_table& kt = optim_kernels();
  const QuantMap &m_map = dynamic_map(true), &v_map = dynamic_map(false);
  const int64_t blocks = (n + block_size - 1) / block_size;
  parallel_for(blocks, [&](int64_t b, int64_t e, int) {
    float* scratch = static_cast<float*>(thread_scratch(size_t(2 * block_size) * sizeof(float)));
    const int64_t i0 = b * block_size, len = std::min(e * block_size, n) - i0;
    kt.adamw8bit_update(params + i0, grads + i0, m_codes + i0, v_codes + i0, m_absmax + b, v_absmax + b,
                        params_bf16 ? params_bf16 + i0 : nullptr, len, block_size, h, m_map, v_map, scratch);
  });
}

void sgd_step(float* params, const float* grads, float* buffer, int64_t n, float lr, float momentum,
              float weight_decay, bool nesterov) {
  const optim_kernel_table& kt = optim_kernels();
  parallel_for(pieces(n), [&](int64_t b, int64_t e, int) {
    const int64_t i0 = b * kPiece, len = std::min(e * kPiece, n) - i0;
    kt.sgd_update(params + i0, grads + i0, buffer ? buffer + i0 : nullptr, len, lr, momentum, weight_decay, nesterov);
  });
}

void quantize_blockwise(const float* x, int64_t n, int64_t block_size, bool is_signed, uint8_t* codes, float* absmax) {
  const optim_kernel_table& kt = optim_kernels();
  const QuantMap& map = dynamic_map(is_signed);
  parallel_for((n + block_size - 1) / block_size, [&](int64_t b, int64_t e, int) {
    const int64_t i0 = b * block_size, len = std::min(e * block_size, n) - i0;
    kt.quantize_blocks(x + i0, len, block_size, map, codes + i0, absmax + b);
  });
}

void dequantize_blockwise(const uint8_t* codes, const float* absmax, int64_t n, int64_t block_size, bool is_signed,
                          float* out) {
  const optim_kernel_table& kt = optim_kernels();
  const QuantMap& map = dynamic_map(is_signed);
  parallel_for((n + block_size - 1) / block_size, [&](int64_t b, int64_t e, int) {
    const int64_t i0 = b * block_size, len = std::min(e * block_size, n) - i0;
    kt.dequantize_blocks(codes + i0, absmax + b, len, block_size, map, out + i0);
  });
}

namespace {

struct Piece {
  float* data;
  int64_t size;
};

std::vector<Piece> split(const std::vector<FloatSpan>& arrays) {
  std::vector<Piece> out;
  for (const FloatSpan& a : arrays)
    for (int64_t i = 0; i < a.size; i += kPiece) out.push_back({a.data + i, std::min(kPiece, a.size - i)});
  return out;
}

double norm_of(const std::vector<Piece>& parts) {
  const optim_kernel_table& kt = optim_kernels();
  std::vector<double> partial(parts.size());
  parallel_for(int64_t(parts.size()), [&](int64_t b, int64_t e, int) {
    for (int64_t i = b; i < e; ++i) partial[size_t(i)] = kt.sum_squares(parts[size_t(i)].data, parts[size_t(i)].size);
  });
  double total = 0.0;
  for (double s : partial) total += s;
  return std::sqrt(total);
}

}  // namespace

double grad_norm(const std::vector<FloatSpan>& grads) { return norm_of(split(grads)); }

double clip_grad_norm(const std::vector<FloatSpan>& grads, double max_norm) {
  const std::vector<Piece> parts = split(grads);
  const double norm = norm_of(parts);
  if (!std::isfinite(norm)) return norm;  // the caller skips this step; the gradients stay as they are
  const double coef = max_norm / (norm + 1e-6);
  if (coef < 1.0) {
    const optim_kernel_table& kt = optim_kernels();
    parallel_for(int64_t(parts.size()), [&](int64_t b, int64_t e, int) {
      for (int64_t i = b; i < e; ++i) kt.scale_values(parts[size_t(i)].data, parts[size_t(i)].size, float(coef));
    });
  }
  return norm;
}

}  // namespace ernie::cpu
