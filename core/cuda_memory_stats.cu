// core/device.h's allocator statistics for a CUDA build, read from the caching allocator.
#include "core/cuda_context.h"
#include "core/device.h"

namespace latte {

CudaMemoryStats cuda_memory_stats(int device) {
  if (!cuda_available()) return {};
  cuda::AllocatorStats s = cuda::allocator_stats(device);
  return {s.allocated, s.reserved, s.peak_allocated};
}

}  // namespace latte
