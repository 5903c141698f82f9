// latte's flash attention (kernels/cuda/flash_attention.h) against the CPU reference attention in f64 on the same
// bf16 inputs: forward (out, lse; mma.sync and wgmma) and backward (dq, dk, dv; mma.sync and wgmma key-major
// passes, atomic and deterministic dQ), every supported (Dqk, Dv) pair, MHA / GQA / MQA, MLRA branches 2 and 4
// as virtual heads, ragged lengths (T = 1, 17, 129, 1000), S > T, non-causal, an explicit softmax scale, and
// q/k/v as strided views of fused projections.
// Outputs are poisoned with NaN first; relative error ||out - ref|| / ||ref|| < 1e-2 (bf16). Deterministic mode
// must give bitwise-identical gradients on two runs.
#include "tests/cuda/attention_test_util.h"

#ifdef LATTE_WITH_CUDA
#include <array>
#include <cmath>
#include <utility>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/flash_attention.h"

using namespace latte;
using namespace latte::cudatest;

namespace {

using FlashCase = AttentionCase;

void run_flash_case(const FlashCase& c, uint64_t seed) {
  SCOPED_TRACE(describe(c));
  const DType t = DType::BF16;
  const AttentionInputs in = make_attention_inputs(c, seed);
  const Tensor &q = in.q, &k = in.k, &v = in.v, &dout = in.dout, &eout = in.eout, &else_ = in.else_;
  const double scale = in.scale;
  ASSERT_TRUE(cuda::flash_attention_supported(q, k, v, poisoned({c.B, c.T, c.R * c.Hq, c.Dv}, t)));
  const Shape oshape{c.B, c.T, c.R * c.Hq, c.Dv}, lshape{c.B, c.R * c.Hq, c.T};

  // Both forward kernels: mma.sync (any sm_80+) and, where the device and build have it, wgmma (sm_90a).
  Tensor out, lse;
  for (auto kernel : {cuda::FlashKernel::kWgmma, cuda::FlashKernel::kMmaSync}) {
    SCOPED_TRACE(kernel == cuda::FlashKernel::kWgmma ? "forward: auto/wgmma" : "forward: mma.sync");
    cuda::flash_attention_set_forward_kernel(kernel);
    out = poisoned(oshape, t), lse = poisoned(lshape, DType::F32);
    cuda::flash_attention_forward(out, lse, q, k, v, c.R, scale, c.causal);
    EXPECT_CLOSE(out, eout, t);
    const double e = rel_err(lse, else_);
    EXPECT_LT(e, 1e-4) << "lse rel. error " << e;
  }
  cuda::flash_attention_set_forward_kernel(cuda::FlashKernel::kAuto);

  // Both key-major backward passes (wgmma where the device and build have it, and mma.sync), each with atomic
  // and deterministic dQ.
  const Tensor &edq = in.edq, &edk = in.edk, &edv = in.edv;
  for (auto kernel : {cuda::FlashKernel::kWgmma, cuda::FlashKernel::kMmaSync}) {
    SCOPED_TRACE(kernel == cuda::FlashKernel::kWgmma ? "backward: auto/wgmma" : "backward: mma.sync");
    cuda::flash_attention_set_backward_kernel(kernel);
    for (bool det : {false, true}) {
      SCOPED_TRACE(det ? "deterministic" : "atomic dq");
      Tensor dq = poisoned(q.shape(), t), dk = poisoned(k.shape(), t), dv = poisoned(v.shape(), t);
      cuda::flash_attention_backward(dq, dk, dv, dout, q, k, v, out, lse, c.R, scale, c.causal, det);
      EXPECT_CLOSE(dq, edq, t);
      EXPECT_CLOSE(dk, edk, t);
      EXPECT_CLOSE(dv, edv, t);
      if (det) {
        Tensor dq2 = poisoned(q.shape(), t), dk2 = poisoned(k.shape(), t), dv2 = poisoned(v.shape(), t);
        cuda::flash_attention_backward(dq2, dk2, dv2, dout, q, k, v, out, lse, c.R, scale, c.causal, true);
        EXPECT_TRUE(same_bits(dq, dq2)) << "dq differs between two deterministic runs";
        EXPECT_TRUE(same_bits(dk, dk2)) << "dk differs between two deterministic runs";
        EXPECT_TRUE(same_bits(dv, dv2)) << "dv differs between two deterministic runs";
      }
    }
  }
  cuda::flash_attention_set_backward_kernel(cuda::FlashKernel::kAuto);
}

TEST(FlashAttention, Shapes) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const FlashCase cases[] = {
      {"mha T=17", 2, 17, 17, 4, 4, 1, 64, 64, true, 0, false},
      {"gqa T=129", 1, 129, 129, 4, 2, 1, 128, 128, true, 0, false},
      {"mqa T=1", 3, 1, 1, 4, 1, 1, 96, 64, true, 0, false},
      {"decode-like T=1 S=77", 2, 1, 77, 4, 2, 1, 128, 128, true, 0, false},
      {"mla T=1000", 1, 1000, 1000, 2, 2, 1, 192, 128, true, 0, false},
      {"S > T", 2, 65, 200, 4, 2, 1, 128, 64, true, 0, false},
      {"mlra-2 gqa", 2, 100, 100, 4, 2, 2, 192, 128, true, 0, false},
      {"mlra-4 mqa", 1, 77, 77, 4, 1, 4, 96, 128, true, 0, false},
      {"non-causal S < T", 1, 130, 50, 2, 2, 1, 64, 128, false, 0, false},
      {"non-causal S > T", 2, 40, 150, 4, 4, 1, 128, 128, false, 0, false},
      {"explicit scale", 1, 129, 129, 4, 2, 1, 128, 128, true, 0.05, false},
      {"strided fused views", 2, 67, 67, 4, 2, 2, 128, 64, true, 0, true},
      {"strided S > T mla", 1, 33, 160, 2, 1, 1, 192, 128, true, 0.1, true},
      // The (64,64) wgmma backward's 192-key blocks, three consumers: one past S (non-causal), one causally dead on
      // the first steps and one past S (S > T).
      {"(64,64) non-causal S < 192", 2, 130, 100, 4, 2, 1, 64, 64, false, 0, false},
      {"(64,64) causal S > T", 1, 70, 450, 4, 2, 1, 64, 64, true, 0, false},
  };
  uint64_t seed = 9000;
  for (const FlashCase& c : cases) run_flash_case(c, seed += 10);
}

