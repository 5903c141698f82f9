// Gradchecks (fp64 central differences vs the hand-written backward) for every function of
// autograd/basic_functions.h, on random odd shapes: elementwise ops (including the same tensor used twice,
// a diamond in the graph), reductions, matmul in every transpose/batch/broadcast form, linear, embedding
// with duplicate ids, both cross-entropies with ignored targets, concat and split.
#include <gtest/gtest.h>

#include "autograd/basic_functions.h"
#include "autograd/gradcheck.h"
#include "autograd/node.h"

namespace latte {
namespace {

using Fn = std::function<Tensor(const std::vector<Tensor>&)>;

Tensor leaf(const Shape& shape, uint64_t seed, double stddev = 1.0) {
  Tensor t = Tensor::randn(shape, seed, 0, stddev, DType::F64);
  t.set_requires_grad(true);
  return t;
}

Tensor ids_tensor(const std::vector<double>& v, const Shape& shape) { return Tensor::from_vector(v, shape, DType::I32); }

void expect_gradcheck(const Fn& f, const std::vector<Tensor>& inputs) {
  autograd::GradcheckResult r = autograd::gradcheck(f, inputs);
  EXPECT_TRUE(r.ok) << "max abs error " << r.max_abs_error << "\n" << r.report;
}

TEST(BasicGradcheck, Elementwise) {
  Tensor a = leaf({3, 7}, 1), b = leaf({3, 7}, 2);
  expect_gradcheck([](const std::vector<Tensor>& x) { return add(x[0], x[1]); }, {a, b});
  expect_gradcheck([](const std::vector<Tensor>& x) { return sub(x[0], x[1]); }, {a, b});
  expect_gradcheck([](const std::vector<Tensor>& x) { return mul(x[0], x[1]); }, {a, b});
  expect_gradcheck([](const std::vector<Tensor>& x) { return scale(x[0], -1.7); }, {a});
  // Only the second input requires grad: the backward must skip the first.
  Tensor fixed = Tensor::randn({3, 7}, 3, 0, 1.0, DType::F64);
  expect_gradcheck([](const std::vector<Tensor>& x) { return mul(x[0], x[1]); }, {fixed, b});
  expect_gradcheck([](const std::vector<Tensor>& x) { return sub(x[0], x[1]); }, {fixed, b});
}

TEST(BasicGradcheck, SameTensorTwiceDiamond) {
  Tensor a = leaf({5, 3}, 4), b = leaf({5, 3}, 5);
  expect_gradcheck([](const std::vector<Tensor>& x) { return add(x[0], x[0]); }, {a});
  expect_gradcheck([](const std::vector<Tensor>& x) { return mul(x[0], x[0]); }, {a});
  expect_gradcheck([](const std::vector<Tensor>& x) { return sub(x[0], x[0]); }, {a});
  // a feeds two branches that meet again: (a*b) + scale(a) - a.
  expect_gradcheck([](const std::vector<Tensor>& x) { return sub(add(mul(x[0], x[1]), scale(x[0], 3.0)), x[0]); }, {a, b});
  // The value check of the diamond: d/da sum(a + a) = 2.
  Tensor c = leaf({2, 3}, 6);
  sum(add(c, c)).backward();
  for (double g : c.grad().to_vector()) EXPECT_EQ(g, 2.0);
}

TEST(BasicGradcheck, Reductions) {
  Tensor a = leaf({3, 5, 7}, 7);
  expect_gradcheck([](const std::vector<Tensor>& x) { return sum(x[0]); }, {a});
  expect_gradcheck([](const std::vector<Tensor>& x) { return mean(x[0]); }, {a});
  expect_gradcheck([](const std::vector<Tensor>& x) { return sum_squares(x[0]); }, {a});
  // Reductions of a strided view route the gradient back through the view.
  expect_gradcheck([](const std::vector<Tensor>& x) { return sum_squares(x[0].transpose(0, 2)); }, {a});
  expect_gradcheck([](const std::vector<Tensor>& x) { return mul(mean(x[0]), sum(x[0])); }, {a});
}

TEST(BasicGradcheck, MatmulAllForms) {
  const int64_t Bt = 3, M = 5, K = 7, N = 3;
  for (int ta = 0; ta < 2; ++ta)
    for (int tb = 0; tb < 2; ++tb)
      // mode 0: 2-D x 2-D; 1: both batched; 2: b broadcast; 3: a broadcast.
      for (int mode = 0; mode < 4; ++mode) {
        SCOPED_TRACE(str("ta=", ta, " tb=", tb, " mode=", mode));
        const bool a3 = mode == 1 || mode == 2, b3 = mode == 1 || mode == 3;
        Shape as = ta ? Shape{K, M} : Shape{M, K}, bs = tb ? Shape{N, K} : Shape{K, N};
        if (a3) as = Shape{Bt, as[0], as[1]};
        if (b3) bs = Shape{Bt, bs[0], bs[1]};
        Tensor a = leaf(as, 10 + static_cast<uint64_t>(mode)), b = leaf(bs, 20 + static_cast<uint64_t>(mode));
        const bool tra = ta, trb = tb;
        expect_gradcheck([=](const std::vector<Tensor>& x) { return matmul(x[0], x[1], tra, trb); }, {a, b});
      }
}

TEST(BasicGradcheck, MatmulStridedViewsAndOneSidedGrad) {
  Tensor w = leaf({4, 9}, 30), x = leaf({9, 5}, 31);
  // A narrow (row stride 9 != width 6) and a transpose view (copied before the kernel).
  expect_gradcheck([](const std::vector<Tensor>& v) { return matmul(v[0].narrow(1, 2, 6), v[1].narrow(0, 1, 6)); }, {w, x});
  expect_gradcheck([](const std::vector<Tensor>& v) { return matmul(v[1].transpose(0, 1), v[0].transpose(0, 1)); }, {w, x});
  // a (M, K) @ a^T: the same tensor in both slots.
  expect_gradcheck([](const std::vector<Tensor>& v) { return matmul(v[0], v[0], false, true); }, {w});
  // Only one side requires grad.
  Tensor fixed = Tensor::randn({4, 9}, 32, 0, 1.0, DType::F64);
  expect_gradcheck([](const std::vector<Tensor>& v) { return matmul(v[0], v[1]); }, {fixed, x});
}

TEST(BasicGradcheck, StridedUpstreamGradients) {
  // Outputs read through a transpose: each backward receives a non-contiguous gradient and must cope.
  Tensor a = leaf({4, 9}, 35), b = leaf({9, 5}, 36), c = leaf({4, 9}, 37);
  expect_gradcheck([](const std::vector<Tensor>& v) { return matmul(v[0], v[1]).transpose(0, 1); }, {a, b});
  expect_gradcheck([](const std::vector<Tensor>& v) { return mul(v[0], v[1]).transpose(0, 1); }, {a, c});
  expect_gradcheck([](const std::vector<Tensor>& v) { return scale(sub(v[0], v[1]), 0.5).transpose(0, 1); }, {a, c});
  Tensor table = leaf({6, 5}, 38);
  Tensor ids = ids_tensor({1, 5, 1, 0, 2, 4}, {2, 3});
  expect_gradcheck([ids](const std::vector<Tensor>& v) { return embedding(v[0], ids).permute({2, 1, 0}); }, {table});
  Tensor logits = leaf({2, 3, 7}, 39);
  Tensor targets = ids_tensor({3, -1, 0, 6, 6, 2}, {2, 3});
  expect_gradcheck([targets](const std::vector<Tensor>& v) { return cross_entropy_per_token(v[0], targets).transpose(0, 1); },
                   {logits});
}

TEST(BasicGradcheck, Linear) {
  Tensor x = leaf({2, 3, 7}, 40), w = leaf({5, 7}, 41);
  expect_gradcheck([](const std::vector<Tensor>& v) { return linear(v[0], v[1]); }, {x, w});
  Tensor x2 = leaf({3, 7}, 42);
  expect_gradcheck([](const std::vector<Tensor>& v) { return linear(v[0], v[1]); }, {x2, w});
  // A non-contiguous x (..., in) that reshape cannot view: linear must still be right.
  Tensor xt = leaf({7, 3, 2}, 43);
  expect_gradcheck([](const std::vector<Tensor>& v) { return linear(v[0].permute({2, 1, 0}), v[1]); }, {xt, w});
  // One input read by two projections and an elementwise op (the query/latent projections of the normalised
  // input): the second projection's dX is added by its GEMM into the sum so far (Node::partial_sums).
  Tensor w2 = leaf({5, 7}, 44);
  expect_gradcheck([](const std::vector<Tensor>& v) {
    Tensor h = scale(v[0], 1.5);
    Tensor y = add(linear(h, v[1]), linear(h, v[2]));
    return add(y, linear(mul(h, h), v[1]));
  }, {x, w, w2});
  // linear_add: the residual's gradient is the output's, passed on; the residual also read elsewhere (as the
  // residual stream is by the next norm), and a 2-D x.
  Tensor r = leaf({2, 3, 5}, 46);
  expect_gradcheck([](const std::vector<Tensor>& v) { return linear_add(v[0], v[1], v[2]); }, {x, w, r});
  expect_gradcheck([](const std::vector<Tensor>& v) {
    Tensor y = linear_add(v[0], v[1], v[2]);
    return add(mul(y, y), linear_add(v[0], v[1], mul(v[2], v[2])));
  }, {x, w, r});
  Tensor r2 = leaf({3, 5}, 47);
  expect_gradcheck([](const std::vector<Tensor>& v) { return linear_add(v[0], v[1], v[2]); }, {x2, w, r2});
  // A 3-D batched matmul whose 2-D operand is broadcast (no fused path) next to a linear of the same input.
  Tensor m = leaf({7, 5}, 45);
  expect_gradcheck([](const std::vector<Tensor>& v) { return add(matmul(v[0], v[2]), linear(v[0], v[1])); }, {x, w, m});
}

TEST(BasicGradcheck, EmbeddingWithDuplicateIds) {
  Tensor table = leaf({7, 5}, 50);
  Tensor ids = ids_tensor({3, 0, 3, 6, 3, 1, 0, 2, 6, 5, 3}, {11});
  expect_gradcheck([ids](const std::vector<Tensor>& v) { return embedding(v[0], ids); }, {table});
  Tensor ids2d = ids_tensor({1, 1, 4, 2, 0, 1}, {2, 3});
  // Nonlinear downstream so every row's gradient differs.
  expect_gradcheck([ids2d](const std::vector<Tensor>& v) { Tensor e = embedding(v[0], ids2d); return mul(e, e); }, {table});
}

TEST(BasicGradcheck, CrossEntropyMeanAndPerToken) {
  const int64_t B = 2, T = 3, V = 7;
  Tensor logits = leaf({B, T, V}, 60, 2.0);
  Tensor targets = ids_tensor({3, -1, 0, 6, 6, -1}, {B, T});
  expect_gradcheck([targets](const std::vector<Tensor>& v) { return cross_entropy(v[0], targets); }, {logits});
  expect_gradcheck([targets](const std::vector<Tensor>& v) { return cross_entropy_per_token(v[0], targets); }, {logits});
  // ignore_index that is a real class id.
  Tensor targets2 = ids_tensor({3, 2, 0, 6, 2, 1}, {B, T});
  expect_gradcheck([targets2](const std::vector<Tensor>& v) { return cross_entropy(v[0], targets2, 2); }, {logits});
  expect_gradcheck([targets2](const std::vector<Tensor>& v) { return cross_entropy_per_token(v[0], targets2, 2); }, {logits});
  // Scaled upstream gradient: 3 * loss.
  expect_gradcheck([targets](const std::vector<Tensor>& v) { return scale(cross_entropy(v[0], targets), 3.0); }, {logits});
  // Through an LM head: CE(linear(h, W)).
  Tensor h = leaf({B, T, 5}, 61), w = leaf({V, 5}, 62);
  expect_gradcheck([targets](const std::vector<Tensor>& v) { return cross_entropy(linear(v[0], v[1]), targets); }, {h, w});
}

TEST(BasicGradcheck, ConcatAndSplit) {
  Tensor a = leaf({3, 2, 5}, 70), b = leaf({3, 4, 5}, 71);
  expect_gradcheck([](const std::vector<Tensor>& v) { return concat({v[0], v[1]}, 1); }, {a, b});
  // The same leaf twice: along dim 0 its gradients are contiguous slabs, along dim 2 strided views.
  expect_gradcheck([](const std::vector<Tensor>& v) { return concat({v[0], v[0]}, 0); }, {a});
  expect_gradcheck([](const std::vector<Tensor>& v) { return concat({v[0], v[0]}, 2); }, {a});
  Tensor c = leaf({3, 2, 4}, 72);
  expect_gradcheck([](const std::vector<Tensor>& v) { return concat({v[0], v[1]}, -1); }, {a, c});
  // Concat output feeding a nonlinear op, and one input without grad.
  Tensor fixed = Tensor::randn({3, 4, 5}, 73, 0, 1.0, DType::F64);
  expect_gradcheck([](const std::vector<Tensor>& v) { Tensor y = concat({v[0], v[1]}, 1); return mul(y, y); }, {a, fixed});
  // split: recombine the parts in a different order with different weights.
  Tensor x = leaf({4, 9}, 74);
  expect_gradcheck([](const std::vector<Tensor>& v) {
    auto p = split(v[0], {2, 4, 3}, 1);
    return concat({scale(p[2], 2.0), mul(p[0], p[0]), p[1]}, 1);
  }, {x});
  expect_gradcheck([](const std::vector<Tensor>& v) {
    auto p = split(v[0], {1, 3}, 0);
    return add(p[0].expand({3, 9}), p[1]);
  }, {x});
  // A part nobody uses (the engine hands its node zeros) and a part viewed further (as the rope key's unsqueeze).
  expect_gradcheck([](const std::vector<Tensor>& v) {
    auto p = split(v[0], {5, 4}, 1);
    Tensor y = p[1].unsqueeze(1);
    return mul(y, y);
  }, {x});
  // expand of a middle dim (MLA's rope key shared by the heads), of several dims, with a new leading dim, and
  // of a strided slice, each under a nonlinear op so every element's gradient differs.
  Tensor kr = leaf({2, 3, 1, 4}, 75);
  expect_gradcheck([](const std::vector<Tensor>& v) { Tensor y = v[0].expand({2, 3, 5, 4}); return mul(y, y); }, {kr});
  Tensor m = leaf({2, 1, 3, 1}, 76);
  expect_gradcheck([](const std::vector<Tensor>& v) { Tensor y = v[0].expand({4, 2, 5, 3, 6}); return mul(y, y); }, {m});
  Tensor wide = leaf({2, 3, 1, 9}, 77);
  expect_gradcheck([](const std::vector<Tensor>& v) {
    Tensor y = concat({v[0].narrow(3, 0, 5), v[0].narrow(3, 5, 4).expand({2, 3, 1, 4})}, 3).expand({2, 3, 3, 9});
    return mul(y, y);
  }, {wide});
}

}  // namespace
}  // namespace latte
