// Differentiable basics (autograd/basic_functions.h): arithmetic, reductions, matmul/linear, embedding,
// cross-entropy, concat/split. Each function checks its arguments with a message naming the function and
// the shapes, allocates its outputs (same dtype as the inputs; losses f32, or f64 for f64 logits), calls
// the kernel through ops::, and, when an input needs a gradient, records a Node that saves only what its
// backward needs. Saved tensors are detached (no reference cycle through grad_fn) and freed by release().
// Backward computes a gradient only for inputs whose edge is live (next_edges[i].fn).
#include "autograd/basic_functions.h"

#include <algorithm>
#include <numeric>

#include "autograd/node.h"
#include "kernels/ops.h"

namespace latte {

namespace {

using autograd::Node;

// A contiguous tensor with no autograd history: what the kernels take. Copies only when t is strided.
Tensor contig(const Tensor& t) {
  Tensor d = t.detach();
  return d.is_contiguous() ? d : d.contiguous();
}

// A matmul operand in a layout the kernels accept (any batch stride, last-dim stride 1, row stride >= width);
// anything else (a transpose view, a stride-0 expand of the last dim) is copied contiguous first.
Tensor gemm_ready(const Tensor& t) {
  Tensor d = t.detach();
  const int64_t rows = d.size(-2), cols = d.size(-1);
  const bool unit_cols = cols <= 1 || d.stride(-1) == 1;
  const bool rows_ok = rows <= 1 || d.stride(-2) >= cols;
  return unit_cols && rows_ok ? d : d.contiguous();
}

bool wants_grad(const Node& node, size_t input) { return node.next_edges[input].fn != nullptr; }

Tensor scaled(const Tensor& g, double alpha) {
  Tensor out = Tensor::empty(g.shape(), g.dtype(), g.device());
  ops::scale(out, contig(g), alpha);
  return out;
}

Tensor product(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  ops::mul(out, contig(a), contig(b));
  return out;
}

// A fresh tensor of `shape` filled with the value of the one-element tensor g, without reading g on the host.
Tensor broadcast_scalar(const Tensor& g, const Shape& shape) {
  Tensor out = Tensor::empty(shape, g.dtype(), g.device());
  ops::copy(out, g.reshape(Shape{}).expand(shape));
  return out;
}

void check_binary(const char* op, const Tensor& a, const Tensor& b) {
  LATTE_REQUIRE(a.defined() && b.defined(), op, ": undefined tensor argument");
  LATTE_REQUIRE(a.shape() == b.shape(), op, ": shapes differ, a ", a.shape().str(), " vs b ", b.shape().str(),
                "; broadcast explicitly with expand()");
  LATTE_REQUIRE(a.dtype() == b.dtype(), op, ": dtypes differ, a ", dtype_name(a.dtype()), " vs b ", dtype_name(b.dtype()),
                "; cast one with .to()");
}

// ---- elementwise --------------------------------------------------------------------------------------

// out = alpha*a + beta*b  =>  da = alpha*g, db = beta*g.
struct AddBackward : Node {
  double alpha = 1, beta = 1;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor ga, gb;
    // The engine accumulates out of place, so handing the same g to both inputs is safe.
    if (wants_grad(*this, 0)) ga = alpha == 1.0 ? g[0] : scaled(g[0], alpha);
    if (wants_grad(*this, 1)) gb = beta == 1.0 ? g[0] : scaled(g[0], beta);
    return {ga, gb};
  }
  std::string name() const override { return beta == 1.0 ? "AddBackward" : "SubBackward"; }
};

Tensor add_impl(const char* op, const Tensor& a, const Tensor& b, double beta) {
  check_binary(op, a, b);
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  ops::add(out, contig(a), contig(b), 1.0, beta);
  if (autograd::needs_grad({&a, &b})) {
    auto node = std::make_shared<AddBackward>();
    node->beta = beta;
    autograd::record(node, {a, b}, {out});
  }
  return out;
}

struct MulBackward : Node {
  Tensor a, b;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor ga, gb;
    if (wants_grad(*this, 0)) ga = product(g[0], b);
    if (wants_grad(*this, 1)) gb = product(g[0], a);
    return {ga, gb};
  }
  void release() override { a = b = Tensor(); }
  std::string name() const override { return "MulBackward"; }
};

