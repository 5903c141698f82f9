// CUDA embedding, RMSNorm, group norm, RoPE, SwiGLU, cross-entropy and branch sum, forward and backward,
// against the CPU reference kernels run in f64 on the same inputs. Accumulating outputs (dweight, dtable)
// start from the same random values on both sides. Deterministic kernels are run twice and compared bitwise.
#include "tests/cuda/cuda_test_util.h"

#ifdef LATTE_WITH_CUDA
#include <cmath>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cuda/cuda_ops.h"

using namespace latte;
using namespace latte::cudatest;

namespace {

const DType kFloat[] = {DType::F32, DType::BF16};

Tensor ids_tensor(int64_t n, int64_t vocab, uint64_t seed, bool skewed) {
  std::vector<double> v(static_cast<size_t>(n));
  Tensor u = Tensor::rand({n}, seed, 0, 0.0, 1.0, DType::F64);
  std::vector<double> r = u.to_vector();
  for (size_t i = 0; i < v.size(); ++i) {
    double x = skewed ? r[i] * r[i] * r[i] : r[i];  // skewed: many repeats of small ids
    v[i] = std::floor(x * static_cast<double>(vocab));
  }
  return Tensor::from_vector(v, {n}, DType::I32, gpu());
}

TEST(CudaEmbedding, ForwardBackward) {
  LATTE_REQUIRE_CUDA();
  for (DType t : kFloat)
    for (int64_t D : {64, 13})
      for (int64_t N : {1, 37, 4096}) {
        SCOPED_TRACE(testing::Message() << dtype_name(t) << " D=" << D << " N=" << N);
        const int64_t V = 257;
        Tensor table = rnd({V, D}, 1 + static_cast<uint64_t>(N), t);
        Tensor ids = ids_tensor(N, V, 2 + static_cast<uint64_t>(N), N > 100);
        Tensor rids = ids.to(Device::cpu());
        Tensor out = poisoned({N, D}, t);
        cuda::embedding_forward(out, table, ids);
        Tensor expect = Tensor::empty({N, D}, DType::F64);
        cpu::embedding_forward(expect, ref(table), rids);
        EXPECT_EQ(rel_err(out, expect), 0.0);

        Tensor dout = rnd({N, D}, 3 + static_cast<uint64_t>(N), t);
        Tensor dtable = rnd({V, D}, 4 + static_cast<uint64_t>(N), t);
        Tensor dtable2 = dtable.clone();
        Tensor dexpect = ref(dtable);
        cuda::embedding_backward(dtable, dout, ids);
        cpu::embedding_backward(dexpect, ref(dout), rids);
        EXPECT_CLOSE(dtable, dexpect, t);
        cuda::embedding_backward(dtable2, dout, ids);
        EXPECT_TRUE(same_bits(dtable, dtable2)) << "embedding backward is not deterministic";
      }
}

// One id at every position: a run that crosses every window of the backward's first pass (head/tail partials
// summed by the second pass), next to a short run at the end; bf16 and f32.
TEST(CudaEmbedding, BackwardRunAcrossWindows) {
  LATTE_REQUIRE_CUDA();
  for (DType t : kFloat) {
    const int64_t N = 1000, V = 11, D = 72;
    std::vector<double> idv(static_cast<size_t>(N), 7.0);
    for (int64_t i = 990; i < N; ++i) idv[static_cast<size_t>(i)] = 3.0;
    Tensor ids = Tensor::from_vector(idv, {N}, DType::I32, gpu());
    Tensor dout = rnd({N, D}, 91, t), dtable = rnd({V, D}, 92, t);
    Tensor dexpect = ref(dtable);
    cuda::embedding_backward(dtable, dout, ids);
    cpu::embedding_backward(dexpect, ref(dout), ids.to(Device::cpu()));
    EXPECT_CLOSE(dtable, dexpect, t) << dtype_name(t);
  }
}

TEST(CudaRMSNorm, ForwardBackward) {
  LATTE_REQUIRE_CUDA();
  for (DType t : kFloat)
    for (int64_t D : {2048, 768, 100, 7})
      for (int64_t N : {1, 33, 5000}) {  // 5000 rows: more than the persistent grid, several rows per block
        SCOPED_TRACE(testing::Message() << dtype_name(t) << " D=" << D << " N=" << N);
        Tensor x = rnd({N, D}, 10 + static_cast<uint64_t>(D), t, 2.0);
        Tensor w = rnd({D}, 11, t, 0.5);
        Tensor out = poisoned({N, D}, t), rstd = poisoned({N}, DType::F32);
        cuda::rmsnorm_forward(out, rstd, x, w, 1e-6);
        Tensor eout = Tensor::empty({N, D}, DType::F64), erstd = Tensor::empty({N}, DType::F64);
        cpu::rmsnorm_forward(eout, erstd, ref(x), ref(w), 1e-6);
        EXPECT_CLOSE(out, eout, t);
        EXPECT_CLOSE(rstd, erstd, DType::F32);

        Tensor dout = rnd({N, D}, 12 + static_cast<uint64_t>(N), t);
        Tensor dx = poisoned({N, D}, t), dw = rnd({D}, 13, t);
        Tensor edx = Tensor::empty({N, D}, DType::F64), edw = ref(dw);
        Tensor dw2 = dw.clone();
        cuda::rmsnorm_backward(dx, dw, dout, x, w, rstd, false);
        cpu::rmsnorm_backward(edx, edw, ref(dout), ref(x), ref(w), erstd, false);
        EXPECT_CLOSE(dx, edx, t);
        EXPECT_CLOSE(dw, edw, t);
        Tensor dx2 = poisoned({N, D}, t);
        cuda::rmsnorm_backward(dx2, dw2, dout, x, w, rstd, false);
        EXPECT_TRUE(same_bits(dw, dw2));
        // Added into a prior gradient (the residual stream's): prior + dx.
        Tensor prior = rnd({N, D}, 14, t), dw3 = rnd({D}, 13, t);
        Tensor eprior = ref(prior), edw3 = ref(dw3);
        cuda::rmsnorm_backward(prior, dw3, dout, x, w, rstd, true);
        cpu::rmsnorm_backward(eprior, edw3, ref(dout), ref(x), ref(w), erstd, true);
        EXPECT_CLOSE(prior, eprior, t);
      }
}

TEST(CudaGroupNorm, ForwardBackward) {
  LATTE_REQUIRE_CUDA();
  struct Case {
    int64_t N, groups, Dg;
  };
  // Staged-tile path (Dg % 8 == 0, Dg <= 512): teams of 32 x 16 channels (512), 8 x 8 (64), 16 x 8 (128, the
  // bench's G = 16), G = 3 (teams per block a multiple of 3, mean/rstd of 3 groups staged per row); row counts
  // that leave a partial last tile (copied in by the block), and 131072 rows of 128 (more tiles than the
  // ring's stages times the grid: every stage is refilled several times). General path: Dg % 8 != 0 (300,
  // 20, 7) and Dg > 512 (1000).
  const Case cases[] = {{50, 1, 512},  {37, 16, 64}, {4000, 16, 64}, {600, 16, 128}, {50, 3, 64},  {131072, 1, 128},
                        {33, 2, 300},  {9, 3, 20},   {300, 4, 7},    {20, 2, 1000}};
  for (DType t : kFloat)
    for (const Case& c : cases)
      for (bool rms : {false, true})
        for (int affine = 0; affine < 3; ++affine) {  // 0: none, 1: weight, 2: weight + bias
          if (rms && affine == 2) continue;
          if (c.N > 10000 && affine != (rms ? 1 : 2)) continue;  // the large case: one run per mode
          SCOPED_TRACE(testing::Message() << dtype_name(t) << " N=" << c.N << " G=" << c.groups << " Dg=" << c.Dg
                                          << " rms=" << rms << " affine=" << affine);
          const int64_t C = c.groups * c.Dg;
          Tensor x = rnd({c.N, C}, 20 + static_cast<uint64_t>(C), t, 1.5);
          {  // a mean offset, so LayerNorm's centring matters
            Tensor shift = Tensor::full({c.N, C}, 0.7, t, gpu());
            cuda::add(x, x, shift, 1.0, 1.0);
          }
          Tensor w = affine >= 1 ? rnd({C}, 21, t, 0.5) : Tensor();
          Tensor b = affine >= 2 ? rnd({C}, 22, t, 0.5) : Tensor();
          Tensor out = poisoned({c.N, C}, t), mean = poisoned({c.N, c.groups}, DType::F32),
                 rstd = poisoned({c.N, c.groups}, DType::F32);
          cuda::group_norm_forward(out, mean, rstd, x, w, b, c.groups, 1e-5, rms);
          Tensor eout = Tensor::empty({c.N, C}, DType::F64), emean = Tensor::empty({c.N, c.groups}, DType::F64),
                 erstd = Tensor::empty({c.N, c.groups}, DType::F64);
          Tensor rw = w.defined() ? ref(w) : Tensor(), rb = b.defined() ? ref(b) : Tensor();
          cpu::group_norm_forward(eout, emean, erstd, ref(x), rw, rb, c.groups, 1e-5, rms);
          EXPECT_CLOSE(out, eout, t);
          EXPECT_CLOSE(rstd, erstd, DType::F32);

          Tensor dout = rnd({c.N, C}, 23, t);
          Tensor dx = poisoned({c.N, C}, t);
          Tensor dw = affine >= 1 ? rnd({C}, 24, t) : Tensor(), db = affine >= 2 ? rnd({C}, 25, t) : Tensor();
          Tensor edx = Tensor::empty({c.N, C}, DType::F64);
          Tensor edw = dw.defined() ? ref(dw) : Tensor(), edb = db.defined() ? ref(db) : Tensor();
          Tensor dw2 = dw.defined() ? dw.clone() : Tensor(), db2 = db.defined() ? db.clone() : Tensor();
          cuda::group_norm_backward(dx, dw, db, dout, x, w, mean, rstd, c.groups, rms);
          cpu::group_norm_backward(edx, edw, edb, ref(dout), ref(x), rw, emean, erstd, c.groups, rms);
          EXPECT_CLOSE(dx, edx, t);
          if (dw.defined()) {
            EXPECT_CLOSE(dw, edw, t);
          }
          if (db.defined()) {
            EXPECT_CLOSE(db, edb, t);
          }
          // dweight/dbias are sums of per-block partials in a fixed order: bitwise reproducible
          Tensor dx2 = poisoned({c.N, C}, t);
          cuda::group_norm_backward(dx2, dw2, db2, dout, x, w, mean, rstd, c.groups, rms);
          EXPECT_TRUE(same_bits(dx, dx2));
          if (dw.defined()) {
            EXPECT_TRUE(same_bits(dw, dw2)) << "group norm dweight is not deterministic";
          }
          if (db.defined()) {
            EXPECT_TRUE(same_bits(db, db2)) << "group norm dbias is not deterministic";
          }
        }
}

TEST(CudaRope, StridedSliceForwardBackward) {
  LATTE_REQUIRE_CUDA();
  for (DType t : kFloat)
    for (int64_t offset : {0, 32}) {
      // q of MLA: heads of width 96 = 32 nope + 64 rope, taken from a fused projection (B, T, 3*H*96)
      const int64_t B = 2, T = 37, H = 3, D = 96, R = offset ? 64 : 96;
      Tensor fused = rnd({B, T, 2 * H * D}, 30 + static_cast<uint64_t>(offset), t);
      Tensor x = fused.narrow(2, H * D, H * D).view({B, T, H, D});  // strided in B/T
      std::vector<double> f(static_cast<size_t>(R / 2));
      for (int64_t j = 0; j < R / 2; ++j) f[static_cast<size_t>(j)] = std::pow(10000.0, -2.0 * j / R);
      Tensor inv = Tensor::from_vector(f, {R / 2}, DType::F32, gpu());
      const int64_t start = 4000;  // large positions: angles must be exact
      Tensor out = poisoned({B, T, H, D}, t);
      cuda::rope_forward(out, x, inv, start, offset);
      Tensor eout = Tensor::empty({B, T, H, D}, DType::F64);
      cpu::rope_forward(eout, ref(x), inv.to(Device::cpu()), start, offset);
      EXPECT_CLOSE(out, eout, t);

      Tensor dout = rnd({B, T, H, D}, 31, t);
      Tensor dx = poisoned({B, T, H, D}, t);
      cuda::rope_backward(dx, dout, inv, start, offset);
      Tensor edx = Tensor::empty({B, T, H, D}, DType::F64);
      cpu::rope_backward(edx, ref(dout), inv.to(Device::cpu()), start, offset);
      EXPECT_CLOSE(dx, edx, t);

      // in place
      Tensor y = x.clone();
      cuda::rope_forward(y, y, inv, start, offset);
      EXPECT_CLOSE(y, eout, t);
    }
  // odd geometry: one pair at a time (head width 11, 3 pairs from channel 1), strided rows
  for (DType t : kFloat) {
    Tensor base = rnd({3, 5, 2, 13}, 35, t);
    Tensor x = base.narrow(3, 1, 11);
    Tensor inv = Tensor::from_vector({1.0, 0.1, 0.01}, {3}, DType::F32, gpu());
    Tensor out = poisoned({3, 5, 2, 11}, t), eout = Tensor::empty({3, 5, 2, 11}, DType::F64);
    cuda::rope_forward(out, x, inv, 7, 1);
    cpu::rope_forward(eout, ref(x), inv.to(Device::cpu()), 7, 1);
    EXPECT_CLOSE(out, eout, t);
    Tensor dx = poisoned({3, 5, 2, 11}, t), edx = Tensor::empty({3, 5, 2, 11}, DType::F64);
    cuda::rope_backward(dx, x, inv, 7, 1);
    cpu::rope_backward(edx, ref(x), inv.to(Device::cpu()), 7, 1);
    EXPECT_CLOSE(dx, edx, t);
  }
}

TEST(CudaSwiGLU, ForwardBackward) {
  LATTE_REQUIRE_CUDA();
  for (DType t : kFloat)
    for (int64_t n : {1, 13, 5504 * 3 + 1}) {
      SCOPED_TRACE(testing::Message() << dtype_name(t) << " n=" << n);
      Tensor g = rnd({n}, 40, t, 2.0), u = rnd({n}, 41, t);
      Tensor out = poisoned({n}, t);
      cuda::swiglu_forward(out, g, u);
      Tensor eout = Tensor::empty({n}, DType::F64);
      cpu::swiglu_forward(eout, ref(g), ref(u));
      EXPECT_CLOSE(out, eout, t);
      Tensor dout = rnd({n}, 42, t);
      Tensor dg = poisoned({n}, t), du = poisoned({n}, t);
      cuda::swiglu_backward(dg, du, dout, g, u);
      Tensor edg = Tensor::empty({n}, DType::F64), edu = Tensor::empty({n}, DType::F64);
      cpu::swiglu_backward(edg, edu, ref(dout), ref(g), ref(u));
      EXPECT_CLOSE(dg, edg, t);
      EXPECT_CLOSE(du, edu, t);
    }
}

TEST(CudaCrossEntropy, LossAndGradientInOnePass) {
  LATTE_REQUIRE_CUDA();
  for (DType t : kFloat)
    for (int64_t V : {50304, 4096, 1000, 37})
      for (bool in_place : {false, true}) {
        // Staged path: V % 8 == 0, V >= 1024 and two rows fitting in shared memory: bf16 50304 (one block per
        // SM; 300 rows, so blocks walk several rows and refill both row buffers) and 4096 in both dtypes (128
        // threads, several blocks per SM). The others take the two-pass fallback: f32 50304 (too wide), 1000
        // (too narrow), 37 (scalar access).
        const int64_t N = V == 50304 ? 300 : 600;
        SCOPED_TRACE(testing::Message() << dtype_name(t) << " V=" << V << " N=" << N << " in_place=" << in_place);
        Tensor logits = rnd({N, V}, 50 + static_cast<uint64_t>(V), t, 3.0);
        Tensor targets = ids_tensor(N, V, 51, false);
        std::vector<double> tv = targets.to_vector();
        tv[3] = -100;  // ignored rows (the staged path skips their loads): two isolated, then every 7th
        tv[10] = -100;
        for (int64_t i = 40; i < N; i += 7) tv[static_cast<size_t>(i)] = -100;
        targets = Tensor::from_vector(tv, {N}, DType::I32, gpu());
        Tensor rlogits = ref(logits), rtargets = targets.to(Device::cpu());
        Tensor losses = poisoned({N}, DType::F32);
        Tensor dlogits = in_place ? logits : poisoned({N, V}, t);
        cuda::cross_entropy_forward_backward(losses, dlogits, logits, targets, -100, 0.125);
        Tensor elosses = Tensor::empty({N}, DType::F64), edlogits = Tensor::empty({N, V}, DType::F64);
        cpu::cross_entropy_forward_backward(elosses, edlogits, rlogits, rtargets, -100, 0.125);
        EXPECT_CLOSE(losses, elosses, DType::F32);
        EXPECT_CLOSE(dlogits, edlogits, t);
        Tensor losses_only = poisoned({N}, DType::F32);
        if (!in_place) {
          cuda::cross_entropy_forward_backward(losses_only, Tensor(), logits, targets, -100, 1.0);
          EXPECT_TRUE(same_bits(losses_only, losses));
        }
      }
}

TEST(CudaBranchSum, ForwardBackward) {
  LATTE_REQUIRE_CUDA();
  for (DType t : kFloat)
    for (int64_t R : {1, 2, 4})
      for (int64_t D : {64, 5}) {
        const int64_t B = 2, T = 9, H = 3;
        Tensor in = rnd({B, T, R * H, D}, 60 + static_cast<uint64_t>(R), t);
        Tensor out = poisoned({B, T, H, D}, t);
        cuda::branch_sum_forward(out, in, R, 0.5);
        Tensor eout = Tensor::empty({B, T, H, D}, DType::F64);
        cpu::branch_sum_forward(eout, ref(in), R, 0.5);
        EXPECT_CLOSE(out, eout, t);
        Tensor dout = rnd({B, T, H, D}, 61, t);
        Tensor din = poisoned({B, T, R * H, D}, t);
        cuda::branch_sum_backward(din, dout, R, 0.5);
        Tensor edin = Tensor::empty({B, T, R * H, D}, DType::F64);
        cpu::branch_sum_backward(edin, ref(dout), R, 0.5);
        EXPECT_CLOSE(din, edin, t);
      }
}

}  // namespace
#endif  // LATTE_WITH_CUDA
