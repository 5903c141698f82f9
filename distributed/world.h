// The job this process belongs to: its rank and the world size, its rank among the processes of
// its node (which picks its GPU), and which node it runs on.
//
// MPI is joined when a launcher started the process (mpirun/mpiexec, srun, hydra: detected from
// their environment variables) or when LATTE_MPI_INIT=1 is set; when MPI is already initialised (a
// test's main()) it is used as is. A process started without a launcher is a world of size 1 that
// never touches MPI, so `latte train cfg.yaml` works without mpirun and costs nothing. A build without
// MPI (LATTE_MPI=OFF) only has that trivial world.
//
// MPI_Finalize runs at process exit when latte initialised MPI. A rank that fails while the others
// may be blocked in a collective must end the job with abort_job() instead of returning: a clean
// MPI_Finalize on one rank would wait for the others forever.
#pragma once
#include <memory>
#include <vector>

#include "core/device.h"

namespace latte::dist {

struct MpiComm;  // distributed/mpi_comm.h (MPI builds only)

class World {
 public:
  World();
  World(const World&) = delete;
  World& operator=(const World&) = delete;

  int rank() const { return rank_; }
  int size() const { return size_; }
  bool is_root() const { return rank_ == 0; }
  // Rank among the processes of this node, and their count (MPI_COMM_TYPE_SHARED).
  int local_rank() const { return local_rank_; }
  int local_size() const { return local_size_; }
  // Node index in [0, num_nodes), numbered by each node's lowest rank.
  int node() const { return node_of_rank_[static_cast<size_t>(rank_)]; }
  int num_nodes() const { return num_nodes_; }
  // node_of_rank()[r]: the node of world rank r (every rank knows every rank's node).
  const std::vector<int>& node_of_rank() const { return node_of_rank_; }
  bool uses_mpi() const { return comm_ != nullptr; }

  // This rank's device of the given type: cuda:<local rank> (made the current device; an error when
  // the node has fewer GPUs than processes) or cpu.
  Device select_device(DeviceType type) const;

  void barrier() const;
  // A duplicate of MPI_COMM_WORLD (null without MPI): what process groups are split from.
  const std::shared_ptr<MpiComm>& comm() const { return comm_; }

 private:
  int rank_ = 0, size_ = 1, local_rank_ = 0, local_size_ = 1, num_nodes_ = 1;
  std::vector<int> node_of_rank_{0};
  std::shared_ptr<MpiComm> comm_;
};

// Ends every process of the job with `exit_code` (MPI_Abort when MPI runs with more than one rank,
// std::exit otherwise). For fatal errors on one rank; print the message first.
[[noreturn]] void abort_job(int exit_code);

}  // namespace latte::dist
