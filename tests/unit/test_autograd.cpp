// The autograd engine on its own: custom nodes, diamonds, accumulation into leaves, no-grad, retain,
// view backward, checkpointing. Uses only views and test-local nodes so it does not depend on kernels.
#include <gtest/gtest.h>

#include "autograd/checkpoint.h"
#include "autograd/node.h"
#include "core/tensor.h"

using namespace latte;
using namespace latte::autograd;

namespace {

// y = c * x (elementwise by a constant), a minimal differentiable op written against the Node API.
struct ScaleNode : Node {
  double c;
  explicit ScaleNode(double c) : c(c) {}
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    std::vector<double> v = g[0].to_vector();
    for (double& x : v) x *= c;
    return {Tensor::from_vector(v, g[0].shape(), g[0].dtype())};
  }
  std::string name() const override { return "ScaleNode"; }
};

Tensor scale_by(const Tensor& x, double c) {
  std::vector<double> v = x.to_vector();
  for (double& e : v) e *= c;
  Tensor y = Tensor::from_vector(v, x.shape(), x.dtype());
  if (needs_grad({&x})) record(std::make_shared<ScaleNode>(c), {x}, {y});
  return y;
}

// y = a + b (same shape).
struct AddNode : Node {
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override { return {g[0], g[0]}; }
  std::string name() const override { return "AddNode"; }
};

Tensor plus(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  for (size_t i = 0; i < va.size(); ++i) va[i] += vb[i];
  Tensor y = Tensor::from_vector(va, a.shape(), a.dtype());
  if (needs_grad({&a, &b})) record(std::make_shared<AddNode>(), {a, b}, {y});
  return y;
}

// Sum of all elements as a scalar.
struct SumNode : Node {
  Shape shape;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override { return {Tensor::full(shape, g[0].item(), g[0].dtype())}; }
  std::string name() const override { return "SumNode"; }
};

Tensor total(const Tensor& x) {
  double s = 0;
  for (double v : x.to_vector()) s += v;
  Tensor y = Tensor::scalar(s, x.dtype());
  if (needs_grad({&x})) {
    auto n = std::make_shared<SumNode>();
    n->shape = x.shape();
    record(n, {x}, {y});
  }
  return y;
}

// y = c * x, adding its gradient into the sum the engine offers (Node::partial_sums) when there is one, as a
// GEMM with beta = 1 would; counts the offers it used.
struct ScaleIntoNode : Node {
  double c;
  int* used;
  ScaleIntoNode(double c, int* used) : c(c), used(used) {}
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    std::vector<double> v = g[0].to_vector();
    if (!partial_sums.empty() && partial_sums[0].defined()) {
      Tensor sum = partial_sums[0];
      double* p = sum.data<double>();
      for (size_t i = 0; i < v.size(); ++i) p[i] += c * v[i];
      ++*used;
      return {sum};
    }
    for (double& x : v) x *= c;
    return {Tensor::from_vector(v, g[0].shape(), g[0].dtype())};
  }
  std::string name() const override { return "ScaleIntoNode"; }
};

Tensor scale_into(const Tensor& x, double c, int* used) {
  std::vector<double> v = x.to_vector();
  for (double& e : v) e *= c;
  Tensor y = Tensor::from_vector(v, x.shape(), x.dtype());
  if (needs_grad({&x})) record(std::make_shared<ScaleIntoNode>(c, used), {x}, {y});
  return y;
}

// y = x; its backward hands the incoming gradient on as it is (shared with whoever else holds it).
struct PassNode : Node {
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override { return {g[0]}; }
  std::string name() const override { return "PassNode"; }
};

Tensor pass(const Tensor& x) {
  Tensor y = Tensor::from_vector(x.to_vector(), x.shape(), x.dtype());
  if (needs_grad({&x})) record(std::make_shared<PassNode>(), {x}, {y});
  return y;
}

Tensor leaf(const Shape& s, uint64_t seed) { return Tensor::randn(s, seed, 0, 1.0, DType::F64).set_requires_grad(true); }

}  // namespace

TEST(Autograd, DiamondSumsBothPaths) {
  Tensor x = leaf({3}, 1);
  Tensor a = scale_by(x, 2.0);
  Tensor b = scale_by(x, 5.0);
  Tensor y = total(plus(a, b));  // dy/dx = 7
  y.backward();
  for (double g : x.grad().to_vector()) EXPECT_DOUBLE_EQ(g, 7.0);
}

// The second consumer of h is offered h's gradient so far and adds into it; the engine must not add it again.
TEST(Autograd, PartialSumOfferedToTheLaterContribution) {
  Tensor x = leaf({3}, 11);
  Tensor h = scale_by(x, 1.0);
  int used = 0;
  Tensor a = scale_into(h, 2.0, &used);
  Tensor b = scale_into(h, 5.0, &used);  // runs first in the backward: nothing to offer yet
  total(plus(a, b)).backward();
  EXPECT_EQ(used, 1);
  for (double g : x.grad().to_vector()) EXPECT_DOUBLE_EQ(g, 7.0);
}

// A slot holding a gradient someone else also holds (a pass-through of the add's shared gradient) is not offered:
// writing into it would change the other holder's gradient.
TEST(Autograd, SharedGradientIsNotOffered) {
  Tensor x = leaf({3}, 12);
  Tensor h = scale_by(x, 1.0);
  int used = 0;
  Tensor a = scale_into(h, 5.0, &used);
  Tensor b = pass(h);  // runs first: h's slot gets the add's gradient, still held by a's node
  total(plus(a, b)).backward();
  EXPECT_EQ(used, 0);
  for (double g : x.grad().to_vector()) EXPECT_DOUBLE_EQ(g, 6.0);
}

