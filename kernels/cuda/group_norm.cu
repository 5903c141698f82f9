// Group norm over the last dim: x (N, G*Dg) is normalised per (row, group) over its Dg channels —
// LayerNorm (mean and variance) or RMSNorm (`rms`: mean square only) — then y = xhat w + b with optional
// per-channel w, b (G*Dg). EG-MLA's gate norm uses it (G = 1 over d_c at the latent position; G = n_h
// over d_n or d_v at the kv position).
//   LN:  dx = rstd (g - mean(g) - xhat mean(g xhat)),  RMS: dx = rstd (g - xhat mean(g xhat)),  g = dout w,
//   dweight = sum_rows dout xhat,  dbias = sum_rows dout.
// Floor: forward reads x and writes y (2 N C elements), backward reads x, dout and writes dx (3 N C); the
// per-(row, group) mean/rstd (N G floats), w, b and the dweight/dbias partials are < 1% of that. At the bench
// shapes in bf16 (32768 x 2048 and 131072 x 512, 128 MiB per tensor): 268 MB forward, 403 MB backward,
// 0.090 ms and 0.135 ms at the 2.97 TB/s copy rate of the H100 here.
//
// Fast path (sm_90, Dg % 8 == 0, Dg <= 512, 16-byte aligned tensors): tiles of whole rows staged in shared
// memory by the copy engine. A tile is `rows` consecutive rows (~16 KB of x: 4 rows at C = 2048, 16 at
// C = 512), i.e. one contiguous range of x (and of dout, mean, rstd in the backward) that one thread loads with
// bulk copies (cp.async.bulk) completing on the stage's mbarrier. A persistent grid of 2 blocks per SM walks
// the tiles; each block keeps a ring of stages in ~100 KB of shared memory (6 x 16 KB forward, 3 x 33 KB
// backward), so 60-160 KB of loads are in flight per SM whatever the registers. v2 was limited by exactly
// that: its teams loaded from global memory into registers, 8-24 KB in flight per SM at 85-160 registers per
// thread, where RMSNorm's kernels reach 72-87% with ~32 KB. Inside a block, "teams" of L lanes (a power of
// two, L*8 >= Dg, or 32 lanes x 16 channels for Dg in (256, 512]) each own one group g for good (teams per
// block are a multiple of G) and take the tile's rows slot, slot + S, ... (S teams per group); a lane reads
// its channels from shared memory with 16-byte loads, the statistics come from shuffles inside the team, and
// y / dx go to global memory with 16-byte stores. The backward keeps the lane's share of dweight/dbias in
// registers across tiles (w is re-read from L1 per row instead: 105 registers rather than a spill), adds the
// S teams of each group through shared memory at the end, and writes one fp32 partial row per block that
// column_sum adds in order (deterministic, no atomics). A partial last tile (N not a multiple of `rows`) is
// copied in by the block's threads. Compute per tile is a few hundred cycles per team, far under the tile's
// share of DRAM time, so the kernels should sit at the copy engine's streaming rate.
// v2 (teams reading global memory directly) measured G = 16: 69% / 54%, G = 1 (Dg = 512): 55% / 32% of copy
// bandwidth (docs/performance.md).
// General path (Dg % 8 != 0, Dg > 512, unaligned tensors, pre-Hopper GPUs): one warp per (row, group)
// re-reading the group from L1 per pass, and a separate column reduction for dweight/dbias (re-reads x and
// dout): 16% / 13% at G = 16 (v1).
#include <algorithm>
#include <mutex>
#include <numeric>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/smem_staging.cuh"

namespace latte::cuda {

namespace {

struct Affine {
  const void* w;  // null: no weight
  int dtw;
  const void* b;  // null: no bias
  int dtb;
};

// One warp per (row n, group g); item = n * G + g.
__global__ void group_norm_forward_kernel(void* out, int dto, float* mean, float* rstd, const void* x, int dtx,
                                          Affine af, int64_t items, int64_t G, int64_t Dg, float eps, bool rms,
                                          bool vec) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (item >= items) return;
  const int64_t g = item % G;
  const int64_t base = item * Dg;  // element offset of this (row, group): (n*G + g) * Dg
  float mu = 0.f;
  if (!rms) {
    float s = 0.f;
    for (int64_t c = lane * 8; c < Dg; c += 256) {
      float v[8];
      load8_any(x, dtx, base + c, base + Dg, vec, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) s += v[k];
    }
    mu = warp_sum(s) / static_cast<float>(Dg);
  }
  float ss = 0.f;
  for (int64_t c = lane * 8; c < Dg; c += 256) {
    float v[8];
    load8_any(x, dtx, base + c, base + Dg, vec, v);
#pragma unroll
    for (int k = 0; k < 8; ++k)
      if (c + k < Dg) ss += (v[k] - mu) * (v[k] - mu);
  }
  const float r = 1.0f / sqrtf(warp_sum(ss) / static_cast<float>(Dg) + eps);
  for (int64_t c = lane * 8; c < Dg; c += 256) {
    float v[8], w[8], b[8];
    load8_any(x, dtx, base + c, base + Dg, vec, v);
    const int64_t ch = g * Dg + c, C = G * Dg;  // channel index into w, b
    if (af.w) load8_any(af.w, af.dtw, ch, min(C, g * Dg + Dg), vec, w);
    if (af.b) load8_any(af.b, af.dtb, ch, min(C, g * Dg + Dg), vec, b);
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      v[k] = (v[k] - mu) * r;
      if (af.w) v[k] *= w[k];
      if (af.b) v[k] += b[k];
    }
    store8_any(out, dto, base + c, base + Dg, vec, v);
  }
  if (lane == 0) {
    if (mean) mean[item] = mu;
    rstd[item] = r;
  }
}

