// Latent decode, split pass, for Hopper (sm_90a): the absorbed MLA rows (Dc = 512, Dr = 64) with 64 heads per
// block on warpgroup tensor-core instructions (wgmma), for models with many heads (DeepSeek's 128).
//   q_abs (B, H, 512), q_rope (B, H, 64), c (B, S, 512), kr (B, S, 64) -> per split: unnormalised O (64 heads x
//   512), m (log2 units), l -> decode_attention.cu's combine pass.
// Why: the mma.sync split kernel takes 16 heads per block, so 128 heads read every cache tile through 8 blocks and
// run the tile's 2 x 16 x 64 x (576 + 512) FLOPs on 16-row tiles with every operand through registers: 0.13 of the
// copy bandwidth (docs/attention_kernels.md). A cache row serves all heads: at 128 heads a step is 9.1 GFLOP per
// 37.7 MB (B = 1, 32k), compute-heavy enough that the tensor-core rate decides it.
// Block: warpgroup 0 = producer (one thread issues the TMA loads: the 64-head query once, then 64-key tiles of
// [c | kr], 72 KB, double-buffered); warpgroups 1 and 2 = consumers. Per key tile:
//   S_w (64 heads x 32 keys) = Q K_w^T            SS, K = 576 (consumer w takes keys 32 w .. 32 w + 31)
//   row maxima of both halves meet in shared memory; P = exp2(S scale log2e - m) -> shared memory (bf16, 64 x 64)
//   O_w (64 heads x 256 values) = O_w 2^(m_old - m) + P V_w    SS, V = the tile's c columns 256 w .. 256 w + 255
// so a consumer holds 2 x 64 accumulator registers of O and 16 of S. A stage is released once both consumers'
// P V of it has completed.
// Floor at B = 1, H = 128, S = 32k: 37.7 MB at ~3 TB/s = 12.6 us; 9.1 GFLOP at the 989 TFLOP/s dense peak = 9.2 us.
#include <algorithm>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/decode_attention_impl.h"
#include "kernels/cuda/flash_attention_sm90.cuh"

namespace latte::cuda {

using flash::bf16;
using namespace flash;  // PTX primitives, wgmma wrappers, TMA

namespace {

constexpr int kLatDc = 512, kLatDr = 64, kLatDk = kLatDc + kLatDr;  // the MLA latent row
constexpr int kLatHeads = 64;                                        // heads per block (one wgmma M tile)
constexpr int kLatKeys = 64;                                         // keys per tile
constexpr int kLatBlocks = kLatDk / 64;                              // 64-column blocks of a row: 9
constexpr int kLatTileBytes = kLatBlocks * kLatKeys * 128;           // one [c | kr] tile: 72 KB
constexpr int kLatThreads = 384;

// sQ, 2 stages of K, sP, row maxima (2 x 64 floats), 5 mbarriers, alignment slack.
constexpr int kLatSmem = kLatBlocks * kLatHeads * 128 + 2 * kLatTileBytes + kLatHeads * 128 + 2 * 64 * 4 + 64 + 1024;
static_assert(kLatSmem <= 227 * 1024, "shared memory of one block");

struct LatentMaps {
  CUtensorMap q_abs, q_rope, c, kr;
};

__global__ void __launch_bounds__(kLatThreads, 1)
    decode_latent_sm90_kernel(const DecodeParams p, const __grid_constant__ LatentMaps maps) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;
  const uint32_t sQ = base;                                  // 9 blocks of (64 heads, 64 columns)
  const uint32_t sK = sQ + kLatBlocks * kLatHeads * 128;     // 2 stages x 9 blocks of (64 keys, 64 columns)
  const uint32_t sP = sK + 2 * kLatTileBytes;                // (64 heads, 64 keys) bf16, swizzled rows
  const uint32_t sRedA = sP + kLatHeads * 128;               // (2 consumers, 64 rows) fp32
  const uint32_t bars = sRedA + 2 * 64 * 4;                  // q_full, full[2], empty[2]
  const uint32_t q_full = bars, full0 = bars + 8, empty0 = bars + 24;
  float* sRed = reinterpret_cast<float*>(smem_raw + (sRedA - raw));

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wg = warp >> 2, g = lane >> 2, tq = lane & 3;
  const int h0 = blockIdx.x * kLatHeads, b = blockIdx.y, split = blockIdx.z;
  const SplitTiles tiles = split_tiles(p, split, kLatKeys);
  const int s_end = tiles.end, n_tiles = tiles.n;

