// The native model and adapter objects.
//
//   new Model({ dims, embed, finalNorm, lmHead, layers: [{ q, k, v, o, gate, up, down,
//               inputNorm, postAttentionNorm, qNorm?, kNorm? }] })
//     dims: { hidden, intermediate, layers, heads, kvHeads, headDim, vocab, eps, ropeTheta,
//             ropePairing: 'adjacent' | 'half', qkNorm }
//     a matrix: { data: Float32Array | Uint16Array (bf16), offset, rows, cols, ld, transposed }
//       the logical [rows, cols] = [out, in] operand: element (r, c) at data[offset + r*ld + c],
//       or data[offset + c*ld + r] when transposed (Paddle's [in, out]); a norm: a typed array.
//   model.forward({ inputIds, attentionMask?, segmentIds?, batch, seq, hidden?, logits?, lastHidden?,
//                   pooled?, pooling?, head?, headLogits?, targets?, rowLogProbs?, adapter?, singleThread?,
//                   precision? }) -> Promise
//     pooled [batch, hidden]: each sequence's final states pooled as `pooling` says: 'last'
//     (default) | 'mean' | 'first' (engine/pooling.h); head { weight, bias?, classes, featureMean?,
//     featureStd? } and headLogits [batch, classes]: the classification head (engine/head.h) on
//     those rows, in the same call; targets [batch, seq] (negative: not scored) and rowLogProbs
//     [batch] (Float64Array): each row's summed log-probability of its targets (engine/model.h)
//     precision: 'auto' (default) | 'fp32' | 'bf16', of every matrix product (backend/ops.h);
//     decode and trainStep take it too.
//     device: 'cpu' (default) | 'cuda' | 'checked' (addon/op.h), on the constructor: where the
//     weights are placed, once, and every call runs.
//     singleThread: the call runs alone on one of the per-core lane threads (cpu/lanes.h), not
//     on the pool, so that calls issued side by side (a batch per core and more) keep every core
//     busy; calls beyond one per core wait for a free lane.
//   new Adapter({ layers: [{ q_proj?: { a, b, rank, scale }, ... }], embed?, lmHead? })
//     embed, lmHead: matrices [vocab, hidden], row-major: trainable token rows' tables, which the
//     adapter's calls read in place of the model's embedding and LM head (lmHead may view embed's
//     array: a tied head). On a backend with memory of its own they are copied there per call.
//   dispose() on both: drops the native state; later calls throw.
//
// The objects keep their typed arrays alive; a running call keeps its object alive. The JS
// layer owns the memory-mapped checkpoint and unmaps it only after dispose().
#include <cmath>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <string>

#if defined(__linux__)
#include <sys/mman.h>
#include <unistd.h>
#endif

#include "addon/head.h"
#include "addon/mirror.h"
#include "addon/mmap.h"
#include "addon/op.h"
#include "backend/backend.h"
#include "cpu/threadpool.h"
#include "engine/losses.h"
#include "engine/model.h"
#include "engine/pooling.h"

namespace ernie::addon {
namespace {

using engine::kNumProj;

// A weight of a memory-mapped checkpoint, once packed, is read again only by fp32 products and
// save(): its pages go back to the page cache (they fault in again on demand), so that packing
// does not double the model's resident memory. Weights in arrays of JS's own are left alone.
void release_mapped_pages(const MatrixRef& w, int64_t rows, int64_t cols) {
#if defined(__linux__)
  const int64_t inner = w.trans ? rows : cols, outer = w.trans ? cols : rows;
  const size_t bytes = size_t((outer - 1) * w.ld + inner) * size_t(dtype_size(w.dtype));
  if (!pin_mapped(w.data, bytes)) return;
  const uintptr_t page = uintptr_t(sysconf(_SC_PAGESIZE));
  const uintptr_t lo = (reinterpret_cast<uintptr_t>(w.data) + page - 1) / page * page;
  const uintptr_t hi = (reinterpret_cast<uintptr_t>(w.data) + bytes) / page * page;
  if (hi > lo) madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_DONTNEED);
#else
  (void)w, (void)rows, (void)cols;
#endif
}

// The weights and the arrays that hold them, shared with running jobs.
struct ModelState {
  explicit ModelState(Backend& backend) : be(backend), workspaces(backend) {}
  Backend& be;  // where the weights live and every call runs
  engine::ModelDims dims;
  engine::ModelWeights weights;  // the backend's memory once place_weights() has run
  std::vector<std::shared_ptr<void>> pins;  // mapped checkpoint files stay mapped while this lives
  // false when the weights change between calls (full fine-tuning's compute copies): then the
  // CPU keeps no packed copy, and a backend with memory of its own is sent them again per call.
  bool prepack = true;
  engine::WorkspacePool workspaces;  // activation memory, kept between calls
  std::map<const char*, size_t> host_arrays;  // the typed arrays the weights view: start -> bytes

  // On a backend with memory of its own, each array the weights view is uploaded once, and the
  // weights are rebased onto the copies.
  void place_weights() {
    if (be.host_memory()) return;
    for (const auto& [host, bytes] : host_arrays) {
      placed.emplace_back(be, bytes);
      be.upload(placed.back().data(), host, bytes);
      copies[host] = placed.back().as<char>();
    }
    auto rebase = [&](const void*& p) {
      const char* c = static_cast<const char*>(p);
      auto it = copies.upper_bound(c);
      --it;  // parse_matrix / parse_vector recorded the array each weight lies in
      p = it->second + (c - it->first);
    };
    rebase(weights.embed.data);
    rebase(weights.lm_head.data);
    rebase(weights.final_norm.data);
    for (engine::LayerWeights& lw : weights.layers) {
      for (auto& w : lw.proj) rebase(w.data);
      for (engine::VectorRef* v : {&lw.input_norm, &lw.post_attention_norm, &lw.q_norm, &lw.k_norm})
        if (v->data) rebase(v->data);
    }
  }

  // weights.lm_head as a row-major [vocab, hidden] copy of itself (host memory, placed with the rest).
  void copy_lm_head_rows() {
    const MatrixRef& w = weights.lm_head;
    const size_t elem = size_t(dtype_size(w.dtype));
    lm_head_rows.resize(size_t(dims.vocab * dims.hidden) * elem);
    const char* src = static_cast<const char*>(w.data);
    for (int64_t r = 0; r < dims.vocab; ++r)
      for (int64_t c = 0; c < dims.hidden; ++c) {
        const int64_t at = w.trans ? c * w.ld + r : r * w.ld + c;
        std::memcpy(&lm_head_rows[size_t(r * dims.hidden + c) * elem], src + size_t(at) * elem, elem);
      }
    weights.lm_head = MatrixRef{lm_head_rows.data(), w.dtype, dims.hidden, false};
    host_arrays[reinterpret_cast<const char*>(lm_head_rows.data())] = lm_head_rows.size();
  }
  std::vector<uint8_t> lm_head_rows;

