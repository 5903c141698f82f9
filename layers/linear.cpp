// Linear and BlockLinear (layers/linear.h).
#include "layers/linear.h"

#include "autograd/functions.h"

namespace latte {

Linear::Linear(int64_t in_features, int64_t out_features, const ParamOptions& options, InitRule init,
               TensorParallel parallel)
    : in_(in_features), out_(out_features), parallel_(parallel) {
  weight_ = register_parameter("weight", {out_features, in_features}, options, init);
}

Tensor Linear::forward(const Tensor& x) const { return linear(x, weight_); }

BlockLinear::BlockLinear(int64_t blocks, int64_t in_features, int64_t out_features, const ParamOptions& options,
                         InitRule init, TensorParallel parallel)
    : blocks_(blocks), in_(in_features), out_(out_features), parallel_(parallel) {
  weight_ = register_parameter("weight", {blocks, in_features, out_features}, options, init);
}

Tensor BlockLinear::forward(const Tensor& x) const {
  LATTE_CHECK(x.dim() >= 2 && x.size(-2) == blocks_ && x.size(-1) == in_, "BlockLinear: bad input ", x.str());
  Shape out_shape = x.shape();
  out_shape[out_shape.ndim() - 1] = out_;
  const int64_t rows = x.numel() / (blocks_ * in_);
  // (rows, L, in) -> (L, rows, in): the block index becomes the matmul batch (a strided view, no copy).
  Tensor xb = x.reshape({rows, blocks_, in_}).transpose(0, 1);
  Tensor y = matmul(xb, weight_);  // (L, rows, out)
  return y.transpose(0, 1).reshape(out_shape);
}

}  // namespace latte
