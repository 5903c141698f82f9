// latte's own fused (flash) attention for the CUDA backend: the fast path behind cuda::attention_forward /
// attention_backward (kernels/op_decls.inc). Same tensor semantics as that contract:
//   q (B, T, Hq, Dqk)   k (B, S, R*Hk, Dqk)   v (B, S, R*Hk, Dv)   out (B, T, R*Hq, Dv)   lse (B, R*Hq, T) f32
// Virtual head (r, i) uses query head i and kv head r*Hk + i/(Hq/Hk) and writes out head r*Hq + i; causal query
// t sees keys j <= t + S - T (S >= T). q/k/v/out/dout may be strided in B/T/H (last dim contiguous).
//
// Supported (flash_attention_supported): CUDA bf16 tensors on an sm_80+ device, (Dqk, Dv) with Dqk in
// {64, 96, 128, 192} and Dv in {64, 128}, every row start 16-byte aligned (strides in B/T/H multiples of 8
// elements, 16-byte aligned base). Anything else goes to the simple path in attention.cu.
// Kernels and their floors: kernels/cuda/flash_attention_fwd.cu, flash_attention_bwd.cu; notes and measured
// numbers: docs/attention_kernels.md.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace latte::cuda {

// True when the flash kernels handle these tensors (dtype, head dims, alignment, device); no throw.
bool flash_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out);

// Which forward kernel runs. kAuto: the Hopper wgmma kernel (flash_attention_fwd_sm90.cu) on an sm_90 device
// of an sm_90a build for Dqk in {64, 128, 192}, else the mma.sync kernel (any sm_80+). The others force one
// (kWgmma falls back to mma.sync where it cannot run). Process-wide; for tests and benchmarks. The environment
// variable LATTE_FLASH_NO_WGMMA (any value) turns the wgmma kernel off.
enum class FlashKernel { kAuto, kMmaSync, kWgmma };
void flash_attention_set_forward_kernel(FlashKernel kernel);
// The same choice for the backward's key-major dK/dV (+ atomic dQ) pass: flash_attention_bwd_sm90.cu on wgmma
// for Dqk in {64, 128, 192}, else flash_attention_bwd.cu on mma.sync. LATTE_FLASH_NO_WGMMA or
// LATTE_FLASH_NO_WGMMA_BWD in the environment turns the wgmma pass off.
void flash_attention_set_backward_kernel(FlashKernel kernel);
// Ping-pong scheduling of the wgmma forward's consumer warpgroups (two, three at (64,64)) on the overlapped schedule
// (default on, +0-7% measured in session 21): they take turns issuing their GEMMs, so one's softmax runs while the
// others' products do. LATTE_FLASH_NO_PINGPONG in the environment forces it off; for benchmarks and tests.
void flash_attention_set_sm90_pingpong(bool on);
// Overlapped schedule of the wgmma forward (default on): each consumer issues S of key tile j together with P V of
// tile j - 1 (FlashAttention-3's intra-warpgroup pipelining); off: S, softmax, P V in turn, without ping-pong.
// LATTE_FLASH_OVERLAP=0 in the environment forces it off; for benchmarks and tests.
void flash_attention_set_sm90_overlap(bool on);
// Persistent wgmma kernels (default on). Forward: one block per SM takes query tiles from a counter, heaviest first
// within groups of heads whose K and V fit in L2, and loads the next tile's Q and first keys while it finishes the
// current one; backward: one block per SM takes key tiles (in the order of the one-block-per-tile grid) and loads
// the next one's K, V and first Q/dO stages while it finishes the current one. Off: one block per tile.
// LATTE_FLASH_PERSISTENT=0 in the environment forces both off, and LATTE_FLASH_LPT=0 keeps the forward's grid order
// (each head's tiles heaviest first, head after head); for benchmarks and tests.
void flash_attention_set_sm90_persistent(bool on);

// Forward: writes out and lse. Runs on the current stream.
void flash_attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                             int64_t branches, double softmax_scale, bool causal);

// Backward: writes dq, dk, dv (contiguous, same shapes as q, k, v). dK/dV are summed over the query heads that
// share a kv head inside one block (fixed order, always deterministic). dQ is summed over key tiles and MLRA
// branches: in fp32, in whatever order the blocks get there, when !deterministic (fastest: atomics on mma.sync,
// bulk reductions on wgmma), else by a separate query-major kernel that recomputes the probabilities (about 1.4x
// the FLOPs, bitwise reproducible; on wgmma too on sm_90a).
void flash_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                              const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                              int64_t branches, double softmax_scale, bool causal, bool deterministic);

}  // namespace latte::cuda
