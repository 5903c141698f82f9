// Every collective of the MPI process group against values each rank computes on its own: rank r's
// data is a Philox draw seeded by r, so any rank can regenerate every other rank's input.
#include <gtest/gtest.h>

#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1  // the C API only: OpenMPI's C++ bindings are not linked
#endif
#include <mpi.h>

#include <algorithm>

#include "autograd/node.h"
#include "dist_test_util.h"
#include "distributed/process_group.h"

using namespace latte;
using namespace latte::dist;
using latte::test::rel_error;
using latte::test::world;

namespace {

// Rank r's input for test `salt`: normal floats, or integers in [-1000, 1000) for integer dtypes.
Tensor rank_data(const Shape& shape, int rank, DType dtype, uint64_t salt) {
  const uint64_t seed = 1000 + 131 * salt + static_cast<uint64_t>(rank);
  if (dtype == DType::I32 || dtype == DType::I64 || dtype == DType::U8) {
    std::vector<double> v = Tensor::rand(shape, seed, 0, 0.0, 1.0, DType::F64).to_vector();
    for (double& x : v) x = dtype == DType::U8 ? std::floor(x * 256) : std::floor(x * 2000) - 1000;
    return Tensor::from_vector(v, shape, dtype);
  }
  return Tensor::randn(shape, seed, 0, 1.0, DType::F64).to(dtype);
}

// The elementwise reduction over ranks of the given subset, in f64, as a tensor of `dtype`
// (values of 16-bit floats are summed as the backend does: in f32-or-better, rounded once).
Tensor expected_reduce(const Shape& shape, DType dtype, uint64_t salt, const std::vector<int>& ranks, ReduceOp op) {
  std::vector<double> acc;
  for (int r : ranks) {
    std::vector<double> v = rank_data(shape, r, dtype, salt).to_vector();
    if (acc.empty()) {
      acc = v;
      continue;
    }
    for (size_t i = 0; i < v.size(); ++i) {
      if (op == ReduceOp::Max) acc[i] = std::max(acc[i], v[i]);
      else if (op == ReduceOp::Min) acc[i] = std::min(acc[i], v[i]);
      else acc[i] += v[i];
    }
  }
  if (op == ReduceOp::Avg)
    for (double& x : acc) x /= static_cast<double>(ranks.size());
  return Tensor::from_vector(acc, shape, dtype == DType::BF16 || dtype == DType::F16 ? DType::F64 : dtype);
}

std::vector<int> all_ranks() {
  std::vector<int> r(static_cast<size_t>(world().size()));
  for (int i = 0; i < world().size(); ++i) r[static_cast<size_t>(i)] = i;
  return r;
}

double tolerance(DType dtype) {
  switch (dtype) {
    case DType::F64: return 1e-13;
    case DType::F32: return 1e-6;
    case DType::BF16: return 1e-2;
    default: return 0.0;  // integers: exact
  }
}

std::shared_ptr<ProcessGroup> cpu_world() { return world_group(world(), Device::cpu()); }

}  // namespace

TEST(Collectives, GroupMatchesWorld) {
  auto group = cpu_world();
  int mpi_size = 0, mpi_rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &mpi_size);
  MPI_Comm_rank(MPI_COMM_WORLD, &mpi_rank);
  EXPECT_EQ(group->size(), mpi_size);
  EXPECT_EQ(group->rank(), mpi_rank);
  EXPECT_GE(group->size(), 2) << "the distributed suite is meant to run under mpirun -np 2 or more";
  EXPECT_EQ(group->backend(), group->size() > 1 ? "mpi" : "single");
}

class AllReduceDtypes : public ::testing::TestWithParam<DType> {};