TEST(FlashAttention, EveryHeadDimPair) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  uint64_t seed = 9500;
  for (int64_t dqk : {64, 96, 128, 192})
    for (int64_t dv : {64, 128}) {
      const FlashCase c{"dims", 1, 129, 129, 4, 2, 2, dqk, dv, true, 0.3, false};
      run_flash_case(c, seed += 10);
    }
}

// The Hopper wgmma forward (lockstep warpgroups with S j and P V j - 1 overlapped, the same in turn, then the
// overlapped schedule with ping-pong, the default) on ragged causal GQA shapes with S > T (one to three key tiles
// per query tile). Run first and alone by scripts/attention_check.sh as guards, with
// WgmmaForwardPersistent below: if one fails, the rest runs without that variant (LATTE_FLASH_NO_WGMMA /
// LATTE_FLASH_OVERLAP=0 / LATTE_FLASH_NO_PINGPONG / LATTE_FLASH_PERSISTENT=0).
void check_wgmma_forward(bool pingpong, bool overlap = true) {
  const int64_t B = 2, T = 300, S = 333, Hq = 4, Hk = 2;
  // (96, 64): the 128 kernel with q's and k's columns past 96 read as zeros (sm90_kernel_dqk).
  for (auto [dqk, dv] : {std::pair<int64_t, int64_t>{192, 128}, {64, 64}, {128, 64}, {96, 64}}) {
    SCOPED_TRACE(testing::Message() << "(" << dqk << "," << dv << ")" << (pingpong ? " ping-pong" : " lockstep")
                                    << (overlap ? " overlapped" : ""));
    Tensor q = rnd({B, T, Hq, dqk}, 31 + dqk, DType::BF16), k = rnd({B, S, Hk, dqk}, 32 + dqk, DType::BF16),
           v = rnd({B, S, Hk, dv}, 33 + dqk, DType::BF16);
    Tensor eout = Tensor::empty({B, T, Hq, dv}, DType::F64), el = Tensor::empty({B, Hq, T}, DType::F64);
    cpu::attention_forward(eout, el, ref(q), ref(k), ref(v), 1, 0.09, true);
    cuda::flash_attention_set_sm90_pingpong(pingpong);
    cuda::flash_attention_set_sm90_overlap(overlap);
    cuda::flash_attention_set_forward_kernel(cuda::FlashKernel::kWgmma);
    Tensor out = poisoned({B, T, Hq, dv}, DType::BF16), lse = poisoned({B, Hq, T}, DType::F32);
    cuda::flash_attention_forward(out, lse, q, k, v, 1, 0.09, true);
    EXPECT_CLOSE(out, eout, DType::BF16);
    const double e = rel_err(lse, el);
    EXPECT_LT(e, 1e-4) << "lse rel. error " << e;
  }
  cuda::flash_attention_set_sm90_pingpong(true);
  cuda::flash_attention_set_sm90_overlap(true);
  cuda::flash_attention_set_forward_kernel(cuda::FlashKernel::kAuto);
}

