// The NCCL path on GPUs (one GPU per rank; skipped on machines without enough GPUs, e.g. CI):
// collectives on CUDA tensors against CPU-computed expectations, ordering against the compute
// stream, CPU tensors through an NCCL group, GradSync and the TP mappings on CUDA tensors.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdlib>
#include <string>

#include "autograd/basic_functions.h"
#include "autograd/node.h"
#include "dist_test_util.h"
#include "distributed/data_parallel.h"
#include "distributed/tp_mappings.h"
#include "kernels/ops.h"

using namespace latte;
using namespace latte::dist;
using latte::test::rel_error;
using latte::test::world;

namespace {

// True on every rank when every rank has its own GPU (decided jointly so all ranks skip together).
bool every_rank_has_a_gpu() {
  static const bool answer = [] {
    auto cpu = world_group(world(), Device::cpu());
    const double mine = cuda_available() && cuda_device_count() > world().local_rank() ? 1.0 : 0.0;
    return cpu->all_reduce_scalar(mine, ReduceOp::Min) > 0.5;
  }();
  return answer;
}

#define REQUIRE_GPUS()                                                                     \
  do {                                                                                     \
    if (!every_rank_has_a_gpu()) GTEST_SKIP() << "needs one CUDA GPU per rank";            \
  } while (0)

Tensor rank_data(const Shape& shape, int rank, uint64_t salt) {
  return Tensor::randn(shape, 5000 + 131 * salt + static_cast<uint64_t>(rank), 0, 1.0, DType::F64).to(DType::F32);
}

Tensor expected_sum(const Shape& shape, uint64_t salt, int ranks, double divide_by = 1.0) {
  std::vector<double> acc(static_cast<size_t>(shape.numel()), 0.0);
  for (int r = 0; r < ranks; ++r) {
    std::vector<double> v = rank_data(shape, r, salt).to_vector();
    for (size_t i = 0; i < v.size(); ++i) acc[i] += v[i] / divide_by;
  }
  return Tensor::from_vector(acc, shape, DType::F64);
}

}  // namespace

TEST(CudaCollectives, AllReduceSumAndAvgInF32AndBf16) {
  REQUIRE_GPUS();
  const Device dev = world().select_device(DeviceType::CUDA);
  auto group = world_group(world(), dev);
  const int n = group->size();
#ifdef LATTE_WITH_NCCL
  // One rank gets NCCL only when asked (LATTE_NCCL_SINGLE_RANK=1: scripts/gpu_check.sh runs this suite so).
  const char* force = std::getenv("LATTE_NCCL_SINGLE_RANK");
  if (n > 1 || (force && std::string(force) == "1")) EXPECT_EQ(group->backend(), "nccl");
#endif
  for (DType dtype : {DType::F32, DType::BF16}) {
    Tensor s = rank_data({1000, 3}, group->rank(), 1).to(dtype).to(dev);
    Tensor a = rank_data({1000, 3}, group->rank(), 1).to(dtype).to(dev);
    group->all_reduce(s, ReduceOp::Sum);
    group->all_reduce(a, ReduceOp::Avg);
    const double tol = dtype == DType::F32 ? 1e-6 : 1e-2;
    if (dtype == DType::F32) {
      EXPECT_LT(rel_error(s.cpu(), expected_sum({1000, 3}, 1, n)), tol);
      EXPECT_LT(rel_error(a.cpu(), expected_sum({1000, 3}, 1, n, n)), tol);
    } else {
      EXPECT_LT(rel_error(s.cpu().to(DType::F64), expected_sum({1000, 3}, 1, n)), tol);  // bf16 inputs differ: loose
    }
  }
}

