// Flash-attention forward (FlashAttention-2 scheme) on tensor cores: mma.sync m16n8k16 bf16 -> fp32.
//   q (B, T, Hq, Dqk)  k (B, S, R*Hk, Dqk)  v (B, S, R*Hk, Dv)  ->  out (B, T, R*Hq, Dv), lse (B, R*Hq, T) f32
// Why: the scores (T x S per head) never touch device memory; each query tile streams its keys once through
// shared memory with an online softmax, so the forward is compute-bound.
// One block = one (batch, virtual head, 128-query tile); 8 warps, each owning 16 query rows, so every row's
// softmax statistics stay inside one quad of lanes. Per key tile of 64:
//   S = Q K^T (Q fragments kept in registers, K by ldmatrix)   -> mask (causal diagonal / ragged tail only)
//   m' = max(m, rowmax S), P = exp2(S scale log2e - m'), l = l 2^(m-m') + rowsum P, O = O 2^(m-m') + P V
// with P converted in registers into the A operand of P V. K/V tiles are double-buffered with cp.async.
// MLRA branches and GQA need no copies: the block of virtual head (r, i) reads query head i and kv head
// r*Hk + i/G directly. Causal: key tiles past a query tile's diagonal are never loaded; blocks run the
// heaviest (last) query tiles first.
// Floor: 4 B R Hq T S (Dqk + Dv) / 2 FLOPs causal (T = S); at B=4, T=4096, 16 heads, (192,128) that is
// 2.8 TFLOP, 2.8 ms at 989 TFLOP/s dense bf16. Bytes (Q, K, V, O once) are ~0.3 GB: compute-bound.
#include <cmath>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/flash_attention_impl.cuh"

