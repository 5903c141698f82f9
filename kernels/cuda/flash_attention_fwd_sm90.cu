// Flash-attention forward for Hopper (sm_90a): the same algorithm as flash_attention_fwd.cu, with the two
// GEMMs on warpgroup tensor-core instructions (wgmma) instead of mma.sync.
//   q (B, T, Hq, Dqk)  k (B, S, R*Hk, Dqk)  v (B, S, R*Hk, Dv)  ->  out (B, T, R*Hq, Dv), lse (B, R*Hq, T) f32
// Why: on H100 an mma.sync warp that owns 16 query rows must pull every K and V fragment through registers
// with ldmatrix, so shared-memory bandwidth caps the forward at ~240 TFLOP/s (measured, docs/attention_kernels.md).
// wgmma reads its B operand (K for S = Q K^T, V for O = P V) straight from shared memory for 64 rows at once,
// 4x the reuse, and runs at the full Hopper tensor rate.
// Block: 2 warpgroups (256 threads), 128 query rows (64 per warpgroup), key tiles of 128. Shared memory holds
// Q and double-buffered K/V tiles in the canonical 128-byte-swizzled layout wgmma descriptors describe: a
// (rows, D) tile is D/64 column blocks of (rows, 64) bf16, each row 128 bytes with its 16-byte chunks XORed by
// row % 8 (so cp.async writes and wgmma reads are bank-conflict-free). Per key tile, per warpgroup:
//   S (64 x 128) = Q K^T      wgmma m64n128k16, A = Q and B = K from shared memory (K-major), Dqk/16 steps
//   online softmax on the accumulator registers (same layout per warp as mma.sync's C), P -> bf16 A registers
//   O (64 x Dv) += P V        wgmma m64n{Dv}k16, A = P from registers, B = V from shared memory (MN-major)
// Loads are cp.async by all threads (generic proxy), so each thread fences to the async proxy before the barrier
// that publishes a tile to wgmma. Head dims: Dqk in {64, 128, 192}, Dv in {64, 128}.
// Floor: as the mma.sync forward (2.8 ms at (192,128), B=4, T=4096, 16 heads, 989 TFLOP/s).
#include <cmath>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/flash_attention_impl.cuh"

namespace latte::cuda::flash {

namespace {

constexpr int kSm90Warps = 8;   // 2 warpgroups
constexpr int kSm90BR = 128;    // query rows per block
constexpr int kSm90BC = 128;    // keys per tile

template <int DQK, int DV>
constexpr int sm90_smem_bytes() {
  return (kSm90BR * DQK + 2 * kSm90BC * DQK + 2 * kSm90BC * DV) * 2 + 1024;  // + alignment slack
}

// ---- wgmma primitives (sm_90a) ---------------------------------------------------------------------------

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait_all() { asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory"); }
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Keeps the compiler from moving accumulator registers across an asynchronous wgmma.
template <int N>
__device__ __forceinline__ void pin(float (&r)[N]) {
#pragma unroll
  for (int i = 0; i < N; ++i) asm volatile("" : "+f"(r[i])::"memory");
}

__device__ __forceinline__ void named_bar_sync(int id, int threads) {
  asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}
__device__ __forceinline__ void named_bar_arrive(int id, int threads) {
  asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(threads) : "memory");
}

// Shared-memory matrix descriptor, 128-byte swizzle: start address, leading and stride byte offsets (>> 4).
__device__ __forceinline__ uint64_t smem_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
  return uint64_t((addr & 0x3FFFF) >> 4) | (uint64_t((lbo >> 4) & 0x3FFF) << 16) |
         (uint64_t((sbo >> 4) & 0x3FFF) << 32) | (uint64_t(1) << 62);
}

// D (64 x 128) (+)= A (64 x 16, shared, K-major) B^T (B: 128 x 16, shared, K-major).
__device__ __forceinline__ void wgmma_ss_m64n128k16(float (&d)[64], uint64_t da, uint64_t db, int accumulate) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, %64, %65, p, 1, 1, 0, 0;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "l"(da), "l"(db), "r"(accumulate));
}
// D (64 x 64) += A (64 x 16, registers) B (16 x 64, shared, MN-major: transposed).
__device__ __forceinline__ void wgmma_rs_m64n64k16_tb(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n64k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31}, {%32,%33,%34,%35}, %36, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}
// D (64 x 128) += A (64 x 16, registers) B (16 x 128, shared, MN-major: transposed).
__device__ __forceinline__ void wgmma_rs_m64n128k16_tb(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
  asm volatile(
      "{\n.reg .pred p;\nsetp.ne.b32 p, 1, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {%0,%1,%2,%3,%4,%5,%6,%7,%8,%9,%10,%11,%12,%13,%14,%15,%16,%17,%18,%19,%20,%21,%22,%23,%24,%25,%26,%27,%28,%29,%30,%31,%32,%33,%34,%35,%36,%37,%38,%39,%40,%41,%42,%43,%44,%45,%46,%47,%48,%49,%50,%51,%52,%53,%54,%55,%56,%57,%58,%59,%60,%61,%62,%63}, {%64,%65,%66,%67}, %68, p, 1, 1, 1;\n}\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]), "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]), "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]), "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]), "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]), "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]), "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]), "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "l"(db));
}

