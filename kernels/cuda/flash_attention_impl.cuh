// Shared pieces of the flash-attention kernels (included by kernels/cuda/flash_attention*.cu and
// decode_attention.cu only): the parameter block, the tensor-core and async-copy primitives (inline PTX for
// sm_80+: mma.sync m16n8k16 bf16 -> fp32, ldmatrix, cp.async), the products the mma.sync kernels share, the
// forward's epilogue, and the tile loader.
//
// Fragment layouts of mma.m16n8k16 (g = lane / 4, c = lane % 4), used throughout:
//   A 16x16 row-major, 4 regs of bf16x2: a0 (g, 2c..2c+1)  a1 (g+8, 2c..)  a2 (g, 2c+8..)  a3 (g+8, 2c+8..)
//   B 16x8 (k x n), 2 regs:               b0 (k 2c..2c+1, n g)   b1 (k 2c+8.., n g)
//   C 16x8 fp32, 4 regs:                  c0,c1 (g, 2c..2c+1)   c2,c3 (g+8, 2c..2c+1)
// A C tile converts to an A fragment in registers (P = softmax(S) feeds P V without a trip through shared
// memory). Shared-memory tiles are row-major with each row padded by 8 elements (16 bytes): with rows of
// D + 8 elements (D a multiple of 16) the 8 row addresses of an ldmatrix hit 8 distinct 16-byte bank groups,
// so loads are conflict-free without a swizzle, and 16-byte cp.async chunks stay aligned.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "core/error.h"

namespace latte::cuda::flash {

using bf16 = __nv_bfloat16;

constexpr float kLog2e = 1.4426950408889634f;
constexpr float kLn2 = 0.6931471805599453f;

// Everything a flash kernel needs, by value. Element strides; rows are 16-byte aligned (checked on the host).
struct Params {
  const bf16* q;     // (B, T, Hq, Dqk)
  const bf16* k;     // (B, S, R*Hk, Dqk)
  const bf16* v;     // (B, S, R*Hk, Dv)
  const bf16* o;     // (B, T, R*Hq, Dv)   forward output (backward input)
  const bf16* dout;  // (B, T, R*Hq, Dv)
  bf16* out;         // (B, T, R*Hq, Dv)   forward output
  float* lse;        // (B, R*Hq, T)       natural log
  float* delta;      // (B, R*Hq, T)       rowsum(dO * O), backward scratch
  float* dq_accum;   // (B, T, Hq, Dqk)    fp32, atomic dQ path; the wgmma pass: (B, Hq, T/64, 64 x Dqk) tiles
  int* dq_state;     // (B, Hq, T/64)      the wgmma pass: contributions per dQ tile so far (+ kDqTileStored), zeroed
                     //                    by the D kernel instead of the accumulator (flash_attention_bwd_sm90.cu)
  bf16* dq;          // (B, T, Hq, Dqk)    contiguous
  bf16* dk;          // (B, S, R*Hk, Dqk)  contiguous
  bf16* dv;          // (B, S, R*Hk, Dv)   contiguous
  int64_t q_sb, q_st, q_sh, k_sb, k_st, k_sh, v_sb, v_st, v_sh;
  int64_t o_sb, o_st, o_sh, do_sb, do_st, do_sh;  // out (forward) or o (backward); dout
  int B, T, S, Hq, Hk, R, G;                      // G = Hq / Hk
  int dqk;  // q's and k's head dim; the wgmma kernels run 96 as 128 (sm90_kernel_dqk), the pad read as zeros
  float scale, scale_log2;                        // softmax scale, and scale * log2(e)
  bool causal;
  bool atomic_dq;
  int sm90_pingpong;  // the wgmma forward's consumers take turns issuing their GEMMs (on the overlapped schedule)
  int sm90_overlap;   // the wgmma forward issues S of tile j with P V of tile j - 1 (flash_attention_fwd_sm90.cu)
  int sm90_persistent;  // the wgmma kernels: one block per SM taking work items from a counter (sm90_sched)
  int sm90_head_group;  // the wgmma forward's work order: heads per heaviest-first group (0: sized by its launcher)
  int* sm90_sched;      // (2) int: the persistent kernels' next-item and finished-block counters, zero between launches
  int sm90_bwd;       // the key-major backward pass on wgmma (flash_attention_bwd_sm90.cu)
};

// Columns of the fp32 dQ accumulator per query row: Dqk rounded up to 32 (64, 96, 128, 192). The wgmma pass runs
// Dqk 96 on its 128 kernel; its accumulator tiles keep only the 96 real columns (the first three quarters of a tile
// in its fragment order), so the reductions and the cast move a quarter fewer bytes than with the pad.
__host__ __device__ constexpr int dq_accum_cols(int dqk) { return (dqk + 31) / 32 * 32; }

// Host launchers, one per pass (each file instantiates the supported head dims).
void launch_fwd(const Params& p, int dqk, int dv, cudaStream_t stream);
void launch_bwd_dkdv(const Params& p, int dqk, int dv, cudaStream_t stream);
void launch_bwd_dq(const Params& p, int dqk, int dv, cudaStream_t stream);
bool fwd_sm90_supported(int dqk, int dv);
void launch_fwd_sm90(const Params& p, int dqk, int dv, cudaStream_t stream);  // sm_90a wgmma forward
bool bwd_sm90_supported(int dqk, int dv);
void launch_bwd_dkdv_sm90(const Params& p, int dqk, int dv, cudaStream_t stream);  // sm_90a wgmma key-major pass
void launch_bwd_dq_sm90(const Params& p, int dqk, int dv, cudaStream_t stream);  // sm_90a deterministic dQ pass
int* sm90_scheduler_counters(cudaStream_t stream);  // the persistent wgmma kernels' counters (sm90_sched)

// Head dims: every flash kernel is instantiated for Dqk in {64, 96, 128, 192} and Dv in {64, 128}, the wgmma
// ones (kDqk96 = false) for all but Dqk = 96. Calls f(std::integral_constant<int, Dqk>{},
// std::integral_constant<int, Dv>{}) for the call's pair; `what` names the pass in the error for any other pair.
template <bool kDqk96, typename F>
void dispatch_head_dims(int dqk, int dv, const char* what, F&& f) {
  bool done = false;
  auto pair = [&](auto a, auto c) {
    if (!done && dqk == decltype(a)::value && dv == decltype(c)::value) f(a, c), done = true;
  };
  auto both_dv = [&](auto a) {
    pair(a, std::integral_constant<int, 64>{});
    pair(a, std::integral_constant<int, 128>{});
  };
  both_dv(std::integral_constant<int, 64>{});
  if constexpr (kDqk96) both_dv(std::integral_constant<int, 96>{});
  both_dv(std::integral_constant<int, 128>{});
  both_dv(std::integral_constant<int, 192>{});
  if (!done) LATTE_FAIL("flash attention ", what, ": unsupported head dims (", dqk, ", ", dv, ")");
}

// ---- PTX primitives -------------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t smem_u32(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16-byte async copy global -> shared; zero-fills the 16 bytes when !valid (nothing is read then).
__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  const int n = valid ? 16 : 0;
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(n));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void ldmatrix_x4(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x4_trans(uint32_t (&r)[4], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}
__device__ __forceinline__ void ldmatrix_x2_trans(uint32_t (&r)[2], uint32_t addr) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];\n" : "=r"(r[0]), "=r"(r[1]) : "r"(addr));
}