struct ScaleBackward : Node {
  double alpha = 1;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override { return {scaled(g[0], alpha)}; }
  std::string name() const override { return "ScaleBackward"; }
};

// ---- reductions ---------------------------------------------------------------------------------------

struct SumBackward : Node {
  Shape input_shape;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override { return {broadcast_scalar(g[0], input_shape)}; }
  std::string name() const override { return "SumBackward"; }
};

// d/dx sum(x^2) = 2 x g.
struct SumSquaresBackward : Node {
  Tensor x;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor dx = broadcast_scalar(g[0], x.shape());
    ops::mul(dx, dx, x);
    ops::scale(dx, dx, 2.0);
    return {dx};
  }
  void release() override { x = Tensor(); }
  std::string name() const override { return "SumSquaresBackward"; }
};

Tensor reduce_impl(const Tensor& x, bool squares) {
  LATTE_REQUIRE(x.defined(), squares ? "sum_squares" : "sum", ": undefined tensor argument");
  Tensor out = Tensor::empty(Shape{}, x.dtype(), x.device());
  Tensor xc = contig(x);
  if (squares)
    ops::sum_squares(out, xc);
  else
    ops::sum(out, xc);
  if (autograd::needs_grad({&x})) {
    if (squares) {
      auto node = std::make_shared<SumSquaresBackward>();
      node->x = xc;
      autograd::record(node, {x}, {out});
    } else {
      auto node = std::make_shared<SumBackward>();
      node->input_shape = x.shape();
      autograd::record(node, {x}, {out});
    }
  }
  return out;
}

// ---- matmul -------------------------------------------------------------------------------------------

// op(l) @ op(r) into a new tensor of `shape`. When `shape` is 2-D but an operand is 3-D (the gradient of a
// 2-D operand that was broadcast over the batch), the per-batch products are summed: beta = 1 after the first.
Tensor matmul_into_shape(const Shape& shape, const Tensor& l, const Tensor& r, bool trans_l, bool trans_r) {
  Tensor out = Tensor::empty(shape, l.dtype(), l.device());
  if (shape.ndim() == 3 || (l.dim() == 2 && r.dim() == 2)) {
    ops::matmul(out, l, r, trans_l, trans_r, 1.0, 0.0);
    return out;
  }
  const int64_t batch = l.dim() == 3 ? l.size(0) : r.size(0);
  if (batch == 0) ops::fill(out, 0.0);
  for (int64_t i = 0; i < batch; ++i)
    ops::matmul(out, l.dim() == 3 ? l.select(0, i) : l, r.dim() == 3 ? r.select(0, i) : r, trans_l, trans_r, 1.0,
                i == 0 ? 0.0 : 1.0);
  return out;
}

