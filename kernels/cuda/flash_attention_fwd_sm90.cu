// Flash-attention forward for Hopper (sm_90a): the same algorithm as flash_attention_fwd.cu, with the two
// GEMMs on warpgroup tensor-core instructions (wgmma) instead of mma.sync and the loads on the TMA unit.
//   q (B, T, Hq, Dqk)  k (B, S, R*Hk, Dqk)  v (B, S, R*Hk, Dv)  ->  out (B, T, R*Hq, Dv), lse (B, R*Hq, T) f32
// Why: on H100 an mma.sync warp that owns 16 query rows must pull every K and V fragment through registers
// with ldmatrix, so shared-memory bandwidth caps the forward at ~240 TFLOP/s (measured, docs/attention_kernels.md).
// wgmma reads its B operand (K for S = Q K^T, V for O = P V) straight from shared memory for 64 rows at once,
// 4x the reuse, and runs at the full Hopper tensor rate.
// Block: a producer warpgroup and 2 consumer warpgroups (384 threads, 128 query rows; at (64,64) 3 consumers, 512
// threads, 192 rows: sm90_consumers), key tiles of 128. Warpgroup 0 is the producer: one thread issues TMA loads (Q
// once, then K/V tiles into 2 stages; full/empty mbarriers per stage) and the warpgroup gives its registers to the
// consumers (setmaxnreg 40 / 232, or 24 / 160 with 3 consumers). Each consumer owns 64 query rows. Tiles land in
// the canonical 128-byte-swizzled layout the wgmma descriptors describe (TMA's SWIZZLE_128B): a (rows, D) tile is
// D/64 column blocks of (rows, 64) bf16, each row 128 bytes with its 16-byte chunks XORed by row % 8. Rows past
// T or S are zero-filled by the TMA unit. Per key tile, per consumer warpgroup:
//   S (64 x 128) = Q K^T      wgmma m64n128k16, A = Q and B = K from shared memory (K-major), Dqk/16 steps
//   online softmax on the accumulator registers (same layout per warp as mma.sync's C), P -> bf16 A registers
//   O (64 x Dv) += P V        wgmma m64n{Dv}k16, A = P from registers, B = V from shared memory (MN-major)
//   each warp then releases the stage's K and V (empty mbarriers, one arrival per consumer warp) for refilling.
// The consumers overlap the two (session 20; at Dqk 64 since session 21): S of tile j is issued together with P V
// of tile j - 1, and the softmax of tile j runs while that P V does; K j is released once S j is done, V j after
// P V j; and (session 21) they take turns issuing those GEMMs (ping-pong, in a ring), so one's softmax also runs
// beside the others' products. (p.sm90_overlap = 0, for comparisons: S, softmax, P V in turn, no ping-pong.)
// No block-wide barrier inside the loop: loads run a stage ahead, and the consumers only wait for data.
// Persistent (session 21): one block per SM takes query tiles (work items, fwd_item) from a counter until none are
// left; the producer loads the next item's Q as soon as all consumers are past the current item's last S product
// and its key tiles as stages free up, so the next item starts without the block launch, barrier set-up and first
// loads of a fresh block (+5-8% at T = 4096, +14% at 2048).
// Head dims: Dqk in {64, 128, 192}, Dv in {64, 128}.
// Floor: as the mma.sync forward (2.8 ms at (192,128), B=4, T=4096, 16 heads, 989 TFLOP/s).
#include <algorithm>
#include <cmath>
#include <map>
#include <mutex>
#include <utility>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/flash_attention_sm90.cuh"
#include "kernels/cuda/flash_schedule.h"