  // Weights that change between calls, sent again to a backend with memory of its own. (Full
  // fine-tuning runs one step at a time, so no call reads them meanwhile.)
  void refresh_weights() {
    if (prepack || be.host_memory()) return;
    for (const auto& [host, bytes] : host_arrays) be.upload(copies.at(host), host, bytes);
  }

  // The weights a call computes with: the projections and the LM head in the backend's own form
  // where it keeps one for this precision (Backend::prepare_weight: on AVX512_BF16 the CPU's
  // packed bf16 pairs), made once by the first such call. A call that trains against these
  // frozen weights (`backward`) gets the projections' transposes prepared too, made once by the
  // first such call: dy . W reads them, and a forward-only user never pays their memory.
  // Weights that change between calls are refreshed on the backend first, and never prepared.
  const engine::ModelWeights& weights_for(Precision precision, bool backward = false) {
    refresh_weights();
    if (!prepack || !be.prepares_weights(precision)) return weights;
    std::call_once(prepack_once, [this] {
      packed_weights = weights;
      auto pack = [this](MatrixRef& w, int64_t rows, int64_t cols) {
        std::shared_ptr<void> owner;
        w = be.prepare_weight(w, rows, cols, &owner);
        if (!owner) return;
        prepared.push_back(std::move(owner));
        release_mapped_pages(w, rows, cols);
      };
      for (engine::LayerWeights& lw : packed_weights.layers)
        for (int p = 0; p < kNumProj; ++p) {
          const engine::ProjShape shape = engine::proj_shape(dims, p);
          pack(lw.proj[p], shape.out, shape.in);
        }
      pack(packed_weights.lm_head, dims.vocab, dims.hidden);
    });
    if (!backward) return packed_weights;
    // A copy with the transposes attached, so that calls reading packed_weights meanwhile never
    // see it change.
    std::call_once(prepack_backward_once, [this] {
      backward_weights = packed_weights;
      for (engine::LayerWeights& lw : backward_weights.layers)
        for (int p = 0; p < kNumProj; ++p) {
          const engine::ProjShape shape = engine::proj_shape(dims, p);
          std::shared_ptr<void> owner;
          const MatrixRef t = be.prepare_weight(transposed(lw.proj[p]), shape.in, shape.out, &owner);
          if (!owner) continue;
          prepared.push_back(std::move(owner));
          lw.proj[p].panels_t = t.panels;
          release_mapped_pages(lw.proj[p], shape.out, shape.in);
        }
    });
    return backward_weights;
  }

