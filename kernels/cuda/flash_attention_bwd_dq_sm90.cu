// Flash-attention backward, deterministic query-major dQ pass for Hopper (sm_90a): flash_attention_bwd_dq.cu's
// algorithm with its three GEMMs on wgmma and its loads on TMA.
//   q (B, T, Hq, Dqk), k, v, dout, lse, D (from the key-major pass's preprocessing) -> dq (B, T, Hq, Dqk) bf16
// Why: deterministic mode (no fp32 atomics, dQ summed in a fixed order) ran this pass on mma.sync, 4 warps of 16
// rows pulling every K and V fragment through registers, so the whole deterministic backward ran at about half the
// atomic one's speed. Here a block owns 128 query rows of one query head (2 consumer warpgroups of 64 rows beside a
// TMA producer warpgroup, as the wgmma forward) and walks, in a fixed order, the MLRA branches that read that head
// and their key tiles (64 keys, 3 stages). Per key tile, per consumer:
//   S  (64 x 64) = Q K^T       SS, both K-major (Q's rows of this consumer, the stage's K)
//   dP (64 x 64) = dO V^T      SS, both K-major (V's rows are keys: the same layout as K)
//   dS = P (dP - D), P = exp2(S scale log2e - lse log2e), masked         (registers)
//   dQ (64 x Dqk) += dS K      RS: A = dS from registers, B = K MN-major
// The next tile's S and dP are issued right behind this tile's dQ product, and the two consumers take turns issuing
// (ping-pong), so the tensor cores run one's products while the other does its element-wise work. Registers at
// (192, 128): dQ 96 + S 32 + dP 32 floats and dS's 16 fragments per thread.
// Work order: the forward's (flash_schedule.h: heaviest query tiles first inside L2-sized groups of heads), one
// block per query tile.
// Floor: 3 GEMMs of the forward's size, 1.5x the forward's FLOPs (1.2 ms at (192,128), B=4, T=4096, 16 heads, 989
// TFLOP/s).
#include <algorithm>
#include <cmath>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/flash_attention_sm90.cuh"
#include "kernels/cuda/flash_schedule.h"

namespace latte::cuda::flash {

namespace {

constexpr int kDq90Consumers = 2;
constexpr int kDq90Threads = 128 * (1 + kDq90Consumers);  // warpgroup 0: producer
constexpr int kDq90BR = 64 * kDq90Consumers;              // query rows per block
constexpr int kDq90BC = 64;                               // keys per tile (S and dP: 32 registers each)
// K/V tile buffers: 3, so that a consumer's next tile is in while the other one holds the turn (ping-pong, below);
// with 2 the ping-pong gained nothing (A/B, H100: (192,128) 354 -> 357 TFLOP/s, with 3 stages 404).
constexpr int kDq90Stages = 3;

template <int DQK, int DV>
constexpr int dq90_smem_bytes() {  // Q, dO, stages x (K, V), mbarriers, alignment slack
  return (kDq90BR * (DQK + DV) + kDq90Stages * kDq90BC * (DQK + DV)) * 2 + 8 * (3 + 2 * kDq90Stages) + 1024;
}

// TMA descriptors: q (the block's 128 rows of one query head), dout (of one virtual head), k and v (64 keys).
struct DqTmaMaps {
  CUtensorMap q, dout, k, v;
};

template <int DQK, int DV>
__global__ void __launch_bounds__(kDq90Threads, 1)
    flash_bwd_dq_sm90_kernel(const Params p, const __grid_constant__ DqTmaMaps maps, int head_group) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int BR = kDq90BR, BC = kDq90BC;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t base = (smem_u32(smem_raw) + 1023) & ~1023u;
  const uint32_t sQ = base;                               // DQK/64 blocks of (BR, 64)
  const uint32_t sdO = sQ + BR * DQK * 2;                 // DV/64 blocks of (BR, 64)
  const uint32_t sK = sdO + BR * DV * 2;                  // stages x DQK/64 blocks of (BC, 64)
  const uint32_t sV = sK + kDq90Stages * BC * DQK * 2;    // stages x DV/64 blocks of (BC, 64)
  // mbarriers: Q full, dO full, dO empty (the consumers are done with a branch's dO), then per stage full, empty.
  const uint32_t bars = sV + kDq90Stages * BC * DV * 2;
  const uint32_t q_full = bars, do_full = bars + 8, do_empty = bars + 16, full0 = bars + 24;
  const uint32_t empty0 = full0 + 8 * kDq90Stages;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wg = warp >> 2, g = lane >> 2, tq = lane & 3;
  const int n_m = (p.T + BR - 1) / BR, off = p.S - p.T;
  const FwdItem item = fwd_item(blockIdx.x, n_m, p.B * p.Hq, head_group);
  const int m0 = item.m_block * BR, b = item.bh / p.Hq, i = item.bh - b * p.Hq;
  const int kv_end = p.causal ? min(p.S, min(m0 + BR, p.T) + off) : p.S;
  const int n_tiles = (kv_end + BC - 1) / BC;  // >= 1: S >= T when causal, S >= 1

