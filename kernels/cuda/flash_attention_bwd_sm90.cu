// Flash-attention backward for Hopper (sm_90a): the key-major pass of flash_attention_bwd.cu with its five GEMMs
// on warpgroup tensor-core instructions (wgmma) instead of mma.sync.
//   dout, out (B, T, R*Hq, Dv), lse (B, R*Hq, T), D = rowsum(dO o O) -> dk (B, S, R*Hk, Dqk), dv (B, S, R*Hk, Dv)
//   [+ dq (B, T, Hq, Dqk) fp32 atomics when p.atomic_dq; deterministic mode runs flash_attention_bwd_dq.cu after]
// Why: the mma.sync pass is bound by ldmatrix traffic (every operand fragment through registers, ~1.5 mma per
// ldmatrix.x4) and reaches ~155 TFLOP/s; wgmma reads B (and A, for the SS GEMMs) straight from shared memory for
// 64 rows at once (docs/attention_kernels.md).
// Block: 2 warpgroups (256 threads) own 128 keys of one kv head (64 per warpgroup) and keep dK, dV in
// registers while they walk every 64-query tile of every query head of the GQA group (one MLRA branch), so
// dK/dV are summed in a fixed order and written once. Per query tile, per warpgroup (FlashAttention-3's layout):
//   S^T  (64 keys x 64 q) = K Q^T     SS, both K-major              P^T = exp(S^T scale - lse)   (registers)
//   dP^T (64 keys x 64 q) = V dO^T    SS, both K-major              dS^T = P^T (dP^T - D)        (registers)
//   dV (64 x Dv)  += P^T dO           RS: A = P^T from registers, B = dO MN-major
//   dK (64 x Dqk) += dS^T Q           RS: A = dS^T from registers, B = Q MN-major
//   dS^T -> shared memory (bf16), barrier; then for this warpgroup's 64-column blocks of dQ:
//   dQ (64 q x 64) = dS K             SS over the block's 128 keys: A = dS^T read as MN-major, B = K MN-major;
//                                     fp32 atomics into the (B, T, Hq, Dqk) accumulator
// The dQ column blocks split over the warpgroups: (1, 0), (1, 1), (2, 1) blocks for Dqk = 64, 128, 192.
// Registers at (192, 128): dK 96 + dV 64 + S^T 32 + dP^T 32 floats per thread (one block of 256 threads per SM).
// Loads: cp.async by all threads, Q/dO/lse/D double-buffered; K and V stay for the whole block.
// Causal: a key tile starts at the first query tile that can see it; blocks are launched key tile 0 first
// (blockIdx.y), the heaviest ones. Floor: 2.5x the forward's FLOPs, 7 ms at (192,128), B=4, T=4096, 16 heads.
#include <cmath>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/flash_attention_sm90.cuh"

