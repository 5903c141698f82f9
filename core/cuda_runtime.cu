// latte's CUDA runtime layer: the core/device.h entry points (allocation, copies, memset, sync) and
// the context of core/cuda_context.h (checked calls, devices, per-device stream, events, the caching
// allocator, pinned upload buffers).
//
// Caching allocator, in short (PyTorch's CUDACachingAllocator without block splitting):
//  - A request is rounded up to its size class: 512 B minimum, then 8 classes per power of two below
//    32 MiB (at most 12.5% padding), 2 MiB steps above. Each class is one cudaMalloc; blocks are never
//    split, so every block is 256-byte aligned and a freed block can only be reused whole.
//  - Freed blocks go to a free set ordered by (stream, size). A request takes the smallest cached
//    block of its stream that is at least its class and at most 5/4 of it. Blocks remember the stream
//    they were allocated on: work queued on that stream before the free is ordered before any reuse
//    on the same stream, so no event is needed. A block also used on another stream (record_stream)
//    waits in a pending list, with one event per such stream, until that stream's work is done.
//  - When cudaMalloc fails, the allocator synchronises, frees every cached block and retries once;
//    a second failure throws a latte::Error that quotes the statistics.
//  - After warm-up a training step allocates the same sizes in the same order, so every request is a
//    cache hit: no cudaMalloc/cudaFree (which synchronise the device) in the step loop.
// LATTE_CUDA_ALLOC=plain bypasses the cache; LATTE_CUDA_SYNC=1 synchronises after every kernel launch
// (slow; turns an asynchronous kernel fault into an error at the launch that caused it).
#include <cublas_api.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/cuda_context.h"
#include "core/device.h"
#include "core/log.h"

