// Fused causal attention on bf16 tensor cores, FlashAttention-2 style, forward and backward, with
// the CPU backend's semantics (cpu/attention.h): q [B, Tq, H, D], k and v [B, Tk, KV, D], f32;
// causal bottom-right aligned (row i is position i + Tk - Tq); GQA (head h reads kv head
// h / (H / KV)); a key padding mask; a per-row first key (key_start, packed documents). A row
// that sees no key gets out = 0 and lse = -inf.
//
// q, k, v (and dout) are first packed to bf16, head-major ([B, heads, T, DP]), each row padded
// with zeros to DP = 32, 64 or 128, so that a tile of rows is one contiguous run that cp.async
// copies 16 bytes at a time. Shared-memory rows are padded by 16 bytes (see kStride).
//
// Forward: a CTA is 64 query rows of one (batch, head), 4 warps of 16 rows. It walks the key
// tiles its rows can see (from the smallest key_start of its rows to the causal limit of its
// last row), 64 keys at a time, double-buffered: S = Q K^T by MMA into registers, masked, an
// online softmax in the log2 domain, P rounded to bf16 and fed straight from the accumulator
// registers as the A operand of O += P V.
//
// Backward: a CTA owns 64 keys of one (batch, kv head) and keeps their dK and dV in registers
// (4 warps of 16 keys); it walks every query head of the group and every 32-row query tile that
// can see its keys, recomputing P^T = exp(S^T - lse) from K Q^T. dV += P^T dO, dP^T = V dO^T,
// dS^T = P^T (dP^T - delta), dK += dS^T Q; dS goes through shared memory so that
// dQ += dS K can be formed and added into dq with atomics (the summation order of dq is
// therefore not fixed, unlike the CPU backend's).
//
// Compiled for sm_80 and sm_90, never run here (no GPU): test/kernels/cuda.test.ts checks it against the
// float64 reference where a device exists.
#include <cmath>
#include <stdexcept>

#include "cuda/device.cuh"

namespace ernie::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;
constexpr int kThreads = 128;
constexpr int kFwdQ = 64, kFwdK = 64;  // forward: query rows per CTA, keys per tile
constexpr int kBwdK = 64;              // backward: keys per CTA
// Backward query rows per tile: 32, or 16 at head dim 128, where dK and dV alone take 128
// registers a thread and a 32-row tile sat at ptxas's 255-register ceiling.
constexpr int bwd_query_tile(int dp) { return dp == 128 ? 16 : 32; }

struct AttnParams {
  const __nv_bfloat16 *q, *k, *v, *dout;  // packed: [B, H or KV, T, DP]
  const uint8_t* key_valid;               // [B, Tk] or null
  const int32_t* key_start;               // [B, Tq] or null
  const float* lse_in;                    // backward: [B, H, Tq]
  const float* delta;                     // backward: [B, H, Tq]
  float *out, *lse;                       // forward outputs
  float *dq, *dk, *dv;                    // backward outputs (dq accumulated with atomics)
  int batch, tq, tk, heads, kv_heads, head_dim;
  float scale, scale_log2;
};

// Shared-memory tiles hold rows of W bf16 (W = DP, or the query count of the dS tile) at a
// stride of W + 8: the 16 bytes of padding put the 8 rows one ldmatrix reads in 8 different
// bank groups, and, unlike an XOR swizzle, keep every fragment address a lane base plus a
// compile-time offset (the swizzled form cost the backward kernel dozens of registers).
template <int W>
constexpr int kStride = W + 8;
template <int W>
__device__ __forceinline__ int row_offset(int row, int chunk) {
  return row * kStride<W> + chunk * 8;
}

// ROWS rows of a packed [T, DP] head from row0 into a tile; rows at or past `rows_total` are zeros.
template <int ROWS, int DP>
__device__ __forceinline__ void load_rows(__nv_bfloat16* tile, const __nv_bfloat16* head, int row0, int rows_total) {
  constexpr int kChunksPerRow = DP / 8, kChunks = ROWS * kChunksPerRow;
  for (int idx = int(threadIdx.x); idx < kChunks; idx += kThreads) {
    const int r = idx / kChunksPerRow, c = idx % kChunksPerRow;
    const bool ok = row0 + r < rows_total;
    cp_async16(tile + row_offset<DP>(r, c), head + int64_t(ok ? row0 + r : 0) * DP + c * 8, ok ? 16 : 0);
  }
}

