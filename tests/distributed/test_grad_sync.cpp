// GradSync: data-parallel gradients on dp ranks, each running its shard of a global batch (with and
// without gradient accumulation), equal the gradients of one process running the whole batch. The
// reference is computed on every rank. The model ties its embedding to the LM head, so one
// parameter receives two gradient contributions per backward.
#include <gtest/gtest.h>

#include <algorithm>
#include <functional>

#include "autograd/basic_functions.h"
#include "autograd/node.h"
#include "dist_test_util.h"
#include "distributed/data_parallel.h"
#include "distributed/topology.h"
#include "kernels/ops.h"

using namespace latte;
using namespace latte::dist;
using latte::test::rel_error;
using latte::test::world;

namespace {

constexpr int64_t kVocab = 16, kDim = 8, kHidden = 12, kBatch = 8, kSeq = 6;

// Identity whose backward calls `on_backward` (to observe what GradSync did while the backward ran).
struct ProbeBackward : autograd::Node {
  std::function<void()> on_backward;
  std::vector<Tensor> apply(const std::vector<Tensor>& g) override {
    if (on_backward) on_backward();
    return {g[0]};
  }
  std::string name() const override { return "ProbeBackward"; }
};

Tensor probe(const Tensor& x, std::function<void()> on_backward) {
  if (!on_backward || !autograd::needs_grad({&x})) return x;
  Tensor out = x.detach();
  auto node = std::make_shared<ProbeBackward>();
  node->on_backward = std::move(on_backward);
  autograd::record(node, {x}, {out});
  return out;
}

Tensor param(const Shape& shape, uint64_t seed, double stddev) {
  Tensor p = Tensor::randn(shape, seed, 0, stddev, DType::F32);
  p.set_requires_grad(true);
  return p;
}

// embedding -> linear -> square -> linear -> residual -> gain -> tied LM head -> cross-entropy.
struct TinyLM {
  Tensor table = param({kVocab, kDim}, 1, 0.5);   // used twice: lookup and LM head
  Tensor w_up = param({kHidden, kDim}, 2, 0.3);
  Tensor w_down = param({kDim, kHidden}, 3, 0.3);
  Tensor gain = param({kDim}, 4, 1.0);
  Tensor unused;                                   // set by the unused-parameter test
  bool use_up_twice = false;                       // changes the use count of w_up
  bool table_last = false;                         // register the table last: it gets bucket 0
  std::function<void()> after_layers_backward;     // runs in the backward between the layers and the lookup

  std::vector<Tensor> params() const {
    std::vector<Tensor> p = {table, w_up, w_down, gain};
    if (unused.defined()) p.push_back(unused);
    if (table_last) std::rotate(p.begin(), p.begin() + 1, p.end());
    return p;
  }
  std::vector<std::string> names() const {
    std::vector<std::string> n = {"table", "w_up", "w_down", "gain"};
    if (unused.defined()) n.push_back("unused");
    if (table_last) std::rotate(n.begin(), n.begin() + 1, n.end());
    return n;
  }

  Tensor loss(const Tensor& ids, const Tensor& targets) const {
    const int64_t b = ids.size(0), t = ids.size(1);
    Tensor e = probe(embedding(table, ids), after_layers_backward);  // (b, t, D)
    Tensor h = linear(e, w_up);                                   // (b, t, H)
    if (use_up_twice) h = add(h, linear(e, w_up));
    Tensor o = add(linear(mul(h, h), w_down), e);                 // (b, t, D)
    o = mul(o, gain.reshape({1, 1, kDim}).expand({b, t, kDim}));
    Tensor logits = linear(o, table);                             // (b, t, V)
    return cross_entropy(logits, targets);
  }