TEST_P(AllReduceDtypes, SumMaxMinAvgMatchTheRanksInputs) {
  const DType dtype = GetParam();
  auto group = cpu_world();
  const Shape shape{7, 13};
  std::vector<ReduceOp> ops = {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min};
  if (is_floating(dtype)) ops.push_back(ReduceOp::Avg);
  for (ReduceOp op : ops) {
    const uint64_t salt = 10 + static_cast<uint64_t>(op);
    Tensor t = rank_data(shape, group->rank(), dtype, salt);
    group->all_reduce(t, op);
    Tensor expected = expected_reduce(shape, dtype, salt, all_ranks(), op);
    if (tolerance(dtype) == 0.0)
      EXPECT_EQ(t.to_vector(), expected.to_vector()) << reduce_op_name(op) << " " << dtype_name(dtype);
    else
      EXPECT_LT(rel_error(t, expected), tolerance(dtype)) << reduce_op_name(op) << " " << dtype_name(dtype);
    EXPECT_EQ(t.dtype(), dtype);
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, AllReduceDtypes,
                         ::testing::Values(DType::F32, DType::F64, DType::BF16, DType::I32, DType::I64),
                         [](const auto& info) { return std::string(dtype_name(info.param)); });

TEST(Collectives, AvgIsSumDividedBySize) {
  auto group = cpu_world();
  Tensor sum = rank_data({64}, group->rank(), DType::F32, 3);
  Tensor avg = sum.clone();
  group->all_reduce(sum, ReduceOp::Sum);
  group->all_reduce(avg, ReduceOp::Avg);
  std::vector<double> s = sum.to_vector(), a = avg.to_vector();
  double worst = 0;
  for (size_t i = 0; i < s.size(); ++i) worst = std::max(worst, std::fabs(a[i] * group->size() - s[i]));
  EXPECT_LT(worst, 1e-5);
  EXPECT_GT(rel_error(sum, avg), 0.1) << "avg must differ from sum on more than one rank";
}

TEST(Collectives, AvgOfIntegersIsRejected) {
  auto group = cpu_world();
  Tensor t = Tensor::zeros({4}, DType::I32);
  EXPECT_THROW(group->all_reduce(t, ReduceOp::Avg), Error);
  Tensor u = Tensor::zeros({4}, DType::U8);
  EXPECT_THROW(group->all_reduce(u, ReduceOp::Sum), Error);
}

TEST(Collectives, AllReduceOfAStridedViewWritesThroughTheView) {
  auto group = cpu_world();
  Tensor base = rank_data({6, 5}, group->rank(), DType::F32, 4);
  Tensor view = base.transpose(0, 1);  // (5, 6), not contiguous
  ASSERT_FALSE(view.is_contiguous());
  group->all_reduce(view, ReduceOp::Sum);
  EXPECT_LT(rel_error(base, expected_reduce({6, 5}, DType::F32, 4, all_ranks(), ReduceOp::Sum)), 1e-6);
}

TEST(Collectives, ReduceScatterSumAndAvg) {
  auto group = cpu_world();
  const int n = group->size();
  for (DType dtype : {DType::F32, DType::F64, DType::BF16, DType::I64}) {
    for (ReduceOp op : {ReduceOp::Sum, ReduceOp::Avg}) {
      if (op == ReduceOp::Avg && !is_floating(dtype)) continue;
      const uint64_t salt = 20 + static_cast<uint64_t>(op);
      Tensor in = rank_data({n * 6, 3}, group->rank(), dtype, salt);  // rank-major blocks of 6 x 3
      Tensor out = Tensor::empty({6, 3}, dtype);
      group->reduce_scatter(out, in, op);
      Tensor full = expected_reduce({n * 6, 3}, dtype, salt, all_ranks(), op);
      Tensor expected = full.narrow(0, group->rank() * 6, 6);
      if (tolerance(dtype) == 0.0)
        EXPECT_EQ(out.to_vector(), expected.to_vector()) << dtype_name(dtype);
      else
        EXPECT_LT(rel_error(out, expected), tolerance(dtype)) << dtype_name(dtype) << " " << reduce_op_name(op);
    }
  }
}

TEST(Collectives, ReduceScatterChecksSizes) {
  auto group = cpu_world();
  Tensor in = Tensor::zeros({group->size() * 4 + 1});
  Tensor out = Tensor::zeros({4});
  EXPECT_THROW(group->reduce_scatter(out, in), Error);
}

TEST(Collectives, AllGatherConcatenatesRankMajor) {
  auto group = cpu_world();
  const int n = group->size();
  for (DType dtype : {DType::F32, DType::F64, DType::BF16, DType::I32, DType::I64, DType::U8}) {
    Tensor in = rank_data({2, 5}, group->rank(), dtype, 30);
    Tensor out = Tensor::empty({n * 2, 5}, dtype);
    group->all_gather(out, in);
    std::vector<double> expected;
    for (int r = 0; r < n; ++r) {
      std::vector<double> v = rank_data({2, 5}, r, dtype, 30).to_vector();
      expected.insert(expected.end(), v.begin(), v.end());
    }
    EXPECT_EQ(out.to_vector(), expected) << dtype_name(dtype);  // raw bits: exact for every dtype
  }
}

TEST(Collectives, AllGatherInPlaceFromOwnSlice) {
  auto group = cpu_world();
  const int n = group->size();
  Tensor out = Tensor::full({n * 4}, -1.0);
  Tensor mine = out.narrow(0, group->rank() * 4, 4);
  mine.copy_(rank_data({4}, group->rank(), DType::F32, 31));
  group->all_gather(out, mine);
  for (int r = 0; r < n; ++r)
    EXPECT_EQ(out.narrow(0, r * 4, 4).to_vector(), rank_data({4}, r, DType::F32, 31).to_vector()) << "block " << r;
}

TEST(Collectives, BroadcastFromLastRank) {
  auto group = cpu_world();
  const int root = group->size() - 1;
  for (DType dtype : {DType::F32, DType::BF16, DType::I64}) {
    Tensor t = rank_data({3, 4}, group->rank(), dtype, 40);
    group->broadcast(t, root);
    EXPECT_EQ(t.to_vector(), rank_data({3, 4}, root, dtype, 40).to_vector()) << dtype_name(dtype);
  }
  Tensor t = Tensor::zeros({2});
  EXPECT_THROW(group->broadcast(t, group->size()), Error);
}

TEST(Collectives, AsyncWorksCompleteInAnyWaitOrder) {
  auto group = cpu_world();
  Tensor a = rank_data({1000}, group->rank(), DType::F32, 50);
  Tensor b = rank_data({10}, group->rank(), DType::F64, 51);
  Tensor g_out = Tensor::empty({group->size() * 10}, DType::F64);
  auto wa = group->all_reduce_async(a, ReduceOp::Sum);
  auto wb = group->all_gather_async(g_out, b);
  while (!wa->test()) {
  }
  wb->wait();
  wa->wait();  // idempotent
  EXPECT_LT(rel_error(a, expected_reduce({1000}, DType::F32, 50, all_ranks(), ReduceOp::Sum)), 1e-6);
  EXPECT_EQ(g_out.narrow(0, 0, 10).to_vector(), rank_data({10}, 0, DType::F64, 51).to_vector());
}

TEST(Collectives, ScalarAndBarrier) {
  auto group = cpu_world();
  const double n = group->size();
  EXPECT_DOUBLE_EQ(group->all_reduce_scalar(group->rank() + 1.0), n * (n + 1) / 2);
  EXPECT_DOUBLE_EQ(group->all_reduce_scalar(group->rank(), ReduceOp::Max), n - 1);
  EXPECT_DOUBLE_EQ(group->all_reduce_scalar(2.0, ReduceOp::Avg), 2.0);
  group->barrier();
}

TEST(Collectives, SubgroupsReduceOnlyTheirRanks) {
  // Even and odd ranks form two groups.
  auto group = new_group(world(), world().rank() % 2, world().rank(), Device::cpu(), "parity");
  std::vector<int> members;
  for (int r = world().rank() % 2; r < world().size(); r += 2) members.push_back(r);
  EXPECT_EQ(group->size(), static_cast<int>(members.size()));
  EXPECT_EQ(group->rank(), world().rank() / 2);
  Tensor t = rank_data({17}, world().rank(), DType::F64, 60);
  group->all_reduce(t, ReduceOp::Sum);
  EXPECT_LT(rel_error(t, expected_reduce({17}, DType::F64, 60, members, ReduceOp::Sum)), 1e-13);
}

TEST(Collectives, SingleProcessGroupIsIdentity) {
  SingleProcessGroup single;
  Tensor t = rank_data({5}, 0, DType::F32, 70);
  Tensor before = t.clone();
  single.all_reduce(t, ReduceOp::Avg);
  EXPECT_EQ(t.to_vector(), before.to_vector());
  Tensor out = Tensor::empty({5});
  single.all_gather(out, t);
  EXPECT_EQ(out.to_vector(), before.to_vector());
  single.reduce_scatter(out, t);
  EXPECT_EQ(out.to_vector(), before.to_vector());
  EXPECT_THROW(single.broadcast(t, 1), Error);
}
