// Tensor core: shapes, strides, views, contiguous copies, dtype conversions, Philox determinism.
#include <gtest/gtest.h>

#include <cmath>

#include "core/parallel.h"
#include "core/philox.h"
#include "core/tensor.h"

using namespace latte;

namespace {
Tensor iota(const Shape& s, DType t = DType::F32) {
  std::vector<double> v(static_cast<size_t>(s.numel()));
  for (size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i);
  return Tensor::from_vector(v, s, t);
}
}  // namespace

TEST(Tensor, ShapeStridesAndContiguity) {
  Tensor t = Tensor::zeros({2, 3, 5});
  EXPECT_EQ(t.dim(), 3);
  EXPECT_EQ(t.numel(), 30);
  EXPECT_EQ(t.stride(0), 15);
  EXPECT_EQ(t.stride(1), 5);
  EXPECT_EQ(t.stride(-1), 1);
  EXPECT_TRUE(t.is_contiguous());
  EXPECT_FALSE(t.transpose(0, 2).is_contiguous());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data_ptr()) % kCpuAlignment, 0u);
  EXPECT_THROW(Tensor::zeros({1, 2, 3, 4, 5, 6}), Error);
}

TEST(Tensor, TransposeAndPermuteIndexCorrectly) {
  Tensor t = iota({2, 3, 4});
  Tensor p = t.permute({2, 0, 1});  // (4, 2, 3)
  ASSERT_EQ(p.shape(), Shape({4, 2, 3}));
  for (int64_t a = 0; a < 2; ++a)
    for (int64_t b = 0; b < 3; ++b)
      for (int64_t c = 0; c < 4; ++c) EXPECT_EQ(p.at({c, a, b}), t.at({a, b, c}));
  Tensor c = p.contiguous();
  EXPECT_TRUE(c.is_contiguous());
  EXPECT_EQ(c.at({3, 1, 2}), t.at({1, 2, 3}));
  EXPECT_EQ(t.transpose(0, 1).at({2, 1, 3}), t.at({1, 2, 3}));
}

TEST(Tensor, NarrowSliceSelectShareStorage) {
  Tensor t = iota({4, 6});
  Tensor n = t.narrow(1, 2, 3);  // columns 2..4
  EXPECT_EQ(n.shape(), Shape({4, 3}));
  EXPECT_EQ(n.at({1, 0}), 8.0);
  Tensor s = t.slice(0, 1, 4, 2);  // rows 1 and 3
  EXPECT_EQ(s.shape(), Shape({2, 6}));
  EXPECT_EQ(s.at({1, 5}), 23.0);
  Tensor r = t.select(1, 4);
  EXPECT_EQ(r.shape(), Shape({4}));
  EXPECT_EQ(r.at({2}), 16.0);
  n.fill_(-1);  // writes through the view
  EXPECT_EQ(t.at({0, 2}), -1.0);
  EXPECT_EQ(t.at({0, 1}), 1.0);
  EXPECT_THROW(t.narrow(1, 4, 3), Error);
}

TEST(Tensor, ReshapeViewsWhenPossibleAndCopiesOtherwise) {
  Tensor t = iota({2, 3, 4});
  Tensor v = t.reshape({6, -1});
  EXPECT_EQ(v.shape(), Shape({6, 4}));
  EXPECT_EQ(v.storage().get(), t.storage().get());
  Tensor tt = t.transpose(1, 2);  // (2, 4, 3) non-contiguous
  EXPECT_THROW(tt.view({8, 3}), Error);
  Tensor r = tt.reshape({8, 3});
  EXPECT_NE(r.storage().get(), t.storage().get());
  EXPECT_EQ(r.at({1, 2}), tt.at({0, 1, 2}));
  // Merging dims that are contiguous among themselves inside a strided tensor is still a view.
  Tensor wide = iota({3, 4, 10}).narrow(2, 0, 5);  // (3, 4, 5) with row stride 10
  EXPECT_THROW(wide.view({60}), Error);
  Tensor u = wide.unsqueeze(0);
  EXPECT_EQ(u.shape(), Shape({1, 3, 4, 5}));
  EXPECT_EQ(u.squeeze(0).shape(), Shape({3, 4, 5}));
  EXPECT_THROW(t.reshape({5, -1}), Error);
}

TEST(Tensor, ExpandBroadcastsWithZeroStride) {
  Tensor t = iota({3, 1});
  Tensor e = t.expand({2, 3, 4});
  EXPECT_EQ(e.stride(0), 0);
  EXPECT_EQ(e.stride(2), 0);
  EXPECT_EQ(e.at({1, 2, 3}), 2.0);
  Tensor c = e.contiguous();
  EXPECT_EQ(c.at({0, 1, 0}), 1.0);
  EXPECT_THROW(t.expand({3, 2, 5}), Error);
}

