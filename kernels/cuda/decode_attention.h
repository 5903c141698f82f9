// Decode attention: one new query token per sequence against a long KV cache (kernels/cuda/decode_attention.cu).
// Memory-bound: every cached byte is read once per step, so the kernels split the cache over blocks
// (flash-decoding) to fill the GPU at batch 1 and combine the partial softmaxes in a second pass.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace latte::cuda {

// MHA / GQA / MQA (non-causal over the whole cache: the new token sees every cached position, itself included):
//   q (B, Hq, Dqk) or (B, 1, Hq, Dqk)      k (B, S, Hk, Dqk)   v (B, S, Hk, Dv)   (caches: strided views, e.g. the
//   first S positions of a larger buffer)   out (B, Hq, Dv) or (B, 1, Hq, Dv)      head i reads kv head i / (Hq/Hk)
// lse (B, Hq) f32 is optional (undefined Tensor: not written). ready_rows (op_decls.inc): on sm_90a the 16-row split
// kernel (TMA tiles: GQA, and latent rows with up to 32 heads) starts loading the tiles of cache rows
// [0, ready_rows) before the stream's previous kernel has finished.
// Supported: bf16 CUDA tensors, Dqk a multiple of 16 up to 512, Dv in {64, 96, 128, 192, 256, 512}, rows 16-byte
// aligned (strides multiples of 8 elements).
bool decode_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out);
void decode_attention(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                      double softmax_scale, int64_t ready_rows);

// Absorbed latent decode for MLA / MLRA (per latent block) / EG-MLA (latent gate), spec/attention.md:
//   q_abs (B, H, Dc)   q_rope (B, H, Dr)   c (B, S, Dc)   kr (B, S, Dr)   ->   z (B, H, Dc)
//   z_h = softmax_j(scale (q_abs_h . c_j + q_rope_h . kr_j)) @ c      (output in latent space; o_h = W_UV,h z_h)
// All heads share one latent cache, read once per head tile: 16 heads, or on sm_90a with Dc 512, Dr 64 and more
// than 16 heads 64 (the wgmma kernel, decode_latent_sm90.cu). Dr may be 0 (q_rope, kr undefined).
// lse (B, H) f32 optional. Supported: bf16, Dc in {64, 96, 128, 192, 256, 512}, Dr a multiple of 16 with
// Dc + Dr <= 640, 16-byte aligned rows.
bool decode_attention_latent_supported(const Tensor& q_abs, const Tensor& q_rope, const Tensor& c, const Tensor& kr,
                                       const Tensor& z);
void decode_attention_latent(const Tensor& z, const Tensor& lse, const Tensor& q_abs, const Tensor& q_rope,
                             const Tensor& c, const Tensor& kr, double softmax_scale, int64_t ready_rows);

}  // namespace latte::cuda
