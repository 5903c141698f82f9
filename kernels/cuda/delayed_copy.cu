// delayed_copy and busy_wait (kernels/cuda/delayed_copy.h): kernels that take a set time on the device.
#include "kernels/cuda/delayed_copy.h"

#include "kernels/cuda/cuda_common.h"

namespace latte::cuda {
namespace {

__device__ void spin_ns(long long ns) {
  long long t0 = 0, t = 0;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t0));
  do asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); while (t - t0 < ns);
}

__global__ void delayed_copy_kernel(unsigned char* dst, const unsigned char* src, int64_t bytes, long long ns) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;\n" ::: "memory");
#endif
  spin_ns(ns);
  for (int64_t i = threadIdx.x; i < bytes; i += blockDim.x) dst[i] = src[i];
}

__global__ void busy_wait_kernel(long long ns) { spin_ns(ns); }

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

void busy_wait(int64_t ns) {
  LATTE_CHECK(ns >= 0, "busy_wait: ns must be >= 0, got ", ns);
  busy_wait_kernel<<<1, 32, 0, current_stream()>>>(ns);
  CUDA_CHECK_LAUNCH("busy_wait_kernel");
}

}  // namespace latte::cuda