namespace latte::cuda::flash {

namespace {

constexpr int kB90Threads = 384;  // warpgroup 0: producer; warpgroups 1, 2: consumers (64 keys each)
constexpr int kB90BC = 128;       // keys per block
constexpr int kB90BR = 64;        // queries per step
constexpr int kB90Stages = 2;     // Q / dO / lse / D buffers

template <int DQK, int DV>
constexpr int bwd_sm90_smem_bytes() {  // K, V, stages x (Q, dO), 2 x dS^T, stages x (lse, D), mbarriers, slack
  return (kB90BC * (DQK + DV) + kB90Stages * kB90BR * (DQK + DV) + 2 * kB90BC * kB90BR) * 2 +
         kB90Stages * 2 * kB90BR * 4 + 64 + 1024;
}

struct BwdTmaMaps {
  CUtensorMap q, k, v, dout;
};

template <int DQK, int DV>
__global__ void __launch_bounds__(kB90Threads, 1)
    flash_bwd_sm90_kernel(const Params p, const __grid_constant__ BwdTmaMaps maps) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int BC = kB90BC, BR = kB90BR, ST = kB90Stages, NC = kB90Threads - 128;  // NC: consumer threads
  constexpr int kQBlocks = DQK / 64, kWg0Blocks = (kQBlocks + 1) / 2;  // dQ column blocks; consumer 0 takes the first
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;
  const uint32_t sK = base;                       // DQK/64 blocks of (BC, 64)
  const uint32_t sV = sK + BC * DQK * 2;          // DV/64 blocks of (BC, 64)
  const uint32_t sQ = sV + BC * DV * 2;           // stages x DQK/64 blocks of (BR, 64)
  const uint32_t sdO = sQ + ST * BR * DQK * 2;    // stages x DV/64 blocks of (BR, 64)
  const uint32_t sdS = sdO + ST * BR * DV * 2;    // 2 x dS^T (BC keys, BR queries): one block, rows of 128 bytes
  const uint32_t sLDa = sdS + 2 * BC * BR * 2;    // stages x [lse (BR), D (BR)] fp32
  const uint32_t bars = sLDa + ST * 2 * BR * 4;   // kv_full, full[ST], empty[ST]
  const uint32_t kv_full = bars, full0 = bars + 8, empty0 = bars + 8 + 8 * ST;
  float* sLD = reinterpret_cast<float*>(smem_raw + (sLDa - raw));

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wg = warp >> 2, g = lane >> 2, tq = lane & 3;
  const int RHk = p.R * p.Hk, RHq = p.R * p.Hq;
  const int b = blockIdx.x / RHk, kvh = blockIdx.x - b * RHk;
  const int r = kvh / p.Hk, hk = kvh - r * p.Hk;
  const int n0 = blockIdx.y * BC;
  const int off = p.S - p.T;
  // Steps run over (query head of the group, query tile).
  const int m_first = p.causal ? max(0, n0 - off) / BR : 0;
  const int n_m = (p.T + BR - 1) / BR - m_first, n_steps = p.G * n_m;

  // Full barriers: the TMA thread's arrival (+ bytes) and the lse/D warp's 32 lanes.
  if (tid == 0) init_pipeline_barriers(kv_full, full0, empty0, ST, 1 + 32);
  __syncthreads();

  // Register split after setmaxnreg: 128 x 24 + 256 x 240 = 64512 = the 384 x 168 the block is launched with.
  constexpr int kProducerRegs = 24, kConsumerRegs = 240;
  if (wg == 0) {
    // Producer: warp 0 issues the TMA loads (K, V once; Q, dO per step), warp 1 copies lse and D (rows past T as
    // zeros); a stage is refilled once all 8 consumer warps released it.
    setmaxnreg_dec<kProducerRegs>();
    if (warp == 0 && lane == 0) {
      mbar_arrive_expect_tx(kv_full, BC * (DQK + DV) * 2);
      for (int c = 0; c < DQK / 64; ++c) tma_load_4d(sK + c * BC * 128, &maps.k, c * 64, kvh, n0, b, kv_full);
      for (int c = 0; c < DV / 64; ++c) tma_load_4d(sV + c * BC * 128, &maps.v, c * 64, kvh, n0, b, kv_full);
    }
    if (warp <= 1) {
      for (int step = 0; step < n_steps; ++step) {
        const int s = step % ST;
        const int ii = step / n_m, q0 = (m_first + step % n_m) * BR;
        const int i = hk * p.G + ii, vh = r * p.Hq + i;
        if (step >= ST) mbar_wait(empty0 + 8 * s, (step / ST - 1) & 1);
        const uint32_t full = full0 + 8 * s;
        if (warp == 0) {
          if (lane == 0) {
            mbar_arrive_expect_tx(full, BR * (DQK + DV) * 2);
            for (int c = 0; c < DQK / 64; ++c)
              tma_load_4d(sQ + s * BR * DQK * 2 + c * BR * 128, &maps.q, c * 64, i, q0, b, full);
            for (int c = 0; c < DV / 64; ++c)
              tma_load_4d(sdO + s * BR * DV * 2 + c * BR * 128, &maps.dout, c * 64, vh, q0, b, full);
          }
        } else {
          const int64_t row = (int64_t(b) * RHq + vh) * p.T;
          float* dst = sLD + s * 2 * BR;
#pragma unroll
          for (int e = lane; e < BR; e += 32) {
            const int t = q0 + e;
            dst[e] = t < p.T ? p.lse[row + t] : 0.f;
            dst[BR + e] = t < p.T ? p.delta[row + t] : 0.f;
          }
          mbar_arrive(full);
        }
      }
    }
    return;
  }
  setmaxnreg_inc<kConsumerRegs>();
  const int cw = wg - 1;
  const int key_row = cw * 64 + (warp & 3) * 16 + g;  // this thread's keys in the block: key_row, key_row + 8

