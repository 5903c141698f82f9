// Flash-attention backward for Hopper (sm_90a): the key-major pass of flash_attention_bwd.cu with its five GEMMs
// on warpgroup tensor-core instructions (wgmma) instead of mma.sync.
//   dout, out (B, T, R*Hq, Dv), lse (B, R*Hq, T), D = rowsum(dO o O) -> dk (B, S, R*Hk, Dqk), dv (B, S, R*Hk, Dv)
//   [+ dq (B, T, Hq, Dqk) through an fp32 accumulator when p.atomic_dq; deterministic mode runs
//   flash_attention_bwd_dq.cu after]
// Why: the mma.sync pass is bound by ldmatrix traffic (every operand fragment through registers, ~1.5 mma per
// ldmatrix.x4) and reaches ~155 TFLOP/s; wgmma reads B (and A, for the SS GEMMs) straight from shared memory for
// 64 rows at once (docs/attention_kernels.md).
// Block: 2 consumer warpgroups (256 threads; 3 at (64,64), 384) own 128 (192) keys of one kv head (64 per
// warpgroup) and keep dK, dV in registers while they walk every 64-query tile of every query head of the GQA
// group (one MLRA branch), so dK/dV are summed in a fixed order and written once. Per query tile, per warpgroup
// (FlashAttention-3's layout):
//   S^T  (64 keys x 64 q) = K Q^T     SS, both K-major              P^T = exp(S^T scale - lse)   (registers)
//   dP^T (64 keys x 64 q) = V dO^T    SS, both K-major              dS^T = P^T (dP^T - D)        (registers)
//   dV (64 x Dv)  += P^T dO           RS: A = P^T from registers, B = dO MN-major
//   dK (64 x Dqk) += dS^T Q           RS: A = dS^T from registers, B = Q MN-major
//   dS^T -> shared memory (bf16, stmatrix), barrier; then warpgroup 0, for every 64-column block of dQ:
//   dQ (64 q x 64) = dS K             SS over the block's keys: A = dS^T read as MN-major, B = K MN-major;
//                                     staged in shared memory (fp32), then added to global memory (below)
// The other warpgroups do no dQ work and start the next step meanwhile, so that the two run out of phase (one's
// element-wise work beside the other's products; splitting the blocks between them was 5-7% slower at (128,128)).
// dQ reduction: a writer warp of the producer warpgroup adds each step's staged (64 q x Dqk) tile into the fp32
// accumulator with one bulk reduction (cp.reduce.async.bulk .add.f32, done in L2 by the TMA engine) while the
// consumers go on; they only wait for it before staging the next tile. The first contribution to a tile is stored
// instead (a counter per tile), so the accumulator is never zeroed (session 26). Accumulator layout: (B, Hq, T/64
// tiles, 64 x Dqk) with each tile in the consumers' register-fragment order (one contiguous bulk copy per tile, 16-byte
// conflict-free shared stores); flash_dq_tiles_cast_kernel turns it into dq. Measured against fp32 atomics from
// the consumers' registers (RED per element pair, which ncu put at ~25% of the pass): docs/attention_kernels.md.
// Registers at (192, 128): dK 96 + dV 64 + S^T 32 + dP^T 32 floats per thread (one block of 256 threads per SM).
// Instructions matter as much as the GEMMs' order here: the step's element-wise work is short, so descriptor
// arithmetic, lse scaling, per-element mask branches and per-element dS^T stores were 40% of the instructions
// until session 23 (cutting them: +7-18%, docs/attention_kernels.md v89-v92).
// Loads: TMA by the producer warpgroup, Q/dO/lse/D double-buffered; K and V stay for the whole work item.
// Causal: a key tile starts at the first query tile that can see it. Work order: see the kernel (L2-sized groups
// of heads, heaviest key tiles first inside a group). Persistent (session 24): one block per SM takes work items
// (key tiles) from a counter, claiming the next once the current one's loads are all issued, and loads the next
// one's first Q/dO stages and its K/V while the current one drains (+2-5% at Dqk 128 and 192, T = 2048 and 4096;
// -1 to -2% at (64,64); claiming the next item as the current one started was 5% slower: the blocks' ends drifted
// apart by up to an item).
// Floor: 2.5x the forward's FLOPs, 0.87 ms at (192,128), B=4, T=4096, 16 heads, at the 989 TFLOP/s dense peak.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/flash_attention_sm90.cuh"