TEST(Tensor, DtypeConversionsRoundTrip) {
  Tensor f = Tensor::from_vector({1.0, -2.5, 3.140625, 65504.0, 1e-3}, {5});
  Tensor b = f.to(DType::BF16);
  EXPECT_EQ(b.dtype(), DType::BF16);
  EXPECT_NEAR(b.at({2}), 3.140625, 1e-6);        // exactly representable in bf16
  EXPECT_NEAR(b.at({4}), 1e-3, 1e-5);             // rounded to 8 mantissa bits
  Tensor h = f.to(DType::F16);
  EXPECT_EQ(h.at({3}), 65504.0);                   // f16 max
  EXPECT_NEAR(h.at({4}), 1e-3, 1e-6);
  Tensor d = b.to(DType::F64);
  EXPECT_EQ(d.at({1}), -2.5);
  Tensor i = Tensor::from_vector({7, 50256, 65535}, {3}, DType::F64).to(DType::I32);
  EXPECT_EQ(i.at({1}), 50256.0);
  EXPECT_EQ(i.to(DType::U16).at({2}), 65535.0);
  EXPECT_EQ(i.to(DType::I64).to(DType::U8).at({0}), 7.0);
  // bf16 rounding is to nearest even.
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 1.0f / 256)), 1.0f);
  EXPECT_EQ(bf16_to_float(float_to_bf16(1.0f + 3.0f / 256)), 1.0f + 4.0f / 256);
  EXPECT_TRUE(std::isnan(bf16_to_float(float_to_bf16(NAN))));
  EXPECT_EQ(dtype_from_name("bfloat16"), DType::BF16);
  EXPECT_THROW(dtype_from_name("f8"), Error);
}

TEST(Tensor, CopyIntoStridedViewCastsAndScatters) {
  Tensor dst = Tensor::zeros({3, 4}, DType::F64);
  Tensor src = iota({4, 3}).transpose(0, 1);  // (3, 4) strided, f32
  dst.copy_(src);
  EXPECT_EQ(dst.at({2, 3}), src.at({2, 3}));
  EXPECT_EQ(dst.at({1, 0}), 1.0);
  EXPECT_THROW(dst.copy_(iota({4, 3})), Error);
}

TEST(Philox, StreamsDependOnlyOnSeedAndOffset) {
  Tensor a = Tensor::randn({1000}, 42, 0);
  Tensor b = Tensor::randn({1000}, 42, 0);
  Tensor c = Tensor::randn({1000}, 43, 0);
  Tensor tail = Tensor::randn({400}, 42, 600);  // the last 400 elements, regenerated alone
  std::vector<double> va = a.to_vector(), vb = b.to_vector(), vc = c.to_vector(), vt = tail.to_vector();
  EXPECT_EQ(va, vb);
  EXPECT_NE(va, vc);
  for (size_t i = 0; i < 400; ++i) EXPECT_EQ(va[600 + i], vt[i]);
  double mean = 0, var = 0;
  for (double x : va) mean += x;
  mean /= 1000;
  for (double x : va) var += (x - mean) * (x - mean);
  var /= 1000;
  EXPECT_NEAR(mean, 0.0, 0.1);
  EXPECT_NEAR(var, 1.0, 0.15);
  Tensor u = Tensor::rand({1000}, 7, 0, -2.0, 3.0);
  for (double x : u.to_vector()) {
    EXPECT_GT(x, -2.0);
    EXPECT_LE(x, 3.0);
  }
  // Random123's known-answer vector for Philox4x32-10 (counter 0, key 0) pins the generator.
  philox::U4 r = philox::philox4x32(0, 0);
  EXPECT_EQ(r.x, 0x6627e8d5u);
  EXPECT_EQ(r.y, 0xe169c58du);
  EXPECT_EQ(r.z, 0xbc57ac4cu);
  EXPECT_EQ(r.w, 0x9b00dbd8u);
}

TEST(Device, ParseAndCudaAbsentMessage) {
  EXPECT_TRUE(Device::parse("cpu").is_cpu());
  EXPECT_EQ(Device::parse("cuda:1").index, 1);
  EXPECT_THROW(Device::parse("tpu"), Error);
  if (!cuda_available()) {
    EXPECT_THROW(Tensor::zeros({2}, DType::F32, Device::cuda()), Error);
  }
}

// parallel_ranges covers [0, n) exactly once in contiguous ranges, whatever the grain (including fewer items
// than one grain, and none).
TEST(Parallel, RangesCoverEachItemOnce) {
  for (int64_t n : {int64_t{0}, int64_t{1}, int64_t{7}, int64_t{1000}, int64_t{100003}})
    for (int64_t grain : {int64_t{1}, int64_t{10}, int64_t{1} << 20}) {
      std::vector<int> seen(static_cast<size_t>(n), 0);
      parallel_ranges(n, grain, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; ++i) seen[static_cast<size_t>(i)] += 1;  // disjoint ranges: no race
      });
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(seen[static_cast<size_t>(i)], 1) << "n " << n << " grain " << grain << " i " << i;
    }
}
