// The tensor-parallel conjugate functions on tp = world size ranks: a column-parallel then
// row-parallel MLP equals the unsharded MLP in its output and every gradient (input, both weight
// shards), and gather/scatter along the last dim match their single-rank equivalents.
#include <gtest/gtest.h>

#include "autograd/basic_functions.h"
#include "dist_test_util.h"
#include "distributed/tp_mappings.h"

using namespace latte;
using namespace latte::dist;
using latte::test::rel_error;
using latte::test::world;

namespace {

constexpr int64_t kBatch = 3, kSeq = 2, kDim = 8, kHidden = 16;

Tensor leaf(const Tensor& values) {
  Tensor t = values.clone();
  t.set_requires_grad(true);
  return t;
}

std::shared_ptr<ProcessGroup> tp_group() { return world_group(world(), Device::cpu()); }

// Rows [r*n/tp, (r+1)*n/tp) of dim `d` of the full tensor: rank r's shard.
Tensor shard_of(const Tensor& full, int d, const ProcessGroup& g) {
  const int64_t n = full.size(d) / g.size();
  return full.narrow(d, g.rank() * n, n).contiguous();
}

}  // namespace

TEST(TpMappings, ColumnThenRowParallelMlpEqualsTheFullMlp) {
  auto tp = tp_group();
  const Tensor x0 = Tensor::randn({kBatch, kSeq, kDim}, 11);
  const Tensor w_up0 = Tensor::randn({kHidden, kDim}, 12, 0, 0.3);    // column-parallel: split rows
  const Tensor w_down0 = Tensor::randn({kDim, kHidden}, 13, 0, 0.3);  // row-parallel: split columns
  const Tensor probe = Tensor::randn({kBatch, kSeq, kDim}, 14);       // makes the output gradient non-trivial

  // The unsharded MLP.
  Tensor x = leaf(x0), w_up = leaf(w_up0), w_down = leaf(w_down0);
  Tensor h = linear(x, w_up);
  Tensor y = linear(mul(h, h), w_down);
  sum(mul(y, probe)).backward();

  // The same MLP with tp shards.
  Tensor x_tp = leaf(x0), w_up_shard = leaf(shard_of(w_up0, 0, *tp)), w_down_shard = leaf(shard_of(w_down0, 1, *tp));
  Tensor h_shard = linear(copy_to_tp(x_tp, *tp), w_up_shard);           // (B, T, H/tp)
  Tensor y_tp = reduce_from_tp(linear(mul(h_shard, h_shard), w_down_shard), *tp);
  sum(mul(y_tp, probe)).backward();

  EXPECT_LT(rel_error(y_tp, y), 1e-6);
  EXPECT_LT(rel_error(x_tp.grad(), x.grad()), 1e-6) << "copy_to_tp must all-reduce the input gradient";
  EXPECT_LT(rel_error(w_up_shard.grad(), shard_of(w_up.grad(), 0, *tp)), 1e-6);
  EXPECT_LT(rel_error(w_down_shard.grad(), shard_of(w_down.grad(), 1, *tp)), 1e-6);
  // Without the all-reduce in copy_to_tp's backward the input gradient would be partial: make sure
  // the test can tell (the shards' partial gradients differ from the full one).
  EXPECT_GT(rel_error(linear(mul(h_shard, h_shard), w_down_shard), y), 1e-2);
}

TEST(TpMappings, GatherFromTpRebuildsTheColumnParallelOutput) {
  auto tp = tp_group();
  const Tensor x0 = Tensor::randn({kBatch, kSeq, kDim}, 21);
  const Tensor w0 = Tensor::randn({kHidden, kDim}, 22, 0, 0.3);
  const Tensor probe = Tensor::randn({kBatch, kSeq, kHidden}, 23);

  Tensor x = leaf(x0), w = leaf(w0);
  Tensor y = linear(x, w);
  sum(mul(y, probe)).backward();

  Tensor x_tp = leaf(x0), w_shard = leaf(shard_of(w0, 0, *tp));
  Tensor y_tp = gather_from_tp(linear(copy_to_tp(x_tp, *tp), w_shard), *tp);  // (B, T, H)
  EXPECT_EQ(y_tp.shape(), y.shape());
  sum(mul(y_tp, probe)).backward();

  EXPECT_LT(rel_error(y_tp, y), 1e-6);
  EXPECT_LT(rel_error(w_shard.grad(), shard_of(w.grad(), 0, *tp)), 1e-6);
  EXPECT_LT(rel_error(x_tp.grad(), x.grad()), 1e-6);
}

TEST(TpMappings, ScatterToTpTakesTheSliceAndGathersTheGradient) {
  auto tp = tp_group();
  const Tensor z0 = Tensor::randn({kBatch, kHidden}, 31);
  const Tensor probe = Tensor::randn({kBatch, kHidden}, 32);
  Tensor z = leaf(z0);
  Tensor mine = scatter_to_tp(z, *tp);
  EXPECT_EQ(mine.to_vector(), shard_of(z0, 1, *tp).to_vector());
  sum(mul(mine, shard_of(probe, 1, *tp))).backward();
  // d/dz of sum over ranks of <slice_r(z), slice_r(probe)> is the whole probe.
  EXPECT_LT(rel_error(z.grad(), probe), 1e-7);
}

TEST(TpMappings, ReduceFromTpSumsForwardAndPassesTheGradient) {
  auto tp = tp_group();
  Tensor x = leaf(Tensor::full({4}, tp->rank() + 1.0));
  Tensor y = reduce_from_tp(x, *tp);
  const double n = tp->size();
  EXPECT_EQ(y.to_vector(), std::vector<double>(4, n * (n + 1) / 2));
  sum(y).backward();
  EXPECT_EQ(x.grad().to_vector(), std::vector<double>(4, 1.0)) << "identity backward";
  EXPECT_EQ(x.to_vector(), std::vector<double>(4, tp->rank() + 1.0)) << "the input is not modified";
}

TEST(TpMappings, OneRankGroupIsIdentityAndShapesAreChecked) {
  SingleProcessGroup single;
  Tensor x = leaf(Tensor::randn({2, 3}, 41));
  EXPECT_TRUE(copy_to_tp(x, single).same(x));
  EXPECT_TRUE(reduce_from_tp(x, single).same(x));
  EXPECT_TRUE(gather_from_tp(x, single).same(x));
  EXPECT_TRUE(scatter_to_tp(x, single).same(x));
  auto tp = tp_group();
  Tensor odd = Tensor::randn({2, 4 * tp->size() + 1}, 42);
  EXPECT_THROW(scatter_to_tp(odd, *tp), Error);  // checked before any communication, on every rank
}