  if (tid == 0) {
    mbar_init(q_full, 1), mbar_init(do_full, 1), mbar_init(do_empty, 4 * kDq90Consumers);
    for (int s = 0; s < kDq90Stages; ++s) mbar_init(full0 + 8 * s, 1), mbar_init(empty0 + 8 * s, 4 * kDq90Consumers);
    mbar_init_fence();
  }
  __syncthreads();

  // 128 x 40 + 256 x 232 = 64512 = the 384 x 168 the block is launched with (as the wgmma forward).
  if (wg == 0) {
    setmaxnreg_dec<40>();
    if (tid == 0) {
      mbar_arrive_expect_tx(q_full, BR * DQK * 2);
      for (int c = 0; c < DQK / 64; ++c) tma_load_4d(sQ + c * BR * 128, &maps.q, c * 64, i, m0, b, q_full);
      int kv = 0;  // key tiles loaded so far (stage kv % stages)
      for (int r = 0; r < p.R; ++r) {
        const int vh = r * p.Hq + i, kvh = r * p.Hk + i / p.G;
        if (r > 0) mbar_wait(do_empty, (r - 1) & 1);
        mbar_arrive_expect_tx(do_full, BR * DV * 2);
        for (int c = 0; c < DV / 64; ++c) tma_load_4d(sdO + c * BR * 128, &maps.dout, c * 64, vh, m0, b, do_full);
        for (int j = 0; j < n_tiles; ++j, ++kv) {
          const int s = kv % kDq90Stages;
          const uint32_t full = full0 + 8 * s;
          if (kv >= kDq90Stages) mbar_wait(empty0 + 8 * s, (kv / kDq90Stages - 1) & 1);
          mbar_arrive_expect_tx(full, BC * (DQK + DV) * 2);
          for (int c = 0; c < DQK / 64; ++c)
            tma_load_4d(sK + s * BC * DQK * 2 + c * BC * 128, &maps.k, c * 64, kvh, j * BC, b, full);
          for (int c = 0; c < DV / 64; ++c)
            tma_load_4d(sV + s * BC * DV * 2 + c * BC * 128, &maps.v, c * 64, kvh, j * BC, b, full);
        }
      }
    }
    return;
  }
  setmaxnreg_inc<232>();
  const int cw = wg - 1;
  const uint32_t sQw = sQ + cw * 64 * 128, sdOw = sdO + cw * 64 * 128;  // this consumer's 64 rows
  const int row0 = m0 + cw * 64 + (warp & 3) * 16 + g;                   // rows row0, row0 + 8
  float dq[DQK / 2], s[BC / 2], dp[BC / 2];
  uint32_t ds[BC / 16][4];
#pragma unroll
  for (int x = 0; x < DQK / 2; ++x) dq[x] = 0.f;
  auto stage = [](int kv) { return kv % kDq90Stages; };
  auto wait_full = [&](int kv) { mbar_wait(full0 + 8 * stage(kv), (kv / kDq90Stages) & 1); };
  auto release = [&](int kv) { if (lane == 0) mbar_arrive(empty0 + 8 * stage(kv)); };
  // S and dP of key tile kv (stage kv % stages), issued and committed as one group.
  // Ping-pong (as the wgmma forward): the consumers take turns issuing their products (consumer c waits at named
  // barrier 1 + c, then passes the turn to the other), so that one's element-wise work runs beside the other's
  // GEMMs. Consumer 1 hands consumer 0 the first turn; consumer 0 takes the last one back at the end.
  auto my_turn = [&] { named_bar_sync(1 + cw, 256); };
  auto pass_turn = [&] { named_bar_arrive(1 + (cw + 1) % kDq90Consumers, 256); };
  if (cw == kDq90Consumers - 1) named_bar_arrive(1, 256);
  auto issue_s_dp = [&](int kv) {
    wgmma_fence();
    wgmma_ss_kmajor<DQK, BC>(s, sQw, BR * 128, sK + stage(kv) * BC * DQK * 2, BC * 128);
    wgmma_ss_kmajor<DV, BC>(dp, sdOw, BR * 128, sV + stage(kv) * BC * DV * 2, BC * 128);
    wgmma_commit();
  };
  mbar_wait(q_full, 0);