namespace latte::cuda::flash {

namespace {

// Consumer warpgroups (64 keys each): 3 at (64,64), where each consumer's chain per step is short and a third keeps
// the tensor cores busier (as the forward's v79), 2 elsewhere (their dK and dV accumulators need 240 registers).
template <int DQK, int DV>
constexpr int kB90Consumers = DQK == 64 && DV == 64 ? 3 : 2;
template <int DQK, int DV>
constexpr int kB90Threads = 128 * (1 + kB90Consumers<DQK, DV>);  // warpgroup 0: producer; then the consumers
template <int DQK, int DV>
constexpr int kB90BC = 64 * kB90Consumers<DQK, DV>;  // keys per block
constexpr int kB90BR = 64;        // queries per step
constexpr int kB90Stages = 2;     // Q / dO / lse / D buffers
constexpr int kDqTileStored = 1 << 30;  // dq_state: the tile's first contribution is in the accumulator
// dS^T is double-buffered (a consumer may write step j+1's half while the other still runs step j's dQ GEMM)
// except at Dqk = 192, where the fp32 dQ staging tile (48 KB) leaves room for one buffer only.
template <int DQK>
constexpr int kB90DsBuffers = DQK == 192 ? 1 : 2;

template <int DQK, int DV>
constexpr int bwd_sm90_smem_bytes() {  // K, V, stages x (Q, dO), dS^T buffers, dQ tile, stages x (lse, D), mbarriers, slack
  constexpr int BC = kB90BC<DQK, DV>;
  return (BC * (DQK + DV) + kB90Stages * kB90BR * (DQK + DV) + kB90DsBuffers<DQK> * BC * kB90BR) * 2 +
         kB90BR * DQK * 4 + kB90Stages * 2 * kB90BR * 4 + 160 + 1024;
}
static_assert(bwd_sm90_smem_bytes<192, 128>() <= 227 * 1024, "shared memory of the largest instantiation");

struct BwdTmaMaps {
  CUtensorMap q, k, v, dout;
};

template <int DQK, int DV>
__global__ void __launch_bounds__(kB90Threads<DQK, DV>, 1)
    flash_bwd_sm90_kernel(const Params p, const __grid_constant__ BwdTmaMaps maps, int group_size) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  constexpr int NCW = kB90Consumers<DQK, DV>, BC = kB90BC<DQK, DV>, BR = kB90BR, ST = kB90Stages;
  constexpr int NC = 128 * NCW;  // consumer threads
  // dQ: consumer 0 computes every 64-column block (DQK / 64) while consumer 1 goes on to the next step's S^T and
  // dP^T, so that the two run out of phase (session 22, v80: +5-7% at (128,128) against one block each).
  constexpr int kQBlocks = DQK / 64;
  constexpr int kDsBuffers = kB90DsBuffers<DQK>;
  // How consumer 1 waits for consumer 0. With two dS^T buffers (Dqk 64, 128) it meets consumer 0 at kBarDsReady
  // each step and at the writer's barriers, as when both did dQ work (measured best there). With one (Dqk 192) it
  // waits only for consumer 0's dQ GEMMs to release the buffer (kBarDsFree) and runs on (v81: +3.5%; the same
  // release at Dqk 64 and 128 was 2-4% slower).
  constexpr bool kCoupled = kDsBuffers == 2;
  // Named barriers (0 is __syncthreads): dS^T written by both consumers; (one dS^T buffer) consumer 0's dQ
  // GEMMs done with it; staged dQ tile ready for the writer warp; the writer has read it; the scheduler warp's
  // decoded item ready for the load warps (0, 1); the next item's index from warp 0 for the scheduler.
  constexpr int kBarDsReady = 1, kBarDsFree = 2, kBarDqFull = 3, kBarDqEmpty = 4, kBarItem = 5, kBarNext = 6;
  constexpr int kDqThreads = (kCoupled ? NC : 128) + 32;  // at kBarDqFull / kBarDqEmpty, with the writer warp
  extern __shared__ __align__(16) unsigned char smem_raw[];
  const uint32_t raw = smem_u32(smem_raw);
  const uint32_t base = (raw + 1023) & ~1023u;
  const uint32_t sK = base;                       // DQK/64 blocks of (BC, 64)
  const uint32_t sV = sK + BC * DQK * 2;          // DV/64 blocks of (BC, 64)
  const uint32_t sQ = sV + BC * DV * 2;           // stages x DQK/64 blocks of (BR, 64)
  const uint32_t sdO = sQ + ST * BR * DQK * 2;    // stages x DV/64 blocks of (BR, 64)
  const uint32_t sdS = sdO + ST * BR * DV * 2;    // kDsBuffers x dS^T (BC keys, BR queries): rows of 128 bytes
  const uint32_t sdQ = sdS + kDsBuffers * BC * BR * 2;  // dQ tile (BR, DQK) fp32 in fragment order (see the writer)
  const uint32_t sLDa = sdQ + BR * DQK * 4;       // stages x [lse (BR), D (BR)] fp32
  const uint32_t bars = sLDa + ST * 2 * BR * 4;   // kv_full, full[ST], empty[ST], kv_empty
  const uint32_t kv_full = bars, full0 = bars + 8, empty0 = bars + 8 + 8 * ST, kv_empty = empty0 + 8 * ST;
  float* sLD = reinterpret_cast<float*>(smem_raw + (sLDa - raw));
  // The dQ accumulator tile of the staged tile (its index in 64 x Dqk tiles; -1: no more tiles), which consumer 0
  // hands the writer warp with it; then the block's work items, two slots of kItemInts (item `local` in slot
  // local % 2).
  const uint32_t s_dq_dst = kv_empty + 8, s_items = kv_empty + 16;
  const uint32_t s_next = s_items + 2 * 8 * 4;  // the next item's index, from warp 0 to warp 3

  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int wg = warp >> 2, g = lane >> 2, tq = lane & 3;
  const int RHk = p.R * p.Hk, RHq = p.R * p.Hq;
  const int n_kt = (p.S + BC - 1) / BC, n_bh = p.B * RHk, n_items = n_kt * n_bh;
  const int off = p.S - p.T;
  // Work item t: key tile kt of the (batch, kv head) pair bh. Order: pairs in groups of group_size whose dQ
  // accumulators fit in L2 together; inside a group the key tiles heaviest first (key tile 0 sees every query tile
  // when causal), pairs fastest. Pairs fastest over all items kept ~64 pairs' accumulators live (128 MB at
  // T = 4096, Dqk = 128): the reductions went to DRAM (60% busy) and the pass ran at 300 instead of 380 TFLOP/s.
  struct Item {  // keys n0 .. of kv head kvh (branch r, head hk) of batch b; steps over (query head, query tile)
    int b, kvh, r, hk, n0, m_first, n_m, n_steps;
  };
  constexpr int kItemInts = 8;  // an Item in shared memory (n_steps < 0: no more items)
  // The scheduler warp decodes each item once into shared memory; the other warps read its fields from there when
  // they need them (the producer warpgroup's 24 registers do not hold the decoding's values beside its loops).
  auto item_field = [&](int local, int f) { return ld_shared_s32(s_items + (local & 1) * kItemInts * 4 + 4 * f); };
  auto read_item = [&](int local) {
    Item w;
    w.b = item_field(local, 0), w.kvh = item_field(local, 1), w.r = item_field(local, 2), w.hk = item_field(local, 3);
    w.n0 = item_field(local, 4), w.m_first = item_field(local, 5), w.n_m = item_field(local, 6);
    w.n_steps = item_field(local, 7);
    return w;
  };