__global__ void group_norm_dx_kernel(void* dx, int dtdx, const void* dout, int dtd, const void* x, int dtx, Affine af,
                                     const float* mean, const float* rstd, int64_t items, int64_t G, int64_t Dg,
                                     bool rms, bool vec) {
  const int64_t item = static_cast<int64_t>(blockIdx.x) * (blockDim.x >> 5) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (item >= items) return;
  const int64_t g = item % G, base = item * Dg, C = G * Dg;
  const float mu = rms || !mean ? 0.f : mean[item], r = rstd[item];
  float sum_g = 0.f, sum_gx = 0.f;
  for (int pass = 0; pass < 2; ++pass) {
    const float mg = sum_g / static_cast<float>(Dg), mgx = sum_gx / static_cast<float>(Dg);
    for (int64_t c = lane * 8; c < Dg; c += 256) {
      float v[8], d[8], w[8];
      load8_any(x, dtx, base + c, base + Dg, vec, v);
      load8_any(dout, dtd, base + c, base + Dg, vec, d);
      if (af.w) load8_any(af.w, af.dtw, g * Dg + c, min(C, g * Dg + Dg), vec, w);
#pragma unroll
      for (int k = 0; k < 8; ++k) {
        const float xhat = (v[k] - mu) * r, gk = af.w ? d[k] * w[k] : d[k];
        if (pass == 0) {
          if (c + k < Dg) {
            sum_g += gk;
            sum_gx += gk * xhat;
          }
        } else {
          v[k] = r * (gk - (rms ? 0.f : mg) - xhat * mgx);
        }
      }
      if (pass == 1) store8_any(dx, dtdx, base + c, base + Dg, vec, v);
    }
    if (pass == 0) {
      sum_g = warp_sum(sum_g);
      sum_gx = warp_sum(sum_gx);
    }
  }
}

// Block (32, 8): channel c = blockIdx.x*32 + x; rows [chunk*rows_per_chunk, +rows_per_chunk) split over y.
// pw, pb: (chunks, C) partial sums of dout*xhat and dout.
__global__ void group_norm_dparams_kernel(float* pw, float* pb, const void* dout, int dtd, const void* x, int dtx,
                                          const float* mean, const float* rstd, int64_t N, int64_t G, int64_t Dg,
                                          int64_t rows_per_chunk) {
  __shared__ float tw[8][33], tb[8][33];
  const int64_t C = G * Dg, c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk, r1 = min(N, r0 + rows_per_chunk);
  float aw = 0.f, ab = 0.f;
  if (c < C) {
    const int64_t g = c / Dg;
    for (int64_t n = r0 + threadIdx.y; n < r1; n += 8) {
      const float d = load1(dout, dtd, n * C + c);
      const float mu = mean ? mean[n * G + g] : 0.f;
      aw += d * (load1(x, dtx, n * C + c) - mu) * rstd[n * G + g];
      ab += d;
    }
  }
  tw[threadIdx.y][threadIdx.x] = aw;
  tb[threadIdx.y][threadIdx.x] = ab;
  __syncthreads();
  if (threadIdx.y == 0 && c < C) {
    float sw = 0.f, sb = 0.f;
#pragma unroll
    for (int y = 0; y < 8; ++y) {
      sw += tw[y][threadIdx.x];
      sb += tb[y][threadIdx.x];
    }
    if (pw) pw[static_cast<int64_t>(blockIdx.y) * C + c] = sw;
    if (pb) pb[static_cast<int64_t>(blockIdx.y) * C + c] = sb;
  }
}

// ---- fast path: teams of L lanes over tiles staged in shared memory ------------------------------------

constexpr int kMaxTeamDg = 512;          // 2 chunks of 8 channels per lane, 32 lanes
constexpr int kTileMaxThreads = 512;     // launch bound: <= 128 registers per thread
constexpr int kMaxStages = 8;
constexpr int64_t kTileTarget = 16384;   // bytes of x per tile
constexpr int64_t kRingBudget = 112640;  // bytes of stages per block: 2 blocks per SM (228 KB)