namespace latte {
namespace cuda {

// ---- errors -------------------------------------------------------------------------------------

void throw_cuda_error(cudaError_t err, const char* expr, const char* file, int line) {
  throw Error(str(file, ":", line, ": CUDA error ", cudaGetErrorName(err), " (", cudaGetErrorString(err), ") in ",
                  expr));
}

void throw_cublas_error(int status, const char* expr, const char* file, int line) {
  throw Error(str(file, ":", line, ": cuBLAS error ", cublasGetStatusName(static_cast<cublasStatus_t>(status)), " (",
                  cublasGetStatusString(static_cast<cublasStatus_t>(status)), ") in ", expr));
}

namespace {
bool sync_after_launch() {
  static const bool on = [] {
    const char* e = std::getenv("LATTE_CUDA_SYNC");
    return e && std::string(e) != "0";
  }();
  return on;
}
}  // namespace

void check_launch(const char* name, const char* file, int line) {
  cudaError_t err = cudaGetLastError();
  if (err == cudaSuccess && sync_after_launch()) err = cudaDeviceSynchronize();
  if (err != cudaSuccess) throw_cuda_error(err, name, file, line);
}

// ---- devices ------------------------------------------------------------------------------------

namespace {
constexpr int kMaxDevices = 64;

int device_count_cached() {
  static const int n = [] {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess) {
      cudaGetLastError();  // no driver / no device: clear the sticky-free error and report none
      return 0;
    }
    return count < kMaxDevices ? count : kMaxDevices;
  }();
  return n;
}

int resolve(int device) { return device < 0 ? current_device() : device; }

void check_device(int device) {
  LATTE_REQUIRE(device >= 0 && device < device_count_cached(), "CUDA device ", device, " does not exist (",
                device_count_cached(), " visible); check CUDA_VISIBLE_DEVICES and the device setting");
}
}  // namespace

int current_device() {
  int d = 0;
  CUDA_CHECK(cudaGetDevice(&d));
  return d;
}

void set_device(int device) {
  check_device(device);
  CUDA_CHECK(cudaSetDevice(device));
}

const cudaDeviceProp& device_properties(int device) {
  static std::mutex mu;
  static std::unique_ptr<cudaDeviceProp> props[kMaxDevices];
  device = resolve(device);
  check_device(device);
  std::lock_guard<std::mutex> lock(mu);
  if (!props[device]) {
    auto p = std::make_unique<cudaDeviceProp>();
    CUDA_CHECK(cudaGetDeviceProperties(p.get(), device));
    props[device] = std::move(p);
  }
  return *props[device];
}

int sm_count(int device) { return device_properties(device).multiProcessorCount; }

DeviceGuard::DeviceGuard(int device) : previous_(current_device()) {
  if (device != previous_) set_device(device);
}
DeviceGuard::~DeviceGuard() {
  int now = 0;
  if (cudaGetDevice(&now) == cudaSuccess && now != previous_) cudaSetDevice(previous_);
}

// ---- streams ------------------------------------------------------------------------------------

namespace {
thread_local cudaStream_t tl_stream[kMaxDevices] = {};
}

cudaStream_t default_stream(int device) {
  static std::mutex mu;
  static cudaStream_t streams[kMaxDevices] = {};
  device = resolve(device);
  check_device(device);
  std::lock_guard<std::mutex> lock(mu);
  if (!streams[device]) {
    DeviceGuard guard(device);
    // Blocking (not cudaStreamNonBlocking): stays ordered with code that uses the legacy stream 0.
    CUDA_CHECK(cudaStreamCreateWithFlags(&streams[device], cudaStreamDefault));
  }
  return streams[device];
}

cudaStream_t current_stream(int device) {
  device = resolve(device);
  cudaStream_t s = (device >= 0 && device < kMaxDevices) ? tl_stream[device] : nullptr;
  return s ? s : default_stream(device);
}

StreamGuard::StreamGuard(cudaStream_t stream) : device_(current_device()), previous_(tl_stream[device_]) {
  tl_stream[device_] = stream;
}
StreamGuard::~StreamGuard() { tl_stream[device_] = previous_; }

Event::Event(bool timing) {
  CUDA_CHECK(cudaEventCreateWithFlags(&event_, timing ? cudaEventDefault : cudaEventDisableTiming));
}
Event::~Event() {
  if (event_) cudaEventDestroy(event_);
}
void Event::record(cudaStream_t stream) { CUDA_CHECK(cudaEventRecord(event_, stream ? stream : current_stream())); }
void Event::wait(cudaStream_t stream) { CUDA_CHECK(cudaStreamWaitEvent(stream ? stream : current_stream(), event_, 0)); }
void Event::synchronize() { CUDA_CHECK(cudaEventSynchronize(event_)); }
bool Event::query() {
  cudaError_t e = cudaEventQuery(event_);
  if (e == cudaErrorNotReady) return false;
  CUDA_CHECK(e);
  return true;
}
float Event::elapsed_ms(const Event& start) const {
  float ms = 0.f;
  CUDA_CHECK(cudaEventElapsedTime(&ms, start.event_, event_));
  return ms;
}

// ---- caching allocator --------------------------------------------------------------------------

namespace {

constexpr size_t kMinBlock = 512;
constexpr size_t kLargeBlock = size_t(32) << 20;  // from here on, classes are 2 MiB apart
constexpr size_t kLargeStep = size_t(2) << 20;

size_t size_class(size_t bytes) {
  if (bytes <= kMinBlock) return kMinBlock;
  size_t step;
  if (bytes >= kLargeBlock) {
    step = kLargeStep;
  } else {
    size_t pow2 = size_t(1) << (63 - __builtin_clzll(bytes));  // largest power of two <= bytes
    step = pow2 / 8 > kMinBlock ? pow2 / 8 : kMinBlock;
  }
  return (bytes + step - 1) / step * step;
}

struct Block {
  void* ptr = nullptr;
  size_t size = 0;       // class size (what cudaMalloc got)
  size_t requested = 0;  // what the live allocation asked for
  cudaStream_t stream = nullptr;
  std::vector<cudaStream_t> other_streams;  // record_stream()
};

struct BlockOrder {
  bool operator()(const Block* a, const Block* b) const {
    if (a->stream != b->stream) return reinterpret_cast<uintptr_t>(a->stream) < reinterpret_cast<uintptr_t>(b->stream);
    if (a->size != b->size) return a->size < b->size;
    return reinterpret_cast<uintptr_t>(a->ptr) < reinterpret_cast<uintptr_t>(b->ptr);
  }
};

struct Pending {
  Block* block;
  std::vector<cudaEvent_t> events;
};

bool plain_mode() {
  static const bool plain = [] {
    const char* e = std::getenv("LATTE_CUDA_ALLOC");
    return e && std::string(e) == "plain";
  }();
  return plain;
}

std::string mib(size_t bytes) { return str(bytes / (1024.0 * 1024.0), " MiB"); }

class DeviceAllocator {
 public:
  explicit DeviceAllocator(int device) : device_(device) { stats_.plain = plain_mode(); }

