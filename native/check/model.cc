// ernie_check's model section: the fixture checkpoints (test/fixtures/<name>: model.safetensors
// with bf16 weights, golden.safetensors with the float64 goldens stored as f32) run through
// engine::forward on every backend present, the hidden states compared with the goldens over
// the real tokens (attention_mask = 1): base.hidden, each row's last real token (the pruned last
// layer), and lora.hidden (LoRA on all seven projections) where the golden has an adapter.
//
// Bounds: a float64 oracle of the decoder written here (plain loops over the fixture README's
// architecture facts) run at the backend's precision gives the scale:
//   fp32 (CPU):      the oracle in f32 (the f32 level);
//   bf16 (CPU):      the oracle in float64 with every matrix product's operands rounded to bf16,
//                    plus the f32 level;
//   CUDA:            the same, with attention's q, k, v and probabilities rounded too (its
//                    attention runs on bf16 tensor cores), plus the f32 level.
// The exact oracle itself must match the golden to f32 storage level (a check of the oracle).
#include <cmath>
#include <memory>
#include <stdexcept>

#include "check/check.h"
#include "check/reference.h"
#include "check/safetensors.h"
#include "engine/model.h"

namespace ernie::check {
namespace {

using engine::kNumProj;

// The model as host floats, every projection logical [out, in] (transposed from Paddle's [in, out]).
struct HostModel {
  std::string name;
  engine::ModelDims dims;
  bool paddle = false;
  std::vector<float> embed, final_norm;  // [vocab, hidden], [hidden]
  struct Layer {
    std::vector<float> proj[kNumProj];
    std::vector<float> input_norm, post_norm, q_norm, k_norm;
    std::vector<float> lora_a[kNumProj], lora_b[kNumProj];  // [r, in], [out, r]; empty: none
  };
  std::vector<Layer> layers;
  int64_t lora_rank = 0;
  float lora_scale = 0;
  // The golden batch and outputs.
  std::vector<int32_t> ids, mask;
  int64_t B = 0, T = 0;
  std::vector<double> base_hidden, lora_hidden;  // [B, T, hidden]
};

std::vector<float> transpose(const std::vector<float>& x, int64_t rows, int64_t cols, int64_t ld, int64_t col0) {
  // x viewed as [rows, ld]; columns [col0, col0 + cols) transposed to [cols, rows].
  std::vector<float> out(static_cast<size_t>(rows * cols));
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) out[size_t(c * rows + r)] = x[size_t(r * ld + col0 + c)];
  return out;
}

const char* const kHfProj[kNumProj] = {"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                                       "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

engine::ModelDims read_dims(const Json& c) {
  engine::ModelDims d;
  d.hidden = int64_t(c.at("hidden_size").num);
  d.intermediate = int64_t(c.at("intermediate_size").num);
  d.layers = int64_t(c.at("num_hidden_layers").num);
  d.heads = int64_t(c.at("num_attention_heads").num);
  d.kv_heads = int64_t(c.number_or("num_key_value_heads", double(d.heads)));
  d.head_dim = int64_t(c.number_or("head_dim", double(d.hidden / d.heads)));
  d.vocab = int64_t(c.at("vocab_size").num);
  d.eps = float(c.number_or("rms_norm_eps", 1e-6));
  d.rope_theta = c.number_or("rope_theta", 10000.0);
  const std::string type = c.string_or("model_type", "");
  if (type == "qwen3") {
    d.pairing = RopePairing::half;
    d.qk_norm = true;
  } else if (type == "ernie4_5") {
    d.pairing = RopePairing::adjacent;
  } else {
    throw std::runtime_error("config.json: model_type '" + type + "' is neither ernie4_5 nor qwen3");
  }
  return d;
}

HostModel load(const std::string& dir, const std::string& name) {
  HostModel m;
  m.name = name;
  m.dims = read_dims(Json::parse(read_file(dir + "/config.json")));
  const engine::ModelDims& d = m.dims;
  const Safetensors w(dir + "/model.safetensors");
  const Safetensors g(dir + "/golden.safetensors");
  m.paddle = w.has("ernie.embed_tokens.weight");
  const std::string root = m.paddle ? "ernie." : "model.";
  m.embed = w.get(root + "embed_tokens.weight").f32();
  m.final_norm = w.get(root + "norm.weight").f32();
  if (w.has("lm_head.weight")) throw std::runtime_error("an untied LM head: not handled by this check");
  const int64_t q = d.q_dim(), kv = d.kv_dim(), I = d.intermediate, H = d.hidden;
  m.layers.resize(size_t(d.layers));
  for (int64_t l = 0; l < d.layers; ++l) {
    HostModel::Layer& L = m.layers[size_t(l)];
    const std::string p = root + "layers." + std::to_string(l) + ".";
    L.input_norm = w.get(p + "input_layernorm.weight").f32();
    L.post_norm = w.get(p + "post_attention_layernorm.weight").f32();
    if (d.qk_norm) {
      L.q_norm = w.get(p + "self_attn.q_norm.weight").f32();
      L.k_norm = w.get(p + "self_attn.k_norm.weight").f32();
    }
    if (m.paddle) {  // [in, out], q|k|v and gate|up fused along out
      const std::vector<float> qkv = w.get(p + "self_attn.qkv_proj.weight").f32();
      L.proj[engine::kQ] = transpose(qkv, H, q, q + 2 * kv, 0);
      L.proj[engine::kK] = transpose(qkv, H, kv, q + 2 * kv, q);
      L.proj[engine::kV] = transpose(qkv, H, kv, q + 2 * kv, q + kv);
      L.proj[engine::kO] = transpose(w.get(p + "self_attn.o_proj.weight").f32(), q, H, H, 0);
      const std::vector<float> ug = w.get(p + "mlp.up_gate_proj.weight").f32();
      L.proj[engine::kGate] = transpose(ug, H, I, 2 * I, 0);
      L.proj[engine::kUp] = transpose(ug, H, I, 2 * I, I);
      L.proj[engine::kDown] = transpose(w.get(p + "mlp.down_proj.weight").f32(), I, H, H, 0);
    } else {
      for (int j = 0; j < kNumProj; ++j) L.proj[j] = w.get(p + kHfProj[j] + ".weight").f32();
    }
    const std::string lp = "lora.base_model.model.model.layers." + std::to_string(l) + ".";
    for (int j = 0; j < kNumProj; ++j)
      if (g.has(lp + kHfProj[j] + ".lora_A.weight")) {
        const Tensor& a = g.get(lp + kHfProj[j] + ".lora_A.weight");
        L.lora_a[j] = a.f32();
        L.lora_b[j] = g.get(lp + kHfProj[j] + ".lora_B.weight").f32();
        m.lora_rank = a.shape[0];
      }
  }
  if (m.lora_rank) {
    // The fixtures' convention (README): y = x W^T + (alpha / r) (x A^T) B^T, alpha 8.
    m.lora_scale = 8.0f / float(m.lora_rank);
    if (g.has("lora.hidden")) m.lora_hidden = g.get("lora.hidden").f64();
  }
  const Tensor& ids = g.get("input_ids");
  m.B = ids.shape[0];
  m.T = ids.shape[1];
  m.ids = ids.i32();
  m.mask = g.get("attention_mask").i32();
  m.base_hidden = g.get("base.hidden").f64();
  return m;
}

// ---- the oracle ------------------------------------------------------------------------------

// y [n, out] = x [n, in] . W^T, W logical [out, in]; operands rounded to bf16 when `round`.
template <typename T>
std::vector<T> lin(const std::vector<T>& x, const std::vector<float>& w, int64_t n, int64_t out, int64_t in, bool round) {
  std::vector<T> y(size_t(n * out));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t o = 0; o < out; ++o) {
      T acc = 0;
      for (int64_t k = 0; k < in; ++k) acc += maybe_bf16(x[size_t(i * in + k)], round) * T(maybe_bf16(w[size_t(o * in + k)], round));
      y[size_t(i * out + o)] = acc;
    }
  return y;
}

// RMSNorm over rows of `dim` elements.
template <typename T>
std::vector<T> norm(const std::vector<T>& x, const std::vector<float>& w, int64_t dim, float eps) {
  std::vector<T> y(x.size());
  for (size_t r = 0; r < x.size() / size_t(dim); ++r) {
    T ss = 0;
    for (int64_t j = 0; j < dim; ++j) ss += x[r * size_t(dim) + size_t(j)] * x[r * size_t(dim) + size_t(j)];
    const T rs = T(1) / std::sqrt(ss / T(dim) + T(eps));
    for (int64_t j = 0; j < dim; ++j) y[r * size_t(dim) + size_t(j)] = x[r * size_t(dim) + size_t(j)] * rs * T(w[size_t(j)]);
  }
  return y;
}

struct OracleMode {
  bool round_products = false;   // every GEMM's operands to bf16
  bool round_attention = false;  // attention's q, k, v and probabilities to bf16
};

// The final hidden states [B, T, hidden], with or without the adapter.
template <typename T>
std::vector<T> oracle(const HostModel& m, bool with_lora, OracleMode mode) {
  const engine::ModelDims& d = m.dims;
  const int64_t n = m.B * m.T, H = d.hidden, D = d.head_dim, q_dim = d.q_dim(), kv_dim = d.kv_dim();
  const bool rp = mode.round_products;
  std::vector<T> h(size_t(n * H));
  for (int64_t t = 0; t < n; ++t)
    for (int64_t j = 0; j < H; ++j) h[size_t(t * H + j)] = T(m.embed[size_t(m.ids[size_t(t)] * H + j)]);
  // Positions count real tokens from 0; padding is masked out as keys.
  std::vector<int32_t> pos(static_cast<size_t>(n));
  for (int64_t b = 0; b < m.B; ++b) {
    int32_t p = 0;
    for (int64_t t = 0; t < m.T; ++t) pos[size_t(b * m.T + t)] = m.mask[size_t(b * m.T + t)] ? p++ : (p > 0 ? p - 1 : 0);
  }
  AttnShape as{m.B, m.T, m.T, d.heads, d.kv_heads, D, float(1.0 / std::sqrt(double(D))), {}, {}};
  as.key_valid.resize(size_t(n));
  for (int64_t t = 0; t < n; ++t) as.key_valid[size_t(t)] = m.mask[size_t(t)] ? 1 : 0;
  auto project = [&](const HostModel::Layer& L, int p, const std::vector<T>& x, int64_t out, int64_t in) {
    std::vector<T> y = lin(x, L.proj[p], n, out, in, rp);
    if (with_lora && !L.lora_a[p].empty()) {
      const std::vector<T> u = lin(x, L.lora_a[p], n, m.lora_rank, in, rp);
      const std::vector<T> z = lin(u, L.lora_b[p], n, out, m.lora_rank, rp);
      for (size_t i = 0; i < y.size(); ++i) y[i] += T(m.lora_scale) * z[i];
    }
    return y;
  };
  for (const HostModel::Layer& L : m.layers) {
    const std::vector<T> x1 = norm(h, L.input_norm, H, d.eps);
    std::vector<T> q = project(L, engine::kQ, x1, q_dim, H), k = project(L, engine::kK, x1, kv_dim, H);
    const std::vector<T> v = project(L, engine::kV, x1, kv_dim, H);
    if (d.qk_norm) {
      q = norm(q, L.q_norm, D, d.eps);
      k = norm(k, L.k_norm, D, d.eps);
    }
    // RoPE in T, angles in double.
    auto rope = [&](std::vector<T>& x, int64_t heads) {
      const int64_t half = D / 2;
      for (int64_t t = 0; t < n; ++t)
        for (int64_t i = 0; i < half; ++i) {
          const double angle = double(pos[size_t(t)]) * std::pow(d.rope_theta, -2.0 * double(i) / double(D));
          const T c = T(std::cos(angle)), s = T(std::sin(angle));
          const int64_t f = d.pairing == RopePairing::adjacent ? 2 * i : i, g = d.pairing == RopePairing::adjacent ? 2 * i + 1 : i + half;
          for (int64_t hh = 0; hh < heads; ++hh) {
            T* row = x.data() + (t * heads + hh) * D;
            const T a = row[f], b = row[g];
            row[f] = a * c - b * s;
            row[g] = b * c + a * s;
          }
        }
    };
    rope(q, d.heads);
    rope(k, d.kv_heads);
    const AttnRef<T> att = ref_attention<T, T>(as, q, k, v, nullptr, mode.round_attention);
    const std::vector<T> o = project(L, engine::kO, att.out, H, q_dim);
    for (size_t i = 0; i < h.size(); ++i) h[i] += o[i];
    const std::vector<T> x2 = norm(h, L.post_norm, H, d.eps);
    const std::vector<T> gate = project(L, engine::kGate, x2, d.intermediate, H), up = project(L, engine::kUp, x2, d.intermediate, H);
    std::vector<T> a(gate.size());
    for (size_t i = 0; i < a.size(); ++i) a[i] = gate[i] * ref_sigmoid(gate[i]) * up[i];
    const std::vector<T> down = project(L, engine::kDown, a, H, d.intermediate);
    for (size_t i = 0; i < h.size(); ++i) h[i] += down[i];
  }
  return norm(h, m.final_norm, H, d.eps);
}

// ||got - ref|| / ||ref|| over the real tokens' rows.
template <typename G>
double masked_err(const HostModel& m, const std::vector<G>& got, const std::vector<double>& ref) {
  const int64_t H = m.dims.hidden;
  double num = 0, den = 0;
  for (int64_t t = 0; t < m.B * m.T; ++t) {
    if (!m.mask[size_t(t)]) continue;
    for (int64_t j = 0; j < H; ++j) {
      const double g = double(got[size_t(t * H + j)]), r = ref[size_t(t * H + j)];
      if (!std::isfinite(g)) return std::nan("");
      num += (g - r) * (g - r);
      den += r * r;
    }
  }
  return std::sqrt(num / (den > 0 ? den : 1.0));
}

// Rows [B, hidden] of each sequence's last real token (zeros for a row without one).
template <typename V>
std::vector<double> last_rows(const HostModel& m, const std::vector<V>& full) {
  const int64_t H = m.dims.hidden;
  std::vector<double> out(size_t(m.B * H), 0.0);
  for (int64_t b = 0; b < m.B; ++b) {
    int64_t last = -1;
    for (int64_t t = 0; t < m.T; ++t)
      if (m.mask[size_t(b * m.T + t)]) last = t;
    if (last < 0) continue;
    for (int64_t j = 0; j < H; ++j) out[size_t(b * H + j)] = double(full[size_t((b * m.T + last) * H + j)]);
  }
  return out;
}

// ---- the engine on a backend -----------------------------------------------------------------

// The weights (and adapter) in the backend's memory, laid out as the checkpoint stores them:
// HF [out, in] read as is; Paddle's [in, out] fused tensors as transposed views with offsets.
struct Placed {
  std::vector<Buffer> buffers;
  engine::ModelWeights weights;
  engine::Adapter adapter;

