// Decode attention (one query token per sequence, a long cache), flash-decoding style: split-K over the cache.
//   GQA:    q (B, Hq, Dqk), k (B, S, Hk, Dqk), v (B, S, Hk, Dv)                 -> out (B, Hq, Dv)
//   latent: q_abs (B, H, Dc), q_rope (B, H, Dr), c (B, S, Dc), kr (B, S, Dr)    -> z (B, H, Dc) = softmax(...) @ c
// Both are one kernel: a "key" row is [k1 | k2] (k | -, or c | kr), a query row [q1 | q2], and the value row is
// either its own tensor (GQA) or the first Dv channels of the key row (latent: V = c, read from shared memory
// again instead of from device memory). The rows of a block are the query heads that share the cache row: the
// Hq/Hk heads of a kv group, or all H heads of a latent cache, 16 per tile (tensor-core rows; smaller groups
// pad). Why tensor cores for a memory-bound kernel: a latent cache row serves every head, 2 H (Dc + Dr + Dc)
// FLOPs per (Dc + Dr) * 2 bytes (about 30 FLOP/byte at H = 16), above the CUDA cores' ridge on H100.
// Pass 1, block = (head tile, batch x kv group, split of the cache), 4 or 8 warps, key tiles of 64 (cp.async,
// double-buffered; on sm_90a the latent rows and GQA with Dqk, Dv in {64, 128}: TMA, three stages, see
// decode_split_kernel): S = Q K^T (warp w: keys KPW w .. KPW w + KPW - 1, in registers) -> the warps' row maxima
// meet in shared memory -> each warp writes P = exp2(S - m) of its own keys (bf16, shared memory) and keeps its
// share of the row sums -> every warp O = O 2^(m-m') + P V on its own value columns.
// Writes the unnormalised O, m and l of its split (fp32). Pass 2 combines the splits per (b, head).
// Splits: one wave of resident blocks, each split at least 4 key tiles (run_decode), taken interleaved: split k
// reads tiles k, k + splits, ... (split_tiles in decode_attention_impl.h). The MLA latent rows with more
// than 32 heads run pass 1 on sm_90a as decode_latent_sm90.cu's wgmma kernel instead (64 heads per block).
// Floor: bytes = B S Hk (Dqk + Dv) 2 (GQA) or B S (Dc + Dr) 2 (latent) at the copy bandwidth: at B=4, S=32k,
// Hk=8, D=128 that is 537 MB, 0.18 ms at 3 TB/s; latent Dc=512, Dr=64: 151 MB, 50 us.
#include "kernels/cuda/decode_attention.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/decode_attention_impl.h"
#include "kernels/cuda/flash_attention_impl.cuh"
#include "kernels/cuda/flash_attention_sm90.cuh"

