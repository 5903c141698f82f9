// The backward engine: counts, for every node reachable from the roots, how many gradient
// contributions it will receive, then runs nodes whose inputs are complete (latest-created first),
// summing contributions per output slot. Deterministic: the order depends only on the graph.
#include <atomic>
#include <queue>
#include <unordered_map>

#include "autograd/node.h"
#include "kernels/op_profiler.h"
#include "kernels/ops.h"

namespace latte::autograd {

bool exclusively_owned(const Tensor& t) {
  return t.impl_ptr().use_count() == 1 && t.storage() && t.storage().use_count() == 1;
}

namespace {
thread_local bool g_grad_enabled = true;

std::atomic<uint64_t> g_sequence{0};

// Adds `g` into slot. In place only when nothing else can see slot's memory: this handle is the only owner
// of its tensor and the tensor the only owner of its storage. Otherwise out of place: a node may hand the same
// gradient tensor to several inputs (add does), so writing into a shared gradient would corrupt another slot.
// (In place saves an allocation and a full copy per accumulation: the residual stream's gradient gets two
// contributions in every layer.)
void accumulate_into(Tensor& slot, const Tensor& g) {
  if (!g.defined()) return;
  if (!slot.defined()) {
    slot = g;
    return;
  }
  if (exclusively_owned(slot) && slot.is_contiguous()) {
    ops::axpy(slot, g.contiguous(), 1.0);
    return;
  }
  Tensor sum = Tensor::empty(slot.shape(), slot.dtype(), slot.device());
  ops::copy(sum, slot);
  ops::axpy(sum, g.contiguous(), 1.0);
  slot = sum;
}

using Buffers = std::unordered_map<Node*, std::vector<Tensor>>;

// Hands node n the running gradient sums of its inputs' slots (Node::partial_sums) where nothing else can see them.
// Moved, not copied, so the node's handle is the only one; a slot two edges share is offered once.
void offer_partial_sums(Node& n, Buffers& buffers) {
  n.partial_sums.assign(n.next_edges.size(), Tensor());
  for (size_t i = 0; i < n.next_edges.size(); ++i) {
    const Edge& e = n.next_edges[i];
    if (!e.fn) continue;
    auto it = buffers.find(e.fn.get());
    if (it == buffers.end() || static_cast<size_t>(e.input_nr) >= it->second.size()) continue;
    Tensor& slot = it->second[static_cast<size_t>(e.input_nr)];
    if (slot.defined() && exclusively_owned(slot) && slot.is_contiguous()) n.partial_sums[i] = std::move(slot);
  }
}

// Puts the offered sums back into their slots. Where the node returned the offered tensor itself, its gradient is
// already added in: the returned handle is dropped so that the engine does not add it a second time.
void take_back_partial_sums(Node& n, Buffers& buffers, std::vector<Tensor>& grad_inputs) {
  for (size_t i = 0; i < n.partial_sums.size(); ++i) {
    Tensor offered = std::move(n.partial_sums[i]);
    if (!offered.defined()) continue;
    const Edge& e = n.next_edges[i];
    if (i < grad_inputs.size() && grad_inputs[i].defined() && grad_inputs[i].impl_ptr() == offered.impl_ptr())
      grad_inputs[i] = Tensor();
    buffers[e.fn.get()][static_cast<size_t>(e.input_nr)] = std::move(offered);
  }
  n.partial_sums.clear();
}

}  // namespace

bool grad_enabled() { return g_grad_enabled; }
void set_grad_enabled(bool enabled) { g_grad_enabled = enabled; }

bool needs_grad(std::initializer_list<const Tensor*> inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor* t : inputs)
    if (t && t->defined() && t->requires_grad()) return true;
  return false;
}

bool needs_grad(const std::vector<Tensor>& inputs) {
  if (!g_grad_enabled) return false;
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) return true;
  return false;
}

void record(const std::shared_ptr<Node>& node, const std::vector<Tensor>& inputs, const std::vector<Tensor>& outputs) {
  node->sequence_nr = g_sequence.fetch_add(1);
  node->next_edges.clear();
  for (const Tensor& in : inputs) {
    Edge e;
    if (in.defined() && in.requires_grad()) {
      if (in.grad_fn()) {
        e.fn = in.grad_fn();
        e.input_nr = in.impl().output_nr;
      } else {
        auto accumulate = std::make_shared<AccumulateGrad>(in.impl_ptr());
        // Leaf accumulation runs as soon as it is ready (as in PyTorch), so data-parallel buckets can
        // start their all-reduce while the rest of the backward still runs.
        accumulate->sequence_nr = UINT64_MAX;
        e.fn = accumulate;
      }
    }
    node->next_edges.push_back(std::move(e));
  }
  node->outputs.clear();
  for (size_t i = 0; i < outputs.size(); ++i) {
    const Tensor& out = outputs[i];
    node->outputs.push_back({out.shape(), out.dtype(), out.device()});
    out.impl().requires_grad = true;
    out.impl().grad_fn = node;
    out.impl().output_nr = static_cast<int>(i);
  }
}

