// CUDA matmul (cuBLASLt) against the CPU reference: transposes, alpha/beta, bf16 with bf16 or f32 output,
// true f32 (no TF32: 1e-5), 3-D batched, 2-D operands broadcast over the batch, strided rows, odd sizes;
// the bias epilogue; the plan cache (one plan per shape); and the first call's autotuning, which runs the GEMM
// several times and must leave exactly one result (in-place accumulations timed into scratch).
#include "tests/cuda/cuda_test_util.h"

#include <cstdlib>
#include <string>

#ifdef LATTE_WITH_CUDA
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/matmul.h"

using namespace latte;
using namespace latte::cudatest;

namespace {

// An (r, c) operand, optionally a column slice of a wider matrix (row stride > c), optionally batched.
Tensor operand(int64_t batch, int64_t r, int64_t c, bool strided, DType t, uint64_t seed) {
  const int64_t cols = strided ? c + 5 : c;
  Tensor m = batch > 0 ? rnd({batch, r, cols}, seed, t) : rnd({r, cols}, seed, t);
  return strided ? m.narrow(-1, 2, c) : m;
}

// The CPU reference in f64 for 2-D or 3-D operands (a 2-D operand broadcast over the batch).
Tensor cpu_matmul(const Tensor& out0, const Tensor& a, const Tensor& b, bool ta, bool tb, double alpha, double beta) {
  Tensor out = ref(out0);
  Tensor ra = ref(a), rb = ref(b);
  cpu::matmul(out, ra, rb, ta, tb, alpha, beta);
  return out;
}

TEST(CudaMatmul, MatchesCpu) {
  LATTE_REQUIRE_CUDA();
  struct Types {
    DType in, out;
  };
  const Types types[] = {{DType::F32, DType::F32}, {DType::BF16, DType::BF16}, {DType::BF16, DType::F32}};
  const int64_t sizes[][3] = {{1, 1, 1}, {7, 13, 5}, {64, 48, 80}, {129, 67, 255}};
  uint64_t seed = 1000;
  for (const Types& ty : types)
    for (const auto& s : sizes)
      for (int tr = 0; tr < 4; ++tr)
        for (bool strided : {false, true})
          for (int64_t batch : {0, 3}) {
            const int64_t M = s[0], N = s[1], K = s[2];
            const bool ta = tr & 1, tb = tr & 2;
            SCOPED_TRACE(testing::Message() << dtype_name(ty.in) << "->" << dtype_name(ty.out) << " M=" << M << " N="
                                            << N << " K=" << K << " ta=" << ta << " tb=" << tb << " strided="
                                            << strided << " batch=" << batch);
            Tensor a = operand(batch, ta ? K : M, ta ? M : K, strided, ty.in, ++seed);
            // b broadcast (2-D) when batched and K is odd, to cover both
            Tensor b = operand(batch > 0 && K % 2 ? 0 : batch, tb ? N : K, tb ? K : N, strided, ty.in, ++seed);
            const Shape oshape = batch > 0 ? Shape{batch, M, N} : Shape{M, N};
            // beta = 0 on a poisoned output (must not be read), then beta != 0 on random data
            Tensor out = poisoned(oshape, ty.out);
            cuda::matmul(out, a, b, ta, tb, 1.0, 0.0);
            EXPECT_CLOSE(out, cpu_matmul(Tensor::zeros(oshape, ty.out, gpu()), a, b, ta, tb, 1.0, 0.0), ty.out);
            Tensor c = rnd(oshape, ++seed, ty.out);
            Tensor expect = cpu_matmul(c, a, b, ta, tb, -0.5, 0.75);
            cuda::matmul(c, a, b, ta, tb, -0.5, 0.75);
            EXPECT_CLOSE(c, expect, ty.out);
          }
}

TEST(CudaMatmul, ModelShapesAndPlanCache) {
  LATTE_REQUIRE_CUDA();
  // a (tokens, d) x W (ffn, d)^T, as a Linear layer does
  Tensor x = rnd({256, 512}, 1, DType::BF16), w = rnd({344, 512}, 2, DType::BF16, 0.05);
  Tensor y = poisoned({256, 344}, DType::BF16);
  cuda::matmul(y, x, w, false, true, 1.0, 0.0);
  const size_t plans = cuda::matmul_plan_count();
  for (int i = 0; i < 3; ++i) cuda::matmul(y, x, w, false, true, 1.0, 0.0);
  EXPECT_EQ(cuda::matmul_plan_count(), plans);
  EXPECT_CLOSE(y, cpu_matmul(Tensor::zeros({256, 344}, DType::BF16, gpu()), x, w, false, true, 1.0, 0.0), DType::BF16);
  // weight gradient: dW (344, 512) += dy^T x
  Tensor dy = rnd({256, 344}, 3, DType::BF16), dw = rnd({344, 512}, 4, DType::F32);
  Tensor expect = cpu_matmul(dw, dy, x, true, false, 1.0, 1.0);
  cuda::matmul(dw, dy, x, true, false, 1.0, 1.0);
  EXPECT_CLOSE(dw, expect, DType::BF16);
}

TEST(CudaMatmul, BiasEpilogue) {
  LATTE_REQUIRE_CUDA();
  for (DType t : {DType::F32, DType::BF16})
    for (bool tb : {false, true}) {
      const int64_t M = 77, N = 40, K = 96;
      Tensor a = rnd({M, K}, 10, t), b = tb ? rnd({N, K}, 11, t) : rnd({K, N}, 11, t), bias = rnd({N}, 12, t);
      Tensor out = poisoned({M, N}, t);
      cuda::matmul_bias(out, a, b, bias, false, tb);
      Tensor expect = cpu_matmul(Tensor::zeros({M, N}, t, gpu()), a, b, false, tb, 1.0, 0.0);
      Tensor rb = ref(bias);
      for (int64_t m = 0; m < M; ++m) cpu::axpy(expect.select(0, m), rb, 1.0);
      EXPECT_CLOSE(out, expect, t);
    }
}

// out = a b^T + addend (the residual stream's add in the GEMM epilogue): a separate addend (C != D), the addend
// as out itself, 3-D batched; the addend is left as it was.
TEST(CudaMatmul, AddendEpilogue) {
  LATTE_REQUIRE_CUDA();
  for (DType t : {DType::F32, DType::BF16})
    for (int64_t batch : {0, 3}) {
      const int64_t M = 130, N = 72, K = 48;
      Tensor a = operand(batch, M, K, false, t, 20), b = rnd({N, K}, 21, t);
      Tensor addend = batch ? rnd({batch, M, N}, 22, t) : rnd({M, N}, 22, t);
      Tensor before = addend.clone();
      Tensor out = poisoned(addend.shape(), t);
      cuda::matmul_add(out, a, b, addend, false, true);
      Tensor expect = cpu_matmul(addend, a, b, false, true, 1.0, 1.0);
      EXPECT_CLOSE(out, expect, t);
      EXPECT_TRUE(same_bits(addend, before));
      cuda::matmul_add(addend, a, b, addend, false, true);  // in place
      EXPECT_CLOSE(addend, expect, t);
    }
}

// A shape's first call times several algorithms on its operands. In-place accumulations (beta != 0 with C = D,
// and matmul_add with the addend as out) must still add exactly once, into strided and batched outputs too;
// the shapes are new to this process, so each call here is a first call.
TEST(CudaMatmul, FirstCallTuningAccumulatesOnce) {
  LATTE_REQUIRE_CUDA();
  const cuda::MatmulTuningStats before = cuda::matmul_tuning_stats();
  for (int64_t batch : {0, 2})
    for (bool strided : {false, true}) {
      SCOPED_TRACE(testing::Message() << "batch=" << batch << " strided=" << strided);
      const int64_t M = 1000 + 8 * batch + (strided ? 16 : 0), N = 776, K = 1032;
      Tensor a = operand(batch, M, K, false, DType::BF16, 60), b = rnd({N, K}, 61, DType::BF16, 0.05);
      // out: a column slice of a wider matrix when strided (row stride N + 5)
      Tensor out = operand(batch, M, N, strided, DType::F32, 62);
      Tensor expect = cpu_matmul(out, a, b, false, true, 1.0, 1.0);
      cuda::matmul(out, a, b, false, true, 1.0, 1.0);
      EXPECT_CLOSE(out, expect, DType::BF16);
      Tensor acc = operand(batch, M, N, false, DType::BF16, 63);
      Tensor expect_add = cpu_matmul(acc, a, b, false, true, 1.0, 1.0);
      cuda::matmul_add(acc, a, b, acc, false, true);
      EXPECT_CLOSE(acc, expect_add, DType::BF16);
    }
  // Shapes this large have several candidate algorithms: with autotuning on (the default), they were timed.
  const char* tune = std::getenv("LATTE_GEMM_AUTOTUNE");
  const char* det = std::getenv("LATTE_DETERMINISTIC");
  if (!(tune && std::string(tune) == "0") && !(det && std::string(det) == "1")) {
    EXPECT_GT(cuda::matmul_tuning_stats().plans_timed, before.plans_timed);
  }
}

}  // namespace
#endif  // LATTE_WITH_CUDA
