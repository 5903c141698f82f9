// World (ranks, node-local ranks) and the dp x tp grid: validation messages and group membership.
#include <gtest/gtest.h>
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1  // the C API only: OpenMPI's C++ bindings are not linked
#endif
#include <mpi.h>

#include "dist_test_util.h"
#include "distributed/topology.h"

using namespace latte;
using namespace latte::dist;
using latte::test::world;

namespace {

// The message of the latte::Error that fn throws ("" when it does not throw).
template <typename F>
std::string error_of(F&& fn) {
  try {
    fn();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

// World ranks of `group`'s members, in group-rank order, learned through the group itself.
std::vector<int> members_of(ProcessGroup& group) {
  Tensor mine = Tensor::from_vector({static_cast<double>(world().rank())}, {1}, DType::I32);
  Tensor all = Tensor::empty({group.size()}, DType::I32);
  group.all_gather(all, mine);
  std::vector<int> ranks;
  for (double r : all.to_vector()) ranks.push_back(static_cast<int>(r));
  return ranks;
}

}  // namespace

TEST(World, RanksMatchMpi) {
  int size = 0, rank = 0;
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  EXPECT_TRUE(world().uses_mpi());
  EXPECT_EQ(world().size(), size);
  EXPECT_EQ(world().rank(), rank);
  // mpirun on one machine: one node, local rank = rank.
  EXPECT_EQ(world().num_nodes(), 1);
  EXPECT_EQ(world().local_size(), size);
  EXPECT_EQ(world().local_rank(), rank);
  EXPECT_EQ(world().node_of_rank(), std::vector<int>(static_cast<size_t>(size), 0));
  EXPECT_EQ(world().select_device(DeviceType::CPU), Device::cpu());
  world().barrier();
}

TEST(Grid, ValidShapes) {
  const std::vector<int> one_node_of_4(4, 0);
  GridShape g = validate_grid(2, 2, one_node_of_4);
  EXPECT_EQ(g.dp, 2);
  EXPECT_EQ(g.tp, 2);
  g = validate_grid(0, 2, one_node_of_4);  // dp inferred
  EXPECT_EQ(g.dp, 2);
  g = validate_grid(1, 4, one_node_of_4);
  EXPECT_EQ(g.dp, 1);
  g = validate_grid(4, 2, {0, 0, 0, 0, 1, 1, 1, 1});  // two nodes of 4, TP inside each
  EXPECT_EQ(g.dp, 4);
  g = validate_grid(1, 1, {0});
  EXPECT_EQ(g.dp, 1);
}

TEST(Grid, ProductMustMatchTheLaunch) {
  const std::string msg = error_of([] { validate_grid(2, 2, {0, 0}); });
  EXPECT_NE(msg.find("parallel.dp * parallel.tp = 4 but mpirun started 2 processes"), std::string::npos) << msg;
  EXPECT_NE(msg.find("launch.sh -n 4"), std::string::npos) << msg;
  const std::string single = error_of([] { validate_grid(2, 1, {0}); });
  EXPECT_NE(single.find("= 2 but mpirun started 1 process;"), std::string::npos) << single;
  EXPECT_NE(error_of([] { validate_grid(0, 3, {0, 0, 0, 0}); }).find("parallel.tp = 3"), std::string::npos);
  EXPECT_NE(error_of([] { validate_grid(1, 0, {0}); }).find("parallel.tp = 0"), std::string::npos);
}

TEST(Grid, TensorParallelStaysInsideANode) {
  // 2 processes per node cannot host tp = 4.
  const std::string per_node = error_of([] { validate_grid(1, 4, {0, 0, 1, 1}); });
  EXPECT_NE(per_node.find("must divide the number of processes on each node"), std::string::npos) << per_node;
  // Round-robin placement puts consecutive ranks on different nodes.
  const std::string spans = error_of([] { validate_grid(2, 2, {0, 1, 0, 1}); });
  EXPECT_NE(spans.find("spans nodes"), std::string::npos) << spans;
}

TEST(Topology, EveryTpDegreeThatDividesTheWorld) {
  const int n = world().size();
  for (int tp = 1; tp <= n; ++tp) {
    if (n % tp != 0) continue;
    Topology topo(world(), 0, tp, Device::cpu());
    EXPECT_EQ(topo.tp(), tp);
    EXPECT_EQ(topo.dp(), n / tp);
    EXPECT_EQ(topo.tp_rank(), world().rank() % tp);
    EXPECT_EQ(topo.dp_rank(), world().rank() / tp);
    EXPECT_EQ(topo.tp_group()->size(), tp);
    EXPECT_EQ(topo.dp_group()->size(), n / tp);
    EXPECT_EQ(topo.world_group()->size(), n);
    EXPECT_EQ(topo.tp_group()->rank(), topo.tp_rank());
    EXPECT_EQ(topo.dp_group()->rank(), topo.dp_rank());
    EXPECT_EQ(members_of(*topo.tp_group()), topo.tp_group_ranks()) << "tp = " << tp;
    EXPECT_EQ(members_of(*topo.dp_group()), topo.dp_group_ranks()) << "tp = " << tp;
  }
}

TEST(Topology, TwoByTwoGroupsOnFourRanks) {
  if (world().size() != 4) GTEST_SKIP() << "needs 4 ranks";
  Topology topo(world(), 2, 2, Device::cpu());
  const std::vector<std::vector<int>> tp_groups = {{0, 1}, {0, 1}, {2, 3}, {2, 3}};
  const std::vector<std::vector<int>> dp_groups = {{0, 2}, {1, 3}, {0, 2}, {1, 3}};
  const size_t r = static_cast<size_t>(world().rank());
  EXPECT_EQ(topo.tp_group_ranks(), tp_groups[r]);
  EXPECT_EQ(topo.dp_group_ranks(), dp_groups[r]);
  EXPECT_EQ(members_of(*topo.tp_group()), tp_groups[r]);
  EXPECT_EQ(members_of(*topo.dp_group()), dp_groups[r]);
  // Sums over each group see only its members.
  EXPECT_DOUBLE_EQ(topo.tp_group()->all_reduce_scalar(world().rank()), tp_groups[r][0] + tp_groups[r][1]);
  EXPECT_DOUBLE_EQ(topo.dp_group()->all_reduce_scalar(world().rank()), dp_groups[r][0] + dp_groups[r][1]);
}

TEST(Topology, MismatchedGridFailsOnEveryRankBeforeAnyCollective) {
  const int n = world().size();
  const std::string msg = error_of([&] { Topology topo(world(), n, 2, Device::cpu()); });
  EXPECT_NE(msg.find(str("parallel.dp * parallel.tp = ", 2 * n, " but mpirun started ", n, " processes")),
            std::string::npos) << msg;
  world().barrier();  // everyone is still in step
}