  // Full barriers: the TMA thread's arrival (+ bytes) and the lse/D warp's 32 lanes.
  // Empty barriers (stages, and K/V): one arrival per consumer warp.
  if (tid == 0) {
    init_pipeline_barriers(kv_full, full0, empty0, ST, 1 + 32, 4 * NCW);
    mbar_init(kv_empty, 4 * NCW);
    mbar_init_fence();
  }
  __syncthreads();

  // Register split after setmaxnreg: 128 x 24 + 256 x 240 = 64512 = the 384 x 168 the block is launched with;
  // three consumers: 128 x 24 + 384 x 160 = 64512 = 512 x 126.
  constexpr int kProducerRegs = 24, kConsumerRegs = NCW == 3 ? 160 : 240;
  if (wg == 0) {
    // Producer: warp 0 loads Q and dO per step (TMA), warp 1 copies lse and D (rows past T as zeros), warp 2 writes
    // dQ, warp 3 schedules the items and loads each one's K and V; a stage is refilled once every consumer warp
    // released it. Persistent (p.sm90_persistent): after its first item (blockIdx.x) the block takes the next from
    // a counter, the next item's first stages load while the consumers finish the current one, its K and V as soon
    // as they are done with the current K and V. Else the block does item blockIdx.x alone. Steps are counted over
    // the block's items (gs: stage gs % ST).
    setmaxnreg_dec<kProducerRegs>();
    if (warp == 3) {
      // Scheduler: takes the next item (persistent: from the counter), decodes it for the others, then loads its K
      // and V once the consumers are done with the last item's (kv_empty); the item (or the end, an arrival
      // without loads) reaches the consumers with this arrival.
      for (int local = 0, t = blockIdx.x;; ++local) {
        if (local > 0) {
          named_bar_sync(kBarNext, 64);  // warp 0 fetched it
          t = ld_shared_s32(s_next);
        }
        const bool done = t >= n_items;
        if (lane == 0) {
          const uint32_t slot = s_items + (local & 1) * kItemInts * 4;
          if (done) {
            st_shared_s32(slot + 4 * 7, -1);
          } else {
            const int group = t / (group_size * n_kt), first = group * group_size;
            const int in_group = min(group_size, n_bh - first), rem = t - first * n_kt;
            const int kt = rem / in_group, bh = first + rem % in_group;
            const int b = bh / RHk, kvh = bh - b * RHk, r = kvh / p.Hk, n0 = kt * BC;
            const int m_first = p.causal ? max(0, n0 - off) / BR : 0, n_m = (p.T + BR - 1) / BR - m_first;
            const int f[kItemInts] = {b, kvh, r, kvh - r * p.Hk, n0, m_first, n_m, p.G * n_m};
#pragma unroll
            for (int x = 0; x < kItemInts; ++x) st_shared_s32(slot + 4 * x, f[x]);
          }
        }
        named_bar_sync(kBarItem, 96);  // the slot is read until the barrier after next
        if (lane == 0) {
          if (local > 0) mbar_wait(kv_empty, (local - 1) & 1);
          if (done) {
            mbar_arrive(kv_full);
          } else {
            const int kvh = item_field(local, 1), n0 = item_field(local, 4), b = item_field(local, 0);
            mbar_arrive_expect_tx(kv_full, BC * (DQK + DV) * 2);
            for (int c = 0; c < DQK / 64; ++c) tma_load_4d(sK + c * BC * 128, &maps.k, c * 64, kvh, n0, b, kv_full);
            for (int c = 0; c < DV / 64; ++c) tma_load_4d(sV + c * BC * 128, &maps.v, c * 64, kvh, n0, b, kv_full);
          }
        }
        __syncwarp();
        if (done) break;
      }
    } else if (warp <= 1) {
      // Warp 0 loads Q and dO, warp 1 copies lse and D, step after step over the block's items (gs: stage gs % ST).
      for (int local = 0, gs = 0;; ++local) {
        named_bar_sync(kBarItem, 96);
        const int n_steps = item_field(local, 7);
        if (n_steps < 0) break;
        const int g_end = gs + n_steps;
        if (warp == 0) {
          if (lane == 0) {
            // In registers for the loop: no shared-memory read between a stage's release and its loads (at (64,64)
            // the reads inside the loop cost 1-2%).
            const int b = item_field(local, 0), m_first = item_field(local, 5);
            const int q_end = m_first + item_field(local, 6);
            const int vh0 = item_field(local, 2) * p.Hq;
            for (int g = gs, qt = m_first, i = item_field(local, 3) * p.G; g < g_end; ++g) {
              const int s = g % ST;
              if (g >= ST) mbar_wait(empty0 + 8 * s, (g / ST - 1) & 1);
              const uint32_t full = full0 + 8 * s;
              mbar_arrive_expect_tx(full, BR * (DQK + DV) * 2);
              for (int c = 0; c < DQK / 64; ++c)
                tma_load_4d(sQ + s * BR * DQK * 2 + c * BR * 128, &maps.q, c * 64, i, qt * BR, b, full);
              for (int c = 0; c < DV / 64; ++c)
                tma_load_4d(sdO + s * BR * DV * 2 + c * BR * 128, &maps.dout, c * 64, vh0 + i, qt * BR, b, full);
              if (++qt == q_end) qt = m_first, ++i;
            }
            // The next item, claimed once this one's loads are all issued (about two steps before its end): claimed
            // any earlier, a block would hold on to an item while others run dry at the end of the pass.
            const int next = p.sm90_persistent ? sched_next_item(p.sm90_sched) : n_items;
            st_shared_s32(s_next, next);
            if (next >= n_items && p.sm90_persistent) sched_block_done(p.sm90_sched);
          }
          __syncwarp();
          named_bar_arrive(kBarNext, 64);
        } else {
          // Offset of the step's (batch, query head) row of lse and D.
          const int vh = item_field(local, 2) * p.Hq + item_field(local, 3) * p.G;  // the item's first query head
          int64_t row = (int64_t(item_field(local, 0)) * RHq + vh) * p.T;
          const int m_first = item_field(local, 5), q_end = m_first + item_field(local, 6);
          for (int g = gs, qt = m_first; g < g_end; ++g) {
            const int s = g % ST;
            if (g >= ST) mbar_wait(empty0 + 8 * s, (g / ST - 1) & 1);
            const uint32_t dst = sLDa + s * 2 * BR * 4;
#pragma unroll
            for (int e = lane; e < BR; e += 32) {
              const int tt = qt * BR + e;
              // lse in log2 units, as the consumers' exp2 takes it
              st_shared_f32(dst + 4 * e, tt < p.T ? p.lse[row + tt] * kLog2e : 0.f);
              st_shared_f32(dst + 4 * (BR + e), tt < p.T ? p.delta[row + tt] : 0.f);
            }
            mbar_arrive(full0 + 8 * s);
            if (++qt == q_end) qt = m_first, row += p.T;
          }
        }
        gs = g_end;
      }
    } else if (warp == 2 && p.atomic_dq) {
      // dQ writer: each staged tile into the (B, Hq, T/64, BR x DQK) accumulator at the offset consumer 0 left
      // beside it (-1: the block is done), by one bulk copy; the staging buffer is handed back once the copy has read
      // it. The accumulator is not zeroed: the tile's first contribution (the first to count itself in the tile's
      // counter) is stored, and marks the tile stored once its writes are done; the others wait for that mark, then
      // add theirs with a bulk reduction (FlashAttention-3's semaphore pattern: acquire, bulk op / release after
      // its wait). Every tile has a first contribution: key tile 0 reaches every query tile (m_first = 0).
      // Dqk 96 (the 128 kernel): only the real columns, the first acc_tile floats of the fragment order.
      const int acc_tile = BR * dq_accum_cols(p.dqk);
      for (;;) {
        named_bar_sync(kBarDqFull, kDqThreads);
        const int tile = ld_shared_s32(s_dq_dst);
        if (tile < 0) break;
        int* state = p.dq_state + tile;
        bool first = false;
        if (lane == 0) {
          float* dst = p.dq_accum + int64_t(tile) * acc_tile;
          const int seen = p.dq_state ? atomicAdd(state, 1) : kDqTileStored;  // null: accumulator zeroed
          first = seen == 0;
          if (first) {
            bulk_store(dst, sdQ, acc_tile * 4);
          } else {
            if (!(seen & kDqTileStored))
              while (!(ld_acquire_gpu(state) & kDqTileStored)) __nanosleep(32);
            fence_proxy_async_global();
            bulk_reduce_add_f32(dst, sdQ, acc_tile * 4);
          }
          bulk_commit();
          bulk_wait_read();
        }
        __syncwarp();
        named_bar_arrive(kBarDqEmpty, kDqThreads);  // the consumers may stage the next tile meanwhile
        if (first) {  // the store's writes done (and this thread's earlier reductions), then the mark
          bulk_wait_all();
          fence_proxy_async_global();
          __threadfence();
          atomicOr(state, kDqTileStored);
        }
      }
      if (lane == 0) bulk_wait_all();
    }
    return;
  }
  setmaxnreg_inc<kConsumerRegs>();
  // Through a shuffle from lane 0 the compiler knows cw is warp-uniform, so that descriptor arithmetic on it can
  // stay in uniform registers.
  const int cw = __shfl_sync(0xffffffffu, wg - 1, 0);
  const int key_row = cw * 64 + (warp & 3) * 16 + g;  // this thread's keys in the block: key_row, key_row + 8

