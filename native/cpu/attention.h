// Fused causal attention, flash style, forward and backward.
//
// Layout (row-major f32): q [B, Tq, H, D]; k, v [B, Tk, KV, D]; out [B, Tq, H, D];
// lse [B, H, Tq] (natural log of the softmax denominator of the scaled scores). Query head h
// reads kv head h / (H / KV). Causal with bottom-right alignment: query row i sits at absolute
// position i + (Tk - Tq) and sees keys j <= that position; keys whose key_valid byte is 0 are
// excluded too, and so are keys before a row's key_start (packed documents: a row sees only its
// own document). A row that sees no key gets out = 0 and lse = -inf.
//
// The [Tq, Tk] score matrix never exists whole. The forward walks one query tile over the key
// tiles with an online softmax; the backward walks one key tile over the query tiles and
// recomputes the probabilities from lse. The forward forms S^T (keys x queries), so that the
// online softmax's per-query max and sum are element-wise vector ops down the key rows.
#pragma once
#include <cstddef>
#include <cstdint>

#include "backend/ops.h"
#include "cpu/dispatch.h"

namespace ernie::cpu {

// What the backward's tiles stream through, head-major ([B, H, Tq, D] and [B, H, Tq]) so that
// a tile's rows are one contiguous run: rows of q, dout, dq are H * D floats apart, a page or
// more at real sizes, which defeats the hardware prefetchers and the TLB.
struct AttentionBwdRows {
  float* q = nullptr;
  float* dout = nullptr;
  float* delta = nullptr;  // rowsum(dout * out): the softmax backward's per-row term
  float* dq = nullptr;     // a dq accumulator (see attention_backward)
};

// Tile sizes of this ISA's kernels (rows of queries / keys per work item).
struct AttentionBlocking {
  int fwd_q_tile, fwd_k_tile;
  int bwd_q_tile, bwd_k_tile;
};

// Floats of temporary memory the forward or the backward takes at these shapes: from
// args.scratch when that holds as many, allocated by the call otherwise.
int64_t attention_scratch_floats(const AttentionArgs& args, bool backward);
// out, lse from q, k, v (and key_valid).
void attention_forward(const AttentionArgs& args);
// dq, dk, dv (overwritten) from q, k, v, out, lse, dout (and key_valid).
void attention_backward(const AttentionArgs& args);

}  // namespace ernie::cpu

// Per-ISA pieces (cpu/kernels/attention.cc).
//   attention_blocking():                 tile sizes.
//   attention_fwd_scratch_bytes(D):       scratch one forward work item needs.
//   attention_fwd_kv_tile_floats(D):      floats of one packed key tile (K rows and V panels).
//   attention_fwd_pack_kv(args, b, kv, j0, dst): packs keys [j0, j0 + fwd_k_tile) of kv head kv.
//   attention_fwd_tile(args, kv_tiles, b, h, q0, scratch): rows [q0, q0 + fwd_q_tile) of head h,
//       batch b: out and lse for those rows. kv_tiles: every packed key tile, [B][KV][tile].
//   attention_bwd_gather(args, row0, rows, rows_out): for token rows [row0, row0 + rows) of the
//       flattened [B * Tq] axis, all heads: q and dout copied into rows_out head-major, and delta.
//   attention_bwd_scratch_bytes(D):       scratch one backward work item needs.
//   attention_bwd_kv_tile_floats(D):      floats of one key tile packed for the backward.
//   attention_bwd_pack_kv(args, b, kv, j0, dst): packs keys [j0, j0 + bwd_k_tile) of kv head kv.
//   attention_bwd_tile(args, rows, kv_tile, b, h, j0, scratch): keys [j0, j0 + bwd_k_tile), packed
//       at kv_tile, against query
//       head h: their dk and dv rows of kv head h / (H / KV) are written when h is the first head
//       of its group and added to for the others; the tile's share of dq is added into rows.dq.
#define ERNIE_ATTENTION_KERNELS(X)                                                                        \
  X(attention_blocking, ::ernie::cpu::AttentionBlocking())                                                \
  X(attention_fwd_scratch_bytes, size_t(int64_t))                                                         \
  X(attention_fwd_kv_tile_floats, size_t(int64_t))                                                        \
  X(attention_fwd_pack_kv, void(const ::ernie::AttentionArgs&, int64_t, int64_t, int64_t, float*))   \
  X(attention_fwd_tile, void(const ::ernie::AttentionArgs&, const float*, int64_t, int64_t, int64_t, void*)) \
  X(attention_bwd_gather, void(const ::ernie::AttentionArgs&, int64_t, int64_t, const ::ernie::cpu::AttentionBwdRows&)) \
  X(attention_bwd_scratch_bytes, size_t(int64_t))                                                         \
  X(attention_bwd_kv_tile_floats, size_t(int64_t))                                                        \
  X(attention_bwd_pack_kv, void(const ::ernie::AttentionArgs&, int64_t, int64_t, int64_t, float*))   \
  X(attention_bwd_tile, void(const ::ernie::AttentionArgs&, const ::ernie::cpu::AttentionBwdRows&, const float*, int64_t, int64_t, int64_t, void*))

ERNIE_DECLARE_KERNELS(attention, ERNIE_ATTENTION_KERNELS)