// d += a b  (16x8x16, bf16 in, fp32 accumulate)
__device__ __forceinline__ void mma_bf16(float (&d)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
      "{%0,%1,%2,%3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// dst[0..1] += (x, y): one 8-byte vector atomic on sm_90, two scalar ones before.
__device__ __forceinline__ void atomic_add2(float* dst, float x, float y) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  atomicAdd(reinterpret_cast<float2*>(dst), make_float2(x, y));
#else
  atomicAdd(dst, x);
  atomicAdd(dst + 1, y);
#endif
}

// Two floats -> bf16x2 (lo in the low half: the lower column index of a fragment pair).
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
  return *reinterpret_cast<uint32_t*>(&h);
}

// acc (16 x N, C fragments) += A B^T over K: A is rows a_row .. a_row + 15 and B rows b_row .. b_row + N - 1 of
// row-major bf16 tiles in shared memory (K contiguous; row strides in elements), both read by ldmatrix: the
// backward's S = Q K^T and dP = dO V^T, and their transposes in the key-major pass.
template <int K, int N>
__device__ __forceinline__ void mma_smem_x_smem_t(float (&acc)[N / 8][4], const bf16* a, int a_row, int a_stride,
                                                  const bf16* b, int b_row, int b_stride, int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t af[4];
    ldmatrix_x4(af, smem_u32(a + (a_row + (lane & 15)) * a_stride + kk * 16 + (lane >> 4) * 8));
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      uint32_t bf[4];
      ldmatrix_x4(bf, smem_u32(b + (b_row + np * 16 + (lane & 7) + ((lane >> 4) << 3)) * b_stride + kk * 16 +
                               ((lane >> 3) & 1) * 8));
      mma_bf16(acc[2 * np], af, bf[0], bf[1]);
      mma_bf16(acc[2 * np + 1], af, bf[2], bf[3]);
    }
  }
}

