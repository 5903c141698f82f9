// Linear layers. Weights are stored [out, in] and applied as y = x W^T (nn.Linear), the layout the
// spec names in safetensors. Each linear carries its tensor-parallel role (spec: "Tensor
// parallelism") and, Megatron-Core style, owns its shard:
//   Replicated  the full weight on every TP rank; used inside a TP region its gradient is a partial
//               sum, all-reduced over TP after the backward (layers/tensor_parallel.h).
//   Column      this rank holds out/tp rows (its heads / channels / vocabulary rows); the output is
//               this rank's slice of the features. The input must already be inside a TP region (the
//               block opens it with copy_to_tp once for all of its column-parallel consumers).
//   Row         this rank holds in/tp columns and consumes its slice of the features; the forward
//               closes the region with reduce_from_tp (all-reduce of the partial products).
// Sizes given to the constructors are the full (tp = 1) ones. `groups` > 1 splits each of `groups`
// consecutive groups of rows (Column) or columns (Row) separately (layers/tp_layout.h: MLRA-2's heads).
#pragma once
#include "layers/module.h"
#include "layers/tensor_parallel.h"

namespace latte {

enum class TensorParallel {
  Replicated,  // full weight on every TP rank, gradient all-reduced (wq_a, wkv_a, latent-position wgate)
  Column,      // split output rows by head/channel (wq, wk, wv, wq_b, wkv_b, kv wgate, w_gate, w_up, lm_head)
  Row,         // split input columns, all-reduce the output (wo, w_down)
};

class Linear : public Module {
 public:
  Linear(int64_t in_features, int64_t out_features, const ParamOptions& options, InitRule init,
         TensorParallel parallel = TensorParallel::Replicated, const TensorParallelContext& tp = {}, int64_t groups = 1);
  Tensor forward(const Tensor& x) const;  // (..., in_local) -> (..., out_local); Row: all-reduced (..., out)
  // residual + forward(x), the residual added by the GEMM (linear_add) when this rank holds the whole output
  // (no TP); under TP after the all-reduce, as a separate add. An undefined residual: forward(x).
  Tensor forward_add(const Tensor& x, const Tensor& residual) const;
  const Tensor& weight() const { return weight_; }  // (out_local, in_local)
  int64_t in_features() const { return in_; }      // full sizes
  int64_t out_features() const { return out_; }
  TensorParallel parallel() const { return parallel_; }

 private:
  int64_t in_, out_;
  TensorParallel parallel_;
  TensorParallelContext tp_;
  Tensor weight_;
};

// L independent linears applied blockwise WITHOUT transposition: weight (L, in, out), x (..., L, in)
// -> (..., L, out) with y_b = x_b @ W_b. MLRA's wkv_b (spec stores it [L, d_l, H_b (d_n+d_v)]); Column
// splits the out dim (heads inside each block), so this rank holds (L, in, out/tp); with split_blocks
// (MLRA's decode layout, MlraTpLayout::Blocks) it holds the whole blocks r, r + tp, ... instead:
// (L/tp, in, out), split dim 0 in L/tp groups.
class BlockLinear : public Module {
 public:
  BlockLinear(int64_t blocks, int64_t in_features, int64_t out_features, const ParamOptions& options, InitRule init,
              TensorParallel parallel = TensorParallel::Column, const TensorParallelContext& tp = {},
              bool split_blocks = false);
  Tensor forward(const Tensor& x) const;  // (..., L_local, in) -> (..., L_local, out_local)
  const Tensor& weight() const { return weight_; }  // (L_local, in, out_local)

 private:
  int64_t blocks_, in_, out_local_;
  TensorParallel parallel_;
  Tensor weight_;
};

}  // namespace latte
