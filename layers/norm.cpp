// RMSNorm and GroupNorm layers (layers/norm.h).
#include "layers/norm.h"

#include "autograd/functions.h"

namespace latte {

RMSNorm::RMSNorm(int64_t dim, double eps, const ParamOptions& options) : eps_(eps) {
  weight_ = register_parameter("weight", {dim}, options, InitRule::ones());
}

Tensor RMSNorm::forward(const Tensor& x) const { return rmsnorm(x, weight_, eps_); }

GroupNorm::GroupNorm(int64_t dim, int64_t groups, double eps, bool rms, const ParamOptions& options)
    : groups_(groups), eps_(eps), rms_(rms) {
  LATTE_CHECK(dim % groups == 0, "GroupNorm: ", groups, " groups do not divide ", dim);
  weight_ = register_parameter("weight", {dim}, options, InitRule::ones());
  if (!rms) bias_ = register_parameter("bias", {dim}, options, InitRule::zeros());
}

Tensor GroupNorm::forward(const Tensor& x) const { return group_norm(x, weight_, bias_, groups_, eps_, rms_); }

}  // namespace latte