namespace latte::cuda::flash {

namespace {

// Consumer warpgroups (64 query rows each) beside the TMA producer warpgroup: 3 at (64,64), where a warpgroup's
// softmax takes as long as its two products, so that two others keep the tensor cores busy while it runs; else 2.
template <int DQK, int DV>
__host__ __device__ constexpr int sm90_consumers() {
  return DQK == 64 && DV == 64 ? 3 : 2;
}
template <int DQK, int DV>
__host__ __device__ constexpr int sm90_threads() {
  return 128 * (1 + sm90_consumers<DQK, DV>());
}
template <int DQK, int DV>
__host__ __device__ constexpr int sm90_rows() {  // query rows per block
  return 64 * sm90_consumers<DQK, DV>();
}
constexpr int kSm90BC = 128;       // keys per tile
constexpr int kSm90Stages = 2;     // K/V tile buffers

template <int DQK, int DV>
constexpr int sm90_smem_bytes() {  // Q, stages x (K, V), mbarriers, the work item, alignment slack
  return (sm90_rows<DQK, DV>() * DQK + kSm90Stages * kSm90BC * (DQK + DV)) * 2 + 8 * (2 + 4 * kSm90Stages) + 8 + 1024;
}

// The online softmax of one consumer's score tile (64 x BC raw scores of keys n0 .., sc[4n + c] is row
// row0 + 8 (c >> 1), key n0 + 8n + 2 tq + (c & 1)): masks the causal diagonal and the ragged key tail, moves the
// running maxima (log2 units), returns in alpha the factor that O must be multiplied by before this tile's P V,
// rescales l and adds the tile's row sums, and leaves P = exp2(S scale - m) in sc (fp32; pack_a_fragments makes the
// bf16 A fragments of the P V products).
template <int BC>
__device__ __forceinline__ void fwd_softmax_tile(float (&sc)[BC / 2], float (&m_run)[2], float (&l_run)[2],
                                                 float (&alpha)[2], const Params& p, int n0, int m0, int row0, int tq) {
  const int off = p.S - p.T;
  // The scale is folded into the exponent below (valid since scale > 0), so the mask works on raw scores.
  const bool need_mask = (n0 + BC > p.S) || (p.causal && n0 + BC - 1 > m0 + off);
  if (need_mask) {
#pragma unroll
    for (int x = 0; x < BC / 2; ++x) {
      const int n = x >> 2, c = x & 3;
      const int col = n0 + n * 8 + 2 * tq + (c & 1), row = row0 + (c >> 1) * 8;
      if (col >= p.S || (p.causal && col > row + off)) sc[x] = -INFINITY;
    }
  }
  float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
  for (int n = 0; n < BC / 8; ++n) {
    mx[0] = fmaxf(mx[0], fmaxf(sc[4 * n], sc[4 * n + 1]));
    mx[1] = fmaxf(mx[1], fmaxf(sc[4 * n + 2], sc[4 * n + 3]));
  }
  float m_use[2];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    mx[h] = fmaxf(m_run[h], quad_max(mx[h]) * p.scale_log2);  // log2 units
    m_use[h] = mx[h] == -INFINITY ? 0.f : mx[h];
    alpha[h] = fast_exp2(m_run[h] - m_use[h]);
    m_run[h] = mx[h];
    l_run[h] *= alpha[h];
  }
#pragma unroll
  for (int x = 0; x < BC / 2; ++x) {
    const int h = (x >> 1) & 1;
    sc[x] = fast_exp2(fmaf(sc[x], p.scale_log2, -m_use[h]));
    l_run[h] += sc[x];
  }
}

// O (64 x DV per consumer, o[4d + 2h + 0/1] in row row0 + 8h) *= alpha per row.
template <int DV>
__device__ __forceinline__ void fwd_scale_o(float (&o)[DV / 2], const float (&alpha)[2]) {
#pragma unroll
  for (int d = 0; d < DV / 8; ++d)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      o[4 * d + 2 * h] *= alpha[h];
      o[4 * d + 2 * h + 1] *= alpha[h];
    }
}

// TMA descriptors of q, k, v: 4-D (D, heads, rows, batch) views with 128-byte swizzle and (64, 1, rows, 1) boxes
// (q: the block's query rows, k and v: 128 keys), so one load fills one 64-column block of a tile in the layout the
// wgmma descriptors read.
struct TmaMaps {
  CUtensorMap q, k, v;
};

