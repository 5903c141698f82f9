#include "autograd/view_nodes.h"

#include "autograd/node.h"
#include "kernels/ops.h"

namespace latte::autograd {

namespace {

struct ReshapeBackward : Node {
  Shape input_shape;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override { return {g[0].contiguous().reshape(input_shape)}; }
  std::string name() const override { return "ReshapeBackward"; }
};

struct PermuteBackward : Node {
  std::vector<int> inverse;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override { return {g[0].permute(inverse)}; }
  std::string name() const override { return "PermuteBackward"; }
};

// Gradient of a slice/select: zeros of the input's shape with the incoming gradient written into the view.
struct SliceBackward : Node {
  OutputMeta input;
  int dim = 0;
  int64_t start = 0, step = 1, index = 0;
  bool is_select = false;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor full = Tensor::zeros(input.shape, g[0].dtype(), g[0].device());
    Tensor view = is_select ? full.select(dim, index)
                            : full.slice(dim, start, start + (g[0].size(dim) - 1) * step + 1, step);
    ops::copy(view, g[0]);
    return {full};
  }
  std::string name() const override { return is_select ? "SelectBackward" : "SliceBackward"; }
};

// Gradient of expand: sum over the broadcast dims (and the leading dims expand added).
struct ExpandBackward : Node {
  Shape input_shape;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    const Tensor& grad = g[0];
    Shape padded;
    for (int i = 0; i < grad.dim() - input_shape.ndim(); ++i) padded.push_back(1);
    for (int i = 0; i < input_shape.ndim(); ++i) padded.push_back(input_shape[i]);
    // One run of adjacent reduced dims (a rope key shared by every head: (B, S, H, d_r) -> (B, S, 1, d_r), the
    // gradient a slice of the key's): sum_to reads the gradient in place (its middle-dim path on the GPU).
    int first = -1, last = -1;
    for (int i = 0; i < grad.dim(); ++i)
      if (padded[i] == 1 && grad.size(i) != 1) {
        if (first < 0) first = i;
        last = i;
      }
    bool one_run = true;
    for (int i = first; first >= 0 && i <= last; ++i) one_run = one_run && (padded[i] == 1 || grad.size(i) == 1);
    if (one_run) {
      Tensor out = Tensor::empty(padded, grad.dtype(), grad.device());
      ops::sum_to(out, grad);
      return {out.reshape(input_shape)};
    }
    // Otherwise the reduced dims go first, so the reduction is a column sum over a contiguous (R, K) matrix. The
    // size-1 dims moved do not change the element order of the result, so it reshapes back.
    std::vector<int> order;
    for (int i = 0; i < grad.dim(); ++i)
      if (padded[i] == 1 && grad.size(i) != 1) order.push_back(i);
    for (int i = 0; i < grad.dim(); ++i)
      if (!(padded[i] == 1 && grad.size(i) != 1)) order.push_back(i);
    Shape out_shape;
    for (int i : order) out_shape.push_back(padded[i]);
    Tensor out = Tensor::empty(out_shape, grad.dtype(), grad.device());
    ops::sum_to(out, grad.permute(order).contiguous());
    return {out.reshape(input_shape)};
  }
  std::string name() const override { return "ExpandBackward"; }
};

struct IdentityBackward : Node {
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override { return {g[0]}; }
  std::string name() const override { return "IdentityBackward"; }
};

struct CastBackward : Node {
  DType input_dtype;
  Device input_device;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor out = Tensor::empty(g[0].shape(), input_dtype, input_device);
    out.copy_(g[0]);
    return {out};
  }
  std::string name() const override { return "CastBackward"; }
};

}  // namespace

void record_reshape(const Tensor& in, const Tensor& out) {
  auto n = std::make_shared<ReshapeBackward>();
  n->input_shape = in.shape();
  record(n, {in}, {out});
}

void record_permute(const Tensor& in, const Tensor& out, const std::vector<int>& order) {
  auto n = std::make_shared<PermuteBackward>();
  n->inverse.resize(order.size());
  for (size_t i = 0; i < order.size(); ++i) n->inverse[static_cast<size_t>(order[i])] = static_cast<int>(i);
  record(n, {in}, {out});
}

void record_slice(const Tensor& in, const Tensor& out, int dim, int64_t start, int64_t step) {
  auto n = std::make_shared<SliceBackward>();
  n->input = {in.shape(), in.dtype(), in.device()};
  n->dim = dim;
  n->start = start;
  n->step = step;
  record(n, {in}, {out});
}

void record_select(const Tensor& in, const Tensor& out, int dim, int64_t index) {
  auto n = std::make_shared<SliceBackward>();
  n->input = {in.shape(), in.dtype(), in.device()};
  n->dim = dim;
  n->index = index;
  n->is_select = true;
  record(n, {in}, {out});
}

void record_expand(const Tensor& in, const Tensor& out) {
  auto n = std::make_shared<ExpandBackward>();
  n->input_shape = in.shape();
  record(n, {in}, {out});
}

void record_identity(const Tensor& in, const Tensor& out) { record(std::make_shared<IdentityBackward>(), {in}, {out}); }

void record_cast(const Tensor& in, const Tensor& out) {
  auto n = std::make_shared<CastBackward>();
  n->input_dtype = in.dtype();
  n->input_device = in.device();
  record(n, {in}, {out});
}

}  // namespace latte::autograd