  float dk[DQK / 2], dv[DV / 2];
#pragma unroll
  for (int x = 0; x < DQK / 2; ++x) dk[x] = 0.f;
#pragma unroll
  for (int x = 0; x < DV / 2; ++x) dv[x] = 0.f;
  mbar_wait(kv_full, 0);

  for (int step = 0; step < n_steps; ++step) {
    const int s = step % ST;
    const int ii = step / n_m, q0 = (m_first + step % n_m) * BR;
    const int i = hk * p.G + ii;
    mbar_wait(full0 + 8 * s, (step / ST) & 1);
    const uint32_t sQs = sQ + s * BR * DQK * 2, sdOs = sdO + s * BR * DV * 2;
    const uint32_t sdSs = sdS + (step & 1) * BC * BR * 2;  // double-buffered: the other may still feed a dQ GEMM
    const float* sL = sLD + s * 2 * BR;
    const float* sD = sL + BR;

    // S^T = K Q^T and dP^T = V dO^T (64 keys x 64 queries per warpgroup), committed as two groups so that P^T
    // is computed while dP^T runs, and dV += P^T dO runs while dS^T is computed. At Dqk = 192 (kLowRegs) dP^T
    // is issued only after P^T is in bf16 fragments: S^T and dP^T live at once next to dK 96 + dV 64 do not fit
    // a consumer's 240 registers (ptxas spilled ~380 bytes).
    constexpr bool kLowRegs = DQK == 192;
    float st[32], dpt[32];
    auto issue_dpt = [&] {
#pragma unroll
      for (int kk = 0; kk < DV / 16; ++kk) {
        const uint64_t da = smem_desc(sV + (kk >> 2) * BC * 128 + cw * 64 * 128 + (kk & 3) * 32, 16, 1024);
        const uint64_t db = smem_desc(sdOs + (kk >> 2) * BR * 128 + (kk & 3) * 32, 16, 1024);
        wgmma_ss_m64n64k16<0, 0>(dpt, da, db, kk > 0);
      }
      wgmma_commit();
    };
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk) {
      const uint64_t da = smem_desc(sK + (kk >> 2) * BC * 128 + cw * 64 * 128 + (kk & 3) * 32, 16, 1024);
      const uint64_t db = smem_desc(sQs + (kk >> 2) * BR * 128 + (kk & 3) * 32, 16, 1024);
      wgmma_ss_m64n64k16<0, 0>(st, da, db, kk > 0);
    }
    wgmma_commit();
    if constexpr (kLowRegs) {
      wgmma_wait<0>();
    } else {
      issue_dpt();
      wgmma_wait<1>();  // S^T done
    }
    pin(st);

