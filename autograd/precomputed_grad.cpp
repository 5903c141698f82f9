// Gradients computed in the forward, scaled in the backward (autograd/precomputed_grad.h).
#include "autograd/precomputed_grad.h"

#include <utility>

#include "autograd/node.h"
#include "kernels/ops.h"

namespace latte::autograd {

namespace {

// g (one element) * x. On a GPU without reading g on the host (that would wait for the device): g broadcast,
// then multiplied. On the CPU there is nothing to wait for: one scaling pass.
Tensor scaled_by(const Tensor& x, const Tensor& g) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  if (g.device().is_cpu()) {
    ops::scale(out, x, g.item());
    return out;
  }
  ops::copy(out, g.reshape(Shape{}).expand(x.shape()));
  ops::mul(out, out, x);
  return out;
}

struct PrecomputedGradBackward : Node {
  std::vector<Tensor> grads;  // one per input, for a unit incoming gradient
  std::string label;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    std::vector<Tensor> out;
    for (const Tensor& t : grads) out.push_back(t.defined() ? scaled_by(t, g[0]) : Tensor());
    return out;
  }
  void release() override { grads.clear(); }
  std::string name() const override { return label; }
};

}  // namespace

void record_precomputed_gradients(const Tensor& loss, const std::vector<Tensor>& inputs, std::vector<Tensor> grads,
                                  std::string name) {
  LATTE_CHECK(grads.size() == inputs.size(), "record_precomputed_gradients: ", grads.size(), " gradients for ",
              inputs.size(), " inputs");
  auto node = std::make_shared<PrecomputedGradBackward>();
  node->grads = std::move(grads);
  node->label = std::move(name);
  record(node, inputs, {loss});
}

}  // namespace latte::autograd
