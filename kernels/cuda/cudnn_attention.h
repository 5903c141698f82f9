// cuDNN SDPA as a second attention backend (kernels/cuda/cudnn_attention.cpp), same tensor semantics as
// cuda::attention_forward / attention_backward (kernels/op_decls.inc):
//   q (B, T, Hq, Dqk)   k (B, S, R*Hk, Dqk)   v (B, S, R*Hk, Dv)   out (B, T, R*Hq, Dv)   lse (B, R*Hq, T) f32
// The forward and backward are cuDNN runtime-fused graphs built through the backend API (cudnn_graph.h):
//   forward   S = (Q K^T) scale, causal mask from generated row/column indices, softmax as max / sub / exp /
//             sum / log (lse = max + log sum, natural log: the same lse latte's flash kernels save) / div,
//             O = P V
//   backward  cudnn_frontend's graph: delta = rowsum(dO o O) (kept in memory), P = exp(S scale - lse) with the
//             causal mask after the subtraction, dV = P^T dO, dS = P (dO V^T - delta) scale, dK = dS^T Q,
//             dQ = dS K (fp32 accumulator, cleared by cuDNN >= 9.6, then cast)
// GQA/MQA are native (K/V heads shared; dK/dV summed by a head reduction). MLRA branches run as R calls of the
// same plan on the branch's K/V/out/lse slices; dQ of branches after the first is added in (axpy).
// Plans are cached per shape and strides (building one compiles kernels: ~0.1-1 s, once). cuDNN's heuristics list
// up to three engine configurations for these graphs; each that finalizes gets a plan, and the first call of a
// shape keeps those that agree with the first plan, times them (attention_autotune) and runs the fastest.
//
// Supported: built with cuDNN, an sm_80+ device, bf16, Dqk and Dv multiples of 8 up to 256, 16-byte aligned
// rows (strides multiples of 8 elements), causal only with T == S (cuDNN's top-left diagonal), and a cuDNN
// engine that accepts the graph. The backward is not bitwise deterministic (atomic dQ accumulation).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace latte::cuda {

// Empty when cuDNN runs this forward / backward, else the reason it does not (for errors and logs). The
// first call for a shape builds and caches the plan.
std::string cudnn_attention_forward_unsupported(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                                                const Tensor& lse, int64_t branches, bool causal);
std::string cudnn_attention_backward_unsupported(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                                 const Tensor& dout, const Tensor& q, const Tensor& k,
                                                 const Tensor& v, const Tensor& out, const Tensor& lse,
                                                 int64_t branches, bool causal);

// The plans cuDNN built for this forward / backward call, empty when unsupported. With several, the first call of
// a shape runs each, keeps those whose outputs agree with the first plan's (the heuristics' choice), times them
// and runs the fastest from then on.
struct CudnnPlanInfo {
  std::string name;  // "engine E#R cfg K": cuDNN's engine E, R-th in its heuristics' list, kernel-config knob K
  bool usable;       // false once the first call found its outputs disagreeing with the first plan's
};
std::vector<CudnnPlanInfo> cudnn_attention_forward_plans(const Tensor& q, const Tensor& k, const Tensor& v,
                                                         const Tensor& out, int64_t branches, bool causal);
std::vector<CudnnPlanInfo> cudnn_attention_backward_plans(const Tensor& dq, const Tensor& dk, const Tensor& dv,
                                                          const Tensor& dout, const Tensor& q, const Tensor& k,
                                                          const Tensor& v, const Tensor& out, int64_t branches,
                                                          bool causal);
// For tests: every call runs plan `index` of its graph (the last one when it has fewer) instead of the fastest
// usable one; -1 restores the timed choice.
void cudnn_attention_use_plan(int index);

void cudnn_attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                             int64_t branches, double softmax_scale, bool causal);
void cudnn_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                              const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                              int64_t branches, double softmax_scale, bool causal);

}  // namespace latte::cuda