namespace latte::cuda {

namespace {

using flash::bf16;
using namespace flash;  // PTX primitives

constexpr int kDecKT = 64;  // keys per tile
constexpr int kDecPS = kDecKT + 8;  // P row stride (bf16): 144 bytes, conflict-free ldmatrix rows
constexpr int kDecMaxWarps = 8;

// Loads `rows` rows of a "two-part" matrix into shared memory (row stride D1 + D2 + 8): row r is
// [a + r * a_rs (D1) | b + r * b_rs (D2)]; rows >= nvalid are zero-filled. Two schedules, each the one measured
// faster where it is used (docs/attention_kernels.md, v2 and v3): WARP_ROWS = one warp per row with lanes over
// its 16-byte chunks (wide latent rows, 8 warps); else the NT threads stride over all (row, chunk) pairs (narrow
// GQA rows, 4 warps).
template <bool WARP_ROWS>
__device__ __forceinline__ void load_rows2(bf16* s, int rows, const bf16* a, int64_t a_rs, int D1, const bf16* b,
                                           int64_t b_rs, int D2, int nvalid, const bf16* safe, int warp, int lane,
                                           int nwarps) {
  const int width = D1 + D2, stride = width + 8;
  if constexpr (WARP_ROWS) {
    // A lane's chunk columns are fixed: pick the part and its row stride once, then step the pointers by rows.
    for (int col = lane * 8; col < width; col += 256) {
      const bool first = col < D1;
      const int64_t rs = first ? a_rs : b_rs;
      const bf16* src = (first ? a + col : b + (col - D1)) + warp * rs;
      uint32_t dst = smem_u32(s + warp * stride + col);
      for (int r = warp; r < rows; r += nwarps, src += nwarps * rs, dst += nwarps * stride * 2) {
        const bool valid = r < nvalid;
        cp_async16(dst, valid ? src : safe, valid);
      }
    }
  } else {
    const int chunks = width / 8, nt = nwarps * 32;
    for (int c = warp * 32 + lane; c < rows * chunks; c += nt) {
      const int r = c / chunks, col = (c - r * chunks) * 8;
      const bool valid = r < nvalid;
      const bf16* src = safe;
      if (valid) src = col < D1 ? a + r * a_rs + col : b + r * b_rs + (col - D1);
      cp_async16(smem_u32(s + r * stride + col), src, valid);
    }
  }
}

// WARPS (4 or 8) split the key tile for S and the value columns for P V; NTV = n8 tiles of value columns per
// warp (Dv = 8 WARPS NTV). QSTEPS > 0 (8 warps only): Dqk = 16 QSTEPS is known at compile time and every warp
// keeps the query fragments of all k steps in registers (v9: the MLA latent rows, Dc + Dr = 576, 144 registers),
// instead of re-reading them from shared memory for each key tile (8 warps x 18 KB per tile).
// TMA (sm_90a; TMA_STAGES > 0): one thread loads each key tile as column blocks of 64 rows through the copy
// engine, TMA_STAGES - 1 tiles in flight, instead of the warps' cp.async into padded rows; the ldmatrix addresses
// follow the swizzle. TMA_COLS = 64: 64-column blocks in the 128-byte-swizzled layout (flash_attention_sm90.cuh);
// 32: 32-column blocks, 64-byte swizzle, for rows that are not 64-column blocks (EG-MLA's Dc 96, Dr 32). A tile is
// the blocks of maps.a (the key rows: K, or c) then of maps.b (V, or kr); the latent rows read V from c's blocks.
template <int WARPS, int NTV, int QSTEPS = 0, int TMA_STAGES = 0, int TMA_COLS = 64>
__global__ void __launch_bounds__(WARPS * 32)
    decode_split_kernel(const DecodeParams p, const __grid_constant__ DecodeTileMaps maps) {
  constexpr int KT = kDecKT, DV = 8 * WARPS * NTV, KPW = KT / WARPS;  // keys per warp in the S phase
  static_assert(KPW == 8 || KPW == 16, "4 or 8 warps");
  static_assert(WARPS <= kDecMaxWarps, "sMax holds kDecMaxWarps values per row");
  constexpr bool TMA = TMA_STAGES > 0;
  static_assert(!TMA || QSTEPS % 2 == 0, "TMA: the latent rows with the query in registers (pairs of k steps), or GQA");
  static_assert(TMA_COLS == 64 || (TMA_COLS == 32 && QSTEPS == 0), "32-column blocks: the query from shared memory");
  // TMA blocks: kBlkRow bytes per row, kCPR 16-byte chunks per row. The swizzle XORs address bits 4.. with bits 7..
  // (1024-aligned blocks): chunk ch of row r is stored at chunk ch ^ (r % 8) (128-byte rows) or ch ^ (r / 2 % 4)
  // (64-byte rows); either way the 8 rows of an ldmatrix phase hit 8 distinct 16-byte bank groups.
  constexpr int kBlkRow = TMA_COLS * 2, kCPR = TMA_COLS / 8, kBlkBytes = kDecKT * kBlkRow;
  auto swizzled = [](uint32_t ch, uint32_t row) -> uint32_t {  // byte offset of a row's chunk ch in a tile's blocks
    return (ch / kCPR) * kBlkBytes + row * kBlkRow + (((ch % kCPR) ^ ((row * kBlkRow >> 7) % kCPR)) << 4);
  };
#if !(defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900)
  if constexpr (TMA) return;  // launched only on sm_90 (run_decode)
#endif
  constexpr int kStages = TMA ? TMA_STAGES : 2;
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const int DK = p.D1 + p.D2, KS = DK + 8, VS = p.v_is_k1 ? KS : DV + 8;
  bf16* sQ = reinterpret_cast<bf16*>(smem_raw);  // (16, DK+8)
  bf16* sK = sQ + 16 * KS;                        // 2 x (KT, DK+8)
  bf16* sV = sK + 2 * KT * KS;                    // 2 x (KT, DV+8), absent when v_is_k1
  bf16* sP = sV + (p.v_is_k1 ? 0 : 2 * KT * (DV + 8));                    // (16, KT+8) bf16
  float* sMax = reinterpret_cast<float*>(sP + 16 * kDecPS);  // (16, WARPS): row maxima, then sums
  if (p.v_is_k1) sV = sK;
  // TMA: the stages (1024-aligned), the query's padded rows (with the query in registers: inside the last stage,
  // which its first tile overwrites once the fragments are loaded), sP, sMax, the stages' full barriers.
  const int a_blocks = p.D1 / TMA_COLS, b_blocks = (p.v_is_k1 ? p.D2 : DV) / TMA_COLS;
  const int v_block0 = p.v_is_k1 ? 0 : a_blocks, tile_bytes = (a_blocks + b_blocks) * kBlkBytes;
  uint32_t tK = 0, full0 = 0;
  if constexpr (TMA) {
    tK = (smem_u32(smem_raw) + 1023) & ~1023u;
    unsigned char* aligned = smem_raw + (tK - smem_u32(smem_raw));
    sQ = reinterpret_cast<bf16*>(aligned + (kStages - (QSTEPS > 0 ? 1 : 0)) * tile_bytes);
    sP = reinterpret_cast<bf16*>(aligned + kStages * tile_bytes) + (QSTEPS > 0 ? 0 : 16 * KS);
    sMax = reinterpret_cast<float*>(sP + 16 * kDecPS);
    full0 = smem_u32(sMax + 16 * kDecMaxWarps);
  }

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, tq = lane & 3;
  // Head tiles are the fastest grid dimension: the tiles that read the same cache rows (all heads of a latent
  // cache, or a kv group wider than 16 heads) run side by side, so the rows come from HBM once and from L2 for
  // the other tiles (v4; with the split fastest, H = 128 read the cache 8 times: 7% of the bandwidth).
  const int split = blockIdx.z;
  const int b = blockIdx.y / p.Hk, kvh = blockIdx.y - b * p.Hk;
  const int h0 = kvh * p.G + blockIdx.x * 16;                 // first head of this tile
  const int nrows = min(16, kvh * p.G + p.G - h0);            // heads in this tile
  const SplitTiles tiles = split_tiles(p, split, KT);
  const int s_end = tiles.end, n_tiles = tiles.n;

  const bf16* k1g = p.k1 + b * p.k1_sb + kvh * p.k1_sh;
  const bf16* k2g = p.k2 + b * p.k2_sb + kvh * p.k2_sh;
  const bf16* vg = p.v + b * p.v_sb + kvh * p.v_sh;
  constexpr bool kWarpRows = WARPS == 8;
  auto load_kv = [&](int tile, int buf) {
    const int s0 = tiles.first + tile * tiles.step;
    load_rows2<kWarpRows>(sK + buf * KT * KS, KT, k1g + int64_t(s0) * p.k1_ss, p.k1_ss, p.D1,
                          k2g + int64_t(s0) * p.k2_ss, p.k2_ss, p.D2, s_end - s0, p.k1, warp, lane, WARPS);
    if (!p.v_is_k1)
      load_rows2<kWarpRows>(sV + buf * KT * VS, KT, vg + int64_t(s0) * p.v_ss, p.v_ss, DV, vg, 0, 0, s_end - s0, p.v,
                            warp, lane, WARPS);
  };
  // TMA: tile `tile` into stage `st` by thread 0.
  auto tma_tile = [&](int tile, int st) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    const int s0 = tiles.first + tile * tiles.step;
    const uint32_t full = full0 + 8 * st, dst = tK + st * tile_bytes;
    const bool once = p.cache_evict_first;
    mbar_arrive_expect_tx(full, tile_bytes);
    for (int c = 0; c < a_blocks; ++c)
      tma_load_4d_once(dst + c * kBlkBytes, &maps.a, c * TMA_COLS, kvh, s0, b, full, once);
    for (int c = 0; c < b_blocks; ++c)
      tma_load_4d_once(dst + (a_blocks + c) * kBlkBytes, &maps.b, c * TMA_COLS, kvh, s0, b, full, once);
#endif
  };
  if constexpr (TMA) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (tid == 0) {
      for (int st = 0; st < kStages; ++st) mbar_init(full0 + 8 * st, 1);
      mbar_init_fence();
    }
#endif
    __syncthreads();
  }
  // Launched as a programmatic dependent of the stream's previous kernel (launch_split): the block's start and the
  // barriers' set-up overlap that kernel's tail. The query and the newest cache rows may be its output, so they are
  // read after it has finished; the first tiles of rows that were there before it started (p.ready_rows, earlier
  // decode steps) are loaded before, so the cache streams in while that kernel drains.
  int preloaded = 0;  // thread 0: tiles loaded before the wait
  if constexpr (TMA)
    if (tid == 0)
      for (; preloaded < kStages - 1 && preloaded < n_tiles; ++preloaded) {
        if (min(tiles.first + preloaded * tiles.step + KT, s_end) > p.ready_rows) break;
        tma_tile(preloaded, preloaded);
      }
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  if constexpr (TMA)
    if (tid == 0)
      for (int t = preloaded; t < kStages - 1 && t < n_tiles; ++t) tma_tile(t, t);
  load_rows2<kWarpRows>(sQ, 16, p.q1 + b * p.q1_sb + h0 * p.q1_sh, p.q1_sh, p.D1, p.q2 + b * p.q2_sb + h0 * p.q2_sh,
                        p.q2_sh, p.D2, nrows, p.q1, warp, lane, WARPS);
  if constexpr (!TMA) load_kv(0, 0);
  cp_async_commit();