// C = op(A) @ op(B), G = dC:
//   dop(A) = G @ op(B)^T  =>  dA = G @ op(B)^T          (A not transposed)   or  op(B) @ G^T   (A transposed)
//   dop(B) = op(A)^T @ G  =>  dB = op(A)^T @ G          (B not transposed)   or  G^T @ op(A)   (B transposed)
// linear() records this node for its (..., in) input and (..., out) output directly, the kernel seeing them
// flattened to (rows, in) / (rows, out): a_input_shape and out_shape say how (no reshape nodes in the graph, so
// the gradients of several projections of one input meet in one slot, where dA can be added by the GEMM).
struct MatmulBackward : Node {
  Tensor a, b;  // as handed to the kernel (gemm_ready layout)
  bool trans_a = false, trans_b = false;
  Shape a_input_shape;  // input 0 as recorded (a's shape, or linear's (..., in))
  Shape out_shape;      // the product as the kernel wrote it (2-D or 3-D)
  std::vector<Tensor> apply(const std::vector<Tensor>& grads) override {
    const Tensor g = gemm_ready(grads[0].shape() == out_shape ? grads[0] : grads[0].reshape(out_shape));
    Tensor da, db;
    if (wants_grad(*this, 0)) {
      // Direct products only (not a 2-D operand broadcast over a batch): dA += G op(B)^T into the offered sum.
      const Tensor& sum = partial_sums.empty() ? Tensor() : partial_sums[0];
      const bool direct = a.dim() == 3 || (a.dim() == 2 && b.dim() == 2);
      if (direct && sum.defined() && sum.shape() == a_input_shape && sum.dtype() == a.dtype() && sum.device() == a.device()) {
        const Tensor into = sum.view(a.shape());
        if (trans_a) ops::matmul(into, b, g, trans_b, true, 1.0, 1.0);
        else ops::matmul(into, g, b, false, !trans_b, 1.0, 1.0);
        da = sum;
      } else {
        da = trans_a ? matmul_into_shape(a.shape(), b, g, trans_b, true) : matmul_into_shape(a.shape(), g, b, false, !trans_b);
        if (da.shape() != a_input_shape) da = da.view(a_input_shape);
      }
    }
    if (wants_grad(*this, 1))
      db = trans_b ? matmul_into_shape(b.shape(), g, a, true, trans_a) : matmul_into_shape(b.shape(), a, g, !trans_a, false);
    return {da, db};
  }
  void release() override { a = b = Tensor(); }
  std::string name() const override { return "MatmulBackward"; }
};

// ---- embedding ----------------------------------------------------------------------------------------

struct EmbeddingBackward : Node {
  Tensor ids;  // (N) i32
  Shape table_shape;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor dtable = Tensor::zeros(table_shape, g[0].dtype(), g[0].device());  // (V, D); the kernel accumulates
    ops::embedding_backward(dtable, contig(g[0]).view({ids.numel(), table_shape[1]}), ids);
    return {dtable};
  }
  void release() override { ids = Tensor(); }
  std::string name() const override { return "EmbeddingBackward"; }
};

// ---- cross-entropy ------------------------------------------------------------------------------------

// Logits flattened to rows: what both cross-entropy functions hand the fused kernel.
struct CrossEntropyRows {
  Tensor logits;   // (N, V) contiguous, detached
  Tensor targets;  // (N) i32 contiguous
  DType loss_dtype = DType::F32;
};

CrossEntropyRows cross_entropy_rows(const char* op, const Tensor& logits, const Tensor& targets) {
  LATTE_REQUIRE(logits.defined() && targets.defined(), op, ": undefined tensor argument");
  LATTE_REQUIRE(logits.dim() >= 1, op, ": logits must be (..., V), got a scalar");
  Shape expected;
  for (int d = 0; d + 1 < logits.dim(); ++d) expected.push_back(logits.size(d));
  LATTE_REQUIRE(targets.shape() == expected, op, ": targets ", targets.shape().str(), " must be logits' shape without ",
                "the vocab dim, ", expected.str(), " (logits ", logits.shape().str(), ")");
  LATTE_REQUIRE(targets.dtype() == DType::I32, op, ": targets must be i32, got ", dtype_name(targets.dtype()));
  LATTE_REQUIRE(is_floating(logits.dtype()), op, ": logits must be floating point, got ", dtype_name(logits.dtype()));
  CrossEntropyRows rows;
  const int64_t V = logits.size(-1);
  rows.logits = contig(logits).view({expected.numel(), V});
  rows.targets = contig(targets).view({expected.numel()});
  // Losses are reduced in fp32 even for bf16 logits; f64 logits keep f64 so gradchecks stay exact.
  rows.loss_dtype = logits.dtype() == DType::F64 ? DType::F64 : DType::F32;
  return rows;
}

