// Fused, chunked LM head + cross-entropy (layers/lm_head_loss.h).
#include "layers/lm_head_loss.h"

#include <algorithm>

#include "autograd/node.h"
#include "autograd/precomputed_grad.h"
#include "distributed/process_group.h"
#include "kernels/ops.h"

namespace latte {

namespace {

// The end of both variants: the mean loss over the counted rows from the per-row losses (N), and the
// precomputed gradients for the backward.
Tensor finish_loss(const Tensor& losses, double grad_scale, const Tensor& hidden, const Tensor& weight,
                   const Tensor& targets, const Tensor& d_hidden, const Tensor& d_weight, bool grad) {
  Tensor loss = Tensor::empty(Shape{}, losses.dtype(), losses.device());
  ops::sum(loss, losses);
  ops::scale(loss, loss, grad_scale);
  if (grad)
    autograd::record_precomputed_gradients(loss, {hidden, weight, targets}, {d_hidden, d_weight, Tensor()},
                                           "LmHeadCrossEntropyBackward");
  return loss;
}

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
  // (V, d): the first chunk's GEMM writes it (beta = 0), the others add (no zero fill, one read fewer)
  Tensor d_weight = grad && weight.requires_grad() ? (N > 0 ? Tensor::empty({V, d}, acc, h.device())
                                                            : Tensor::zeros({V, d}, acc, h.device()))
                                                   : Tensor();
  const double grad_scale = 1.0 / static_cast<double>(counted);
  for (int64_t r = 0; r < N; r += chunk_rows) {
    const int64_t n = std::min(chunk_rows, N - r);
    Tensor rows = h.narrow(0, r, n);                                       // (n, d)
    Tensor logits = Tensor::empty({n, V}, h.dtype(), h.device());          // (n, V)
    ops::matmul(logits, rows, w, false, true, 1.0, 0.0);
    Tensor dlogits = grad ? logits : Tensor();  // (n, V): the gradient overwrites the logits (the kernel allows it)
    ops::cross_entropy_forward_backward(losses.narrow(0, r, n), dlogits, logits, t.narrow(0, r, n), -1, grad_scale);
    if (d_hidden.defined()) ops::matmul(d_hidden.narrow(0, r, n), dlogits, w, false, false, 1.0, 0.0);  // dlogits W
    if (d_weight.defined()) ops::matmul(d_weight, dlogits, rows, true, false, 1.0, r == 0 ? 0.0 : 1.0);  // += dlogits^T h
  }
  return finish_loss(losses, grad_scale, hidden, weight, targets, d_hidden, d_weight, grad);
}

}  // namespace latte

// ---- vocab-parallel ---------------------------------------------------------------------------------

namespace latte {

namespace {

// x (n, D) *= s (n) row by row (s is broadcast through a copy: the elementwise kernels take equal shapes).
void scale_rows(const Tensor& x, const Tensor& s) {
  const int64_t n = x.size(0), D = x.size(1);
  Tensor b = Tensor::empty({n, D}, x.dtype(), x.device());
  ops::copy(b, s.view({n, 1}).expand({n, D}));
  ops::mul(x, x, b);
}

Tensor i32_tensor(const std::vector<double>& v, Device device) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, DType::I32, device);
}

}  // namespace

