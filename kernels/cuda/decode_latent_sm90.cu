// Latent decode, split pass, for Hopper (sm_90a): the absorbed MLA rows (Dc = 512, Dr = 64) with 64 heads per
// block on warpgroup tensor-core instructions (wgmma), for models with many heads (DeepSeek's 128).
//   q_abs (B, H, 512), q_rope (B, H, 64), c (B, S, 512), kr (B, S, 64) -> per split: unnormalised O (64 heads x
//   512), m (log2 units), l -> decode_attention.cu's combine pass.
// Why: the mma.sync split kernel takes 16 heads per block, so 128 heads read every cache tile through 8 blocks and
// run the tile's 2 x 16 x 64 x (576 + 512) FLOPs on 16-row tiles with every operand through registers: 0.13 of the
// copy bandwidth (docs/attention_kernels.md). A cache row serves all heads: at 128 heads a step is 9.1 GFLOP per
// 37.7 MB (B = 1, 32k), compute-heavy enough that the tensor-core rate decides it.
// Block: two warpgroups, no producer (FlashMLA's "seesaw" pairing, written for these tiles): the query (64 heads x
// 576, its rope block then kept in registers) and 64-key tiles of [c | kr] (72 KB, two stages, stage i % 2 holds
// key tile i) arrive by TMA in 64-column blocks, each block with its own barrier. Warpgroup w computes S for the
// tiles of its parity and owns O columns 256 w .. 256 w + 255 (O_L, O_R). Per pair of tiles (a, b), with S_a and
// S_b in registers:
//   wg 0: P_a = softmax(S_a) against the running maximum -> m_a (sM), alpha_a (sScale0), P_a (registers, sP0) |
//         O_L = O_L alpha_a + P_a V_a,L | wait for wg 1's softmax | O_L rescaled to m_b, O_L += P_b V_b,L (sP1) |
//         S_{a+2}
//   wg 1: O_R = O_R alpha_a + P_a V_a,R (sP0) while P_b = softmax(S_b) against m_a -> m_b, alpha_b (sScale1),
//         P_b (registers, sP1) | O_R rescaled to m_b, O_R += P_b V_b,R | S_{b+2}
// so one warpgroup's softmax runs while the other's products do, and every block of a stage is refilled by the
// warpgroup that read it last as soon as that read has completed (the rope block right after S), the next S
// taking its blocks in the order they were refilled: with two 72 KB stages beside the 72 KB query, the load of
// tile a + 2 has only the time between P V of tile a and S of tile a + 2 to arrive in. (Until session 15 one
// producer warpgroup loaded whole tiles and consumer 0 computed every S: H = 128, B = 4 0.55 / 0.59 of the copy
// bandwidth; this schedule 0.61 / 0.65, docs/attention_kernels.md v44, v45.)
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
constexpr int kLatThreads = 256;                                     // two warpgroups
constexpr float kLazyRescale = 8.f;                                  // see the softmax
constexpr int kLatBlk = kLatKeys * 128;                              // one 64 x 64 column block: 8 KB
// sQ, 2 stages, sP0, sM / sScale0 / sScale1 (64 floats each) / sL (128), 19 mbarriers, alignment slack.
constexpr int kLatSmem = kLatBlocks * kLatBlk + 2 * kLatTileBytes + kLatBlk + 320 * 4 + 160 + 1024;
static_assert(kLatSmem <= 227 * 1024, "shared memory of one block");

struct LatentMaps {
  CUtensorMap q_abs, q_rope, c, kr;
};

