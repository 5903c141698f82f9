// Helpers for the CUDA suites: every CUDA kernel is checked against the CPU reference kernel run in f64
// on the same (already bf16-rounded when the GPU runs bf16) inputs, by ||out - ref|| / ||ref|| below
// fp32 1e-5 / bf16 1e-2 (DESIGN.md, "How we test"). Inputs are fresh Philox normals (never zeros) and
// GPU outputs are poisoned with NaN first, so an unwritten element fails the comparison.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "core/device.h"
#include "core/tensor.h"

#define LATTE_REQUIRE_CUDA() \
  if (!::latte::cuda_available()) GTEST_SKIP() << "no CUDA device"

namespace latte::cudatest {

inline Device gpu() { return Device::cuda(0); }

inline double tol(DType t) { return t == DType::BF16 ? 1e-2 : 1e-5; }

// Random normal tensor on the GPU (seed picks the stream).
inline Tensor rnd(const Shape& s, uint64_t seed, DType t, double stddev = 1.0) {
  return Tensor::randn(s, seed, 0, stddev, t, gpu());
}

// A GPU tensor of NaN (for float dtypes) to be overwritten by the kernel under test.
inline Tensor poisoned(const Shape& s, DType t) {
  return Tensor::full(s, std::numeric_limits<double>::quiet_NaN(), t, gpu());
}

// The same values on the CPU in f64 (the reference's input).
inline Tensor ref(const Tensor& t) { return t.detach().to(Device::cpu()).to(DType::F64); }

// ||out - expect|| / ||expect||; any NaN in out gives +inf.
inline double rel_err(const Tensor& out, const Tensor& expect) {
  std::vector<double> a = out.to_vector(), b = expect.to_vector();
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    if (std::isnan(a[i])) return std::numeric_limits<double>::infinity();
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  if (den == 0) return std::sqrt(num);
  return std::sqrt(num / den);
}

// Bitwise equality of two tensors' contents (determinism checks).
inline bool same_bits(const Tensor& a, const Tensor& b) {
  Tensor x = a.detach().to(Device::cpu()).contiguous(), y = b.detach().to(Device::cpu()).contiguous();
  return x.nbytes() == y.nbytes() && std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

// Passes when rel_err(out, expect) is below the dtype's bound; the failure message carries the error.
inline ::testing::AssertionResult close(const Tensor& out, const Tensor& expect, DType t) {
  const double e = rel_err(out, expect);
  if (e < tol(t)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "rel. error " << e << " >= " << tol(t) << " (" << dtype_name(t) << ")";
}

}  // namespace latte::cudatest

// EXPECT_CLOSE(out, expect, dtype) << "context";
#define EXPECT_CLOSE(out, expect, dtype) EXPECT_TRUE(::latte::cudatest::close((out), (expect), (dtype)))