Tensor vocab_parallel_lm_head_cross_entropy(const Tensor& hidden, const Tensor& weight, const Tensor& targets,
                                            const std::vector<double>& host_targets, int64_t vocab_start,
                                            int64_t vocab_size, int64_t counted, int64_t chunk_rows,
                                            const TensorParallelContext& tp) {
  const int64_t N = hidden.size(0), V = weight.size(0), d = hidden.size(1);  // V: this rank's rows
  LATTE_CHECK(hidden.dim() == 2 && weight.dim() == 2 && weight.size(1) == d && targets.dim() == 1 && targets.size(0) == N);
  LATTE_CHECK(static_cast<int64_t>(host_targets.size()) == N && counted > 0 && chunk_rows > 0);
  chunk_rows = std::max<int64_t>(1, std::min(chunk_rows, ((int64_t{1} << 31) - 1) / std::max<int64_t>(V, 1)));  // i32 flat indices
  dist::ProcessGroup& group = tp.group("vocab-parallel cross-entropy");
  const int64_t R = tp.tp_size, rank = tp.tp_rank;
  const Device dev = hidden.device();
  const DType dt = hidden.dtype();
  const DType acc = dt == DType::F64 ? DType::F64 : DType::F32;  // row statistics, losses and d(W)
  const bool grad = autograd::needs_grad({&hidden, &weight});

  // Host: per row the local target (-1 ignored), its clamped column (0 when the target is on another
  // rank), its flat index in the chunk's (n V) logits, and the in-range / valid masks.
  std::vector<double> local_t(N), column(N), flat(N), here(N), valid(N), zeros(N, 0.0), other(N, double((rank + 1) % R));
  for (int64_t i = 0; i < N; ++i) {
    const double t = host_targets[static_cast<size_t>(i)];
    LATTE_REQUIRE(t == -1 || (t >= 0 && t < vocab_size), "cross_entropy: target ", t, " at row ", i,
                  " is out of range [0, ", vocab_size, ") and is not -1 (ignored)");
    const bool in = t >= vocab_start && t < vocab_start + V;
    column[i] = in ? t - vocab_start : 0;
    local_t[i] = t == -1 ? -1 : column[i];
    flat[i] = static_cast<double>(i % chunk_rows) * static_cast<double>(V) + column[i];
    here[i] = in ? 1 : 0;
    valid[i] = t == -1 ? 0 : 1;
  }
  const Tensor t_local = i32_tensor(local_t, dev), t_column = i32_tensor(column, dev), t_flat = i32_tensor(flat, dev);
  const Tensor t_zero = i32_tensor(zeros, dev), t_other = i32_tensor(other, dev);
  const Tensor m_here = Tensor::from_vector(here, {N}, acc, dev), m_valid = Tensor::from_vector(valid, {N}, acc, dev);

  Tensor h = hidden.detach().contiguous();  // (N, d)
  Tensor w = weight.detach().contiguous();  // (V, d)
  Tensor losses = Tensor::empty({N}, acc, dev);                                                              // (N)
  Tensor d_hidden = grad && hidden.requires_grad() ? Tensor::empty({N, d}, dt, dev) : Tensor();             // (N, d)
  Tensor d_weight = grad && weight.requires_grad() ? Tensor::zeros({V, d}, acc, dev) : Tensor();           // (V, d)
  const double grad_scale = 1.0 / static_cast<double>(counted);
  for (int64_t r = 0; r < N; r += chunk_rows) {
    const int64_t n = std::min(chunk_rows, N - r);
    Tensor rows = h.narrow(0, r, n);                   // (n, d)
    Tensor logits = Tensor::empty({n, V}, dt, dev);    // (n, V/tp)
    ops::matmul(logits, rows, w, false, true, 1.0, 0.0);
    // 1. local statistics: target logit (at the clamped column) and lse_r = (lse_r - logit[t]) + logit[t].
    Tensor picked = Tensor::empty({n, 1}, dt, dev);  // (n, 1)
    ops::embedding_forward(picked, logits.view({n * V, 1}), t_flat.narrow(0, r, n));
    Tensor target_logit = Tensor::empty({n}, acc, dev);
    ops::copy(target_logit, picked.view({n}));
    Tensor local_loss = Tensor::empty({n}, acc, dev);
    Tensor P = grad ? Tensor::empty({n, V}, dt, dev) : Tensor();  // (n, V/tp) softmax_r - onehot(t)
    ops::cross_entropy_forward_backward(local_loss, P, logits, t_local.narrow(0, r, n), -1, 1.0);
    Tensor stats = Tensor::empty({2, n}, acc, dev);  // [lse_r ; t_r]
    ops::add(stats.select(0, 0), local_loss, target_logit, 1.0, 1.0);
    ops::mul(stats.select(0, 1), target_logit, m_here.narrow(0, r, n));
    // 2. one all-gather of the statistics of every rank.
    Tensor gathered = Tensor::empty({R, 2, n}, acc, dev);
    group.all_gather(gathered, stats);
    Tensor lse_of_rank = Tensor::empty({n, R}, acc, dev), t_of_rank = Tensor::empty({n, R}, acc, dev);
    ops::copy(lse_of_rank, gathered.select(1, 0).transpose(0, 1));
    ops::copy(t_of_rank, gathered.select(1, 1).transpose(0, 1));
    // 3. lse = log sum_r exp(lse_r) = CE(lse_of_rank, column 0) + lse_0; loss = (lse - t) for counted rows.
    Tensor lse = Tensor::empty({n}, acc, dev), lse0 = Tensor::empty({n}, acc, dev), t = Tensor::empty({n, 1}, acc, dev);
    ops::cross_entropy_forward_backward(lse, Tensor(), lse_of_rank, t_zero.narrow(0, r, n), -1, 1.0);
    ops::copy(lse0, lse_of_rank.select(1, 0));
    ops::add(lse, lse, lse0, 1.0, 1.0);
    ops::sum_to(t, t_of_rank);
    Tensor row_loss = losses.narrow(0, r, n);
    ops::add(row_loss, lse, t.view({n}), 1.0, -1.0);
    ops::mul(row_loss, row_loss, m_valid.narrow(0, r, n));
    if (!grad) continue;
    // 4. w = exp(lse_r - lse) is this rank's column of the softmax over ranks: the CE gradient with its
    // onehot on another column gives it without a 1 - 1 cancellation.
    Tensor softmax_over_ranks = Tensor::empty({n, R}, acc, dev), unused = Tensor::empty({n}, acc, dev);
    ops::cross_entropy_forward_backward(unused, softmax_over_ranks, lse_of_rank, t_other.narrow(0, r, n), -1, 1.0);
    Tensor a = Tensor::empty({n}, acc, dev), c = Tensor::empty({n}, acc, dev);  // dlogits = a P + c onehot(t)
    ops::copy(a, softmax_over_ranks.select(1, rank));
    ops::add(c, a, m_here.narrow(0, r, n), grad_scale, -grad_scale);
    ops::mul(c, c, m_valid.narrow(0, r, n));
    ops::mul(a, a, m_valid.narrow(0, r, n));
    ops::scale(a, a, grad_scale);
    const Tensor cols = t_column.narrow(0, r, n);
    if (d_hidden.defined()) {  // d(h) = a (P W) + c W[t]
      Tensor dh = Tensor::empty({n, d}, acc, dev), w_t = Tensor::empty({n, d}, dt, dev), w_t_acc = Tensor::empty({n, d}, acc, dev);
      ops::matmul(dh, P, w, false, false, 1.0, 0.0);
      scale_rows(dh, a);
      ops::embedding_forward(w_t, w, cols);
      ops::copy(w_t_acc, w_t);
      scale_rows(w_t_acc, c);
      ops::add(dh, dh, w_t_acc, 1.0, 1.0);
      ops::copy(d_hidden.narrow(0, r, n), dh);
    }
    if (d_weight.defined()) {  // d(W) += P^T (a h) + scatter of c h into the target rows
      Tensor ah = Tensor::empty({n, d}, acc, dev), ah_dt = Tensor::empty({n, d}, dt, dev), ch = Tensor::empty({n, d}, acc, dev);
      ops::copy(ah, rows);
      ops::copy(ch, rows);
      scale_rows(ah, a);
      scale_rows(ch, c);
      ops::copy(ah_dt, ah);
      ops::matmul(d_weight, P, ah_dt, true, false, 1.0, 1.0);
      ops::embedding_backward(d_weight, ch, cols);
    }
  }
  return finish_loss(losses, grad_scale, hidden, weight, targets, d_hidden, d_weight, grad);
}

}  // namespace latte