TEST(Autograd, SameTensorUsedTwiceAccumulates) {
  Tensor x = leaf({4}, 2);
  Tensor y = total(plus(x, x));
  y.backward();
  for (double g : x.grad().to_vector()) EXPECT_DOUBLE_EQ(g, 2.0);
}

TEST(Autograd, LeafGradientsAccumulateAcrossBackwardCalls) {
  Tensor x = leaf({2}, 3);
  total(scale_by(x, 3.0)).backward();
  total(scale_by(x, 4.0)).backward();
  for (double g : x.grad().to_vector()) EXPECT_DOUBLE_EQ(g, 7.0);
  x.zero_grad();
  EXPECT_FALSE(x.grad().defined());
}

TEST(Autograd, NoGradGuardRecordsNothing) {
  Tensor x = leaf({2}, 4);
  Tensor y;
  {
    NoGradGuard guard;
    y = scale_by(x, 2.0);
  }
  EXPECT_FALSE(y.requires_grad());
  EXPECT_TRUE(grad_enabled());
  EXPECT_THROW(total(y).backward(), Error);
}

TEST(Autograd, BackwardTwiceNeedsRetainGraph) {
  Tensor x = leaf({2}, 5);
  Tensor y = total(scale_by(x, 2.0));
  y.backward(Tensor(), /*retain_graph=*/true);
  y.backward();
  for (double g : x.grad().to_vector()) EXPECT_DOUBLE_EQ(g, 4.0);
}

TEST(Autograd, ViewsPropagateGradients) {
  Tensor x = leaf({2, 3, 4}, 6);
  // permute + reshape + narrow + select + expand, each scaled differently so a wrong route shows.
  Tensor p = x.permute({2, 0, 1}).reshape({4, 6});           // (4, 6)
  Tensor n = scale_by(p.narrow(0, 1, 2), 3.0);                // rows 1..2 of p, times 3
  Tensor s = x.select(2, 0).unsqueeze(0).expand({5, 2, 3});   // x[:, :, 0] broadcast 5 times
  Tensor y = plus(total(n).reshape({1}), total(s).reshape({1}));
  total(y).backward();
  // d/dx[a, b, c] = 3 * [c in {1, 2}] + 5 * [c == 0]
  Tensor g = x.grad();
  for (int64_t a = 0; a < 2; ++a)
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t c = 0; c < 4; ++c) {
        double expect = (c == 1 || c == 2 ? 3.0 : 0.0) + (c == 0 ? 5.0 : 0.0);
        EXPECT_DOUBLE_EQ(g.at({a, b, c}), expect) << a << b << c;
      }
}

TEST(Autograd, SliceWithStepAndCastBackward) {
  Tensor x = leaf({7}, 8);
  Tensor s = x.slice(0, 1, 7, 3).to(DType::F32);  // elements 1 and 4
  total(s).backward();
  std::vector<double> g = x.grad().to_vector();
  for (size_t i = 0; i < g.size(); ++i) EXPECT_EQ(g[i], (i == 1 || i == 4) ? 1.0 : 0.0);
  EXPECT_EQ(x.grad().dtype(), DType::F64);
}

TEST(Autograd, RetainGradOnIntermediate) {
  Tensor x = leaf({3}, 9);
  Tensor h = scale_by(x, 2.0);
  h.retain_grad();
  total(scale_by(h, 3.0)).backward();
  for (double g : h.grad().to_vector()) EXPECT_DOUBLE_EQ(g, 3.0);
  for (double g : x.grad().to_vector()) EXPECT_DOUBLE_EQ(g, 6.0);
}

TEST(Autograd, CheckpointGivesSameGradientsAndRecomputes) {
  Tensor x1 = leaf({5}, 10), x2 = Tensor(x1.detach().clone()).set_requires_grad(true);
  Tensor w1 = leaf({5}, 11), w2 = Tensor(w1.detach().clone()).set_requires_grad(true);
  int calls = 0;
  auto block = [&](const Tensor& x, const Tensor& w) { return scale_by(plus(scale_by(x, 2.0), w), -1.5); };
  total(scale_by(block(x1, w1), 2.0)).backward();
  CheckpointFn fn = [&](const std::vector<Tensor>& in) {
    ++calls;
    return std::vector<Tensor>{block(in[0], w2)};
  };
  std::vector<Tensor> out = checkpoint(fn, {x2});
  EXPECT_EQ(calls, 1);
  total(scale_by(out[0], 2.0)).backward();
  EXPECT_EQ(calls, 2);  // recomputed during backward
  EXPECT_EQ(x1.grad().to_vector(), x2.grad().to_vector());
  EXPECT_EQ(w1.grad().to_vector(), w2.grad().to_vector());
}

TEST(Autograd, BackwardOnNonScalarNeedsGradient) {
  Tensor x = leaf({3}, 12);
  Tensor y = scale_by(x, 2.0);
  EXPECT_THROW(y.backward(), Error);
  y.backward(Tensor::ones({3}, DType::F64));
  for (double g : x.grad().to_vector()) EXPECT_DOUBLE_EQ(g, 2.0);
}