// acc (16 x N, C fragments) += P (16 x K, C fragments in fp32, packed here into A fragments) times B (K x N), a
// row-major bf16 tile in shared memory with row stride `stride` elements, read by ldmatrix.trans: the forward's
// O += P V and the query-major pass's dQ += dS K (P stays in registers; B rows padded as load_tile leaves them).
template <int K, int N>
__device__ __forceinline__ void mma_cfrag_x_smem(float (&acc)[N / 8][4], const float (&p)[K / 8][4], const bf16* b,
                                                 int stride, int lane) {
#pragma unroll
  for (int kk = 0; kk < K / 16; ++kk) {
    uint32_t a[4];
    a[0] = pack_bf16(p[2 * kk][0], p[2 * kk][1]);
    a[1] = pack_bf16(p[2 * kk][2], p[2 * kk][3]);
    a[2] = pack_bf16(p[2 * kk + 1][0], p[2 * kk + 1][1]);
    a[3] = pack_bf16(p[2 * kk + 1][2], p[2 * kk + 1][3]);
#pragma unroll
    for (int np = 0; np < N / 16; ++np) {
      uint32_t bf[4];
      ldmatrix_x4_trans(bf, smem_u32(b + (kk * 16 + (lane & 7) + ((lane >> 3) & 1) * 8) * stride + np * 16 +
                                     (lane >> 4) * 8));
      mma_bf16(acc[2 * np], a, bf[0], bf[1]);
      mma_bf16(acc[2 * np + 1], a, bf[2], bf[3]);
    }
  }
}

// 2^x on the special-function unit (flush-to-zero; 2^-inf = 0).
__device__ __forceinline__ float fast_exp2(float x) {
  float y;
  asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
  return y;
}

__device__ __forceinline__ float quad_max(float v) {
  v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 1));
  return fmaxf(v, __shfl_xor_sync(0xffffffffu, v, 2));
}
__device__ __forceinline__ float quad_sum(float v) {
  v += __shfl_xor_sync(0xffffffffu, v, 1);
  return v + __shfl_xor_sync(0xffffffffu, v, 2);
}

// The forward's epilogue for a warp's rows row0 and row0 + 8 of virtual head vh: O / l in bf16 and lse = (m + log2 l)
// ln 2 (rows that saw no key: O = 0, lse = -inf). o_at(d, c) is element c of the d-th C fragment of the 16 x DV
// output tile; m_run and l_run are the rows' running maximum (log2 units) and this lane's share of their sums.
template <int DV, typename OAt>
__device__ __forceinline__ void fwd_store_rows(const Params& p, OAt&& o_at, const float (&m_run)[2],
                                               const float (&l_run)[2], int b, int vh, int row0, int tq) {
  const int64_t lse_row = (int64_t(b) * (p.R * p.Hq) + vh) * p.T;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float l = quad_sum(l_run[h]);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int row = row0 + h * 8;
    if (row < p.T) {
      bf16* orow = p.out + b * p.o_sb + int64_t(row) * p.o_st + vh * p.o_sh;
#pragma unroll
      for (int d = 0; d < DV / 8; ++d)
        *reinterpret_cast<uint32_t*>(orow + d * 8 + 2 * tq) = pack_bf16(o_at(d, 2 * h) * inv, o_at(d, 2 * h + 1) * inv);
      if (tq == 0) p.lse[lse_row + row] = l > 0.f ? (m_run[h] + log2f(l)) * kLn2 : -INFINITY;
    }
  }
}

// Async copy of a (ROWS, D) bf16 tile into shared memory (row stride D + 8): row r of the tile is at
// g + r * row_stride; rows >= nvalid are zero-filled (their source is never read; `safe` is a valid address
// given to the copy instead). NT threads share the work.
template <int ROWS, int D, int NT>
__device__ __forceinline__ void load_tile(bf16* s, const bf16* g, int64_t row_stride, int nvalid, const bf16* safe,
                                          int tid) {
  constexpr int kChunks = D / 8;  // 16-byte chunks per row
  constexpr int kTotal = ROWS * kChunks;
#pragma unroll
  for (int it = 0; it < (kTotal + NT - 1) / NT; ++it) {
    const int c = it * NT + tid;
    if (kTotal % NT == 0 || c < kTotal) {
      const int r = c / kChunks, ch = c - r * kChunks;
      const bool valid = r < nvalid;
      const bf16* src = valid ? g + r * row_stride + ch * 8 : safe;
      cp_async16(smem_u32(s + r * (D + 8) + ch * 8), src, valid);
    }
  }
}

}  // namespace latte::cuda::flash
