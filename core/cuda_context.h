// The CUDA runtime context latte uses on a GPU: checked calls, the current device and stream, events,
// the caching device allocator's controls and statistics, and pinned host buffers for uploads.
//
// Streams. Every device gets one stream that latte creates at first use and uses for all its work
// (kernels, cuBLASLt, copies, allocations). `current_stream()` returns it, or the stream a
// `StreamGuard` in this thread has set (a communication stream, say). It is a blocking stream, so
// code that still uses the legacy default stream 0 stays ordered with it.
//
// Allocator. cuda_allocate/cuda_free (core/device.h) go through a caching allocator: a freed block
// is kept and handed to the next request of its size class on the same stream, so a training step
// that repeats the previous one's allocations makes no cudaMalloc/cudaFree calls (both synchronise).
// `LATTE_CUDA_ALLOC=plain` in the environment bypasses the cache (plain cudaMalloc/cudaFree) to find
// use-after-free bugs with compute-sanitizer. Details in core/cuda_runtime.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

#include "core/error.h"

namespace latte::cuda {

[[noreturn]] void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line);
[[noreturn]] void throw_cublas_error(int status, const char* expr, const char* file, int line);

}  // namespace latte::cuda

// Checks a CUDA runtime call; throws latte::Error("file:line: CUDA error <name> (<string>) in <expr>").
#define CUDA_CHECK(expr)                                                                   \
  do {                                                                                     \
    cudaError_t latte_err_ = (expr);                                                       \
    if (latte_err_ != cudaSuccess) ::latte::cuda::throw_cuda_error(latte_err_, #expr, __FILE__, __LINE__); \
  } while (0)

// Checks a cuBLAS / cuBLASLt call (cublasStatus_t).
#define CUBLAS_CHECK(expr)                                                                 \
  do {                                                                                     \
    int latte_st_ = static_cast<int>(expr);                                                \
    if (latte_st_ != 0) ::latte::cuda::throw_cublas_error(latte_st_, #expr, __FILE__, __LINE__); \
  } while (0)

// After a kernel launch: throws on a launch error (bad configuration, too many resources).
#define CUDA_CHECK_LAUNCH(name) ::latte::cuda::check_launch(name, __FILE__, __LINE__)

namespace latte::cuda {

void check_launch(const char* name, const char* file, int line);

// ---- devices ------------------------------------------------------------------------------------
int current_device();
void set_device(int device);
const cudaDeviceProp& device_properties(int device = -1);  // -1: current device
int sm_count(int device = -1);

// Sets the current device for a scope, restoring the previous one.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device);
  ~DeviceGuard();
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  int previous_;
};

// ---- streams ------------------------------------------------------------------------------------
cudaStream_t default_stream(int device = -1);  // latte's per-device stream
cudaStream_t current_stream(int device = -1);  // the StreamGuard's stream, else default_stream

// Makes `stream` the current stream of the current device in this thread for a scope.
class StreamGuard {
 public:
  explicit StreamGuard(cudaStream_t stream);
  ~StreamGuard();
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  int device_;
  cudaStream_t previous_;
};

// An owned cudaEvent_t (timing enabled unless `timing` is false).
class Event {
 public:
  explicit Event(bool timing = true);
  ~Event();
  Event(const Event&) = delete;
  Event& operator=(const Event&) = delete;
  void record(cudaStream_t stream = nullptr);  // nullptr: current_stream()
  void wait(cudaStream_t stream = nullptr);    // make `stream` wait for this event
  void synchronize();
  bool query();                                // completed?
  float elapsed_ms(const Event& start) const;  // this - start, both recorded and completed
  cudaEvent_t get() const { return event_; }

 private:
  cudaEvent_t event_ = nullptr;
};

// ---- caching allocator --------------------------------------------------------------------------
struct AllocatorStats {
  size_t allocated = 0;        // bytes in blocks handed out now (block sizes, after rounding)
  size_t requested = 0;        // bytes asked for by the live allocations
  size_t reserved = 0;         // bytes held from cudaMalloc (handed out + cached)
  size_t peak_allocated = 0;   // high-water marks since start or reset_peak_stats()
  size_t peak_reserved = 0;
  uint64_t allocations = 0;    // cuda_allocate calls
  uint64_t cache_hits = 0;     // of those, served from the cache
  uint64_t cuda_mallocs = 0;   // cudaMalloc calls
  uint64_t cuda_frees = 0;     // cudaFree calls
  uint64_t oom_retries = 0;    // cudaMalloc failures retried after emptying the cache
  bool plain = false;          // LATTE_CUDA_ALLOC=plain: no caching
};
AllocatorStats allocator_stats(int device = -1);
void reset_peak_stats(int device = -1);
// Returns every cached (free) block to the driver (synchronises the device).
void empty_cache(int device = -1);
// Marks a live allocation as also used by `stream` (e.g. an NCCL stream): when freed, its block is
// reused only after the work queued on `stream` until now has finished.
void record_stream(void* ptr, cudaStream_t stream);

// ---- pinned host memory ---------------------------------------------------------------------------
// A page-locked host buffer for asynchronous uploads (batches of token ids). upload() waits until the
// previous upload from this buffer has left it, copies `bytes` from `src` into it and queues the
// copy to `dst` (device memory) on the current stream: the host returns at once.
class PinnedBuffer {
 public:
  PinnedBuffer() = default;
  explicit PinnedBuffer(size_t bytes);
  ~PinnedBuffer();
  PinnedBuffer(const PinnedBuffer&) = delete;
  PinnedBuffer& operator=(const PinnedBuffer&) = delete;
  PinnedBuffer(PinnedBuffer&& o) noexcept;
  PinnedBuffer& operator=(PinnedBuffer&& o) noexcept;
  void* data() const { return data_; }
  size_t size() const { return bytes_; }
  void upload(void* dst, const void* src, size_t bytes);
  void wait_idle();  // until the last upload from this buffer completed

 private:
  void* data_ = nullptr;
  size_t bytes_ = 0;
  cudaEvent_t done_ = nullptr;
};

}  // namespace latte::cuda
