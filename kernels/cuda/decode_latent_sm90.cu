// Latent decode, split pass, for Hopper (sm_90a): the absorbed MLA rows (Dc = 512, Dr = 64) with 64 heads per
// block on warpgroup tensor-core instructions (wgmma), for models with many heads (DeepSeek's 128).
//   q_abs (B, H, 512), q_rope (B, H, 64), c (B, S, 512), kr (B, S, 64) -> per split: unnormalised O (64 heads x
//   512), m (log2 units), l -> decode_attention.cu's combine pass.
// Why: the mma.sync split kernel takes 16 heads per block, so 128 heads read every cache tile through 8 blocks and
// run the tile's 2 x 16 x 64 x (576 + 512) FLOPs on 16-row tiles with every operand through registers: 0.13 of the
// copy bandwidth (docs/attention_kernels.md). A cache row serves all heads: at 128 heads a step is 9.1 GFLOP per
// 37.7 MB (B = 1, 32k), compute-heavy enough that the tensor-core rate decides it.
// Block: warpgroup 0 = producer (one thread issues the TMA loads: the query's 512 latent columns once, then 64-key
// tiles of [c | kr], 72 KB, two stages, each 64-column block on its own barrier so S starts on the first blocks
// while the rest land); warpgroups 1 and 2 = consumers, each owning half of O's value columns (O_0: 0..255,
// O_1: 256..511). The key tiles go in pairs (a in stage 0, b in stage 1), both consumers busy on the tensor cores
// at once:
//   consumer 0: S_a = Q K_a^T; m_a, P_a; O_0 += P_a V_a (RS)  |  consumer 1: S_b = Q K_b^T (concurrently)
//               (waits for m_b) P_a rescaled -> sP0;            |  (waits for m_a) m_b, P_b -> sP1; O_1 += P_b V_b (RS)
//               O_0 += P_b V_b (SS, sP1); S of the next a       |  O_1 += P_a V_a (SS, sP0); S of the next b
// so each consumer runs one S and two half P V per pair, and one's softmax overlaps the other's products. The
// query's rope part (64 columns) lives in registers (S's last 4 k-steps are RS), which halves their shared-memory
// reads and leaves its 8 KB for sP1. A stage is released in halves, as soon as its last reader is done: blocks
// 0..3 (V for O_0) by consumer 0, blocks 4..8 by consumer 1. (Sessions 9-12 ran one S per tile on consumer 0 and
// half the P V on consumer 1: 0.56 of the copy bandwidth at B = 4, H = 128, ~445 TFLOP/s in pass 1; this is the
// pairing of DeepSeek's FlashMLA write-up, v31 in docs/attention_kernels.md.)
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
constexpr int kLatQBlocks = kLatDc / 64;                             // the query's blocks in shared memory: 8
constexpr int kLatBlockBytes = kLatKeys * 128;                       // one (64 rows, 64 columns) block: 8 KB
constexpr int kLatTileBytes = kLatBlocks * kLatBlockBytes;           // one [c | kr] tile: 72 KB
constexpr int kLatLoBlocks = 4;                                      // blocks 0..3: V of O_0, released apart
constexpr int kLatThreads = 384;

// sQ, sP0, sP1, 2 stages of K, per head m / scale0 / scale1 / consumer 1's sum (4 x 64 floats), mbarriers
// (q_full, full[2][9], empty[2][2]), alignment slack.
constexpr int kLatBars = 1 + 2 * kLatBlocks + 4;
constexpr int kLatSmem =
    (kLatQBlocks + 2) * kLatBlockBytes + 2 * kLatTileBytes + 4 * 64 * 4 + kLatBars * 8 + 1024;
static_assert(kLatSmem <= 227 * 1024, "shared memory of one block");

struct LatentMaps {
  CUtensorMap q_abs, c, kr;
};

