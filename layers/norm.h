// Norm layers: RMSNorm (gain only, the decoder's pre-norms and the MLA latent norms) and GroupNorm
// (LayerNorm or RMSNorm over equal groups of the last dim with per-channel affine: EG-MLA's gate
// norms, per head for the kv position). Statistics are computed in fp32 by the kernels.
// Under tensor parallelism norms are replicated, except a GroupNorm whose groups are heads (EG-MLA's
// kv-position gate norms), which can be split by group: this rank then holds groups/tp groups.
#pragma once
#include "layers/module.h"
#include "layers/tensor_parallel.h"

namespace latte {

class RMSNorm : public Module {
 public:
  RMSNorm(int64_t dim, double eps, const ParamOptions& options);
  Tensor forward(const Tensor& x) const;  // (..., D)
  const Tensor& weight() const { return weight_; }

 private:
  double eps_;
  Tensor weight_;
};

// groups = 1 is a plain LayerNorm (or weight-only RMSNorm when rms). Bias only for the LayerNorm form.
// dim and groups are the full sizes; split_by_group with tp > 1 keeps this rank's groups/tp groups.
class GroupNorm : public Module {
 public:
  GroupNorm(int64_t dim, int64_t groups, double eps, bool rms, const ParamOptions& options,
            const TensorParallelContext& tp = {}, bool split_by_group = false);
  Tensor forward(const Tensor& x) const;  // (..., groups * D/groups)
  const Tensor& weight() const { return weight_; }
  const Tensor& bias() const { return bias_; }  // undefined when rms

 private:
  int64_t groups_;
  double eps_;
  bool rms_;
  Tensor weight_, bias_;
};

}  // namespace latte
