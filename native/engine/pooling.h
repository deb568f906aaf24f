// Pooling: one feature row per sequence from the final hidden states, the rule stated once here
// (the classify loss, forward's `pooled` output and so predict and embed all use it):
//   last   the sequence's last real token (a decoder's only state that has seen the whole text)
//   mean   the mean over its real tokens (weights 1 / count)
//   first  its first real token
// A sequence with no real token pools to zeros.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "engine/model.h"

namespace ernie::engine {

enum class Pooling : int { last, mean, first };  // declared in engine/model.h

// The pooling's names as the addon and TypeScript take them ('last', 'mean', 'first').
const char* pooling_name(Pooling p);
bool pooling_from_name(const std::string& name, Pooling* out);

// The token rows (into the batch's B * T) sequence `s` pools, with their weights.
void pooling_rows(const Batch& batch, Pooling pooling, int64_t s, std::vector<std::pair<int64_t, float>>& rows);

// A batch's pooling as gather ranges on the backend (backend/ops.h GatherRowsArgs): one range
// per sequence. gather() pools [B * T, dim] rows into [B, dim]; scatter() adds a [B, dim]
// gradient back onto the rows.
class PoolRows {
 public:
  PoolRows(const Batch& batch, Pooling pooling, Workspace& ws);
  void gather(Backend& be, const float* src, int64_t dim, float* out) const;
  void scatter(Backend& be, const float* dout, int64_t dim, float* dsrc) const;

 private:
  GatherRowsArgs args(int64_t dim) const;
  int64_t count_;
  BufOf<int32_t> starts_, rows_;
  BufOf<float> weights_;
};

}  // namespace ernie::engine
