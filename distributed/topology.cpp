// The dp x tp grid: validation against the launch and group creation (distributed/topology.h).
#include "distributed/topology.h"

#include <map>
#include <string>

#include "core/error.h"

namespace latte::dist {

GridShape validate_grid(int dp, int tp, const std::vector<int>& node_of_rank) {
  const int world_size = static_cast<int>(node_of_rank.size());
  LATTE_REQUIRE(tp >= 1, "parallel.tp = ", tp, " must be at least 1");
  if (dp <= 0) {
    LATTE_REQUIRE(world_size % tp == 0, "parallel.tp = ", tp, " does not divide the ", world_size,
                  " processes mpirun started; start a multiple of ", tp, " processes or change parallel.tp");
    dp = world_size / tp;
  }
  if (dp * tp != world_size) {
    const std::string fix = world_size % tp == 0
        ? str("set parallel.dp = ", world_size / tp, " (or 0: every rank tp leaves)")
        : str("choose a parallel.tp that divides ", world_size);
    LATTE_FAIL("parallel.dp * parallel.tp = ", dp * tp, " but mpirun started ", world_size,
               world_size == 1 ? " process" : " processes", "; launch ", dp * tp, " (scripts/launch.sh -n ", dp * tp,
               ") or ", fix);
  }

  // tp must divide each node's process count, and TP groups (consecutive ranks) must not cross nodes.
  std::map<int, int> ranks_per_node;
  for (int node : node_of_rank) ++ranks_per_node[node];
  for (const auto& [node, count] : ranks_per_node)
    LATTE_REQUIRE(count % tp == 0, "parallel.tp = ", tp, " must divide the number of processes on each node, but node ",
                  node, " runs ", count, "; tensor parallelism stays inside a node: use a parallel.tp that divides ",
                  count);
  for (int r = 0; r < world_size; ++r) {
    const int first = r - r % tp;
    LATTE_REQUIRE(node_of_rank[static_cast<size_t>(r)] == node_of_rank[static_cast<size_t>(first)],
                  "tensor-parallel group of ranks ", first, "..", first + tp - 1, " spans nodes ",
                  node_of_rank[static_cast<size_t>(first)], " and ", node_of_rank[static_cast<size_t>(r)],
                  "; place consecutive ranks on one node (mpirun --map-by slot, the default of scripts/launch.sh)");
  }
  return {dp, tp};
}

Topology::Topology(const World& world, int dp, int tp, Device device)
    : grid_(validate_grid(dp, tp, world.node_of_rank())), world_rank_(world.rank()), device_(device) {
  tp_rank_ = world_rank_ % grid_.tp;
  dp_rank_ = world_rank_ / grid_.tp;
  // The same creation order on every rank (each is collective over the world). The world group is
  // MPI-backed: it serves metrics, barriers and checkpoints (CUDA tensors are staged through the
  // host), and saves an NCCL communicator's buffers on every GPU.
  world_group_ = dist::world_group(world, Device::cpu());
  tp_group_ = new_group(world, /*color=*/dp_rank_, /*key=*/tp_rank_, device, "tp");
  dp_group_ = new_group(world, /*color=*/tp_rank_, /*key=*/dp_rank_, device, "dp");
}

std::vector<int> Topology::tp_group_ranks() const {
  std::vector<int> ranks;
  for (int t = 0; t < grid_.tp; ++t) ranks.push_back(dp_rank_ * grid_.tp + t);
  return ranks;
}

std::vector<int> Topology::dp_group_ranks() const {
  std::vector<int> ranks;
  for (int d = 0; d < grid_.dp; ++d) ranks.push_back(d * grid_.tp + tp_rank_);
  return ranks;
}

}  // namespace latte::dist