  void zero_grad() const {
    for (const Tensor& p : params()) p.zero_grad();
  }
  void sgd(double lr) const {
    autograd::NoGradGuard no_grad;
    for (const Tensor& p : params())
      if (p.grad().defined()) ops::axpy(p, p.grad(), -lr);
  }
};

// Token ids / targets of the global batch of step `step` (the same on every rank).
Tensor tokens(uint64_t seed) {
  std::vector<double> v = Tensor::rand({kBatch, kSeq}, seed, 0, 0.0, 1.0, DType::F64).to_vector();
  for (double& x : v) x = std::floor(x * kVocab);
  return Tensor::from_vector(v, {kBatch, kSeq}, DType::I32);
}

Tensor rows(const Tensor& t, int64_t start, int64_t count) { return t.narrow(0, start, count).contiguous(); }

struct DpCase {
  int micro_batches;
  bool bucket_views;   // GradSync::zero_grad() instead of model.zero_grad()
  bool overlap;
  size_t bucket_bytes;
  bool on_tp_grid;     // DP group of a dp x 2 grid instead of the world
  bool table_last = false;  // the tied table (2 contributions) in the first bucket
};

std::string case_name(const ::testing::TestParamInfo<DpCase>& info) {
  const DpCase& c = info.param;
  return str("micro", c.micro_batches, c.bucket_views ? "_views" : "_copies", c.overlap ? "_overlap" : "_atfinish",
             "_bucket", c.bucket_bytes, c.on_tp_grid ? "_tpgrid" : "_world", c.table_last ? "_tablelast" : "");
}

class GradSyncMatchesSingleProcess : public ::testing::TestWithParam<DpCase> {};

}  // namespace

TEST_P(GradSyncMatchesSingleProcess, OverSeveralSteps) {
  const DpCase c = GetParam();
  std::unique_ptr<Topology> topo;
  std::shared_ptr<ProcessGroup> dp_group;
  if (c.on_tp_grid) {
    if (world().size() < 4) GTEST_SKIP() << "a dp x 2 grid with dp > 1 needs 4 ranks";
    topo = std::make_unique<Topology>(world(), 0, 2, Device::cpu());
    dp_group = topo->dp_group();
  } else {
    dp_group = world_group(world(), Device::cpu());
  }
  const int dp = dp_group->size(), dp_rank = dp_group->rank();
  ASSERT_EQ(kBatch % (dp * c.micro_batches), 0);
  const int64_t per_micro = kBatch / dp / c.micro_batches;

  TinyLM model, reference;  // same initial weights
  model.table_last = reference.table_last = c.table_last;
  GradSyncOptions options;
  options.overlap = c.overlap;
  options.bucket_bytes = c.bucket_bytes;
  GradSync sync(model.params(), dp_group, options, model.names());
  if (c.bucket_bytes == 600 && !c.table_last) EXPECT_EQ(sync.num_buckets(), 3u);  // {gain, w_down} {w_up} {table}
  if (c.bucket_bytes > 4096) EXPECT_EQ(sync.num_buckets(), 1u);

  for (int step = 0; step < 3; ++step) {
    Tensor ids = tokens(100 + static_cast<uint64_t>(step)), targets = tokens(200 + static_cast<uint64_t>(step));

    reference.zero_grad();
    reference.loss(ids, targets).backward();

    if (c.bucket_views) sync.zero_grad(); else model.zero_grad();
    for (int m = 0; m < c.micro_batches; ++m) {
      sync.set_sync_enabled(m == c.micro_batches - 1);
      const int64_t start = (static_cast<int64_t>(dp_rank) * c.micro_batches + m) * per_micro;
      Tensor loss = model.loss(rows(ids, start, per_micro), rows(targets, start, per_micro));
      scale(loss, 1.0 / c.micro_batches).backward();
    }
    sync.finish();

    const std::vector<Tensor> got = model.params(), want = reference.params();
    const std::vector<std::string> names = model.names();
    for (size_t i = 0; i < got.size(); ++i) {
      ASSERT_TRUE(got[i].grad().defined()) << names[i];
      EXPECT_LT(rel_error(got[i].grad(), want[i].grad()), 1e-6) << names[i] << " at step " << step;
    }
    EXPECT_TRUE(sync.contributions_learned());
    const size_t table_index = c.table_last ? 3 : 0;
    EXPECT_EQ(sync.expected_contributions(table_index), 2) << "the tied table is used twice";
    EXPECT_EQ(sync.expected_contributions(table_index == 0 ? 1 : 0), 1);
    const int overlapped = step > 0 && c.overlap ? static_cast<int>(sync.num_buckets()) : 0;
    EXPECT_EQ(sync.buckets_launched_in_backward(), overlapped) << "step " << step;

    model.sgd(0.1);
    reference.sgd(0.1);
  }
  EXPECT_LT(rel_error(model.table, reference.table), 1e-6);
}