namespace latte::cuda::flash {

namespace {

constexpr int kFwdWarps = 8;
constexpr int kFwdBR = 16 * kFwdWarps;  // query rows per block
constexpr int kFwdBC = 64;              // keys per tile

template <int DQK, int DV>
constexpr int fwd_smem_bytes() {
  return (kFwdBR * (DQK + 8) + 2 * kFwdBC * (DQK + 8) + 2 * kFwdBC * (DV + 8)) * 2;
}

template <int DQK, int DV>
__global__ void __launch_bounds__(kFwdWarps * 32, 1) flash_fwd_kernel(const Params p) {
  constexpr int NT = kFwdWarps * 32, BR = kFwdBR, BC = kFwdBC;
  constexpr int QS = DQK + 8, VS = DV + 8;  // smem row strides (elements)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // (BR, DQK+8)
  bf16* sK = sQ + BR * QS;                        // 2 x (BC, DQK+8)
  bf16* sV = sK + 2 * BC * QS;                    // 2 x (BC, DV+8)

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int m_block = gridDim.x - 1 - blockIdx.x;  // heaviest causal tiles first
  const int RHq = p.R * p.Hq;
  const int b = blockIdx.y / RHq, vh = blockIdx.y - b * RHq;
  const int r = vh / p.Hq, i = vh - r * p.Hq;
  const int kvh = r * p.Hk + i / p.G;
  const int m0 = m_block * BR;
  const int off = p.S - p.T;  // query t sits at absolute position t + off

  const bf16* qg = p.q + b * p.q_sb + int64_t(m0) * p.q_st + i * p.q_sh;  // (BR, DQK) rows of stride q_st
  const bf16* kg = p.k + b * p.k_sb + kvh * p.k_sh;                       // (S, DQK)
  const bf16* vg = p.v + b * p.v_sb + kvh * p.v_sh;                       // (S, DV)

  // Keys [0, kv_end) are visible to some row of this tile.
  const int kv_end = p.causal ? min(p.S, min(m0 + BR, p.T) + off) : p.S;
  const int n_tiles = (kv_end + BC - 1) / BC;

  load_tile<BR, DQK, NT>(sQ, qg, p.q_st, p.T - m0, p.q, tid);
  load_tile<BC, DQK, NT>(sK, kg, p.k_st, p.S, p.k, tid);
  load_tile<BC, DV, NT>(sV, vg, p.v_st, p.S, p.v, tid);
  cp_async_commit();

  float o[DV / 8][4];
#pragma unroll
  for (int d = 0; d < DV / 8; ++d) o[d][0] = o[d][1] = o[d][2] = o[d][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};  // per row g, g+8 (log2 units)
  uint32_t qf[DQK / 16][4];
  const int row0 = m0 + warp * 16 + g;  // this thread's rows: row0, row0 + 8

  for (int j = 0; j < n_tiles; ++j) {
    const int n0 = j * BC;
    if (j + 1 < n_tiles) {  // prefetch the next K/V tile into the other buffer
      const int n1 = n0 + BC, nb = (j + 1) & 1;
      load_tile<BC, DQK, NT>(sK + nb * BC * QS, kg + int64_t(n1) * p.k_st, p.k_st, p.S - n1, p.k, tid);
      load_tile<BC, DV, NT>(sV + nb * BC * VS, vg + int64_t(n1) * p.v_st, p.v_st, p.S - n1, p.v, tid);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    if (j == 0) {
#pragma unroll
      for (int kk = 0; kk < DQK / 16; ++kk)
        ldmatrix_x4(qf[kk], smem_u32(sQ + (warp * 16 + (lane & 15)) * QS + kk * 16 + (lane >> 4) * 8));
    }
    const bf16* sKj = sK + (j & 1) * BC * QS;
    const bf16* sVj = sV + (j & 1) * BC * VS;

    // S = Q K^T: (16, BC) per warp.
    float s[BC / 8][4];
#pragma unroll
    for (int n = 0; n < BC / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk) {
#pragma unroll
      for (int np = 0; np < BC / 16; ++np) {
        uint32_t kb[4];
        ldmatrix_x4(kb, smem_u32(sKj + (np * 16 + (lane & 7) + ((lane >> 4) << 3)) * QS + kk * 16 +
                                 ((lane >> 3) & 1) * 8));
        mma_bf16(s[2 * np], qf[kk], kb[0], kb[1]);
        mma_bf16(s[2 * np + 1], qf[kk], kb[2], kb[3]);
      }
    }

    // Mask the causal diagonal and the ragged key tail on the raw scores; the scale is folded into the exponent
    // (one FFMA per score; valid since scale > 0).
    const bool need_mask = (n0 + BC > p.S) || (p.causal && n0 + BC - 1 > m0 + off);
    if (need_mask) {
#pragma unroll
      for (int n = 0; n < BC / 8; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c) {
          const int col = n0 + n * 8 + 2 * tq + (c & 1), row = row0 + (c >> 1) * 8;
          if (col >= p.S || (p.causal && col > row + off)) s[n][c] = -INFINITY;
        }
    }

    // Online softmax (m in log2 units).
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < BC / 8; ++n) {
      mx[0] = fmaxf(mx[0], fmaxf(s[n][0], s[n][1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[n][2], s[n][3]));
    }
    float m_use[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(m_run[h], quad_max(mx[h]) * p.scale_log2);
      m_use[h] = mx[h] == -INFINITY ? 0.f : mx[h];  // a row with nothing visible yet stays at zero
      const float alpha = fast_exp2(m_run[h] - m_use[h]);
      m_run[h] = mx[h];
      l_run[h] *= alpha;
#pragma unroll
      for (int d = 0; d < DV / 8; ++d) {
        o[d][2 * h] *= alpha;
        o[d][2 * h + 1] *= alpha;
      }
    }
#pragma unroll
    for (int n = 0; n < BC / 8; ++n)
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const float e = fast_exp2(fmaf(s[n][c], p.scale_log2, -m_use[c >> 1]));
        s[n][c] = e;
        l_run[c >> 1] += e;
      }

    // O += P V, P straight from registers.
    mma_cfrag_x_smem<BC, DV>(o, s, sVj, VS, lane);
    __syncthreads();  // the buffer read here is refilled by the next iteration's prefetch
  }

  // Epilogue: O / l in bf16, lse = (m + log2 l) ln 2.
  fwd_store_rows<DV>(p, [&](int d, int c) { return o[d][c]; }, m_run, l_run, b, vh, row0, tq);
}

template <int DQK, int DV>
void run_fwd(const Params& p, cudaStream_t stream) {
  constexpr int smem = fwd_smem_bytes<DQK, DV>();
  allow_dynamic_smem(flash_fwd_kernel<DQK, DV>, smem);
  const dim3 grid((p.T + kFwdBR - 1) / kFwdBR, p.B * p.R * p.Hq);
  flash_fwd_kernel<DQK, DV><<<grid, kFwdWarps * 32, smem, stream>>>(p);
  CUDA_CHECK_LAUNCH("flash_fwd_kernel");
}

}  // namespace

void launch_fwd(const Params& p, int dqk, int dv, cudaStream_t stream) {
  dispatch_head_dims<true>(dqk, dv, "forward", [&](auto a, auto c) { run_fwd<a, c>(p, stream); });
}

}  // namespace latte::cuda::flash
