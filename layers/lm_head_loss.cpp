// Fused, chunked LM head + cross-entropy (layers/lm_head_loss.h).
#include "layers/lm_head_loss.h"

#include <algorithm>

#include "autograd/node.h"
#include "kernels/ops.h"

namespace latte {

namespace {

// g (one element) * x, without reading g on the host (no device sync in the backward).
Tensor scaled_by(const Tensor& x, const Tensor& g) {
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  ops::copy(out, g.reshape(Shape{}).expand(x.shape()));
  ops::mul(out, out, x);
  return out;
}

struct LmHeadCrossEntropyBackward : autograd::Node {
  Tensor d_hidden;  // (N, d), for a unit incoming gradient
  Tensor d_weight;  // (V, d) f32 (f64 for f64 weights)
  std::vector<Tensor> apply(const std::vector<Tensor>& grads) override {
    Tensor dh = d_hidden.defined() ? scaled_by(d_hidden, grads[0]) : Tensor();
    Tensor dw = d_weight.defined() ? scaled_by(d_weight, grads[0]) : Tensor();
    return {dh, dw, Tensor()};
  }
  void release() override { d_hidden = d_weight = Tensor(); }
  std::string name() const override { return "LmHeadCrossEntropyBackward"; }
};

}  // namespace

Tensor lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets, int64_t counted,
                             int64_t chunk_rows) {
  const int64_t N = hidden.size(0), V = weight.size(0), d = hidden.size(1);
  LATTE_CHECK(hidden.dim() == 2 && weight.dim() == 2 && weight.size(1) == d && targets.dim() == 1 && targets.size(0) == N);
  LATTE_CHECK(counted > 0 && chunk_rows > 0);
  const DType acc = hidden.dtype() == DType::F64 ? DType::F64 : DType::F32;  // losses and d(W)
  const bool grad = autograd::needs_grad({&hidden, &weight});
  Tensor h = hidden.detach().contiguous();   // (N, d)
  Tensor w = weight.detach();                // (V, d)
  Tensor t = targets.contiguous();           // (N)
  Tensor losses = Tensor::empty({N}, acc, h.device());                                              // (N)
  Tensor d_hidden = grad && hidden.requires_grad() ? Tensor::empty({N, d}, h.dtype(), h.device()) : Tensor();  // (N, d)
  Tensor d_weight = grad && weight.requires_grad() ? Tensor::zeros({V, d}, acc, h.device()) : Tensor();      // (V, d)
  const double grad_scale = 1.0 / static_cast<double>(counted);
  for (int64_t r = 0; r < N; r += chunk_rows) {
    const int64_t n = std::min(chunk_rows, N - r);
    Tensor rows = h.narrow(0, r, n);                                       // (n, d)
    Tensor logits = Tensor::empty({n, V}, h.dtype(), h.device());          // (n, V)
    ops::matmul(logits, rows, w, false, true, 1.0, 0.0);
    Tensor dlogits = grad ? Tensor::empty({n, V}, h.dtype(), h.device()) : Tensor();  // (n, V)
    ops::cross_entropy_forward_backward(losses.narrow(0, r, n), dlogits, logits, t.narrow(0, r, n), -1, grad_scale);
    if (d_hidden.defined()) ops::matmul(d_hidden.narrow(0, r, n), dlogits, w, false, false, 1.0, 0.0);  // dlogits W
    if (d_weight.defined()) ops::matmul(d_weight, dlogits, rows, true, false, 1.0, 1.0);               // += dlogits^T h
  }
  Tensor loss = Tensor::empty(Shape{}, acc, h.device());
  ops::sum(loss, losses);
  ops::scale(loss, loss, grad_scale);
  if (grad) {
    auto node = std::make_shared<LmHeadCrossEntropyBackward>();
    node->d_hidden = d_hidden;
    node->d_weight = d_weight;
    autograd::record(node, {hidden, weight, targets}, {loss});
  }
  return loss;
}

}  // namespace latte
