// SwiGLU MLP (layers/mlp.h).
#include "layers/mlp.h"

#include "autograd/functions.h"

namespace latte {

SwiGLUMLP::SwiGLUMLP(int64_t d_model, int64_t ffn_dim, double init_std, bool zero_down, const ParamOptions& options,
                     const TensorParallelContext& tp) {
  const InitRule normal = InitRule::normal(init_std);
  w_gate_ = register_module("w_gate", std::make_unique<Linear>(d_model, ffn_dim, options, normal, TensorParallel::Column, tp));
  w_up_ = register_module("w_up", std::make_unique<Linear>(d_model, ffn_dim, options, normal, TensorParallel::Column, tp));
  w_down_ = register_module("w_down", std::make_unique<Linear>(ffn_dim, d_model, options,
                                                               zero_down ? InitRule::zeros() : normal, TensorParallel::Row, tp));
}

Tensor SwiGLUMLP::forward(const Tensor& x, const Tensor& residual) const {
  Tensor hidden = swiglu(w_gate_->forward(x), w_up_->forward(x));  // (B, T, ffn/tp)
  return w_down_->forward_add(hidden, residual);                   // (B, T, d) (+ residual), all-reduced over TP
}

}  // namespace latte