struct CrossEntropyBackward : Node {
  CrossEntropyRows rows;
  Shape logits_shape;
  int64_t ignore_index = -1;
  bool per_token = false;
  double count = 1;  // targets that are not ignored (mean only), at least 1
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    const int64_t N = rows.logits.size(0), V = rows.logits.size(1);
    Tensor dlogits = Tensor::empty({N, V}, rows.logits.dtype(), rows.logits.device());  // (N, V)
    Tensor losses = Tensor::empty({N}, rows.loss_dtype, rows.logits.device());         // (N), recomputed, unused
    if (!per_token) {
      // The scalar upstream gradient folds into grad_scale (one host read of a single value).
      ops::cross_entropy_forward_backward(losses, dlogits, rows.logits, rows.targets, ignore_index, g[0].item() / count);
    } else {
      // Per-row upstream gradients: gradient with scale 1, then multiply row n by g[n] (broadcast over V).
      ops::cross_entropy_forward_backward(losses, dlogits, rows.logits, rows.targets, ignore_index, 1.0);
      Tensor row_scale = Tensor::empty({N, V}, dlogits.dtype(), dlogits.device());
      ops::copy(row_scale, contig(g[0]).view({N, 1}).expand({N, V}));
      ops::mul(dlogits, dlogits, row_scale);
    }
    return {dlogits.view(logits_shape)};
  }
  void release() override { rows = CrossEntropyRows(); }
  std::string name() const override { return per_token ? "CrossEntropyPerTokenBackward" : "CrossEntropyBackward"; }
};

// ---- concat -------------------------------------------------------------------------------------------

struct ConcatBackward : Node {
  int dim = 0;
  std::vector<int64_t> sizes;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    std::vector<Tensor> grads(sizes.size());
    int64_t start = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      if (wants_grad(*this, i)) grads[i] = g[0].narrow(dim, start, sizes[i]);
      start += sizes[i];
    }
    return grads;
  }
  std::string name() const override { return "ConcatBackward"; }
};

// Gradient of split: the parts' gradients written side by side into one fresh tensor (one pass over the input's
// size), where a slice backward per part would zero a full-size tensor for each and then add them up.
struct SplitBackward : Node {
  autograd::OutputMeta input;
  int dim = 0;
  std::vector<int64_t> sizes;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    Tensor full = Tensor::empty(input.shape, g[0].dtype(), g[0].device());
    int64_t start = 0;
    for (size_t i = 0; i < sizes.size(); ++i) {
      ops::copy(full.narrow(dim, start, sizes[i]), g[i]);  // the engine hands zeros for a part nobody used
      start += sizes[i];
    }
    return {full};
  }
  std::string name() const override { return "SplitBackward"; }
};

int wrap_dim(const char* op, int dim, int ndim) {
  const int w = dim < 0 ? dim + ndim : dim;
  LATTE_REQUIRE(w >= 0 && w < ndim, op, ": dim ", dim, " out of range for a ", ndim, "-D tensor");
  return w;
}

}  // namespace

// ---- public functions ---------------------------------------------------------------------------------

Tensor add(const Tensor& a, const Tensor& b) { return add_impl("add", a, b, 1.0); }
Tensor sub(const Tensor& a, const Tensor& b) { return add_impl("sub", a, b, -1.0); }

Tensor mul(const Tensor& a, const Tensor& b) {
  check_binary("mul", a, b);
  Tensor ac = contig(a), bc = contig(b);
  Tensor out = Tensor::empty(a.shape(), a.dtype(), a.device());
  ops::mul(out, ac, bc);
  if (autograd::needs_grad({&a, &b})) {
    auto node = std::make_shared<MulBackward>();
    node->a = ac;
    node->b = bc;
    autograd::record(node, {a, b}, {out});
  }
  return out;
}

Tensor scale(const Tensor& x, double alpha) {
  LATTE_REQUIRE(x.defined(), "scale: undefined tensor argument");
  Tensor out = Tensor::empty(x.shape(), x.dtype(), x.device());
  ops::scale(out, contig(x), alpha);
  if (autograd::needs_grad({&x})) {
    auto node = std::make_shared<ScaleBackward>();
    node->alpha = alpha;
    autograd::record(node, {x}, {out});
  }
  return out;
}

Tensor sum(const Tensor& x) { return reduce_impl(x, false); }
Tensor sum_squares(const Tensor& x) { return reduce_impl(x, true); }
Tensor mean(const Tensor& x) {
  LATTE_REQUIRE(x.defined() && x.numel() > 0, "mean: needs a non-empty tensor");
  return scale(sum(x), 1.0 / static_cast<double>(x.numel()));
}

