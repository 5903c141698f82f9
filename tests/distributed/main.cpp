// main() of the distributed suite: MPI_Init, GoogleTest on every rank, one verdict for the job.
//
// Rank 0 prints GoogleTest's usual report; the other ranks print only their failures, prefixed with
// "[rank r]". The exit code is non-zero on every rank when any rank failed a test. A watchdog
// (LATTE_TEST_TIMEOUT_S, default 600 s) kills a rank that hangs in a collective, so a broken test
// fails the job instead of blocking CI until ctest's timeout.
#include <gtest/gtest.h>
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1  // the C API only: OpenMPI's C++ bindings are not linked
#endif
#include <mpi.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>

namespace {

class RankFailurePrinter : public ::testing::EmptyTestEventListener {
 public:
  explicit RankFailurePrinter(int rank) : rank_(rank) {}
  void OnTestPartResult(const ::testing::TestPartResult& result) override {
    if (!result.failed()) return;
    std::fprintf(stderr, "[rank %d] %s:%d: Failure\n%s\n", rank_, result.file_name() ? result.file_name() : "?",
                 result.line_number(), result.message());
  }
  void OnTestEnd(const ::testing::TestInfo& info) override {
    if (info.result()->Failed())
      std::fprintf(stderr, "[rank %d] FAILED %s.%s\n", rank_, info.test_suite_name(), info.name());
  }

 private:
  int rank_;
};

}  // namespace

int main(int argc, char** argv) {
  int provided = 0;
  MPI_Init_thread(&argc, &argv, MPI_THREAD_SERIALIZED, &provided);
  ::testing::InitGoogleTest(&argc, argv);
  int rank = 0;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  if (rank != 0) {
    ::testing::TestEventListeners& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
    listeners.Append(new RankFailurePrinter(rank));
  }
  const char* timeout = std::getenv("LATTE_TEST_TIMEOUT_S");
  alarm(timeout ? static_cast<unsigned>(std::atoi(timeout)) : 600u);  // SIGALRM ends a hung rank; mpirun ends the rest

  int failed = RUN_ALL_TESTS() != 0 ? 1 : 0;
  int any_failed = failed;
  MPI_Allreduce(&failed, &any_failed, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  if (rank == 0 && any_failed && !failed) std::fprintf(stderr, "distributed suite: a test failed on another rank\n");
  MPI_Finalize();
  return any_failed;
}
