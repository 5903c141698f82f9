// Differentiable neural-network ops: norms, RoPE, SwiGLU, attention and the MLRA branch sum.
#pragma once
#include "core/tensor.h"

namespace latte {

// RMSNorm over the last dim of x (..., D) with gain weight (D).
Tensor rmsnorm(const Tensor& x, const Tensor& weight, double eps);
// Norm over `groups` equal groups of the last dim of x (..., G*Dg): LayerNorm, or RMSNorm when rms;
// weight/bias (G*Dg) optional (undefined = no affine / no bias).
Tensor group_norm(const Tensor& x, const Tensor& weight, const Tensor& bias, int64_t groups, double eps, bool rms);
inline Tensor layernorm(const Tensor& x, const Tensor& weight, const Tensor& bias, double eps) {
  return group_norm(x, weight, bias, 1, eps, false);
}

// Rotate-half RoPE on channels [rope_offset, rope_offset + 2*inv_freq.numel()) of every head of x (B, T, H, D);
// positions start_pos + t. inv_freq (R/2) f32 on x's device (see layers/rope.h).
Tensor rope(const Tensor& x, const Tensor& inv_freq, int64_t start_pos, int64_t rope_offset = 0);
// The same, rotating x's memory in place when nothing else can see it (a projection's output the caller hands
// over: `q = rope(std::move(q), ...)`): the channels outside the rope range are then neither read nor copied.
// Otherwise as above.
Tensor rope(Tensor&& x, const Tensor& inv_freq, int64_t start_pos, int64_t rope_offset = 0);

Tensor swiglu(const Tensor& gate, const Tensor& up);       // silu(gate) * up

// q (B, T, Hq, Dqk), k (B, S, R*Hk, Dqk), v (B, S, R*Hk, Dv) -> (B, T, R*Hq, Dv); see op_decls.inc.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, int64_t branches, double softmax_scale,
                 bool causal = true);
// Decoding one token per sequence against a KV cache (inference only: no gradient; throws when an input
// would need one). Each returns an undefined Tensor when the device has no kernel for these tensors (CUDA:
// bf16 and the widths of kernels/cuda/decode_attention.h); the caller then uses attention().
// q (B, Hq, Dqk), k (B, S, Hk, Dqk), v (B, S, Hk, Dv) -> (B, Hq, Dv); every cached position is visible.
// ready_rows: cache rows written before the previous kernel (a decode step's start position; op_decls.inc).
Tensor decode_attention(const Tensor& q, const Tensor& k, const Tensor& v, double softmax_scale,
                        int64_t ready_rows = 0);
// Absorbed latent: q_abs (B, H, Dc), q_rope (B, H, Dr), c (B, S, Dc), kr (B, S, Dr) -> z (B, H, Dc) =
// softmax(scale (q_abs.c_j + q_rope.kr_j)) @ c. q_rope and kr may both be undefined (no rope part).
Tensor decode_attention_latent(const Tensor& q_abs, const Tensor& q_rope, const Tensor& c, const Tensor& kr,
                               double softmax_scale, int64_t ready_rows = 0);
// x (B, T, R*H, D) -> scale * sum over the R branches, (B, T, H, D).
Tensor branch_sum(const Tensor& x, int64_t branches, double scale);

}  // namespace latte
