#include "autograd/checkpoint.h"

#include "autograd/node.h"

namespace latte::autograd {

namespace {

struct CheckpointBackward : Node {
  CheckpointFn fn;
  std::vector<Tensor> inputs;  // detached, as given to the forward

  std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) override {
    std::vector<Tensor> leaves;
    for (size_t i = 0; i < inputs.size(); ++i) {
      Tensor leaf = inputs[i].defined() ? inputs[i].detach() : Tensor();
      if (leaf.defined() && next_edges[i].fn) leaf.set_requires_grad(true);
      leaves.push_back(leaf);
    }
    std::vector<Tensor> outputs;
    {
      EnableGradGuard enable;
      outputs = fn(leaves);
    }
    std::vector<Tensor> roots, grads;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].requires_grad()) continue;
      roots.push_back(outputs[i]);
      grads.push_back(grad_outputs[i]);
    }
    if (!roots.empty()) run_backward(roots, grads, false);
    std::vector<Tensor> grad_inputs;
    for (const Tensor& leaf : leaves) grad_inputs.push_back(leaf.defined() && leaf.requires_grad() ? leaf.grad() : Tensor());
    return grad_inputs;
  }
  void release() override { inputs.clear(); }
  std::string name() const override { return "CheckpointBackward"; }
};

}  // namespace

std::vector<Tensor> checkpoint(const CheckpointFn& fn, const std::vector<Tensor>& inputs) {
  if (!grad_enabled()) return fn(inputs);
  std::vector<Tensor> outputs;
  {
    NoGradGuard no_grad;
    outputs = fn(inputs);
  }
  if (!grad_enabled()) return outputs;
  auto node = std::make_shared<CheckpointBackward>();
  node->fn = fn;
  for (const Tensor& t : inputs) node->inputs.push_back(t.defined() ? t.detach() : Tensor());
  // Outputs are fresh tensors made under no-grad; give them distinct impls so record() can mark them.
  std::vector<Tensor> marked;
  for (const Tensor& o : outputs) marked.push_back(o.detach());
  record(node, inputs, marked);
  return marked;
}

}  // namespace latte::autograd