template <int DQK, int DV>
__global__ void __launch_bounds__(sm90_threads<DQK, DV>(), 1)
    flash_fwd_sm90_kernel(const Params p, const __grid_constant__ TmaMaps maps) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int NCW = sm90_consumers<DQK, DV>(), BR = sm90_rows<DQK, DV>(), BC = kSm90BC;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t base = (smem_u32(smem_raw) + 1023) & ~1023u;
  const uint32_t sQ = base;                                 // DQK/64 blocks of (BR, 64)
  const uint32_t sK = sQ + BR * DQK * 2;                    // stages x DQK/64 blocks of (BC, 64)
  const uint32_t sV = sK + kSm90Stages * BC * DQK * 2;      // stages x DV/64 blocks of (BC, 64)
  // mbarriers (8 bytes each): Q full and Q empty, then per stage K full, V full, K empty, V empty. K and V of a
  // stage are released apart: with the overlapped schedule K j is free once S j is done, V j only once P V j is.
  // Then the work item the producer hands the consumers (an int).
  const uint32_t bars = sV + kSm90Stages * BC * DV * 2;
  const uint32_t q_full = bars, q_empty = bars + 8, kfull0 = bars + 16, vfull0 = kfull0 + 8 * kSm90Stages;
  const uint32_t kempty0 = vfull0 + 8 * kSm90Stages, vempty0 = kempty0 + 8 * kSm90Stages;
  volatile int* s_item = reinterpret_cast<volatile int*>(smem_raw + (vempty0 + 8 * kSm90Stages - smem_u32(smem_raw)));

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wg = warp >> 2, g = lane >> 2, tq = lane & 3;
  const int RHq = p.R * p.Hq, n_m = (p.T + BR - 1) / BR, n_items = n_m * p.B * RHq;
  const int off = p.S - p.T;
  struct Tile {  // a work item's query tile: rows m0 .., batch b, virtual head vh = (branch r, head i), kv head kvh
    int m0, b, vh, i, kvh, n_tiles;
  };
  auto tile_of = [&](int t) {
    const FwdItem it = fwd_item(t, n_m, p.B * RHq, p.sm90_head_group);
    Tile w;
    w.m0 = it.m_block * BR;
    w.b = it.bh / RHq;
    w.vh = it.bh - w.b * RHq;
    const int r = w.vh / p.Hq;
    w.i = w.vh - r * p.Hq;
    w.kvh = r * p.Hk + w.i / p.G;
    const int kv_end = p.causal ? min(p.S, min(w.m0 + BR, p.T) + off) : p.S;
    w.n_tiles = kv_end > 0 ? (kv_end + BC - 1) / BC : 0;
    return w;
  };

  if (tid == 0) {
    mbar_init(q_full, 1), mbar_init(q_empty, 4 * NCW);  // Q empty: one arrival per consumer warp
    for (int s = 0; s < kSm90Stages; ++s) {
      mbar_init(kfull0 + 8 * s, 1), mbar_init(vfull0 + 8 * s, 1);
      mbar_init(kempty0 + 8 * s, 4 * NCW), mbar_init(vempty0 + 8 * s, 4 * NCW);
    }
    mbar_init_fence();
  }
  __syncthreads();

  // Register split after setmaxnreg: 128 x 40 + 256 x 232 = 64512 = the 384 x 168 the block is launched with.
  // Three consumers: 128 x 24 + 384 x 160 = 64512 = the 512 x 126 the block is launched with.
  constexpr int kProducerRegs = NCW == 3 ? 24 : 40, kConsumerRegs = NCW == 3 ? 160 : 232;
  if (wg == 0) {
    // Producer: one thread issues every load; a K (V) buffer is refilled once all consumer warps released it.
    // Persistent (p.sm90_persistent): after its first item (blockIdx.x) the block takes the next from a counter,
    // and the next item's Q and first key tiles load while the consumers finish the current one: Q once they are
    // past its last S product, K and V as stages free up. Else the block does item blockIdx.x alone.
    setmaxnreg_dec<kProducerRegs>();
    if (tid == 0) {
      int t = blockIdx.x, kv = 0;  // kv: key tiles loaded so far (stage kv % stages)
      for (int local = 0;; ++local) {
        if (local > 0) mbar_wait(q_empty, (local - 1) & 1);
        *s_item = t;  // published by the arrival below
        if (t >= n_items) {
          mbar_arrive(q_full);
          break;
        }
        const Tile w = tile_of(t);
        mbar_arrive_expect_tx(q_full, BR * DQK * 2);
        for (int c = 0; c < DQK / 64; ++c) tma_load_4d(sQ + c * BR * 128, &maps.q, c * 64, w.i, w.m0, w.b, q_full);
        for (int j = 0; j < w.n_tiles; ++j, ++kv) {
          const int s = kv % kSm90Stages;
          const uint32_t kfull = kfull0 + 8 * s, vfull = vfull0 + 8 * s;
          if (kv >= kSm90Stages) mbar_wait(kempty0 + 8 * s, (kv / kSm90Stages - 1) & 1);
          mbar_arrive_expect_tx(kfull, BC * DQK * 2);
          for (int c = 0; c < DQK / 64; ++c)
            tma_load_4d(sK + s * BC * DQK * 2 + c * BC * 128, &maps.k, c * 64, w.kvh, j * BC, w.b, kfull);
          if (kv >= kSm90Stages) mbar_wait(vempty0 + 8 * s, (kv / kSm90Stages - 1) & 1);
          mbar_arrive_expect_tx(vfull, BC * DV * 2);
          for (int c = 0; c < DV / 64; ++c)
            tma_load_4d(sV + s * BC * DV * 2 + c * BC * 128, &maps.v, c * 64, w.kvh, j * BC, w.b, vfull);
        }
        t = p.sm90_persistent ? sched_next_item(p.sm90_sched) : n_items;
      }
      if (p.sm90_persistent) sched_block_done(p.sm90_sched);
    }
    return;
  }
  setmaxnreg_inc<kConsumerRegs>();
  const int cw = wg - 1;  // consumer warpgroup: query rows m0 + 64 cw ..
  const uint32_t sQw = sQ + cw * 64 * 128;  // this warpgroup's 64 query rows
  float o[DV / 2];
  float sc[BC / 2], alpha[2];
  uint32_t pa[BC / 16][4];

  int kv0 = 0;  // key tiles of earlier items (stage and phase of tile j: kv0 + j)
  auto wait_k = [&](int j) { mbar_wait(kfull0 + 8 * ((kv0 + j) % kSm90Stages), ((kv0 + j) / kSm90Stages) & 1); };
  auto wait_v = [&](int j) { mbar_wait(vfull0 + 8 * ((kv0 + j) % kSm90Stages), ((kv0 + j) / kSm90Stages) & 1); };
  auto stage_k = [&](int j) { return sK + ((kv0 + j) % kSm90Stages) * BC * DQK * 2; };
  auto stage_v = [&](int j) { return sV + ((kv0 + j) % kSm90Stages) * BC * DV * 2; };
  // This warp is done with a stage's K (V), or with Q (after the item's last S product).
  auto release_k = [&](int j) { if (lane == 0) mbar_arrive(kempty0 + 8 * ((kv0 + j) % kSm90Stages)); };
  auto release_v = [&](int j) { if (lane == 0) mbar_arrive(vempty0 + 8 * ((kv0 + j) % kSm90Stages)); };
  auto release_q = [&] { if (lane == 0) mbar_arrive(q_empty); };
  // Ping-pong on the overlapped schedule: the consumers take turns issuing their GEMMs (consumer c waits at named
  // barrier 1 + c and passes the turn by arriving at the next one's, in a ring), so that one's softmax runs while
  // the others' products do. The last consumer hands consumer 0 the first turn; consumer 0 takes the last one back
  // at the end.
  const bool pingpong = p.sm90_pingpong != 0 && p.sm90_overlap != 0;
  auto my_turn = [&] { if (pingpong) named_bar_sync(1 + cw, 256); };
  auto pass_turn = [&] { if (pingpong) named_bar_arrive(1 + (cw + 1) % NCW, 256); };
  if (pingpong && cw == NCW - 1) named_bar_arrive(1, 256);

  for (int local = 0;; ++local) {
    mbar_wait(q_full, local & 1);
    const int t = *s_item;
    if (t >= n_items) break;
    const Tile w = tile_of(t);
    const int n_tiles = w.n_tiles, m0 = w.m0;
#pragma unroll
    for (int x = 0; x < DV / 2; ++x) o[x] = 0.f;
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
    const int row0 = m0 + cw * 64 + (warp & 3) * 16 + g;  // rows row0, row0 + 8
    if (n_tiles == 0) release_q();

    if (p.sm90_overlap != 0 && n_tiles > 0) {
      // Overlapped schedule (FlashAttention-3's intra-warpgroup pipelining): S of tile j is issued together with
      // P V of tile j - 1, so the softmax of tile j runs while the tensor cores do that P V. P j stays in sc (fp32)
      // until P V j - 1 is done; then O is rescaled by tile j's alpha and P j packed into pa for the next step.
      wait_k(0);
      my_turn();
      wgmma_fence();
      wgmma_ss_kmajor<DQK, BC>(sc, sQw, BR * 128, stage_k(0), BC * 128);
      wgmma_commit();
      pass_turn();
      wgmma_wait_all();
      pin(sc);
      release_k(0);
      if (n_tiles == 1) release_q();
      fwd_softmax_tile<BC>(sc, m_run, l_run, alpha, p, 0, m0, row0, tq);  // O is still 0: no rescale
      pack_a_fragments<BC>(sc, pa);
      for (int j = 1; j < n_tiles; ++j) {
        wait_k(j);
        wait_v(j - 1);
        my_turn();
        wgmma_fence();
        wgmma_ss_kmajor<DQK, BC>(sc, sQw, BR * 128, stage_k(j), BC * 128);
        wgmma_commit();
        wgmma_rs_mn<DV, BC>(o, pa, stage_v(j - 1));
        wgmma_commit();
        pass_turn();
        wgmma_wait<1>();  // S j done, P V j - 1 may still run
        pin(sc);
        release_k(j);
        if (j == n_tiles - 1) release_q();
        fwd_softmax_tile<BC>(sc, m_run, l_run, alpha, p, j * BC, m0, row0, tq);
        wgmma_wait<0>();
        pin(o);
        release_v(j - 1);
        fwd_scale_o<DV>(o, alpha);
        pack_a_fragments<BC>(sc, pa);
      }
      wait_v(n_tiles - 1);
      my_turn();
      wgmma_fence();
      wgmma_rs_mn<DV, BC>(o, pa, stage_v(n_tiles - 1));
      wgmma_commit();
      pass_turn();
      wgmma_wait_all();
      pin(o);
      release_v(n_tiles - 1);
    } else {
      for (int j = 0; j < n_tiles; ++j) {
        wait_k(j);
        wait_v(j);
        // S = Q K^T (64 x 128 per warpgroup).
        wgmma_fence();
        wgmma_ss_kmajor<DQK, BC>(sc, sQw, BR * 128, stage_k(j), BC * 128);
        wgmma_commit();
        wgmma_wait_all();
        pin(sc);
        if (j == n_tiles - 1) release_q();
        fwd_softmax_tile<BC>(sc, m_run, l_run, alpha, p, j * BC, m0, row0, tq);
        fwd_scale_o<DV>(o, alpha);
        pack_a_fragments<BC>(sc, pa);

        // O += P V.
        wgmma_fence();
        pin(o);
        wgmma_rs_mn<DV, BC>(o, pa, stage_v(j));
        wgmma_commit();
        wgmma_wait_all();
        pin(o);
        release_k(j);  // this warp is done with the stage
        release_v(j);
      }
    }

    fwd_store_rows<DV>(p, [&](int d, int c) { return o[4 * d + c]; }, m_run, l_run, w.b, w.vh, row0, tq);
    kv0 += n_tiles;
  }
  if (pingpong && cw == 0) named_bar_sync(1, 256);  // the last consumer's last pass of the turn