TEST(CudaCollectives, ReduceScatterAllGatherBroadcastStrided) {
  REQUIRE_GPUS();
  const Device dev = world().select_device(DeviceType::CUDA);
  auto group = world_group(world(), dev);
  const int n = group->size(), rank = group->rank();

  Tensor in = rank_data({n * 4, 5}, rank, 2).to(dev);
  Tensor out = Tensor::empty({4, 5}, DType::F32, dev);
  group->reduce_scatter(out, in, ReduceOp::Sum);
  EXPECT_LT(rel_error(out.cpu(), expected_sum({n * 4, 5}, 2, n).narrow(0, rank * 4, 4)), 1e-6);

  Tensor mine = rank_data({3, 2}, rank, 3).to(dev);
  Tensor gathered = Tensor::empty({n * 3, 2}, DType::F32, dev);
  group->all_gather(gathered, mine);
  for (int r = 0; r < n; ++r)
    EXPECT_EQ(gathered.cpu().narrow(0, r * 3, 3).to_vector(), rank_data({3, 2}, r, 3).to_vector());

  Tensor b = rank_data({7}, rank, 4).to(DType::BF16).to(dev);
  group->broadcast(b, n - 1);
  EXPECT_EQ(b.cpu().to_vector(), rank_data({7}, n - 1, 4).to(DType::BF16).to_vector());

  Tensor base = rank_data({6, 5}, rank, 5).to(dev);
  group->all_reduce(base.transpose(0, 1), ReduceOp::Sum);  // staged through a contiguous copy
  EXPECT_LT(rel_error(base.cpu(), expected_sum({6, 5}, 5, n)), 1e-6);
}

TEST(CudaCollectives, AsyncResultIsOrderedBeforeLaterComputeAndCpuTensorsUseMpi) {
  REQUIRE_GPUS();
  const Device dev = world().select_device(DeviceType::CUDA);
  auto group = world_group(world(), dev);
  const int n = group->size();
  Tensor t = rank_data({1 << 20}, group->rank(), 6).to(dev);
  Tensor unrelated = rank_data({1 << 20}, 0, 7).to(dev);
  auto work = group->all_reduce_async(t, ReduceOp::Sum);
  Tensor busy = Tensor::empty({1 << 20}, DType::F32, dev);
  ops::scale(busy, unrelated, 2.0);  // compute queued while the collective runs
  work->wait();
  Tensor doubled = Tensor::empty({1 << 20}, DType::F32, dev);
  ops::scale(doubled, t, 2.0);  // queued after wait(): sees the reduced values
  std::vector<double> want = expected_sum({1 << 20}, 6, n).to_vector();
  for (double& x : want) x *= 2;
  EXPECT_LT(rel_error(doubled.cpu(), Tensor::from_vector(want, {1 << 20}, DType::F64)), 1e-6);

  Tensor on_host = rank_data({9}, group->rank(), 8);
  group->all_reduce(on_host, ReduceOp::Sum);
  EXPECT_LT(rel_error(on_host, expected_sum({9}, 8, n)), 1e-6);
  EXPECT_DOUBLE_EQ(group->all_reduce_scalar(1.0), n);
  group->barrier();
}

TEST(CudaGradSync, MatchesTheFullBatchOnOneGpu) {
  REQUIRE_GPUS();
  const Device dev = world().select_device(DeviceType::CUDA);
  auto group = world_group(world(), dev);
  const int n = group->size();
  const int64_t batch = 8 * n, in = 32, hidden = 64;
  auto make = [&](const Shape& s, uint64_t seed) {
    Tensor p = Tensor::randn(s, seed, 0, 0.2, DType::F32, dev);
    p.set_requires_grad(true);
    return p;
  };
  Tensor w1 = make({hidden, in}, 1), w2 = make({1, hidden}, 2), r1 = make({hidden, in}, 1), r2 = make({1, hidden}, 2);
  Tensor x = Tensor::randn({batch, in}, 3, 0, 1.0, DType::F32, dev);
  auto loss = [](const Tensor& xs, const Tensor& a, const Tensor& b) {
    Tensor h = linear(xs, a);
    return mean(linear(mul(h, h), b));
  };
  loss(x, r1, r2).backward();  // the reference: whole batch, one GPU

  GradSyncOptions options;
  options.bucket_bytes = 4096;  // w2 and w1 in separate buckets
  GradSync sync({w1, w2}, group, options);
  for (int step = 0; step < 2; ++step) {
    w1.zero_grad();
    w2.zero_grad();
    const int64_t per_rank = batch / n;
    loss(x.narrow(0, group->rank() * per_rank, per_rank).contiguous(), w1, w2).backward();
    sync.finish();
    EXPECT_LT(rel_error(w1.grad().cpu(), r1.grad().cpu()), 1e-5) << "step " << step;
    EXPECT_LT(rel_error(w2.grad().cpu(), r2.grad().cpu()), 1e-5) << "step " << step;
  }
  EXPECT_EQ(sync.num_buckets(), 2u);
  SingleProcessGroup no_tp;
  auto squares = [](const Tensor& g) {
    double acc = 0;
    for (double v : g.cpu().to_vector()) acc += v * v;
    return acc;
  };
  const double expected_norm = std::sqrt(squares(w1.grad()) + squares(w2.grad()));
  EXPECT_NEAR(global_grad_norm({w1, w2}, {}, no_tp), expected_norm, 1e-5 * expected_norm);
}