    // P^T = exp2(S^T scale log2e - lse log2e) (masked), kept in fp32 in st and as bf16 A fragments (16 queries
    // per k-step). st[x]: key key_row + 8 ((x & 3) >> 1), query 8 (x >> 2) + 2 tq + (x & 1).
    const bool need_mask = (n0 + BC > p.S) || (q0 + BR > p.T) || (p.causal && n0 + BC - 1 > q0 + off);
    uint32_t pa[BR / 16][4], sa[BR / 16][4];
#pragma unroll
    for (int x = 0; x < 32; x += 2) {
      const int qc = 8 * (x >> 2) + 2 * tq;
      const float2 l2 = *reinterpret_cast<const float2*>(sL + qc);
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        float pr = fast_exp2(fmaf(st[x + e], p.scale_log2, -(e ? l2.y : l2.x) * kLog2e));
        if (need_mask) {
          const int key = n0 + key_row + 8 * ((x & 3) >> 1), t = q0 + qc + e;
          if (key >= p.S || t >= p.T || (p.causal && key > t + off)) pr = 0.f;
        }
        st[x + e] = pr;
      }
      pa[x >> 3][(x & 7) >> 1] = pack_bf16(st[x], st[x + 1]);
    }

    // dV += P^T dO (after dP^T at Dqk = 192).
    wgmma_fence();
    if constexpr (kLowRegs) issue_dpt();
    pin(dv);
#pragma unroll
    for (int kk = 0; kk < BR / 16; ++kk)
      wgmma_rs_tb<DV>(dv, pa[kk], smem_desc(sdOs + kk * 16 * 128, BR * 128, 1024));
    wgmma_commit();
    wgmma_wait<1>();  // dP^T done (dV may still run)
    pin(dpt);

    // dS^T = P^T (dP^T - D), as bf16 A fragments. At Dqk = 192 P^T is taken back from its bf16 fragments (dS^T
    // is rounded to bf16 right after anyway): keeping the fp32 copy live here needs 32 registers the 240 of a
    // consumer do not have (dK 96 + dV 64 + dP^T 32 + fragments), and spills cost more than the rounding.
#pragma unroll
    for (int x = 0; x < 32; x += 2) {
      const float2 d2 = *reinterpret_cast<const float2*>(sD + 8 * (x >> 2) + 2 * tq);
      float2 pr = make_float2(st[x], st[x + 1]);
      if constexpr (DQK == 192) pr = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&pa[x >> 3][(x & 7) >> 1]));
      sa[x >> 3][(x & 7) >> 1] = pack_bf16(pr.x * (dpt[x] - d2.x), pr.y * (dpt[x + 1] - d2.y));
    }

    // dS^T to shared memory for the dQ GEMM: row = key (128 bytes = 64 queries), 16-byte chunks swizzled by
    // row % 8. sa[kk][j] holds keys key_row + 8 (j & 1), queries 16 kk + 8 (j >> 1) + 2 tq + {0, 1}.
    if (p.atomic_dq) {
#pragma unroll
      for (int kk = 0; kk < BR / 16; ++kk)
#pragma unroll
        for (int j = 0; j < 4; ++j) {
          const int row = key_row + 8 * (j & 1), chunk = 2 * kk + (j >> 1);
          const uint32_t addr = sdSs + row * 128 + ((chunk ^ (row & 7)) << 4) + tq * 4;
          asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(sa[kk][j]) : "memory");
        }
      fence_proxy_async();
    }

    // dK += dS^T Q (left running while the warpgroups meet at the barrier below).
    wgmma_fence();
    pin(dk);