// S (64 heads x 64 keys) (+)= Q K^T over the column blocks [C0, C1) of a tile at `stage`, each block waited for
// on its barrier (bar0 + 8 c); block 8 (the rope part) with the query from registers. `zero`: the first step
// overwrites S.
template <int C0, int C1>
__device__ __forceinline__ void seesaw_s(float (&s)[32], uint32_t sQ, uint32_t stage, uint32_t bar0,
                                         uint32_t parity, const uint32_t (&rq8)[4][4], bool zero) {
  uint64_t dq = smem_desc(sQ, 16, 1024), dk = smem_desc(stage, 16, 1024);
  // Opaque to ptxas, so it does not hoist every step's descriptor out of the pair loop into registers.
  asm volatile("mov.b64 %0, %0;\n" : "+l"(dq));
  asm volatile("mov.b64 %0, %0;\n" : "+l"(dk));
#pragma unroll
  for (int c = C0; c < C1; ++c) {
    mbar_wait_spin(bar0 + 8 * c, parity);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      const uint32_t step = (c * kLatBlk + kk * 32) >> 4;
      const int accumulate = (zero && c == C0 && kk == 0) ? 0 : 1;
      if (c < 8)
        wgmma_ss_m64n64k16<0, 0>(s, dq + step, dk + step, accumulate);
      else
        wgmma_rs_m64n64k16_kb(s, rq8[kk], dk + step, accumulate);
    }
  }
}

// O (64 x 256: o0 columns 0..127, o1 128..255 of this warpgroup's half) += P V with P from registers (A
// fragments, 16 keys a step) or from a swizzled (64 heads, 64 keys) tile in shared memory; v = the half's first
// column block in the stage.
__device__ __forceinline__ void seesaw_pv_rs(float (&o0)[64], float (&o1)[64], const uint32_t (&pa)[4][4], uint32_t v) {
  const uint64_t dv = smem_desc(v, kLatBlk, 1024);
#pragma unroll
  for (int kk = 0; kk < 4; ++kk) wgmma_rs_m64n256k16_tb(o0, o1, pa[kk], desc_advance(dv, kk * 16 * 128));
}
__device__ __forceinline__ void seesaw_pv_ss(float (&o0)[64], float (&o1)[64], uint32_t sp, uint32_t v) {
  const uint64_t dp = smem_desc(sp, 16, 1024), dv = smem_desc(v, kLatBlk, 1024);
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    wgmma_ss_m64n256k16_tb(o0, o1, desc_advance(dp, kk * 32), desc_advance(dv, kk * 16 * 128));
}

// P (bf16 A fragments) -> a swizzled (64 heads, 64 keys) tile: row = head, 16-byte chunk n (keys 8 n..) at
// n ^ (row % 8). One stmatrix per 16 keys: matrix j of k step kk is rows 8 (j % 2).. of the warp's 16, chunk
// 2 kk + j / 2, as pa[kk][j] holds them.
__device__ __forceinline__ void seesaw_store_p(uint32_t sp, const uint32_t (&pa)[4][4], int warp, int lane) {
  const int j = lane >> 3, row = warp * 16 + 8 * (j & 1) + (lane & 7);
#pragma unroll
  for (int kk = 0; kk < 4; ++kk)
    stmatrix_x4(sp + row * 128 + (((2 * kk + (j >> 1)) ^ (lane & 7)) << 4), pa[kk]);
}

// O *= f per row (f[0]: head r0, f[1]: r0 + 8), skipped when no row of the warp changed its maximum (after the
// first tiles, most of the time).
__device__ __forceinline__ void seesaw_scale_o(float (&o0)[64], float (&o1)[64], const float (&f)[2]) {
  if (__any_sync(0xffffffffu, f[0] != 1.f || f[1] != 1.f)) {
#pragma unroll
    for (int x = 0; x < 64; ++x) {
      o0[x] *= f[(x & 3) >> 1];
      o1[x] *= f[(x & 3) >> 1];
    }
  }
}