  void* allocate(size_t bytes) {
    if (bytes == 0) return nullptr;
    std::lock_guard<std::mutex> lock(mu_);
    DeviceGuard guard(device_);
    cudaStream_t stream = current_stream(device_);
    stats_.allocations++;
    const size_t size = stats_.plain ? bytes : size_class(bytes);
    Block* block = nullptr;
    if (!stats_.plain) {
      collect_pending();
      Block key;
      key.stream = stream;
      key.size = size;
      auto it = free_.lower_bound(&key);
      if (it != free_.end() && (*it)->stream == stream && (*it)->size <= size + size / 4) {
        block = *it;
        free_.erase(it);
        stats_.cache_hits++;
      }
    }
    if (!block) {
      void* ptr = malloc_with_retry(size, bytes);
      block = new Block();
      block->ptr = ptr;
      block->size = size;
      block->stream = stream;
      stats_.reserved += size;
      stats_.peak_reserved = std::max(stats_.peak_reserved, stats_.reserved);
    }
    block->requested = bytes;
    live_[block->ptr] = block;
    stats_.allocated += block->size;
    stats_.requested += bytes;
    stats_.peak_allocated = std::max(stats_.peak_allocated, stats_.allocated);
    return block->ptr;
  }

  // Never throws: it runs in Storage's destructor.
  void free(void* ptr) {
    if (!ptr) return;
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    if (it == live_.end()) {
      log::error("cuda_free: pointer ", ptr, " was not allocated by latte's allocator on device ", device_);
      return;
    }
    Block* block = it->second;
    live_.erase(it);
    stats_.allocated -= block->size;
    stats_.requested -= block->requested;
    if (stats_.plain) {
      release(block);
      return;
    }
    if (block->other_streams.empty()) {
      free_.insert(block);
      return;
    }
    // Used on other streams too: reusable once their work queued so far is done. (Events need no current
    // device: they are recorded on the block's other streams.)
    Pending p{block, {}};
    for (cudaStream_t s : block->other_streams) {
      cudaEvent_t e = nullptr;
      if (cudaEventCreateWithFlags(&e, cudaEventDisableTiming) != cudaSuccess || cudaEventRecord(e, s) != cudaSuccess) {
        cudaGetLastError();
        if (e) cudaEventDestroy(e);
        cudaStreamSynchronize(s);
        continue;
      }
      p.events.push_back(e);
    }
    block->other_streams.clear();
    pending_.push_back(std::move(p));
  }

  void record_stream(void* ptr, cudaStream_t stream) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(ptr);
    LATTE_CHECK(it != live_.end(), "record_stream: pointer not allocated by latte on device ", device_);
    Block* b = it->second;
    if (stream == b->stream) return;
    for (cudaStream_t s : b->other_streams)
      if (s == stream) return;
    b->other_streams.push_back(stream);
  }

  AllocatorStats stats() {
    std::lock_guard<std::mutex> lock(mu_);
    return stats_;
  }

  void reset_peak() {
    std::lock_guard<std::mutex> lock(mu_);
    stats_.peak_allocated = stats_.allocated;
    stats_.peak_reserved = stats_.reserved;
  }

