// ZeRO-1: sharded AdamW over the DP group (gradients reduce-scattered, fp32 master shards, weights
// all-gathered) trains exactly like plain AdamW on one process running the whole batch. Parameter
// sizes (35, 21, 7 elements) do not divide by the group size, so buckets are padded and pieces split.
#include <gtest/gtest.h>

#include "autograd/basic_functions.h"
#include "autograd/node.h"
#include "dist_test_util.h"
#include "distributed/zero1.h"
#include "train/adamw.h"

using namespace latte;
using namespace latte::dist;
using latte::test::rel_error;
using latte::test::world;

namespace {

constexpr int64_t kBatch = 8, kIn = 5, kHidden = 7, kOut = 3;

struct Mlp {
  Tensor w1 = make({kHidden, kIn}, 1), w2 = make({kOut, kHidden}, 2), bias = make({kHidden}, 3);
  static Tensor make(const Shape& s, uint64_t seed) {
    Tensor p = Tensor::randn(s, seed, 0, 0.4, DType::F32);
    p.set_requires_grad(true);
    return p;
  }
  std::vector<Tensor> params() const { return {w1, w2, bias}; }
  Tensor loss(const Tensor& x, const Tensor& target) const {
    const int64_t b = x.size(0);
    Tensor h = add(linear(x, w1), bias.reshape({1, kHidden}).expand({b, kHidden}));
    Tensor y = linear(mul(h, h), w2);
    return scale(sum_squares(sub(y, target)), 1.0 / static_cast<double>(kBatch));  // mean over the global batch
  }
};

std::vector<OptimParam> optim_params(const std::vector<Tensor>& params) {
  std::vector<OptimParam> out;
  const char* names[] = {"w1", "w2", "bias"};
  for (size_t i = 0; i < params.size(); ++i) out.push_back({names[i], params[i], i != 2});
  return out;
}

}  // namespace

TEST(Zero1, ShardedAdamWMatchesSingleProcessAdamW) {
  auto group = world_group(world(), Device::cpu());
  const int dp = group->size();
  AdamWConfig config;
  config.weight_decay = 0.1;

  for (size_t bucket_bytes : {size_t{1}, size_t{25} << 20}) {  // one bucket per param / one for all
    Mlp sharded_model;
    GradSyncOptions options;
    options.shard_gradients = true;
    options.bucket_bytes = bucket_bytes;
    GradSync sync(sharded_model.params(), group, options, {"w1", "w2", "bias"});
    Zero1 zero(sync);
    std::vector<OptimParam> shards;
    int64_t owned = 0;
    for (const ShardPiece& piece : zero.pieces()) {
      shards.push_back({piece.name, piece.master, piece.param != 2});
      owned += piece.length;
    }
    // Together the ranks own every element exactly once.
    EXPECT_EQ(group->all_reduce_scalar(static_cast<double>(owned)), 35 + 21 + 7);
    AdamW optimizer(shards, config);

    Mlp plain;  // the single-process run, whole batch, plain AdamW
    AdamW plain_optimizer(optim_params(plain.params()), config);
    for (int step = 0; step < 3; ++step) {
      Tensor x = Tensor::randn({kBatch, kIn}, 40 + static_cast<uint64_t>(step));
      Tensor target = Tensor::randn({kBatch, kOut}, 50 + static_cast<uint64_t>(step));
      for (const Tensor& p : plain.params()) p.zero_grad();
      plain.loss(x, target).backward();
      const double plain_norm = global_grad_norm(plain.params(), {}, *std::make_shared<SingleProcessGroup>());
      plain_optimizer.step(1e-2);

      for (const Tensor& p : sharded_model.params()) p.zero_grad();
      const int64_t per_rank = kBatch / dp, start = group->rank() * per_rank;
      // Each rank's loss is its share of the global mean; GradSync averages, so scale by dp.
      scale(sharded_model.loss(x.narrow(0, start, per_rank).contiguous(),
                               target.narrow(0, start, per_rank).contiguous()), dp).backward();
      sync.finish();
      EXPECT_NEAR(zero.global_grad_norm({}, *std::make_shared<SingleProcessGroup>()), plain_norm, 1e-6 * plain_norm);
      optimizer.step(1e-2);
      zero.gather_parameters();

      const std::vector<Tensor> got = sharded_model.params(), want = plain.params();
      for (size_t i = 0; i < got.size(); ++i)
        EXPECT_LT(rel_error(got[i], want[i]), 1e-6) << "param " << i << " step " << step << " bucket " << bucket_bytes;
    }
  }
}

TEST(Zero1, NeedsShardedF32Gradients) {
  auto group = world_group(world(), Device::cpu());
  Mlp model;
  GradSync plain(model.params(), group);
  EXPECT_THROW(Zero1 zero(plain), Error);
}