  uint32_t qf[QSTEPS > 0 ? QSTEPS : 1][4];
  if constexpr (QSTEPS > 0) {  // the query fragments, once: Q arrives with the first key tile
    cp_async_wait<0>();
    __syncthreads();
    const uint32_t qa = smem_u32(sQ + (lane & 15) * KS + (lane >> 4) * 8);
#pragma unroll
    for (int kk = 0; kk < QSTEPS; ++kk) ldmatrix_x4(qf[kk], qa + kk * 32);
  }

  float o[NTV][4];
#pragma unroll
  for (int n = 0; n < NTV; ++n) o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.f;
  float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
  const int vcol0 = warp * (DV / WARPS);  // this warp's value columns

  for (int j = 0; j < n_tiles; ++j) {
    // Tile j has landed and every warp is past tile j - 1's P V, so tile j + 1 may go into the other buffer now:
    // one tile in flight during each tile's work, with three barriers per tile. TMA: every warp is past tile
    // j - 1 (and, at j = 0, past its query fragments in the third stage), so tile j + 2 may go into its stage.
    if constexpr (TMA) {
      cp_async_wait<0>();  // the query's rows (GQA reads them every tile)
      __syncthreads();
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
      if (tid == 0 && j + kStages - 1 < n_tiles) {
        fence_proxy_async();  // the warps' reads (and the query's cp.async writes) of that stage come first
        tma_tile(j + kStages - 1, (j + kStages - 1) % kStages);
      }
      mbar_wait(full0 + 8 * (j % kStages), (j / kStages) & 1);
#endif
    } else {
      cp_async_wait<0>();
      __syncthreads();
      if (j + 1 < n_tiles) {
        load_kv(j + 1, (j + 1) & 1);
        cp_async_commit();
      }
    }
    const bf16* sKj = sK + (j & 1) * KT * KS;
    const bf16* sVj = sV + (j & 1) * KT * VS;
    const uint32_t tKj = tK + (j % kStages) * tile_bytes;  // TMA: this tile's swizzled blocks
    const int s0 = tiles.first + j * tiles.step;

    // S = Q K^T for this warp's KPW keys (16 heads x KPW keys in mma accumulator layout).
    constexpr int NB = KPW / 8;  // n8 tiles per warp
    float s[NB][4];
    {
      // Two accumulator sets (even / odd k steps) halve the chain of dependent mma.
      float s2[NB][4];
#pragma unroll
      for (int n = 0; n < NB; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c) s[n][c] = s2[n][c] = 0.f;
      const uint32_t qa = smem_u32(sQ + (lane & 15) * KS + (lane >> 4) * 8);
      int kk = 0;
      if constexpr (NB == 2) {
        const uint32_t ka =
            smem_u32(sKj + (warp * 16 + (lane & 7) + ((lane >> 4) << 3)) * KS + ((lane >> 3) & 1) * 8);
        // TMA: k step kk of this lane's key row is 16-byte chunk 2 kk + (lane / 8) % 2 of the row's blocks.
        const int trow = warp * 16 + (lane & 7) + ((lane >> 4) << 3);
        auto kaddr = [&](int k) {
          return TMA ? tKj + swizzled(2 * k + ((lane >> 3) & 1), trow) : ka + k * 32;
        };
        for (; kk + 2 <= DK / 16; kk += 2) {
          uint32_t a[4], kb[4], a2[4], kb2[4];
          ldmatrix_x4(a, qa + kk * 32);
          ldmatrix_x4(kb, kaddr(kk));
          ldmatrix_x4(a2, qa + kk * 32 + 32);
          ldmatrix_x4(kb2, kaddr(kk + 1));
          mma_bf16(s[0], a, kb[0], kb[1]);
          mma_bf16(s[1], a, kb[2], kb[3]);
          mma_bf16(s2[0], a2, kb2[0], kb2[1]);
          mma_bf16(s2[1], a2, kb2[2], kb2[3]);
        }
        if (kk < DK / 16) {
          uint32_t a[4], kb[4];
          ldmatrix_x4(a, qa + kk * 32);
          ldmatrix_x4(kb, kaddr(kk));
          mma_bf16(s[0], a, kb[0], kb[1]);
          mma_bf16(s[1], a, kb[2], kb[3]);
        }
      } else if constexpr (QSTEPS > 0) {
        static_assert(QSTEPS % 2 == 0, "pairs of k steps");
        const uint32_t ka = smem_u32(sKj + (warp * 8 + (lane & 7)) * KS + (lane >> 3) * 8);
        // TMA: lane l reads key row 8 warp + l % 8, 16-byte chunk 4 (k2 / 2 % 2) + l / 8 of column block k2 / 4,
        // stored at chunk ^ (row % 8).
        const uint32_t trow = tKj + (warp * 8 + (lane & 7)) * 128;
        const uint32_t tx0 = (((lane >> 3)) ^ (lane & 7)) << 4, tx1 = ((4 + (lane >> 3)) ^ (lane & 7)) << 4;
#pragma unroll
        for (int k2 = 0; k2 < QSTEPS; k2 += 2) {
          uint32_t kb[4];
          if constexpr (TMA)
            ldmatrix_x4(kb, trow + (k2 >> 2) * KT * 128 + ((k2 & 2) ? tx1 : tx0));
          else
            ldmatrix_x4(kb, ka + k2 * 32);
          mma_bf16(s[0], qf[k2], kb[0], kb[1]);
          mma_bf16(s2[0], qf[k2 + 1], kb[2], kb[3]);
        }
      } else {
        // 8 keys: one x4 load gives b0, b1 of two consecutive k steps (columns 32 wide).
        const uint32_t ka = smem_u32(sKj + (warp * 8 + (lane & 7)) * KS + (lane >> 3) * 8);
        for (; kk + 2 <= DK / 16; kk += 2) {
          uint32_t a[4], a2[4], kb[4];
          ldmatrix_x4(a, qa + kk * 32);
          ldmatrix_x4(a2, qa + kk * 32 + 32);
          ldmatrix_x4(kb, ka + kk * 32);
          mma_bf16(s[0], a, kb[0], kb[1]);
          mma_bf16(s2[0], a2, kb[2], kb[3]);
        }
        if (kk < DK / 16) {
          uint32_t a[4], kb[2];
          ldmatrix_x4(a, qa + kk * 32);
          ldmatrix_x2(kb, smem_u32(sKj + (warp * 8 + (lane & 7)) * KS + kk * 16 + ((lane >> 3) & 1) * 8));
          mma_bf16(s[0], a, kb[0], kb[1]);
        }
      }
#pragma unroll
      for (int n = 0; n < NB; ++n)
#pragma unroll
        for (int c = 0; c < 4; ++c) {  // log2 units, masked past the split's end
          const int col = warp * KPW + n * 8 + 2 * tq + (c & 1);
          s[n][c] = s0 + col < s_end ? (s[n][c] + s2[n][c]) * p.scale_log2 : -INFINITY;
        }
    }

    // Softmax once per tile (v8): each warp takes the row max over its own keys, the warps' maxima meet in shared
    // memory, and each warp turns only its own scores into P (bf16, shared memory) for every warp's P V. Before,
    // every warp re-read all 16 x 64 scores and recomputed their exponentials (8x the MUFU work at 8 warps).
    float m_use[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      float mx = -INFINITY;
#pragma unroll
      for (int n = 0; n < NB; ++n) mx = fmaxf(mx, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
      mx = quad_max(mx);
      if (tq == 0) sMax[(g + 8 * h) * WARPS + warp] = mx;
    }
    __syncthreads();
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const float* row_max = sMax + (g + 8 * h) * WARPS;
      float mx = m_run[h];
#pragma unroll
      for (int w = 0; w < WARPS; w += 4) {
        const float4 x = *reinterpret_cast<const float4*>(row_max + w);
        mx = fmaxf(mx, fmaxf(fmaxf(x.x, x.y), fmaxf(x.z, x.w)));
      }
      m_use[h] = mx == -INFINITY ? 0.f : mx;
      const float alpha = exp2f(m_run[h] - m_use[h]);
      m_run[h] = mx;
      l_run[h] *= alpha;  // this warp's share of the row sums
#pragma unroll
      for (int n = 0; n < NTV; ++n) {
        o[n][2 * h] *= alpha;
        o[n][2 * h + 1] *= alpha;
      }
    }
#pragma unroll
    for (int n = 0; n < NB; ++n)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        const float p0 = exp2f(s[n][2 * h] - m_use[h]), p1 = exp2f(s[n][2 * h + 1] - m_use[h]);
        l_run[h] += p0 + p1;
        *reinterpret_cast<uint32_t*>(sP + (g + 8 * h) * kDecPS + warp * KPW + n * 8 + 2 * tq) = pack_bf16(p0, p1);
      }
    __syncthreads();