template <int DV>
__device__ __forceinline__ void wgmma_pv(float (&o)[DV / 2], const uint32_t (&a)[4], uint64_t db) {
  if constexpr (DV == 128)
    wgmma_rs_m64n128k16_tb(o, a, db);
  else
    wgmma_rs_m64n64k16_tb(o, a, db);
}

// Async copy of a (ROWS, D) bf16 tile into the swizzled layout at s (1024-byte aligned); rows >= nvalid zero.
template <int ROWS, int D, int NT>
__device__ __forceinline__ void load_tile_sw(uint32_t s, const bf16* g, int64_t row_stride, int nvalid,
                                             const bf16* safe, int tid) {
  constexpr int kChunks = D / 8, kTotal = ROWS * kChunks;
  static_assert(kTotal % NT == 0, "tile chunks must divide over the threads");
#pragma unroll
  for (int it = 0; it < kTotal / NT; ++it) {
    const int c = it * NT + tid;
    const int r = c / kChunks, ch = c - r * kChunks;
    const bool valid = r < nvalid;
    const bf16* src = valid ? g + r * row_stride + ch * 8 : safe;
    cp_async16(s + (ch >> 3) * (ROWS * 128) + r * 128 + (((ch & 7) ^ (r & 7)) << 4), src, valid);
  }
}

