// Flash-attention backward, key-major pass (FlashAttention-2 scheme) on tensor cores (mma.sync m16n8k16).
//   dout, out (B, T, R*Hq, Dv), lse (B, R*Hq, T) -> dk (B, S, R*Hk, Dqk), dv (B, S, R*Hk, Dv) [, dq via atomics]
// With P = exp(S scale - lse), D = rowsum(dO o O):
//   dV = P^T dO     dP = dO V^T     dS = P (dP - D)     dK = scale dS^T Q     dQ = scale dS K
// Why this shape: one block owns a 64-key tile of one kv head and keeps its dK/dV accumulators in registers
// while it walks every query tile of every query head that reads that kv head (the Hq/Hk heads of a GQA group
// under one MLRA branch): dK and dV are summed in a fixed order inside the block and written once (no atomics,
// no per-head copies, deterministic). dQ gets one contribution per key tile: fp32 atomics into a (B, T, Hq, Dqk)
// accumulator by default, or (deterministic mode) a separate query-major kernel (flash_attention_bwd_dq.cu).
// Per query tile (64 rows), 8 warps, warp w = (key rows 16 (w%4), half w/4):
//   S^T = K Q^T, dP^T = V dO^T  (each warp 16 keys x 32 queries)  -> P^T, dS^T in bf16 to shared memory
//   dV += P^T dO, dK += dS^T Q  (each warp 16 keys x half the head dim)
//   dQ  = dS K                  (each warp 16 queries x half the head dim, 16 columns at a time, atomics)
// Causal: a key tile starts at the first query tile that can see it. Preprocessing: D per row (one warp per
// row) and zeroing of the dQ accumulator; a last pass casts dQ to bf16.
// Floor: 2.5x the forward's FLOPs (5 GEMMs of the forward's size instead of 2): 4 B R Hq T S (Dqk+Dv) / 2
// * 2.5 causal; 7 ms at (192,128), B=4, T=4096, 16 heads on a 989 TFLOP/s part.
#include <cmath>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/flash_attention_impl.cuh"