#pragma unroll
    for (int kk = 0; kk < BR / 16; ++kk)
      wgmma_rs_tb<DQK>(dk, sa[kk], smem_desc(sQs + kk * 16 * 128, BR * 128, 1024));
    wgmma_commit();

    if (p.atomic_dq) {
      named_bar_sync(1, NC);  // dS^T of both consumer warpgroups written
      const int c_begin = cw == 0 ? 0 : kWg0Blocks, c_end = cw == 0 ? kWg0Blocks : kQBlocks;
      const int t_a = q0 + (warp & 3) * 16 + g;  // this thread's dQ rows: t_a, t_a + 8
      for (int cb = c_begin; cb < c_end; ++cb) {
        float acc[32];
        wgmma_fence();
#pragma unroll
        for (int kk = 0; kk < BC / 16; ++kk) {
          const uint64_t da = smem_desc(sdSs + kk * 16 * 128, BC * 128, 1024);
          const uint64_t db = smem_desc(sK + cb * BC * 128 + kk * 16 * 128, BC * 128, 1024);
          wgmma_ss_m64n64k16<1, 1>(acc, da, db, kk > 0);
        }
        wgmma_commit();
        wgmma_wait_all();
        pin(acc);
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          const int t = t_a + 8 * h;
          if (t < p.T) {
            float* dst = p.dq_accum + ((int64_t(b) * p.T + t) * p.Hq + i) * DQK + cb * 64 + 2 * tq;
#pragma unroll
            for (int n = 0; n < 8; ++n)
              atomic_add2(dst + 8 * n, acc[4 * n + 2 * h] * p.scale, acc[4 * n + 2 * h + 1] * p.scale);
          }
        }
      }
    }
    wgmma_wait_all();
    pin(dv);
    pin(dk);
    if (lane == 0) mbar_arrive(empty0 + 8 * s);  // this warp is done with the stage's Q, dO, lse, D
  }

  // Epilogue: dK (scaled) and dV in bf16, contiguous (B, S, R*Hk, D).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int key = n0 + key_row + 8 * h;
    if (key < p.S) {
      bf16* dkrow = p.dk + ((int64_t(b) * p.S + key) * RHk + kvh) * DQK + 2 * tq;
      bf16* dvrow = p.dv + ((int64_t(b) * p.S + key) * RHk + kvh) * DV + 2 * tq;
#pragma unroll
      for (int n = 0; n < DQK / 8; ++n)
        *reinterpret_cast<uint32_t*>(dkrow + 8 * n) = pack_bf16(dk[4 * n + 2 * h] * p.scale, dk[4 * n + 2 * h + 1] * p.scale);
#pragma unroll
      for (int n = 0; n < DV / 8; ++n)
        *reinterpret_cast<uint32_t*>(dvrow + 8 * n) = pack_bf16(dv[4 * n + 2 * h], dv[4 * n + 2 * h + 1]);
    }
  }
#endif
}

template <int DQK, int DV>
void run_bwd_sm90(const Params& p, cudaStream_t stream) {
  constexpr int smem = bwd_sm90_smem_bytes<DQK, DV>();
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(flash_bwd_sm90_kernel<DQK, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    configured = true;
  }
  BwdTmaMaps maps;
  const int rhk = p.R * p.Hk, rhq = p.R * p.Hq;
  maps.q = tma_map_bf16(p.q, DQK, p.Hq, p.T, p.B, p.q_sh, p.q_st, p.q_sb, kB90BR);
  maps.dout = tma_map_bf16(p.dout, DV, rhq, p.T, p.B, p.do_sh, p.do_st, p.do_sb, kB90BR);
  maps.k = tma_map_bf16(p.k, DQK, rhk, p.S, p.B, p.k_sh, p.k_st, p.k_sb, kB90BC);
  maps.v = tma_map_bf16(p.v, DV, rhk, p.S, p.B, p.v_sh, p.v_st, p.v_sb, kB90BC);
  const dim3 grid(p.B * p.R * p.Hk, (p.S + kB90BC - 1) / kB90BC);
  flash_bwd_sm90_kernel<DQK, DV><<<grid, kB90Threads, smem, stream>>>(p, maps);
  CUDA_CHECK_LAUNCH("flash_bwd_sm90_kernel");
}

}  // namespace

bool bwd_sm90_supported(int dqk, int dv) {
  return sm90_head_dims(dqk, dv) && device_has_sm90_kernels() && tma_available();
}

void launch_bwd_dkdv_sm90(const Params& p, int dqk, int dv, cudaStream_t stream) {
  dispatch_head_dims<false>(dqk, dv, "backward (sm90)", [&](auto a, auto c) { run_bwd_sm90<a, c>(p, stream); });
}

}  // namespace latte::cuda::flash