template <int DQK, int DV>
__global__ void __launch_bounds__(kSm90Warps * 32, 1) flash_fwd_sm90_kernel(const Params p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int NT = kSm90Warps * 32, BR = kSm90BR, BC = kSm90BC;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t base = (smem_u32(smem_raw) + 1023) & ~1023u;
  const uint32_t sQ = base;                       // DQK/64 blocks of (BR, 64)
  const uint32_t sK = sQ + BR * DQK * 2;          // 2 x DQK/64 blocks of (BC, 64)
  const uint32_t sV = sK + 2 * BC * DQK * 2;      // 2 x DV/64 blocks of (BC, 64)

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wg = warp >> 2, g = lane >> 2, tq = lane & 3;
  const int m_block = gridDim.x - 1 - blockIdx.x;
  const int RHq = p.R * p.Hq;
  const int b = blockIdx.y / RHq, vh = blockIdx.y - b * RHq;
  const int r = vh / p.Hq, i = vh - r * p.Hq;
  const int kvh = r * p.Hk + i / p.G;
  const int m0 = m_block * BR;
  const int off = p.S - p.T;
  const bf16* qg = p.q + b * p.q_sb + int64_t(m0) * p.q_st + i * p.q_sh;
  const bf16* kg = p.k + b * p.k_sb + kvh * p.k_sh;
  const bf16* vg = p.v + b * p.v_sb + kvh * p.v_sh;
  const int kv_end = p.causal ? min(p.S, min(m0 + BR, p.T) + off) : p.S;
  const int n_tiles = (kv_end + BC - 1) / BC;
  // V is an MN-major B operand: leading byte offset = distance between 64-wide Dv column blocks (BC rows of 128
  // bytes), stride byte offset = distance between 8-key row groups (1024 bytes). (The swapped assignment was
  // tried on the H100 too: relative error 0.99.)
  constexpr uint32_t v_lbo = BC * 128, v_sbo = 1024;

  load_tile_sw<BR, DQK, NT>(sQ, qg, p.q_st, p.T - m0, p.q, tid);
  load_tile_sw<BC, DQK, NT>(sK, kg, p.k_st, p.S, p.k, tid);
  load_tile_sw<BC, DV, NT>(sV, vg, p.v_st, p.S, p.v, tid);
  cp_async_commit();

  float o[DV / 2];
#pragma unroll
  for (int x = 0; x < DV / 2; ++x) o[x] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
  const int row0 = m0 + wg * 64 + (warp & 3) * 16 + g;  // rows row0, row0 + 8

  for (int j = 0; j < n_tiles; ++j) {
    const int n0 = j * BC;
    if (j + 1 < n_tiles) {
      const int n1 = n0 + BC, nb = (j + 1) & 1;
      load_tile_sw<BC, DQK, NT>(sK + nb * BC * DQK * 2, kg + int64_t(n1) * p.k_st, p.k_st, p.S - n1, p.k, tid);
      load_tile_sw<BC, DV, NT>(sV + nb * BC * DV * 2, vg + int64_t(n1) * p.v_st, p.v_st, p.S - n1, p.v, tid);
      cp_async_commit();
      cp_async_wait<1>();
    } else {
      cp_async_wait<0>();
    }
    fence_proxy_async();
    __syncthreads();
    const uint32_t sKj = sK + (j & 1) * BC * DQK * 2, sVj = sV + (j & 1) * BC * DV * 2;

    // Ping-pong (optional): warpgroup 1 issues its S GEMM only once warpgroup 0's has finished, and warpgroup 0
    // its P V GEMM only once warpgroup 1's S GEMM has finished, so one warpgroup's softmax overlaps the other's
    // tensor-core work instead of both doing softmax at once (named barriers 1 and 2; FlashAttention-3's scheme).
    const bool pingpong = p.sm90_pingpong != 0;
    if (pingpong && wg == 1) named_bar_sync(1, NT);

    // S = Q K^T (64 x 128 per warpgroup).
    float s[BC / 2];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < DQK / 16; ++kk) {
      const uint64_t da = smem_desc(sQ + (kk >> 2) * BR * 128 + wg * 64 * 128 + (kk & 3) * 32, 16, 1024);
      const uint64_t db = smem_desc(sKj + (kk >> 2) * BC * 128 + (kk & 3) * 32, 16, 1024);
      wgmma_ss_m64n128k16(s, da, db, kk > 0);
    }
    wgmma_commit();
    wgmma_wait_all();
    pin(s);
    if (pingpong) named_bar_arrive(wg == 0 ? 1 : 2, NT);

    // Mask the causal diagonal and the ragged key tail (raw scores; the scale is folded into the exponent
    // below, valid since scale > 0). s[4n + c] is (row0 + 8 (c >> 1), n0 + 8n + 2 tq + (c & 1)).
    const bool need_mask = (n0 + BC > p.S) || (p.causal && n0 + BC - 1 > m0 + off);
    if (need_mask) {
#pragma unroll
      for (int x = 0; x < BC / 2; ++x) {
        const int n = x >> 2, c = x & 3;
        const int col = n0 + n * 8 + 2 * tq + (c & 1), row = row0 + (c >> 1) * 8;
        if (col >= p.S || (p.causal && col > row + off)) s[x] = -INFINITY;
      }
    }
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int n = 0; n < BC / 8; ++n) {
      mx[0] = fmaxf(mx[0], fmaxf(s[4 * n], s[4 * n + 1]));
      mx[1] = fmaxf(mx[1], fmaxf(s[4 * n + 2], s[4 * n + 3]));
    }
    float m_use[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(m_run[h], quad_max(mx[h]) * p.scale_log2);  // log2 units
      m_use[h] = mx[h] == -INFINITY ? 0.f : mx[h];
      const float alpha = fast_exp2(m_run[h] - m_use[h]);
      m_run[h] = mx[h];
      l_run[h] *= alpha;
#pragma unroll
      for (int d = 0; d < DV / 8; ++d) {
        o[4 * d + 2 * h] *= alpha;
        o[4 * d + 2 * h + 1] *= alpha;
      }
    }
    uint32_t pa[BC / 16][4];
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      float e[8];
#pragma unroll
      for (int c = 0; c < 8; ++c) {  // n-tiles 2kk (c < 4) and 2kk+1
        const int x = 8 * kk + c;
        e[c] = fast_exp2(fmaf(s[x], p.scale_log2, -m_use[(c >> 1) & 1]));
        l_run[(c >> 1) & 1] += e[c];
      }
      pa[kk][0] = pack_bf16(e[0], e[1]);
      pa[kk][1] = pack_bf16(e[2], e[3]);
      pa[kk][2] = pack_bf16(e[4], e[5]);
      pa[kk][3] = pack_bf16(e[6], e[7]);
    }

    // O += P V.
    if (pingpong && wg == 0) named_bar_sync(2, NT);
    wgmma_fence();
    pin(o);