std::vector<Tensor> AccumulateGrad::apply(const std::vector<Tensor>& grad_outputs) {
  const Tensor& g = grad_outputs.at(0);
  Tensor leaf_view(leaf);
  Tensor existing = leaf_view.grad();
  if (!existing.defined()) {
    // First contribution: keep the incoming gradient itself when nothing else can see it and it is exactly a
    // contiguous tensor of the leaf's dtype over its whole allocation (the usual case: a matmul's fresh
    // output; saves a copy per parameter per step). Otherwise our own contiguous copy in the leaf's dtype
    // (never alias a user tensor or a slice of a larger buffer).
    if (exclusively_owned(g) && g.is_contiguous() && g.dtype() == leaf->dtype &&
        g.data_ptr() == g.storage()->data() && g.nbytes() == g.storage()->bytes()) {
      leaf->grad = g.impl_ptr();
    } else {
      Tensor fresh = Tensor::empty(g.shape(), leaf->dtype, g.device());
      ops::copy(fresh, g);
      leaf->grad = fresh.impl_ptr();
    }
  } else {
    ops::axpy(existing, g.contiguous(), 1.0);  // g may be a strided view (narrow/permute backward)
  }
  if (leaf->grad_accumulated_hook) leaf->grad_accumulated_hook(*leaf);
  return {};
}

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads, bool retain_graph) {
  LATTE_CHECK(roots.size() == grads.size());
  NoGradGuard no_grad;  // backward computations are not recorded

  // 1. Discover the graph and count incoming contributions per node.
  std::unordered_map<Node*, int> dependencies;
  std::vector<Node*> stack;
  std::vector<std::shared_ptr<Node>> root_nodes;
  for (const Tensor& r : roots) {
    LATTE_REQUIRE(r.requires_grad(), "backward() on a tensor that does not require grad (did every input have "
                                     "requires_grad=false, or was it computed under NoGradGuard?)");
    std::shared_ptr<Node> fn = r.grad_fn() ? r.grad_fn() : std::make_shared<AccumulateGrad>(r.impl_ptr());
    root_nodes.push_back(fn);
    if (dependencies.emplace(fn.get(), 0).second) stack.push_back(fn.get());
  }
  while (!stack.empty()) {
    Node* n = stack.back();
    stack.pop_back();
    LATTE_REQUIRE(!n->released, "backward through a graph a second time: its saved tensors were freed; "
                                "pass retain_graph=true to the first backward()");
    for (const Edge& e : n->next_edges) {
      if (!e.fn) continue;
      auto [it, inserted] = dependencies.emplace(e.fn.get(), 0);
      it->second++;
      if (inserted) stack.push_back(e.fn.get());
    }
  }

  // 2. Seed the roots.
  Buffers buffers;
  std::unordered_map<Node*, std::shared_ptr<Node>> keep_alive;
  for (size_t i = 0; i < roots.size(); ++i) {
    Node* n = root_nodes[i].get();
    keep_alive[n] = root_nodes[i];
    auto& buf = buffers[n];
    size_t slots = std::max<size_t>(1, n->outputs.size());
    buf.resize(slots);
    Tensor g = grads[i];
    if (!g.defined()) {
      LATTE_REQUIRE(roots[i].numel() == 1, "backward() without a gradient needs a scalar, got shape ",
                    roots[i].shape().str());
      g = Tensor::ones(roots[i].shape(), roots[i].dtype(), roots[i].device());
    }
    accumulate_into(buf[static_cast<size_t>(roots[i].grad_fn() ? roots[i].impl().output_nr : 0)], g);
  }

  // 3. Run ready nodes, latest-created first.
  auto later_first = [](Node* a, Node* b) { return a->sequence_nr < b->sequence_nr; };
  std::priority_queue<Node*, std::vector<Node*>, decltype(later_first)> ready(later_first);
  for (auto& rn : root_nodes)
    if (dependencies[rn.get()] == 0) ready.push(rn.get());

  while (!ready.empty()) {
    Node* n = ready.top();
    ready.pop();
    // LATTE_PROFILE_OPS=callers: the ops below count under this node's name.
    ops::ProfileCaller caller(ops::op_profiling_callers() ? n->name() : std::string());
    std::vector<Tensor> grad_outputs = std::move(buffers[n]);
    buffers.erase(n);
    grad_outputs.resize(std::max<size_t>(1, n->outputs.size()));
    for (size_t i = 0; i < n->outputs.size(); ++i) {
      if (!grad_outputs[i].defined()) {
        const OutputMeta& m = n->outputs[i];
        grad_outputs[i] = Tensor::zeros(m.shape, m.dtype, m.device);
      }
    }
    for (size_t i = 0; i < n->retained.size() && i < grad_outputs.size(); ++i) {
      if (auto impl = n->retained[i].lock()) {
        Tensor t(impl);
        Tensor g = Tensor::empty(grad_outputs[i].shape(), impl->dtype, grad_outputs[i].device());
        ops::copy(g, grad_outputs[i]);
        if (impl->grad) ops::axpy(Tensor(impl->grad), g, 1.0); else impl->grad = g.impl_ptr();
      }
    }
    offer_partial_sums(*n, buffers);
    std::vector<Tensor> grad_inputs = n->apply(grad_outputs);
    grad_outputs.clear();
    take_back_partial_sums(*n, buffers, grad_inputs);
    if (!retain_graph) {
      n->release();
      n->released = !n->next_edges.empty();
    }
    for (size_t i = 0; i < n->next_edges.size(); ++i) {
      const Edge& e = n->next_edges[i];
      if (!e.fn) continue;
      Node* next = e.fn.get();
      keep_alive[next] = e.fn;
      if (i < grad_inputs.size() && grad_inputs[i].defined()) {
        auto& buf = buffers[next];
        buf.resize(std::max<size_t>(1, next->outputs.size()));
        ops::ProfileCaller accumulating(ops::op_profiling_callers() ? "accumulate into " + next->name() : std::string());
        accumulate_into(buf[static_cast<size_t>(e.input_nr)], grad_inputs[i]);
      }
      if (--dependencies[next] == 0) ready.push(next);
    }
  }
}

}  // namespace latte::autograd
