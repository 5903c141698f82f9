// The CUDA runtime layer (core/cuda_runtime.cu): checked calls, copies between devices, memset, streams,
// events, pinned uploads and the caching allocator (reuse, statistics, OOM handling, plain mode).
#include "tests/cuda/cuda_test_util.h"

#ifdef LATTE_WITH_CUDA
#include <cstdlib>
#include <string>

#include "core/cuda_context.h"

using namespace latte;
using namespace latte::cudatest;

namespace {

bool plain() { return cuda::allocator_stats().plain; }

TEST(CudaRuntime, CheckMacroThrowsWithLocation) {
  LATTE_REQUIRE_CUDA();
  try {
    CUDA_CHECK(cudaErrorInvalidValue);
    FAIL() << "no throw";
  } catch (const Error& e) {
    std::string msg = e.what();
    EXPECT_NE(msg.find("test_cuda_runtime.cpp:"), std::string::npos) << msg;
    EXPECT_NE(msg.find("cudaErrorInvalidValue"), std::string::npos) << msg;
  }
  try {
    CUBLAS_CHECK(7);  // CUBLAS_STATUS_INVALID_VALUE
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("cuBLAS error"), std::string::npos) << e.what();
  }
}

TEST(CudaRuntime, DevicesAndStreams) {
  LATTE_REQUIRE_CUDA();
  EXPECT_GE(cuda_device_count(), 1);
  EXPECT_GT(cuda::sm_count(), 0);
  cudaStream_t s0 = cuda::current_stream();
  EXPECT_EQ(s0, cuda::default_stream());
  EXPECT_NE(s0, nullptr);
  cudaStream_t other;
  ASSERT_EQ(cudaStreamCreate(&other), cudaSuccess);
  {
    cuda::StreamGuard guard(other);
    EXPECT_EQ(cuda::current_stream(), other);
  }
  EXPECT_EQ(cuda::current_stream(), s0);
  cudaStreamDestroy(other);
  EXPECT_THROW(cuda::set_device(cuda_device_count() + 3), Error);
}

TEST(CudaRuntime, CopiesRoundTrip) {
  LATTE_REQUIRE_CUDA();
  for (int64_t n : {1, 7, 1000, 1 << 20}) {
    Tensor host = Tensor::randn({n}, 11 + static_cast<uint64_t>(n), 0, 1.0, DType::F32);
    Tensor dev = Tensor::empty({n}, DType::F32, gpu());
    copy_bytes(dev.data_ptr(), gpu(), host.data_ptr(), Device::cpu(), host.nbytes());
    Tensor dev2 = Tensor::empty({n}, DType::F32, gpu());
    copy_bytes(dev2.data_ptr(), gpu(), dev.data_ptr(), gpu(), host.nbytes());
    Tensor back = Tensor::empty({n}, DType::F32);
    copy_bytes(back.data_ptr(), Device::cpu(), dev2.data_ptr(), gpu(), host.nbytes());
    EXPECT_EQ(std::memcmp(back.data_ptr(), host.data_ptr(), host.nbytes()), 0) << n;
  }
  Tensor t = Tensor::randn({333}, 5, 0, 1.0, DType::F32, gpu());
  cuda_memset(t.data_ptr(), 0, t.nbytes(), 0);
  for (double v : t.to_vector()) ASSERT_EQ(v, 0.0);
}

TEST(CudaRuntime, PinnedUploadAndEvents) {
  LATTE_REQUIRE_CUDA();
  const int64_t n = 1 << 16;
  cuda::PinnedBuffer buf(n * sizeof(int32_t));
  Tensor dev = Tensor::empty({n}, DType::I32, gpu());
  std::vector<int32_t> host(static_cast<size_t>(n));
  for (int round = 0; round < 3; ++round) {
    for (int64_t i = 0; i < n; ++i) host[static_cast<size_t>(i)] = static_cast<int32_t>(i * 3 + round);
    buf.upload(dev.data_ptr(), host.data(), host.size() * sizeof(int32_t));
    std::vector<double> got = dev.to_vector();
    for (int64_t i = 0; i < n; i += 997) ASSERT_EQ(got[static_cast<size_t>(i)], i * 3 + round);
  }
  cuda::Event a, b;
  a.record();
  Tensor x = Tensor::randn({1 << 20}, 3, 0, 1.0, DType::F32, gpu());
  b.record();
  b.synchronize();
  EXPECT_TRUE(b.query());
  EXPECT_GE(b.elapsed_ms(a), 0.f);
}