Tensor matmul(const Tensor& a, const Tensor& b, bool trans_a, bool trans_b) {
  LATTE_REQUIRE(a.defined() && b.defined(), "matmul: undefined tensor argument");
  const std::string shapes =
      str("a ", a.shape().str(), trans_a ? "^T" : "", " @ b ", b.shape().str(), trans_b ? "^T" : "");
  LATTE_REQUIRE((a.dim() == 2 || a.dim() == 3) && (b.dim() == 2 || b.dim() == 3), "matmul: operands must be 2-D or 3-D: ",
                shapes);
  LATTE_REQUIRE(a.dtype() == b.dtype(), "matmul: dtypes differ, a ", dtype_name(a.dtype()), " vs b ", dtype_name(b.dtype()));
  const int64_t M = trans_a ? a.size(-1) : a.size(-2);
  const int64_t K = trans_a ? a.size(-2) : a.size(-1);
  const int64_t Kb = trans_b ? b.size(-1) : b.size(-2);
  const int64_t N = trans_b ? b.size(-2) : b.size(-1);
  LATTE_REQUIRE(K == Kb, "matmul: inner dimensions differ (", K, " vs ", Kb, "): ", shapes);
  LATTE_REQUIRE(a.dim() == 2 || b.dim() == 2 || a.size(0) == b.size(0), "matmul: batch sizes differ: ", shapes);
  Shape out_shape{M, N};
  if (a.dim() == 3 || b.dim() == 3) out_shape = Shape{a.dim() == 3 ? a.size(0) : b.size(0), M, N};

  Tensor ar = gemm_ready(a), br = gemm_ready(b);
  Tensor out = Tensor::empty(out_shape, a.dtype(), a.device());
  ops::matmul(out, ar, br, trans_a, trans_b, 1.0, 0.0);
  if (autograd::needs_grad({&a, &b})) {
    auto node = std::make_shared<MatmulBackward>();
    node->a = ar;
    node->b = br;
    node->trans_a = trans_a;
    node->trans_b = trans_b;
    node->a_input_shape = a.shape();
    node->out_shape = out_shape;
    autograd::record(node, {a, b}, {out});
  }
  return out;
}

namespace {

// The gradient of linear_add: linear's, plus the output's gradient passed on to the residual as it is.
struct LinearAddBackward : MatmulBackward {
  std::vector<Tensor> apply(const std::vector<Tensor>& grads) override {
    std::vector<Tensor> g = MatmulBackward::apply(grads);
    g.push_back(wants_grad(*this, 2) ? grads[0] : Tensor());
    return g;
  }
  std::string name() const override { return "LinearAddBackward"; }
};

// x (..., in) @ weight^T (+ residual) as one (rows, in) GEMM, recorded against x and y themselves (see
// MatmulBackward), so no reshape nodes sit between the projections of one input.
Tensor linear_impl(const char* op, const Tensor& x, const Tensor& weight, const Tensor* residual) {
  LATTE_REQUIRE(x.defined() && weight.defined() && (!residual || residual->defined()), op, ": undefined tensor argument");
  LATTE_REQUIRE(weight.dim() == 2 && x.dim() >= 1 && x.size(-1) == weight.size(1), op, ": x ", x.shape().str(),
                " must end in the weight's in_features; weight (out, in) is ", weight.shape().str());
  LATTE_REQUIRE(x.dtype() == weight.dtype(), op, ": dtypes differ, x ", dtype_name(x.dtype()), " vs weight ",
                dtype_name(weight.dtype()));
  const int64_t in = weight.size(1);
  Shape out_shape = x.shape();
  out_shape[out_shape.ndim() - 1] = weight.size(0);
  if (residual)
    LATTE_REQUIRE(residual->shape() == out_shape && residual->dtype() == x.dtype(), op, ": residual ",
                  residual->str(), " must have the output's shape ", out_shape.str(), " and dtype");
  const int64_t rows = in == 0 ? 0 : x.numel() / in;
  if (!residual && (x.dim() == 2 || rows == 0)) {
    Tensor y = matmul(x.dim() == 2 ? x : x.reshape({rows, in}), weight, false, true);  // (N, out)
    return x.dim() == 2 ? y : y.reshape(out_shape);
  }
  Tensor xr = gemm_ready(x.detach().reshape({rows, in}));  // (rows, in)
  Tensor wr = gemm_ready(weight);                           // (out, in)
  Tensor y = Tensor::empty(out_shape, x.dtype(), x.device());  // (..., out)
  const Shape flat{rows, weight.size(0)};
  if (residual) ops::matmul_add(y.view(flat), xr, wr, contig(*residual).view(flat), false, true);
  else ops::matmul(y.view(flat), xr, wr, false, true, 1.0, 0.0);
  const bool grad = residual ? autograd::needs_grad({&x, &weight, residual}) : autograd::needs_grad({&x, &weight});
  if (grad) {
    auto node = residual ? std::make_shared<LinearAddBackward>() : std::make_shared<MatmulBackward>();
    node->a = xr;
    node->b = wr;
    node->trans_b = true;
    node->a_input_shape = x.shape();
    node->out_shape = flat;
    if (residual) autograd::record(node, {x, weight, *residual}, {y});
    else autograd::record(node, {x, weight}, {y});
  }
  return y;
}

}  // namespace