__global__ void __launch_bounds__(kLatThreads, 1)
    decode_latent_sm90_kernel(const DecodeParams p, const __grid_constant__ LatentMaps maps) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;
  const uint32_t sQ = base;                                // 8 blocks of (64 heads, 64 columns)
  const uint32_t sP0 = sQ + kLatQBlocks * kLatBlockBytes;  // P_a (64 heads, 64 keys) bf16, swizzled rows
  const uint32_t sP1 = sP0 + kLatBlockBytes;               // P_b
  const uint32_t sK = sP1 + kLatBlockBytes;                // stage s at sK + s * kLatTileBytes: 9 blocks of 64 keys
  const uint32_t sRowA = sK + 2 * kLatTileBytes;
  const uint32_t q_full = sRowA + 4 * 64 * 4;
  const uint32_t full0 = q_full + 8;                       // full[s][c] at full0 + 8 (9 s + c): block c landed
  const uint32_t empty0 = full0 + 8 * 2 * kLatBlocks;      // empty[s][h] at empty0 + 8 (2 s + h): h = 0 blocks 0..3
  float* sRow = reinterpret_cast<float*>(smem_raw + (sRowA - raw));
  // Per head (row of the tile): the running maximum (log2 units), this pair's rescale factors, consumer 1's sum.
  float *sMax = sRow, *sScale0 = sRow + 64, *sScale1 = sRow + 128, *sSum1 = sRow + 192;

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wg = warp >> 2, g = lane >> 2, tq = lane & 3;
  const int h0 = blockIdx.x * kLatHeads, b = blockIdx.y, split = blockIdx.z;
  const SplitTiles tiles = split_tiles(p, split, kLatKeys);
  const int pairs = (tiles.n + 1) / 2;  // pair i: tile a = 2 i (stage 0), tile b = 2 i + 1 (stage 1, if any)

  if (tid == 0) {
    mbar_init(q_full, 1);
    for (int i = 0; i < 2 * kLatBlocks; ++i) mbar_init(full0 + 8 * i, 1);
    for (int i = 0; i < 4; ++i) mbar_init(empty0 + 8 * i, 4);  // the releasing consumer's 4 warps
    mbar_init_fence();
  }
  __syncthreads();

  if (wg == 0) {
    setmaxnreg_dec<24>();
    if (warp == 0 && lane == 0) {
      mbar_arrive_expect_tx(q_full, kLatQBlocks * kLatBlockBytes);
      for (int c = 0; c < kLatQBlocks; ++c) tma_load_4d(sQ + c * kLatBlockBytes, &maps.q_abs, c * 64, 0, h0, b, q_full);
      // Half h of tile t into stage s, once pair i - 1's readers have released it.
      auto load = [&](int t, int s, int h, int i) {
        if (t >= tiles.n) return;
        if (i > 0) mbar_wait(empty0 + 8 * (2 * s + h), (i - 1) & 1);
        const int s0 = tiles.first + t * tiles.step;
        for (int c = h ? kLatLoBlocks : 0; c < (h ? kLatBlocks : kLatLoBlocks); ++c) {
          const uint32_t full = full0 + 8 * (kLatBlocks * s + c), dst = sK + s * kLatTileBytes + c * kLatBlockBytes;
          mbar_arrive_expect_tx(full, kLatBlockBytes);
          if (c < kLatQBlocks) tma_load_4d(dst, &maps.c, c * 64, 0, s0, b, full);
          else tma_load_4d(dst, &maps.kr, 0, 0, s0, b, full);
        }
      };
      // In the order the consumers release them: a's blocks 0..3 (consumer 0, after its RS P V), b's 4..8 and a's
      // 4..8 (consumer 1, after its two P V), b's 0..3 (consumer 0, after its SS P V).
      for (int i = 0; i < pairs; ++i) {
        load(2 * i, 0, 0, i);
        load(2 * i + 1, 1, 1, i);
        load(2 * i, 0, 1, i);
        load(2 * i + 1, 1, 0, i);
      }
    }
    return;
  }
  setmaxnreg_inc<240>();
  const int cw = wg - 1;                           // consumer: value columns 256 cw.. of O
  const int r0 = (warp & 3) * 16 + g;              // this thread's heads in the tile: r0, r0 + 8
  float o0[64], o1[64];                            // O columns 256 cw + [0, 128) and + [128, 256)