// Pass 1 over grid (ceil(H / 64), B, splits), the schedule in the file's header.
__global__ void __launch_bounds__(kLatThreads, 1)
    decode_latent_sm90_kernel(const DecodeParams p, const __grid_constant__ LatentMaps maps) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t sQ = (raw + 1023) & ~1023u;          // 9 blocks of (64 heads, 64 columns)
  const uint32_t sK = sQ + kLatBlocks * kLatBlk;      // stage s, block c at sK + s * kLatTileBytes + c * kLatBlk
  const uint32_t sP0 = sK + 2 * kLatTileBytes;        // P of tile a (64 heads, 64 keys), swizzled
  const uint32_t sP1 = sQ + 8 * kLatBlk;              // P of tile b: the query's rope block once in registers
  const uint32_t sRowA = sP0 + kLatBlk;
  const uint32_t q_full = sRowA + 320 * 4, kfull0 = q_full + 8;  // block c of stage s: kfull0 + 8 (9 s + c)
  float* sM = reinterpret_cast<float*>(smem_raw + (sRowA - raw));  // running maximum (log2 units) per head
  float *sScale0 = sM + 64, *sScale1 = sM + 128, *sL = sM + 192;
  constexpr int kBarA = 1, kBarB = 2, kBarP0Free = 3;  // named barriers of the two warpgroups

  const int tid = threadIdx.x, wg = tid >> 7, wtid = tid & 127, warp = wtid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3, r0 = warp * 16 + g;  // this thread's heads in the tile: r0, r0 + 8
  const int h0 = blockIdx.x * kLatHeads, b = blockIdx.y, split = blockIdx.z;
  const SplitTiles tiles = split_tiles(p, split, kLatKeys);
  const int n = tiles.n;
  // Column blocks [c0, c1) of tile i into its stage, by one thread.
  auto load_blocks = [&](int i, int c0, int c1) {
    const int s = i & 1, key = tiles.first + i * tiles.step;
    for (int c = c0; c < c1; ++c) {
      const uint32_t bar = kfull0 + 8 * (9 * s + c), dst = sK + s * kLatTileBytes + c * kLatBlk;
      mbar_arrive_expect_tx(bar, kLatBlk);
      if (c < 8) tma_load_4d_once(dst, &maps.c, c * 64, 0, key, b, bar, p.cache_evict_first);
      else tma_load_4d_once(dst, &maps.kr, 0, 0, key, b, bar, p.cache_evict_first);
    }
  };

  if (tid == 0) {
    mbar_init(q_full, 1);
    for (int i = 0; i < 18; ++i) mbar_init(kfull0 + 8 * i, 1);
    mbar_init_fence();
  }
  __syncthreads();
  // A programmatic dependent of the stream's previous kernel (launch_decode_latent_sm90): the block's start and
  // barrier set-up overlap that kernel's tail; the query and cache may be its output and the partials its input
  // (the previous step's combine), so every thread waits for it to finish before any load or store.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
  if (tid == 0) {
    mbar_arrive_expect_tx(q_full, kLatBlocks * kLatBlk);
    for (int c = 0; c < 8; ++c) tma_load_4d(sQ + c * kLatBlk, &maps.q_abs, c * 64, 0, h0, b, q_full);
    tma_load_4d(sQ + 8 * kLatBlk, &maps.q_rope, 0, 0, h0, b, q_full);
    load_blocks(0, 0, 9);
    if (n > 1) load_blocks(1, 8, 9), load_blocks(1, 0, 8);  // warpgroup 1 starts at the rope block
  }
  // The rope block of the query as A fragments (4 steps of 16 columns).
  mbar_wait(q_full, 0);
  uint32_t rq8[4][4];
  {
    const int row = warp * 16 + (lane & 15);
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
      ldmatrix_x4(rq8[kk], sQ + 8 * kLatBlk + row * 128 + (((2 * kk + (lane >> 4)) ^ (row & 7)) << 4));
  }

  float o0[64], o1[64], s[32], lsum[2] = {0.f, 0.f};
  uint32_t pa[4][4];