  // The K block of dQ = dS K (MN-major B): the same every step.
  const uint64_t d_K = smem_desc(sK, BC * 128, 1024);
  const int n_tiles = (p.T + BR - 1) / BR;
  int gs = 0;  // steps of the block's earlier items: stage gs % ST, dS^T buffer gs % 2
  for (int local = 0;; ++local) {
    mbar_wait(kv_full, local & 1);
    const Item w = read_item(local);
    if (w.n_steps < 0) break;
    const int n0 = w.n0;
    float dk[DQK / 2], dv[DV / 2];
#pragma unroll
    for (int x = 0; x < DQK / 2; ++x) dk[x] = 0.f;
#pragma unroll
    for (int x = 0; x < DV / 2; ++x) dv[x] = 0.f;

    // qt: query tile of the step's query head ii (counters: no division per step).
    for (int step = 0, qt = w.m_first, ii = 0; step < w.n_steps; ++step, ++gs) {
      const int s = gs % ST;
      const int q0 = qt * BR;
      const int dq_tile = (w.b * p.Hq + w.hk * p.G + ii) * n_tiles + qt;  // < 2^31 (checked on the host)
      if (++qt == w.m_first + w.n_m) qt = w.m_first, ++ii;
      mbar_wait(full0 + 8 * s, (gs / ST) & 1);
      const uint32_t sQs = sQ + s * BR * DQK * 2, sdOs = sdO + s * BR * DV * 2;
      const uint32_t sdSs = sdS + (kDsBuffers == 2 ? (gs & 1) * BC * BR * 2 : 0);
      // Descriptors of the step's MN-major B operands (dV: dO, dK: Q) and of dS^T as dQ's A; k-steps add offsets.
      const uint64_t d_dO = smem_desc(sdOs, BR * 128, 1024), d_Q = smem_desc(sQs, BR * 128, 1024);
      const uint64_t d_dS = smem_desc(sdSs, BC * 128, 1024);
      const float* sL = sLD + s * 2 * BR;
      const float* sD = sL + BR;

      // S^T = K Q^T and dP^T = V dO^T (64 keys x 64 queries per warpgroup), committed as two groups so that P^T
      // is computed while dP^T runs, and dV += P^T dO runs while dS^T is computed. At Dqk = 192 (kLowRegs) dP^T
      // is issued only after P^T is in bf16 fragments: S^T and dP^T live at once next to dK 96 + dV 64 do not fit
      // a consumer's 240 registers (ptxas spilled ~380 bytes).
      constexpr bool kLowRegs = DQK == 192 || NCW == 3;  // three consumers: 160 registers for dK 32 + dV 32
      // A consumer whose keys all come after the step's last query (causal diagonal, or past S) skips its GEMMs and
      // stores a zero dS^T for the dQ product: at (64,64), 192 keys a block, 3 of the first 9 consumer steps.
      // Only with three consumers: with two (one dead step in ~33 at T = 4096) the branches cost more (-0.5 to -1%).
      const bool dead = NCW == 3 && ((p.causal && n0 + cw * 64 > q0 + BR - 1 + off) || n0 + cw * 64 >= p.S);
      uint32_t sa[BR / 16][4];
      if (!dead) {
        float st[32], dpt[32];
        auto issue_dpt = [&] {
          wgmma_ss_kmajor<DV, 64>(dpt, sV + cw * 64 * 128, BC * 128, sdOs, BR * 128);
          wgmma_commit();
        };
        wgmma_fence();
        wgmma_ss_kmajor<DQK, 64>(st, sK + cw * 64 * 128, BC * 128, sQs, BR * 128);
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
        uint32_t pa[BR / 16][4];
        // Two copies of the loop, so that the unmasked steps (most) carry no per-element branches.
        auto exp_scores = [&](auto masked) {
#pragma unroll
          for (int x = 0; x < 32; x += 2) {
            const int qc = 8 * (x >> 2) + 2 * tq;
            const float2 l2 = *reinterpret_cast<const float2*>(sL + qc);
#pragma unroll
            for (int e = 0; e < 2; ++e) {
              float pr = fast_exp2(fmaf(st[x + e], p.scale_log2, -(e ? l2.y : l2.x)));
              if constexpr (decltype(masked)::value) {
                const int key = n0 + key_row + 8 * ((x & 3) >> 1), t = q0 + qc + e;
                if (key >= p.S || t >= p.T || (p.causal && key > t + off)) pr = 0.f;
              }
              st[x + e] = pr;
            }
            pa[x >> 3][(x & 7) >> 1] = pack_bf16(st[x], st[x + 1]);
          }
        };
        if (need_mask)
          exp_scores(std::true_type{});
        else
          exp_scores(std::false_type{});

        // dV += P^T dO (after dP^T with kLowRegs).
        wgmma_fence();
        if constexpr (kLowRegs) issue_dpt();
        pin(dv);
#pragma unroll
        for (int kk = 0; kk < BR / 16; ++kk)
          wgmma_rs_tb<DV>(dv, pa[kk], desc_advance(d_dO, kk * 16 * 128));
        wgmma_commit();
        // dP^T done; dV keeps running except with kLowRegs: at Dqk = 192 dV left in flight through the dS^T code
        // below (its A fragments and accumulators held next to dK 96, dP^T 32, P^T and dS^T fragments) made ptxas
        // serialize every wgmma of the kernel (advisory C7512: a wait after each k-step of every GEMM); waiting here
        // lets the rest overlap: 310 -> 347 TFLOP/s at B=4, T=4096 (docs/attention_kernels.md, v23).
        if constexpr (kLowRegs)
          wgmma_wait<0>();
        else
          wgmma_wait<1>();
        pin(dpt);

        // dS^T = P^T (dP^T - D), as bf16 A fragments. At Dqk = 192 P^T is taken back from its bf16 fragments (dS^T
        // is rounded to bf16 right after anyway): keeping the fp32 copy live here needs 32 registers the 240 of a
        // consumer do not have (dK 96 + dV 64 + dP^T 32 + fragments), and spills cost more than the rounding.
#pragma unroll
        for (int x = 0; x < 32; x += 2) {
          const float2 d2 = *reinterpret_cast<const float2*>(sD + 8 * (x >> 2) + 2 * tq);
          float2 pr = make_float2(st[x], st[x + 1]);
          if constexpr (kLowRegs)
            pr = __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(&pa[x >> 3][(x & 7) >> 1]));
          sa[x >> 3][(x & 7) >> 1] = pack_bf16(pr.x * (dpt[x] - d2.x), pr.y * (dpt[x + 1] - d2.y));
        }
      } else {
#pragma unroll
        for (int kk = 0; kk < BR / 16; ++kk) sa[kk][0] = sa[kk][1] = sa[kk][2] = sa[kk][3] = 0u;
      }

      // dS^T to shared memory for the dQ GEMM: row = key (128 bytes = 64 queries), 16-byte chunks swizzled by
      // row % 8. sa[kk][j] holds keys key_row + 8 (j & 1), queries 16 kk + 8 (j >> 1) + 2 tq + {0, 1}: element
      // (g, 2 tq) of the 8 x 8 matrix j that stmatrix stores, so one stmatrix.x4 per kk (was four 4-byte stores
      // per kk, each with its own swizzled address); lane i gives row i % 8 of matrix i / 8.
      if (p.atomic_dq) {
        // One buffer: consumer 1 waits for consumer 0's dQ GEMMs of the last step (consumer 0 ran them itself).
        if (!kCoupled && cw == 1 && gs > 0) named_bar_sync(kBarDsFree, NC);
        const int mj = lane >> 3, mrow = key_row - g + 8 * (mj & 1) + (lane & 7);  // mrow % 8 = lane % 8
        const uint32_t row_addr = sdSs + mrow * 128, xr = ((mj >> 1) ^ (lane & 7)) << 4;
#pragma unroll
        for (int kk = 0; kk < BR / 16; ++kk) stmatrix_x4(row_addr + (xr ^ (kk << 5)), sa[kk]);  // chunk 2 kk + mj / 2
        fence_proxy_async();
      }

      // dK += dS^T Q (left running while the warpgroups meet at the barrier below).
      if (!dead) {
        wgmma_fence();
        pin(dk);
#pragma unroll
        for (int kk = 0; kk < BR / 16; ++kk)
          wgmma_rs_tb<DQK>(dk, sa[kk], desc_advance(d_Q, kk * 16 * 128));
        wgmma_commit();
      }

      if (p.atomic_dq) {
        // Consumer 0, and consumer 1 when coupled, wait here for both dS^T halves and meet the writer's barriers;
        // uncoupled, consumer 1 only announces its half (kBarDsFree keeps it from arriving twice before consumer 0 has
        // waited here).
        const bool meets = cw == 0 || kCoupled;
        if (meets)
          named_bar_sync(kBarDsReady, NC);
        else
          named_bar_arrive(kBarDsReady, NC);
        if (meets && gs > 0) named_bar_sync(kBarDqEmpty, kDqThreads);  // writer read the last tile
        if (cw == 0) {
          // Staging order: column block cb, then float4 j of this thread's fragment, then the thread: a warp's
          // 16-byte stores are contiguous (conflict-free); flash_dq_tiles_cast_kernel maps it back to (row, column).
          const uint32_t stage = sdQ + (tid - 128) * 16;
          // Unrolled: +1-2% at (128,128) and (192,128) against the loop kept rolled (v86).
#pragma unroll
          for (int cb = 0; cb < kQBlocks; ++cb) {
            float acc[32];
            wgmma_fence();
#pragma unroll
            for (int kk = 0; kk < BC / 16; ++kk) {
              const uint64_t da = desc_advance(d_dS, kk * 16 * 128);
              const uint64_t db = desc_advance(d_K, cb * BC * 128 + kk * 16 * 128);
              wgmma_ss_m64n64k16<1, 1>(acc, da, db, kk > 0);
            }
            wgmma_commit();
            wgmma_wait_all();
            pin(acc);
            // dS^T read: consumer 1 may write the next step's (after the block's last step it waits once more).
            if (!kCoupled && cb == kQBlocks - 1) named_bar_arrive(kBarDsFree, NC);
#pragma unroll
            for (int j = 0; j < 8; ++j)
              asm volatile("st.shared.v4.f32 [%0], {%1, %2, %3, %4};\n" ::"r"(stage + (cb * 8 + j) * 128 * 16),
                           "f"(acc[4 * j]), "f"(acc[4 * j + 1]), "f"(acc[4 * j + 2]), "f"(acc[4 * j + 3])
                           : "memory");
          }
          fence_proxy_async();  // the stores above -> visible to the writer's bulk reduction (async proxy)
          if (tid == 128) st_shared_s32(s_dq_dst, dq_tile);
        }
        if (meets) named_bar_arrive(kBarDqFull, kDqThreads);
      }
      wgmma_wait_all();
      pin(dv);
      pin(dk);
      if (lane == 0) mbar_arrive(empty0 + 8 * s);  // this warp is done with the stage's Q, dO, lse, D
    }
    if (lane == 0) mbar_arrive(kv_empty);  // and with K and V: the next item's may load during the stores below