TEST(FlashAttention, WgmmaForwardLockstep) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  check_wgmma_forward(false);
}

TEST(FlashAttention, WgmmaForwardInTurn) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  check_wgmma_forward(false, false);
}

TEST(FlashAttention, WgmmaForwardPingPong) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  check_wgmma_forward(true);
}

// The persistent wgmma forward with more query tiles than SMs (each block takes several from the counter; the 64
// heads go in heaviest-first groups of 24 + 24 + 16 at (192,128), 62 + 2 at (64,64), by K and V bytes): bitwise the same out and lse as one block per query tile (the same
// instructions per tile), the same again on a second call (the counter was left at zero), and close to the mma.sync
// kernel (itself checked against the CPU reference above).
TEST(FlashAttention, WgmmaForwardPersistent) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 2, T = 520, S = 4200, Hq = 32, Hk = 8;  // query tiles: 2 x 32 x 5 (128 rows), 2 x 32 x 3 (192)
  for (auto [dqk, dv] : {std::pair<int64_t, int64_t>{192, 128}, {64, 64}}) {
    SCOPED_TRACE(testing::Message() << "(" << dqk << "," << dv << ")");
    Tensor q = rnd({B, T, Hq, dqk}, 41 + dqk, DType::BF16), k = rnd({B, S, Hk, dqk}, 42 + dqk, DType::BF16),
           v = rnd({B, S, Hk, dv}, 43 + dqk, DType::BF16);
    auto forward = [&](cuda::FlashKernel kernel, bool persistent) {
      cuda::flash_attention_set_forward_kernel(kernel);
      cuda::flash_attention_set_sm90_persistent(persistent);
      std::pair<Tensor, Tensor> r{poisoned({B, T, Hq, dv}, DType::BF16), poisoned({B, Hq, T}, DType::F32)};
      cuda::flash_attention_forward(r.first, r.second, q, k, v, 1, 0.08, true);
      return r;
    };
    const auto [out, lse] = forward(cuda::FlashKernel::kWgmma, true);
    const auto [out2, lse2] = forward(cuda::FlashKernel::kWgmma, true);
    const auto [out_tiles, lse_tiles] = forward(cuda::FlashKernel::kWgmma, false);
    const auto [out_mma, lse_mma] = forward(cuda::FlashKernel::kMmaSync, true);
    EXPECT_TRUE(same_bits(out, out_tiles)) << "out differs from one block per query tile";
    EXPECT_TRUE(same_bits(lse, lse_tiles)) << "lse differs from one block per query tile";
    EXPECT_TRUE(same_bits(out, out2)) << "out differs on the second call";
    EXPECT_TRUE(same_bits(lse, lse2)) << "lse differs on the second call";
    EXPECT_LT(rel_err(out, out_mma), 1e-2);
    EXPECT_LT(rel_err(lse, lse_mma), 1e-4);
  }
  cuda::flash_attention_set_sm90_persistent(true);
  cuda::flash_attention_set_forward_kernel(cuda::FlashKernel::kAuto);
}