// dst [B, heads, T, dp] bf16 from src [B, T, heads, d] f32, zero past d.
__global__ void pack_heads_kernel(__nv_bfloat16* dst, const float* src, int batch, int t_len, int heads, int d, int dp) {
  const int64_t total = int64_t(batch) * heads * t_len * dp;
  for (int64_t i = int64_t(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int c = int(i % dp);
    const int64_t row = i / dp;  // (b * heads + h) * t_len + t
    const int t = int(row % t_len);
    const int64_t bh = row / t_len;
    const int h = int(bh % heads), b = int(bh / heads);
    const float v = c < d ? src[((int64_t(b) * t_len + t) * heads + h) * d + c] : 0.0f;
    dst[i] = __float2bfloat16_rn(v);
  }
}

// delta[b, h, i] = sum_d dout . out over one row (a warp per row).
__global__ void delta_kernel(float* delta, const float* out, const float* dout, int batch, int tq, int heads, int d) {
  const int64_t rows = int64_t(batch) * heads * tq;
  const int lane = int(threadIdx.x) % 32;
  for (int64_t row = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) / 32; row < rows;
       row += int64_t(gridDim.x) * blockDim.x / 32) {
    const int i = int(row % tq);
    const int64_t bh = row / tq;
    const int h = int(bh % heads), b = int(bh / heads);
    const int64_t base = ((int64_t(b) * tq + i) * heads + h) * d;
    float s = 0.0f;
    for (int c = lane; c < d; c += 32) s += out[base + c] * dout[base + c];
    s = warp_sum(s);
    if (lane == 0) delta[row] = s;
  }
}

