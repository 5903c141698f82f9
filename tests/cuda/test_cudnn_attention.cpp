// The cuDNN SDPA backend (kernels/cuda/cudnn_attention.h) against the CPU reference attention in f64 on the same
// bf16 inputs: forward (out, and lse to 1e-4, so that either backend's backward can follow either forward) and
// backward (dq, dk, dv), MHA / GQA / MQA, MLRA branches, ragged lengths, non-causal S != T, an explicit scale,
// strided views of fused projections; then the dispatcher: attention_backend cudnn, auto (timed choice, twice),
// and the errors for what cuDNN cannot run. Outputs are poisoned with NaN first.
#include "tests/cuda/attention_test_util.h"

#ifdef LATTE_WITH_CUDA
#include <algorithm>
#include <cstdio>
#include <string>

#include "kernels/attention_backend.h"
#include "kernels/cuda/cuda_ops.h"
#include "kernels/cuda/cudnn_attention.h"
#include "kernels/cuda/flash_attention.h"

using namespace latte;
using namespace latte::cudatest;

namespace {

bool have_cudnn() {
#ifdef LATTE_WITH_CUDNN
  return true;
#else
  return false;
#endif
}

using Case = AttentionCase;
using Inputs = AttentionInputs;

void check_forward(const Inputs& in, const Tensor& out, const Tensor& lse) {
  EXPECT_CLOSE(out, in.eout, DType::BF16);
  const double e = rel_err(lse, in.else_);
  EXPECT_LT(e, 1e-4) << "lse rel. error " << e;
}

void check_backward(const Inputs& in, const Tensor& dq, const Tensor& dk, const Tensor& dv) {
  EXPECT_CLOSE(dq, in.edq, DType::BF16) << "dq";
  EXPECT_CLOSE(dk, in.edk, DType::BF16) << "dk";
  EXPECT_CLOSE(dv, in.edv, DType::BF16) << "dv";
}

// Direct calls into the cuDNN backend; `must_support`: a shape cuDNN 9 runs on sm_80+ (else the case is
// reported and skipped, e.g. a head dim an older cuDNN's backward lacks).
void run_case(const Case& c, uint64_t seed, bool must_support) {
  SCOPED_TRACE(describe(c));
  Inputs in = make_attention_inputs(c, seed);
  const DType t = DType::BF16;
  Tensor out = poisoned({c.B, c.T, c.R * c.Hq, c.Dv}, t), lse = poisoned({c.B, c.R * c.Hq, c.T}, DType::F32);
  const std::string fwd_why = cuda::cudnn_attention_forward_unsupported(in.q, in.k, in.v, out, lse, c.R, c.causal);
  if (!fwd_why.empty()) {
    EXPECT_FALSE(must_support) << "cuDNN forward unsupported: " << fwd_why;
    std::printf("  [cudnn] %s: forward not supported here: %s\n", describe(c).c_str(), fwd_why.c_str());
    return;
  }
  cuda::cudnn_attention_forward(out, lse, in.q, in.k, in.v, c.R, in.scale, c.causal);
  check_forward(in, out, lse);

  Tensor dq = poisoned(in.q.shape(), t), dk = poisoned(in.k.shape(), t), dv = poisoned(in.v.shape(), t);
  const std::string bwd_why =
      cuda::cudnn_attention_backward_unsupported(dq, dk, dv, in.dout, in.q, in.k, in.v, out, lse, c.R, c.causal);
  if (!bwd_why.empty()) {
    EXPECT_FALSE(must_support) << "cuDNN backward unsupported: " << bwd_why;
    std::printf("  [cudnn] %s: backward not supported here: %s\n", describe(c).c_str(), bwd_why.c_str());
    return;
  }
  cuda::cudnn_attention_backward(dq, dk, dv, in.dout, in.q, in.k, in.v, out, lse, c.R, in.scale, c.causal);
  check_backward(in, dq, dk, dv);
  {
    // Again: the dQ accumulator now comes from the caching allocator holding the first call's sums, so a second
    // call that added onto them (no zeroing, by latte or by cuDNN) would double dq.
    SCOPED_TRACE("second backward call");
    Tensor dq2 = poisoned(in.q.shape(), t), dk2 = poisoned(in.k.shape(), t), dv2 = poisoned(in.v.shape(), t);
    cuda::cudnn_attention_backward(dq2, dk2, dv2, in.dout, in.q, in.k, in.v, out, lse, c.R, in.scale, c.causal);
    check_backward(in, dq2, dk2, dv2);
  }

  // The lse contract is shared: latte's flash backward after cuDNN's forward gives the same gradients.
  if (cuda::flash_attention_supported(in.q, in.k, in.v, out)) {
    SCOPED_TRACE("flash backward after the cuDNN forward");
    Tensor fq = poisoned(in.q.shape(), t), fk = poisoned(in.k.shape(), t), fv = poisoned(in.v.shape(), t);
    cuda::flash_attention_backward(fq, fk, fv, in.dout, in.q, in.k, in.v, out, lse, c.R, in.scale, c.causal, false);
    check_backward(in, fq, fk, fv);
  }
}

TEST(CudnnAttention, Shapes) {
  LATTE_REQUIRE_CUDA();
  if (!have_cudnn()) GTEST_SKIP() << "built without cuDNN";
  const Case core[] = {
      {"mha", 2, 128, 128, 4, 4, 1, 64, 64, true, 0, false},
      {"gqa odd T", 1, 129, 129, 4, 2, 1, 128, 128, true, 0, false},
      {"mqa T=1000", 1, 1000, 1000, 4, 1, 1, 128, 128, true, 0, false},
      {"non-causal S > T", 2, 40, 150, 4, 4, 1, 128, 64, false, 0, false},
      {"non-causal S < T", 1, 130, 50, 2, 2, 1, 64, 128, false, 0, false},
      {"explicit scale", 1, 129, 129, 4, 2, 1, 128, 128, true, 0.05, false},
      {"strided fused views", 2, 67, 67, 4, 2, 1, 128, 64, true, 0, true},
      {"mlra-2 gqa", 2, 100, 100, 4, 2, 2, 128, 128, true, 0, false},
      {"mlra-4 mqa strided", 1, 77, 77, 4, 1, 4, 64, 64, true, 0.2, true},
  };
  uint64_t seed = 12000;
  for (const Case& c : core) run_case(c, seed += 10, true);
  // MLA's (192, 128): cuDNN >= 9.x on Hopper runs it (PyTorch's cuDNN backend measures it); reported if not.
  const Case mla[] = {
      {"mla", 1, 200, 200, 4, 4, 1, 192, 128, true, 0, false},
      {"mla branches", 1, 96, 96, 2, 2, 2, 192, 128, true, 0, false},
  };
  for (const Case& c : mla) run_case(c, seed += 10, false);
}

// The op-level dispatcher: attention_backend cudnn runs cuDNN, auto times the supported paths once per shape
// and gives the right answer on the tuning call and after it.
TEST(CudnnAttention, Dispatch) {
  LATTE_REQUIRE_CUDA();
  if (!have_cudnn()) GTEST_SKIP() << "built without cuDNN";
  const Case c{"dispatch", 2, 96, 96, 4, 2, 1, 128, 128, true, 0, false};
  SCOPED_TRACE(describe(c));
  Inputs in = make_attention_inputs(c, 12500);
  const DType t = DType::BF16;
  for (AttentionBackend backend : {AttentionBackend::Cudnn, AttentionBackend::Auto, AttentionBackend::Auto}) {
    set_attention_backend(backend);
    Tensor out = poisoned({c.B, c.T, c.Hq, c.Dv}, t), lse = poisoned({c.B, c.Hq, c.T}, DType::F32);
    cuda::attention_forward(out, lse, in.q, in.k, in.v, 1, in.scale, true);
    check_forward(in, out, lse);
    Tensor dq = poisoned(in.q.shape(), t), dk = poisoned(in.k.shape(), t), dv = poisoned(in.v.shape(), t);
    cuda::attention_backward(dq, dk, dv, in.dout, in.q, in.k, in.v, out, lse, 1, in.scale, true);
    check_backward(in, dq, dk, dv);
  }
  set_attention_backend(AttentionBackend::Auto);
}

// The plans cuDNN builds per graph (the engine configurations its heuristics list): a first unforced call checks
// them against the first plan; then each plan is forced in turn, forward and backward twice (an engine that left
// the dQ accumulator to the caller would double dq on the second call). Every plan `auto` may still run must match
// the reference; one it dropped must really be wrong (cuDNN 9.19 on the H100: engine 1 in the MLRA-2 case).
TEST(CudnnAttention, EveryPlan) {
  LATTE_REQUIRE_CUDA();
  if (!have_cudnn()) GTEST_SKIP() << "built without cuDNN";
  const Case cases[] = {
      {"mha (64,64)", 2, 128, 128, 4, 4, 1, 64, 64, true, 0, false},
      {"gqa odd T (128,128)", 1, 129, 129, 4, 2, 1, 128, 128, true, 0, false},
      {"non-causal S > T", 2, 40, 150, 4, 4, 1, 128, 64, false, 0, false},
      {"mla (192,128)", 1, 200, 200, 4, 4, 1, 192, 128, true, 0, false},
      {"mlra-2 gqa", 2, 100, 100, 4, 2, 2, 128, 128, true, 0, false},
  };
  uint64_t seed = 13000;
  const DType t = DType::BF16;
  for (const Case& c : cases) {
    SCOPED_TRACE(describe(c));
    Inputs in = make_attention_inputs(c, seed += 10);
    Tensor out = poisoned({c.B, c.T, c.R * c.Hq, c.Dv}, t), lse = poisoned({c.B, c.R * c.Hq, c.T}, DType::F32);
    Tensor dq = poisoned(in.q.shape(), t), dk = poisoned(in.k.shape(), t), dv = poisoned(in.v.shape(), t);
    cuda::cudnn_attention_forward(out, lse, in.q, in.k, in.v, c.R, in.scale, c.causal);  // checks the plans
    check_forward(in, out, lse);
    cuda::cudnn_attention_backward(dq, dk, dv, in.dout, in.q, in.k, in.v, out, lse, c.R, in.scale, c.causal);
    check_backward(in, dq, dk, dv);
    const auto fwd = cuda::cudnn_attention_forward_plans(in.q, in.k, in.v, out, c.R, c.causal);
    const auto bwd = cuda::cudnn_attention_backward_plans(dq, dk, dv, in.dout, in.q, in.k, in.v, out, c.R, c.causal);
    ASSERT_FALSE(fwd.empty() || bwd.empty()) << "cuDNN runs none of this case's graphs";
    std::string names;
    for (const auto& p : fwd) names += " " + p.name + (p.usable ? "" : " (dropped)");
    names += " |";
    for (const auto& p : bwd) names += " " + p.name + (p.usable ? "" : " (dropped)");
    std::printf("  [cudnn] %s: forward | backward plans:%s\n", describe(c).c_str(), names.c_str());
    for (size_t i = 0; i < std::max(fwd.size(), bwd.size()); ++i) {
      SCOPED_TRACE("plan " + std::to_string(i));
      const auto& pf = fwd[std::min(i, fwd.size() - 1)];
      const auto& pb = bwd[std::min(i, bwd.size() - 1)];
      cuda::cudnn_attention_use_plan(static_cast<int>(i));
      out = poisoned(out.shape(), t), lse = poisoned(lse.shape(), DType::F32);
      cuda::cudnn_attention_forward(out, lse, in.q, in.k, in.v, c.R, in.scale, c.causal);
      if (pf.usable)
        check_forward(in, out, lse);
      else
        EXPECT_GT(std::max(rel_err(out, in.eout), rel_err(lse, in.else_)), 1e-2) << pf.name << " dropped but right";
      // The backward from the reference-checked forward of plan 0 when this forward plan was dropped.
      if (!pf.usable) {
        cuda::cudnn_attention_use_plan(0);
        cuda::cudnn_attention_forward(out, lse, in.q, in.k, in.v, c.R, in.scale, c.causal);
        cuda::cudnn_attention_use_plan(static_cast<int>(i));
      }
      for (int call = 0; call < 2; ++call) {
        SCOPED_TRACE("backward call " + std::to_string(call));
        dq = poisoned(in.q.shape(), t), dk = poisoned(in.k.shape(), t), dv = poisoned(in.v.shape(), t);
        cuda::cudnn_attention_backward(dq, dk, dv, in.dout, in.q, in.k, in.v, out, lse, c.R, in.scale, c.causal);
        if (pb.usable)
          check_backward(in, dq, dk, dv);
        else
          EXPECT_GT(std::max({rel_err(dq, in.edq), rel_err(dk, in.edk), rel_err(dv, in.edv)}), 1e-2)
              << pb.name << " dropped but right";
      }
    }
    cuda::cudnn_attention_use_plan(-1);
  }
}

TEST(CudnnAttention, UnsupportedSaysWhy) {
  LATTE_REQUIRE_CUDA();
  Tensor q = rnd({1, 8, 2, 64}, 1, DType::F32), k = rnd({1, 8, 2, 64}, 2, DType::F32),
         v = rnd({1, 8, 2, 64}, 3, DType::F32), out = poisoned({1, 8, 2, 64}, DType::F32),
         lse = poisoned({1, 2, 8}, DType::F32);
  EXPECT_NE(cuda::cudnn_attention_forward_unsupported(q, k, v, out, lse, 1, true), "");  // f32
  Tensor qb = rnd({1, 8, 2, 64}, 4, DType::BF16), kb = rnd({1, 20, 2, 64}, 5, DType::BF16),
         vb = rnd({1, 20, 2, 64}, 6, DType::BF16), ob = poisoned({1, 8, 2, 64}, DType::BF16);
  const std::string why = cuda::cudnn_attention_forward_unsupported(qb, kb, vb, ob, lse, 1, true);
  EXPECT_NE(why, "");  // causal with S > T: cuDNN's diagonal is top-left
  set_attention_backend(AttentionBackend::Cudnn);
  try {
    cuda::attention_forward(ob, lse, qb, kb, vb, 1, 0.125, true);
    ADD_FAILURE() << "attention_backend cudnn ran a causal S > T call";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("attention_backend cudnn cannot run"), std::string::npos) << e.what();
  }
  set_attention_backend(AttentionBackend::Auto);
}

}  // namespace
#endif  // LATTE_WITH_CUDA