// The persistent wgmma backward (one block per SM taking key tiles from a counter; 528 tiles at (192,128), 352 at
// (64,64), so each block does several, crossing (batch, kv head) pairs): dK and dV bitwise the same as one block
// per key tile (the same instructions per tile), again on a second call (the counter was left at zero), in the
// deterministic mode too (dQ then bitwise as well); dQ, which the atomic mode adds in L2 in any order, close (also to
// the deterministic dQ); all close to the mma.sync backward.
TEST(FlashAttention, WgmmaBackwardPersistent) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 2, T = 520, S = 4200, Hq = 32, Hk = 8;
  for (auto [dqk, dv] : {std::pair<int64_t, int64_t>{192, 128}, {64, 64}}) {
    SCOPED_TRACE(testing::Message() << "(" << dqk << "," << dv << ")");
    Tensor q = rnd({B, T, Hq, dqk}, 51 + dqk, DType::BF16), k = rnd({B, S, Hk, dqk}, 52 + dqk, DType::BF16),
           v = rnd({B, S, Hk, dv}, 53 + dqk, DType::BF16), dout = rnd({B, T, Hq, dv}, 54 + dqk, DType::BF16);
    Tensor out = poisoned({B, T, Hq, dv}, DType::BF16), lse = poisoned({B, Hq, T}, DType::F32);
    cuda::flash_attention_forward(out, lse, q, k, v, 1, 0.08, true);
    auto backward = [&](cuda::FlashKernel kernel, bool persistent, bool deterministic) {
      cuda::flash_attention_set_backward_kernel(kernel);
      cuda::flash_attention_set_sm90_persistent(persistent);
      std::array<Tensor, 3> g{poisoned(q.shape(), DType::BF16), poisoned(k.shape(), DType::BF16),
                              poisoned(v.shape(), DType::BF16)};
      cuda::flash_attention_backward(g[0], g[1], g[2], dout, q, k, v, out, lse, 1, 0.08, true, deterministic);
      return g;
    };
    const auto [dq, dk, dvv] = backward(cuda::FlashKernel::kWgmma, true, false);
    const auto [dq2, dk2, dv2] = backward(cuda::FlashKernel::kWgmma, true, false);
    const auto [dq_tiles, dk_tiles, dv_tiles] = backward(cuda::FlashKernel::kWgmma, false, false);
    const auto [dq_det, dk_det, dv_det] = backward(cuda::FlashKernel::kWgmma, true, true);
    const auto [dq_det_tiles, dk_det_tiles, dv_det_tiles] = backward(cuda::FlashKernel::kWgmma, false, true);
    const auto [dq_mma, dk_mma, dv_mma] = backward(cuda::FlashKernel::kMmaSync, true, false);
    EXPECT_TRUE(same_bits(dk, dk_tiles)) << "dk differs from one block per key tile";
    EXPECT_TRUE(same_bits(dvv, dv_tiles)) << "dv differs from one block per key tile";
    EXPECT_TRUE(same_bits(dk, dk2)) << "dk differs on the second call";
    EXPECT_TRUE(same_bits(dvv, dv2)) << "dv differs on the second call";
    EXPECT_TRUE(same_bits(dk_det, dk_det_tiles)) << "deterministic dk differs from one block per key tile";
    EXPECT_TRUE(same_bits(dv_det, dv_det_tiles)) << "deterministic dv differs from one block per key tile";
    EXPECT_TRUE(same_bits(dq_det, dq_det_tiles)) << "deterministic dq differs from one block per key tile";
    EXPECT_LT(rel_err(dq, dq_tiles), 1e-2);
    // The atomic path stores each dQ tile's first contribution and adds the rest once it is in (no zeroed
    // accumulator): a contribution lost or added twice would leave dQ far from the deterministic pass's.
    EXPECT_LT(rel_err(dq, dq_det), 1e-2);
    EXPECT_LT(rel_err(dq2, dq_det), 1e-2);
    EXPECT_LT(rel_err(dq_tiles, dq_det), 1e-2);
    EXPECT_LT(rel_err(dq, dq_mma), 2e-2);
    EXPECT_LT(rel_err(dk, dk_mma), 2e-2);
    EXPECT_LT(rel_err(dvv, dv_mma), 2e-2);
  }
  cuda::flash_attention_set_sm90_persistent(true);
  cuda::flash_attention_set_backward_kernel(cuda::FlashKernel::kAuto);
}