  Placed(Backend& be, const HostModel& m, const std::string& dir) {
    const Safetensors w(dir + "/model.safetensors");
    const engine::ModelDims& d = m.dims;
    auto up_bf16 = [&](const std::string& name) -> const uint16_t* {
      const std::vector<uint16_t> bits = w.get(name).bf16_bits();
      buffers.emplace_back(be, bits.size() * 2);
      be.upload(buffers.back().data(), bits.data(), bits.size() * 2);
      return buffers.back().as<uint16_t>();
    };
    auto up_f32 = [&](const std::vector<float>& v) -> const float* {
      buffers.emplace_back(be, v.size() * 4);
      be.upload(buffers.back().data(), v.data(), v.size() * 4);
      return buffers.back().as<float>();
    };
    buffers.reserve(size_t(16 * d.layers + 8 + 2 * kNumProj * d.layers));
    const std::string root = m.paddle ? "ernie." : "model.";
    const int64_t H = d.hidden, I = d.intermediate, q = d.q_dim(), kv = d.kv_dim();
    weights.embed = MatrixRef{up_bf16(root + "embed_tokens.weight"), DType::bf16, H, false};
    weights.lm_head = weights.embed;
    weights.final_norm = engine::VectorRef{up_bf16(root + "norm.weight"), DType::bf16};
    weights.layers.resize(size_t(d.layers));
    for (int64_t l = 0; l < d.layers; ++l) {
      engine::LayerWeights& L = weights.layers[size_t(l)];
      const std::string p = root + "layers." + std::to_string(l) + ".";
      L.input_norm = {up_bf16(p + "input_layernorm.weight"), DType::bf16};
      L.post_attention_norm = {up_bf16(p + "post_attention_layernorm.weight"), DType::bf16};
      if (d.qk_norm) {
        L.q_norm = {up_bf16(p + "self_attn.q_norm.weight"), DType::bf16};
        L.k_norm = {up_bf16(p + "self_attn.k_norm.weight"), DType::bf16};
      }
      if (m.paddle) {
        const uint16_t* qkv = up_bf16(p + "self_attn.qkv_proj.weight");
        L.proj[engine::kQ] = MatrixRef{qkv, DType::bf16, q + 2 * kv, true};
        L.proj[engine::kK] = MatrixRef{qkv + q, DType::bf16, q + 2 * kv, true};
        L.proj[engine::kV] = MatrixRef{qkv + q + kv, DType::bf16, q + 2 * kv, true};
        L.proj[engine::kO] = MatrixRef{up_bf16(p + "self_attn.o_proj.weight"), DType::bf16, H, true};
        const uint16_t* ug = up_bf16(p + "mlp.up_gate_proj.weight");
        L.proj[engine::kGate] = MatrixRef{ug, DType::bf16, 2 * I, true};
        L.proj[engine::kUp] = MatrixRef{ug + I, DType::bf16, 2 * I, true};
        L.proj[engine::kDown] = MatrixRef{up_bf16(p + "mlp.down_proj.weight"), DType::bf16, H, true};
      } else {
        for (int j = 0; j < kNumProj; ++j)
          L.proj[j] = MatrixRef{up_bf16(p + kHfProj[j] + ".weight"), DType::bf16, engine::proj_shape(d, j).in, false};
      }
    }
    if (m.lora_rank) {
      adapter.layers.resize(size_t(d.layers));
      for (int64_t l = 0; l < d.layers; ++l)
        for (int j = 0; j < kNumProj; ++j) {
          const HostModel::Layer& L = m.layers[size_t(l)];
          if (L.lora_a[j].empty()) continue;
          LoraRef& r = adapter.layers[size_t(l)][size_t(j)];
          r.a = up_f32(L.lora_a[j]);
          r.b = up_f32(L.lora_b[j]);
          r.r = m.lora_rank;
          r.scale = m.lora_scale;
        }
    }
  }
};

struct Outputs {
  std::vector<float> hidden, last;
};

Outputs run_engine(Backend& be, const HostModel& m, const Placed& w, bool with_lora, Precision p) {
  engine::Workspace ws(be);
  engine::Batch batch;
  batch.input_ids = m.ids.data();
  batch.attention_mask = m.mask.data();
  batch.batch = m.B;
  batch.seq = m.T;
  const int64_t H = m.dims.hidden;
  Dev<float> hidden(be, size_t(m.B * m.T * H), nan_f32()), last(be, size_t(m.B * H), nan_f32());
  engine::ForwardOutputs out;
  out.hidden = hidden.ptr();
  const engine::Adapter* adapter = with_lora ? &w.adapter : nullptr;
  engine::forward(m.dims, w.weights, adapter, batch, out, p, ws);
  engine::ForwardOutputs only_last;
  only_last.last_hidden = last.ptr();  // alone: the last layer runs on those rows only
  engine::forward(m.dims, w.weights, adapter, batch, only_last, p, ws);
  return {hidden.get(), last.get()};
}

void model_case(Report& report, std::vector<Target>& targets, const std::string& dir, const std::string& name) {
  const HostModel m = load(dir, name);
  const bool lora = !m.lora_hidden.empty();
  // The oracles: exact (checked against the golden), f32, bf16 products, bf16 products and attention.
  struct Scales {
    double f32 = 0, bf16 = 0, bf16_att = 0;
    double f32_last = 0, bf16_last = 0, bf16_att_last = 0;
  };
  auto scales_for = [&](bool with_lora, const std::vector<double>& golden) {
    Scales s;
    const std::vector<float> f = oracle<float>(m, with_lora, {});
    const std::vector<double> b = oracle<double>(m, with_lora, {true, false}), ba = oracle<double>(m, with_lora, {true, true});
    const std::vector<double> gl = last_rows(m, golden);
    s.f32 = masked_err(m, f, golden);
    s.bf16 = masked_err(m, b, golden);
    s.bf16_att = masked_err(m, ba, golden);
    s.f32_last = rel_err(last_rows(m, f), gl);
    s.bf16_last = rel_err(last_rows(m, b), gl);
    s.bf16_att_last = rel_err(last_rows(m, ba), gl);
    return s;
  };
  {
    // The oracle itself, exact, against the golden: f32 storage of the golden is all that may differ.
    std::vector<Check> c{within("base", masked_err(m, oracle<double>(m, false, {}), m.base_hidden), 0.0, 1e-6)};
    if (lora) c.push_back(within("lora", masked_err(m, oracle<double>(m, true, {}), m.lora_hidden), 0.0, 1e-6));
    report.result("host", "model " + name + ": the float64 oracle matches golden.safetensors", c);
  }
  const Scales base = scales_for(false, m.base_hidden);
  const Scales with = lora ? scales_for(true, m.lora_hidden) : Scales{};
  const std::string label = "model " + name + (m.paddle ? " (Paddle layout: fused, transposed weights)" : "") +
                            ": engine::forward hidden states vs golden (base.hidden, last real token" + (lora ? ", lora.hidden" : "") + ")";
  for_each_target(report, targets, label, [&](Target& t) {
    Backend& be = *t.be;
    const Placed w(be, m, dir);
    std::vector<Check> c;
    for (Precision p : product_precisions(be)) {
      const std::string pn = precision_name(p);
      for (bool with_lora : {false, true}) {
        if (with_lora && !lora) continue;
        const Scales& s = with_lora ? with : base;
        const std::vector<double>& golden = with_lora ? m.lora_hidden : m.base_hidden;
        const Outputs out = run_engine(be, m, w, with_lora, p);
        const double scale = p == Precision::fp32 ? s.f32 : (t.attention_bf16 ? s.bf16_att : s.bf16) + s.f32;
        const double scale_last = p == Precision::fp32 ? s.f32_last : (t.attention_bf16 ? s.bf16_att_last : s.bf16_last) + s.f32_last;
        const std::string what = pn + (with_lora ? " lora" : " base");
        c.push_back(within(what + " hidden", masked_err(m, out.hidden, golden), scale));
        c.push_back(within(what + " last token", rel_err(out.last, last_rows(m, golden)), scale_last));
      }
    }
    return c;
  });
}

}  // namespace

void run_models(Report& report, std::vector<Target>& targets, const Options& o) {
  if (!wanted(o, "model")) return;
  report.note("models: engine::forward on the fixtures in " + o.fixtures +
              "; bound = 3 x (the decoder oracle's error at the backend's precision vs the golden) + 4 f32 ulps");
  for (const char* name : {"ernie-tiny", "ernie-tiny-paddle", "qwen3-tiny"}) {
    const std::string dir = o.fixtures + "/" + name;
    try {
      model_case(report, targets, dir, name);
    } catch (const std::exception& e) {
      report.error("host", std::string("model ") + name, e.what());
    }
  }
}

}  // namespace ernie::check