#pragma unroll
  for (int x = 0; x < 64; ++x) o0[x] = 0.f, o1[x] = 0.f;
  float rl[2] = {0.f, 0.f};  // this thread's part of its two heads' running sums (its keys; quad-summed at the end)
  float st[32];       // S / P of one tile: st[4 n + c] is head r0 + 8 (c >> 1), key 8 n + 2 tq + (c & 1)
  uint32_t pa[4][4];  // P as bf16 A fragments, 16 keys per k step
  // The query's rope columns as A fragments (k step kk: columns 16 kk + [0, 16)); heads past H read as zeros.
  uint32_t qr[4][4];
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int head = h0 + r0 + 8 * h;
    const bf16* q = p.q2 + int64_t(b) * p.q2_sb + int64_t(head) * p.q2_sh + 2 * tq;
#pragma unroll
    for (int kk = 0; kk < 4; ++kk)
#pragma unroll
      for (int half = 0; half < 2; ++half)
        qr[kk][2 * half + h] = head < p.H ? *reinterpret_cast<const uint32_t*>(q + 16 * kk + 8 * half) : 0u;
  }
  constexpr int kBarScale0 = 1, kBarScale1 = 2, kBarP0 = 3, kBarP1 = 4, kBarSum = 5;  // named barriers, 256 threads

  // S (64 heads x 64 keys) = Q K^T of the tile in stage s, block by block as the loads land, from block c0 on
  // (consumer 1 starts at 4: tile b's blocks 4..8 are loaded first). Blocks 0..7: both operands from shared memory;
  // the rope block: the query from registers. The descriptors as the first one's plus the step's offset (its
  // address field counts 16-byte units and no tile crosses it); the opaque move keeps ptxas from hoisting all 32
  // out of the pair loop (each consumer reads one stage: all 72 would be loop-invariant and spill).
  auto issue_s = [&](int s, uint32_t parity, int c0) {
    uint64_t dq = smem_desc(sQ, 16, 1024), dk = smem_desc(sK + s * kLatTileBytes, 16, 1024);
    asm volatile("mov.b64 %0, %0;\n" : "+l"(dq));
    asm volatile("mov.b64 %0, %0;\n" : "+l"(dk));
#pragma unroll
    for (int j = 0; j < kLatBlocks; ++j) {
      const int c = (c0 + j) % kLatBlocks;
      mbar_wait(full0 + 8 * (kLatBlocks * s + c), parity);
      wgmma_fence();  // after each wait: without it ptxas injected warpgroup arrives there and serialized the wgmma
#pragma unroll
      for (int kk = 0; kk < 4; ++kk) {
        const uint32_t step = (c * kLatBlockBytes + kk * 32) >> 4;
        if (c < kLatQBlocks) wgmma_ss_m64n64k16<0, 0>(st, dq + step, dk + step, j + kk > 0);
        else wgmma_rs_m64n64k16_kb(st, qr[kk], dk + step);
      }
    }
    wgmma_commit();
  };
  // Row maxima of tile t's raw scores over the quad, keys past the split's end masked first (only on a split's
  // last, partial tile; the scale is folded into the exponent: maxima of the raw scores, scale > 0).
  auto row_max = [&](int t, float (&mx)[2]) {
    const int s0 = tiles.first + t * tiles.step;
    const bool partial = s0 + kLatKeys > tiles.end;
    mx[0] = mx[1] = -INFINITY;
#pragma unroll
    for (int x = 0; x < 32; ++x) {
      if (partial && s0 + 8 * (x >> 2) + 2 * tq + (x & 1) >= tiles.end) st[x] = -INFINITY;
      mx[(x & 3) >> 1] = fmaxf(mx[(x & 3) >> 1], st[x]);
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
      mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
    }
  };
  // P = exp2(S scale log2e - m) in place (fp32), its bf16 A fragments in pa, and its row sums added to rl.
  auto exponentiate = [&](const float (&m_use)[2]) {
#pragma unroll
    for (int x = 0; x < 32; x += 2) {
      const int h = (x & 3) >> 1;
      st[x] = fast_exp2(fmaf(st[x], p.scale_log2, -m_use[h]));
      st[x + 1] = fast_exp2(fmaf(st[x + 1], p.scale_log2, -m_use[h]));
      rl[h] += st[x] + st[x + 1];
      pa[x >> 3][(x & 7) >> 1] = pack_bf16(st[x], st[x + 1]);
    }
  };
  // O rescaled only when a maximum of the warp's rows moved (factor 1 otherwise: after the first tiles, most).
  auto rescale_o = [&](const float (&f)[2]) {
    if (__any_sync(0xffffffffu, f[0] != 1.f || f[1] != 1.f)) {
#pragma unroll
      for (int x = 0; x < 64; ++x) {
        o0[x] *= f[(x & 3) >> 1];
        o1[x] *= f[(x & 3) >> 1];
      }
    }
  };
  // pa -> sP: row = head, 128 bytes = 64 keys, 16-byte chunks XORed by row % 8; chunk n holds keys 8 n ...; then
  // visible to the other consumer's wgmma after its barrier.
  auto store_p = [&](uint32_t sP) {
#pragma unroll
    for (int n = 0; n < 8; ++n)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const int row = r0 + 8 * h;
        const uint32_t addr = sP + row * 128 + ((n ^ (row & 7)) << 4) + tq * 4;
        asm volatile("st.shared.u32 [%0], %1;\n" ::"r"(addr), "r"(pa[n >> 1][2 * (n & 1) + h]) : "memory");
      }
    fence_proxy_async();
  };
  // O += P V over this consumer's 256 value columns of the tile in stage s (B = the tile's c columns, MN-major):
  // P from registers (pa) or from shared memory (the other consumer's sP).
  auto pv_rs = [&](int s) {
    const uint32_t v = sK + s * kLatTileBytes + cw * kLatLoBlocks * kLatBlockBytes;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kLatKeys / 16; ++kk) {
      const uint32_t vrow = v + kk * 16 * 128;
      wgmma_rs_m64n128k16_tb(o0, pa[kk], smem_desc(vrow, kLatBlockBytes, 1024));
      wgmma_rs_m64n128k16_tb(o1, pa[kk], smem_desc(vrow + 2 * kLatBlockBytes, kLatBlockBytes, 1024));
    }
    wgmma_commit();
  };
  auto pv_ss = [&](uint32_t sP, int s) {
    const uint32_t v = sK + s * kLatTileBytes + cw * kLatLoBlocks * kLatBlockBytes;
    wgmma_fence();
#pragma unroll
    for (int kk = 0; kk < kLatKeys / 16; ++kk) {
      const uint64_t da = smem_desc(sP + kk * 32, 16, 1024);
      const uint32_t vrow = v + kk * 16 * 128;
      wgmma_ss_m64n128k16<0, 1>(o0, da, smem_desc(vrow, kLatBlockBytes, 1024), 1);
      wgmma_ss_m64n128k16<0, 1>(o1, da, smem_desc(vrow + 2 * kLatBlockBytes, kLatBlockBytes, 1024), 1);
    }
    wgmma_commit();
  };
  const auto release = [&](int s, int h) {  // this warp is done with half h of stage s
    if (lane == 0) mbar_arrive(empty0 + 8 * (2 * s + h));
  };

  // n_tiles >= 1 here (S >= 1 and no more splits than key tiles); tile a's first key is always inside the cache,
  // so every pair's m_a is finite.
  if (cw == 0) {
    if (tq == 0) sMax[r0] = sMax[r0 + 8] = -INFINITY;
    __syncwarp();
    mbar_wait(q_full, 0);
    issue_s(0, 0, 0);
    wgmma_wait<0>();
    pin(st);
    // Pair i; kHasB: tile b exists, kMore: another pair follows. (The last pair is peeled off so that every wgmma
    // issue and wait sits on a path ptxas can follow: with run-time conditions it serialized them, advisory C7520.)
    auto pair = [&]<bool kHasB, bool kMore>(int i) {
      // Tile a: m_a = max(m, its maxima); O, the sums and (through sScale0) consumer 1's O rescaled.
      float mx[2], m_new[2], m_use[2], scale0[2];
      row_max(2 * i, mx);
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float m_old = sMax[r0 + 8 * h];
        m_new[h] = fmaxf(m_old, mx[h] * p.scale_log2);
        m_use[h] = m_new[h] == -INFINITY ? 0.f : m_new[h];
        scale0[h] = fast_exp2(m_old - m_use[h]);  // 0 while the running maximum is -inf
        rl[h] *= scale0[h];
      }
      __syncwarp();  // the quad has read the running maximum
      if (tq == 0) sMax[r0] = m_new[0], sMax[r0 + 8] = m_new[1], sScale0[r0] = scale0[0], sScale0[r0 + 8] = scale0[1];
      named_bar_arrive(kBarScale0, 256);
      exponentiate(m_use);
      rescale_o(scale0);
      pv_rs(0);  // O_0 += P_a V_a
      wgmma_wait<0>();
      pin(o0);
      pin(o1);
      release(0, 0);
      // m_b (consumer 1): P_a rescaled to it for consumer 1's O_1 += P_a V_a; O_0 and the sums rescaled.
      named_bar_sync(kBarScale1, 256);
      const float scale1[2] = {sScale1[r0], sScale1[r0 + 8]};
      if (__any_sync(0xffffffffu, scale1[0] != 1.f || scale1[1] != 1.f)) {
#pragma unroll
        for (int x = 0; x < 32; x += 2) {
          const float f = scale1[(x & 3) >> 1];
          pa[x >> 3][(x & 7) >> 1] = pack_bf16(st[x] * f, st[x + 1] * f);
        }
      }
      store_p(sP0);
      named_bar_arrive(kBarP0, 256);
      rescale_o(scale1);
      rl[0] *= scale1[0];
      rl[1] *= scale1[1];
      if constexpr (kHasB) {
        named_bar_sync(kBarP1, 256);
        pv_ss(sP1, 1);  // O_0 += P_b V_b
      }
      if constexpr (kMore) {
        issue_s(0, (i + 1) & 1, 0);  // S of the next tile a runs behind it
        wgmma_wait<1>();
        pin(o0);
        pin(o1);
        release(1, 0);
      }
      wgmma_wait<0>();
      pin(st);
      pin(o0);
      pin(o1);
    };
    int i = 0;
    for (; i + 1 < pairs; ++i) pair.template operator()<true, true>(i);
    if (2 * i + 1 < tiles.n) pair.template operator()<true, false>(i);
    else pair.template operator()<false, false>(i);
    // This split's partials: O columns 0..255, m, l (both consumers' sums).
    named_bar_sync(kBarSum, 256);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = r0 + 8 * h, head = h0 + row;
      const float l = quad_sum(rl[h]);
      if (head >= p.H) continue;
      const int64_t at = (int64_t(split) * p.B + b) * p.H + head;
      float* po = p.part_o + at * kLatDc + 2 * tq;
