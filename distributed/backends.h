// Internal to distributed/: constructors of the process-group backends, called by new_group()
// (distributed/process_group.cpp). Each exists only in the builds that compile its backend.
#pragma once
#include <memory>
#include <string>

#include "distributed/process_group.h"

namespace latte::dist {

struct MpiComm;

#ifdef LATTE_WITH_MPI
// Collectives on CPU tensors over `comm` (distributed/mpi_process_group.cpp).
std::shared_ptr<ProcessGroup> make_mpi_process_group(std::shared_ptr<MpiComm> comm, const std::string& name);
#endif

#if defined(LATTE_WITH_NCCL) && defined(LATTE_WITH_CUDA) && defined(LATTE_WITH_MPI)
#define LATTE_HAS_NCCL_GROUP 1
// NCCL on CUDA device `device` over the ranks of `comm` (its unique id is broadcast over `comm`;
// collective over comm) (distributed/nccl_process_group.cpp).
std::shared_ptr<ProcessGroup> make_nccl_process_group(std::shared_ptr<MpiComm> comm, int device,
                                                      const std::string& name);
#endif

}  // namespace latte::dist