#pragma unroll
  for (int x = 0; x < 64; ++x) o0[x] = 0.f, o1[x] = 0.f;
  const uint32_t stage0 = sK, stage1 = sK + kLatTileBytes, bars0 = kfull0, bars1 = kfull0 + 72;
  const uint32_t vhalf = wg * 4 * kLatBlk;  // this warpgroup's value columns in a stage
  // P = exp2(S scale - m) of a tile against the running maximum m_old (keys past the cache masked); returns the
  // new maximum and alpha = 2^(m_old - m_new); P -> pa (bf16 A fragments), s keeps P in fp32.
  auto softmax = [&](int i, const float (&m_old)[2], float (&m_new)[2], float (&alpha)[2], float (&rs)[2]) {
    const int s0 = tiles.first + i * tiles.step;
    const bool partial = s0 + kLatKeys > p.S;
    float mx[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int x = 0; x < 32; ++x) {
      if (partial && s0 + 8 * (x >> 2) + 2 * tq + (x & 1) >= p.S) s[x] = -INFINITY;
      mx[(x & 3) >> 1] = fmaxf(mx[(x & 3) >> 1], s[x]);
    }
    float m_use[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = quad_max(mx[h]);
      // The running maximum moves only when a score exceeds it by more than kLazyRescale (log2 units): P then
      // stays below 2^kLazyRescale, and O and l are rescaled on few tiles instead of most (FlashAttention-4).
      const float m_max = fmaxf(m_old[h], mx[h] * p.scale_log2);
      m_new[h] = m_max - m_old[h] > kLazyRescale ? m_max : m_old[h];
      m_use[h] = m_new[h] == -INFINITY ? 0.f : m_new[h];
      alpha[h] = fast_exp2(m_old[h] - m_use[h]);
      rs[h] = 0.f;
    }
#pragma unroll
    for (int x = 0; x < 32; x += 2) {
      const int h = (x & 3) >> 1;
      s[x] = fast_exp2(fmaf(s[x], p.scale_log2, -m_use[h]));
      s[x + 1] = fast_exp2(fmaf(s[x + 1], p.scale_log2, -m_use[h]));
      rs[h] += s[x] + s[x + 1];
      pa[x >> 3][(x & 7) >> 1] = pack_bf16(s[x], s[x + 1]);
    }
  };

  // S of this warpgroup's next tile (in `stage`): its rope block (refilled first), then, once the P V product
  // issued before it has completed, `refill` (this warpgroup's blocks of the other stage), then blocks 0..7 in
  // the order they were refilled. The caller fenced the registers and waits for S.
  auto next_s = [&](uint32_t stage, uint32_t bars, uint32_t parity, auto&& refill) {
    seesaw_s<8, 9>(s, sQ, stage, bars, parity, rq8, true);
    wgmma_commit();
    wgmma_wait<1>();
    pin(o0);
    pin(o1);
    refill();
    seesaw_s<0, 8>(s, sQ, stage, bars, parity, rq8, false);
    wgmma_commit();
  };
  // The pairs: all but the last one or two have both tiles and a next pair (<1, 1, 1>); the compile-time flags
  // keep every wgmma outside data-dependent branches (ptxas serializes wgmma issued in a divergent path).
  auto pairs = [&](auto&& body) {
    int a = 0;
    for (; a + 3 < n; a += 2) body.template operator()<true, true, true>(a);
    if (a + 2 < n) body.template operator()<true, true, false>(a), a += 2;
    if (a + 1 < n) body.template operator()<true, false, false>(a);
    else body.template operator()<false, false, false>(a);
  };
  if (wg == 0) {
    if (tq == 0) sM[r0] = sM[r0 + 8] = -INFINITY;
    __syncwarp();
    wgmma_fence();
    seesaw_s<0, 9>(s, sQ, stage0, bars0, 0, rq8, true);
    wgmma_commit();
    wgmma_wait<0>();
    pin(s);
    pairs([&]<bool HAS_B, bool MORE, bool MORE_B>(int a) {
      const uint32_t par2 = ((a + 2) >> 1) & 1;
      if (MORE && wtid == 0) load_blocks(a + 2, 8, 9);  // stage 0's rope block was read by S_a alone
      if (a > 0) named_bar_sync(kBarP0Free, kLatThreads);  // warpgroup 1's read of the last sP0 is done
      {
        const float m_old[2] = {sM[r0], sM[r0 + 8]};
        float m_new[2], alpha[2], rs[2];
        softmax(a, m_old, m_new, alpha, rs);
        __syncwarp();
        if (tq == 0) sM[r0] = m_new[0], sM[r0 + 8] = m_new[1], sScale0[r0] = alpha[0], sScale0[r0 + 8] = alpha[1];
        seesaw_store_p(sP0, pa, warp, lane);
        fence_proxy_async();
        named_bar_arrive(kBarA, kLatThreads);
        seesaw_scale_o(o0, o1, alpha);
        lsum[0] = lsum[0] * alpha[0] + rs[0], lsum[1] = lsum[1] * alpha[1] + rs[1];
      }
      wgmma_fence();
      seesaw_pv_rs(o0, o1, pa, stage0 + vhalf);
      wgmma_commit();
      wgmma_wait<0>();
      pin(o0);
      pin(o1);
      if (MORE && wtid == 0) load_blocks(a + 2, 0, 4);  // V_a,L read
      named_bar_sync(kBarB, kLatThreads);  // warpgroup 1's softmax of tile b: sScale1, sP1
      const float f[2] = {sScale1[r0], sScale1[r0 + 8]};
      seesaw_scale_o(o0, o1, f);
      lsum[0] *= f[0], lsum[1] *= f[1];
      if constexpr (HAS_B) {
        wgmma_fence();
        seesaw_pv_ss(o0, o1, sP1, stage1 + vhalf);
        wgmma_commit();
      }
      if constexpr (MORE)  // (O_L += P_b V_b,L done: blocks 0..3 of stage 1 are free)
        next_s(stage0, bars0, par2, [&] { if (MORE_B && wtid == 0) load_blocks(a + 3, 0, 4); });
      wgmma_wait<0>();
      pin(o0);
      pin(o1);
      pin(s);
    });
  } else {
    if (n > 1) {  // S of tile 1, its rope block first (loaded first)
      wgmma_fence();
      seesaw_s<8, 9>(s, sQ, stage1, bars1, 0, rq8, true);
      seesaw_s<0, 8>(s, sQ, stage1, bars1, 0, rq8, false);
      wgmma_commit();
      wgmma_wait<0>();
      pin(s);
    } else {
#pragma unroll
      for (int x = 0; x < 32; ++x) s[x] = -INFINITY;  // no tile b: P_b = 0, the maximum stays a's
    }
    pairs([&]<bool HAS_B, bool MORE, bool MORE_B>(int a) {
      const uint32_t parb = ((a + 3) >> 1) & 1;
      if (MORE_B && wtid == 0) load_blocks(a + 3, 8, 9);  // stage 1's rope block was read by S_b alone
      named_bar_sync(kBarA, kLatThreads);  // warpgroup 0's softmax of tile a: sM = m_a, sScale0, sP0
      {
        const float f0[2] = {sScale0[r0], sScale0[r0 + 8]};
        seesaw_scale_o(o0, o1, f0);
        lsum[0] *= f0[0], lsum[1] *= f0[1];
      }
      wgmma_fence();
      seesaw_pv_ss(o0, o1, sP0, stage0 + vhalf);  // O_R += P_a V_a,R at a's maximum, during the softmax below
      wgmma_commit();
      float alpha[2];
      {
        const float m_old[2] = {sM[r0], sM[r0 + 8]};
        float m_new[2], rs[2];
        softmax(a + 1, m_old, m_new, alpha, rs);
        __syncwarp();
        if (tq == 0) sM[r0] = m_new[0], sM[r0 + 8] = m_new[1], sScale1[r0] = alpha[0], sScale1[r0 + 8] = alpha[1];
        if constexpr (HAS_B) {
          seesaw_store_p(sP1, pa, warp, lane);
          fence_proxy_async();
        }
        named_bar_arrive(kBarB, kLatThreads);
        lsum[0] = lsum[0] * alpha[0] + rs[0], lsum[1] = lsum[1] * alpha[1] + rs[1];
      }
      wgmma_wait<0>();  // O_R += P_a V_a,R done: blocks 4..7 of stage 0 and sP0 are free
      pin(o0);
      pin(o1);
      if constexpr (MORE) {
        if (wtid == 0) load_blocks(a + 2, 4, 8);
        named_bar_arrive(kBarP0Free, kLatThreads);
      }
      seesaw_scale_o(o0, o1, alpha);
      if constexpr (HAS_B) {
        wgmma_fence();
        seesaw_pv_rs(o0, o1, pa, stage1 + vhalf);
        wgmma_commit();
      }
      if constexpr (MORE_B) {  // S of tile a + 3 (O_R += P_b V_b,R done: blocks 4..7 of stage 1 are free)
        next_s(stage1, bars1, parb, [&] { if (wtid == 0) load_blocks(a + 3, 4, 8); });
        wgmma_wait<0>();
        pin(o0);
        pin(o1);
        pin(s);
      } else {
        wgmma_wait<0>();
        pin(o0);
        pin(o1);
#pragma unroll
        for (int x = 0; x < 32; ++x) s[x] = -INFINITY;
      }
    });
  }

  // Both halves are at the final maximum (warpgroup 1 wrote it last); the row sums are the two halves' sums.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    lsum[h] = quad_sum(lsum[h]);
    if (tq == 0) sL[wg * 64 + r0 + 8 * h] = lsum[h];
  }
  __syncthreads();
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = r0 + 8 * h, head = h0 + row;
    if (head >= p.H) continue;
    const int64_t at = (int64_t(split) * p.B + b) * p.H + head;
    float* po = p.part_o + at * kLatDc + wg * 256 + 2 * tq;
