// World: joining the MPI job (or not), node-local ranks, device selection (distributed/world.h).
#include "distributed/world.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "core/error.h"
#include "core/log.h"
#ifdef LATTE_WITH_MPI
#include "distributed/mpi_comm.h"
#endif
#ifdef LATTE_WITH_CUDA
#include "core/cuda_context.h"
#endif

namespace latte::dist {

namespace {

#ifdef LATTE_WITH_MPI
// True when a launcher started this process: OpenMPI's mpirun, MPICH/Intel hydra, Slurm's srun
// (PMI or PMIx), or the user asks for MPI explicitly.
bool launched_by_mpi_launcher() {
  for (const char* var : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(var) != nullptr) return true;
  const char* force = std::getenv("LATTE_MPI_INIT");
  return force != nullptr && std::strcmp(force, "0") != 0;
}

// MPI_Finalize at process exit, only when latte called MPI_Init (the owner of MPI finalises it).
struct MpiFinalizer {
  ~MpiFinalizer() {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
  }
};

// Initialises MPI if needed; false when this process should run without MPI.
bool ensure_mpi_initialized() {
  int initialized = 0;
  LATTE_MPI_CHECK(MPI_Initialized(&initialized));
  int finalized = 0;
  LATTE_MPI_CHECK(MPI_Finalized(&finalized));
  LATTE_REQUIRE(!finalized, "World: MPI was already finalized in this process; create the World before "
                            "MPI_Finalize (at most one MPI session per process)");
  if (initialized) return true;
  if (!launched_by_mpi_launcher()) return false;
  // Serialized: latte calls MPI from one thread at a time (the data loader's threads never do).
  int provided = 0;
  LATTE_MPI_CHECK(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_SERIALIZED, &provided));
  static MpiFinalizer finalizer;  // destroyed at exit, after everything constructed later
  (void)finalizer;
  if (provided < MPI_THREAD_SERIALIZED)
    log::warn("MPI provides thread level ", provided, " < MPI_THREAD_SERIALIZED; keep MPI calls on one thread");
  return true;
}
#endif

}  // namespace

World::World() {
#ifdef LATTE_WITH_MPI
  if (!ensure_mpi_initialized()) return;
  comm_ = mpi_comm_dup(MPI_COMM_WORLD);
  rank_ = comm_->rank;
  size_ = comm_->size;

  // Node-local rank: the ranks that can share memory are one node.
  MPI_Comm shared = MPI_COMM_NULL;
  LATTE_MPI_CHECK(MPI_Comm_split_type(comm_->comm, MPI_COMM_TYPE_SHARED, rank_, MPI_INFO_NULL, &shared));
  {
    MpiComm node_comm(shared);  // frees it at the end of the scope
    local_rank_ = node_comm.rank;
    local_size_ = node_comm.size;
    // Every rank learns every rank's node: the world rank of its node's local rank 0 (the node's
    // lowest rank, since the split is keyed by world rank), then nodes are numbered in that order.
    int leader = rank_;
    LATTE_MPI_CHECK(MPI_Bcast(&leader, 1, MPI_INT, 0, node_comm.comm));
    std::vector<int> leaders(static_cast<size_t>(size_));
    LATTE_MPI_CHECK(MPI_Allgather(&leader, 1, MPI_INT, leaders.data(), 1, MPI_INT, comm_->comm));
    std::vector<int> distinct = leaders;
    std::sort(distinct.begin(), distinct.end());
    distinct.erase(std::unique(distinct.begin(), distinct.end()), distinct.end());
    num_nodes_ = static_cast<int>(distinct.size());
    node_of_rank_.resize(static_cast<size_t>(size_));
    for (int r = 0; r < size_; ++r)
      node_of_rank_[static_cast<size_t>(r)] = static_cast<int>(
          std::lower_bound(distinct.begin(), distinct.end(), leaders[static_cast<size_t>(r)]) - distinct.begin());
  }
  log::set_rank(rank_);
#endif
}

Device World::select_device(DeviceType type) const {
  if (type == DeviceType::CPU) return Device::cpu();
  const int gpus = cuda_device_count();
  LATTE_REQUIRE(gpus > 0, "rank ", rank_, ": a CUDA device was requested but none is visible (a build without CUDA, "
                "or CUDA_VISIBLE_DEVICES is empty); set train.device: cpu");
  LATTE_REQUIRE(local_rank_ < gpus, "rank ", rank_, " is process ", local_rank_, " of ", local_size_,
                " on its node, but the node has only ", gpus, " visible GPU(s): start at most ", gpus,
                " processes per node (one per GPU)");
#ifdef LATTE_WITH_CUDA
  cuda::set_device(local_rank_);
#endif
  return Device::cuda(local_rank_);
}

void World::barrier() const {
#ifdef LATTE_WITH_MPI
  if (comm_) LATTE_MPI_CHECK(MPI_Barrier(comm_->comm));
#endif
}

void abort_job(int exit_code) {
#ifdef LATTE_WITH_MPI
  int initialized = 0, finalized = 0, size = 1;
  MPI_Initialized(&initialized);
  MPI_Finalized(&finalized);
  if (initialized && !finalized) {
    MPI_Comm_size(MPI_COMM_WORLD, &size);
    if (size > 1) MPI_Abort(MPI_COMM_WORLD, exit_code);
  }
#endif
  std::exit(exit_code);
}

}  // namespace latte::dist
