// CUDA fill / copy (strided, casting) and add / mul / scale / axpy against the CPU reference kernels.
#include "tests/cuda/cuda_test_util.h"

#ifdef LATTE_WITH_CUDA
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"

using namespace latte;
using namespace latte::cudatest;

namespace {

const DType kFloat[] = {DType::F32, DType::BF16};

TEST(CudaFill, ContiguousAndStridedAllDtypes) {
  LATTE_REQUIRE_CUDA();
  for (DType t : {DType::F32, DType::BF16, DType::F16, DType::F64, DType::I32, DType::I64, DType::U16, DType::U8}) {
    for (int64_t n : {1, 3, 17, 1000, 4099}) {
      for (int64_t off : {0, 1}) {  // a view that starts off the 16-byte grid
        Tensor base = Tensor::zeros({n + 1}, t, gpu());
        Tensor v = base.narrow(0, off, n);
        cuda::fill(v, 7.0);
        std::vector<double> got = base.to_vector();
        for (int64_t i = 0; i <= n; ++i)
          ASSERT_EQ(got[static_cast<size_t>(i)], (i >= off && i < off + n) ? 7.0 : 0.0)
              << dtype_name(t) << " n=" << n << " off=" << off << " i=" << i;
      }
    }
    Tensor m = Tensor::zeros({5, 9}, t, gpu());
    cuda::fill(m.slice(1, 1, 9, 3), -3.0);  // columns 1, 4, 7
    std::vector<double> got = m.to_vector();
    for (int64_t r = 0; r < 5; ++r)
      for (int64_t c = 0; c < 9; ++c) {
        const double want = (c % 3 == 1) ? (t == DType::U16 || t == DType::U8 ? -1 : -3.0) : 0.0;
        if (t == DType::U16 || t == DType::U8) continue;  // negative into unsigned: wraps, not checked
        ASSERT_EQ(got[static_cast<size_t>(r * 9 + c)], want) << dtype_name(t);
      }
  }
  Tensor z = rnd({1001}, 3, DType::BF16);
  cuda::fill(z, 0.0);
  for (double v : z.to_vector()) ASSERT_EQ(v, 0.0);
}

TEST(CudaCopy, StridedSameDtype) {
  LATTE_REQUIRE_CUDA();
  for (DType t : kFloat) {
    // (B, T, H, D) permuted to (B, H, T, D): inner dim contiguous (16-byte path) and an odd D (element path)
    for (int64_t D : {64, 24, 7}) {
      Tensor x = rnd({3, 5, 4, D}, 100 + static_cast<uint64_t>(D), t);
      Tensor src = x.permute({0, 2, 1, 3});
      Tensor out = poisoned(src.shape(), t);
      cuda::copy(out, src);
      Tensor expect = Tensor::empty(src.shape(), DType::F64);
      cpu::copy(expect, ref(x).permute({0, 2, 1, 3}));
      EXPECT_EQ(rel_err(out, expect), 0.0) << dtype_name(t) << " D=" << D;
    }
    // a transpose (no contiguous dim) and a broadcast source
    Tensor x = rnd({37, 19}, 7, t);
    Tensor out = poisoned({19, 37}, t);
    cuda::copy(out, x.transpose(0, 1));
    EXPECT_EQ(rel_err(out, ref(x).transpose(0, 1).contiguous()), 0.0);
    Tensor row = rnd({1, 19}, 8, t);
    Tensor out2 = poisoned({6, 19}, t);
    cuda::copy(out2, row.expand({6, 19}));
    EXPECT_EQ(rel_err(out2, ref(row).expand({6, 19}).contiguous()), 0.0);
    // strided destination
    Tensor dst = poisoned({8, 10}, t);
    cuda::fill(dst, 1.0);
    Tensor y = rnd({8, 5}, 9, t);
    cuda::copy(dst.slice(1, 0, 10, 2), y);
    std::vector<double> got = dst.to_vector(), yv = y.to_vector();
    for (int64_t r = 0; r < 8; ++r)
      for (int64_t c = 0; c < 10; ++c)
        ASSERT_EQ(got[static_cast<size_t>(r * 10 + c)], c % 2 ? 1.0 : yv[static_cast<size_t>(r * 5 + c / 2)]);
  }
}

TEST(CudaCopy, Casts) {
  LATTE_REQUIRE_CUDA();
  const DType all[] = {DType::F32, DType::BF16, DType::F16, DType::F64, DType::I32, DType::I64};
  for (DType from : all)
    for (DType to : all) {
      // integers-valued where an integer type is involved, so the CPU and the GPU round the same values
      const bool ints = from == DType::I32 || from == DType::I64 || to == DType::I32 || to == DType::I64;
      Tensor host = Tensor::randn({13, 29}, 21, 0, ints ? 1.0 : 1.0, DType::F64);
      if (ints) {
        std::vector<double> v = host.to_vector();
        for (double& e : v) e = std::round(e * 100.0) + 0.25;  // x.25: rounding is unambiguous
        host = Tensor::from_vector(v, {13, 29}, DType::F64);
      }
      Tensor src = host.to(from).to(gpu());
      for (bool transposed : {false, true}) {
        Tensor s = transposed ? src.transpose(0, 1) : src;
        Tensor out = Tensor::zeros(s.shape(), to, gpu());
        cuda::copy(out, s);
        Tensor cs = src.to(Device::cpu());
        Tensor expect = Tensor::zeros(s.shape(), to);
        cpu::copy(expect, transposed ? cs.transpose(0, 1) : cs);
        EXPECT_TRUE(same_bits(out, expect)) << dtype_name(from) << " -> " << dtype_name(to) << " transposed " << transposed;
      }
    }
  // contiguous bf16 <-> f32 at odd sizes and offsets (vector and scalar paths)
  for (int64_t n : {1, 9, 4097}) {
    Tensor big = rnd({n + 1}, 5, DType::F32);
    Tensor x = big.narrow(0, 1, n);
    Tensor b = Tensor::empty({n}, DType::BF16, gpu());
    cuda::copy(b, x);
    Tensor expect = Tensor::empty({n}, DType::BF16);
    cpu::copy(expect, x.to(Device::cpu()));
    EXPECT_TRUE(same_bits(b, expect)) << n;
  }
}

enum class Op { Add, Mul, Scale, Axpy };

void check_op(Op op, DType t, int64_t n, int64_t offset) {
  auto make = [&](uint64_t seed) { return rnd({n + offset}, seed, t).narrow(0, offset, n); };
  Tensor a = make(1 + static_cast<uint64_t>(n)), b = make(2 + static_cast<uint64_t>(n));
  Tensor out = poisoned({n + offset}, t).narrow(0, offset, n);
  Tensor expect = Tensor::empty({n}, DType::F64);
  switch (op) {
    case Op::Add:
      cuda::add(out, a, b, 0.75, -1.5);
      cpu::add(expect, ref(a), ref(b), 0.75, -1.5);
      break;
    case Op::Mul:
      cuda::mul(out, a, b);
      cpu::mul(expect, ref(a), ref(b));
      break;
    case Op::Scale:
      cuda::scale(out, a, -2.5);
      cpu::scale(expect, ref(a), -2.5);
      break;
    case Op::Axpy:
      out = a;
      expect = ref(a);
      cuda::axpy(out, b, 0.3);
      cpu::axpy(expect, ref(b), 0.3);
      break;
  }
  EXPECT_CLOSE(out, expect, t);
}

TEST(CudaElementwise, MatchesCpu) {
  LATTE_REQUIRE_CUDA();
  for (DType t : kFloat)
    for (int64_t n : {1, 7, 8, 1000, 65537})
      for (int64_t off : {0, 3})
        for (Op op : {Op::Add, Op::Mul, Op::Scale, Op::Axpy}) {
          SCOPED_TRACE(testing::Message() << dtype_name(t) << " n=" << n << " off=" << off << " op=" << int(op));
          check_op(op, t, n, off);
        }
}

TEST(CudaElementwise, MixedDtypeAxpyAndInPlace) {
  LATTE_REQUIRE_CUDA();
  // f32 gradient accumulator += bf16 gradient
  Tensor y = rnd({3001}, 40, DType::F32), x = rnd({3001}, 41, DType::BF16);
  Tensor expect = ref(y);
  cpu::axpy(expect, ref(x), -0.5);
  cuda::axpy(y, x, -0.5);
  EXPECT_CLOSE(y, expect, DType::F32);
  // out aliases an input
  Tensor a = rnd({2049}, 42, DType::BF16), b = rnd({2049}, 43, DType::BF16);
  Tensor e2 = Tensor::empty({2049}, DType::F64);
  cpu::add(e2, ref(a), ref(b), 1.0, 2.0);
  cuda::add(a, a, b, 1.0, 2.0);
  EXPECT_CLOSE(a, e2, DType::BF16);
}

}  // namespace
#endif  // LATTE_WITH_CUDA
