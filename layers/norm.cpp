// RMSNorm and GroupNorm layers (layers/norm.h).
#include "layers/norm.h"

#include "autograd/functions.h"

namespace latte {

RMSNorm::RMSNorm(int64_t dim, double eps, const ParamOptions& options) : eps_(eps) {
  weight_ = register_parameter("weight", {dim}, options, InitRule::ones());
}

Tensor RMSNorm::forward(const Tensor& x) const { return rmsnorm(x, weight_, eps_); }

GroupNorm::GroupNorm(int64_t dim, int64_t groups, double eps, bool rms, const ParamOptions& options,
                     const TensorParallelContext& tp, bool split_by_group)
    : groups_(groups), eps_(eps), rms_(rms) {
  LATTE_CHECK(dim % groups == 0, "GroupNorm: ", groups, " groups do not divide ", dim);
  ParamShard shard{ShardLayout::replicated(), tp.tp_rank, tp.tp_size};
  if (split_by_group && tp.enabled()) {
    LATTE_CHECK(groups % tp.tp_size == 0, "GroupNorm: ", groups, " groups do not split over tp = ", tp.tp_size);
    shard.layout = ShardLayout::split_dim(0);
    groups_ = groups / tp.tp_size;
    dim /= tp.tp_size;
  }
  weight_ = register_parameter("weight", {dim}, options, InitRule::ones(), shard);
  if (!rms) bias_ = register_parameter("bias", {dim}, options, InitRule::zeros(), shard);
}

Tensor GroupNorm::forward(const Tensor& x) const { return group_norm(x, weight_, bias_, groups_, eps_, rms_); }

}  // namespace latte
