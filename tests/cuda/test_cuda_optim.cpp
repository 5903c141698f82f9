// Multi-tensor AdamW, gradient norm and clipping on the GPU against a plain CPU loop in double
// (the same formula as train/adamw.cpp).
#include "tests/cuda/cuda_test_util.h"

#ifdef LATTE_WITH_CUDA
#include <cmath>

#include "kernels/cuda/optim.h"

using namespace latte;
using namespace latte::cudatest;

namespace {

TEST(CudaOptim, AdamWMatchesCpuLoop) {
  LATTE_REQUIRE_CUDA();
  // 40 tensors (more than one launch group), odd sizes, bf16 params with bf16 grads and one f32 param
  std::vector<cuda::AdamWTensors> ts;
  std::vector<std::vector<double>> w, m, v;
  std::vector<bool> decay;
  for (int i = 0; i < 40; ++i) {
    const int64_t n = i == 0 ? 100003 : 1 + (i * 37) % 500;
    const DType pt = i % 7 == 3 ? DType::F32 : DType::BF16;
    cuda::AdamWTensors t;
    t.param = rnd({n}, 700 + static_cast<uint64_t>(i), pt, 0.1);
    t.master = t.param.to(DType::F32);
    if (pt == DType::F32) t.param = t.master;  // its own master
    t.exp_avg = Tensor::zeros({n}, DType::F32, gpu());
    t.exp_avg_sq = Tensor::zeros({n}, DType::F32, gpu());
    t.decay = i % 3 != 0;
    w.push_back(t.master.to_vector());
    m.emplace_back(static_cast<size_t>(n), 0.0);
    v.emplace_back(static_cast<size_t>(n), 0.0);
    decay.push_back(t.decay);
    ts.push_back(t);
  }
  cuda::AdamWHyper h;
  h.beta1 = 0.9;
  h.beta2 = 0.95;
  h.eps = 1e-8;
  h.weight_decay = 0.1;
  const double grad_scale = 0.5;
  for (int step = 1; step <= 3; ++step) {
    h.step = step;
    h.lr = 1e-3 * step;
    const double bc1 = 1 - std::pow(h.beta1, step), bc2 = 1 - std::pow(h.beta2, step);
    for (size_t i = 0; i < ts.size(); ++i) {
      ts[i].grad = rnd(ts[i].master.shape(), 900 + 50 * static_cast<uint64_t>(step) + i, i % 2 ? DType::BF16 : DType::F32);
      std::vector<double> g = ts[i].grad.to_vector();
      const double wd = decay[i] ? h.weight_decay : 0.0;
      for (size_t j = 0; j < g.size(); ++j) {
        const double gj = g[j] * grad_scale;
        m[i][j] = h.beta1 * m[i][j] + (1 - h.beta1) * gj;
        v[i][j] = h.beta2 * v[i][j] + (1 - h.beta2) * gj * gj;
        w[i][j] = w[i][j] * (1 - h.lr * wd) - h.lr * (m[i][j] / bc1) / (std::sqrt(v[i][j] / bc2) + h.eps);
      }
    }
    cuda::adamw_step(ts, h, grad_scale);
  }
  for (size_t i = 0; i < ts.size(); ++i) {
    const int64_t n = ts[i].master.numel();
    EXPECT_CLOSE(ts[i].master, Tensor::from_vector(w[i], {n}, DType::F64), DType::F32) << i;
    EXPECT_CLOSE(ts[i].exp_avg, Tensor::from_vector(m[i], {n}, DType::F64), DType::F32) << i;
    EXPECT_CLOSE(ts[i].exp_avg_sq, Tensor::from_vector(v[i], {n}, DType::F64), DType::F32) << i;
    EXPECT_CLOSE(ts[i].param, Tensor::from_vector(w[i], {n}, DType::F64), ts[i].param.dtype()) << i;
  }
}

TEST(CudaOptim, GradNormClipAndScale) {
  LATTE_REQUIRE_CUDA();
  std::vector<Tensor> grads;
  double ss = 0;
  for (int i = 0; i < 45; ++i) {
    Tensor g = rnd({1 + (i * 131) % 3000}, 300 + static_cast<uint64_t>(i), i % 2 ? DType::BF16 : DType::F32);
    for (double x : g.to_vector()) ss += x * x;
    grads.push_back(g);
  }
  Tensor total = poisoned({}, DType::F32);
  cuda::sum_squares_multi(total, grads);
  EXPECT_NEAR(total.item(), ss, 1e-5 * ss);
  Tensor norm = poisoned({}, DType::F32), factor = poisoned({}, DType::F32);
  const double max_norm = std::sqrt(ss) / 4;
  cuda::clip_grad_norm(grads, max_norm, norm, factor);
  EXPECT_NEAR(norm.item(), std::sqrt(ss), 1e-5 * std::sqrt(ss));
  EXPECT_NEAR(factor.item(), 0.25, 1e-5);
  Tensor again = poisoned({}, DType::F32);
  cuda::sum_squares_multi(again, grads);
  EXPECT_TRUE(same_bits(total, again));
  std::vector<double> before = grads[4].to_vector();
  cuda::scale_multi(grads, factor);
  std::vector<double> after = grads[4].to_vector();
  for (size_t j = 0; j < before.size(); ++j) EXPECT_NEAR(after[j], 0.25 * before[j], 1e-2 * std::abs(before[j]) + 1e-6);
  cuda::clip_grad_norm(grads, 1e9, norm, factor);
  EXPECT_EQ(factor.item(), 1.0);  // no clipping under the threshold
}

}  // namespace
#endif  // LATTE_WITH_CUDA