#pragma unroll
    for (int nn = 0; nn < 16; ++nn) {
      *reinterpret_cast<float2*>(po + 8 * nn) = make_float2(o0[4 * nn + 2 * h], o0[4 * nn + 2 * h + 1]);
      *reinterpret_cast<float2*>(po + 128 + 8 * nn) = make_float2(o1[4 * nn + 2 * h], o1[4 * nn + 2 * h + 1]);
    }
    if (wg == 0 && tq == 0) *reinterpret_cast<float2*>(p.part_ml + at * 2) = make_float2(sM[row], sL[row] + sL[64 + row]);
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
  // The dispatch has TMA instantiations for Dc 512, 256 and 192 with Dr 64 (query in registers) and for Dc 96 with
  // Dr 32 (32-column blocks).
  const bool dims = ((p.D1 == 512 || p.D1 == 256 || p.D1 == 192) && p.D2 == 64) || (p.D1 == 96 && p.D2 == 32);
  if (!p.v_is_k1 || !dims) return false;
  if (!device_has_sm90_kernels() || !tma_available()) return false;
  for (const void* ptr : {static_cast<const void*>(p.k1), static_cast<const void*>(p.k2)})
    if (reinterpret_cast<uintptr_t>(ptr) % 16) return false;
  for (int64_t st : {p.k1_sb, p.k1_ss, p.k2_sb, p.k2_ss})
    if (st % 8) return false;
  return true;
}

