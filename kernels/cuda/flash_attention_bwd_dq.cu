// Flash-attention backward, query-major dQ pass: the deterministic alternative to the fp32 atomics of the
// key-major pass (flash_attention_bwd.cu).
//   q (B, T, Hq, Dqk), k, v, dout, lse, D (from the key-major pass's preprocessing) -> dq (B, T, Hq, Dqk) bf16
// Why: with atomics the order in which key tiles add into dQ varies between runs; here one block owns a
// 64-query tile of one query head and sums, in a fixed order, over the MLRA branches that read that head and
// over their key tiles, recomputing what it needs:
//   S = Q K^T, P = exp2(S scale log2e - lse log2e), dP = dO V^T, dS = P (dP - D), dQ += scale dS K
// (4 warps, 16 query rows each; dS goes from registers straight into the A operand of dS K; K/V tiles of 32
// double-buffered with cp.async). Cost: 3 GEMMs of the forward's size on top of the key-major pass's 4, i.e.
// about 1.4x the atomic backward's FLOPs.
#include <cmath>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/flash_attention_impl.cuh"

namespace latte::cuda::flash {

namespace {

constexpr int kDqWarps = 4;
constexpr int kDqBR = 16 * kDqWarps;  // query rows per block
constexpr int kDqBC = 32;             // keys per tile (32 keeps the 192-wide dQ accumulators out of local memory)

template <int DQK, int DV>
constexpr int dq_smem_bytes() {
  return (kDqBR * (DQK + 8) + kDqBR * (DV + 8) + 2 * kDqBC * (DQK + 8) + 2 * kDqBC * (DV + 8)) * 2;
}

template <int DQK, int DV>
__global__ void __launch_bounds__(kDqWarps * 32, 1) flash_bwd_dq_kernel(const Params p) {
  constexpr int NT = kDqWarps * 32, BR = kDqBR, BC = kDqBC;
  constexpr int QS = DQK + 8, VS = DV + 8;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // (BR, DQK+8)
  bf16* sdO = sQ + BR * QS;                       // (BR, DV+8)
  bf16* sK = sdO + BR * VS;                       // 2 x (BC, DQK+8)
  bf16* sV = sK + 2 * BC * QS;                    // 2 x (BC, DV+8)

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int b = blockIdx.y / p.Hq, i = blockIdx.y - b * p.Hq;
  const int m0 = m_block * BR;
  const int off = p.S - p.T;
  const int RHq = p.R * p.Hq;
  const int row0 = m0 + warp * 16 + g;  // rows row0, row0 + 8
  const int kv_end = p.causal ? min(p.S, min(m0 + BR, p.T) + off) : p.S;
  const int n_tiles = (kv_end + BC - 1) / BC;

  float dq[DQK / 8][4];
#pragma unroll
  for (int d = 0; d < DQK / 8; ++d) dq[d][0] = dq[d][1] = dq[d][2] = dq[d][3] = 0.f;

  for (int r = 0; r < p.R; ++r) {
    const int vh = r * p.Hq + i, kvh = r * p.Hk + i / p.G;
    const bf16* kg = p.k + b * p.k_sb + kvh * p.k_sh;
    const bf16* vg = p.v + b * p.v_sb + kvh * p.v_sh;
    __syncthreads();  // the previous branch is done with every buffer
    if (r == 0) load_tile<BR, DQK, NT>(sQ, p.q + b * p.q_sb + int64_t(m0) * p.q_st + i * p.q_sh, p.q_st, p.T - m0, p.q, tid);
    load_tile<BR, DV, NT>(sdO, p.dout + b * p.do_sb + int64_t(m0) * p.do_st + vh * p.do_sh, p.do_st, p.T - m0, p.dout,
                          tid);
    load_tile<BC, DQK, NT>(sK, kg, p.k_st, p.S, p.k, tid);
    load_tile<BC, DV, NT>(sV, vg, p.v_st, p.S, p.v, tid);
    cp_async_commit();
    float lse2[2], dl[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int t = row0 + 8 * h;
      const int64_t at = (int64_t(b) * RHq + vh) * p.T + t;
      lse2[h] = t < p.T ? p.lse[at] * kLog2e : 0.f;
      dl[h] = t < p.T ? p.delta[at] : 0.f;
    }

    for (int j = 0; j < n_tiles; ++j) {
      const int n0 = j * BC;
      if (j + 1 < n_tiles) {
        const int n1 = n0 + BC, nb = (j + 1) & 1;
        load_tile<BC, DQK, NT>(sK + nb * BC * QS, kg + int64_t(n1) * p.k_st, p.k_st, p.S - n1, p.k, tid);
        load_tile<BC, DV, NT>(sV + nb * BC * VS, vg + int64_t(n1) * p.v_st, p.v_st, p.S - n1, p.v, tid);
        cp_async_commit();
        cp_async_wait<1>();
      } else {
        cp_async_wait<0>();
      }
      __syncthreads();
      const bf16* sKj = sK + (j & 1) * BC * QS;
      const bf16* sVj = sV + (j & 1) * BC * VS;

      // S = Q K^T and dP = dO V^T: (16, BC) per warp.
      float s[BC / 8][4], dp[BC / 8][4];
#pragma unroll
      for (int n = 0; n < BC / 8; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c) s[n][c] = dp[n][c] = 0.f;
      mma_smem_x_smem_t<DQK, BC>(s, sQ, warp * 16, QS, sKj, 0, QS, lane);
      mma_smem_x_smem_t<DV, BC>(dp, sdO, warp * 16, VS, sVj, 0, VS, lane);

      // dS = P (dP - D), masked.
      const bool need_mask = (n0 + BC > p.S) || (m0 + BR > p.T) || (p.causal && n0 + BC - 1 > m0 + off);
#pragma unroll
      for (int n = 0; n < BC / 8; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int h = c >> 1;
          float pr = exp2f(s[n][c] * p.scale_log2 - lse2[h]);
          if (need_mask) {
            const int col = n0 + n * 8 + 2 * tq + (c & 1), row = row0 + 8 * h;
            if (col >= p.S || row >= p.T || (p.causal && col > row + off)) pr = 0.f;
          }
          s[n][c] = pr * (dp[n][c] - dl[h]);
        }

      // dQ += dS K.
      mma_cfrag_x_smem<BC, DQK>(dq, s, sKj, QS, lane);
      __syncthreads();
    }
  }

#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int t = row0 + 8 * h;
    if (t < p.T) {
      bf16* dst = p.dq + ((int64_t(b) * p.T + t) * p.Hq + i) * DQK + 2 * tq;
#pragma unroll
      for (int d = 0; d < DQK / 8; ++d)
        *reinterpret_cast<uint32_t*>(dst + d * 8) = pack_bf16(dq[d][2 * h] * p.scale, dq[d][2 * h + 1] * p.scale);
    }
  }
}

template <int DQK, int DV>
void run_dq(const Params& p, cudaStream_t stream) {
  constexpr int smem = dq_smem_bytes<DQK, DV>();
  allow_dynamic_smem(flash_bwd_dq_kernel<DQK, DV>, smem);
  const dim3 grid((p.T + kDqBR - 1) / kDqBR, p.B * p.Hq);
  flash_bwd_dq_kernel<DQK, DV><<<grid, kDqWarps * 32, smem, stream>>>(p);
  CUDA_CHECK_LAUNCH("flash_bwd_dq_kernel");
}

}  // namespace

void launch_bwd_dq(const Params& p, int dqk, int dv, cudaStream_t stream) {
  dispatch_head_dims<true>(dqk, dv, "backward (dq)", [&](auto a, auto c) { run_dq<a, c>(p, stream); });
}

}  // namespace latte::cuda::flash
