// Owned MPI communicators and the error check behind LATTE_MPI_CHECK (distributed/mpi_comm.h).
#include "distributed/mpi_comm.h"

#include <string>

namespace latte::dist {

void check_mpi(int code, const char* call) {
  if (code == MPI_SUCCESS) return;
  std::string name(call);
  if (size_t paren = name.find('('); paren != std::string::npos) name.resize(paren);
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
  int error_class = code;
  MPI_Error_class(code, &error_class);
  throw Error(str(name, " failed: ", length > 0 ? std::string(text, static_cast<size_t>(length)) : "unknown MPI error",
                  " (MPI error class ", error_class, ")"));
}

MpiComm::MpiComm(MPI_Comm owned) : comm(owned) {
  LATTE_MPI_CHECK(MPI_Comm_set_errhandler(comm, MPI_ERRORS_RETURN));
  LATTE_MPI_CHECK(MPI_Comm_rank(comm, &rank));
  LATTE_MPI_CHECK(MPI_Comm_size(comm, &size));
}

MpiComm::~MpiComm() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized && comm != MPI_COMM_NULL) MPI_Comm_free(&comm);
}

std::shared_ptr<MpiComm> mpi_comm_dup(MPI_Comm parent) {
  MPI_Comm dup = MPI_COMM_NULL;
  LATTE_MPI_CHECK(MPI_Comm_dup(parent, &dup));
  return std::make_shared<MpiComm>(dup);
}

std::shared_ptr<MpiComm> mpi_comm_split(const MpiComm& parent, int color, int key) {
  MPI_Comm part = MPI_COMM_NULL;
  LATTE_MPI_CHECK(MPI_Comm_split(parent.comm, color, key, &part));
  LATTE_CHECK(part != MPI_COMM_NULL, "MPI_Comm_split with a non-negative color returned MPI_COMM_NULL");
  return std::make_shared<MpiComm>(part);
}

}  // namespace latte::dist