// Channel (within the group) of slot (k, e) of lane `lane` in a team of L: coalesced over the team.
__device__ __forceinline__ int64_t team_channel(bool vec, int L, int lane, int k, int e) {
  return vec ? (static_cast<int64_t>(k) * L + lane) * 8 + e : (static_cast<int64_t>(k) * 8 + e) * L + lane;
}

template <int CPL>
__device__ __forceinline__ void team_load(const void* p, int dt, int64_t base, int64_t Dg, int L, int lane, bool vec,
                                          bool active, float (&v)[CPL * 8]) {
#pragma unroll
  for (int k = 0; k < CPL; ++k) {
    if (vec) {
      const int64_t c = team_channel(true, L, lane, k, 0);
      float t[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      if (active && c < Dg) load8(p, dt, base + c, t);
#pragma unroll
      for (int e = 0; e < 8; ++e) v[k * 8 + e] = t[e];
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int64_t c = team_channel(false, L, lane, k, e);
        v[k * 8 + e] = active && c < Dg ? load1(p, dt, base + c) : 0.f;
      }
    }
  }
}

template <int CPL>
__device__ __forceinline__ void team_store(void* p, int dt, int64_t base, int64_t Dg, int L, int lane, bool vec,
                                           bool active, const float (&v)[CPL * 8]) {
  if (!active) return;
#pragma unroll
  for (int k = 0; k < CPL; ++k) {
    if (vec) {
      const int64_t c = team_channel(true, L, lane, k, 0);
      float t[8];
#pragma unroll
      for (int e = 0; e < 8; ++e) t[e] = v[k * 8 + e];
      if (c < Dg) store8(p, dt, base + c, t);
    } else {
#pragma unroll
      for (int e = 0; e < 8; ++e) {
        const int64_t c = team_channel(false, L, lane, k, e);
        if (c < Dg) store1(p, dt, base + c, v[k * 8 + e]);
      }
    }
  }
}

// Sum over the L lanes of a team (teams are aligned groups of L lanes of a warp; every lane calls this).
__device__ __forceinline__ float team_sum(float v, int L) {
  for (int o = L >> 1; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}


// Where each part of a tile lives in a stage, and the tile geometry.
struct TileGeom {
  int64_t N, G, Dg;
  int L;          // lanes per team
  int slots;      // teams per group in a block: team = slot * G + g
  int rows;       // rows per tile, a multiple of slots (every team runs the same number of items)
  int stages;     // ring depth
  int64_t tiles;  // ceil(N / rows)
  uint32_t stage_bytes;
  uint32_t x_bytes, d_bytes, stat_bytes;  // per full tile: x, dout (backward), mean and rstd each (backward)
  uint32_t d_off, mean_off, rstd_off;     // offsets in a stage (x at 0)
};

// The block's threads copy `bytes` (even; 16-byte aligned addresses) from global to shared memory.
__device__ __forceinline__ void fill_stage(unsigned char* dst, const void* src, uint32_t bytes) {
  const uint32_t n16 = bytes / 16;
  for (uint32_t i = threadIdx.x; i < n16; i += blockDim.x)
    reinterpret_cast<uint4*>(dst)[i] = reinterpret_cast<const uint4*>(src)[i];
  for (uint32_t i = n16 * 8 + threadIdx.x; i < bytes / 2; i += blockDim.x)
    reinterpret_cast<uint16_t*>(dst)[i] = static_cast<const uint16_t*>(src)[i];
}

// Stages tile `tile` (rows [tile*rows, +rows), full tiles only) into stage s: thread 0 only. The backward
// also stages dout and the rows' mean / rstd (null pointers are skipped).
__device__ __forceinline__ void issue_tile(const TileGeom& tg, int64_t tile, int s, unsigned char* ring,
                                          uint64_t* full, const void* x, const void* dout, const float* mean,
                                          const float* rstd) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (tile >= tg.tiles || (tile + 1) * tg.rows > tg.N) return;  // past the end, or the partial last tile
  unsigned char* st = ring + static_cast<int64_t>(s) * tg.stage_bytes;
  mbar_arrive_expect(&full[s], tg.x_bytes + (dout ? tg.d_bytes : 0) + (mean ? tg.stat_bytes : 0) +
                                   (rstd ? tg.stat_bytes : 0));
  bulk_copy(st, static_cast<const char*>(x) + tile * tg.x_bytes, tg.x_bytes, &full[s]);
  if (dout) bulk_copy(st + tg.d_off, static_cast<const char*>(dout) + tile * tg.d_bytes, tg.d_bytes, &full[s]);
  if (mean) bulk_copy(st + tg.mean_off, mean + tile * tg.rows * tg.G, tg.stat_bytes, &full[s]);
  if (rstd) bulk_copy(st + tg.rstd_off, rstd + tile * tg.rows * tg.G, tg.stat_bytes, &full[s]);
#endif
}