Tensor linear(const Tensor& x, const Tensor& weight) { return linear_impl("linear", x, weight, nullptr); }

Tensor linear_add(const Tensor& x, const Tensor& weight, const Tensor& residual) {
  return linear_impl("linear_add", x, weight, &residual);
}

Tensor embedding(const Tensor& table, const Tensor& ids) {
  LATTE_REQUIRE(table.defined() && ids.defined(), "embedding: undefined tensor argument");
  LATTE_REQUIRE(table.dim() == 2, "embedding: table must be (V, D), got ", table.shape().str());
  LATTE_REQUIRE(ids.dtype() == DType::I32, "embedding: ids must be i32, got ", dtype_name(ids.dtype()));
  LATTE_REQUIRE(ids.dim() < kMaxDims, "embedding: ids ", ids.shape().str(), " have too many dims for the (..., D) output");
  const int64_t N = ids.numel(), D = table.size(1);
  Shape out_shape = ids.shape();
  out_shape.push_back(D);
  Tensor flat_ids = contig(ids).view({N});
  Tensor out = Tensor::empty(out_shape, table.dtype(), table.device());
  ops::embedding_forward(out.view({N, D}), contig(table), flat_ids);
  if (autograd::needs_grad({&table})) {
    auto node = std::make_shared<EmbeddingBackward>();
    node->ids = flat_ids;
    node->table_shape = table.shape();
    autograd::record(node, {table}, {out});
  }
  return out;
}

Tensor cross_entropy(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  CrossEntropyRows rows = cross_entropy_rows("cross_entropy", logits, targets);
  const int64_t N = rows.targets.numel();
  Tensor losses = Tensor::empty({N}, rows.loss_dtype, logits.device());  // (N)
  ops::cross_entropy_forward_backward(losses, Tensor(), rows.logits, rows.targets, ignore_index, 0.0);
  // The mean is over the targets that count; reading them on the host is a copy of N ints (the data
  // loader made them there anyway). At least 1, so an all-ignored batch gives 0, not NaN.
  int64_t count = 0;
  for (double t : rows.targets.to_vector()) count += static_cast<int64_t>(t) != ignore_index;
  count = std::max<int64_t>(count, 1);
  Tensor loss = Tensor::empty(Shape{}, rows.loss_dtype, logits.device());
  ops::sum(loss, losses);
  ops::scale(loss, loss, 1.0 / static_cast<double>(count));
  if (autograd::needs_grad({&logits})) {
    auto node = std::make_shared<CrossEntropyBackward>();
    node->rows = rows;
    node->logits_shape = logits.shape();
    node->ignore_index = ignore_index;
    node->count = static_cast<double>(count);
    autograd::record(node, {logits}, {loss});
  }
  return loss;
}

