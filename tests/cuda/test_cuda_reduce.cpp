// CUDA sum / sum_squares / sum_to against the CPU reference (f64), and run-to-run determinism.
#include "tests/cuda/cuda_test_util.h"

#ifdef LATTE_WITH_CUDA
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"

using namespace latte;
using namespace latte::cudatest;

namespace {

TEST(CudaReduce, SumAndSumSquares) {
  LATTE_REQUIRE_CUDA();
  for (DType t : {DType::F32, DType::BF16})
    for (int64_t n : {1, 5, 1000, 123457, 3000001}) {
      SCOPED_TRACE(testing::Message() << dtype_name(t) << " n=" << n);
      // mean 0.5 so the sum is not a cancellation-dominated small number
      Tensor x = Tensor::rand({n}, 60 + static_cast<uint64_t>(n), 0, 0.0, 1.0, t, gpu());
      for (bool squares : {false, true}) {
        Tensor out = poisoned({}, DType::F32);
        Tensor expect = Tensor::empty({}, DType::F64);
        if (squares) {
          cuda::sum_squares(out, x);
          cpu::sum_squares(expect, ref(x));
        } else {
          cuda::sum(out, x);
          cpu::sum(expect, ref(x));
        }
        EXPECT_CLOSE(out, expect, DType::F32);  // inputs are exact in both: fp32 accumulation bound
        Tensor again = poisoned({}, DType::F32);
        squares ? cuda::sum_squares(again, x) : cuda::sum(again, x);
        EXPECT_TRUE(same_bits(out, again));
      }
    }
}

TEST(CudaReduce, SumTo) {
  LATTE_REQUIRE_CUDA();
  struct Case {
    Shape in, out;
  };
  const Case cases[] = {
      {{4096, 96}, {1, 96}},           // bias gradient: column sums, many rows
      {{3, 17, 33}, {1, 1, 33}},       // (B, T, D) -> (1, 1, D)
      {{3, 17, 33}, {3, 1, 33}},       // middle dim
      {{7, 301}, {7, 1}},              // row sums (innermost reduced)
      {{5, 6, 7}, {5, 6, 1}},
      {{2, 3, 4, 5}, {1, 3, 1, 5}},    // interleaved kept/reduced dims
      {{9, 1, 11}, {1, 1, 11}},
      {{13, 7}, {13, 7}},              // nothing reduced
      {{13, 7}, {1, 1}},               // everything
      {{12, 65536}, {1, 65536}},       // few rows, many columns (the shared rope key's gradient): one partial row
      {{40, 3000}, {1, 3000}},         // 5 partial rows: column_sum with 5 threads per column
  };
  for (DType t : {DType::F32, DType::BF16}) {
    // Strided inputs: slices of a wider last dim (the rope part of a key gradient), reduced over a middle dim
    // (the heads) -- the middle-dim kernel, vectorised (offset and widths multiples of 8) and not.
    struct Slice {
      Shape full;
      int64_t start, width;
      Shape out;
    };
    const Slice slices[] = {{{16, 64, 12, 96}, 64, 32, {16, 64, 1, 32}},
                            {{8, 300, 5, 13}, 3, 7, {8, 300, 1, 7}},
                            {{600, 12, 40}, 8, 16, {1, 1, 16}}};
    for (const Slice& c : slices) {
      SCOPED_TRACE(testing::Message() << dtype_name(t) << " slice of " << c.full.str() << " -> " << c.out.str());
      Tensor x = rnd(c.full, 90 + static_cast<uint64_t>(c.start), t).narrow(c.full.ndim() - 1, c.start, c.width);
      Tensor out = poisoned(c.out, t);
      cuda::sum_to(out, x);
      Tensor expect = Tensor::empty(c.out, DType::F64);
      cpu::sum_to(expect, ref(x));
      EXPECT_CLOSE(out, expect, t);
    }
    for (const Case& c : cases) {
      SCOPED_TRACE(testing::Message() << dtype_name(t) << " " << c.in.str() << " -> " << c.out.str());
      Tensor x = rnd(c.in, 70 + static_cast<uint64_t>(c.in.numel()), t);
      Tensor out = poisoned(c.out, t);
      cuda::sum_to(out, x);
      Tensor expect = Tensor::empty(c.out, DType::F64);
      cpu::sum_to(expect, ref(x));
      EXPECT_CLOSE(out, expect, t);
      Tensor again = poisoned(c.out, t);
      cuda::sum_to(again, x);
      EXPECT_TRUE(same_bits(out, again));
    }
  }
}

}  // namespace
#endif  // LATTE_WITH_CUDA