  if (tid == 0) init_pipeline_barriers(q_full, full0, empty0, 2, 1);
  __syncthreads();

  if (wg == 0) {
    setmaxnreg_dec<24>();
    if (warp == 0 && lane == 0) {
      mbar_arrive_expect_tx(q_full, kLatBlocks * kLatHeads * 128);
      for (int c = 0; c < kLatDc / 64; ++c) tma_load_4d(sQ + c * kLatHeads * 128, &maps.q_abs, c * 64, 0, h0, b, q_full);
      tma_load_4d(sQ + (kLatBlocks - 1) * kLatHeads * 128, &maps.q_rope, 0, 0, h0, b, q_full);
      for (int t = 0; t < n_tiles; ++t) {
        const int s = t & 1, s0 = tiles.first + t * tiles.step;
        if (t >= 2) mbar_wait(empty0 + 8 * s, ((t >> 1) - 1) & 1);
        const uint32_t full = full0 + 8 * s, dst = sK + s * kLatTileBytes;
        mbar_arrive_expect_tx(full, kLatTileBytes);
        for (int c = 0; c < kLatDc / 64; ++c) tma_load_4d(dst + c * kLatKeys * 128, &maps.c, c * 64, 0, s0, b, full);
        tma_load_4d(dst + (kLatBlocks - 1) * kLatKeys * 128, &maps.kr, 0, 0, s0, b, full);
      }
    }
    return;
  }
  setmaxnreg_inc<240>();
  const int cw = wg - 1;                           // consumer: keys 32 cw.. of S, value columns 256 cw.. of O
  const int r0 = (warp & 3) * 16 + g;              // this thread's heads in the tile: r0, r0 + 8
  float o0[64], o1[64];                            // O columns 256 cw + [0, 128) and + [128, 256)
#pragma unroll
  for (int x = 0; x < 64; ++x) o0[x] = 0.f, o1[x] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
  mbar_wait(q_full, 0);

  for (int t = 0; t < n_tiles; ++t) {
    const int s = t & 1, s0 = tiles.first + t * tiles.step;
    const uint32_t sKs = sK + s * kLatTileBytes;
    mbar_wait(full0 + 8 * s, (t >> 1) & 1);

    // S_w = Q K_w^T over the 36 k steps of the 576-wide rows (K_w: this consumer's 32 keys, rows 32 cw..).
    float st[16];
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kLatDk / 16; ++kk) {
      const uint32_t col = (kk >> 2) * (kLatKeys * 128) + (kk & 3) * 32;
      wgmma_ss_m64n32k16(st, smem_desc(sQ + col, 16, 1024), smem_desc(sKs + cw * 32 * 128 + col, 16, 1024), kk > 0);
    }
    wgmma_commit();
    wgmma_wait<0>();
    pin(st);

    // Row maxima over this consumer's keys (st[4 n + c]: head r0 + 8 (c >> 1), key 32 cw + 8 n + 2 tq + (c & 1)),
    // keys past the split's end masked; then both consumers' maxima.
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int x = 0; x < 16; ++x) {
      const int key = s0 + cw * 32 + 8 * (x >> 2) + 2 * tq + (x & 1);
      st[x] = key < s_end ? st[x] * p.scale_log2 : -INFINITY;
      mx[(x & 3) >> 1] = fmaxf(mx[(x & 3) >> 1], st[x]);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
      if (tq == 0) sRed[cw * 64 + r0 + 8 * h] = mx[h];
    }
    named_bar_sync(1, 256);
    float alpha[2], m_use[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float m_new = fmaxf(m_run[h], fmaxf(sRed[r0 + 8 * h], sRed[64 + r0 + 8 * h]));
      m_use[h] = m_new == -INFINITY ? 0.f : m_new;
      alpha[h] = fast_exp2(m_run[h] - m_use[h]);  // 0 while m_run is -inf
      m_run[h] = m_new;
    }