Tensor cross_entropy_per_token(const Tensor& logits, const Tensor& targets, int64_t ignore_index) {
  CrossEntropyRows rows = cross_entropy_rows("cross_entropy_per_token", logits, targets);
  Tensor losses = Tensor::empty(targets.shape(), rows.loss_dtype, logits.device());  // (...)
  ops::cross_entropy_forward_backward(losses.view({rows.targets.numel()}), Tensor(), rows.logits, rows.targets,
                                      ignore_index, 0.0);
  if (autograd::needs_grad({&logits})) {
    auto node = std::make_shared<CrossEntropyBackward>();
    node->rows = rows;
    node->logits_shape = logits.shape();
    node->ignore_index = ignore_index;
    node->per_token = true;
    autograd::record(node, {logits}, {losses});
  }
  return losses;
}

Tensor concat(const std::vector<Tensor>& xs, int dim) {
  LATTE_REQUIRE(!xs.empty(), "concat: no tensors given");
  const Tensor& first = xs[0];
  LATTE_REQUIRE(first.defined() && first.dim() >= 1, "concat: input 0 must be a defined tensor with at least one dim");
  const int d = wrap_dim("concat", dim, first.dim());
  std::vector<int64_t> sizes;
  for (size_t i = 0; i < xs.size(); ++i) {
    const Tensor& x = xs[i];
    LATTE_REQUIRE(x.defined(), "concat: input ", i, " is undefined");
    bool same = x.dim() == first.dim();
    for (int k = 0; same && k < x.dim(); ++k) same = k == d || x.size(k) == first.size(k);
    LATTE_REQUIRE(same, "concat: input ", i, " has shape ", x.shape().str(), " but input 0 has ", first.shape().str(),
                  "; shapes must match except in dim ", d);
    LATTE_REQUIRE(x.dtype() == first.dtype() && x.device() == first.device(), "concat: input ", i, " is ", x.str(),
                  " but input 0 is ", first.str());
    sizes.push_back(x.size(d));
  }
  Shape out_shape = first.shape();
  out_shape[d] = std::accumulate(sizes.begin(), sizes.end(), int64_t{0});
  Tensor out = Tensor::empty(out_shape, first.dtype(), first.device());
  int64_t start = 0;
  for (size_t i = 0; i < xs.size(); ++i) {
    ops::copy(out.narrow(d, start, sizes[i]), xs[i]);  // strided write into the slab of input i
    start += sizes[i];
  }
  if (autograd::needs_grad(xs)) {
    auto node = std::make_shared<ConcatBackward>();
    node->dim = d;
    node->sizes = sizes;
    autograd::record(node, xs, {out});
  }
  return out;
}

// Views of x, recorded as one node (SplitBackward) rather than a slice node per part.
std::vector<Tensor> split(const Tensor& x, const std::vector<int64_t>& sizes, int dim) {
  LATTE_REQUIRE(x.defined() && x.dim() >= 1, "split: needs a defined tensor with at least one dim");
  const int d = wrap_dim("split", dim, x.dim());
  int64_t total = 0;
  for (int64_t s : sizes) {
    LATTE_REQUIRE(s >= 0, "split: negative size ", s);
    total += s;
  }
  LATTE_REQUIRE(total == x.size(d), "split: sizes add up to ", total, " but dim ", d, " of ", x.shape().str(), " is ",
                x.size(d));
  std::vector<Tensor> parts;
  const bool grad = autograd::needs_grad({&x});
  {
    autograd::NoGradGuard views_only;  // the parts' backward is the node below, not a slice node each
    int64_t start = 0;
    for (int64_t s : sizes) {
      parts.push_back(x.narrow(d, start, s));
      start += s;
    }
  }
  if (grad) {
    auto n = std::make_shared<SplitBackward>();
    n->input = {x.shape(), x.dtype(), x.device()};
    n->dim = d;
    n->sizes = sizes;
    autograd::record(n, {x}, parts);
  }
  return parts;
}

}  // namespace latte