#pragma unroll
      for (int n = 0; n < 16; ++n) {
        *reinterpret_cast<float2*>(po + 8 * n) = make_float2(o0[4 * n + 2 * h], o0[4 * n + 2 * h + 1]);
        *reinterpret_cast<float2*>(po + 128 + 8 * n) = make_float2(o1[4 * n + 2 * h], o1[4 * n + 2 * h + 1]);
      }
      if (tq == 0) *reinterpret_cast<float2*>(p.part_ml + at * 2) = make_float2(sMax[row], l + sSum1[row]);
    }
  } else {
    mbar_wait(q_full, 0);
    if (tiles.n > 1) {
      issue_s(1, 0, kLatLoBlocks);
      wgmma_wait<0>();
      pin(st);
    }
    // Pair i; kHasB: tile b exists; next_b: the next pair has a tile b (its S is issued here).
    auto pair = [&]<bool kHasB>(int i, bool next_b) {
      // m_b = max(m_a, tile b's maxima): O_1 and the sums rescaled by both of the pair's factors.
      named_bar_sync(kBarScale0, 256);
      const float m_a[2] = {sMax[r0], sMax[r0 + 8]}, scale0[2] = {sScale0[r0], sScale0[r0 + 8]};
      float m_new[2] = {m_a[0], m_a[1]}, m_use[2], scale1[2], f[2];
      if constexpr (kHasB) {
        float mx[2];
        row_max(2 * i + 1, mx);
        m_new[0] = fmaxf(m_a[0], mx[0] * p.scale_log2);
        m_new[1] = fmaxf(m_a[1], mx[1] * p.scale_log2);
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        m_use[h] = m_new[h] == -INFINITY ? 0.f : m_new[h];
        scale1[h] = fast_exp2(m_a[h] - m_use[h]);
        f[h] = scale0[h] * scale1[h];
        rl[h] *= f[h];
      }
      __syncwarp();  // the quad has read m_a
      if (tq == 0) sMax[r0] = m_new[0], sMax[r0 + 8] = m_new[1], sScale1[r0] = scale1[0], sScale1[r0 + 8] = scale1[1];
      named_bar_arrive(kBarScale1, 256);
      rescale_o(f);
      if constexpr (kHasB) {
        exponentiate(m_use);
        store_p(sP1);
        named_bar_arrive(kBarP1, 256);
        pv_rs(1);  // O_1 += P_b V_b
      }
      named_bar_sync(kBarP0, 256);
      pv_ss(sP0, 0);  // O_1 += P_a V_a
      if constexpr (kHasB) {
        wgmma_wait<1>();
        pin(o0);
        pin(o1);
        release(1, 1);
      }
      wgmma_wait<0>();
      pin(o0);
      pin(o1);
      release(0, 1);
      if (next_b) issue_s(1, (i + 1) & 1, kLatLoBlocks);
      wgmma_wait<0>();
      pin(st);
    };
    int i = 0;
    for (; i + 1 < pairs; ++i) pair.template operator()<true>(i, 2 * i + 3 < tiles.n);
    if (2 * i + 1 < tiles.n) pair.template operator()<true>(i, false);
    else pair.template operator()<false>(i, false);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float l = quad_sum(rl[h]);
      if (tq == 0) sSum1[r0 + 8 * h] = l;
    }
    named_bar_arrive(kBarSum, 256);
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int head = h0 + r0 + 8 * h;
      if (head >= p.H) continue;
      float* po = p.part_o + ((int64_t(split) * p.B + b) * p.H + head) * kLatDc + 256 + 2 * tq;
