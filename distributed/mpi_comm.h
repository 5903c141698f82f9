// Internal to distributed/: an owned MPI communicator and the checked-call macro. Included only by
// files compiled with LATTE_WITH_MPI, so that public headers stay free of <mpi.h> (a build with
// LATTE_MPI=OFF has no MPI at all).
//
// Every communicator latte creates has MPI_ERRORS_RETURN set, so a failing call returns a code that
// LATTE_MPI_CHECK turns into a latte::Error naming the call and MPI's error string, instead of
// MPI's default of aborting the job without context.
#pragma once
#ifndef LATTE_WITH_MPI
#error "distributed/mpi_comm.h needs an MPI build (LATTE_WITH_MPI)"
#endif
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1  // the C API only: OpenMPI's C++ bindings are not linked
#endif
#include <mpi.h>

#include <memory>

#include "core/error.h"

namespace latte::dist {

// Throws latte::Error("MPI_Allreduce failed: <MPI error string> (error class N)") when code != MPI_SUCCESS.
void check_mpi(int code, const char* call);

// Checks an MPI call. The error message names the function (the text before the '(').
#define LATTE_MPI_CHECK(call) ::latte::dist::check_mpi((call), #call)

// A communicator freed when the last owner lets go (unless MPI is already finalized: freeing after
// MPI_Finalize is illegal, and the process is ending anyway).
struct MpiComm {
  MPI_Comm comm = MPI_COMM_NULL;
  int rank = 0;
  int size = 1;

  explicit MpiComm(MPI_Comm owned);
  ~MpiComm();
  MpiComm(const MpiComm&) = delete;
  MpiComm& operator=(const MpiComm&) = delete;
};

// Duplicates `parent` (MPI_Comm_dup, errors returned): latte's traffic never mixes with the caller's.
std::shared_ptr<MpiComm> mpi_comm_dup(MPI_Comm parent);
// MPI_Comm_split of `parent`: collective over parent; ranks with equal color form one communicator,
// ordered by key.
std::shared_ptr<MpiComm> mpi_comm_split(const MpiComm& parent, int color, int key);

}  // namespace latte::dist
