// Linear and BlockLinear (layers/linear.h).
#include "layers/linear.h"

#include "autograd/functions.h"

namespace latte {

Linear::Linear(int64_t in_features, int64_t out_features, const ParamOptions& options, InitRule init,
               TensorParallel parallel, const TensorParallelContext& tp, int64_t groups)
    : in_(in_features), out_(out_features), parallel_(parallel), tp_(tp) {
  ParamShard shard{ShardLayout::replicated(), tp.tp_rank, tp.tp_size};
  if (parallel == TensorParallel::Column) shard.layout = ShardLayout::split_dim(0, groups);
  if (parallel == TensorParallel::Row) shard.layout = ShardLayout::split_dim(1, groups);
  const Shape full{out_features, in_features};
  const Shape local = tp.enabled() ? shard_shape(full, shard.layout, tp.tp_size) : full;
  weight_ = register_parameter("weight", local, options, init, shard);
}

Tensor Linear::forward(const Tensor& x) const {
  Tensor y = linear(x, weight_);
  return parallel_ == TensorParallel::Row ? tp_.exit(y) : y;
}

Tensor Linear::forward_add(const Tensor& x, const Tensor& residual) const {
  if (!residual.defined()) return forward(x);
  if (tp_.enabled()) return add(residual, forward(x));
  return linear_add(x, weight_, residual);
}

BlockLinear::BlockLinear(int64_t blocks, int64_t in_features, int64_t out_features, const ParamOptions& options,
                         InitRule init, TensorParallel parallel, const TensorParallelContext& tp, bool split_blocks)
    : blocks_(blocks), in_(in_features), parallel_(parallel) {
  LATTE_CHECK(parallel != TensorParallel::Row, "BlockLinear is replicated or column-parallel");
  ParamShard shard{parallel == TensorParallel::Column ? ShardLayout::split_dim(2) : ShardLayout::replicated(), tp.tp_rank,
                   tp.tp_size};
  if (split_blocks && tp.enabled()) {
    LATTE_CHECK(blocks % tp.tp_size == 0, "BlockLinear: ", blocks, " blocks over tp ", tp.tp_size);
    shard.layout = ShardLayout::split_dim(0, blocks / tp.tp_size);  // groups of tp blocks, rank r block r of each
  }
  const Shape local = tp.enabled() ? shard_shape({blocks, in_features, out_features}, shard.layout, tp.tp_size)
                                   : Shape{blocks, in_features, out_features};
  blocks_ = local[0];
  out_local_ = local[2];
  weight_ = register_parameter("weight", local, options, init, shard);
}

Tensor BlockLinear::forward(const Tensor& x) const {
  LATTE_CHECK(x.dim() >= 2 && x.size(-2) == blocks_ && x.size(-1) == in_, "BlockLinear: bad input ", x.str());
  Shape out_shape = x.shape();
  out_shape[out_shape.ndim() - 1] = out_local_;
  const int64_t rows = x.numel() / (blocks_ * in_);
  // (rows, L, in) -> (L, rows, in): the block index becomes the matmul batch (a strided view, no copy).
  Tensor xb = x.reshape({rows, blocks_, in_}).transpose(0, 1);
  Tensor y = matmul(xb, weight_);  // (L, rows, out_local)
  return y.transpose(0, 1).reshape(out_shape);
}

}  // namespace latte
