// Backward of every function in autograd/nn_functions.h against fp64 central finite differences
// (autograd::gradcheck), on small random shapes chosen so every code path runs: group norm with and without
// weight/bias, LayerNorm and RMS flavours, several groups; RoPE on a slice with an offset, a start position and a
// strided input; attention with GQA, MQA, MLRA branches, cached decode (S > T), non-causal, d_qk != d_v and
// strided q/k/v; the MLRA branch sum; and partial requires_grad (only some inputs asking for a gradient).
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "autograd/basic_functions.h"
#include "autograd/gradcheck.h"
#include "autograd/nn_functions.h"

using namespace latte;
using autograd::gradcheck;

namespace {

// A random f64 leaf; requires_grad unless told otherwise.
Tensor leaf(const Shape& s, uint64_t seed, bool grad = true, double stddev = 1.0) {
  Tensor t = Tensor::randn(s, seed, 0, stddev, DType::F64);
  if (grad) t.set_requires_grad();
  return t;
}

// Runs gradcheck and also fails if nothing was checked (a test that cannot fail is no test).
void check(const std::function<Tensor(const std::vector<Tensor>&)>& f, const std::vector<Tensor>& inputs,
           const std::string& what) {
  bool any = false;
  for (const Tensor& t : inputs) any = any || (t.defined() && t.requires_grad());
  ASSERT_TRUE(any) << what << ": no input requires grad";
  autograd::GradcheckResult r = gradcheck(f, inputs);
  EXPECT_TRUE(r.ok) << what << ": max abs err " << r.max_abs_error << "\n" << r.report;
  // The analytic gradients must not be identically zero (which would hide an unwired node).
  for (const Tensor& t : inputs)
    if (t.defined() && t.requires_grad()) {
      ASSERT_TRUE(t.grad().defined()) << what << ": an input got no gradient";
      double norm = 0;
      for (double g : t.grad().to_vector()) norm += g * g;
      EXPECT_GT(norm, 0.0) << what;
    }
}

Tensor inv_freq(int64_t rope_width, double base) {
  std::vector<double> inv(static_cast<size_t>(rope_width / 2));
  for (size_t j = 0; j < inv.size(); ++j)
    inv[j] = std::pow(base, -2.0 * static_cast<double>(j) / static_cast<double>(rope_width));
  return Tensor::from_vector(inv, {static_cast<int64_t>(inv.size())}, DType::F32);
}

}  // namespace

TEST(NnGradcheck, RmsNorm) {
  check([](const std::vector<Tensor>& in) { return rmsnorm(in[0], in[1], 1e-5); },
        {leaf({2, 3, 7}, 1), leaf({7}, 2)}, "rmsnorm");
  // Only the weight asks for a gradient; then only x.
  check([](const std::vector<Tensor>& in) { return rmsnorm(in[0], in[1], 1e-5); },
        {leaf({5, 6}, 3, false), leaf({6}, 4)}, "rmsnorm weight only");
  check([](const std::vector<Tensor>& in) { return rmsnorm(in[0], in[1], 0.3); },
        {leaf({5, 6}, 5), leaf({6}, 6, false)}, "rmsnorm x only, large eps");
  check([](const std::vector<Tensor>& in) { return rmsnorm(in[0], Tensor(), 1e-5); }, {leaf({3, 4, 5}, 7)},
        "rmsnorm without weight");
}

TEST(NnGradcheck, GroupNormEveryVariant) {
  for (int64_t groups : {1, 3})
    for (bool rms : {false, true})
      for (int affine = 0; affine < 4; ++affine) {
        const bool has_w = affine & 1, has_b = affine & 2;
        const std::string what = "group_norm groups " + std::to_string(groups) + (rms ? " rms" : " layernorm") +
                                 (has_w ? " +weight" : "") + (has_b ? " +bias" : "");
        std::vector<Tensor> inputs = {leaf({2, 3, 9}, 10 + affine, true, 1.5), has_w ? leaf({9}, 20) : Tensor(),
                                      has_b ? leaf({9}, 30) : Tensor()};
        check([groups, rms](const std::vector<Tensor>& in) { return group_norm(in[0], in[1], in[2], groups, 1e-5, rms); },
              inputs, what);
      }
  // layernorm() with a frozen weight: gradients flow to x and bias only.
  check([](const std::vector<Tensor>& in) { return layernorm(in[0], in[1], in[2], 1e-5); },
        {leaf({4, 8}, 40), leaf({8}, 41, false), leaf({8}, 42)}, "layernorm frozen weight");
}

