// cuDNN SDPA as a second attention backend (kernels/cuda/cudnn_attention.cu), same tensor semantics as
// cuda::attention_forward / attention_backward (kernels/op_decls.inc).
//
// Status: NOT IMPLEMENTED. cudnn_attention_supported() always returns false, and the entry points throw.
// The cuDNN 9 backend (graph) API needs the whole SDPA pattern spelled out as ~12 operations for the forward
// (matmul, scale, causal mask from generated indices, max/sub/exp/sum/log/div, matmul) and ~30 for the
// backward, then heuristics -> engine config -> execution plan -> variant pack per shape; without the
// cudnn_frontend header library (not installed here) and with a handful of GPU runs for the whole issue, that
// was too costly to get right in the time given. PyTorch's cuDNN backend is measured instead as the reference
// in bench (scripts/reference/attention_bench.py). See docs/attention_kernels.md.
#pragma once
#include <cstdint>

#include "core/tensor.h"

namespace latte::cuda {

// True when latte was built with cuDNN and this backend handles these tensors (never, for now).
bool cudnn_attention_supported(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                               int64_t branches);

void cudnn_attention_forward(const Tensor& out, const Tensor& lse, const Tensor& q, const Tensor& k, const Tensor& v,
                             int64_t branches, double softmax_scale, bool causal);
void cudnn_attention_backward(const Tensor& dq, const Tensor& dk, const Tensor& dv, const Tensor& dout,
                              const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out, const Tensor& lse,
                              int64_t branches, double softmax_scale, bool causal);

}  // namespace latte::cuda