    // O += P V on this warp's value columns.
    const uint32_t pa = smem_u32(sP + (lane & 15) * kDecPS + (lane >> 4) * 8);
#pragma unroll
    for (int kk = 0; kk < KT / 16; ++kk) {
      uint32_t a[4];
      ldmatrix_x4(a, pa + kk * 32);
#pragma unroll
      for (int n = 0; n < NTV; ++n) {
        uint32_t vb[2];
        if constexpr (TMA) {  // value column chunk vcol0 / 8 + n of row kk 16 + lane % 16, in V's blocks
          ldmatrix_x2_trans(vb, tKj + v_block0 * kBlkBytes + swizzled((vcol0 >> 3) + n, kk * 16 + (lane & 15)));
        } else
          ldmatrix_x2_trans(vb, smem_u32(sVj + (kk * 16 + (lane & 15)) * VS + vcol0 + n * 8));
        mma_bf16(o[n], a, vb[0], vb[1]);
      }
    }
  }

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");  // the combine grid may be scheduled now
#endif
  // The warps' shares of the row sums, added in warp order (deterministic).
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const float l = quad_sum(l_run[h]);
    if (tq == 0) sMax[(g + 8 * h) * WARPS + warp] = l;
  }
  __syncthreads();
  // Partial results of this split: unnormalised O, m, l per head.
#pragma unroll
  for (int h = 0; h < 2; ++h) {
    const int row = g + 8 * h;
    if (row < nrows) {
      const int64_t at = (int64_t(split) * p.B + b) * p.H + h0 + row;
      float* po = p.part_o + at * DV + vcol0 + 2 * tq;
#pragma unroll
      for (int n = 0; n < NTV; ++n) *reinterpret_cast<float2*>(po + n * 8) = make_float2(o[n][2 * h], o[n][2 * h + 1]);
      if (warp == 0 && tq == 0) {
        float l = 0.f;
        for (int w = 0; w < WARPS; ++w) l += sMax[row * WARPS + w];
        *reinterpret_cast<float2*>(p.part_ml + at * 2) = make_float2(m_run[h], l);
      }
    }
  }
}