// The atomic dQ path's tiles under contention: one 64-row query tile against 8192 non-causal keys, so every key
// tile's work item (43-64 of them, all in flight at once) adds into the same dQ tiles on its first steps. The first
// contribution to a tile is stored and the rest added once it is in (flash_attention_bwd_sm90.cu's dQ writer); a
// contribution lost, added twice or added before the store would leave dq far from the deterministic pass's, which
// sums in a fixed order without that writer. Five calls each; dK and dV bitwise equal across calls.
TEST(FlashAttention, WgmmaBackwardContendedDqTiles) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t B = 2, T = 64, S = 8192, Hq = 4, Hk = 1;
  for (auto [dqk, dv] : {std::pair<int64_t, int64_t>{128, 128}, {64, 64}, {96, 64}}) {
    SCOPED_TRACE(testing::Message() << "(" << dqk << "," << dv << ")");
    Tensor q = rnd({B, T, Hq, dqk}, 61 + dqk, DType::BF16), k = rnd({B, S, Hk, dqk}, 62 + dqk, DType::BF16),
           v = rnd({B, S, Hk, dv}, 63 + dqk, DType::BF16), dout = rnd({B, T, Hq, dv}, 64 + dqk, DType::BF16);
    Tensor out = poisoned({B, T, Hq, dv}, DType::BF16), lse = poisoned({B, Hq, T}, DType::F32);
    cuda::flash_attention_forward(out, lse, q, k, v, 1, 0.05, false);
    auto backward = [&](bool deterministic) {
      std::array<Tensor, 3> g{poisoned(q.shape(), DType::BF16), poisoned(k.shape(), DType::BF16),
                              poisoned(v.shape(), DType::BF16)};
      cuda::flash_attention_backward(g[0], g[1], g[2], dout, q, k, v, out, lse, 1, 0.05, false, deterministic);
      return g;
    };
    const auto [dq_det, dk_det, dv_det] = backward(true);
    const auto [dq0, dk0, dv0] = backward(false);
    for (int call = 0; call < 5; ++call) {
      const auto [dq, dk, dvv] = backward(false);
      EXPECT_LT(rel_err(dq, dq_det), 1e-2) << "call " << call;
      EXPECT_LT(rel_err(dq, dq0), 1e-2) << "call " << call;
      EXPECT_TRUE(same_bits(dk, dk0)) << "call " << call;
      EXPECT_TRUE(same_bits(dvv, dv0)) << "call " << call;
    }
    EXPECT_LT(rel_err(dk0, dk_det), 1e-2);
    EXPECT_LT(rel_err(dv0, dv_det), 1e-2);
  }
}

// The Hopper wgmma backward (atomic dQ) on ragged causal GQA shapes with S > T and MLRA branches, every head-dim
// pair it takes. Run first and alone by scripts/attention_check.sh as a guard (LATTE_FLASH_NO_WGMMA_BWD).
TEST(FlashAttention, WgmmaBackward) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  cuda::flash_attention_set_backward_kernel(cuda::FlashKernel::kWgmma);
  uint64_t seed = 9700;
  for (int64_t head_qk : {192, 64, 128, 96})  // 96: on the 128 kernel (dK's and dq's pad columns not written)
    for (int64_t head_v : {128, 64}) {
      const FlashCase c{"wgmma bwd", 2, 300, 333, 4, 2, 2, head_qk, head_v, true, 0.09, false};
      SCOPED_TRACE(describe(c));
      const AttentionInputs in = make_attention_inputs(c, seed += 10);
      Tensor out = poisoned({c.B, c.T, c.R * c.Hq, c.Dv}, DType::BF16), lse = poisoned({c.B, c.R * c.Hq, c.T}, DType::F32);
      cuda::flash_attention_forward(out, lse, in.q, in.k, in.v, c.R, in.scale, c.causal);
      Tensor dq = poisoned(in.q.shape(), DType::BF16), dk = poisoned(in.k.shape(), DType::BF16),
             dv = poisoned(in.v.shape(), DType::BF16);
      cuda::flash_attention_backward(dq, dk, dv, in.dout, in.q, in.k, in.v, out, lse, c.R, in.scale, c.causal, false);
      EXPECT_CLOSE(dq, in.edq, DType::BF16);
      EXPECT_CLOSE(dk, in.edk, DType::BF16);
      EXPECT_CLOSE(dv, in.edv, DType::BF16);
    }
  cuda::flash_attention_set_backward_kernel(cuda::FlashKernel::kAuto);
}

TEST(FlashAttention, Unsupported) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  Tensor q = rnd({1, 8, 2, 48}, 1, DType::BF16), k = rnd({1, 8, 2, 48}, 2, DType::BF16),
         v = rnd({1, 8, 2, 48}, 3, DType::BF16), out = poisoned({1, 8, 2, 48}, DType::BF16);
  EXPECT_FALSE(cuda::flash_attention_supported(q, k, v, out));  // head dim 48
  Tensor qf = rnd({1, 8, 2, 64}, 4, DType::F32), kf = rnd({1, 8, 2, 64}, 5, DType::F32),
         vf = rnd({1, 8, 2, 64}, 6, DType::F32), of = poisoned({1, 8, 2, 64}, DType::F32);
  EXPECT_FALSE(cuda::flash_attention_supported(qf, kf, vf, of));  // f32
}

}  // namespace
#endif  // LATTE_WITH_CUDA