  void empty_cache() {
    std::lock_guard<std::mutex> lock(mu_);
    DeviceGuard guard(device_);
    release_cached();
  }

 private:
  // Moves pending blocks whose other-stream work has finished to the free set.
  void collect_pending() {
    for (auto it = pending_.begin(); it != pending_.end();) {
      bool done = true;
      for (cudaEvent_t e : it->events) {
        cudaError_t q = cudaEventQuery(e);
        if (q == cudaErrorNotReady) {
          done = false;
          break;
        }
        if (q != cudaSuccess) cudaGetLastError();
      }
      if (!done) {
        ++it;
        continue;
      }
      for (cudaEvent_t e : it->events) cudaEventDestroy(e);
      free_.insert(it->block);
      it = pending_.erase(it);
    }
  }

  // Never throws (runs from free()): switches devices with the raw runtime calls.
  void release(Block* block) {
    int previous = -1;
    if (cudaGetDevice(&previous) == cudaSuccess && previous != device_) cudaSetDevice(device_);
    if (cudaFree(block->ptr) != cudaSuccess) cudaGetLastError();
    if (previous >= 0 && previous != device_) cudaSetDevice(previous);
    stats_.cuda_frees++;
    stats_.reserved -= block->size;
    delete block;
  }

  // Waits for all work, then gives every cached block back to the driver.
  void release_cached() {
    CUDA_CHECK(cudaDeviceSynchronize());
    for (Pending& p : pending_) {
      for (cudaEvent_t e : p.events) cudaEventDestroy(e);
      free_.insert(p.block);
    }
    pending_.clear();
    for (Block* b : free_) release(b);
    free_.clear();
  }

  void* malloc_with_retry(size_t size, size_t requested) {
    void* ptr = nullptr;
    cudaError_t err = cudaMalloc(&ptr, size);
    stats_.cuda_mallocs++;
    if (err == cudaErrorMemoryAllocation && !stats_.plain) {
      cudaGetLastError();
      stats_.oom_retries++;
      release_cached();
      err = cudaMalloc(&ptr, size);
      stats_.cuda_mallocs++;
    }
    if (err != cudaSuccess) {
      cudaGetLastError();
      size_t free_b = 0, total_b = 0;
      cudaMemGetInfo(&free_b, &total_b);
      throw Error(str("CUDA out of memory on cuda:", device_, " allocating ", mib(requested), " (", cudaGetErrorString(err),
                      "): latte holds ", mib(stats_.allocated), " in live tensors and ", mib(stats_.reserved),
                      " reserved; the device has ", mib(free_b), " free of ", mib(total_b),
                      ". Reduce the micro-batch size or sequence length, or enable activation recomputation"));
    }
    return ptr;
  }

  int device_;
  std::mutex mu_;
  std::unordered_map<void*, Block*> live_;
  std::set<Block*, BlockOrder> free_;
  std::deque<Pending> pending_;
  AllocatorStats stats_;
};

DeviceAllocator& allocator(int device) {
  // Never destroyed: at process exit the CUDA context may already be gone.
  static DeviceAllocator* allocators[kMaxDevices] = {};
  static std::mutex mu;
  check_device(device);
  std::lock_guard<std::mutex> lock(mu);
  if (!allocators[device]) allocators[device] = new DeviceAllocator(device);
  return *allocators[device];
}

}  // namespace

AllocatorStats allocator_stats(int device) { return allocator(resolve(device)).stats(); }
void reset_peak_stats(int device) { allocator(resolve(device)).reset_peak(); }
void empty_cache(int device) { allocator(resolve(device)).empty_cache(); }
void record_stream(void* ptr, cudaStream_t stream) {
  cudaPointerAttributes attr{};
  CUDA_CHECK(cudaPointerGetAttributes(&attr, ptr));
  allocator(attr.device).record_stream(ptr, stream);
}

// ---- pinned host buffers ---------------------------------------------------------------------------