    // Epilogue: dK (scaled) and dV in bf16, contiguous (B, S, R*Hk, D).
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int key = n0 + key_row + 8 * h;
      if (key < p.S) {
        bf16* dkrow = p.dk + ((int64_t(w.b) * p.S + key) * RHk + w.kvh) * p.dqk + 2 * tq;
        bf16* dvrow = p.dv + ((int64_t(w.b) * p.S + key) * RHk + w.kvh) * DV + 2 * tq;
#pragma unroll
        for (int n = 0; n < DQK / 8; ++n)
          if (DQK != 128 || 8 * n < p.dqk)  // Dqk 96 on the 128 kernel: its pad columns are not written
            *reinterpret_cast<uint32_t*>(dkrow + 8 * n) =
                pack_bf16(dk[4 * n + 2 * h] * p.scale, dk[4 * n + 2 * h + 1] * p.scale);
#pragma unroll
        for (int n = 0; n < DV / 8; ++n)
          *reinterpret_cast<uint32_t*>(dvrow + 8 * n) = pack_bf16(dv[4 * n + 2 * h], dv[4 * n + 2 * h + 1]);
      }
    }
  }
  if (p.atomic_dq) {
    // The block's end: the named barriers' last rounds (consumer 0 arrived at kBarDsFree and the writer at
    // kBarDqEmpty after the last step too), then the writer's stop signal.
    if (!kCoupled && cw == 1 && gs > 0) named_bar_sync(kBarDsFree, NC);
    const bool meets = cw == 0 || kCoupled;
    if (meets) {
      if (gs > 0) named_bar_sync(kBarDqEmpty, kDqThreads);
      if (tid == 128) st_shared_s32(s_dq_dst, -1);
      named_bar_arrive(kBarDqFull, kDqThreads);
    }
  }