// out[b, h] = sum_s 2^(m_s - M) O_s / sum_s 2^(m_s - M) l_s. One block (8 warps) per (b, h) and COLS value
// columns: the weights go to shared memory, then each row of COLS / 4 lanes (a warp at 128 columns, a half-warp at
// 64) sums every 8th / 16th split for 4 columns per lane (float4, 4 splits' loads in flight), and the rows' partial
// sums are added in a fixed order (deterministic). COLS = 64 when 128-column blocks would not fill the SMs (v13: at
// B=1 with 16 heads, 64 blocks took 8.7 us to read 4 MB of partials after a 22.5 us pass 1, DRAM 15% busy; 128
// blocks 7.6 us, the call +2% back to back); 512 (a whole MLA latent row, the weights computed once per (b, h)
// instead of four times) when the rows alone fill the SMs (v52: B=4, 128 heads, 512 blocks: the call +4%, 0.61 /
// 0.68 -> 0.63 / 0.70; at B=1, 128 rows, -4%); else 128 (at B=4 with 128 heads the 64-column blocks measured 6%
// slower than 128: 4096 blocks each redoing the weights).
constexpr int kCombineWarps = 8;
constexpr int kCombinePartFloats = 1024;  // (rows, COLS) partial sums: 16 x 64, 8 x 128 or 2 x 512
template <int COLS>
__global__ void __launch_bounds__(kCombineWarps * 32) decode_combine_kernel(const DecodeParams p) {
  constexpr int kLanes = COLS / 4, kRows = kCombineWarps * 32 / kLanes;  // lanes per split row, rows side by side
  static_assert(kRows * COLS == kCombinePartFloats, "partial sums buffer");
  extern __shared__ float sw[];  // (splits) weights, then (kRows, COLS) partial sums
  __shared__ float red[32];
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  // Launched as a programmatic dependent of pass 1 (run_decode): the blocks may be resident before pass 1 ends,
  // and wait here until it has finished and its partials are visible.
  asm volatile("griddepcontrol.wait;\n" ::: "memory");
#endif
  const int chunks = (p.DV + COLS - 1) / COLS;
  const int bh = blockIdx.x / chunks, chunk = blockIdx.x - bh * chunks, b = bh / p.H, h = bh - b * p.H;
  const int c0 = chunk * COLS, cw = min(COLS, p.DV - c0);  // this block's columns
  const int tid = threadIdx.x;
  const int64_t stride = int64_t(p.B) * p.H;
  float M = -INFINITY;
  for (int s = tid; s < p.splits; s += blockDim.x) M = fmaxf(M, p.part_ml[(s * stride + bh) * 2]);
  M = block_max(M, red);
  const float Mu = M == -INFINITY ? 0.f : M;
  float L = 0.f;
  for (int s = tid; s < p.splits; s += blockDim.x) {
    const float2 ml = *reinterpret_cast<const float2*>(p.part_ml + (s * stride + bh) * 2);
    const float w = exp2f(ml.x - Mu);
    sw[s] = w;
    L += w * ml.y;
  }
  L = block_sum(L, red);  // ends with a barrier: sw is complete
  float* part = sw + p.splits;
  const int row = tid / kLanes, d0 = (tid % kLanes) * 4;  // row `row` takes splits row, row + kRows, ...
  if (d0 < cw) {
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll 4
    for (int s = row; s < p.splits; s += kRows) {
      const float w = sw[s];
      const float4 o = *reinterpret_cast<const float4*>(p.part_o + (s * stride + bh) * p.DV + c0 + d0);
      acc.x += w * o.x, acc.y += w * o.y, acc.z += w * o.z, acc.w += w * o.w;
    }
    *reinterpret_cast<float4*>(part + row * COLS + d0) = acc;
  }
  __syncthreads();
  const float inv = L > 0.f ? 1.f / L : 0.f;
  bf16* orow = p.out + b * p.o_sb + h * p.o_sh + c0;
  for (int d = tid; d < cw; d += blockDim.x) {
    float acc = 0.f;
#pragma unroll
    for (int r = 0; r < kRows; ++r) acc += part[r * COLS + d];
    orow[d] = __float2bfloat16_rn(acc * inv);
  }
  if (p.lse && chunk == 0 && tid == 0) p.lse[bh] = L > 0.f ? (Mu + log2f(L)) * kLn2 : -INFINITY;
}

// Programmatic dependent launches need the kernels' sm_90+ code: older code has no griddepcontrol.wait.
bool pdl_supported() {
  static const bool ok = [] {
    cudaFuncAttributes fa{};
    return cudaFuncGetAttributes(&fa, decode_combine_kernel<128>) == cudaSuccess && fa.binaryVersion >= 90;
  }();
  return ok;
}

// Pass 1 as a programmatic dependent of the kernel before it (LATTE_DECODE_PDL=0 launches it plainly, for
// comparisons).
bool pass1_pdl() {
  static const bool on = switch_on("LATTE_DECODE_PDL") && pdl_supported();
  return on;
}

template <int WARPS, int NTV, int QSTEPS = 0, int TMA_STAGES = 0, int TMA_COLS = 64>
void launch_split(const DecodeParams& p, dim3 grid, int smem, cudaStream_t stream,
                  const DecodeTileMaps& maps = DecodeTileMaps{}) {
  allow_dynamic_smem(decode_split_kernel<WARPS, NTV, QSTEPS, TMA_STAGES, TMA_COLS>, smem);
  const DependentLaunch launch(grid, dim3(WARPS * 32), smem, stream, pass1_pdl());
  CUDA_CHECK(
      cudaLaunchKernelEx(&launch.config, decode_split_kernel<WARPS, NTV, QSTEPS, TMA_STAGES, TMA_COLS>, p, maps));
  CUDA_CHECK_LAUNCH("decode_split_kernel");
}

bool row_ok(const Tensor& t, int dims_min, int dims_max) {
  if (!t.defined() || !t.device().is_cuda() || t.dtype() != DType::BF16) return false;
  if (t.dim() < dims_min || t.dim() > dims_max || t.stride(-1) != 1 || !aligned16(t.data_ptr())) return false;
  for (int d = 0; d + 1 < t.dim(); ++d)
    if (t.size(d) > 1 && t.stride(d) % 8 != 0) return false;
  return true;
}

bool dv_supported(int64_t dv) { return dv == 64 || dv == 96 || dv == 128 || dv == 192 || dv == 256 || dv == 512; }

// (B, H, D) view of a (B, H, D) or (B, 1, H, D) tensor: strides of b and h.
struct Rows3 {
  int64_t B, H, D, sb, sh;
};
Rows3 rows3(const Tensor& t, const char* op, const char* name) {
  if (t.dim() == 3) return {t.size(0), t.size(1), t.size(2), t.stride(0), t.stride(1)};
  LATTE_CHECK(t.dim() == 4 && t.size(1) == 1, op, ": ", name, " must be (B, H, D) or (B, 1, H, D), got ", t.str());
  return {t.size(0), t.size(2), t.size(3), t.stride(0), t.stride(2)};
}