PinnedBuffer::PinnedBuffer(size_t bytes) : bytes_(bytes) {
  CUDA_CHECK(cudaHostAlloc(&data_, bytes ? bytes : 1, cudaHostAllocDefault));
  CUDA_CHECK(cudaEventCreateWithFlags(&done_, cudaEventDisableTiming));
}
PinnedBuffer::~PinnedBuffer() {
  if (done_) {
    cudaEventSynchronize(done_);
    cudaEventDestroy(done_);
  }
  if (data_) cudaFreeHost(data_);
}
PinnedBuffer::PinnedBuffer(PinnedBuffer&& o) noexcept : data_(o.data_), bytes_(o.bytes_), done_(o.done_) {
  o.data_ = nullptr;
  o.bytes_ = 0;
  o.done_ = nullptr;
}
PinnedBuffer& PinnedBuffer::operator=(PinnedBuffer&& o) noexcept {
  if (this != &o) {
    this->~PinnedBuffer();
    new (this) PinnedBuffer(std::move(o));
  }
  return *this;
}
void PinnedBuffer::wait_idle() {
  if (done_) CUDA_CHECK(cudaEventSynchronize(done_));
}
void PinnedBuffer::upload(void* dst, const void* src, size_t bytes) {
  LATTE_CHECK(bytes <= bytes_, "PinnedBuffer::upload of ", bytes, " bytes into a buffer of ", bytes_);
  if (bytes == 0) return;
  wait_idle();
  std::memcpy(data_, src, bytes);
  cudaStream_t s = current_stream();
  CUDA_CHECK(cudaMemcpyAsync(dst, data_, bytes, cudaMemcpyHostToDevice, s));
  CUDA_CHECK(cudaEventRecord(done_, s));
}

}  // namespace cuda

// ---- core/device.h entry points -------------------------------------------------------------------

bool cuda_available() { return cuda::device_count_cached() > 0; }
int cuda_device_count() { return cuda::device_count_cached(); }

void* cuda_allocate(size_t bytes, int device) { return cuda::allocator(device).allocate(bytes); }

void cuda_free(void* p, int device) {
  if (!p) return;
  cuda::allocator(device).free(p);
}

void cuda_memset(void* p, int value, size_t bytes, int device) {
  if (!bytes) return;
  cuda::DeviceGuard guard(device);
  CUDA_CHECK(cudaMemsetAsync(p, value, bytes, cuda::current_stream(device)));
}

void cuda_synchronize() {
  if (cuda_available()) CUDA_CHECK(cudaDeviceSynchronize());
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev.is_cpu() && src_dev.is_cpu()) {
    std::memcpy(dst, src, bytes);
    return;
  }
  if (dst_dev.is_cuda() && src_dev.is_cpu()) {
    // From pageable memory the runtime stages the source before returning, so `src` may be freed.
    cuda::DeviceGuard guard(dst_dev.index);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyHostToDevice, cuda::current_stream(dst_dev.index)));
    return;
  }
  if (dst_dev.is_cpu()) {
    cuda::DeviceGuard guard(src_dev.index);
    cudaStream_t s = cuda::current_stream(src_dev.index);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToHost, s));
    CUDA_CHECK(cudaStreamSynchronize(s));
    return;
  }
  if (dst_dev.index == src_dev.index) {
    cuda::DeviceGuard guard(dst_dev.index);
    CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cuda::current_stream(dst_dev.index)));
    return;
  }
  // Between two GPUs (rare: tests, checkpoint moves): order after both streams, finish before returning.
  CUDA_CHECK(cudaStreamSynchronize(cuda::current_stream(dst_dev.index)));
  cudaStream_t s = cuda::current_stream(src_dev.index);
  cuda::DeviceGuard guard(src_dev.index);
  CUDA_CHECK(cudaMemcpyPeerAsync(dst, dst_dev.index, src, src_dev.index, bytes, s));
  CUDA_CHECK(cudaStreamSynchronize(s));
}

}  // namespace latte
