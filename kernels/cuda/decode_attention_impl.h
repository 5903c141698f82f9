// Internals shared by the decode kernels (decode_attention.cu: the split pass for every shape and the combine;
// decode_latent_sm90.cu: the wgmma split pass for the MLA latent cache with many heads).
#pragma once
#include <cuda_runtime.h>
#include <cudaTypedefs.h>  // CUtensorMap

#include <cstdint>

#include "kernels/cuda/flash_attention_impl.cuh"  // flash::bf16

namespace latte::cuda {

struct DecodeParams {
  const flash::bf16* q1;  // (B, H, D1) rows: b * q1_sb + h * q1_sh
  const flash::bf16* q2;  // (B, H, D2)
  const flash::bf16* k1;  // (B, S, Hk, D1): b * k1_sb + s * k1_ss + kvh * k1_sh
  const flash::bf16* k2;  // (B, S, Hk, D2)
  const flash::bf16* v;   // (B, S, Hk, DV) (unused when v_is_k1)
  int64_t q1_sb, q1_sh, q2_sb, q2_sh;
  int64_t k1_sb, k1_ss, k1_sh, k2_sb, k2_ss, k2_sh, v_sb, v_ss, v_sh;
  int D1, D2, DV;
  int B, S, H, Hk, G;  // head h reads kv head h / G
  int splits;  // split k reads the key tiles k, k + splits, k + 2 splits, ... (split_tiles)
  float scale_log2;
  bool v_is_k1;
  bool cache_evict_first;  // TMA cache loads marked L2 evict-first (read once; keeps the partials in L2)
  // Cache rows [0, ready_rows) were written before the stream's previous kernel started (earlier decode steps): pass
  // 1 may load their tiles before that kernel has finished (before griddepcontrol.wait). 0: nothing before it.
  int ready_rows;
  float* part_o;   // (splits, B, H, DV)
  float* part_ml;  // (splits, B, H, 2): m (log2 units), l
  flash::bf16* out;  // (B, H, DV): b * o_sb + h * o_sh
  int64_t o_sb, o_sh;
  float* lse;  // (B, H) or null
};

// A launch configuration for cudaLaunchKernelEx: a programmatic dependent of the stream's previous kernel when
// `dependent` (the kernel then waits in griddepcontrol.wait before reading that kernel's output).
struct DependentLaunch {
  cudaLaunchAttribute attr{};
  cudaLaunchConfig_t config{};
  DependentLaunch(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, bool dependent) {
    attr.id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr.val.programmaticStreamSerializationAllowed = 1;
    config.gridDim = grid;
    config.blockDim = block;
    config.dynamicSmemBytes = smem;
    config.stream = stream;
    config.attrs = &attr;  // points into this object: not copyable
    config.numAttrs = dependent ? 1 : 0;
  }
  DependentLaunch(const DependentLaunch&) = delete;
  DependentLaunch& operator=(const DependentLaunch&) = delete;
};

// The key tiles (kt keys each) one split reads: tile t starts at key first + t * step; keys >= end are masked.
// Interleaved (split k takes tiles k, k + splits, ...) rather than one run of keys per split: at any moment the
// blocks read neighbouring tiles, one region of the cache (session 10, two A/B runs on the H100: +2-5% at B=1 and
// B=4 for the 16-row kernel, GQA and latent; no change for the wgmma kernel).
struct SplitTiles {
  int first, step, end, n;
};
__device__ __forceinline__ SplitTiles split_tiles(const DecodeParams& p, int split, int kt) {
  const int total = (p.S + kt - 1) / kt;
  return {split * kt, p.splits * kt, p.S, (total - split + p.splits - 1) / p.splits};
}

// TMA descriptors of a cache for decode_attention.cu's split kernel, boxes of 64 columns x 64 rows, 128-byte
// swizzle (defined in decode_latent_sm90.cu): latent a = c as (Dc, 1, S, B), b = kr as (Dr, 1, S, B); GQA
// a = K as (Dqk, Hk, S, B), b = V as (Dv, Hk, S, B). Latent rows of Dc 96, Dr 32: boxes of 32 columns, 64-byte
// swizzle (the kernel's TMA_COLS = 32).
struct DecodeTileMaps {
  CUtensorMap a, b;
};
// True when the split kernel can load this cache with TMA: an sm_90a build on an sm_90 device with the driver's
// TMA entry point, 16-byte aligned rows; latent: Dc 512, 256 or 192 with Dr 64, or Dc 96 with Dr 32 (any head
// count: 16 per block); GQA: Dqk and Dv 64 or 128.
bool latent_tma_supported(const DecodeParams& p);
bool gqa_tma_supported(const DecodeParams& p);
DecodeTileMaps latent_tile_maps(const DecodeParams& p);
DecodeTileMaps gqa_tile_maps(const DecodeParams& p);

// The wgmma split pass (sm_90a) for the absorbed MLA latent rows, Dc = 512 and Dr = 64, 64 heads per block: true
// for more than 32 heads (up to 32 the 16-row kernel with TMA tiles measured faster) when this build and device
// run it and the tensors suit its TMA loads (16-byte aligned rows and strides).
bool decode_latent_sm90_supported(const DecodeParams& p);
// Shared memory the kernel takes (one block per SM).
int decode_latent_sm90_smem_bytes();
// Pass 1 over grid (ceil(H / 64), B, p.splits): p.part_o / p.part_ml of every (split, b, head); a programmatic
// dependent of the stream's previous kernel when `dependent`.
void launch_decode_latent_sm90(const DecodeParams& p, cudaStream_t stream, bool dependent);

}  // namespace latte::cuda