// Runs both passes; p has the tensors, dims and strides filled in, rows = heads per kv group.
void run_decode(DecodeParams& p, const Device& dev, const char* op) {
  // The MLA latent rows with more than 32 heads go to the wgmma kernel (64 heads per block; LATTE_DECODE_WGMMA=0
  // keeps the mma.sync one, for comparisons).
  static const bool wgmma_allowed = switch_on("LATTE_DECODE_WGMMA");
  const bool wgmma = wgmma_allowed && decode_latent_sm90_supported(p);
  // On sm_90a the split kernel loads its key tiles with TMA, three stages (LATTE_DECODE_TMA=0 keeps the warps'
  // cp.async, for comparisons). Session 10, one call / back to back: latent H=16 B=1 0.41-0.43 -> 0.48 / 0.50 ->
  // 0.56, B=4 0.72-0.74 -> 0.78-0.79 / 0.78 -> 0.85; GQA (Dqk = Dv = 128) B=1 0.71 -> 0.82 / 0.77 -> 0.87, B=4
  // 0.88-0.89 -> 0.96-0.97 / 0.90 -> 0.99 (two stages: B=1 0.77-0.81 / 0.86). Session 12, EG-MLA's Dc 96, Dr 32
  // rows (32-column blocks), H=16: B=1 0.12 / 0.17 -> 0.17 / 0.23, B=4 0.37 / 0.45 -> 0.42-0.43 / 0.53.
  static const bool tma_allowed = switch_on("LATTE_DECODE_TMA");
  // The TMA cache loads mark their lines L2 evict-first: a step reads its cache once, and the split partials and
  // the query then stay in L2 for the combine (LATTE_DECODE_EVICT_FIRST=0: no hint, for comparisons). Session 17,
  // back to back: latent H=16 B=1 0.58-0.60 -> 0.63, B=4 0.86-0.87 -> 0.90, H=64 B=1 0.39-0.40 -> 0.42-0.43, H=128
  // B=1 0.37-0.38 -> 0.40, B=4 0.64-0.65 -> 0.67-0.68; GQA +1-2%.
  static const bool evict_first = switch_on("LATTE_DECODE_EVICT_FIRST");
  p.cache_evict_first = evict_first;
  // Pass 1 of the 16-row kernel (TMA tiles) loads the first tiles of p.ready_rows before it waits for the previous
  // kernel (LATTE_DECODE_PRELOAD=0: after, for comparisons). Session 20, 32k, back to back, 2-3 rounds: +1% on every
  // row measured (latent H=16 B=1 0.623 -> 0.629, Dc 192 B=1 0.452 -> 0.458, Dc 96 B=4 0.610 -> 0.616, GQA Hq 32
  // B=1 0.907 -> 0.915, D 64 0.674 -> 0.677): what it overlaps is the previous kernel's drain and flush, ~1 us.
  // Not done: the wgmma kernel's first tile ahead of its query (flat; both tiles -6 to -10%), and the combine
  // letting the next call start at once (griddepcontrol.launch_dependents before its wait) so that its cache
  // streams in while the combine runs: +2% for latent H=16 and GQA Hq 32 at B=1, -4 to -10% for the rows with two
  // blocks per SM (Dc 192, Dc 96, GQA D 64), -1 to -2% for the wgmma kernel.
  static const bool preload = switch_on("LATTE_DECODE_PRELOAD");
  if (!preload) p.ready_rows = 0;
  const bool tma16 = !wgmma && tma_allowed && latent_tma_supported(p);
  const bool tma_gqa = !p.v_is_k1 && tma_allowed && gqa_tma_supported(p);
  constexpr int kTmaStages = 3;
  const int tile_rows = wgmma ? 64 : 16;
  const int row_tiles = (p.G + tile_rows - 1) / tile_rows;
  const int64_t base = int64_t(p.B) * p.Hk * row_tiles;
  LATTE_CHECK(int64_t(p.B) * p.Hk <= 65535, op, ": too many (batch, kv head) pairs");
  const int DK = p.D1 + p.D2;
  // TMA: the stages of swizzled tiles (the latent query's rows inside the last one), sP, sMax, barriers, alignment.
  const int tma_tile_bytes = (p.D1 + (p.v_is_k1 ? p.D2 : p.DV)) * kDecKT * 2;
  // The latent rows keep the query in registers, except EG-MLA's Dc 96 (4 warps, the query from shared memory).
  const bool query_in_registers = tma16 && p.DV != 96;
  auto tma_smem = [&](int stages) {
    return stages * tma_tile_bytes + (query_in_registers ? 0 : 16 * (DK + 8) * 2) + 16 * kDecPS * 2 +
           16 * kDecMaxWarps * 4 + stages * 8 + 1024;
  };
  int smem = wgmma              ? decode_latent_sm90_smem_bytes()
             : tma16 || tma_gqa ? tma_smem(kTmaStages)
                                : (16 * (DK + 8) + 2 * kDecKT * (DK + 8) + (p.v_is_k1 ? 0 : 2 * kDecKT * (p.DV + 8)) +
                                   16 * kDecPS) * 2 +
                                      16 * kDecMaxWarps * 4;
  // Splits: fill one wave of resident blocks (blocks per SM from the shared memory a block takes, capped below),
  // but keep each split at least 4 key tiles long and (16-head kernel) its fp32 partial output under 1/8 of the
  // cache bytes it reads. The wgmma kernel has no partial cap: its 64-head partials (128 KB a split) would hold
  // B=1 with 128 heads to 72 blocks on 132 SMs, and a full wave measured faster (session 9, H=128 at 32k, B=1:
  // 36 splits 0.26 of copy bandwidth, 66 splits 0.33, 132 (two waves) 0.24; B=4: 16 splits 0.53, 36 0.38).
  const cudaDeviceProp& prop = device_properties(dev.index);
  const int tiles = std::max(1, (p.S + kDecKT - 1) / kDecKT);
  const int64_t row_bytes = int64_t(p.v_is_k1 ? DK : DK + p.DV) * 2;  // cache bytes per key (per kv head)
  const int64_t min_keys =
      wgmma ? 4 * kDecKT : std::max<int64_t>(4 * kDecKT, 8 * std::min(p.G, 16) * int64_t(p.DV) * 4 / row_bytes);
  const int max_splits = std::max<int>(1, int(p.S / min_keys));
  auto split_count = [&](int smem_bytes) {
    // TMA rows: at most two blocks per SM. Where four fit (the 4-warp rows: EG-MLA 125M-350M's Dc 96 latent, GQA
    // with D 64), two with splits twice as long measured faster (session 14, H100, 32k, one call / back to back:
    // Dc 96 B=4 0.41-0.44 / 0.52-0.54 -> 0.48 / 0.58-0.59, GQA Hq 16 Hk 4 D 64 B=1 back to back 0.59 -> 0.61, one
    // call and B=4 flat); the other TMA rows fit only once or twice anyway.
    const int fit = int(prop.sharedMemPerMultiprocessor / (smem_bytes + 1024));
    const int per_sm = std::max(1, std::min(tma16 || tma_gqa ? 2 : 16, fit));
    const int64_t capacity = int64_t(prop.multiProcessorCount) * per_sm;
    const int splits = static_cast<int>(std::clamp<int64_t>(capacity / base, 1, max_splits));
    const int tiles_per_split = (tiles + splits - 1) / splits;
    return std::max(1, (tiles + tiles_per_split - 1) / tiles_per_split);
  };
  p.splits = split_count(smem);
  // EG-MLA 1.3B's latent rows (Dc 192, Dr 64) with long splits (8 or more tiles each: B >= 4 at 32k) take four
  // TMA stages: one block per SM, so half as many splits, twice as long (session 14, H=16, B=4, 32k, A/B in one
  // call, one call / back to back: 0.56-0.61 / 0.68-0.69 -> 0.61-0.65 / 0.71-0.72; at B=1, 4 tiles a split, four
  // stages lost 6% back to back, and for Dc 256 they were flat at B=4 and 8% slower at B=1).
  int tma_stages = kTmaStages;
  if (tma16 && p.DV == 192 && (tiles + p.splits - 1) / p.splits >= 8) {
    tma_stages = 4;
    smem = tma_smem(tma_stages);
    p.splits = split_count(smem);
  }
  LATTE_CHECK(smem <= static_cast<int>(prop.sharedMemPerBlockOptin), op, ": head dims too large for shared memory (",
              smem, " bytes)");
  // The partials, O then (m, l), in one allocation: the caching allocator's work is host time before the first
  // launch, which a single call waits for (bench_attention's "host per call" rows).
  const int64_t part_rows = int64_t(p.splits) * p.B * p.H;
  Tensor partials = Tensor::empty({part_rows * (p.DV + 2)}, DType::F32, dev);
  p.part_o = partials.data<float>();          // (splits, B, H, DV)
  p.part_ml = p.part_o + part_rows * p.DV;  // (splits, B, H, 2): 8-byte aligned (DV is even)
  const cudaStream_t stream = current_stream();
  const dim3 grid(row_tiles, p.B * p.Hk, p.splits);  // splits <= one wave of blocks, far below 65535
  // 4 warps for value widths up to 128 (GQA heads: 8 warps measured 25% slower, the per-warp softmax work is
  // repeated while the P V work per warp halves), 8 warps for the wide latent values (measured 10% faster).
  if (wgmma) {
    launch_decode_latent_sm90(p, stream, pass1_pdl());
  } else {
    const DecodeTileMaps gmaps = tma_gqa ? gqa_tile_maps(p) : DecodeTileMaps{};
    switch (p.DV) {
      case 64:
        if (tma_gqa) launch_split<4, 2, 0, kTmaStages>(p, grid, smem, stream, gmaps);
        else launch_split<4, 2>(p, grid, smem, stream);
        break;
      case 96:  // EG-MLA 125M-350M's latent rows (Dc 96, Dr 32): TMA in 32-column blocks
        if (tma16) launch_split<4, 3, 0, kTmaStages, 32>(p, grid, smem, stream, latent_tile_maps(p));
        else launch_split<4, 3>(p, grid, smem, stream);
        break;
      case 128:
        if (tma_gqa) launch_split<4, 4, 0, kTmaStages>(p, grid, smem, stream, gmaps);
        else launch_split<4, 4>(p, grid, smem, stream);
        break;
      // The latent rows of latte's smaller MLA / MLRA (Dc 256) and EG-MLA 1.3B (Dc 192) configs, Dr 64: TMA tiles
      // with the query in registers (20 / 16 k steps), as for Dc 512.
      case 192:
        if (tma16 && tma_stages == 4) launch_split<8, 3, 16, 4>(p, grid, smem, stream, latent_tile_maps(p));
        else if (tma16) launch_split<8, 3, 16, kTmaStages>(p, grid, smem, stream, latent_tile_maps(p));
        else launch_split<8, 3>(p, grid, smem, stream);
        break;
      case 256:
        if (tma16) launch_split<8, 4, 20, kTmaStages>(p, grid, smem, stream, latent_tile_maps(p));
        else launch_split<8, 4>(p, grid, smem, stream);
        break;
      case 512:  // the MLA latent rows (Dc 512 + Dr 64) with the query in registers
        if (tma16)
          launch_split<8, 8, 36, kTmaStages>(p, grid, smem, stream, latent_tile_maps(p));
        else if (DK == 576)
          launch_split<8, 8, 36>(p, grid, smem, stream);
        else
          launch_split<8, 8>(p, grid, smem, stream);
        break;
      default: LATTE_FAIL(op, ": unsupported value width ", p.DV);
    }
  }
  // Combine blocks of 64 columns when 128-column ones would not fill the SMs, of a whole 512-column row where
  // those rows alone fill them (decode_combine_kernel), else of 128 columns.
  const int64_t rows = int64_t(p.B) * p.H;
  const bool narrow = rows * ((p.DV + 127) / 128) < prop.multiProcessorCount;
  const bool whole = p.DV == 512 && rows >= prop.multiProcessorCount;
  auto* combine = narrow ? decode_combine_kernel<64> : whole ? decode_combine_kernel<512> : decode_combine_kernel<128>;
  const int cols = narrow ? 64 : whole ? 512 : 128;
  const size_t combine_smem = sizeof(float) * (size_t(p.splits) + size_t(kCombinePartFloats));
  if (combine_smem > 48 * 1024) allow_dynamic_smem(combine, combine_smem);
  // Programmatic dependent launch: the combine grid is scheduled while pass 1 runs (its launch latency hidden; the
  // kernel's griddepcontrol.wait holds it until pass 1 is complete).
  const DependentLaunch launch(dim3(p.B * p.H * ((p.DV + cols - 1) / cols)), dim3(kCombineWarps * 32), combine_smem,
                               stream, pdl_supported());
  CUDA_CHECK(cudaLaunchKernelEx(&launch.config, combine, p));
  CUDA_CHECK_LAUNCH("decode_combine_kernel");
}