namespace latte::cuda::flash {

namespace {

constexpr int kBwdWarps = 8;
constexpr int kBwdBC = 64;  // keys per block
constexpr int kBwdBR = 64;  // queries per step

template <int DQK, int DV>
constexpr int bwd_smem_bytes() {  // K, V, 2 x (Q, dO), P^T, dS^T, 2 x (lse, D)
  return (kBwdBC * (DQK + 8) + kBwdBC * (DV + 8) + 2 * kBwdBR * (DQK + 8) + 2 * kBwdBR * (DV + 8) +
          2 * kBwdBC * (kBwdBR + 8)) * 2 +
         4 * kBwdBR * 4;
}

// 4-byte async copy (zero-fill when !valid).
__device__ __forceinline__ void cp_async4(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 4 : 0;
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}

template <int DQK, int DV>
__global__ void __launch_bounds__(kBwdWarps * 32, 1) flash_bwd_dkdv_kernel(const Params p) {
  constexpr int NT = kBwdWarps * 32, BC = kBwdBC, BR = kBwdBR;
  constexpr int KS = DQK + 8, VS = DV + 8, PS = BR + 8;  // smem row strides (elements)
  constexpr int DQH = DQK / 2, DVH = DV / 2;             // per-warp column halves
  extern __shared__ __align__(16) unsigned char smem_raw[];
  bf16* sK = reinterpret_cast<bf16*>(smem_raw);  // (BC, DQK+8)
  bf16* sV = sK + BC * KS;                        // (BC, DV+8)
  bf16* sQb = sV + BC * VS;                       // 2 x (BR, DQK+8)
  bf16* sdOb = sQb + 2 * BR * KS;                 // 2 x (BR, DV+8)
  bf16* sP = sdOb + 2 * BR * VS;                  // (BC, BR+8)  P^T
  bf16* sdS = sP + BC * PS;                       // (BC, BR+8)  dS^T
  float* sLb = reinterpret_cast<float*>(sdS + BC * PS);  // 2 x (BR) lse
  float* sDb = sLb + 2 * BR;                             // 2 x (BR) D

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  const int wm = warp & 3, wh = warp >> 2;  // 16-row slice, column/query half
  const int RHk = p.R * p.Hk, RHq = p.R * p.Hq;
  const int b = blockIdx.y / RHk, kvh = blockIdx.y - b * RHk;
  const int r = kvh / p.Hk, hk = kvh - r * p.Hk;
  const int n0 = blockIdx.x * BC;
  const int off = p.S - p.T;

  load_tile<BC, DQK, NT>(sK, p.k + b * p.k_sb + int64_t(n0) * p.k_st + kvh * p.k_sh, p.k_st, p.S - n0, p.k, tid);
  load_tile<BC, DV, NT>(sV, p.v + b * p.v_sb + int64_t(n0) * p.v_st + kvh * p.v_sh, p.v_st, p.S - n0, p.v, tid);
  cp_async_commit();

  float dk[DQH / 8][4], dv[DVH / 8][4];
#pragma unroll
  for (int d = 0; d < DQH / 8; ++d) dk[d][0] = dk[d][1] = dk[d][2] = dk[d][3] = 0.f;
#pragma unroll
  for (int d = 0; d < DVH / 8; ++d) dv[d][0] = dv[d][1] = dv[d][2] = dv[d][3] = 0.f;

  const int m_first = p.causal ? max(0, n0 - off) / BR : 0;
  const int m_tiles = (p.T + BR - 1) / BR;
  const int key_a = n0 + wm * 16 + g;  // this thread's key rows (S^T layout): key_a, key_a + 8

  // Steps run over (query head of the group, query tile); the next step's Q, dO, lse and D are prefetched into
  // the other buffer while this one computes.
  const int n_m = m_tiles - m_first, n_steps = p.G * n_m;
  auto load_step = [&](int step, int buf) {
    const int ii = step / n_m, q0 = (m_first + step % n_m) * BR;
    const int i = hk * p.G + ii, vh = r * p.Hq + i;
    load_tile<BR, DQK, NT>(sQb + buf * BR * KS, p.q + b * p.q_sb + int64_t(q0) * p.q_st + i * p.q_sh, p.q_st,
                           p.T - q0, p.q, tid);
    load_tile<BR, DV, NT>(sdOb + buf * BR * VS, p.dout + b * p.do_sb + int64_t(q0) * p.do_st + vh * p.do_sh, p.do_st,
                          p.T - q0, p.dout, tid);
    if (tid < 2 * BR) {
      const int e = tid & (BR - 1), t = q0 + e;
      const float* src = (tid < BR ? p.lse : p.delta) + (int64_t(b) * RHq + vh) * p.T + t;
      float* dst = (tid < BR ? sLb : sDb) + buf * BR + e;
      cp_async4(smem_u32(dst), t < p.T ? src : p.lse, t < p.T);
    }
  };
  if (n_steps > 0) load_step(0, 0);
  cp_async_commit();

  for (int step = 0; step < n_steps; ++step) {
    const int buf = step & 1;
    const int ii = step / n_m, q0 = (m_first + step % n_m) * BR;
    const int i = hk * p.G + ii;
    if (step + 1 < n_steps) {
      load_step(step + 1, buf ^ 1);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    __syncthreads();
    const bf16* sQ = sQb + buf * BR * KS;
    const bf16* sdO = sdOb + buf * BR * VS;
    const float* sL = sLb + buf * BR;
    const float* sD = sDb + buf * BR;
    {
      // S^T = K Q^T and dP^T = V dO^T: (16 keys, 32 queries) per warp.
      float st[4][4], dpt[4][4];
#pragma unroll
      for (int n = 0; n < 4; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c) st[n][c] = dpt[n][c] = 0.f;
      mma_smem_x_smem_t<DQK, 32>(st, sK, wm * 16, KS, sQ, wh * 32, KS, lane);
      mma_smem_x_smem_t<DV, 32>(dpt, sV, wm * 16, VS, sdO, wh * 32, VS, lane);

      // P^T = exp2(S^T scale log2e - lse log2e) (masked), dS^T = P^T (dP^T - D); both to shared memory.
      const bool need_mask = (n0 + BC > p.S) || (q0 + BR > p.T) || (p.causal && n0 + BC - 1 > q0 + off);
#pragma unroll
      for (int n = 0; n < 4; ++n) {
        const int qc = wh * 32 + n * 8 + 2 * tq;  // query column within the tile (and qc + 1)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
          float pv[2], ds[2];
#pragma unroll
          for (int e = 0; e < 2; ++e) {
            const int c = 2 * h + e, qi = qc + e;
            float pr = exp2f(fmaf(st[n][c], p.scale_log2, -sL[qi] * kLog2e));
            if (need_mask) {
              const int key = key_a + 8 * h, t = q0 + qi;
              if (key >= p.S || t >= p.T || (p.causal && key > t + off)) pr = 0.f;
            }
            pv[e] = pr;
            ds[e] = pr * (dpt[n][c] - sD[qi]);
          }
          const int srow = wm * 16 + g + 8 * h;
          *reinterpret_cast<uint32_t*>(sP + srow * PS + qc) = pack_bf16(pv[0], pv[1]);
          *reinterpret_cast<uint32_t*>(sdS + srow * PS + qc) = pack_bf16(ds[0], ds[1]);
        }
      }
      __syncthreads();

      // dV += P^T dO and dK += dS^T Q: (16 keys, half the head dim) per warp.
#pragma unroll
      for (int kk = 0; kk < BR / 16; ++kk) {
        uint32_t ap[4], as[4];
        ldmatrix_x4(ap, smem_u32(sP + (wm * 16 + (lane & 15)) * PS + kk * 16 + (lane >> 4) * 8));
        ldmatrix_x4(as, smem_u32(sdS + (wm * 16 + (lane & 15)) * PS + kk * 16 + (lane >> 4) * 8));
        const int qrow = kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8;
#pragma unroll
        for (int dp = 0; dp < DVH / 16; ++dp) {
          uint32_t bo[4];
          ldmatrix_x4_trans(bo, smem_u32(sdO + qrow * VS + wh * DVH + dp * 16 + (lane >> 4) * 8));
          mma_bf16(dv[2 * dp], ap, bo[0], bo[1]);
          mma_bf16(dv[2 * dp + 1], ap, bo[2], bo[3]);
        }
#pragma unroll
        for (int dp = 0; dp < DQH / 16; ++dp) {
          uint32_t bq[4];
          ldmatrix_x4_trans(bq, smem_u32(sQ + qrow * KS + wh * DQH + dp * 16 + (lane >> 4) * 8));
          mma_bf16(dk[2 * dp], as, bq[0], bq[1]);
          mma_bf16(dk[2 * dp + 1], as, bq[2], bq[3]);
        }
      }

      // dQ += scale dS K: (16 queries, half the head dim) per warp, 16 columns at a time, fp32 atomics.
      if (p.atomic_dq) {
        uint32_t af[BC / 16][4];  // A = dS (queries x keys) read transposed from dS^T
#pragma unroll
        for (int kk = 0; kk < BC / 16; ++kk)
          ldmatrix_x4_trans(af[kk], smem_u32(sdS + (kk * 16 + (lane & 7) + ((lane >> 4) << 3)) * PS + wm * 16 +
                                             ((lane >> 3) & 1) * 8));
        const int t_a = q0 + wm * 16 + g;
#pragma unroll
        for (int cc = 0; cc < DQH / 16; ++cc) {
          float acc[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};
#pragma unroll
          for (int kk = 0; kk < BC / 16; ++kk) {
            uint32_t bk[4];
            ldmatrix_x4_trans(bk, smem_u32(sK + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * KS + wh * DQH +
                                           cc * 16 + (lane >> 4) * 8));
            mma_bf16(acc[0], af[kk], bk[0], bk[1]);
            mma_bf16(acc[1], af[kk], bk[2], bk[3]);
          }
#pragma unroll
          for (int h = 0; h < 2; ++h) {
            const int t = t_a + 8 * h;
            if (t < p.T) {
              float* dst = p.dq_accum + ((int64_t(b) * p.T + t) * p.Hq + i) * DQK + wh * DQH + cc * 16 + 2 * tq;
              atomic_add2(dst, acc[0][2 * h] * p.scale, acc[0][2 * h + 1] * p.scale);
              atomic_add2(dst + 8, acc[1][2 * h] * p.scale, acc[1][2 * h + 1] * p.scale);
            }
          }
        }
      }
      __syncthreads();  // this step's buffers, sP and sdS are refilled next step
    }
  }

  // Epilogue: dK (scaled) and dV in bf16, contiguous (B, S, R*Hk, D).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int key = key_a + 8 * h;
    if (key < p.S) {
      bf16* dkrow = p.dk + ((int64_t(b) * p.S + key) * RHk + kvh) * DQK + wh * DQH + 2 * tq;
      bf16* dvrow = p.dv + ((int64_t(b) * p.S + key) * RHk + kvh) * DV + wh * DVH + 2 * tq;
#pragma unroll
      for (int d = 0; d < DQH / 8; ++d)
        *reinterpret_cast<uint32_t*>(dkrow + d * 8) = pack_bf16(dk[d][2 * h] * p.scale, dk[d][2 * h + 1] * p.scale);
#pragma unroll
      for (int d = 0; d < DVH / 8; ++d)
        *reinterpret_cast<uint32_t*>(dvrow + d * 8) = pack_bf16(dv[d][2 * h], dv[d][2 * h + 1]);
    }
  }
}

// D[b, vh, t] = sum_d dO[b, t, vh, d] * O[b, t, vh, d] (fp32). DV / 8 threads per row (8 or 16), 8 elements each,
// so that every lane loads (one warp per row left three quarters of the lanes idle at Dv 64: 1 TB/s at the 125M
// shape, session 26). The same grid also zeroes what the atomic dQ path needs zeroed (zero4 float4s at zero,
// grid-strided): one pass over memory instead of this kernel and a memset after it.
template <int DV>
__global__ void flash_bwd_delta_kernel(const Params p, float4* zero, int64_t zero4) {
  const int64_t threads = int64_t(gridDim.x) * blockDim.x;
  const int64_t tid = int64_t(blockIdx.x) * blockDim.x + threadIdx.x;
  for (int64_t x = tid; x < zero4; x += threads) zero[x] = make_float4(0.f, 0.f, 0.f, 0.f);
  constexpr int kLanes = DV / 8;  // threads per row
  const int RHq = p.R * p.Hq;
  const int64_t rows = int64_t(p.B) * p.T * RHq, row = tid / kLanes;  // row = (b T + t) RHq + vh
  const int part = static_cast<int>(tid % kLanes);
  float acc = 0.f;
  int64_t at = -1;  // this row's place in delta (B, RHq, T)
  if (row < rows) {
    const int vh = static_cast<int>(row % RHq);
    const int64_t bt = row / RHq;
    const int t = static_cast<int>(bt % p.T), b = static_cast<int>(bt / p.T);
    at = (int64_t(b) * RHq + vh) * p.T + t;
    const uint4 uo = *reinterpret_cast<const uint4*>(p.o + b * p.o_sb + int64_t(t) * p.o_st + vh * p.o_sh + part * 8);
    const uint4 ud =
        *reinterpret_cast<const uint4*>(p.dout + b * p.do_sb + int64_t(t) * p.do_st + vh * p.do_sh + part * 8);
    const __nv_bfloat162* ho = reinterpret_cast<const __nv_bfloat162*>(&uo);
    const __nv_bfloat162* hd = reinterpret_cast<const __nv_bfloat162*>(&ud);
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const float2 fo = __bfloat1622float2(ho[e]), fd = __bfloat1622float2(hd[e]);
      acc += fo.x * fd.x + fo.y * fd.y;
    }
  }
#pragma unroll
  for (int o = kLanes / 2; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);  // within the row's lanes
  if (at >= 0 && part == 0) p.delta[at] = acc;
}