// Initialises the stage barriers and stages the block's first tiles.
__device__ __forceinline__ void start_ring(const TileGeom& tg, unsigned char* ring, uint64_t* full, const void* x,
                                           const void* dout, const float* mean, const float* rstd) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (threadIdx.x == 0) {
    for (int s = 0; s < tg.stages; ++s) mbar_init(&full[s], 1);
    asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
    for (int s = 0; s < tg.stages; ++s)
      issue_tile(tg, blockIdx.x + static_cast<int64_t>(s) * gridDim.x, s, ring, full, x, dout, mean, rstd);
  }
  __syncthreads();
#endif
}

// Waits until stage s holds tile `tile` (rows row0 .. row0 + rows - 1): the mbarrier for a full tile, else
// the block copies the partial last tile in itself. `parity` tracks each stage's phase.
__device__ __forceinline__ void acquire_tile(const TileGeom& tg, int64_t row0, int rows, int s, uint32_t& parity,
                                             unsigned char* st, uint64_t* full, const void* x, int esx,
                                             const void* dout, int esd, const float* mean, const float* rstd) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  const int64_t C = tg.G * tg.Dg;
  if (rows == tg.rows) {
    mbar_wait(&full[s], (parity >> s) & 1u);
    parity ^= 1u << s;
    return;
  }
  fill_stage(st, static_cast<const char*>(x) + row0 * C * esx, static_cast<uint32_t>(rows * C * esx));
  if (dout) fill_stage(st + tg.d_off, static_cast<const char*>(dout) + row0 * C * esd, static_cast<uint32_t>(rows * C * esd));
  if (mean) fill_stage(st + tg.mean_off, mean + row0 * tg.G, static_cast<uint32_t>(rows * tg.G * 4));
  if (rstd) fill_stage(st + tg.rstd_off, rstd + row0 * tg.G, static_cast<uint32_t>(rows * tg.G * 4));
  __syncthreads();
#endif
}

// Every thread is done with stage s: thread 0 refills it with the block's tile `next`.
__device__ __forceinline__ void release_stage(const TileGeom& tg, int64_t next, int s, unsigned char* ring,
                                              uint64_t* full, const void* x, const void* dout, const float* mean,
                                              const float* rstd) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  __syncthreads();
  if (threadIdx.x == 0) {
    asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
    issue_tile(tg, next, s, ring, full, x, dout, mean, rstd);
  }
#endif
}

// out, x (N, C); mean, rstd (N, G) f32 outputs (mean may be null).
template <int CPL>
__global__ void __launch_bounds__(kTileMaxThreads) group_norm_forward_tile_kernel(
    void* out, int dto, float* mean, float* rstd, const void* x, int dtx, Affine af, TileGeom tg, float eps, bool rms) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char ring[];
  __shared__ uint64_t full[kMaxStages];
  const int L = tg.L, team = threadIdx.x / L, lane = threadIdx.x & (L - 1);
  const int64_t G = tg.G, Dg = tg.Dg, C = G * Dg;
  const int64_t g = team % G;
  const int slot = static_cast<int>(team / G);
  const int esx = dtx == kBF16 ? 2 : 4;
  float w[CPL * 8], b[CPL * 8];
  if (af.w) team_load<CPL>(af.w, af.dtw, g * Dg, Dg, L, lane, true, true, w);
  if (af.b) team_load<CPL>(af.b, af.dtb, g * Dg, Dg, L, lane, true, true, b);
  const float inv_dg = 1.f / static_cast<float>(Dg);
  start_ring(tg, ring, full, x, nullptr, nullptr, nullptr);
  uint32_t parity = 0;
  int s = 0;
  for (int64_t tile = blockIdx.x; tile < tg.tiles; tile += gridDim.x) {
    unsigned char* st = ring + static_cast<int64_t>(s) * tg.stage_bytes;
    const int64_t row0 = tile * tg.rows;
    const int rows = static_cast<int>(min(static_cast<int64_t>(tg.rows), tg.N - row0));
    acquire_tile(tg, row0, rows, s, parity, st, full, x, esx, nullptr, 0, nullptr, nullptr);
    for (int r0 = 0; r0 < tg.rows; r0 += tg.slots) {
      const int r = r0 + slot;
      const bool on = r < rows;
      float v[CPL * 8];
      team_load<CPL>(st, dtx, r * C + g * Dg, Dg, L, lane, true, on, v);
      float mu = 0.f;
      if (!rms) {
        float sum = 0.f;
#pragma unroll
        for (int k = 0; k < CPL * 8; ++k) sum += v[k];
        mu = team_sum(sum, L) * inv_dg;
      }
      float ss = 0.f;
#pragma unroll
      for (int k = 0; k < CPL; ++k)
#pragma unroll
        for (int e = 0; e < 8; ++e)
          if (team_channel(true, L, lane, k, e) < Dg) ss += (v[k * 8 + e] - mu) * (v[k * 8 + e] - mu);
      const float rs = 1.0f / sqrtf(team_sum(ss, L) * inv_dg + eps);
#pragma unroll
      for (int k = 0; k < CPL * 8; ++k) {
        v[k] = (v[k] - mu) * rs;
        if (af.w) v[k] *= w[k];
        if (af.b) v[k] += b[k];
      }
      const int64_t n = row0 + r;
      team_store<CPL>(out, dto, n * C + g * Dg, Dg, L, lane, true, on, v);
      if (on && lane == 0) {
        if (mean) mean[n * G + g] = mu;
        rstd[n * G + g] = rs;
      }
    }
    release_stage(tg, tile + static_cast<int64_t>(tg.stages) * gridDim.x, s, ring, full, x, nullptr, nullptr, nullptr);
    if (++s == tg.stages) s = 0;
  }