TEST(CudaAllocator, ReusesFreedBlocksWithoutCudaMalloc) {
  LATTE_REQUIRE_CUDA();
  if (plain()) GTEST_SKIP() << "LATTE_CUDA_ALLOC=plain";
  void* first;
  {
    Tensor t = Tensor::empty({1000, 1000}, DType::F32, gpu());
    first = t.data_ptr();
  }
  cuda::AllocatorStats before = cuda::allocator_stats();
  // A steady state "step": the same sizes allocated and freed again make no cudaMalloc call.
  for (int step = 0; step < 5; ++step) {
    Tensor t = Tensor::empty({1000, 1000}, DType::F32, gpu());
    EXPECT_EQ(t.data_ptr(), first);
    Tensor u = Tensor::empty({500, 1000}, DType::F32, gpu());  // another size class
    EXPECT_NE(u.data_ptr(), first);
  }
  {
    Tensor w = Tensor::empty({999, 1001}, DType::F32, gpu());  // a different request in the same class
    EXPECT_EQ(w.data_ptr(), first);
  }
  cuda::AllocatorStats after = cuda::allocator_stats();
  EXPECT_LE(after.cuda_mallocs - before.cuda_mallocs, 1u);  // at most the one for `u` on the first step
  EXPECT_GE(after.cache_hits - before.cache_hits, 10u);
  EXPECT_EQ(after.allocated, before.allocated);
}

TEST(CudaAllocator, StatisticsTrackLiveAndPeak) {
  LATTE_REQUIRE_CUDA();
  cuda::empty_cache();  // else a cached block up to 5/4 of the request may serve it
  cuda::reset_peak_stats();
  cuda::AllocatorStats s0 = cuda::allocator_stats();
  size_t block;
  {
    Tensor t = Tensor::empty({3, 1 << 20}, DType::F32, gpu());  // 12 MiB
    cuda::AllocatorStats s1 = cuda::allocator_stats();
    block = s1.allocated - s0.allocated;
    EXPECT_GE(block, size_t(12) << 20);
    EXPECT_LE(block, (size_t(12) << 20) * 5 / 4);
    EXPECT_EQ(s1.requested - s0.requested, size_t(12) << 20);
    EXPECT_GE(s1.reserved, s1.allocated);
    EXPECT_GE(s1.peak_allocated, s1.allocated);
  }
  cuda::AllocatorStats s2 = cuda::allocator_stats();
  EXPECT_EQ(s2.allocated, s0.allocated);
  EXPECT_GE(s2.peak_allocated, s0.allocated + block);
  if (!plain()) {
    EXPECT_GE(s2.reserved, s0.allocated + block);  // cached, not returned
    cuda::empty_cache();
    cuda::AllocatorStats s3 = cuda::allocator_stats();
    EXPECT_EQ(s3.reserved, s3.allocated);
    CudaMemoryStats m = cuda_memory_stats(0);
    EXPECT_EQ(m.allocated, s3.allocated);
  }
}

TEST(CudaAllocator, StreamsDoNotShareCachedBlocks) {
  LATTE_REQUIRE_CUDA();
  if (plain()) GTEST_SKIP() << "LATTE_CUDA_ALLOC=plain";
  cudaStream_t other;
  ASSERT_EQ(cudaStreamCreate(&other), cudaSuccess);
  void* p;
  {
    Tensor t = Tensor::empty({4096}, DType::F32, gpu());
    p = t.data_ptr();
  }
  {
    cuda::StreamGuard guard(other);
    Tensor u = Tensor::empty({4096}, DType::F32, gpu());
    EXPECT_NE(u.data_ptr(), p);  // the block cached for the default stream is not handed to another one
    cuda::record_stream(u.data_ptr(), cuda::default_stream());
  }
  Tensor again = Tensor::empty({4096}, DType::F32, gpu());
  EXPECT_EQ(again.data_ptr(), p);
  cudaStreamSynchronize(other);
  cudaStreamDestroy(other);
}

TEST(CudaAllocator, OutOfMemoryIsAClearErrorAndRecovers) {
  LATTE_REQUIRE_CUDA();
  try {
    Tensor huge = Tensor::empty({int64_t(1) << 50}, DType::U8, gpu());  // 1 PiB
    FAIL() << "no throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("out of memory"), std::string::npos) << e.what();
  }
  Tensor ok = Tensor::randn({100}, 1, 0, 1.0, DType::F32, gpu());
  EXPECT_EQ(ok.to_vector().size(), 100u);
}

TEST(CudaAllocator, PlainModeCallsCudaMallocEveryTime) {
  LATTE_REQUIRE_CUDA();
  if (!plain()) GTEST_SKIP() << "run with LATTE_CUDA_ALLOC=plain (scripts/gpu_check.sh does)";
  cuda::AllocatorStats before = cuda::allocator_stats();
  for (int i = 0; i < 4; ++i) Tensor t = Tensor::empty({1 << 16}, DType::F32, gpu());
  cuda::AllocatorStats after = cuda::allocator_stats();
  EXPECT_EQ(after.cuda_mallocs - before.cuda_mallocs, 4u);
  EXPECT_EQ(after.cuda_frees - before.cuda_frees, 4u);
  EXPECT_EQ(after.cache_hits, before.cache_hits);
  EXPECT_EQ(after.reserved, after.allocated);
}

}  // namespace
#endif  // LATTE_WITH_CUDA