INSTANTIATE_TEST_SUITE_P(Cases, GradSyncMatchesSingleProcess,
                         ::testing::Values(DpCase{1, false, true, 600, false}, DpCase{2, false, true, 600, false},
                                           DpCase{2, true, true, 600, false}, DpCase{1, true, true, 25u << 20, false},
                                           DpCase{2, false, false, 600, false}, DpCase{1, false, true, 1, false},
                                           DpCase{2, true, true, 600, true}, DpCase{1, false, true, 1, false, true},
                                           DpCase{2, true, true, 1, false, true}),
                         case_name);

// The point of the hooks: buckets of the last layers are all-reduced while the backward still has
// to compute the earlier layers. Needs the autograd engine to run a leaf's AccumulateGrad as soon as
// its gradient is ready (not after every other ready node).
TEST(GradSync, OverlapStartsBucketsBeforeTheBackwardEnds) {
  auto group = world_group(world(), Device::cpu());
  TinyLM model;
  GradSyncOptions options;
  options.bucket_bytes = 600;  // {gain, w_down} {w_up} {table}
  GradSync sync(model.params(), group, options, model.names());
  ASSERT_EQ(sync.num_buckets(), 3u);
  size_t launched_before_lookup_backward = 0;
  model.after_layers_backward = [&] { launched_before_lookup_backward = sync.buckets_launched(); };
  Tensor ids = tokens(700), targets = tokens(701);
  const int64_t per_rank = kBatch / group->size(), start = group->rank() * per_rank;
  for (int step = 0; step < 2; ++step) {
    model.zero_grad();
    model.loss(rows(ids, start, per_rank), rows(targets, start, per_rank)).backward();
    if (step == 1)
      EXPECT_EQ(launched_before_lookup_backward, 2u)
          << "the buckets of gain/w_down and w_up should be in flight before the embedding's backward runs; if 0, "
             "the autograd engine runs AccumulateGrad nodes last (give them the highest priority, as PyTorch does)";
    sync.finish();
  }
}

TEST(GradSync, DisabledSyncKeepsLocalGradients) {
  auto group = world_group(world(), Device::cpu());
  TinyLM model, local_reference;
  GradSync sync(model.params(), group, {}, model.names());
  Tensor ids = tokens(300), targets = tokens(301);
  const int64_t per_rank = kBatch / group->size(), start = group->rank() * per_rank;

  sync.set_sync_enabled(false);
  model.loss(rows(ids, start, per_rank), rows(targets, start, per_rank)).backward();
  local_reference.loss(rows(ids, start, per_rank), rows(targets, start, per_rank)).backward();
  EXPECT_LT(rel_error(model.w_up.grad(), local_reference.w_up.grad()), 1e-7) << "no communication while disabled";
  // The shards differ, so the local gradients differ across ranks.
  Tensor max_grad = model.w_up.grad().clone(), min_grad = model.w_up.grad().clone();
  group->all_reduce(max_grad, ReduceOp::Max);
  group->all_reduce(min_grad, ReduceOp::Min);
  EXPECT_GT(rel_error(max_grad, min_grad), 1e-3);
  EXPECT_THROW(sync.finish(), Error);
}

TEST(GradSync, MoreContributionsThanLearnedIsAnError) {
  auto group = world_group(world(), Device::cpu());
  TinyLM model;
  GradSyncOptions options;
  options.bucket_bytes = 600;
  GradSync sync(model.params(), group, options, model.names());
  Tensor ids = tokens(400), targets = tokens(401);
  const int64_t per_rank = kBatch / group->size(), start = group->rank() * per_rank;
  model.loss(rows(ids, start, per_rank), rows(targets, start, per_rank)).backward();
  sync.finish();  // learns w_up: 1 contribution

  model.zero_grad();
  model.use_up_twice = true;  // every rank changes the same way, so every rank throws at the same point
  std::string message;
  try {
    model.loss(rows(ids, start, per_rank), rows(targets, start, per_rank)).backward();
  } catch (const Error& e) {
    message = e.what();
  }
  EXPECT_NE(message.find("parameter 'w_up' received 2 gradient contributions"), std::string::npos) << message;
}