 private:
  std::once_flag prepack_once, prepack_backward_once;
  engine::ModelWeights packed_weights, backward_weights;
  std::vector<std::shared_ptr<void>> prepared;  // the backend's forms of the weights (prepare_weight)
  std::vector<Buffer> placed;
  std::map<const char*, char*> copies;  // each host array's copy in `placed`
};

// An adapter as `m`'s backend sees it (its A and B copied there when the backend needs it).
engine::Adapter mirror_adapter(const engine::Adapter& host, const engine::ModelDims& d, Mirror& m) {
  engine::Adapter a = host;
  for (auto& layer : a.layers)
    for (int p = 0; p < kNumProj; ++p) {
      LoraRef& ref = layer[p];
      if (!ref.a) continue;
      const engine::ProjShape shape = engine::proj_shape(d, p);
      ref.a = m.in(ref.a, size_t(ref.r * shape.in));
      ref.b = m.in(ref.b, size_t(shape.out * ref.r));
    }
  return a;
}

// Gradient buffers as `m`'s backend sees them (added to, so copied both ways).
engine::Grads mirror_grads(const engine::Grads& host, const engine::ModelDims& d, const engine::Adapter* adapter,
                           Mirror& m) {
  engine::Grads g = host;
  const size_t table = size_t(d.vocab * d.hidden);
  g.embed = m.inout(g.embed, table);
  g.lm_head = m.inout(g.lm_head, table);
  g.final_norm = m.inout(g.final_norm, size_t(d.hidden));
  for (engine::Grads::Layer& gl : g.layers) {
    for (int p = 0; p < kNumProj; ++p) {
      const engine::ProjShape shape = engine::proj_shape(d, p);
      gl.proj[p] = m.inout(gl.proj[p], size_t(shape.out * shape.in));
    }
    gl.input_norm = m.inout(gl.input_norm, size_t(d.hidden));
    gl.post_attention_norm = m.inout(gl.post_attention_norm, size_t(d.hidden));
    gl.q_norm = m.inout(gl.q_norm, size_t(d.head_dim));
    gl.k_norm = m.inout(gl.k_norm, size_t(d.head_dim));
  }
  g.embed_rows.rows = m.inout(host.embed_rows.rows, size_t(host.embed_rows.count * d.hidden));
  g.lm_head_rows.rows = host.lm_head_rows.rows == host.embed_rows.rows
                            ? g.embed_rows.rows  // a tied head: one buffer takes both parts
                            : m.inout(host.lm_head_rows.rows, size_t(host.lm_head_rows.count * d.hidden));
  for (size_t l = 0; l < g.lora.size(); ++l)
    for (int p = 0; p < kNumProj; ++p) {
      engine::Grads::LoraGrad& lg = g.lora[l][p];
      if (!lg.a) continue;
      const int64_t r = adapter->layers[l][p].r;
      const engine::ProjShape shape = engine::proj_shape(d, p);
      lg.a = m.inout(lg.a, size_t(r * shape.in));
      lg.b = m.inout(lg.b, size_t(shape.out * r));
    }
  return g;
}

struct AdapterState {
  engine::Adapter adapter;
  // Trainable token rows: the [vocab, hidden] embedding and LM head (row-major) the adapter's
  // calls read in place of the model's, its rows written in (null data: the model's). A tied
  // head's table is the embedding's.
  MatrixRef embed{}, lm_head{};
  int64_t table_vocab = 0, table_hidden = 0;
  int64_t layers = 0;
  struct Shape {
    int layer, proj;
    int64_t in, out;
  };
  std::vector<Shape> in_out;  // each LoRA's feature sizes, checked against the model per call
};

// The adapter's token tables as `m`'s backend sees them (copied there per call on a backend
// with memory of its own), and the model's weights with them in place of its embedding and LM
// head: the weights of a call with that adapter.
struct TokenTables {
  MatrixRef embed{}, lm_head{};
};
TokenTables mirror_token_tables(const AdapterState* adapter, Mirror& m) {
  TokenTables t;
  if (!adapter) return t;
  const size_t bytes = size_t(adapter->table_vocab * adapter->table_hidden);
  auto place = [&](const MatrixRef& w) {
    return MatrixRef{m.in_bytes(w.data, bytes * size_t(dtype_size(w.dtype))), w.dtype, w.ld, false};
  };
  if (adapter->embed.data) t.embed = place(adapter->embed);
  if (adapter->lm_head.data) t.lm_head = adapter->lm_head.data == adapter->embed.data ? t.embed : place(adapter->lm_head);
  return t;
}
engine::ModelWeights with_token_tables(const engine::ModelWeights& w, const TokenTables& t) {
  engine::ModelWeights out = w;
  if (t.embed.data) out.embed = t.embed;
  if (t.lm_head.data) out.lm_head = t.lm_head;
  return out;
}

// `arrays` records the typed array the matrix views (its start and bytes).
MatrixRef parse_matrix(Args& parent, const char* key, int64_t rows, int64_t cols, std::map<const char*, size_t>& arrays) {
  Args m = parent.object(key);
  ArrayArg data = m.f32_or_bf16("data");
  const int64_t offset = m.integer_or("offset", 0, 0, INT64_MAX);
  const bool trans = m.boolean_or("transposed", false);
  const int64_t r = m.integer("rows", 1, INT32_MAX), c = m.integer("cols", 1, INT32_MAX);
  if (r != rows || c != cols)
    m.range_error(m.name("rows") + " x " + m.name("cols") + " is " + std::to_string(r) + " x " + std::to_string(c) +
                  ", expected " + std::to_string(rows) + " x " + std::to_string(cols));
  const int64_t inner = trans ? rows : cols, outer = trans ? cols : rows;
  const int64_t ld = m.integer_or("ld", inner, inner, INT64_MAX);
  // the last element read must lie inside the array
  const uint64_t last = uint64_t(offset) + uint64_t(outer - 1) * uint64_t(ld) + uint64_t(inner - 1);
  if (last >= data.length)
    m.range_error("reads element " + std::to_string(last) + " of " + m.name("data") + ", which has " +
                  std::to_string(data.length));
  const size_t elem = data.dtype() == DType::f32 ? 4 : 2;
  arrays[static_cast<const char*>(data.data)] = data.length * elem;
  return MatrixRef{static_cast<const uint8_t*>(data.data) + offset * elem, data.dtype(), ld, trans};
}

engine::VectorRef parse_vector(Args& parent, const char* key, int64_t dim, std::map<const char*, size_t>& arrays) {
  ArrayArg a = parent.f32_or_bf16(key);
  parent.expect_length(key, a, uint64_t(dim), "its dimension");
  arrays[static_cast<const char*>(a.data)] = a.length * size_t(dtype_size(a.dtype()));
  return engine::VectorRef{a.data, a.dtype()};
}

engine::ModelDims parse_dims(Args& args) {
  Args d = args.object("dims");
  engine::ModelDims dims;
  dims.hidden = d.integer("hidden", 1, 1 << 20);
  dims.intermediate = d.integer("intermediate", 1, 1 << 22);
  dims.layers = d.integer("layers", 0, 4096);
  dims.heads = d.integer("heads", 1, 4096);
  dims.kv_heads = d.integer("kvHeads", 1, 4096);
  dims.head_dim = d.integer("headDim", 2, 65536);
  dims.vocab = d.integer("vocab", 1, INT32_MAX);
  dims.eps = float(d.number("eps"));
  dims.rope_theta = d.number("ropeTheta");
  const std::string pairing = d.string_or("ropePairing", "adjacent");
  if (pairing == "adjacent") dims.pairing = RopePairing::adjacent;
  else if (pairing == "half") dims.pairing = RopePairing::half;
  else d.range_error(d.name("ropePairing") + " must be 'adjacent' or 'half', got '" + pairing + "'");
  dims.qk_norm = d.boolean_or("qkNorm", false);
  if (dims.heads % dims.kv_heads != 0) d.range_error(d.name("heads") + " must be a multiple of " + d.name("kvHeads"));
  if (dims.head_dim % 2 != 0) d.range_error(d.name("headDim") + " must be even");
  return dims;
}

class NativeModel : public Napi::ObjectWrap<NativeModel> {
 public:
  static void Export(Napi::Env env, Napi::Object exports) {
    exports.Set("Model", DefineClass(env, "Model",
                                     {InstanceMethod("forward", &NativeModel::Forward),
                                      InstanceMethod("forwardSync", &NativeModel::ForwardSync),
                                      InstanceMethod("trainStep", &NativeModel::TrainStep),
                                      InstanceMethod("decode", &NativeModel::Decode),
                                      InstanceMethod("trainStepSync", &NativeModel::TrainStepSync),
                                      InstanceMethod("dispose", &NativeModel::Dispose),
                                      InstanceAccessor("backend", &NativeModel::BackendName, nullptr)}));
  }

