#include "core/device.h"

#include <malloc.h>

#include <cstdlib>
#include <cstring>
#include <new>

#include "core/error.h"

namespace latte {

std::string Device::str() const {
  return type == DeviceType::CPU ? std::string("cpu") : "cuda:" + std::to_string(index);
}

Device Device::parse(const std::string& s) {
  if (s == "cpu") return cpu();
  if (s == "cuda" || s == "gpu") return cuda(0);
  if (s.rfind("cuda:", 0) == 0) return cuda(std::stoi(s.substr(5)));
  LATTE_FAIL("unknown device '", s, "'; expected cpu, cuda or cuda:N");
}

namespace {
// Training allocates and frees the same large activation buffers every step. glibc serves blocks
// above 128 KiB with fresh mmaps, so each step paid page faults for every buffer (a third of CPU
// training time in a profile); keeping large freed blocks in the heap makes them reusable.
const bool g_malloc_tuned = [] {
  mallopt(M_MMAP_THRESHOLD, 1 << 30);
  mallopt(M_TRIM_THRESHOLD, 1 << 30);
  return true;
}();
}  // namespace

void* cpu_allocate(size_t bytes) {
  (void)g_malloc_tuned;
  size_t rounded = (bytes + kCpuAlignment - 1) / kCpuAlignment * kCpuAlignment;
  if (rounded == 0) rounded = kCpuAlignment;
  void* p = std::aligned_alloc(kCpuAlignment, rounded);
  if (!p) LATTE_FAIL("out of host memory allocating ", bytes, " bytes");
  return p;
}

void cpu_free(void* p) { std::free(p); }

#ifndef LATTE_WITH_CUDA
// Build without CUDA: every CUDA entry point explains itself.
namespace {
[[noreturn]] void no_cuda() {
  LATTE_FAIL("this latte build has no CUDA backend (configured with LATTE_CUDA=OFF or without nvcc); "
             "rebuild on a machine with the CUDA toolkit or use device: cpu");
}
}  // namespace
bool cuda_available() { return false; }
int cuda_device_count() { return 0; }
void* cuda_allocate(size_t, int) { no_cuda(); }
void cuda_free(void*, int) { no_cuda(); }
void cuda_memset(void*, int, size_t, int) { no_cuda(); }
void cuda_synchronize() {}
CudaMemoryStats cuda_memory_stats(int) { return {}; }
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (!dst_dev.is_cpu() || !src_dev.is_cpu()) no_cuda();
  if (bytes) std::memcpy(dst, src, bytes);
}
#endif

}  // namespace latte