TEST(NnGradcheck, Rope) {
  const Tensor inv = inv_freq(6, 100.0);
  // A slice of each head: 3 nope channels, 6 rope channels, 2 trailing; positions from 5.
  check([&](const std::vector<Tensor>& in) { return rope(in[0], inv, 5, 3); }, {leaf({2, 4, 3, 11}, 50)},
        "rope slice");
  // A strided input: (B, H, T, D) permuted to (B, T, H, D), whole-head rope.
  check([&](const std::vector<Tensor>& in) { return rope(in[0].permute({0, 2, 1, 3}), inv, 0); },
        {leaf({2, 3, 4, 6}, 51)}, "rope strided");
  // In place: a temporary handed over (forward rotates its memory, backward the incoming gradient's).
  check(
      [&](const std::vector<Tensor>& in) {
        Tensor t = scale(in[0], 1.5);
        return rope(std::move(t), inv, 5, 3);
      },
      {leaf({2, 4, 3, 11}, 52)}, "rope in place");
}

TEST(NnGradcheck, Swiglu) {
  check([](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); },
        {leaf({3, 7}, 60, true, 2.0), leaf({3, 7}, 61)}, "swiglu");
  // gate and up as views of one fused tensor (the fused w_gate|w_up projection).
  check([](const std::vector<Tensor>& in) { return swiglu(in[0].narrow(1, 0, 5), in[0].narrow(1, 5, 5)); },
        {leaf({4, 10}, 62, true, 2.0)}, "swiglu fused views");
  check([](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); },
        {leaf({3, 7}, 63, false), leaf({3, 7}, 64)}, "swiglu up only");
}

namespace {
struct AttnCase {
  const char* name;
  int64_t B, T, S, Hq, Hk, R, Dqk, Dv;
  bool causal;
};
const AttnCase kCases[] = {
    {"mha", 2, 4, 4, 2, 2, 1, 5, 5, true},
    {"gqa dqk != dv", 1, 5, 5, 4, 2, 1, 6, 3, true},
    {"mqa", 2, 3, 3, 3, 1, 1, 4, 4, true},
    {"mlra2 gqa branches", 1, 4, 4, 4, 2, 2, 5, 4, true},
    {"mlra4", 1, 3, 3, 2, 2, 4, 4, 3, true},
    {"decode S > T", 2, 2, 5, 2, 1, 2, 4, 4, true},
    {"non-causal", 1, 3, 5, 2, 2, 1, 4, 5, false},
};
}  // namespace

TEST(NnGradcheck, Attention) {
  uint64_t seed = 70;
  for (const AttnCase& c : kCases) {
    const double scale = 0.7 / std::sqrt(static_cast<double>(c.Dqk));
    check([&](const std::vector<Tensor>& in) { return attention(in[0], in[1], in[2], c.R, scale, c.causal); },
          {leaf({c.B, c.T, c.Hq, c.Dqk}, seed), leaf({c.B, c.S, c.R * c.Hk, c.Dqk}, seed + 1),
           leaf({c.B, c.S, c.R * c.Hk, c.Dv}, seed + 2)},
          c.name);
    seed += 3;
  }
}

TEST(NnGradcheck, AttentionStridedAndPartial) {
  // q, k, v as slices of one fused (B, T, 3H, D) projection: dk and dv land in the right columns of its grad.
  check([](const std::vector<Tensor>& in) {
          const Tensor& x = in[0];
          return attention(x.narrow(2, 0, 2), x.narrow(2, 2, 2), x.narrow(2, 4, 2), 1, 0.5);
        },
        {leaf({2, 4, 6, 3}, 90)}, "attention fused qkv views");
  // A (B, H, S, D) key layout permuted into place, and only k asking for a gradient.
  check([](const std::vector<Tensor>& in) { return attention(in[0], in[1].permute({0, 2, 1, 3}), in[2], 2, 0.5); },
        {leaf({1, 3, 2, 4}, 91, false), leaf({1, 2, 3, 4}, 92), leaf({1, 3, 2, 3}, 93, false)}, "attention only k");
}

TEST(NnGradcheck, BranchSum) {
  check([](const std::vector<Tensor>& in) { return branch_sum(in[0], 4, 0.5); }, {leaf({2, 3, 8, 3}, 100)},
        "branch_sum");
  // The MLRA combination: branch attentions, then the scaled sum.
  check([](const std::vector<Tensor>& in) {
          return branch_sum(attention(in[0], in[1], in[2], 2, 0.5), 2, 1 / std::sqrt(2.0));
        },
        {leaf({1, 4, 2, 3}, 101), leaf({1, 4, 2, 3}, 102), leaf({1, 4, 2, 4}, 103)}, "mlra2 attention + branch_sum");
}