#endif
}

template <int DQK, int DV>
void run_fwd_sm90(const Params& p, cudaStream_t stream) {
  constexpr int smem = sm90_smem_bytes<DQK, DV>();
  allow_dynamic_smem(flash_fwd_sm90_kernel<DQK, DV>, smem);
  const int rhk = p.R * p.Hk;
  TmaMaps maps;
  constexpr int BR = sm90_rows<DQK, DV>();
  maps.q = tma_map_bf16(p.q, p.dqk, p.Hq, p.T, p.B, p.q_sh, p.q_st, p.q_sb, BR);  // p.dqk < DQK: zeros past it
  maps.k = tma_map_bf16(p.k, p.dqk, rhk, p.S, p.B, p.k_sh, p.k_st, p.k_sb, kSm90BC);
  maps.v = tma_map_bf16(p.v, DV, rhk, p.S, p.B, p.v_sh, p.v_st, p.v_sb, kSm90BC);
  Params q = p;
  const int64_t heads = int64_t(p.B) * p.R * p.Hq, items = heads * ((p.T + BR - 1) / BR);
  LATTE_CHECK(items < (int64_t(1) << 31), "flash attention (sm90) forward: ", items, " query tiles, more than 2^31");
  // Heads per heaviest-first group: K and V within 16 MB, a third of the H100's L2, so that the blocks in flight
  // re-read K and V from L2.
  if (q.sm90_head_group <= 0) q.sm90_head_group = fwd_head_group(p.S, DQK, DV, p.G, heads);
  // Persistent: one block per SM (the shared memory and registers of a block fill an SM).
  const int sms = device_properties().multiProcessorCount;
  const int blocks = q.sm90_persistent ? static_cast<int>(std::min<int64_t>(items, sms)) : static_cast<int>(items);
  q.sm90_sched = q.sm90_persistent ? sm90_scheduler_counters(stream) : nullptr;
  flash_fwd_sm90_kernel<DQK, DV><<<blocks, sm90_threads<DQK, DV>(), smem, stream>>>(q, maps);
  CUDA_CHECK_LAUNCH("flash_fwd_sm90_kernel");
}

