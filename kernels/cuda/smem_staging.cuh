// Staging global memory through shared memory with the Hopper copy engine, and the occupancy query the
// persistent kernels that do it size their grids with (cross_entropy.cu, group_norm.cu).
//   device (sm_90): mbar_init / mbar_arrive_expect / mbar_wait on a shared-memory mbarrier, and bulk_copy
//     (cp.async.bulk global -> shared, completing on the mbarrier);
//   host: blocks_per_sm(kernel, threads, smem), cached per (kernel, device, shape).
#pragma once
#include <algorithm>
#include <cstdint>
#include <mutex>
#include <vector>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/mbarrier.cuh"

namespace latte::cuda {
namespace {

constexpr uint32_t kCopyChunk = 32768;  // bytes per bulk copy instruction

__device__ __forceinline__ uint32_t smem_addr(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
// The mbarrier.cuh primitives for a barrier given by pointer.
__device__ __forceinline__ void mbar_init(uint64_t* bar, uint32_t count) {
  ::latte::cuda::mbar_init(smem_addr(bar), count);
}

// The calling thread arrives on `bar` and tells it to expect `bytes` more from bulk copies.
__device__ __forceinline__ void mbar_arrive_expect(uint64_t* bar, uint32_t bytes) {
  mbar_arrive_expect_tx(smem_addr(bar), bytes);
}

__device__ __forceinline__ void mbar_wait(uint64_t* bar, uint32_t parity) {
  ::latte::cuda::mbar_wait(smem_addr(bar), parity);
}

// Global -> shared copy of `bytes` (a multiple of 16, both addresses 16-byte aligned) by the copy engine,
// counted on `bar` (whose expected bytes the caller has raised).
__device__ __forceinline__ void bulk_copy(void* dst, const void* src, uint32_t bytes, uint64_t* bar) {
  for (uint32_t off = 0; off < bytes; off += kCopyChunk) {
    const uint32_t n = bytes - off < kCopyChunk ? bytes - off : kCopyChunk;
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];" ::"r"(
                     smem_addr(static_cast<char*>(dst) + off)),
                 "l"(static_cast<const char*>(src) + off), "r"(n), "r"(smem_addr(bar))
                 : "memory");
  }
}
#endif

// Blocks of `kernel` resident per SM at this block size and dynamic shared memory, after raising the kernel's
// shared-memory limit to at least `smem` (allow_dynamic_smem: never lowered, so a cached launch with more still
// fits). Cached per device, since the host work before a launch shows in a 0.1 ms kernel's time.
template <typename K>
int blocks_per_sm(K kernel, int threads, size_t smem) {
  struct Entry {
    const void* fn;
    int device, threads;
    size_t smem;
    int per_sm;
  };
  static std::mutex mu;
  static std::vector<Entry> cache;
  const void* fn = reinterpret_cast<const void*>(kernel);
  const int device = current_device();
  std::lock_guard<std::mutex> lock(mu);
  for (const Entry& e : cache)
    if (e.fn == fn && e.device == device && e.threads == threads && e.smem == smem) return e.per_sm;
  allow_dynamic_smem(kernel, smem);
  int per_sm = 0;
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, threads, smem));
  per_sm = std::max(per_sm, 1);
  cache.push_back({fn, device, threads, smem, per_sm});
  return per_sm;
}

}  // namespace
}  // namespace latte::cuda