template <int DP>
__global__ void __launch_bounds__(kThreads) attention_fwd_kernel(AttnParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  __nv_bfloat16* q_tile = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* k_tiles = q_tile + kFwdQ * kStride<DP>;  // two stages
  __nv_bfloat16* v_tiles = k_tiles + 2 * kFwdK * kStride<DP>;
  __shared__ uint8_t key_ok[2][kFwdK];
  __shared__ int first_key;

  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
  // The last query tiles see the most keys: they start first.
  const int q0 = (int(gridDim.x) - 1 - int(blockIdx.x)) * kFwdQ;
  const int bh = int(blockIdx.y), b = bh / p.heads, h = bh % p.heads;
  const int kvh = h / (p.heads / p.kv_heads);
  const int offset = p.tk - p.tq;  // row i sees keys j <= i + offset
  const __nv_bfloat16* q_head = p.q + int64_t(bh) * p.tq * DP;
  const __nv_bfloat16* k_head = p.k + (int64_t(b) * p.kv_heads + kvh) * p.tk * DP;
  const __nv_bfloat16* v_head = p.v + (int64_t(b) * p.kv_heads + kvh) * p.tk * DP;

  // The keys any row of this tile may see: [smallest key_start, causal limit of the last row].
  const int q_last = min(q0 + kFwdQ, p.tq) - 1;
  const int k_end = min(p.tk, q_last + offset + 1);
  if (tid == 0) first_key = p.key_start ? p.tk : 0;
  __syncthreads();
  if (p.key_start && tid < kFwdQ && q0 + tid <= q_last) atomicMin(&first_key, p.key_start[int64_t(b) * p.tq + q0 + tid]);
  __syncthreads();
  const int k_begin = first_key;
  const int tile_begin = k_begin / kFwdK;
  const int tile_end = k_end > k_begin ? (k_end + kFwdK - 1) / kFwdK : tile_begin;

  // This thread's two rows: warp * 16 + g and + 8.
  int row_first_key[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int i = q0 + warp * 16 + g + 8 * r;
    row_first_key[r] = p.key_start && i < p.tq ? p.key_start[int64_t(b) * p.tq + i] : 0;
  }

  auto load_kv = [&](int tile, int stage) {
    load_rows<kFwdK, DP>(k_tiles + stage * kFwdK * kStride<DP>, k_head, tile * kFwdK, p.tk);
    load_rows<kFwdK, DP>(v_tiles + stage * kFwdK * kStride<DP>, v_head, tile * kFwdK, p.tk);
    if (tid < kFwdK) {
      const int j = tile * kFwdK + tid;
      key_ok[stage][tid] = j < p.tk && (!p.key_valid || p.key_valid[int64_t(b) * p.tk + j]);
    }
  };

  load_rows<kFwdQ, DP>(q_tile, q_head, q0, p.tq);
  if (tile_begin < tile_end) load_kv(tile_begin, 0);
  cp_async_commit();
  cp_async_wait<0>();
  __syncthreads();

  uint32_t qf[DP / 16][4];
#pragma unroll
  for (int ks = 0; ks < DP / 16; ++ks)
    ldmatrix_x4(qf[ks], q_tile + row_offset<DP>(warp * 16 + (lane & 15), ks * 2 + (lane >> 4)));

  float o[DP / 8][4];
#pragma unroll
  for (int i = 0; i < DP / 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) o[i][e] = 0.0f;
  float row_max[2] = {-INFINITY, -INFINITY}, row_sum[2] = {0.0f, 0.0f};

  for (int tile = tile_begin; tile < tile_end; ++tile) {
    const int stage = (tile - tile_begin) & 1;
    if (tile + 1 < tile_end) {  // the other stage was last read before the previous closing barrier
      load_kv(tile + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const __nv_bfloat16* k_tile = k_tiles + stage * kFwdK * kStride<DP>;
    const __nv_bfloat16* v_tile = v_tiles + stage * kFwdK * kStride<DP>;

    // S = Q K^T: 16 rows x 64 keys per warp, 8 n-tiles.
    float s[8][4];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) s[i][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < DP / 16; ++ks)
#pragma unroll
      for (int np = 0; np < 4; ++np) {
        uint32_t r[4];
        ldmatrix_x4(r, k_tile + row_offset<DP>(np * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
        mma_bf16_16816(s[2 * np], qf[ks], r[0], r[1]);
        mma_bf16_16816(s[2 * np + 1], qf[ks], r[2], r[3]);
      }

    const int k0 = tile * kFwdK;
    const bool need_mask = p.key_valid || p.key_start || k0 + kFwdK - 1 > q0 + offset || k0 + kFwdK > p.tk;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        float x = s[nt][e] * p.scale_log2;
        if (need_mask) {
          const int r = e >> 1;
          const int i = q0 + warp * 16 + g + 8 * r;
          const int jl = nt * 8 + 2 * t + (e & 1), j = k0 + jl;
          if (!key_ok[stage][jl] || j > i + offset || j < row_first_key[r]) x = -INFINITY;
        }
        s[nt][e] = x;
      }

    // Online softmax, per row; the 4 lanes of a quad share their rows.
#pragma unroll
    for (int r = 0; r < 2; ++r) {
      float mx = -INFINITY;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt) mx = fmaxf(mx, fmaxf(s[nt][2 * r], s[nt][2 * r + 1]));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
      mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
      const float m_new = fmaxf(row_max[r], mx);
      const float m_use = m_new == -INFINITY ? 0.0f : m_new;  // no key yet: keep exp2 away from -inf - -inf
      const float rescale = exp2f(row_max[r] - m_use);
      row_max[r] = m_new;
      float sum = 0.0f;
#pragma unroll
      for (int nt = 0; nt < 8; ++nt)
#pragma unroll
        for (int e = 2 * r; e < 2 * r + 2; ++e) {
          const float pv = exp2f(s[nt][e] - m_use);
          s[nt][e] = pv;
          sum += pv;
        }
      row_sum[r] = row_sum[r] * rescale + sum;
#pragma unroll
      for (int dt = 0; dt < DP / 8; ++dt) {
        o[dt][2 * r] *= rescale;
        o[dt][2 * r + 1] *= rescale;
      }
    }

    // O += P V: P's accumulator registers are the A fragments of 16-key steps.
#pragma unroll
    for (int kk = 0; kk < kFwdK / 16; ++kk) {
      const uint32_t a[4] = {pack_bf16x2(s[2 * kk][0], s[2 * kk][1]), pack_bf16x2(s[2 * kk][2], s[2 * kk][3]),
                             pack_bf16x2(s[2 * kk + 1][0], s[2 * kk + 1][1]),
                             pack_bf16x2(s[2 * kk + 1][2], s[2 * kk + 1][3])};
#pragma unroll
      for (int dp = 0; dp < DP / 16; ++dp) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, v_tile + row_offset<DP>(kk * 16 + (lane & 15), dp * 2 + (lane >> 4)));
        mma_bf16_16816(o[2 * dp], a, r[0], r[1]);
        mma_bf16_16816(o[2 * dp + 1], a, r[2], r[3]);
      }
    }
    __syncthreads();
  }

