// allow_dynamic_smem (cuda_common.h): a kernel's dynamic shared-memory limit, raised once per kernel and device.
// Why a table rather than a static flag per launcher: a flag is per process, so a second device in the same
// process (or a launch that needs more than the first one did) would launch with the old limit and fail.
#include <mutex>
#include <vector>

#include "kernels/cuda/cuda_common.h"

namespace latte::cuda {

void allow_dynamic_smem(const void* kernel, size_t bytes) {
  struct Entry {
    const void* kernel;
    int device;
    size_t bytes;  // the limit set so far
  };
  static std::mutex mu;
  static std::vector<Entry> set;
  const int device = current_device();
  std::lock_guard<std::mutex> lock(mu);
  Entry* e = nullptr;
  for (Entry& x : set)
    if (x.kernel == kernel && x.device == device) e = &x;
  if (e && e->bytes >= bytes) return;
  CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
  if (e)
    e->bytes = bytes;
  else
    set.push_back({kernel, device, bytes});
}

}  // namespace latte::cuda