#endif
}

// The wgmma pass's dQ accumulator -> dq (B, T, Hq, Dqk) bf16, times the softmax scale. Block: one (b, 64-row tile,
// query head), heads fastest, so that the blocks in flight write whole (row, all heads) spans of dq. The tile
// (64 x Dqk fp32) is in the consumers' fragment order: float4 cb * 1024 + 128 j + t holds consumer thread t's
// accumulator elements 4 j .. 4 j + 3 of column block cb, i.e. rows 16 w + g and 16 w + g + 8 (w = t / 32,
// g = t % 32 / 4), columns 64 cb + 8 j + 2 (t % 4) + {0, 1}. It is read in that order (coalesced), turned into
// bf16 rows in shared memory and written as whole 16-byte pieces of rows. The first form ran at a third of the copy
// bandwidth: each thread loaded one float4 and stored it as 4-byte pieces straight from the fragment order (16
// bytes of a row per quad), load after store (nothing told the compiler dq and the accumulator do not overlap);
// both changed at once, so which cost more is not known.
constexpr int kCastThreads = 256;
template <int DQK>
constexpr int kCastRowBytes = DQK * 2 + 16;  // padded: a quad's 8 rows (g) land on distinct banks

template <int DQK>
__global__ void __launch_bounds__(kCastThreads) flash_dq_tiles_cast_kernel(const Params p) {
  __shared__ __align__(16) unsigned char rows[kB90BR * kCastRowBytes<DQK>];  // (64 rows, DQK) bf16, padded
  const int n_tiles = (p.T + kB90BR - 1) / kB90BR;
  const int i = blockIdx.x % p.Hq, tile = (blockIdx.x / p.Hq) % n_tiles, b = blockIdx.x / (p.Hq * n_tiles);
  const int tile_f4 = kB90BR * dq_accum_cols(p.dqk) / 4;  // Dqk 96: the first 3/4 of the fragment order
  const float4* src =
      reinterpret_cast<const float4*>(p.dq_accum) + ((int64_t(b) * p.Hq + i) * n_tiles + tile) * tile_f4;
  constexpr int kIn = kB90BR * DQK / 4 / kCastThreads;  // float4s per thread (at most)
  float4 v[kIn];
#pragma unroll
  for (int x = 0; x < kIn; ++x)  // all loads in flight at once
    if (x * kCastThreads + threadIdx.x < tile_f4) v[x] = src[x * kCastThreads + threadIdx.x];
#pragma unroll
  for (int x = 0; x < kIn; ++x) {
    const int f = x * kCastThreads + threadIdx.x, t = f & 127, j = (f >> 7) & 7, cb = f >> 10;
    if (f >= tile_f4) break;
    const int r0 = 16 * (t >> 5) + ((t & 31) >> 2), col = 64 * cb + 8 * j + 2 * (t & 3);
    unsigned char* dst = rows + r0 * kCastRowBytes<DQK> + col * 2;
    *reinterpret_cast<uint32_t*>(dst) = pack_bf16(v[x].x * p.scale, v[x].y * p.scale);
    *reinterpret_cast<uint32_t*>(dst + 8 * kCastRowBytes<DQK>) = pack_bf16(v[x].z * p.scale, v[x].w * p.scale);
  }
  __syncthreads();
  const int pieces = p.dqk / 8;  // 16-byte pieces per dq row (Dqk 96 on the 128 kernel: the pad is not written)
  for (int f = threadIdx.x; f < kB90BR * pieces; f += kCastThreads) {
    const int r = f / pieces, c = f % pieces, row = tile * kB90BR + r;
    if (row < p.T)
      *reinterpret_cast<uint4*>(p.dq + ((int64_t(b) * p.T + row) * p.Hq + i) * p.dqk + 8 * c) =
          *reinterpret_cast<const uint4*>(rows + r * kCastRowBytes<DQK> + 16 * c);
  }
}