#endif
}

// dx, dout, x (N, C); mean (may be null), rstd (N, G) f32; pw, pb (gridDim.x, C): this block's sums of
// dout*xhat and dout (null when not wanted).
template <int CPL>
__global__ void __launch_bounds__(kTileMaxThreads) group_norm_backward_tile_kernel(
    void* dx, int dtdx, float* pw, float* pb, const void* dout, int dtd, const void* x, int dtx, Affine af,
    const float* mean, const float* rstd, TileGeom tg, bool rms) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  extern __shared__ __align__(128) unsigned char ring[];
  __shared__ uint64_t full[kMaxStages];
  const int L = tg.L, team = threadIdx.x / L, lane = threadIdx.x & (L - 1);
  const int64_t G = tg.G, Dg = tg.Dg, C = G * Dg;
  const int64_t g = team % G;
  const int slot = static_cast<int>(team / G);
  const int esx = dtx == kBF16 ? 2 : 4, esd = dtd == kBF16 ? 2 : 4;
  float accw[CPL * 8], accb[CPL * 8];
#pragma unroll
  for (int k = 0; k < CPL * 8; ++k) accw[k] = accb[k] = 0.f;
  const float inv_dg = 1.f / static_cast<float>(Dg);
  start_ring(tg, ring, full, x, dout, mean, rstd);
  uint32_t parity = 0;
  int s = 0;
  for (int64_t tile = blockIdx.x; tile < tg.tiles; tile += gridDim.x) {
    unsigned char* st = ring + static_cast<int64_t>(s) * tg.stage_bytes;
    const int64_t row0 = tile * tg.rows;
    const int rows = static_cast<int>(min(static_cast<int64_t>(tg.rows), tg.N - row0));
    acquire_tile(tg, row0, rows, s, parity, st, full, x, esx, dout, esd, mean, rstd);
    const float* smean = reinterpret_cast<const float*>(st + tg.mean_off);
    const float* srstd = reinterpret_cast<const float*>(st + tg.rstd_off);
    for (int r0 = 0; r0 < tg.rows; r0 += tg.slots) {
      const int r = r0 + slot;
      const bool on = r < rows;
      float v[CPL * 8], d[CPL * 8];
      team_load<CPL>(st, dtx, r * C + g * Dg, Dg, L, lane, true, on, v);
      team_load<CPL>(st + tg.d_off, dtd, r * C + g * Dg, Dg, L, lane, true, on, d);
      const float mu = on && mean ? smean[r * G + g] : 0.f, rs = on ? srstd[r * G + g] : 0.f;
      float sg = 0.f, sgx = 0.f;
#pragma unroll
      for (int k = 0; k < CPL * 8; ++k) {
        v[k] = (v[k] - mu) * rs;  // xhat (garbage past Dg: d is 0 there)
        accw[k] += d[k] * v[k];
        accb[k] += d[k];
      }
      if (af.w) {  // g = dout w; w re-read per item (L1 hits) rather than held: registers
        float w[CPL * 8];
        team_load<CPL>(af.w, af.dtw, g * Dg, Dg, L, lane, true, true, w);
#pragma unroll
        for (int k = 0; k < CPL * 8; ++k) d[k] *= w[k];
      }
#pragma unroll
      for (int k = 0; k < CPL * 8; ++k) {
        sg += d[k];
        sgx += d[k] * v[k];
      }
      const float mg = rms ? 0.f : team_sum(sg, L) * inv_dg, mgx = team_sum(sgx, L) * inv_dg;
#pragma unroll
      for (int k = 0; k < CPL * 8; ++k) d[k] = rs * (d[k] - mg - v[k] * mgx);
      team_store<CPL>(dx, dtdx, (row0 + r) * C + g * Dg, Dg, L, lane, true, on, d);
    }
    release_stage(tg, tile + static_cast<int64_t>(tg.stages) * gridDim.x, s, ring, full, x, dout, mean, rstd);
    if (++s == tg.stages) s = 0;
  }
  if (!pw && !pb) return;
  // The ring is idle (every staged tile was consumed; release_stage ended with a barrier): add the S teams
  // of each group through it, in slot order, into this block's partial rows.
  float* red = reinterpret_cast<float*>(ring);  // (2, slots, C)