#pragma unroll
  for (int r = 0; r < 2; ++r) {
    float l = row_sum[r];
    l += __shfl_xor_sync(0xffffffffu, l, 1);
    l += __shfl_xor_sync(0xffffffffu, l, 2);
    const int i = q0 + warp * 16 + g + 8 * r;
    if (i >= p.tq) continue;
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
    float* out_row = p.out + ((int64_t(b) * p.tq + i) * p.heads + h) * p.head_dim;
#pragma unroll
    for (int dt = 0; dt < DP / 8; ++dt)
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int d = dt * 8 + 2 * t + e;
        if (d < p.head_dim) out_row[d] = o[dt][2 * r + e] * inv;
      }
    if (t == 0) p.lse[int64_t(bh) * p.tq + i] = l > 0.0f ? (row_max[r] + log2f(l)) * kLn2 : -INFINITY;
  }
}

template <int DP, int BQ>
__global__ void __launch_bounds__(kThreads) attention_bwd_kernel(AttnParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  __nv_bfloat16* k_tile = reinterpret_cast<__nv_bfloat16*>(smem);
  __nv_bfloat16* v_tile = k_tile + kBwdK * kStride<DP>;
  __nv_bfloat16* q_tiles = v_tile + kBwdK * kStride<DP>;       // two stages
  __nv_bfloat16* do_tiles = q_tiles + 2 * BQ * kStride<DP>;    // two stages
  __nv_bfloat16* ds_tile = do_tiles + 2 * BQ * kStride<DP>;    // dS^T, [64 keys][BQ queries]
  __shared__ float lse_s[2][BQ];     // log2 units; +inf for rows that contribute nothing
  __shared__ float delta_s[2][BQ];
  __shared__ int first_key_s[2][BQ];

  const int tid = int(threadIdx.x), warp = tid / 32, lane = tid % 32, g = lane >> 2, t = lane & 3;
  const int k0 = int(blockIdx.x) * kBwdK;
  const int bkv = int(blockIdx.y), b = bkv / p.kv_heads, kvh = bkv % p.kv_heads;
  const int group = p.heads / p.kv_heads;
  const int offset = p.tk - p.tq;
  const __nv_bfloat16* k_head = p.k + int64_t(bkv) * p.tk * DP;
  const __nv_bfloat16* v_head = p.v + int64_t(bkv) * p.tk * DP;

  // Query rows that can see a key of this tile: i >= k0 - offset.
  const int q_first = max(0, k0 - offset);
  const int qt_begin = q_first / BQ;
  const int qt_count = max(0, (p.tq + BQ - 1) / BQ - qt_begin);
  const int iterations = group * qt_count;

  bool key_ok[2];
#pragma unroll
  for (int r = 0; r < 2; ++r) {
    const int j = k0 + warp * 16 + g + 8 * r;
    key_ok[r] = j < p.tk && (!p.key_valid || p.key_valid[int64_t(b) * p.tk + j]);
  }

  auto load_queries = [&](int it, int stage) {
    const int h = kvh * group + it / qt_count, q0 = (qt_begin + it % qt_count) * BQ;
    const int64_t bh = int64_t(b) * p.heads + h;
    load_rows<BQ, DP>(q_tiles + stage * BQ * kStride<DP>, p.q + bh * p.tq * DP, q0, p.tq);
    load_rows<BQ, DP>(do_tiles + stage * BQ * kStride<DP>, p.dout + bh * p.tq * DP, q0, p.tq);
    if (tid < BQ) {
      const int i = q0 + tid;
      const float lse = i < p.tq ? p.lse_in[bh * p.tq + i] : -INFINITY;
      lse_s[stage][tid] = lse == -INFINITY ? INFINITY : lse * kLog2e;
      delta_s[stage][tid] = i < p.tq ? p.delta[bh * p.tq + i] : 0.0f;
      first_key_s[stage][tid] = p.key_start && i < p.tq ? p.key_start[int64_t(b) * p.tq + i] : 0;
    }
  };

  load_rows<kBwdK, DP>(k_tile, k_head, k0, p.tk);
  load_rows<kBwdK, DP>(v_tile, v_head, k0, p.tk);
  if (iterations > 0) load_queries(0, 0);
  cp_async_commit();

  float dk[DP / 8][4], dv[DP / 8][4];
#pragma unroll
  for (int i = 0; i < DP / 8; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) dk[i][e] = dv[i][e] = 0.0f;

  for (int it = 0; it < iterations; ++it) {
    const int stage = it & 1;
    if (it + 1 < iterations) {
      load_queries(it + 1, stage ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const int h = kvh * group + it / qt_count, q0 = (qt_begin + it % qt_count) * BQ;
    const __nv_bfloat16* q_tile = q_tiles + stage * BQ * kStride<DP>;
    const __nv_bfloat16* do_tile = do_tiles + stage * BQ * kStride<DP>;

    // S^T = K Q^T, then dP^T = V dO^T: 16 keys x BQ queries per warp.
    float st[BQ / 8][4], dpt[BQ / 8][4];
#pragma unroll
    for (int i = 0; i < BQ / 8; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) st[i][e] = dpt[i][e] = 0.0f;
#pragma unroll
    for (int ks = 0; ks < DP / 16; ++ks) {
      uint32_t ka[4];
      ldmatrix_x4(ka, k_tile + row_offset<DP>(warp * 16 + (lane & 15), ks * 2 + (lane >> 4)));
#pragma unroll
      for (int np = 0; np < BQ / 16; ++np) {
        uint32_t r[4];
        ldmatrix_x4(r, q_tile + row_offset<DP>(np * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
        mma_bf16_16816(st[2 * np], ka, r[0], r[1]);
        mma_bf16_16816(st[2 * np + 1], ka, r[2], r[3]);
      }
    }
#pragma unroll
    for (int ks = 0; ks < DP / 16; ++ks) {
      uint32_t va[4];
      ldmatrix_x4(va, v_tile + row_offset<DP>(warp * 16 + (lane & 15), ks * 2 + (lane >> 4)));
#pragma unroll
      for (int np = 0; np < BQ / 16; ++np) {
        uint32_t r[4];
        ldmatrix_x4(r, do_tile + row_offset<DP>(np * 16 + (lane & 7) + ((lane >> 4) << 3), ks * 2 + ((lane >> 3) & 1)));
        mma_bf16_16816(dpt[2 * np], va, r[0], r[1]);
        mma_bf16_16816(dpt[2 * np + 1], va, r[2], r[3]);
      }
    }

    // P^T from the forward's lse, and dS^T = P^T (dP^T - delta); masked entries are 0.
#pragma unroll
    for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int r = e >> 1;
        const int ql = nt * 8 + 2 * t + (e & 1), i = q0 + ql;
        const int j = k0 + warp * 16 + g + 8 * r;
        const bool ok = key_ok[r] && j <= i + offset && j >= first_key_s[stage][ql];
        const float pv = ok ? exp2f(st[nt][e] * p.scale_log2 - lse_s[stage][ql]) : 0.0f;
        st[nt][e] = pv;
        dpt[nt][e] = pv * (dpt[nt][e] - delta_s[stage][ql]);
      }
    // As bf16 A fragments (k = queries, 16 per step): the accumulators' layout is the A layout.
    uint32_t pa[BQ / 16][4], sa[BQ / 16][4];
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk)
#pragma unroll
      for (int u = 0; u < 2; ++u)
#pragma unroll
        for (int r = 0; r < 2; ++r) {
          pa[kk][2 * u + r] = pack_bf16x2(st[2 * kk + u][2 * r], st[2 * kk + u][2 * r + 1]);
          sa[kk][2 * u + r] = pack_bf16x2(dpt[2 * kk + u][2 * r], dpt[2 * kk + u][2 * r + 1]);
        }

    // dS^T to shared memory ([key][query], bf16), for dQ = dS K across all 64 keys below.
#pragma unroll
    for (int nt = 0; nt < BQ / 8; ++nt)
#pragma unroll
      for (int r = 0; r < 2; ++r) {
        const int key = warp * 16 + g + 8 * r;
        *reinterpret_cast<uint32_t*>(ds_tile + row_offset<BQ>(key, nt) + 2 * t) = sa[nt >> 1][(nt & 1) * 2 + r];
      }

    // dV += P^T dO, then dK += dS^T Q.
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk)
#pragma unroll
      for (int dp = 0; dp < DP / 16; ++dp) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, do_tile + row_offset<DP>(kk * 16 + (lane & 15), dp * 2 + (lane >> 4)));
        mma_bf16_16816(dv[2 * dp], pa[kk], r[0], r[1]);
        mma_bf16_16816(dv[2 * dp + 1], pa[kk], r[2], r[3]);
      }
#pragma unroll
    for (int kk = 0; kk < BQ / 16; ++kk)
#pragma unroll
      for (int dp = 0; dp < DP / 16; ++dp) {
        uint32_t r[4];
        ldmatrix_x4_trans(r, q_tile + row_offset<DP>(kk * 16 + (lane & 15), dp * 2 + (lane >> 4)));
        mma_bf16_16816(dk[2 * dp], sa[kk], r[0], r[1]);
        mma_bf16_16816(dk[2 * dp + 1], sa[kk], r[2], r[3]);
      }
    __syncthreads();

    // dQ = dS K over the 64 keys: the warps split the BQ x DP block into 16-row by kCols tiles.
    {
      constexpr int kRowGroups = BQ / 16, kCols = DP / (4 / kRowGroups), kTiles = kCols / 8;
      float dqa[kTiles][4];
#pragma unroll
      for (int i = 0; i < kTiles; ++i)
#pragma unroll
        for (int e = 0; e < 4; ++e) dqa[i][e] = 0.0f;
      const int qb = (warp % kRowGroups) * 16, col0 = (warp / kRowGroups) * kCols;
#pragma unroll
      for (int kb = 0; kb < kBwdK / 16; ++kb) {
        uint32_t a[4];  // dS rows (queries) x 16 keys, from the transposed store
        ldmatrix_x4_trans(a, ds_tile + row_offset<BQ>(kb * 16 + (lane & 7) + ((lane >> 4) << 3), qb / 8 + ((lane >> 3) & 1)));
#pragma unroll
        for (int dc = 0; dc < kTiles / 2; ++dc) {
          uint32_t r[4];
          ldmatrix_x4_trans(r, k_tile + row_offset<DP>(kb * 16 + (lane & 15), col0 / 8 + dc * 2 + (lane >> 4)));
          mma_bf16_16816(dqa[2 * dc], a, r[0], r[1]);
          mma_bf16_16816(dqa[2 * dc + 1], a, r[2], r[3]);
        }
      }
#pragma unroll
      for (int nt = 0; nt < kTiles; ++nt)
#pragma unroll
        for (int e = 0; e < 4; ++e) {
          const int i = q0 + qb + g + 8 * (e >> 1);
          const int d = col0 + nt * 8 + 2 * t + (e & 1);
          if (i < p.tq && d < p.head_dim)
            atomicAdd(p.dq + ((int64_t(b) * p.tq + i) * p.heads + h) * p.head_dim + d, dqa[nt][e] * p.scale);
        }
    }
    __syncthreads();  // ds_tile and this stage's tiles are rewritten next
  }
  cp_async_wait<0>();  // with no query tile to visit, the K and V copies are still outstanding