    // P = exp2(S - m) -> sP (row = head, 128 bytes = 64 keys, 16-byte chunks XORed by row % 8); row sums of this
    // consumer's keys.
    float rs[2] = {0.f, 0.f};
#pragma unroll
    for (int n = 0; n < 4; ++n)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float a = fast_exp2(st[4 * n + 2 * h] - m_use[h]), c = fast_exp2(st[4 * n + 2 * h + 1] - m_use[h]);
        rs[h] += a + c;
        const int row = r0 + 8 * h, chunk = 4 * cw + n;
        const uint32_t addr = sP + row * 128 + ((chunk ^ (row & 7)) << 4) + tq * 4;
        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(pack_bf16(a, c)) : "memory");
      }
#pragma unroll
    for (int h = 0; h < 2; ++h) l_run[h] = l_run[h] * alpha[h] + quad_sum(rs[h]);
#pragma unroll
    for (int x = 0; x < 64; ++x) {
      o0[x] *= alpha[(x & 3) >> 1];
      o1[x] *= alpha[(x & 3) >> 1];
    }
    fence_proxy_async();
    named_bar_sync(2, 256);  // both halves of P written (and both consumers have read the maxima)

    // O_w += P V_w: A = P (K-major, 4 k steps of 16 keys), B = the tile's c columns (MN-major: keys down the rows),
    // two n128 products per k step.
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kLatKeys / 16; ++kk) {
      const uint64_t da = smem_desc(sP + kk * 32, 16, 1024);
      const uint32_t vrow = sKs + kk * 16 * 128;
      wgmma_ss_m64n128k16<0, 1>(o0, da, smem_desc(vrow + (cw * 4) * kLatKeys * 128, kLatKeys * 128, 1024), 1);
      wgmma_ss_m64n128k16<0, 1>(o1, da, smem_desc(vrow + (cw * 4 + 2) * kLatKeys * 128, kLatKeys * 128, 1024), 1);
    }
    wgmma_commit();
    // Waited for here, not left running into the next tile's S: ptxas serializes every wgmma of the kernel
    // (C7515) when the accumulators of one group are written by other instructions while another is in flight.
    wgmma_wait<0>();
    pin(o0);
    pin(o1);
    if (lane == 0) mbar_arrive(empty0 + 8 * s);  // this warp is done with the stage (K for S, V for P V)
  }

  // Row sums of both consumers (the same m throughout), then this split's partials.
  named_bar_sync(1, 256);  // every consumer has read the last maxima
#pragma unroll
  for (int h = 0; h < 2; ++h)
    if (tq == 0) sRed[cw * 64 + r0 + 8 * h] = l_run[h];
  named_bar_sync(2, 256);
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = r0 + 8 * h, head = h0 + row;
    if (head >= p.H) continue;
    const int64_t at = (int64_t(split) * p.B + b) * p.H + head;
    float* po = p.part_o + at * kLatDc + cw * 256 + 2 * tq;
#pragma unroll
    for (int n = 0; n < 16; ++n) {
      *reinterpret_cast<float2*>(po + 8 * n) = make_float2(o0[4 * n + 2 * h], o0[4 * n + 2 * h + 1]);
      *reinterpret_cast<float2*>(po + 128 + 8 * n) = make_float2(o1[4 * n + 2 * h], o1[4 * n + 2 * h + 1]);
    }
    if (cw == 0 && tq == 0)
      *reinterpret_cast<float2*>(p.part_ml + at * 2) = make_float2(m_run[h], sRed[row] + sRed[64 + row]);
  }
#endif
}

}  // namespace