#pragma unroll
  for (int k = 0; k < CPL; ++k)
#pragma unroll
    for (int e = 0; e < 8; ++e) {
      const int64_t c = team_channel(true, L, lane, k, e);
      if (c >= Dg) continue;
      red[slot * C + g * Dg + c] = accw[k * 8 + e];
      red[(tg.slots + slot) * C + g * Dg + c] = accb[k * 8 + e];
    }
  __syncthreads();
  for (int64_t c = threadIdx.x; c < C; c += blockDim.x) {
    float sw = 0.f, sb = 0.f;
    for (int t = 0; t < tg.slots; ++t) {
      sw += red[t * C + c];
      sb += red[(tg.slots + t) * C + c];
    }
    if (pw) pw[blockIdx.x * C + c] = sw;
    if (pb) pb[blockIdx.x * C + c] = sb;
  }
#endif
}

// Team shape for Dg: L lanes (power of two) and CPL chunks of 8 per lane; false when Dg is too wide.
bool team_shape(int64_t Dg, int* L, int* cpl) {
  if (Dg > kMaxTeamDg) return false;
  int l = 1;
  while (l < 32 && static_cast<int64_t>(l) * 8 < Dg) l *= 2;
  *L = l;
  *cpl = static_cast<int64_t>(l) * 8 >= Dg ? 1 : 2;
  return true;
}

// Tile geometry for the staged kernels (esd = 0: forward, no dout; stats: mean/rstd staged per tile, with
// `has_mean`), the block size and the dynamic shared memory; false when the fast path cannot take the shape.
bool plan_tiles(int64_t N, int64_t G, int64_t Dg, int esx, int esd, bool stats, bool has_mean, TileGeom* tg,
                int* threads, int* cpl, size_t* smem) {
  const cudaDeviceProp& prop = device_properties();
  int L;
  if (prop.major < 9 || !team_shape(Dg, &L, cpl)) return false;
  // Teams per block: a multiple of G (a team keeps its group); threads a multiple of 32, ~256 of them.
  int64_t slots = 0;
  for (int64_t k = 1; L * G * k <= kTileMaxThreads; ++k)
    if (L * G * k % 32 == 0) {
      slots = k;
      if (L * G * k >= 256) break;
    }
  if (slots == 0) return false;
  const int64_t C = G * Dg;
  // Rows per tile: a multiple of slots, of what makes the tile's bytes a multiple of 16 (bulk copies), and
  // of what makes the staged mean/rstd 16-byte multiples.
  int64_t q = std::lcm(slots, 16 / std::gcd<int64_t>(C * esx, 16));
  if (esd) q = std::lcm(q, 16 / std::gcd<int64_t>(C * esd, 16));
  if (stats) q = std::lcm(q, 4 / std::gcd<int64_t>(G, 4));
  int64_t rows = std::max<int64_t>(1, kTileTarget / (C * esx));
  rows = (rows + q - 1) / q * q;
  const int64_t x_bytes = rows * C * esx, d_bytes = rows * C * esd, stat_bytes = stats ? rows * G * 4 : 0;
  const int64_t stage = x_bytes + d_bytes + (has_mean ? stat_bytes : 0) + stat_bytes;
  const int64_t stages = std::clamp<int64_t>(kRingBudget / stage, 2, kMaxStages);
  const int64_t red = esd ? 2 * slots * C * 4 : 0;  // backward: the end-of-kernel reduction reuses the ring
  const int64_t bytes = std::max(stages * stage, red);
  if (bytes + 1024 > static_cast<int64_t>(prop.sharedMemPerBlockOptin) || rows > (1 << 20)) return false;
  tg->N = N;
  tg->G = G;
  tg->Dg = Dg;
  tg->L = L;
  tg->slots = static_cast<int>(slots);
  tg->rows = static_cast<int>(rows);
  tg->stages = static_cast<int>(stages);
  tg->tiles = (N + rows - 1) / rows;
  tg->stage_bytes = static_cast<uint32_t>(stage);
  tg->x_bytes = static_cast<uint32_t>(x_bytes);
  tg->d_bytes = static_cast<uint32_t>(d_bytes);
  tg->stat_bytes = static_cast<uint32_t>(stat_bytes);
  tg->d_off = static_cast<uint32_t>(x_bytes);
  tg->mean_off = static_cast<uint32_t>(x_bytes + d_bytes);
  tg->rstd_off = static_cast<uint32_t>(x_bytes + d_bytes + (has_mean ? stat_bytes : 0));
  *threads = static_cast<int>(L * G * slots);
  *smem = static_cast<size_t>(bytes);
  return true;
}