  NativeModel(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeModel>(info) {
    Args args(info, "Model");
    auto st = std::make_shared<ModelState>(args.backend());
    const engine::ModelDims& d = st->dims = parse_dims(args);
    auto& arrays = st->host_arrays;
    st->weights.embed = parse_matrix(args, "embed", d.vocab, d.hidden, arrays);
    if (st->weights.embed.trans) args.range_error("'embed' must not be transposed");
    st->weights.lm_head = parse_matrix(args, "lmHead", d.vocab, d.hidden, arrays);
    st->weights.final_norm = parse_vector(args, "finalNorm", d.hidden, arrays);
    std::vector<Args> layers = args.objects("layers", size_t(d.layers), size_t(d.layers));
    for (Args& l : layers) {
      engine::LayerWeights lw;
      for (int p = 0; p < kNumProj; ++p) {
        const engine::ProjShape shape = engine::proj_shape(d, p);
        lw.proj[p] = parse_matrix(l, engine::kProjections[p].key, shape.out, shape.in, arrays);
      }
      lw.input_norm = parse_vector(l, "inputNorm", d.hidden, arrays);
      lw.post_attention_norm = parse_vector(l, "postAttentionNorm", d.hidden, arrays);
      if (d.qk_norm) {
        lw.q_norm = parse_vector(l, "qNorm", d.head_dim, arrays);
        lw.k_norm = parse_vector(l, "kNorm", d.head_dim, arrays);
      }
      st->weights.layers.push_back(lw);
    }
    // The LM head's products read it as [vocab, hidden] rows (the loss, scoring): a checkpoint
    // that stores it otherwise (Paddle's untied [hidden, vocab]) gets a row-major copy, once.
    if (st->weights.lm_head.trans || st->weights.lm_head.ld != d.hidden) st->copy_lm_head_rows();
    st->prepack = args.boolean_or("prepack", true);
    try {
      st->place_weights();
    } catch (const std::exception& e) {
      args.range_error(std::string("could not place the weights on the '") + st->be.name() + "' backend: " + e.what());
    }
    st->pins = std::move(args.pins());
    kept_ = std::move(args.kept());
    state_ = std::move(st);
  }

  const std::shared_ptr<ModelState>& state(Args& args) {
    if (!state_) args.range_error("the model has been disposed");
    // Weights read in place from a checkpoint file: a file truncated since would crash this call.
    for (const auto& pin : state_->pins) check_mapped_unchanged(args.env(), pin);
    return state_;
  }

 private:
  Napi::Value Forward(const Napi::CallbackInfo& info) { return RunForward(info, false); }
  Napi::Value ForwardSync(const Napi::CallbackInfo& info) { return RunForward(info, true); }
  Napi::Value RunForward(const Napi::CallbackInfo& info, bool sync);
  Napi::Value TrainStep(const Napi::CallbackInfo& info) { return RunTrainStep(info, false); }
  Napi::Value TrainStepSync(const Napi::CallbackInfo& info) { return RunTrainStep(info, true); }
  Napi::Value RunTrainStep(const Napi::CallbackInfo& info, bool sync);
  Napi::Value Decode(const Napi::CallbackInfo& info);

  // The backend the model's weights live on and its calls run on: 'cpu' | 'cuda' | 'checked'.
  Napi::Value BackendName(const Napi::CallbackInfo& info) {
    return state_ ? Napi::String::New(info.Env(), state_->be.name()) : info.Env().Undefined();
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    state_.reset();  // running jobs hold their own reference
    kept_.clear();
    return info.Env().Undefined();
  }

  std::shared_ptr<ModelState> state_;
  std::vector<Napi::Reference<Napi::Value>> kept_;
};

class NativeAdapter : public Napi::ObjectWrap<NativeAdapter> {
 public:
  static Napi::FunctionReference* constructor;

  static void Export(Napi::Env env, Napi::Object exports) {
    Napi::Function cls = DefineClass(env, "Adapter", {InstanceMethod("dispose", &NativeAdapter::Dispose)});
    constructor = new Napi::FunctionReference(Napi::Persistent(cls));
    exports.Set("Adapter", cls);
  }

  NativeAdapter(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeAdapter>(info) {
    Args args(info, "Adapter");
    auto st = std::make_shared<AdapterState>();
    std::vector<Args> layers = args.objects("layers", 0, 4096);
    for (Args& l : layers) {
      std::array<LoraRef, kNumProj> refs{};
      for (int p = 0; p < kNumProj; ++p) {
        const char* key = engine::proj_name(p);
        if (!l.has(key)) continue;
        Args a = l.object(key);
        const int64_t rank = a.integer("rank", 1, 4096);
        const int64_t in = a.integer("inFeatures", 1, INT32_MAX), out = a.integer("outFeatures", 1, INT32_MAX);
        ArrayArg A = a.f32("a"), B = a.f32("b");
        a.expect_length("a", A, uint64_t(rank) * in, "rank * inFeatures");
        a.expect_length("b", B, uint64_t(out) * rank, "outFeatures * rank");
        refs[p] = LoraRef{A.f32(), B.f32(), rank, float(a.number("scale"))};
        st->in_out.push_back({int(st->adapter.layers.size()), p, in, out});
      }
      st->adapter.layers.push_back(refs);
    }
    st->layers = int64_t(layers.size());
    parse_token_tables(args, *st);
    st->adapter.dropout = float(args.number_or("dropout", 0.0));
    if (st->adapter.dropout < 0 || st->adapter.dropout >= 1) args.range_error("'dropout' must be in [0, 1)");
    kept_ = std::move(args.kept());
    state_ = std::move(st);
  }

  std::shared_ptr<AdapterState> state_;

 private:
  // embed?, lmHead?: [vocab, hidden] row-major tables (trainable token rows); lmHead may view
  // embed's array itself (a tied head).
  static void parse_token_tables(Args& args, AdapterState& st) {
    std::map<const char*, size_t> arrays;  // unused: the adapter's arrays are never placed once
    for (const char* key : {"embed", "lmHead"}) {
      if (!args.has(key)) continue;
      Args t = args.object(key);
      const int64_t vocab = t.integer("rows", 1, INT32_MAX), hidden = t.integer("cols", 1, INT32_MAX);
      if (st.table_vocab && (vocab != st.table_vocab || hidden != st.table_hidden))
        args.range_error("'embed' and 'lmHead' must have the same shape");
      st.table_vocab = vocab;
      st.table_hidden = hidden;
      const MatrixRef w = parse_matrix(args, key, vocab, hidden, arrays);
      if (w.trans || w.ld != hidden) args.range_error(args.name(key) + " must be row-major (not transposed, ld = cols)");
      (std::string(key) == "embed" ? st.embed : st.lm_head) = w;
    }
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    state_.reset();
    kept_.clear();
    return info.Env().Undefined();
  }
  std::vector<Napi::Reference<Napi::Value>> kept_;
};

Napi::FunctionReference* NativeAdapter::constructor = nullptr;

// new KvCache({ maxLength }): a generation cache, sized for a model at its first decode.
class NativeKvCache : public Napi::ObjectWrap<NativeKvCache> {
 public:
  static Napi::FunctionReference* constructor;

  static void Export(Napi::Env env, Napi::Object exports) {
    Napi::Function cls = DefineClass(env, "KvCache", {InstanceAccessor("length", &NativeKvCache::Length, nullptr),
                                                      InstanceMethod("dispose", &NativeKvCache::Dispose)});
    constructor = new Napi::FunctionReference(Napi::Persistent(cls));
    exports.Set("KvCache", cls);
  }