// Writes 1 when this file was compiled for sm_90a (wgmma available), 0 otherwise (e.g. a plain sm_90 build).
__global__ void sm90_probe_kernel(int* out) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  *out = 1;
#else
  *out = 0;
#endif
}

// cuTensorMapEncodeTiled from the driver (no link against libcuda); null when the driver has none.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 fn = [] {
    void* ptr = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &ptr, 12000, cudaEnableDefault, &found) !=
            cudaSuccess ||
        found != cudaDriverEntryPointSuccess)
      ptr = nullptr;
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(ptr);
  }();
  return fn;
}

}  // namespace

// The persistent wgmma kernels' counters for this device and stream (two ints, zeroed once; each launch leaves them
// zero). One pair per stream, shared by the forward and the backward: launches on one stream run in order, so they
// never use it at once.
int* sm90_scheduler_counters(cudaStream_t stream) {
  static std::mutex mutex;
  static std::map<std::pair<int, cudaStream_t>, int*> counters;
  int device = 0;
  CUDA_CHECK(cudaGetDevice(&device));
  const std::lock_guard<std::mutex> lock(mutex);
  int*& c = counters[{device, stream}];
  if (!c) {
    CUDA_CHECK(cudaMalloc(&c, 2 * sizeof(int)));
    CUDA_CHECK(cudaMemset(c, 0, 2 * sizeof(int)));
  }
  return c;
}