// Persistent grid for a staged kernel: as many blocks as fit on the GPU at once, at most one per tile.
template <typename K>
unsigned tile_grid(K kernel, int threads, size_t smem, int64_t tiles) {
  const int64_t resident = static_cast<int64_t>(blocks_per_sm(kernel, threads, smem)) * sm_count();
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(tiles, resident)));
}

Affine make_affine(const Tensor& w, const Tensor& b, int64_t C, const char* op) {
  Affine af{nullptr, kF32, nullptr, kF32};
  if (w.defined()) {
    LATTE_CHECK(w.numel() == C && w.is_contiguous(), op, ": weight ", w.shape().str(), " must have ", C, " elements");
    af.w = w.data_ptr();
    af.dtw = float_code(w, op);
  }
  if (b.defined()) {
    LATTE_CHECK(b.numel() == C && b.is_contiguous(), op, ": bias ", b.shape().str(), " must have ", C, " elements");
    af.b = b.data_ptr();
    af.dtb = float_code(b, op);
  }
  return af;
}

bool vec_ok(int64_t Dg, std::initializer_list<const Tensor*> ts) {
  if (Dg % 8 != 0) return false;
  for (const Tensor* t : ts)
    if (t->defined() && !aligned16(t->data_ptr())) return false;
  return true;
}

}  // namespace

void group_norm_forward(const Tensor& out, const Tensor& mean, const Tensor& rstd, const Tensor& x, const Tensor& weight,
                        const Tensor& bias, int64_t groups, double eps, bool rms) {
  const char* op = "group_norm_forward";
  LATTE_CHECK(x.dim() >= 1 && out.shape() == x.shape() && groups > 0 && x.size(-1) % groups == 0, op, ": x ",
              x.shape().str(), " out ", out.shape().str(), " groups ", groups);
  const int64_t C = x.size(-1), N = C ? x.numel() / C : 0, Dg = C / groups;
  LATTE_CHECK(rstd.numel() == N * groups && rstd.dtype() == DType::F32, op, ": rstd ", rstd.shape().str(),
              " must be f32 with N*groups = ", N * groups, " elements");
  LATTE_CHECK(!mean.defined() || (mean.numel() == N * groups && mean.dtype() == DType::F32), op, ": mean ",
              mean.shape().str());
  for (const Tensor* t : {&out, &x, &rstd}) require_contiguous(*t, op, "operand");
  if (mean.defined()) require_contiguous(mean, op, "mean");
  Affine af = make_affine(weight, bias, C, op);
  const int64_t items = N * groups;
  if (items == 0 || Dg == 0) return;
  const int dto = float_code(out, op), dtx = float_code(x, op);
  float* pm = mean.defined() ? mean.data<float>() : nullptr;
  cudaStream_t stream = current_stream();
  TileGeom tg;
  int threads, cpl;
  size_t smem;
  const bool vec = vec_ok(Dg, {&out, &x, &weight, &bias});
  if (vec && plan_tiles(N, groups, Dg, dtx == kBF16 ? 2 : 4, 0, false, false, &tg, &threads, &cpl, &smem)) {
    auto kernel = cpl == 1 ? group_norm_forward_tile_kernel<1> : group_norm_forward_tile_kernel<2>;
    const unsigned grid = tile_grid(kernel, threads, smem, tg.tiles);
    kernel<<<grid, threads, smem, stream>>>(out.data_ptr(), dto, pm, rstd.data<float>(), x.data_ptr(), dtx, af, tg,
                                            static_cast<float>(eps), rms);
    CUDA_CHECK_LAUNCH("group_norm_forward_tile_kernel");
    return;
  }
  group_norm_forward_kernel<<<blocks_for(items, 8), 256, 0, stream>>>(
      out.data_ptr(), dto, pm, rstd.data<float>(), x.data_ptr(), dtx, af, items, groups, Dg, static_cast<float>(eps),
      rms, vec);
  CUDA_CHECK_LAUNCH("group_norm_forward_kernel");
}

