// delayed_copy (kernels/cuda/delayed_copy.h): a slow writer for stream-ordering tests.
#include "kernels/cuda/delayed_copy.h"

#include "kernels/cuda/cuda_common.h"

namespace latte::cuda {
namespace {

__global__ void delayed_copy_kernel(unsigned char* dst, const unsigned char* src, int64_t bytes, long long ns) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  long long t0 = 0, t = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); while (t - t0 < ns);
  for (int64_t i = threadIdx.x; i < bytes; i += blockDim.x) dst[i] = src[i];
}

}  // namespace

void delayed_copy(const Tensor& dst, const Tensor& src, int64_t ns) {
  const char* op = "delayed_copy";
  LATTE_CHECK(dst.device().is_cuda() && src.device() == dst.device(), op, ": dst and src must be on one CUDA device");
  LATTE_CHECK(dst.dtype() == src.dtype() && dst.numel() == src.numel(), op, ": dst ", dst.str(), " and src ", src.str(),
              " must have one dtype and size");
  require_contiguous(dst, op, "dst");
  require_contiguous(src, op, "src");
  LATTE_CHECK(ns >= 0, op, ": ns must be >= 0, got ", ns);
  DeviceGuard guard(dst.device().index);
  delayed_copy_kernel<<<1, 32, 0, current_stream()>>>(static_cast<unsigned char*>(dst.data_ptr()),
                                                      static_cast<const unsigned char*>(src.data_ptr()),
                                                      static_cast<int64_t>(dst.nbytes()), ns);
  CUDA_CHECK_LAUNCH("delayed_copy_kernel");
}

}  // namespace latte::cuda