#pragma unroll
  for (int dt = 0; dt < DP / 8; ++dt)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int j = k0 + warp * 16 + g + 8 * (e >> 1);
      const int d = dt * 8 + 2 * t + (e & 1);
      if (j < p.tk && d < p.head_dim) {
        const int64_t at = ((int64_t(b) * p.tk + j) * p.kv_heads + kvh) * p.head_dim + d;
        p.dk[at] = dk[dt][e] * p.scale;
        p.dv[at] = dv[dt][e];
      }
    }
}

constexpr size_t fwd_smem_bytes(int dp) { return size_t(kFwdQ + 4 * kFwdK) * (dp + 8) * 2; }
constexpr size_t bwd_smem_bytes(int dp) {
  return size_t(2 * kBwdK + 4 * bwd_query_tile(dp)) * (dp + 8) * 2 + size_t(kBwdK) * (bwd_query_tile(dp) + 8) * 2;
}

int padded_head_dim(int64_t d) {
  if (d < 1 || d > kMaxHeadDim)
    throw std::invalid_argument("attention: head_dim " + std::to_string(d) + " is not supported on CUDA (1 to " +
                                std::to_string(kMaxHeadDim) + ")");
  return d <= 32 ? 32 : d <= 64 ? 64 : 128;
}

template <int DP>
void launch_forward(const AttnParams& p, Context& ctx) {
  const size_t smem = fwd_smem_bytes(DP);
  CUDA_CHECK(cudaFuncSetAttribute(attention_fwd_kernel<DP>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned(ceil_div(p.tq, kFwdQ)), unsigned(p.batch * p.heads));
  attention_fwd_kernel<DP><<<grid, kThreads, smem, ctx.stream()>>>(p);
  CUDA_CHECK_LAUNCH("attention_fwd_kernel");
}

template <int DP>
void launch_backward(const AttnParams& p, Context& ctx) {
  const size_t smem = bwd_smem_bytes(DP);
  constexpr int BQ = bwd_query_tile(DP);
  CUDA_CHECK(cudaFuncSetAttribute(attention_bwd_kernel<DP, BQ>, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem)));
  const dim3 grid(unsigned(ceil_div(p.tk, kBwdK)), unsigned(p.batch * p.kv_heads));
  attention_bwd_kernel<DP, BQ><<<grid, kThreads, smem, ctx.stream()>>>(p);
  CUDA_CHECK_LAUNCH("attention_bwd_kernel");
}