#pragma unroll
    for (int kk = 0; kk < BC / 16; ++kk) {
      const uint64_t db = smem_desc(sVj + kk * 16 * 128, v_lbo, v_sbo);
      wgmma_pv<DV>(o, pa[kk], db);
    }
    wgmma_commit();
    wgmma_wait_all();
    pin(o);
    __syncthreads();  // the buffers read here are refilled by the next prefetch
  }

  const int64_t lse_row = (int64_t(b) * RHq + vh) * p.T;
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float l = quad_sum(l_run[h]);
    const float inv = l > 0.f ? 1.f / l : 0.f;
    const int row = row0 + h * 8;
    if (row < p.T) {
      bf16* orow = p.out + b * p.o_sb + int64_t(row) * p.o_st + vh * p.o_sh;
#pragma unroll
      for (int d = 0; d < DV / 8; ++d)
        *reinterpret_cast<uint32_t*>(orow + d * 8 + 2 * tq) = pack_bf16(o[4 * d + 2 * h] * inv, o[4 * d + 2 * h + 1] * inv);
      if (tq == 0) p.lse[lse_row + row] = l > 0.f ? (m_run[h] + log2f(l)) * kLn2 : -INFINITY;
    }
  }
#endif
}

template <int DQK, int DV>
void run_fwd_sm90(const Params& p, cudaStream_t stream) {
  constexpr int smem = sm90_smem_bytes<DQK, DV>();
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(flash_fwd_sm90_kernel<DQK, DV>, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
    configured = true;
  }
  const dim3 grid((p.T + kSm90BR - 1) / kSm90BR, p.B * p.R * p.Hq);
  flash_fwd_sm90_kernel<DQK, DV><<<grid, kSm90Warps * 32, smem, stream>>>(p);
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

// Whether the current device runs the wgmma kernel: compute capability 9.0 and an sm_90a build. Probed once.
bool device_has_sm90_kernel() {
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

}  // namespace

bool fwd_sm90_supported(int dqk, int dv) {
  return (dqk == 64 || dqk == 128 || dqk == 192) && (dv == 64 || dv == 128) && device_has_sm90_kernel();
}

void launch_fwd_sm90(const Params& p, int dqk, int dv, cudaStream_t stream) {
#define LATTE_FLASH_CASE(A, C) \
  if (dqk == A && dv == C) return run_fwd_sm90<A, C>(p, stream);
  LATTE_FLASH_CASE(64, 64)
  LATTE_FLASH_CASE(64, 128)
  LATTE_FLASH_CASE(128, 64)
  LATTE_FLASH_CASE(128, 128)
  LATTE_FLASH_CASE(192, 64)
  LATTE_FLASH_CASE(192, 128)
#undef LATTE_FLASH_CASE
  LATTE_FAIL("flash attention forward (sm90): unsupported head dims (", dqk, ", ", dv, ")");
}

}  // namespace latte::cuda::flash