template <int DQK, int DV>
void run_bwd_sm90(const Params& p, cudaStream_t stream) {
  constexpr int smem = bwd_sm90_smem_bytes<DQK, DV>(), BC = kB90BC<DQK, DV>;
  allow_dynamic_smem(flash_bwd_sm90_kernel<DQK, DV>, smem);
  BwdTmaMaps maps;
  const int rhk = p.R * p.Hk, rhq = p.R * p.Hq;
  maps.q = tma_map_bf16(p.q, p.dqk, p.Hq, p.T, p.B, p.q_sh, p.q_st, p.q_sb, kB90BR);  // p.dqk < DQK: zeros past it
  maps.dout = tma_map_bf16(p.dout, DV, rhq, p.T, p.B, p.do_sh, p.do_st, p.do_sb, kB90BR);
  maps.k = tma_map_bf16(p.k, p.dqk, rhk, p.S, p.B, p.k_sh, p.k_st, p.k_sb, BC);
  maps.v = tma_map_bf16(p.v, DV, rhk, p.S, p.B, p.v_sh, p.v_st, p.v_sb, BC);
  const int n_kt = (p.S + BC - 1) / BC, n_tiles = (p.T + kB90BR - 1) / kB90BR;
  // Pairs per group: their dQ accumulators (G query heads x T x Dqk fp32 each) within ~16 MB of the 50 MB L2.
  const int64_t acc_bytes = int64_t(p.G) * n_tiles * kB90BR * DQK * 4;
  const int group_size = static_cast<int>(std::max<int64_t>(1, (int64_t(16) << 20) / std::max<int64_t>(1, acc_bytes)));
  const int64_t items = int64_t(n_kt) * p.B * p.R * p.Hk;
  LATTE_CHECK(items < (int64_t(1) << 31), "flash attention (sm90) backward: ", items, " key tiles, more than 2^31");
  LATTE_CHECK(int64_t(p.B) * p.Hq * n_tiles < (int64_t(1) << 31), "flash attention (sm90) backward: ",
              int64_t(p.B) * p.Hq * n_tiles, " dQ tiles (B x Hq x T/64), more than 2^31");
  // Persistent: one block per SM (the shared memory and registers of a block fill an SM).
  Params q = p;
  const int sms = device_properties().multiProcessorCount;
  const int blocks = q.sm90_persistent ? static_cast<int>(std::min<int64_t>(items, sms)) : static_cast<int>(items);
  q.sm90_sched = q.sm90_persistent ? sm90_scheduler_counters(stream) : nullptr;
  flash_bwd_sm90_kernel<DQK, DV><<<blocks, kB90Threads<DQK, DV>, smem, stream>>>(q, maps, group_size);
  CUDA_CHECK_LAUNCH("flash_bwd_sm90_kernel");
  if (p.atomic_dq) {
    flash_dq_tiles_cast_kernel<DQK><<<p.B * n_tiles * p.Hq, kCastThreads, 0, stream>>>(p);
    CUDA_CHECK_LAUNCH("flash_dq_tiles_cast_kernel");
  }
}

}  // namespace

bool bwd_sm90_supported(int dqk, int dv) {
  return sm90_head_dims(dqk, dv) && device_has_sm90_kernels() && tma_available();
}

void launch_bwd_dkdv_sm90(const Params& p, int dqk, int dv, cudaStream_t stream) {
  dispatch_head_dims<false>(sm90_kernel_dqk(dqk), dv, "backward (sm90)",
                            [&](auto a, auto c) { run_bwd_sm90<a, c>(p, stream); });
}

}  // namespace latte::cuda::flash