#pragma unroll
      for (int n = 0; n < 16; ++n) {
        *reinterpret_cast<float2*>(po + 8 * n) = make_float2(o0[4 * n + 2 * h], o0[4 * n + 2 * h + 1]);
        *reinterpret_cast<float2*>(po + 128 + 8 * n) = make_float2(o1[4 * n + 2 * h], o1[4 * n + 2 * h + 1]);
      }
    }
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

void launch_decode_latent_sm90(const DecodeParams& p, cudaStream_t stream) {
  static bool configured = false;
  if (!configured) {
    CUDA_CHECK(cudaFuncSetAttribute(decode_latent_sm90_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kLatSmem));
    configured = true;
  }
  // (d, 1, rows, batch) views: query rows are heads, cache rows are positions.
  LatentMaps maps;
  maps.q_abs = tma_map_bf16(p.q1, kLatDc, 1, p.H, p.B, 0, p.q1_sh, p.q1_sb, kLatHeads);
  maps.c = tma_map_bf16(p.k1, kLatDc, 1, p.S, p.B, 0, p.k1_ss, p.k1_sb, kLatKeys);
  maps.kr = tma_map_bf16(p.k2, kLatDr, 1, p.S, p.B, 0, p.k2_ss, p.k2_sb, kLatKeys);
  const dim3 grid((p.H + kLatHeads - 1) / kLatHeads, p.B, p.splits);
  decode_latent_sm90_kernel<<<grid, kLatThreads, kLatSmem, stream>>>(p, maps);
  CUDA_CHECK_LAUNCH("decode_latent_sm90_kernel");
}

}  // namespace latte::cuda