  int kv = 0;  // key tiles of earlier branches
  for (int r = 0; r < p.R; ++r) {
    const int vh = r * p.Hq + i;
    float lse2[2], dl[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int t = row0 + 8 * h;
      const int64_t at = (int64_t(b) * p.R * p.Hq + vh) * p.T + t;
      lse2[h] = t < p.T ? p.lse[at] * kLog2e : 0.f;
      dl[h] = t < p.T ? p.delta[at] : 0.f;
    }
    mbar_wait(do_full, r & 1);
    wait_full(kv);
    my_turn();
    issue_s_dp(kv);
    pass_turn();
    wgmma_wait_all();
    for (int j = 0; j < n_tiles; ++j, ++kv) {
      pin(s), pin(dp);
      // dS = P (dP - D); masked: keys past S or the causal diagonal, rows past T.
      const int n0 = j * BC;
      const bool need_mask = (n0 + BC > p.S) || (m0 + BR > p.T) || (p.causal && n0 + BC - 1 > m0 + off);
#pragma unroll
      for (int x = 0; x < BC / 2; ++x) {
        const int n = x >> 2, c = x & 3, h = c >> 1;
        float pr = fast_exp2(fmaf(s[x], p.scale_log2, -lse2[h]));
        if (need_mask) {
          const int col = n0 + n * 8 + 2 * tq + (c & 1), row = row0 + 8 * h;
          if (col >= p.S || row >= p.T || (p.causal && col > row + off)) pr = 0.f;
        }
        s[x] = pr * (dp[x] - dl[h]);
      }
      pack_a_fragments<BC>(s, ds);
      // dQ += dS K, then (same branch) the next tile's S and dP behind it.
      if (j + 1 < n_tiles) wait_full(kv + 1);
      my_turn();
      wgmma_fence();
      wgmma_rs_mn<DQK, BC>(dq, ds, sK + stage(kv) * BC * DQK * 2);
      wgmma_commit();
      if (j + 1 < n_tiles) issue_s_dp(kv + 1);
      pass_turn();
      if (j + 1 < n_tiles) {
        wgmma_wait<1>();  // the dQ product is done with K and with dS
        pin(dq);
        release(kv);
        wgmma_wait_all();
      } else {
        wgmma_wait_all();
        pin(dq);
        release(kv);
      }
    }
    if (lane == 0) mbar_arrive(do_empty);  // this warp's S and dP products of the branch are done
  }
  if (cw == 0) named_bar_sync(1, 256);  // the last consumer's last pass of the turn

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int t = row0 + 8 * h;
    if (t < p.T) {
      bf16* dst = p.dq + ((int64_t(b) * p.T + t) * p.Hq + i) * p.dqk + 2 * tq;
#pragma unroll
      for (int n = 0; n < DQK / 8; ++n)
        if (DQK != 128 || 8 * n < p.dqk)  // Dqk 96 on the 128 kernel: its pad columns are not written
          *reinterpret_cast<uint32_t*>(dst + 8 * n) =
              pack_bf16(dq[4 * n + 2 * h] * p.scale, dq[4 * n + 2 * h + 1] * p.scale);
    }
  }
#endif
}

template <int DQK, int DV>
void run_dq_sm90(const Params& p, cudaStream_t stream) {
  constexpr int smem = dq90_smem_bytes<DQK, DV>();
  allow_dynamic_smem(flash_bwd_dq_sm90_kernel<DQK, DV>, smem);
  const int rhk = p.R * p.Hk, rhq = p.R * p.Hq;
  DqTmaMaps maps;
  maps.q = tma_map_bf16(p.q, p.dqk, p.Hq, p.T, p.B, p.q_sh, p.q_st, p.q_sb, kDq90BR);  // p.dqk < DQK: zeros past it
  maps.dout = tma_map_bf16(p.dout, DV, rhq, p.T, p.B, p.do_sh, p.do_st, p.do_sb, kDq90BR);
  maps.k = tma_map_bf16(p.k, p.dqk, rhk, p.S, p.B, p.k_sh, p.k_st, p.k_sb, kDq90BC);
  maps.v = tma_map_bf16(p.v, DV, rhk, p.S, p.B, p.v_sh, p.v_st, p.v_sb, kDq90BC);
  const int64_t pairs = int64_t(p.B) * p.Hq, items = pairs * ((p.T + kDq90BR - 1) / kDq90BR);
  LATTE_CHECK(items < (int64_t(1) << 31), "flash attention (sm90) dq pass: ", items, " query tiles, more than 2^31");
  // Heads per heaviest-first group: their K and V (every branch's) within 16 MB of L2, as the forward's.
  const int group = fwd_head_group(int64_t(p.S) * p.R, DQK, DV, p.G, pairs);
  flash_bwd_dq_sm90_kernel<DQK, DV><<<static_cast<int>(items), kDq90Threads, smem, stream>>>(p, maps, group);
  CUDA_CHECK_LAUNCH("flash_bwd_dq_sm90_kernel");
}

}  // namespace

void launch_bwd_dq_sm90(const Params& p, int dqk, int dv, cudaStream_t stream) {
  dispatch_head_dims<false>(sm90_kernel_dqk(dqk), dv, "backward dq (sm90)",
                            [&](auto a, auto c) { run_dq_sm90<a, c>(p, stream); });
}

}  // namespace latte::cuda::flash
