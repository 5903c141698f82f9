// The dp x tp grid of a training job and its process groups.
//
// Rank r has tp_rank = r % tp and dp_rank = r / tp: a tensor-parallel group is tp consecutive ranks
// (mpirun places consecutive ranks on one node, where NVLink joins the GPUs, which TP's per-layer
// all-reduces need), and a data-parallel group takes every tp-th rank. With dp = 2, tp = 2:
//   TP groups {0,1} {2,3};  DP groups {0,2} {1,3}.
#pragma once
#include <memory>
#include <vector>

#include "distributed/process_group.h"
#include "distributed/world.h"

namespace latte::dist {

struct GridShape {
  int dp = 1;  // data-parallel degree (replicas of the model)
  int tp = 1;  // tensor-parallel degree (ranks sharing one replica)
};

// Checks parallel.dp / parallel.tp against how the job was launched and returns the grid. dp <= 0
// means "every rank not used by tp": world size / tp. Errors (latte::Error) name the keys and the fix:
//   - "parallel.dp * parallel.tp = 4 but mpirun started 2 processes"
//   - tp must divide the number of ranks on every node, and each TP group must lie on one node.
// node_of_rank[r] is the node of rank r (World::node_of_rank()); its size is the world size.
GridShape validate_grid(int dp, int tp, const std::vector<int>& node_of_rank);

class Topology {
 public:
  // Collective over the world: validates the grid and creates the TP and DP groups for `device`
  // (NCCL for a CUDA device: call World::select_device first; MPI for CPU) and an MPI world group
  // (metrics, barriers, checkpoints; CUDA tensors given to it are staged through the host).
  Topology(const World& world, int dp, int tp, Device device);

  int dp() const { return grid_.dp; }
  int tp() const { return grid_.tp; }
  int dp_rank() const { return dp_rank_; }
  int tp_rank() const { return tp_rank_; }
  int world_rank() const { return world_rank_; }
  Device device() const { return device_; }

  // Ranks (world numbering) of this rank's groups, in group-rank order.
  std::vector<int> tp_group_ranks() const;
  std::vector<int> dp_group_ranks() const;

  const std::shared_ptr<ProcessGroup>& world_group() const { return world_group_; }
  const std::shared_ptr<ProcessGroup>& tp_group() const { return tp_group_; }
  const std::shared_ptr<ProcessGroup>& dp_group() const { return dp_group_; }

 private:
  GridShape grid_;
  int world_rank_ = 0, dp_rank_ = 0, tp_rank_ = 0;
  Device device_;
  std::shared_ptr<ProcessGroup> world_group_, tp_group_, dp_group_;
};

}  // namespace latte::dist