void check_shape(const AttentionArgs& a) {
  if (a.batch * a.heads > 65535 || a.batch * a.kv_heads > 65535)
    throw std::invalid_argument("attention: batch * heads must be at most 65535 on CUDA");
  if (a.tq > INT32_MAX / 2 || a.tk > INT32_MAX / 2) throw std::invalid_argument("attention: sequence too long");
}

__nv_bfloat16* pack_heads(Context& ctx, const float* src, int64_t batch, int64_t t_len, int64_t heads, int64_t d, int dp) {
  const int64_t n = batch * heads * t_len * dp;
  auto* dst = ctx.alloc<__nv_bfloat16>(size_t(n));
  if (n > 0) {
    pack_heads_kernel<<<grid_for(n, 256), 256, 0, ctx.stream()>>>(dst, src, int(batch), int(t_len), int(heads), int(d), dp);
    CUDA_CHECK_LAUNCH("pack_heads_kernel");
  }
  return dst;
}

// The shape, scale and masks (device pointers) of a call.
AttnParams common_params(const AttentionArgs& a) {
  AttnParams p{};
  p.batch = int(a.batch);
  p.tq = int(a.tq);
  p.tk = int(a.tk);
  p.heads = int(a.heads);
  p.kv_heads = int(a.kv_heads);
  p.head_dim = int(a.head_dim);
  p.scale = a.scale;
  p.scale_log2 = a.scale * kLog2e;
  p.key_valid = a.key_valid;
  p.key_start = a.key_start;
  return p;
}

}  // namespace