void check_lse(const Tensor& lse, int64_t B, int64_t H, const Device& dev, const char* op) {
  if (!lse.defined()) return;
  LATTE_CHECK(lse.dtype() == DType::F32 && lse.is_contiguous() && lse.numel() == B * H && lse.device() == dev, op,
              ": lse must be contiguous f32 with B*H elements on the device, got ", lse.str());
}

}  // namespace

bool decode_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out) {
  if (!row_ok(q, 3, 4) || !row_ok(k, 4, 4) || !row_ok(v, 4, 4) || !row_ok(out, 3, 4)) return false;
  if (k.device() != q.device() || v.device() != q.device() || out.device() != q.device()) return false;
  const int64_t dqk = q.size(-1);
  return dqk % 16 == 0 && dqk <= 512 && k.size(3) == dqk && dv_supported(v.size(3)) && out.size(-1) == v.size(3);
}

void decode_attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                      double softmax_scale, int64_t ready_rows) {
  const char* op = "decode_attention";
  LATTE_CHECK(decode_attention_supported(q, k, v, out), op, ": unsupported tensors q ", q.str(), " k ", k.str(), " v ",
              v.str(), " out ", out.str());
  const Rows3 qr = rows3(q, op, "q"), orr = rows3(out, op, "out");
  const int64_t B = qr.B, Hq = qr.H, S = k.size(1), Hk = k.size(2);
  LATTE_CHECK(k.size(0) == B && v.size(0) == B && v.size(1) == S && v.size(2) == Hk && Hk >= 1 && Hq % Hk == 0, op,
              ": q ", q.shape().str(), " k ", k.shape().str(), " v ", v.shape().str());
  LATTE_CHECK(orr.B == B && orr.H == Hq && orr.D == v.size(3), op, ": out ", out.shape().str());
  LATTE_CHECK(softmax_scale > 0, op, ": softmax scale must be positive");
  check_lse(lse, B, Hq, q.device(), op);
  if (B == 0 || Hq == 0) return;
  LATTE_CHECK(S >= 1, op, ": empty cache");
  DeviceGuard guard(q.device().index);
  DecodeParams p{};
  p.q1 = static_cast<const bf16*>(q.data_ptr()), p.q1_sb = qr.sb, p.q1_sh = qr.sh;
  p.q2 = p.q1;
  p.k1 = static_cast<const bf16*>(k.data_ptr()), p.k1_sb = k.stride(0), p.k1_ss = k.stride(1), p.k1_sh = k.stride(2);
  p.k2 = p.k1;
  p.v = static_cast<const bf16*>(v.data_ptr()), p.v_sb = v.stride(0), p.v_ss = v.stride(1), p.v_sh = v.stride(2);
  p.D1 = static_cast<int>(q.size(-1)), p.D2 = 0, p.DV = static_cast<int>(v.size(3));
  p.B = static_cast<int>(B), p.S = static_cast<int>(S), p.H = static_cast<int>(Hq), p.Hk = static_cast<int>(Hk);
  p.G = static_cast<int>(Hq / Hk);
  p.scale_log2 = static_cast<float>(softmax_scale * 1.4426950408889634);
  p.v_is_k1 = false;
  p.out = static_cast<bf16*>(out.data_ptr()), p.o_sb = orr.sb, p.o_sh = orr.sh;
  p.lse = lse.defined() ? lse.data<float>() : nullptr;
  p.ready_rows = static_cast<int>(std::clamp<int64_t>(ready_rows, 0, S));
  run_decode(p, q.device(), op);
}