TEST(CudaGradSync, Bf16GradientsReducedInFp32) {
  REQUIRE_GPUS();
  const Device dev = world().select_device(DeviceType::CUDA);
  auto group = world_group(world(), dev);
  const int n = group->size();
  const int64_t batch = 8 * n, in = 64, out = 32;
  Tensor w = Tensor::randn({out, in}, 21, 0, 0.2, DType::BF16, dev);
  w.set_requires_grad(true);
  Tensor w_ref = Tensor::randn({out, in}, 21, 0, 0.2, DType::F32, dev);
  w_ref.set_requires_grad(true);
  Tensor x = Tensor::randn({batch, in}, 22, 0, 1.0, DType::F32, dev);
  sum_squares(linear(x, w_ref)).backward();

  GradSyncOptions options;
  options.reduce_in_fp32 = true;
  GradSync sync({w}, group, options);
  EXPECT_EQ(sync.bucket(0).flat.dtype(), DType::F32);
  const int64_t per_rank = batch / n;
  Tensor x_mine = x.narrow(0, group->rank() * per_rank, per_rank).contiguous().to(DType::BF16);
  scale(sum_squares(linear(x_mine, w)), n).backward();  // GradSync averages: scale to the full-batch sum
  sync.finish();
  EXPECT_EQ(w.grad().dtype(), DType::BF16);
  EXPECT_LT(rel_error(w.grad().cpu().to(DType::F32), w_ref.grad().cpu()), 2e-2);
}

TEST(CudaTpMappings, ColumnThenRowParallelMlpEqualsTheFullMlp) {
  REQUIRE_GPUS();
  const Device dev = world().select_device(DeviceType::CUDA);
  auto tp = world_group(world(), dev);
  const int64_t d = 16, h = 8 * tp->size();
  auto leaf = [&](const Tensor& v) {
    Tensor t = v.clone();
    t.set_requires_grad(true);
    return t;
  };
  const Tensor x0 = Tensor::randn({4, d}, 11, 0, 1.0, DType::F32, dev);
  const Tensor up0 = Tensor::randn({h, d}, 12, 0, 0.3, DType::F32, dev);
  const Tensor down0 = Tensor::randn({d, h}, 13, 0, 0.3, DType::F32, dev);
  Tensor x = leaf(x0), up = leaf(up0), down = leaf(down0);
  Tensor a = linear(x, up);
  Tensor y = linear(mul(a, a), down);
  sum_squares(y).backward();

  const int64_t hs = h / tp->size();
  Tensor x_tp = leaf(x0), up_s = leaf(up0.narrow(0, tp->rank() * hs, hs).contiguous()),
         down_s = leaf(down0.narrow(1, tp->rank() * hs, hs).contiguous());
  Tensor a_s = linear(copy_to_tp(x_tp, *tp), up_s);
  Tensor y_tp = reduce_from_tp(linear(mul(a_s, a_s), down_s), *tp);
  sum_squares(y_tp).backward();
  EXPECT_LT(rel_error(y_tp.cpu(), y.cpu()), 1e-5);
  EXPECT_LT(rel_error(x_tp.grad().cpu(), x.grad().cpu()), 1e-5);
  EXPECT_LT(rel_error(up_s.grad().cpu(), up.grad().narrow(0, tp->rank() * hs, hs).cpu()), 1e-5);
  EXPECT_LT(rel_error(down_s.grad().cpu(), down.grad().narrow(1, tp->rank() * hs, hs).cpu()), 1e-5);
}
