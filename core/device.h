// Devices and raw memory. CPU memory is 64-byte aligned (AVX-512 lines, safe for any vector load).
// CUDA memory comes from the caching allocator in core/cuda_*.cu; in a build without CUDA the CUDA
// entry points throw a clear error.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace latte {

enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool is_cpu() const { return type == DeviceType::CPU; }
  bool is_cuda() const { return type == DeviceType::CUDA; }
  bool operator==(const Device& o) const { return type == o.type && (type == DeviceType::CPU || index == o.index); }
  bool operator!=(const Device& o) const { return !(*this == o); }
  std::string str() const;
  static Device cpu() { return {DeviceType::CPU, 0}; }
  static Device cuda(int index = 0) { return {DeviceType::CUDA, index}; }
  static Device parse(const std::string& s);  // "cpu", "cuda", "cuda:1"
};

constexpr size_t kCpuAlignment = 64;

void* cpu_allocate(size_t bytes);  // 64-byte aligned, throws on failure
void cpu_free(void* p);

// CUDA runtime entry points used by core (implemented in core/cuda_runtime.cu).
bool cuda_available();          // a build with CUDA and at least one visible GPU
int cuda_device_count();
void* cuda_allocate(size_t bytes, int device);   // from the caching allocator, on the current stream
void cuda_free(void* p, int device);
// Copies between any two devices; synchronous with respect to the host for D2H.
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);
void cuda_memset(void* p, int value, size_t bytes, int device);
void cuda_synchronize();
// Bytes currently allocated / held by the caching allocator / peak allocated since start (0 without CUDA).
struct CudaMemoryStats {
  size_t allocated = 0, reserved = 0, peak_allocated = 0;
};
CudaMemoryStats cuda_memory_stats(int device = 0);

}  // namespace latte