bool decode_latent_sm90_supported(const DecodeParams& p) {
  // More than 32 heads: at 32k, B=1, one call / back to back, the 16-row kernel's passes with TMA tiles beat this
  // one at H=24 (0.44-0.45 / 0.55-0.56 vs 0.39-0.40 / 0.47-0.48 of the copy bandwidth) and H=32 (0.43-0.44 / 0.53
  // vs 0.38-0.42 / 0.47), tie at H=64 (0.34-0.35 / 0.40), lose at H=128 (B=1 0.23 vs 0.31, B=4 0.27 vs 0.51-0.53)
  // (session 10; before TMA, session 9 had put the threshold at 16).
  if (!p.v_is_k1 || p.D1 != kLatDc || p.D2 != kLatDr || p.H <= 32) return false;
  if (!device_has_sm90_kernels() || !tma_available()) return false;
  // TMA: 16-byte aligned bases and strides (in elements: multiples of 8).
  for (const void* ptr : {static_cast<const void*>(p.q1), static_cast<const void*>(p.q2),
                          static_cast<const void*>(p.k1), static_cast<const void*>(p.k2)})
    if (reinterpret_cast<uintptr_t>(ptr) % 16) return false;
  for (int64_t st : {p.q1_sb, p.q1_sh, p.q2_sb, p.q2_sh, p.k1_sb, p.k1_ss, p.k2_sb, p.k2_ss})
    if (st % 8) return false;
  return true;
}

int decode_latent_sm90_smem_bytes() { return kLatSmem; }

bool latent_tma_supported(const DecodeParams& p) {
  if (!p.v_is_k1 || p.D1 != kLatDc || p.D2 != kLatDr) return false;
  if (!device_has_sm90_kernels() || !tma_available()) return false;
  for (const void* ptr : {static_cast<const void*>(p.k1), static_cast<const void*>(p.k2)})
    if (reinterpret_cast<uintptr_t>(ptr) % 16) return false;
  for (int64_t st : {p.k1_sb, p.k1_ss, p.k2_sb, p.k2_ss})
    if (st % 8) return false;
  return true;
}

DecodeTileMaps latent_tile_maps(const DecodeParams& p) {
  return {tma_map_bf16(p.k1, kLatDc, 1, p.S, p.B, 0, p.k1_ss, p.k1_sb, kLatKeys),
          tma_map_bf16(p.k2, kLatDr, 1, p.S, p.B, 0, p.k2_ss, p.k2_sb, kLatKeys)};
}

bool gqa_tma_supported(const DecodeParams& p) {
  if (p.v_is_k1 || p.D2 != 0 || (p.D1 != 64 && p.D1 != 128) || (p.DV != 64 && p.DV != 128)) return false;
  if (!device_has_sm90_kernels() || !tma_available()) return false;
  for (const void* ptr : {static_cast<const void*>(p.k1), static_cast<const void*>(p.v)})
    if (reinterpret_cast<uintptr_t>(ptr) % 16) return false;
  for (int64_t st : {p.k1_sb, p.k1_ss, p.k1_sh, p.v_sb, p.v_ss, p.v_sh})
    if (st % 8) return false;
  return true;
}

DecodeTileMaps gqa_tile_maps(const DecodeParams& p) {
  return {tma_map_bf16(p.k1, p.D1, p.Hk, p.S, p.B, p.k1_sh, p.k1_ss, p.k1_sb, kLatKeys),
          tma_map_bf16(p.v, p.DV, p.Hk, p.S, p.B, p.v_sh, p.v_ss, p.v_sb, kLatKeys)};
}

void launch_decode_latent_sm90(const DecodeParams& p, cudaStream_t stream) {
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(decode_latent_sm90_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kLatSmem));
    configured = true;
  }
  // (d, 1, rows, batch) views: query rows are heads, cache rows are positions.
  LatentMaps maps;
  maps.q_abs = tma_map_bf16(p.q1, kLatDc, 1, p.H, p.B, 0, p.q1_sh, p.q1_sb, kLatHeads);
  maps.q_rope = tma_map_bf16(p.q2, kLatDr, 1, p.H, p.B, 0, p.q2_sh, p.q2_sb, kLatHeads);
  maps.c = tma_map_bf16(p.k1, kLatDc, 1, p.S, p.B, 0, p.k1_ss, p.k1_sb, kLatKeys);
  maps.kr = tma_map_bf16(p.k2, kLatDr, 1, p.S, p.B, 0, p.k2_ss, p.k2_sb, kLatKeys);
  const dim3 grid((p.H + kLatHeads - 1) / kLatHeads, p.B, p.splits);
  decode_latent_sm90_kernel<<<grid, kLatThreads, kLatSmem, stream>>>(p, maps);
  CUDA_CHECK_LAUNCH("decode_latent_sm90_kernel");
}

}  // namespace latte::cuda