  NativeKvCache(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeKvCache>(info) {
    Args args(info, "KvCache");
    max_length_ = args.integer("maxLength", 1, 1 << 20);
    cache_ = std::make_shared<engine::KvCache>();
  }

  std::shared_ptr<engine::KvCache> cache_;
  int64_t max_length_ = 0;

 private:
  Napi::Value Length(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), cache_ ? double(cache_->length) : 0.0);
  }
  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    cache_.reset();
    return info.Env().Undefined();
  }
};

Napi::FunctionReference* NativeKvCache::constructor = nullptr;

// The batch fields shared by forward and trainStep: inputIds, attentionMask, segmentIds, batch, seq.
engine::Batch parse_batch(Args& args, const engine::ModelDims& d) {
  const int64_t B = args.integer("batch", 1, INT32_MAX), T = args.integer("seq", 1, INT32_MAX);
  const uint64_t n = uint64_t(B) * T;
  ArrayArg ids = args.i32("inputIds");
  args.expect_length("inputIds", ids, n, "batch * seq");
  for (uint64_t i = 0; i < n; ++i)
    if (ids.i32()[i] < 0 || ids.i32()[i] >= d.vocab)
      args.range_error("'inputIds' holds " + std::to_string(ids.i32()[i]) + " at position " + std::to_string(i) +
                       ", outside the vocabulary [0, " + std::to_string(d.vocab) + ")");
  engine::Batch batch;
  batch.input_ids = ids.i32();
  batch.batch = B;
  batch.seq = T;
  if (args.has("attentionMask")) {
    ArrayArg mask = args.i32("attentionMask");
    args.expect_length("attentionMask", mask, n, "batch * seq");
    batch.attention_mask = mask.i32();
  }
  if (args.has("segmentIds")) {
    ArrayArg segments = args.i32("segmentIds");
    args.expect_length("segmentIds", segments, n, "batch * seq");
    batch.segment_ids = segments.i32();
  }
  return batch;
}

std::shared_ptr<AdapterState> parse_adapter(Args& args, const engine::ModelDims& d) {
  if (!args.has("adapter")) return nullptr;
  Napi::Value v = args.value("adapter");
  if (!v.IsObject() || !v.As<Napi::Object>().InstanceOf(NativeAdapter::constructor->Value()))
    args.type_error("'adapter' must be a native Adapter");
  std::shared_ptr<AdapterState> adapter = NativeAdapter::Unwrap(v.As<Napi::Object>())->state_;
  if (!adapter) args.range_error("'adapter' has been disposed");
  if (adapter->layers != d.layers)
    args.range_error("'adapter' has " + std::to_string(adapter->layers) + " layers, the model " + std::to_string(d.layers));
  if (adapter->table_vocab && (adapter->table_vocab != d.vocab || adapter->table_hidden != d.hidden))
    args.range_error("'adapter' has token tables of " + std::to_string(adapter->table_vocab) + " x " +
                     std::to_string(adapter->table_hidden) + ", the model's embedding is " + std::to_string(d.vocab) +
                     " x " + std::to_string(d.hidden));
  for (const auto& io : adapter->in_out) {
    const engine::ProjShape shape = engine::proj_shape(d, io.proj);
    const int64_t out_f = shape.out, in_f = shape.in;
    if (io.in != in_f || io.out != out_f)
      args.range_error("'adapter' layer " + std::to_string(io.layer) + " " + engine::proj_name(io.proj) + " is " +
                       std::to_string(io.out) + " x " + std::to_string(io.in) + ", the model's is " +
                       std::to_string(out_f) + " x " + std::to_string(in_f));
  }
  args.keep(v);
  return adapter;
}

Napi::Value NativeModel::RunForward(const Napi::CallbackInfo& info, bool sync) {
  Args args(info, sync ? "forwardSync" : "forward");
  std::shared_ptr<ModelState> st = state(args);
  const engine::ModelDims& d = st->dims;
  engine::Batch batch = parse_batch(args, d);
  const uint64_t n = uint64_t(batch.batch) * batch.seq;
  engine::ForwardOutputs out;
  if (args.has("hidden")) {
    ArrayArg h = args.f32("hidden");
    args.expect_length("hidden", h, n * d.hidden, "batch * seq * hidden");
    out.hidden = h.f32();
  }
  if (args.has("logits")) {
    ArrayArg lg = args.f32("logits");
    args.expect_length("logits", lg, n * d.vocab, "batch * seq * vocab");
    out.logits = lg.f32();
  }
  if (args.has("lastHidden")) {
    ArrayArg lh = args.f32("lastHidden");
    args.expect_length("lastHidden", lh, uint64_t(batch.batch) * d.hidden, "batch * hidden");
    out.last_hidden = lh.f32();
  }
  if (args.has("pooled")) {
    ArrayArg pooled = args.f32("pooled");
    args.expect_length("pooled", pooled, uint64_t(batch.batch) * d.hidden, "batch * hidden");
    out.pooled = pooled.f32();
  }
  // scoring: targets [batch, seq] (negative = not scored) -> rowLogProbs [batch] (Float64Array)
  if (args.has("targets") != args.has("rowLogProbs")) args.type_error("'targets' and 'rowLogProbs' go together");
  std::shared_ptr<std::vector<int32_t>> targets;
  double* row_log_probs = nullptr;
  if (args.has("targets")) {
    ArrayArg tg = args.i32("targets");
    args.expect_length("targets", tg, n, "batch * seq");
    targets = std::make_shared<std::vector<int32_t>>(tg.i32(), tg.i32() + n);  // JS may change the array meanwhile
    for (uint64_t i = 0; i < n; ++i)
      if ((*targets)[i] >= d.vocab)
        args.range_error("'targets' holds " + std::to_string((*targets)[i]) + " at position " + std::to_string(i) +
                         ", outside the vocabulary");
    Napi::Value rv = args.value("rowLogProbs");
    if (!rv.IsTypedArray() || rv.As<Napi::TypedArray>().TypedArrayType() != napi_float64_array)
      args.type_error("'rowLogProbs' must be a Float64Array");
    Napi::TypedArray ta = rv.As<Napi::TypedArray>();
    if (ta.ElementLength() != size_t(batch.batch)) args.range_error("'rowLogProbs' must hold batch values");
    row_log_probs = reinterpret_cast<double*>(static_cast<uint8_t*>(ta.ArrayBuffer().Data()) + ta.ByteOffset());
    args.keep(rv);
    out.targets = targets->data();
    out.row_log_probs = row_log_probs;
  }
  const std::string pooling = args.string_or("pooling", "last");
  if (!engine::pooling_from_name(pooling, &out.pooling))
    args.range_error(args.name("pooling") + " must be 'last', 'mean' or 'first', got '" + pooling + "'");
  // The classification head on the pooled rows, in the same call: headLogits [batch, classes].
  std::shared_ptr<engine::ClassifierHead> head;
  if (args.has("head")) {
    Args h = args.object("head");
    head = std::make_shared<engine::ClassifierHead>(parse_head(h, d.hidden));
    ArrayArg lg = args.f32("headLogits");
    args.expect_length("headLogits", lg, uint64_t(batch.batch) * head->classes, "batch * head.classes");
    head->logits = lg.f32();
  } else if (args.has("headLogits")) {
    args.type_error("'headLogits' needs a 'head'");
  }
  const bool single_thread = args.boolean_or("singleThread", false);
  const Precision precision = args.precision(st->be, Op::gemm);
  std::shared_ptr<AdapterState> adapter = parse_adapter(args, d);
  args.keep(Value());
  Job job{[st, adapter, batch, out, single_thread, precision, head, targets] {
            auto run = [&] {
              engine::WorkspacePool::Lease ws = st->workspaces.acquire();
              const engine::ModelDims& d = st->dims;
              const size_t n = size_t(batch.batch * batch.seq);
              std::vector<float> pooled_for_head;  // the pooled rows, when only the head's logits are asked for
              engine::ForwardOutputs out_h = out;
              if (head && !out_h.pooled) {
                pooled_for_head.resize(size_t(batch.batch * d.hidden));
                out_h.pooled = pooled_for_head.data();
              }
              Mirror m(st->be);
              engine::ForwardOutputs o = out_h;
              o.hidden = m.out(out.hidden, n * d.hidden);
              o.logits = m.out(out.logits, n * d.vocab);
              o.last_hidden = m.out(out.last_hidden, size_t(batch.batch * d.hidden));
              o.pooled = m.out(out_h.pooled, size_t(batch.batch * d.hidden));
              engine::Adapter a = adapter ? mirror_adapter(adapter->adapter, d, m) : engine::Adapter{};
              const TokenTables tables = mirror_token_tables(adapter.get(), m);
              engine::forward(d, with_token_tables(st->weights_for(precision), tables), adapter ? &a : nullptr, batch, o,
                              precision, *ws);
              m.finish();
              if (head) engine::run_head(*head, out_h.pooled, batch.batch, d.hidden, nullptr);
            };
            if (single_thread) cpu::run_on_this_thread(run);
            else run();
          },
          {}};
  if (single_thread && !sync) return run_lane_job(info.Env(), "forward", std::move(job), args);
  return run_job(info.Env(), "forward", std::move(job), args, sync);
}

// decode({ cache, inputIds: Int32Array [count], logits: Float32Array [vocab], adapter? }) -> Promise
// Runs the new tokens after those in the cache and writes the last one's logits.
Napi::Value NativeModel::Decode(const Napi::CallbackInfo& info) {
  Args args(info, "decode");
  std::shared_ptr<ModelState> st = state(args);
  const engine::ModelDims& d = st->dims;
  Napi::Value cv = args.value("cache");
  if (!cv.IsObject() || !cv.As<Napi::Object>().InstanceOf(NativeKvCache::constructor->Value()))
    args.type_error("'cache' must be a native KvCache");
  NativeKvCache* kv = NativeKvCache::Unwrap(cv.As<Napi::Object>());
  std::shared_ptr<engine::KvCache> cache = kv->cache_;
  if (!cache) args.range_error("'cache' has been disposed");
  ArrayArg ids = args.i32("inputIds");
  if (ids.length == 0) args.range_error("'inputIds' is empty");
  for (size_t i = 0; i < ids.length; ++i)
    if (ids.i32()[i] < 0 || ids.i32()[i] >= d.vocab)
      args.range_error("'inputIds' holds " + std::to_string(ids.i32()[i]) + " at position " + std::to_string(i) +
                       ", outside the vocabulary [0, " + std::to_string(d.vocab) + ")");
  if (cache->capacity == 0) cache->reset(st->workspaces.backend(), d, kv->max_length_);
  if (!cache->fits(d))
    args.range_error("'cache' belongs to a model of another shape");
  if (cache->length + int64_t(ids.length) > cache->capacity)
    args.range_error("the cache holds " + std::to_string(cache->length) + " of " + std::to_string(cache->capacity) +
                     " tokens; " + std::to_string(ids.length) + " more do not fit");
  ArrayArg logits = args.f32("logits");
  args.expect_length("logits", logits, uint64_t(d.vocab), "vocab");
  std::shared_ptr<AdapterState> adapter = parse_adapter(args, d);
  const Precision precision = args.precision(st->be, Op::gemm);
  args.keep(Value());
  args.keep(cv);
  const int64_t count = int64_t(ids.length);
  std::vector<int32_t> id_copy(ids.i32(), ids.i32() + count);  // JS may change the array meanwhile
  Job job{[st, adapter, cache, id_copy, count, logits, precision] {
            engine::WorkspacePool::Lease ws = st->workspaces.acquire();
            Mirror m(st->be);
            engine::Adapter a = adapter ? mirror_adapter(adapter->adapter, st->dims, m) : engine::Adapter{};
            const TokenTables tables = mirror_token_tables(adapter.get(), m);
            engine::forward_cached(st->dims, with_token_tables(st->weights_for(precision), tables),
                                   adapter ? &a : nullptr, *cache, id_copy.data(), count,
                                   m.out(logits.f32(), size_t(st->dims.vocab)), precision, *ws);
            m.finish();
          },
          {}};
  return run_job(info.Env(), "decode", std::move(job), args, false);
}

// trainStep({ inputIds, attentionMask?, batch, seq, adapter?, recompute?,
//             loss: { kind: 'lm', labels? } | { kind: 'classify', weight, bias?, classes, labels,
//                     pooling?, classWeights?, dWeight?, dBias?, logits? } | { kind: 'meanSquare' }
//                   | { kind: 'weightedRows', targets [batch * seq], rowWeights: Float64Array [batch],
//                       rowLogProbs?: Float64Array [batch] } (engine/losses.h weighted_rows_loss),
//             forwardOnly? (the step's forward and loss, its dropout included, no backward),
//             grads: { embed?, lmHead?, finalNorm?, layers?: [{ q?, ..., down?, inputNorm?,
//                      postAttentionNorm?, qNorm?, kNorm? }], lora?: [{ q_proj?: { a, b }, ... }],
//                      embedRows?: { ids, rows }, lmHeadRows?: { ids, rows } } })
//   embedRows / lmHeadRows: the gradients of a few rows (distinct ids) of the embedding / LM head
//   alone (engine::Grads::TokenRows), trained with the base frozen.
//   -> Promise<{ loss, count }>. Gradients are added to the given f32 arrays.
Napi::Value NativeModel::RunTrainStep(const Napi::CallbackInfo& info, bool sync) {
  Args args(info, sync ? "trainStepSync" : "trainStep");
  std::shared_ptr<ModelState> st = state(args);
  const engine::ModelDims& d = st->dims;
  engine::Batch batch = parse_batch(args, d);
  const uint64_t n = uint64_t(batch.batch) * batch.seq;
  std::shared_ptr<AdapterState> adapter = parse_adapter(args, d);
  engine::TrainOptions options;
  options.recompute = args.boolean_or("recompute", false);
  options.dropout_seed = uint64_t(args.integer_or("dropoutSeed", 0, 0, (int64_t(1) << 53)));
  options.precision = args.precision(st->be, Op::gemm);
  options.forward_only = args.boolean_or("forwardOnly", false);

  auto grads = std::make_shared<engine::Grads>();
  Args g = args.object("grads");
  auto opt_f32 = [](Args& a, const char* key, uint64_t len, const char* what) -> float* {
    if (!a.has(key)) return nullptr;
    ArrayArg arr = a.f32(key);
    a.expect_length(key, arr, len, what);
    return arr.f32();
  };
  grads->embed = opt_f32(g, "embed", uint64_t(d.vocab) * d.hidden, "vocab * hidden");
  grads->lm_head = opt_f32(g, "lmHead", uint64_t(d.vocab) * d.hidden, "vocab * hidden");
  grads->final_norm = opt_f32(g, "finalNorm", uint64_t(d.hidden), "hidden");
  if (g.has("layers")) {
    for (Args& l : g.objects("layers", size_t(d.layers), size_t(d.layers))) {
      engine::Grads::Layer gl;
      for (int p = 0; p < kNumProj; ++p) {
        const engine::ProjShape shape = engine::proj_shape(d, p);
        gl.proj[p] = opt_f32(l, engine::kProjections[p].key, uint64_t(shape.out) * shape.in, "out * in");
      }
      gl.input_norm = opt_f32(l, "inputNorm", uint64_t(d.hidden), "hidden");
      gl.post_attention_norm = opt_f32(l, "postAttentionNorm", uint64_t(d.hidden), "hidden");
      gl.q_norm = d.qk_norm ? opt_f32(l, "qNorm", uint64_t(d.head_dim), "headDim") : nullptr;
      gl.k_norm = d.qk_norm ? opt_f32(l, "kNorm", uint64_t(d.head_dim), "headDim") : nullptr;
      grads->layers.push_back(gl);
    }
  }
  if (g.has("lora")) {
    if (!adapter) g.range_error(g.name("lora") + " needs an 'adapter'");
    for (Args& l : g.objects("lora", size_t(d.layers), size_t(d.layers))) {
      std::array<engine::Grads::LoraGrad, kNumProj> lg{};
      const size_t layer = grads->lora.size();
      for (int p = 0; p < kNumProj; ++p) {
        const char* key = engine::proj_name(p);
        if (!l.has(key)) continue;
        const LoraRef& ref = adapter->adapter.layers[layer][p];
        if (!ref.a) l.range_error(l.name(key) + ": the adapter has no LoRA there");
        const engine::ProjShape shape = engine::proj_shape(d, p);
        const int64_t out_f = shape.out, in_f = shape.in;
        Args ab = l.object(key);
        lg[p].a = opt_f32(ab, "a", uint64_t(ref.r) * in_f, "rank * in");
        lg[p].b = opt_f32(ab, "b", uint64_t(out_f) * ref.r, "out * rank");
        if (!lg[p].a || !lg[p].b) ab.type_error("needs both 'a' and 'b'");
      }
      grads->lora.push_back(lg);
    }
  }

  // trainable token rows: { ids: Int32Array [k], rows: Float32Array [k, hidden] }; lmHeadRows may
  // be embedRows' very arrays (a tied head).
  std::vector<std::shared_ptr<std::vector<int32_t>>> token_ids;  // JS may change the arrays meanwhile
  auto token_rows = [&](const char* key) {
    engine::Grads::TokenRows tr;
    if (!g.has(key)) return tr;
    Args r = g.object(key);
    ArrayArg ids = r.i32("ids");
    auto copy = std::make_shared<std::vector<int32_t>>(ids.i32(), ids.i32() + ids.length);
    std::vector<uint8_t> seen(size_t(d.vocab), 0);
    for (size_t i = 0; i < copy->size(); ++i) {
      const int32_t id = (*copy)[i];
      if (id < 0 || id >= d.vocab)
        r.range_error(r.name("ids") + " holds " + std::to_string(id) + " at position " + std::to_string(i) +
                      ", outside the vocabulary [0, " + std::to_string(d.vocab) + ")");
      if (seen[size_t(id)]++) r.range_error(r.name("ids") + " holds " + std::to_string(id) + " twice");
    }
    tr.count = int64_t(copy->size());
    tr.rows = opt_f32(r, "rows", uint64_t(tr.count) * d.hidden, "ids.length * hidden");
    if (!tr.rows) r.type_error(r.name("rows") + " is required");
    tr.ids = copy->data();
    token_ids.push_back(std::move(copy));
    return tr;
  };
  grads->embed_rows = token_rows("embedRows");
  grads->lm_head_rows = token_rows("lmHeadRows");
  if (grads->lm_head_rows.rows && grads->lm_head_rows.rows == grads->embed_rows.rows &&
      *token_ids[0] != *token_ids[1])
    g.range_error(g.name("lmHeadRows") + " shares embedRows' rows, so it must have the same ids");

  // the loss
  Args ls = args.object("loss");
  const std::string kind = ls.string_or("kind", "");
  auto result = std::make_shared<engine::LossResult>();
  // Made in the job, with the gradient buffers as the backend sees them.
  std::function<engine::LossFn(engine::Grads&, const engine::ModelWeights&)> make_loss;
  if (kind == "lm") {
    const int32_t* labels = nullptr;
    if (ls.has("labels")) {
      ArrayArg lab = ls.i32("labels");
      ls.expect_length("labels", lab, n, "batch * seq");
      for (uint64_t i = 0; i < n; ++i)
        if (lab.i32()[i] >= d.vocab)
          ls.range_error("'labels' holds " + std::to_string(lab.i32()[i]) + " at position " + std::to_string(i) +
                         ", outside the vocabulary");
      labels = lab.i32();
    }
    make_loss = [st, batch, labels, precision = options.precision, result](engine::Grads& g, const engine::ModelWeights& w) {
      return engine::lm_loss(st->dims, w, batch, labels, g, precision, result.get());
    };
  } else if (kind == "classify") {
    engine::ClassifierHead head = parse_head(ls, d.hidden);
    const uint64_t C = uint64_t(head.classes);
    ArrayArg lab = ls.i32("labels");
    ls.expect_length("labels", lab, uint64_t(batch.batch), "batch");
    for (int64_t i = 0; i < batch.batch; ++i)
      if (lab.i32()[i] < 0 || lab.i32()[i] >= head.classes)
        ls.range_error("'labels' holds " + std::to_string(lab.i32()[i]) + " at position " + std::to_string(i) +
                       ", outside [0, classes)");
    head.labels = lab.i32();
    head.class_weights = opt_f32(ls, "classWeights", C, "classes");
    head.dweight = opt_f32(ls, "dWeight", C * d.hidden, "classes * hidden");
    head.dbias = opt_f32(ls, "dBias", C, "classes");
    head.logits = opt_f32(ls, "logits", uint64_t(batch.batch) * C, "batch * classes");
    const std::string pooling = ls.string_or("pooling", "last");
    if (!engine::pooling_from_name(pooling, &head.pooling))
      ls.range_error(ls.name("pooling") + " must be 'last', 'mean' or 'first', got '" + pooling + "'");
    make_loss = [st, batch, head, result](engine::Grads&, const engine::ModelWeights&) {
      return engine::classifier_loss(st->dims, batch, head, result.get());
    };
  } else if (kind == "weightedRows") {
    // Copied: JS may change the arrays while the step runs.
    ArrayArg tg = ls.i32("targets");
    ls.expect_length("targets", tg, n, "batch * seq");
    for (uint64_t i = 0; i < n; ++i)
      if (tg.i32()[i] >= d.vocab)
        ls.range_error("'targets' holds " + std::to_string(tg.i32()[i]) + " at position " + std::to_string(i) +
                       ", outside the vocabulary");
    auto targets = std::make_shared<std::vector<int32_t>>(tg.i32(), tg.i32() + n);
    ArrayArg rw = ls.f64("rowWeights");
    ls.expect_length("rowWeights", rw, uint64_t(batch.batch), "batch");
    for (int64_t b = 0; b < batch.batch; ++b)
      if (!std::isfinite(rw.f64()[b]))
        ls.range_error("'rowWeights' holds " + std::to_string(rw.f64()[b]) + " at row " + std::to_string(b) + ": weights must be finite");
    auto weights = std::make_shared<std::vector<double>>(rw.f64(), rw.f64() + batch.batch);
    double* row_log_probs = nullptr;
    if (ls.has("rowLogProbs")) {
      ArrayArg out = ls.f64("rowLogProbs");
      ls.expect_length("rowLogProbs", out, uint64_t(batch.batch), "batch");
      row_log_probs = out.f64();
    }
    make_loss = [st, batch, targets, weights, row_log_probs, precision = options.precision, result](
                    engine::Grads& g, const engine::ModelWeights& w) {
      return engine::weighted_rows_loss(st->dims, w, batch, targets->data(), weights->data(), g, precision,
                                        row_log_probs, result.get());
    };
  } else if (kind == "meanSquare") {
    make_loss = [st, batch, result](engine::Grads&, const engine::ModelWeights&) {
      return engine::mean_square_loss(st->dims, batch, result.get());
    };
  } else {
    ls.range_error(ls.name("kind") + " must be 'lm', 'classify', 'weightedRows' or 'meanSquare', got '" + kind + "'");
  }
  args.keep(Value());
  Job job{[st, adapter, batch, grads, token_ids, options, make_loss] {
            engine::WorkspacePool::Lease ws = st->workspaces.acquire();
            Mirror m(st->be);
            engine::Adapter a = adapter ? mirror_adapter(adapter->adapter, st->dims, m) : engine::Adapter{};
            engine::Grads g = mirror_grads(*grads, st->dims, adapter ? &a : nullptr, m);
            const TokenTables tables = mirror_token_tables(adapter.get(), m);
            // The loss reads the LM head as stored; the layers, in the backend's form (weights_for).
            const engine::ModelWeights stored = with_token_tables(st->weights, tables);
            engine::train_step(st->dims, with_token_tables(st->weights_for(options.precision, true), tables),
                               adapter ? &a : nullptr, batch, make_loss(g, stored), g, options, *ws);
            m.finish();
          },
          [result](Napi::Env env) -> Napi::Value {
            Napi::Object o = Napi::Object::New(env);
            o.Set("loss", result->loss);
            o.Set("count", double(result->count));
            return o;
          }};
  return run_job(info.Env(), "trainStep", std::move(job), args, sync);
}

// projections: the seven projections of a layer as the engine states them (engine/model.h
// kProjections): [{ name, key, module, out, in }], out and in naming model dimensions
// ('hidden' | 'intermediate' | 'q' = heads * headDim | 'kv' = kvHeads * headDim).
Napi::Array projections_table(Napi::Env env) {
  Napi::Array table = Napi::Array::New(env, kNumProj);
  for (int p = 0; p < kNumProj; ++p) {
    const engine::ProjSpec& spec = engine::kProjections[p];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", spec.name);
    o.Set("key", spec.key);
    o.Set("module", spec.module);
    o.Set("out", engine::proj_dim_name(spec.out));
    o.Set("in", engine::proj_dim_name(spec.in));
    table.Set(uint32_t(p), o);
  }
  return table;
}

[[maybe_unused]] const bool registered = register_exporter([](Napi::Env env, Napi::Object exports) {
  exports.Set("projections", projections_table(env));
  NativeModel::Export(env, exports);
  NativeAdapter::Export(env, exports);
  NativeKvCache::Export(env, exports);
});

}  // namespace
}  // namespace ernie::addon