// The device-pointer forms (q, k, v, out, lse ... in device memory, same layouts as the host API).
void attention_forward_device(const AttentionArgs& a, Context& ctx) {
  check_shape(a);
  const int dp = padded_head_dim(a.head_dim);
  if (a.batch == 0 || a.tq == 0) return;
  Context::Scope scope(ctx);  // the packed heads
  AttnParams p = common_params(a);
  p.q = pack_heads(ctx, a.q, a.batch, a.tq, a.heads, a.head_dim, dp);
  p.k = pack_heads(ctx, a.k, a.batch, a.tk, a.kv_heads, a.head_dim, dp);
  p.v = pack_heads(ctx, a.v, a.batch, a.tk, a.kv_heads, a.head_dim, dp);
  p.out = a.out;
  p.lse = a.lse;
  if (dp == 32) launch_forward<32>(p, ctx);
  else if (dp == 64) launch_forward<64>(p, ctx);
  else launch_forward<128>(p, ctx);
}

void attention_backward_device(const AttentionArgs& a, Context& ctx) {
  check_shape(a);
  const int dp = padded_head_dim(a.head_dim);
  ctx.zero(a.dq, size_t(a.batch * a.tq * a.heads * a.head_dim));
  if (a.batch == 0 || a.tk == 0) return;
  Context::Scope scope(ctx);  // the packed heads and delta
  AttnParams p = common_params(a);
  p.q = pack_heads(ctx, a.q, a.batch, a.tq, a.heads, a.head_dim, dp);
  p.k = pack_heads(ctx, a.k, a.batch, a.tk, a.kv_heads, a.head_dim, dp);
  p.v = pack_heads(ctx, a.v, a.batch, a.tk, a.kv_heads, a.head_dim, dp);
  p.dout = pack_heads(ctx, a.dout, a.batch, a.tq, a.heads, a.head_dim, dp);
  float* delta = ctx.alloc<float>(size_t(a.batch * a.heads * a.tq));
  const int64_t rows = a.batch * a.heads * a.tq;
  if (rows > 0) {
    delta_kernel<<<grid_for(rows * 32, 256), 256, 0, ctx.stream()>>>(delta, a.out, a.dout, p.batch, p.tq, p.heads,
                                                                      p.head_dim);
    CUDA_CHECK_LAUNCH("delta_kernel");
  }
  p.lse_in = a.lse;
  p.delta = delta;
  p.dq = a.dq;
  p.dk = a.dk;
  p.dv = a.dv;
  if (dp == 32) launch_backward<32>(p, ctx);
  else if (dp == 64) launch_backward<64>(p, ctx);
  else launch_backward<128>(p, ctx);
}

namespace {

// Host arrays -> device copies of everything the call reads (masks included), plus outputs.
struct DeviceAttention {
  AttentionArgs d;
  size_t q_len, kv_len, lse_len;
};

DeviceAttention upload_common(const AttentionArgs& a, Context& ctx) {
  DeviceAttention r{a, size_t(a.batch * a.tq * a.heads * a.head_dim), size_t(a.batch * a.tk * a.kv_heads * a.head_dim),
                    size_t(a.batch * a.heads * a.tq)};
  r.d.q = ctx.upload(a.q, r.q_len);
  r.d.k = ctx.upload(a.k, r.kv_len);
  r.d.v = ctx.upload(a.v, r.kv_len);
  r.d.key_valid = a.key_valid ? ctx.upload(a.key_valid, size_t(a.batch * a.tk)) : nullptr;
  r.d.key_start = a.key_start ? ctx.upload(a.key_start, size_t(a.batch * a.tq)) : nullptr;
  return r;
}

}  // namespace

}  // namespace ernie::cuda