void group_norm_backward(const Tensor& dx, const Tensor& dweight, const Tensor& dbias, const Tensor& dout,
                         const Tensor& x, const Tensor& weight, const Tensor& mean, const Tensor& rstd, int64_t groups,
                         bool rms) {
  const char* op = "group_norm_backward";
  LATTE_CHECK(x.dim() >= 1 && dx.shape() == x.shape() && dout.shape() == x.shape() && groups > 0 &&
                  x.size(-1) % groups == 0,
              op, ": x ", x.shape().str(), " dx ", dx.shape().str(), " dout ", dout.shape().str(), " groups ", groups);
  const int64_t C = x.size(-1), N = C ? x.numel() / C : 0, Dg = C / groups;
  LATTE_CHECK(rstd.numel() == N * groups && rstd.dtype() == DType::F32, op, ": rstd ", rstd.shape().str());
  for (const Tensor* t : {&dx, &dout, &x, &rstd}) require_contiguous(*t, op, "operand");
  const bool use_mean = !rms && mean.defined();
  if (use_mean) require_contiguous(mean, op, "mean");
  Affine af = make_affine(weight, Tensor(), C, op);
  const int64_t items = N * groups;
  if (items == 0 || Dg == 0) return;
  cudaStream_t stream = current_stream();
  const float* pmean = use_mean ? mean.data<float>() : nullptr;
  const int dtdx = float_code(dx, op), dtd = float_code(dout, op), dtx = float_code(x, op);
  const bool vec = vec_ok(Dg, {&dx, &dout, &x, &weight});
  if (dweight.defined())
    LATTE_CHECK(dweight.numel() == C && dweight.is_contiguous(), op, ": dweight ", dweight.shape().str());
  if (dbias.defined()) LATTE_CHECK(dbias.numel() == C && dbias.is_contiguous(), op, ": dbias ", dbias.shape().str());
  TileGeom tg;
  int threads, cpl;
  size_t smem;
  if (vec && aligned16(rstd.data_ptr()) && (!pmean || aligned16(pmean)) &&
      plan_tiles(N, groups, Dg, dtx == kBF16 ? 2 : 4, dtd == kBF16 ? 2 : 4, true, pmean != nullptr, &tg, &threads, &cpl,
                 &smem)) {
    auto kernel = cpl == 1 ? group_norm_backward_tile_kernel<1> : group_norm_backward_tile_kernel<2>;
    const unsigned grid = tile_grid(kernel, threads, smem, tg.tiles);
    Tensor pw, pb;  // (grid, C) partial sums, one row per block
    if (dweight.defined()) pw = Tensor::empty({static_cast<int64_t>(grid), C}, DType::F32, x.device());
    if (dbias.defined()) pb = Tensor::empty({static_cast<int64_t>(grid), C}, DType::F32, x.device());
    float* ppw = pw.defined() ? pw.data<float>() : nullptr;
    float* ppb = pb.defined() ? pb.data<float>() : nullptr;
    kernel<<<grid, threads, smem, stream>>>(dx.data_ptr(), dtdx, ppw, ppb, dout.data_ptr(), dtd, x.data_ptr(), dtx, af,
                                            pmean, rstd.data<float>(), tg, rms);
    CUDA_CHECK_LAUNCH("group_norm_backward_tile_kernel");
    if (ppw) column_sum(dweight.data_ptr(), float_code(dweight, op), ppw, grid, C, true, stream);
    if (ppb) column_sum(dbias.data_ptr(), float_code(dbias, op), ppb, grid, C, true, stream);
    return;
  }
  group_norm_dx_kernel<<<blocks_for(items, 8), 256, 0, stream>>>(dx.data_ptr(), float_code(dx, op), dout.data_ptr(),
                                                                 float_code(dout, op), x.data_ptr(), float_code(x, op), af,
                                                                 pmean, rstd.data<float>(), items, groups, Dg, rms, vec);
  CUDA_CHECK_LAUNCH("group_norm_dx_kernel");
  if (!dweight.defined() && !dbias.defined()) return;
  const int64_t col_blocks = (C + 31) / 32;
  int64_t chunks = (2 * static_cast<int64_t>(sm_count()) + col_blocks - 1) / col_blocks;
  chunks = std::max<int64_t>(1, std::min<int64_t>({chunks, (N + 7) / 8, 256}));
  const int64_t rows_per_chunk = (N + chunks - 1) / chunks;
  chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
  Tensor pw, pb;
  if (dweight.defined()) pw = Tensor::empty({chunks, C}, DType::F32, x.device());
  if (dbias.defined()) pb = Tensor::empty({chunks, C}, DType::F32, x.device());
  group_norm_dparams_kernel<<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)), dim3(32, 8), 0,
                              stream>>>(pw.defined() ? pw.data<float>() : nullptr,
                                        pb.defined() ? pb.data<float>() : nullptr, dout.data_ptr(), float_code(dout, op),
                                        x.data_ptr(), float_code(x, op), pmean, rstd.data<float>(), N, groups, Dg,
                                        rows_per_chunk);
  CUDA_CHECK_LAUNCH("group_norm_dparams_kernel");
  if (pw.defined()) column_sum(dweight.data_ptr(), float_code(dweight, op), pw.data<float>(), chunks, C, true, stream);
  if (pb.defined()) column_sum(dbias.data_ptr(), float_code(dbias, op), pb.data<float>(), chunks, C, true, stream);
}

}  // namespace latte::cuda
