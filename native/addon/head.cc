// classifierHead({ features, batch, hidden, classes, weight, bias?, featureMean?, featureStd?,
//                  labels?, classWeights?, dWeight?, dBias?, logits?, dFeatures? })
//   -> { loss, weightSum, correct }
//   features [batch, hidden]: pooled rows; the head of engine/head.h on them: logits [batch,
//   classes] written when given; with labels [batch] the class-weighted mean cross-entropy, its
//   gradients added to dWeight / dBias and written to dFeatures. Host arithmetic (double).
#include <memory>
#include <string>

#include "addon/head.h"

namespace ernie::addon {

engine::ClassifierHead parse_head(Args& args, int64_t hidden) {
  engine::ClassifierHead head;
  head.classes = args.integer("classes", 2, 1 << 16);
  const uint64_t C = uint64_t(head.classes), H = uint64_t(hidden);
  ArrayArg w = args.f32("weight");
  args.expect_length("weight", w, C * H, "classes * hidden");
  head.weight = w.f32();
  if (args.has("bias")) {
    ArrayArg b = args.f32("bias");
    args.expect_length("bias", b, C, "classes");
    head.bias = b.f32();
  }
  if (args.has("featureMean") != args.has("featureStd"))
    args.type_error("'featureMean' and 'featureStd' go together: pass both or neither");
  if (args.has("featureMean")) {
    ArrayArg mean = args.f32("featureMean"), std = args.f32("featureStd");
    args.expect_length("featureMean", mean, H, "hidden");
    args.expect_length("featureStd", std, H, "hidden");
    for (uint64_t j = 0; j < H; ++j)
      if (!(std.f32()[j] > 0))
        args.range_error("'featureStd[" + std::to_string(j) + "]' must be > 0, got " + std::to_string(std.f32()[j]));
    head.feature_mean = mean.f32();
    head.feature_std = std.f32();
  }
  return head;
}

ERNIE_OP(classifierHead) {
  const int64_t B = args.integer("batch", 0, INT32_MAX), H = args.integer("hidden", 1, INT32_MAX);
  engine::ClassifierHead head = parse_head(args, H);
  const uint64_t C = uint64_t(head.classes);
  ArrayArg features = args.f32("features");
  args.expect_length("features", features, uint64_t(B) * H, "batch * hidden");
  auto opt = [&](const char* key, uint64_t n, const char* what) -> float* {
    if (!args.has(key)) return nullptr;
    ArrayArg a = args.f32(key);
    args.expect_length(key, a, n, what);
    args.expect_disjoint(key, a, "features", features);
    return a.f32();
  };
  head.logits = opt("logits", uint64_t(B) * C, "batch * classes");
  if (args.has("labels")) {
    ArrayArg labels = args.i32("labels");
    args.expect_length("labels", labels, uint64_t(B), "batch");
    for (int64_t i = 0; i < B; ++i)
      if (labels.i32()[i] < 0 || uint64_t(labels.i32()[i]) >= C)
        args.range_error("'labels' holds " + std::to_string(labels.i32()[i]) + " at position " + std::to_string(i) +
                         ", outside [0, classes)");
    head.labels = labels.i32();
    head.class_weights = opt("classWeights", C, "classes");
    head.dweight = opt("dWeight", C * uint64_t(H), "classes * hidden");
    head.dbias = opt("dBias", C, "classes");
  }
  float* dfeatures = head.labels ? opt("dFeatures", uint64_t(B) * H, "batch * hidden") : nullptr;
  auto out = std::make_shared<engine::HeadResult>();
  return Job{[head, features, B, H, dfeatures, out] { *out = engine::run_head(head, features.f32(), B, H, dfeatures); },
             [out](Napi::Env env) -> Napi::Value {
               Napi::Object r = Napi::Object::New(env);
               r.Set("loss", out->loss);
               r.Set("weightSum", out->weight_sum);
               r.Set("correct", double(out->correct));
               return r;
             }};
}

}  // namespace ernie::addon