TEST(GradSync, UnusedParameterGetsTheAverageOfNothing) {
  auto group = world_group(world(), Device::cpu());
  TinyLM model, reference;
  model.unused = param({3, 3}, 9, 1.0);
  GradSyncOptions options;
  options.bucket_bytes = 600;
  GradSync sync(model.params(), group, options, model.names());
  const int64_t per_rank = kBatch / group->size(), start = group->rank() * per_rank;
  for (int step = 0; step < 2; ++step) {
    Tensor ids = tokens(500 + static_cast<uint64_t>(step)), targets = tokens(600 + static_cast<uint64_t>(step));
    model.zero_grad();
    reference.zero_grad();
    model.loss(rows(ids, start, per_rank), rows(targets, start, per_rank)).backward();
    reference.loss(ids, targets).backward();
    sync.finish();
    ASSERT_TRUE(model.unused.grad().defined());
    EXPECT_EQ(model.unused.grad().to_vector(), std::vector<double>(9, 0.0));
    EXPECT_LT(rel_error(model.w_down.grad(), reference.w_down.grad()), 1e-6);
    EXPECT_EQ(sync.expected_contributions(4), 0);
  }
}

TEST(GradSync, ChecksItsParameters) {
  auto group = world_group(world(), Device::cpu());
  Tensor frozen = Tensor::zeros({2});
  EXPECT_THROW(GradSync({frozen}, group), Error);
  Tensor p = param({2}, 1, 1.0);
  EXPECT_THROW(GradSync({p, p}, group), Error);
}

TEST(AllReduceGradients, SumsOverTheGroup) {
  auto group = world_group(world(), Device::cpu());
  Tensor a = param({3, 4}, 1, 1.0), b = param({5}, 2, 1.0), none = param({2}, 3, 1.0);
  a.set_grad(Tensor::full({3, 4}, group->rank() + 1.0));
  b.set_grad(Tensor::full({5}, 10.0 * group->rank(), DType::F32));
  all_reduce_gradients({a, b, none}, *group, ReduceOp::Sum);
  const double n = group->size();
  EXPECT_EQ(a.grad().to_vector(), std::vector<double>(12, n * (n + 1) / 2));
  EXPECT_EQ(b.grad().to_vector(), std::vector<double>(5, 10.0 * n * (n - 1) / 2));
  EXPECT_EQ(none.grad().to_vector(), std::vector<double>(2, 0.0));
}

TEST(GlobalGradNorm, CountsShardsOnceAndReplicasOnce) {
  Topology topo(world(), 0, 2, Device::cpu());
  // Sharded: different on every rank. Replicated: the same on the two ranks of a TP group.
  auto sharded_grad = [](int rank) { return Tensor::randn({4, 3}, 700 + static_cast<uint64_t>(rank)); };
  auto replicated_grad = [](int dp_rank) { return Tensor::randn({5}, 800 + static_cast<uint64_t>(dp_rank)); };
  Tensor shard = param({4, 3}, 1, 1.0), replica = param({5}, 2, 1.0), no_grad = param({2}, 3, 1.0);
  shard.set_grad(sharded_grad(world().rank()));
  replica.set_grad(replicated_grad(topo.dp_rank()));
  const double norm = global_grad_norm({shard, no_grad}, {replica}, *topo.tp_group());

  double expected = 0;
  auto squares = [](const Tensor& t) {
    double s = 0;
    for (double v : t.to_vector()) s += v * v;
    return s;
  };
  for (int r : topo.tp_group_ranks()) expected += squares(sharded_grad(r));
  expected += squares(replicated_grad(topo.dp_rank()));
  EXPECT_NEAR(norm, std::sqrt(expected), 1e-9 * std::sqrt(expected));
}