DecodeTileMaps latent_tile_maps(const DecodeParams& p) {
  const int cols = p.D1 % 64 == 0 && p.D2 % 64 == 0 ? 64 : 32;  // the split kernel's TMA_COLS for these rows
  return {tma_map_bf16(p.k1, p.D1, 1, p.S, p.B, 0, p.k1_ss, p.k1_sb, kLatKeys, cols),
          tma_map_bf16(p.k2, p.D2, 1, p.S, p.B, 0, p.k2_ss, p.k2_sb, kLatKeys, cols)};
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

void launch_decode_latent_sm90(const DecodeParams& p, cudaStream_t stream, bool dependent) {
  allow_dynamic_smem(decode_latent_sm90_kernel, kLatSmem);
  // (d, 1, rows, batch) views: query rows are heads, cache rows are positions.
  LatentMaps maps;
  maps.q_abs = tma_map_bf16(p.q1, kLatDc, 1, p.H, p.B, 0, p.q1_sh, p.q1_sb, kLatHeads);
  maps.q_rope = tma_map_bf16(p.q2, kLatDr, 1, p.H, p.B, 0, p.q2_sh, p.q2_sb, kLatHeads);
  maps.c = tma_map_bf16(p.k1, kLatDc, 1, p.S, p.B, 0, p.k1_ss, p.k1_sb, kLatKeys);
  maps.kr = tma_map_bf16(p.k2, kLatDr, 1, p.S, p.B, 0, p.k2_ss, p.k2_sb, kLatKeys);
  const dim3 grid((p.H + kLatHeads - 1) / kLatHeads, p.B, p.splits);
  const DependentLaunch launch(grid, dim3(kLatThreads), kLatSmem, stream, dependent);
  CUDA_CHECK(cudaLaunchKernelEx(&launch.config, decode_latent_sm90_kernel, p, maps));
  CUDA_CHECK_LAUNCH("decode_latent_sm90_kernel");
}

}  // namespace latte::cuda
