// `latte version`: the version and what this build can do (CUDA, cuDNN, NCCL, MPI).
#include <cstdio>

#include "apps/commands.h"
#include "core/device.h"

namespace latte::apps {

int cmd_version(int, char**) {
  std::printf("latte %s\n", LATTE_VERSION);
#ifdef LATTE_WITH_CUDA
  std::printf("cuda: built (devices visible: %d)\n", cuda_device_count());
#else
  std::printf("cuda: not built\n");
#endif
#ifdef LATTE_WITH_CUDNN
  std::printf("cudnn: built\n");
#endif
#ifdef LATTE_WITH_NCCL
  std::printf("nccl: built\n");
#endif
#ifdef LATTE_WITH_MPI
  std::printf("mpi: built\n");
#endif
  return 0;
}

}  // namespace latte::apps