__global__ void flash_dq_cast_kernel(bf16* dq, const float* acc, int64_t n) {
  const int64_t i = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) * 4;
  if (i + 4 <= n) {
    const float4 v = *reinterpret_cast<const float4*>(acc + i);
    uint2 u;
    u.x = pack_bf16(v.x, v.y);
    u.y = pack_bf16(v.z, v.w);
    *reinterpret_cast<uint2*>(dq + i) = u;
  } else {
    for (int64_t j = i; j < n; ++j) dq[j] = __float2bfloat16_rn(acc[j]);
  }
}

template <int DQK, int DV>
void run_dkdv(const Params& p, cudaStream_t stream) {
  {  // D = rowsum(dO o O), and in the same grid what the atomic dQ path needs zeroed: the mma.sync pass's fp32
     // accumulator (B, T, Hq, Dqk) with T rounded up to 64; the wgmma pass's per-tile counters (its first
     // contribution to each tile stores instead of adding, so its accumulator needs no zeroing)
    const int64_t rows = int64_t(p.B) * p.T * p.R * p.Hq, n_tiles = (p.T + 63) / 64;
    float4* zero = reinterpret_cast<float4*>(p.dq_state ? static_cast<void*>(p.dq_state) : p.dq_accum);
    const int64_t zero4 = !p.atomic_dq ? 0
                          : p.dq_state ? (int64_t(p.B) * p.Hq * n_tiles + 3) / 4
                                       : int64_t(p.B) * n_tiles * 64 * p.Hq * (dq_accum_cols(DQK) / 4);
    flash_bwd_delta_kernel<DV><<<blocks_for(rows * (DV / 8), 256), 256, 0, stream>>>(p, zero, zero4);
    CUDA_CHECK_LAUNCH("flash_bwd_delta_kernel");
  }
  if (p.sm90_bwd) {  // fills and casts its own (tiled) dQ accumulator
    launch_bwd_dkdv_sm90(p, DQK, DV, stream);
    return;
  }
  {
    constexpr int smem = bwd_smem_bytes<DQK, DV>();
    allow_dynamic_smem(flash_bwd_dkdv_kernel<DQK, DV>, smem);
    const dim3 grid((p.S + kBwdBC - 1) / kBwdBC, p.B * p.R * p.Hk);
    flash_bwd_dkdv_kernel<DQK, DV><<<grid, kBwdWarps * 32, smem, stream>>>(p);
    CUDA_CHECK_LAUNCH("flash_bwd_dkdv_kernel");
  }
  if (p.atomic_dq) {
    const int64_t n = int64_t(p.B) * p.T * p.Hq * DQK;
    flash_dq_cast_kernel<<<blocks_for((n + 3) / 4, 256), 256, 0, stream>>>(p.dq, p.dq_accum, n);
    CUDA_CHECK_LAUNCH("flash_dq_cast_kernel");
  }
}

}  // namespace

void launch_bwd_dkdv(const Params& p, int dqk, int dv, cudaStream_t stream) {
  dispatch_head_dims<true>(dqk, dv, "backward", [&](auto a, auto c) { run_dkdv<a, c>(p, stream); });
}

}  // namespace latte::cuda::flash
