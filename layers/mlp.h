// The Llama-style SwiGLU MLP: w_down( silu(w_gate a) * (w_up a) ). Under tensor parallelism each rank
// holds ffn/tp channels: w_gate/w_up column-parallel, w_down row-parallel (its forward all-reduces);
// the input must be inside a TP region (TransformerBlock opens it before mlp_norm).
#pragma once
#include "layers/linear.h"

namespace latte {

class SwiGLUMLP : public Module {
 public:
  // zero_down: w_down starts at zero (init.zero_out_proj).
  SwiGLUMLP(int64_t d_model, int64_t ffn_dim, double init_std, bool zero_down, const ParamOptions& options,
            const TensorParallelContext& tp = {});
  // (B, T, d) -> (B, T, d), summed over TP; plus `residual` when defined (added by w_down's GEMM)
  Tensor forward(const Tensor& x, const Tensor& residual = Tensor()) const;

 private:
  Linear* w_gate_;  // column-parallel (ffn/tp, d)
  Linear* w_up_;    // column-parallel (ffn/tp, d)
  Linear* w_down_;  // row-parallel (d, ffn/tp)
};

}  // namespace latte