bool decode_attention_latent_supported(const Tensor& q_abs, const Tensor& q_rope, const Tensor& c, const Tensor& kr,
                                       const Tensor& z) {
  if (!row_ok(q_abs, 3, 4) || !row_ok(c, 3, 3) || !row_ok(z, 3, 4)) return false;
  const bool rope = q_rope.defined();
  if (rope != kr.defined()) return false;
  if (rope && (!row_ok(q_rope, 3, 4) || !row_ok(kr, 3, 3))) return false;
  const int64_t dc = c.size(2), dr = rope ? kr.size(2) : 0;
  if (!dv_supported(dc) || dr % 16 != 0 || dc + dr > 640 || q_abs.size(-1) != dc || z.size(-1) != dc) return false;
  if (rope && q_rope.size(-1) != dr) return false;
  for (const Tensor* t : {&q_rope, &c, &kr, &z})
    if (t->defined() && t->device() != q_abs.device()) return false;
  return true;
}

void decode_attention_latent(const Tensor& z, const Tensor& lse, const Tensor& q_abs, const Tensor& q_rope,
                             const Tensor& c, const Tensor& kr, double softmax_scale, int64_t ready_rows) {
  const char* op = "decode_attention_latent";
  LATTE_CHECK(decode_attention_latent_supported(q_abs, q_rope, c, kr, z), op, ": unsupported tensors q_abs ",
              q_abs.str(), " c ", c.str(), " z ", z.str());
  const Rows3 qa = rows3(q_abs, op, "q_abs"), zr = rows3(z, op, "z");
  const int64_t B = qa.B, H = qa.H, S = c.size(1);
  LATTE_CHECK(c.size(0) == B && zr.B == B && zr.H == H, op, ": q_abs ", q_abs.shape().str(), " c ", c.shape().str(),
              " z ", z.shape().str());
  Rows3 qp{B, H, 0, 0, 0};
  if (q_rope.defined()) {
    qp = rows3(q_rope, op, "q_rope");
    LATTE_CHECK(qp.B == B && qp.H == H && kr.size(0) == B && kr.size(1) == S, op, ": q_rope ", q_rope.shape().str(),
                " kr ", kr.shape().str());
  }
  LATTE_CHECK(softmax_scale > 0, op, ": softmax scale must be positive");
  check_lse(lse, B, H, q_abs.device(), op);
  if (B == 0 || H == 0) return;
  LATTE_CHECK(S >= 1, op, ": empty cache");
  DeviceGuard guard(q_abs.device().index);
  DecodeParams p{};
  p.q1 = static_cast<const bf16*>(q_abs.data_ptr()), p.q1_sb = qa.sb, p.q1_sh = qa.sh;
  p.k1 = static_cast<const bf16*>(c.data_ptr()), p.k1_sb = c.stride(0), p.k1_ss = c.stride(1), p.k1_sh = 0;
  if (q_rope.defined()) {
    p.q2 = static_cast<const bf16*>(q_rope.data_ptr()), p.q2_sb = qp.sb, p.q2_sh = qp.sh;
    p.k2 = static_cast<const bf16*>(kr.data_ptr()), p.k2_sb = kr.stride(0), p.k2_ss = kr.stride(1), p.k2_sh = 0;
  } else {
    p.q2 = p.q1, p.k2 = p.k1;
  }
  p.v = p.k1;
  p.D1 = static_cast<int>(c.size(2)), p.D2 = static_cast<int>(qp.D), p.DV = p.D1;
  p.B = static_cast<int>(B), p.S = static_cast<int>(S), p.H = static_cast<int>(H), p.Hk = 1, p.G = static_cast<int>(H);
  p.scale_log2 = static_cast<float>(softmax_scale * 1.4426950408889634);
  p.v_is_k1 = true;
  p.out = static_cast<bf16*>(z.data_ptr()), p.o_sb = zr.sb, p.o_sh = zr.sh;
  p.lse = lse.defined() ? lse.data<float>() : nullptr;
  p.ready_rows = static_cast<int>(std::clamp<int64_t>(ready_rows, 0, S));
  run_decode(p, q_abs.device(), op);
}

}  // namespace latte::cuda
