// The dynamic tape: each differentiable op that ran with grad enabled leaves a Node holding what its
// backward needs. Nodes point at the nodes that produced their inputs (edges), so the graph is
// discovered from the loss backwards; leaves (parameters) end in AccumulateGrad nodes that add into
// `.grad` (+=), which makes gradient accumulation free.
#pragma once
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace latte::autograd {

struct Node;

// Where an input's gradient goes: output slot `input_nr` of node `fn` (null: input needs no grad).
struct Edge {
  std::shared_ptr<Node> fn;
  int input_nr = 0;
};

// Shape/dtype/device of one output, so the engine can hand a node zeros for outputs nobody used.
struct OutputMeta {
  Shape shape;
  DType dtype;
  Device device;
};

struct Node {
  virtual ~Node() = default;
  // grad_outputs: one per output of this node (never undefined: zeros are filled in). They may be
  // strided views (transpose/concat backwards hand views on): call .contiguous() before a kernel
  // whose contract needs contiguous tensors.
  // Returns one gradient per input (next_edges); undefined entries mean zero / not needed.
  virtual std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) = 0;
  virtual std::string name() const = 0;
  // Frees saved tensors after the backward pass (retain_graph = false).
  virtual void release() {}

  std::vector<Edge> next_edges;
  std::vector<OutputMeta> outputs;
  // Set by the engine while apply() runs, one per input (undefined where none): the gradient already summed for
  // that input from earlier contributions, when nothing else can see it (contiguous, exclusively owned). A node
  // that adds its own gradient into it inside its kernel (a GEMM with beta = 1) returns that very tensor for the
  // input, which saves the engine's separate addition -- a full read-modify-write of the gradient, e.g. where the
  // query and the latent projections both read the normalised input. Other nodes ignore it.
  std::vector<Tensor> partial_sums;
  // Non-leaf outputs that asked to keep their gradient (retain_grad).
  std::vector<std::weak_ptr<TensorImpl>> retained;
  uint64_t sequence_nr = 0;  // creation order; later nodes run first when both are ready
  bool released = false;
};

// Terminal node for a leaf tensor: adds the incoming gradient into leaf.grad.
struct AccumulateGrad : Node {
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf(std::move(leaf)) {}
  std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) override;
  std::string name() const override { return "AccumulateGrad"; }
  std::shared_ptr<TensorImpl> leaf;
};

// ---- grad mode --------------------------------------------------------------------------------------
bool grad_enabled();
void set_grad_enabled(bool enabled);

// RAII: disables recording in its scope (inference, optimizer updates, teacher forward).
class NoGradGuard {
 public:
  NoGradGuard() : previous_(grad_enabled()) { set_grad_enabled(false); }
  ~NoGradGuard() { set_grad_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

class EnableGradGuard {
 public:
  EnableGradGuard() : previous_(grad_enabled()) { set_grad_enabled(true); }
  ~EnableGradGuard() { set_grad_enabled(previous_); }
  EnableGradGuard(const EnableGradGuard&) = delete;
  EnableGradGuard& operator=(const EnableGradGuard&) = delete;

 private:
  bool previous_;
};

// ---- recording helpers for op authors ---------------------------------------------------------------
// True when grad mode is on and any input requires grad.
bool needs_grad(std::initializer_list<const Tensor*> inputs);
bool needs_grad(const std::vector<Tensor>& inputs);
// Wires `node` into the graph: an edge per input (undefined inputs get an empty edge), and marks each
// output as produced by `node`. Call only when needs_grad(...) is true.
void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs);

// Nothing but this handle can see t's memory: it is the only owner of its tensor, the tensor the only owner
// of its storage (no view, no saved tensor of a node). Then t may be written in place or kept.
bool exclusively_owned(const Tensor& t);

// Runs backward from `roots` with the given gradients (engine.cpp).
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph);

}  // namespace latte::autograd