bool tma_available() { return tensor_map_encoder() != nullptr; }

CUtensorMap tma_map_bf16(const bf16* base, int64_t d, int64_t heads, int64_t rows, int64_t batch, int64_t sh, int64_t st,
                         int64_t sb, int box_rows, int box_cols) {
  CUtensorMap map;
  const cuuint64_t dims[4] = {cuuint64_t(d), cuuint64_t(heads), cuuint64_t(rows), cuuint64_t(batch)};
  // A dimension of size 1 is never stepped over: give it any valid stride (its own may be unaligned).
  auto stride = [&](int64_t n, int64_t s) { return cuuint64_t(n > 1 ? s * 2 : d * 2); };
  const cuuint64_t strides[3] = {stride(heads, sh), stride(rows, st), stride(batch, sb)};
  LATTE_CHECK(box_cols == 64 || box_cols == 32, "tma_map_bf16: box_cols must be 64 or 32, got ", box_cols);
  const cuuint32_t box[4] = {cuuint32_t(box_cols), 1, cuuint32_t(box_rows), 1}, unit[4] = {1, 1, 1, 1};
  const CUresult res = tensor_map_encoder()(&map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4, const_cast<bf16*>(base), dims,
                                            strides, box, unit, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                            box_cols == 64 ? CU_TENSOR_MAP_SWIZZLE_128B : CU_TENSOR_MAP_SWIZZLE_64B,
                                            CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                            CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  LATTE_CHECK(res == CUDA_SUCCESS, "flash attention (sm90): cuTensorMapEncodeTiled failed with ", int(res),
              " for dims (", d, ", ", heads, ", ", rows, ", ", batch, ") strides (", sh, ", ", st, ", ", sb, ")");
  return map;
}

bool device_has_sm90_kernels() {
  static int cached = -1;
  if (cached < 0) {
    const cudaDeviceProp& prop = device_properties();
    int value = 0;
    if (prop.major == 9 && prop.minor == 0) {
      int* d = nullptr;
      CUDA_CHECK(cudaMalloc(&d, sizeof(int)));
      sm90_probe_kernel<<<1, 1>>>(d);
      const cudaError_t launch = cudaGetLastError();
      if (launch == cudaSuccess) CUDA_CHECK(cudaMemcpy(&value, d, sizeof(int), cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaFree(d));
      if (launch != cudaSuccess) value = 0;  // no image for this device in the binary
    }
    cached = value;
  }
  return cached == 1;
}

bool fwd_sm90_supported(int dqk, int dv) {
  return sm90_head_dims(dqk, dv) && device_has_sm90_kernels() && tma_available();
}

void launch_fwd_sm90(const Params& p, int dqk, int dv, cudaStream_t stream) {
  dispatch_head_dims<false>(sm90_kernel_dqk(dqk), dv, "forward (sm90)",
                            [&](auto a, auto c) { run_fwd_sm90<a, c>(p, stream); });
}

}  // namespace latte::cuda::flash
