// crossEntropy({ hidden, weight, targets, tokens, hiddenSize, vocab, chunk, rowTile,
//                dhidden, dweight, gradScale }) -> { loss, count, lossSum }
//   hidden:  Float32Array [tokens, hiddenSize]
//   weight:  Float32Array | Uint16Array (bf16) [vocab, hiddenSize], the tied head
//   targets: Int32Array [tokens]; negative = ignored, otherwise < vocab
//   dhidden: Float32Array [tokens, hiddenSize], written when given
//   dweight: Float32Array [vocab, hiddenSize], added to when given
//   rowIds, dRows: Int32Array [k] (distinct, < vocab) and Float32Array [k, hiddenSize]: dweight's
//            rows rowIds alone, added to dRows (trainable token rows)
//   gradScale: the gradients are of gradScale * lossSum (default 1 / count: the mean loss)
//   precision: 'auto' (default) | 'fp32' | 'bf16', of the head's products (backend/ops.h)
//   device: 'cpu' (default) | 'cuda' | 'checked' (addon/op.h)
#include <algorithm>
#include <memory>
#include <string>
#include <vector>

#include "addon/mirror.h"
#include "addon/op.h"

namespace ernie::addon {
ERNIE_OP(crossEntropy) {
  CrossEntropyArgs ce;
  Backend& be = args.backend();
  ce.tokens = args.integer("tokens", 0, INT32_MAX);
  ce.hidden_size = args.integer("hiddenSize", 1, INT32_MAX);
  ce.vocab = args.integer("vocab", 1, INT32_MAX);
  ce.chunk = args.integer_or("chunk", 8192, 1, INT32_MAX);
  ce.row_tile = args.integer_or("rowTile", 512, 1, INT32_MAX);
  ce.precision = args.precision(be, Op::cross_entropy);
  // The logits block is row_tile x chunk floats (clamped to the problem): keep it bounded.
  const int64_t block = std::min(ce.chunk, ce.vocab) * std::min(ce.row_tile, std::max<int64_t>(ce.tokens, 1));
  if (block > (int64_t(1) << 28))
    args.range_error(args.name("rowTile") + " * " + args.name("chunk") + " must be at most 2^28 logits, got " +
                     std::to_string(block));

  ArrayArg hidden = args.f32("hidden");
  args.expect_length("hidden", hidden, uint64_t(ce.tokens) * ce.hidden_size, "tokens * hiddenSize");
  ArrayArg weight = args.f32_or_bf16("weight");
  args.expect_length("weight", weight, uint64_t(ce.vocab) * ce.hidden_size, "vocab * hiddenSize");
  ArrayArg targets = args.i32("targets");
  args.expect_length("targets", targets, uint64_t(ce.tokens), "tokens");
  for (int64_t t = 0; t < ce.tokens; ++t)
    if (targets.i32()[t] >= ce.vocab)
      args.range_error("'targets[" + std::to_string(t) + "]' is " + std::to_string(targets.i32()[t]) +
                       ", must be < vocab = " + std::to_string(ce.vocab) + " (or negative to ignore the position)");
  ce.hidden = hidden.f32();
  ce.weight = weight.data;
  ce.weight_dtype = weight.dtype();
  ce.targets = targets.i32();

  ArrayArg dhidden, dweight;
  if (args.has("dhidden")) {
    dhidden = args.f32("dhidden");
    args.expect_length("dhidden", dhidden, uint64_t(ce.tokens) * ce.hidden_size, "tokens * hiddenSize");
    args.expect_disjoint("dhidden", dhidden, "hidden", hidden);
    args.expect_disjoint("dhidden", dhidden, "weight", weight);
    args.expect_disjoint("dhidden", dhidden, "targets", targets);
    ce.dhidden = dhidden.f32();
  }
  if (args.has("dweight")) {
    dweight = args.f32("dweight");
    args.expect_length("dweight", dweight, uint64_t(ce.vocab) * ce.hidden_size, "vocab * hiddenSize");
    args.expect_disjoint("dweight", dweight, "hidden", hidden);
    args.expect_disjoint("dweight", dweight, "weight", weight);
    args.expect_disjoint("dweight", dweight, "targets", targets);
    if (ce.dhidden) args.expect_disjoint("dweight", dweight, "dhidden", dhidden);
    ce.dweight = dweight.f32();
  }
  if (args.has("rowIds") != args.has("dRows")) args.type_error("'rowIds' and 'dRows' go together");
  std::shared_ptr<std::vector<int32_t>> row_ids;  // JS may change the array meanwhile
  if (args.has("rowIds")) {
    ArrayArg ids = args.i32("rowIds");
    row_ids = std::make_shared<std::vector<int32_t>>(ids.i32(), ids.i32() + ids.length);
    std::vector<uint8_t> seen(size_t(ce.vocab), 0);
    for (size_t j = 0; j < row_ids->size(); ++j) {
      const int32_t id = (*row_ids)[j];
      if (id < 0 || id >= ce.vocab || seen[size_t(id)]++)
        args.range_error("'rowIds[" + std::to_string(j) + "]' is " + std::to_string(id) +
                         ": row ids must be distinct and in [0, vocab = " + std::to_string(ce.vocab) + ")");
    }
    ArrayArg drows = args.f32("dRows");
    args.expect_length("dRows", drows, uint64_t(row_ids->size()) * ce.hidden_size, "rowIds.length * hiddenSize");
    args.expect_disjoint("dRows", drows, "hidden", hidden);
    if (ce.dhidden) args.expect_disjoint("dRows", drows, "dhidden", dhidden);
    if (ce.dweight) args.expect_disjoint("dRows", drows, "dweight", dweight);
    ce.row_ids = row_ids->data();
    ce.row_count = int64_t(row_ids->size());
    ce.drows = drows.f32();
  }
  if (args.has("gradScale")) {
    ce.has_grad_scale = true;
    ce.grad_scale = float(args.number("gradScale"));
  }

  auto out = std::make_shared<CrossEntropyResult>();
  return Job{[ce, row_ids, out, &be] {
               Mirror m(be);
               CrossEntropyArgs d = ce;
               const size_t th = size_t(ce.tokens * ce.hidden_size), vh = size_t(ce.vocab * ce.hidden_size);
               d.hidden = m.in(ce.hidden, th);
               d.weight = m.in(static_cast<const char*>(ce.weight), vh * size_t(dtype_size(ce.weight_dtype)));
               d.targets = m.in(ce.targets, size_t(ce.tokens));
               d.dhidden = m.out(ce.dhidden, th);
               d.dweight = m.inout(ce.dweight, vh);
               d.row_ids = m.in(ce.row_ids, size_t(ce.row_count));
               d.drows = m.inout(ce.drows, size_t(ce.row_count * ce.hidden_size));
               *out = be.cross_entropy(d);
               m.finish();
             },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Object r = Napi::Object::New(env);
               r.Set("loss", Napi::Number::New(env, out->loss));
               r.Set("count", Napi::Number::New(env, double(out->count)));
               r.Set("lossSum", Napi::Number::New(env, out->loss_sum));
               return r;
             }};
}

}  // namespace ernie::addon
