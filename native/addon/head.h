// The classification head's arguments (engine/head.h), as the classifierHead op and a Model's
// forward (its `head` option) read them: { weight, bias?, classes, featureMean?, featureStd? }.
#pragma once
#include "addon/op.h"
#include "engine/head.h"

namespace ernie::addon {

// weight [classes, hidden], bias [classes], featureMean and featureStd [hidden] (both or neither).
engine::ClassifierHead parse_head(Args& args, int64_t hidden);

}  // namespace ernie::addon
