// Linear layers. Weights are stored [out, in] and applied as y = x W^T (nn.Linear), the layout the
// spec names in safetensors. Each linear carries its tensor-parallel role (spec: "Tensor
// parallelism"): column-parallel layers will own a slice of the output rows, row-parallel ones a
// slice of the input columns followed by an all-reduce, replicated ones the full weight with a
// summed gradient. Only tp = 1 is implemented: the role is recorded so the later TP issue changes
// the layer, not every caller.
#pragma once
#include "layers/module.h"

namespace latte {

enum class TensorParallel {
  Replicated,  // full weight on every TP rank, gradient all-reduced (wq_a, wkv_a, latent-position wgate)
  Column,      // split output rows by head/channel (wq, wk, wv, wq_b, wkv_b, kv wgate, w_gate, w_up, lm_head)
  Row,         // split input columns, all-reduce the output (wo, w_down)
};

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, const ParamOptions& options, InitRule init,
         TensorParallel parallel = TensorParallel::Replicated);
  Tensor forward(const Tensor& x) const;  // (..., in) -> (..., out)
  const Tensor& weight() const { return weight_; }  // (out, in)
  int64_t in_features() const { return in_; }
  int64_t out_features() const { return out_; }
  TensorParallel parallel() const { return parallel_; }

 private:
  int64_t in_, out_;
  TensorParallel parallel_;
  Tensor weight_;
};

// L independent linears applied blockwise WITHOUT transposition: weight (L, in, out), x (..., L, in)
// -> (..., L, out) with y_b = x_b @ W_b. MLRA's wkv_b (spec stores it [L, d_l, H_b (d_n+d_v)]).
class BlockLinear : public Module {
 public:
  BlockLinear(int64_t blocks, int64_t in_features, int64_t out_features, const ParamOptions& options, InitRule init,
              TensorParallel parallel = TensorParallel::Column);
  Tensor forward(const Tensor& x) const;  // (..., L, in) -> (..., L, out)
  const Tensor& weight() const { return weight_; }  // (L, in, out)

 private:
  int64_t blocks_, in_, out_;
  TensorParallel parallel_;
  Tensor weight_;
};

}  // namespace latte
