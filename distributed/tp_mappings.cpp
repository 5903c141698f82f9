// The conjugate tensor-parallel functions and their backward nodes (distributed/tp_mappings.h).
// Each node holds a shared_ptr to its group, so the group outlives the graph that uses it.
#include "distributed/tp_mappings.h"

#include <type_traits>

#include "autograd/node.h"
#include "kernels/ops.h"

namespace latte::dist {

namespace {

using autograd::Node;

// A fresh contiguous copy (collectives work in place; never write into a tensor someone else holds).
Tensor fresh_copy(const Tensor& x) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  ops::copy(out, x.detach());
  return out;
}

Tensor all_reduced_copy(const Tensor& x, ProcessGroup& group) {
  Tensor out = fresh_copy(x);
  group.all_reduce(out, ReduceOp::Sum);
  return out;
}

int64_t shard_width(const Tensor& x, const ProcessGroup& group, const char* fn) {
  LATTE_REQUIRE(x.dim() >= 1, fn, ": needs at least one dimension, got a scalar");
  const int64_t width = x.size(-1);
  LATTE_REQUIRE(width % group.size() == 0, fn, ": last dimension ", width, " of ", x.shape().str(),
                " does not divide by the tensor-parallel size ", group.size());
  return width / group.size();
}

// (..., tp*d) -> this rank's (..., d).
Tensor my_slice(const Tensor& x, ProcessGroup& group, const char* fn) {
  const int64_t d = shard_width(x, group, fn);
  return fresh_copy(x.detach().narrow(-1, group.rank() * d, d));
}

// (..., d) on each rank -> (..., tp*d), rank r's block at [r*d, (r+1)*d).
Tensor gathered(const Tensor& x, ProcessGroup& group, const char* fn) {
  LATTE_REQUIRE(x.dim() >= 1, fn, ": needs at least one dimension, got a scalar");
  const int64_t tp = group.size();
  const int64_t d = x.size(-1);
  const int64_t rows = d == 0 ? 0 : x.numel() / d;
  Tensor in = fresh_copy(x);
  Tensor blocks = Tensor::empty({tp, rows, d}, x.dtype(), x.device());  // rank-major
  group.all_gather(blocks, in);
  Shape out_shape = x.shape();
  out_shape[out_shape.ndim() - 1] = tp * d;
  Tensor out = Tensor::empty(out_shape, x.dtype(), x.device());
  ops::copy(out.view({rows, tp, d}), blocks.permute({1, 0, 2}));
  return out;
}

struct CopyToTpBackward : Node {
  std::shared_ptr<ProcessGroup> group;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override { return {all_reduced_copy(g[0], *group)}; }
  std::string name() const override { return "CopyToTpBackward"; }
};

struct ReduceFromTpBackward : Node {
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override { return {g[0]}; }
  std::string name() const override { return "ReduceFromTpBackward"; }
};

struct ScatterToTpBackward : Node {
  std::shared_ptr<ProcessGroup> group;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    return {gathered(g[0], *group, "scatter_to_tp backward")};
  }
  std::string name() const override { return "ScatterToTpBackward"; }
};

struct GatherFromTpBackward : Node {
  std::shared_ptr<ProcessGroup> group;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    return {my_slice(g[0], *group, "gather_from_tp backward")};
  }
  std::string name() const override { return "GatherFromTpBackward"; }
};

template <typename NodeType>
Tensor recorded(const Tensor& x, const Tensor& out, ProcessGroup* group) {
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<NodeType>();
    if constexpr (!std::is_same_v<NodeType, ReduceFromTpBackward>) node->group = group->shared_from_this();
    autograd::record(node, {x}, {out});
  }
  return out;
}

}  // namespace

Tensor copy_to_tp(const Tensor& x, ProcessGroup& tp) {
  if (tp.size() == 1) return x;
  Tensor out = x.detach();  // identity: shares x's storage, gets its own autograd identity
  return recorded<CopyToTpBackward>(x, out, &tp);
}

Tensor reduce_from_tp(const Tensor& x, ProcessGroup& tp) {
  if (tp.size() == 1) return x;
  Tensor out;
  {
    autograd::NoGradGuard no_grad;
    out = all_reduced_copy(x, tp);
  }
  return recorded<ReduceFromTpBackward>(x, out, &tp);
}

Tensor scatter_to_tp(const Tensor& x, ProcessGroup& tp) {
  if (tp.size() == 1) return x;
  Tensor out;
  {
    autograd::NoGradGuard no_grad;
    out = my_slice(x, tp, "scatter_to_tp");
  }
  return recorded<ScatterToTpBackward>(x, out, &tp);
}

Tensor gather_from_tp(const Tensor& x, ProcessGroup& tp) {
  if (tp.size() == 1) return x;
  Tensor out;
  {
    autograd::NoGradGuard no_grad;
    out = gathered(x, tp, "gather_from_tp");
  }
  return recorded<GatherFromTpBackward>(x, out, &tp);
}

}  // namespace latte::dist
