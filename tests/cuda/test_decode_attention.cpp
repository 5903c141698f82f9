// Decode attention kernels (kernels/cuda/decode_attention.h) against the CPU reference attention in f64:
//  - MHA/GQA/MQA decode over a cache that is a strided view of a larger buffer equals full attention of one
//    query (T = 1, causal, S cached positions) on the same cache;
//  - the absorbed latent kernel equals plain MQA attention with k = [c | kr], v = c;
//  - and, after the wkv_b expansion (k^N_h = W_UK,h c, v_h = W_UV,h c), o_h = W_UV,h z_h equals plain MLA
//    attention of q = [q^N | q^R] (spec/attention.md, "Absorbed decode").
// Outputs are poisoned with NaN first; bf16 relative error < 1e-2.
#include "tests/cuda/cuda_test_util.h"

#ifdef LATTE_WITH_CUDA
#include <cmath>
#include <cstdlib>
#include <string>
#include <vector>

#include "kernels/cpu/cpu_ops.h"
#include "core/cuda_context.h"
#include "kernels/cuda/decode_attention.h"
#include "kernels/cuda/delayed_copy.h"

using namespace latte;
using namespace latte::cudatest;

namespace {

// Concatenates the last dims of two CPU tensors of equal leading shape (f64 out).
Tensor cat_last(const Tensor& a, const Tensor& b) {
  const int64_t da = a.size(-1), db = b.size(-1), rows = a.numel() / da;
  std::vector<double> va = a.contiguous().to_vector(), vb = b.contiguous().to_vector(), out;
  out.reserve(static_cast<size_t>(rows * (da + db)));
  for (int64_t r = 0; r < rows; ++r) {
    out.insert(out.end(), va.begin() + r * da, va.begin() + (r + 1) * da);
    out.insert(out.end(), vb.begin() + r * db, vb.begin() + (r + 1) * db);
  }
  std::vector<int64_t> dims;
  for (int d = 0; d < a.dim() - 1; ++d) dims.push_back(a.size(d));
  dims.push_back(da + db);
  return Tensor::from_vector(out, Shape(dims), DType::F64);
}

// The absorbed latent decode's reference on the CPU (f64): plain MQA attention of q = [q_abs | q_rope] over keys
// [c | kr] and values c (no rope part when q_rope is undefined). out (B, H, Dc), lse (B, H).
struct LatentReference {
  Tensor out, lse;
};
LatentReference latent_reference(const Tensor& q_abs, const Tensor& q_rope, const Tensor& c, const Tensor& kr,
                                 double scale) {
  const int64_t B = c.size(0), S = c.size(1), Dc = c.size(2), H = q_abs.size(1);
  const int64_t dk = Dc + (kr.defined() ? kr.size(2) : 0);
  Tensor rc = ref(c), rqa = ref(q_abs);
  Tensor q = kr.defined() ? cat_last(rqa, ref(q_rope)) : rqa, k = kr.defined() ? cat_last(rc, ref(kr)) : rc;
  Tensor out = Tensor::empty({B, 1, H, Dc}, DType::F64), lse = Tensor::empty({B, H, 1}, DType::F64);
  cpu::attention_forward(out, lse, q.view({B, 1, H, dk}), k.view({B, S, 1, dk}), rc.view({B, S, 1, Dc}), 1, scale,
                         true);
  return {out.view({B, H, Dc}), lse.view({B, H})};
}

struct GqaCase {
  int64_t B, S, Smax, Hq, Hk, Dqk, Dv;
};

TEST(DecodeAttention, GqaMatchesFullAttention) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const GqaCase cases[] = {
      {2, 1, 8, 4, 4, 64, 64},        {1, 1000, 1100, 8, 2, 128, 128}, {3, 777, 800, 4, 1, 128, 128},
      {1, 4097, 4200, 32, 8, 128, 128}, {2, 130, 200, 6, 3, 192, 128},   {1, 65, 65, 16, 1, 96, 64},
      {2, 300, 310, 48, 2, 64, 64},  // 24 heads per kv head: two head tiles per group, side by side in the grid
      {2, 500, 520, 8, 4, 128, 64},  {1, 333, 333, 4, 2, 64, 128},  // sm_90a TMA tiles with Dqk != Dv
  };
  uint64_t seed = 7000;
  for (const GqaCase& c : cases) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " S=" << c.S << " Hq=" << c.Hq << " Hk=" << c.Hk
                                    << " Dqk=" << c.Dqk << " Dv=" << c.Dv);
    const DType t = DType::BF16;
    Tensor q = rnd({c.B, c.Hq, c.Dqk}, seed += 10, t);
    Tensor kbuf = rnd({c.B, c.Smax, c.Hk, c.Dqk}, seed + 1, t), vbuf = rnd({c.B, c.Smax, c.Hk, c.Dv}, seed + 2, t);
    Tensor k = kbuf.narrow(1, 0, c.S), v = vbuf.narrow(1, 0, c.S);  // the filled part of the cache
    ASSERT_TRUE(cuda::decode_attention_supported(q, k, v, poisoned({c.B, c.Hq, c.Dv}, t)));
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.Dqk));
    Tensor out = poisoned({c.B, c.Hq, c.Dv}, t), lse = poisoned({c.B, c.Hq}, DType::F32);
    cuda::decode_attention(out, lse, q, k, v, scale, c.S);  // every row written long before
    Tensor eout = Tensor::empty({c.B, 1, c.Hq, c.Dv}, DType::F64), else_ = Tensor::empty({c.B, c.Hq, 1}, DType::F64);
    cpu::attention_forward(eout, else_, ref(q).view({c.B, 1, c.Hq, c.Dqk}), ref(k), ref(v), 1, scale, true);
    EXPECT_CLOSE(out, eout.view({c.B, c.Hq, c.Dv}), t);
    const double e = rel_err(lse, else_.view({c.B, c.Hq}));
    EXPECT_LT(e, 1e-4) << "lse rel. error " << e;
  }
}

struct LatentCase {
  int64_t B, S, H, Dc, Dr, Dn, Dv;
  bool check_expansion = true;  // also compare with the per-head expanded K/V (slow on the CPU for large caches)
};

TEST(DecodeAttention, LatentEqualsPlainAttention) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const LatentCase cases[] = {
      {2, 1, 4, 64, 16, 32, 32},     {1, 1000, 16, 512, 64, 128, 128}, {2, 333, 12, 96, 32, 64, 64},
      {1, 2049, 20, 256, 32, 64, 64}, {3, 129, 8, 128, 0, 64, 64},      {1, 700, 4, 192, 64, 64, 64},
      {2, 1500, 40, 512, 64, 32, 32},  // three head tiles sharing one cache (sm_90a: one wgmma tile, 24 rows idle)
      {3, 300, 64, 512, 64, 32, 32},   // sm_90a: one full wgmma tile of 64 heads
      {2, 400, 24, 512, 64, 32, 32},   // sm_90a: 2b9's head count, two 16-row TMA passes over one cache
      {1, 1900, 128, 512, 64, 16, 16}, // sm_90a: two wgmma tiles, 6 splits, a ragged last key tile
      {3, 700, 96, 512, 64, 16, 16},   // sm_90a: two wgmma tiles, 32 rows of the second idle
      {2, 40, 64, 512, 64, 16, 16},    // sm_90a wgmma: one ragged key tile (the seesaw's second warpgroup idle)
      {1, 100, 128, 512, 64, 16, 16},  // sm_90a wgmma: one pair of key tiles
      {1, 150, 72, 512, 64, 16, 16},   // sm_90a wgmma: three key tiles, 56 rows of the second head tile idle
      {2, 1300, 10, 512, 64, 32, 32},  // sm_90a: the 16-row kernel with TMA tiles, 6 of 16 rows idle, ragged tail
      {2, 901, 12, 256, 64, 32, 32},   // sm_90a: TMA tiles at MLA-125M's latent (Dc 256), 4 of 16 rows idle
      {1, 2500, 16, 96, 32, 64, 64},   // sm_90a: EG-MLA-125M's latent rows (Dc 96, Dr 32), 32-column TMA blocks
      // sm_90a: EG-MLA-1.3B's rows (Dc 192) in splits of 8+ tiles: four TMA stages (the expansion check would take
      // ~25 s of CPU here; the cases above cover it)
      {6, 7300, 40, 192, 64, 32, 32, false},
  };
  uint64_t seed = 8000;
  for (const LatentCase& c : cases) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " S=" << c.S << " H=" << c.H << " Dc=" << c.Dc
                                    << " Dr=" << c.Dr);
    const DType t = DType::BF16;
    const double scale = 1.0 / std::sqrt(static_cast<double>(c.Dn + c.Dr));
    Tensor cbuf = rnd({c.B, c.S + 5, c.Dc}, seed += 10, t);  // latent cache, a view of a longer buffer
    Tensor cc = cbuf.narrow(1, 0, c.S);
    Tensor kr, q_rope;
    if (c.Dr > 0) {
      kr = rnd({c.B, c.S, c.Dr}, seed + 1, t);
      q_rope = rnd({c.B, c.H, c.Dr}, seed + 2, t);
    }
    // Absorb: q_abs,h = W_UK,h^T q^N_h with W_UK,h (Dn, Dc) from a random wkv_b, computed on the CPU.
    Tensor w_uk = Tensor::randn({c.H, c.Dn, c.Dc}, seed + 3, 0, 1.0 / std::sqrt(static_cast<double>(c.Dc)), DType::F64);
    Tensor w_uv = Tensor::randn({c.H, c.Dv, c.Dc}, seed + 4, 0, 1.0 / std::sqrt(static_cast<double>(c.Dc)), DType::F64);
    Tensor q_nope = Tensor::randn({c.B, c.H, c.Dn}, seed + 5, 0, 1.0, DType::F64);
    std::vector<double> uk = w_uk.to_vector(), uv = w_uv.to_vector(), qn = q_nope.to_vector();
    std::vector<double> qa(static_cast<size_t>(c.B * c.H * c.Dc), 0.0);
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t n = 0; n < c.Dn; ++n)
          for (int64_t d = 0; d < c.Dc; ++d)
            qa[(b * c.H + h) * c.Dc + d] += uk[(h * c.Dn + n) * c.Dc + d] * qn[(b * c.H + h) * c.Dn + n];
    Tensor q_abs = Tensor::from_vector(qa, {c.B, c.H, c.Dc}, DType::F64).to(t).to(gpu());

    ASSERT_TRUE(cuda::decode_attention_latent_supported(q_abs, q_rope, cc, kr, poisoned({c.B, c.H, c.Dc}, t)));
    Tensor z = poisoned({c.B, c.H, c.Dc}, t), lse = poisoned({c.B, c.H}, DType::F32);
    cuda::decode_attention_latent(z, lse, q_abs, q_rope, cc, kr, scale, c.S);

    // (1) plain MQA attention on the same cache: q = [q_abs | q_rope], k = [c | kr], v = c.
    const LatentReference expect = latent_reference(q_abs, q_rope, cc, kr, scale);
    EXPECT_CLOSE(z, expect.out, t);
    const double e = rel_err(lse, expect.lse);
    EXPECT_LT(e, 1e-4) << "lse rel. error " << e;

    // (2) the plain MLA path after the wkv_b expansion: k^N = W_UK c, v = W_UV c per head, q = [q^N | q^R].
    if (!c.check_expansion) continue;
    std::vector<double> cv = ref(cc).contiguous().to_vector();
    std::vector<double> kn(static_cast<size_t>(c.B * c.S * c.H * c.Dn)), vv(static_cast<size_t>(c.B * c.S * c.H * c.Dv));
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t s = 0; s < c.S; ++s)
        for (int64_t h = 0; h < c.H; ++h) {
          const double* cr = cv.data() + (b * c.S + s) * c.Dc;
          for (int64_t n = 0; n < c.Dn; ++n) {
            double acc = 0;
            for (int64_t d = 0; d < c.Dc; ++d) acc += uk[(h * c.Dn + n) * c.Dc + d] * cr[d];
            kn[((b * c.S + s) * c.H + h) * c.Dn + n] = acc;
          }
          for (int64_t n = 0; n < c.Dv; ++n) {
            double acc = 0;
            for (int64_t d = 0; d < c.Dc; ++d) acc += uv[(h * c.Dv + n) * c.Dc + d] * cr[d];
            vv[((b * c.S + s) * c.H + h) * c.Dv + n] = acc;
          }
        }
    Tensor kN = Tensor::from_vector(kn, {c.B, c.S, c.H, c.Dn}, DType::F64);
    Tensor vP = Tensor::from_vector(vv, {c.B, c.S, c.H, c.Dv}, DType::F64);
    Tensor qP = q_nope, kP = kN;
    if (c.Dr > 0) {
      qP = cat_last(q_nope, ref(q_rope));
      std::vector<double> krv = ref(kr).contiguous().to_vector(), kcat;
      std::vector<double> knv = kN.to_vector();
      for (int64_t bs = 0; bs < c.B * c.S; ++bs)
        for (int64_t h = 0; h < c.H; ++h) {
          kcat.insert(kcat.end(), knv.begin() + (bs * c.H + h) * c.Dn, knv.begin() + (bs * c.H + h + 1) * c.Dn);
          kcat.insert(kcat.end(), krv.begin() + bs * c.Dr, krv.begin() + (bs + 1) * c.Dr);
        }
      kP = Tensor::from_vector(kcat, {c.B, c.S, c.H, c.Dn + c.Dr}, DType::F64);
    }
    Tensor eo = Tensor::empty({c.B, 1, c.H, c.Dv}, DType::F64), el2 = Tensor::empty({c.B, c.H, 1}, DType::F64);
    cpu::attention_forward(eo, el2, qP.view({c.B, 1, c.H, c.Dn + c.Dr}), kP, vP, 1, scale, true);
    std::vector<double> zv = z.to(DType::F64).cpu().to_vector(), ov(static_cast<size_t>(c.B * c.H * c.Dv));
    for (int64_t b = 0; b < c.B; ++b)
      for (int64_t h = 0; h < c.H; ++h)
        for (int64_t n = 0; n < c.Dv; ++n) {
          double acc = 0;
          for (int64_t d = 0; d < c.Dc; ++d) acc += uv[(h * c.Dv + n) * c.Dc + d] * zv[(b * c.H + h) * c.Dc + d];
          ov[(b * c.H + h) * c.Dv + n] = acc;
        }
    const double e2 = rel_err(Tensor::from_vector(ov, {c.B, c.H, c.Dv}, DType::F64), eo.view({c.B, c.H, c.Dv}));
    EXPECT_LT(e2, 1e-2) << "absorbed vs plain MLA rel. error " << e2;
  }
}

// Keys whose scores jump far above the running maximum late in a split (the wgmma kernel, more than 32 heads,
// moves its maximum and rescales O and l only on rises of more than 8 in log2 units; smaller rises keep the old
// maximum; the 16-row kernel, the 16-head case, on every rise): every head's query is close to one direction u,
// and three cache rows are u scaled to scores 12, 12 and 9 (natural units, scale 1) against ~N(0, 1) elsewhere,
// so the output mixes the two top rows equally, the third at e^-3 of their weight.
TEST(DecodeAttention, LatentLateMaximaRescale) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t Dc = 512, Dr = 64;
  const struct { int64_t B, S, H; } cases[] = {{2, 1900, 128}, {1, 700, 64}, {1, 3000, 16}};
  uint64_t seed = 9000;
  for (const auto& c : cases) {
    SCOPED_TRACE(testing::Message() << "B=" << c.B << " S=" << c.S << " H=" << c.H);
    const DType t = DType::BF16;
    std::vector<double> u = Tensor::randn({Dc}, seed += 10, 0, 1.0, DType::F64).to_vector();
    double norm = 0;
    for (double x : u) norm += x * x;
    for (double& x : u) x /= std::sqrt(norm);
    std::vector<double> qa = Tensor::randn({c.B, c.H, Dc}, seed + 1, 0, 0.3 / std::sqrt(double(Dc)), DType::F64).to_vector();
    for (size_t i = 0; i < qa.size(); ++i) qa[i] += u[i % Dc];
    // Rows of ~unit norm: scores ~N(0, 1).
    std::vector<double> cv = Tensor::randn({c.B, c.S, Dc}, seed + 2, 0, 1.0 / std::sqrt(double(Dc)), DType::F64).to_vector();
    const std::pair<int64_t, double> spikes[] = {{c.S / 5, 12.0}, {c.S / 2, 12.0}, {c.S - 2, 9.0}};
    for (int64_t b = 0; b < c.B; ++b)
      for (const auto& [pos, score] : spikes)
        for (int64_t d = 0; d < Dc; ++d) cv[(b * c.S + pos) * Dc + d] = score * u[d];
    Tensor q_abs = Tensor::from_vector(qa, {c.B, c.H, Dc}, DType::F64).to(t).to(gpu());
    Tensor cc = Tensor::from_vector(cv, {c.B, c.S, Dc}, DType::F64).to(t).to(gpu());
    Tensor q_rope = rnd({c.B, c.H, Dr}, seed + 3, t, 0.1), kr = rnd({c.B, c.S, Dr}, seed + 4, t, 0.1);
    Tensor z = poisoned({c.B, c.H, Dc}, t), lse = poisoned({c.B, c.H}, DType::F32);
    cuda::decode_attention_latent(z, lse, q_abs, q_rope, cc, kr, 1.0, c.S - 1);
    const LatentReference expect = latent_reference(q_abs, q_rope, cc, kr, 1.0);
    EXPECT_CLOSE(z, expect.out, t);
    const double e = rel_err(lse, expect.lse);
    EXPECT_LT(e, 1e-4) << "lse rel. error " << e;
  }
}

// Calls back to back on one stream without a synchronisation: on sm_90 each pass 1 is a programmatic dependent of
// the kernel before it (the previous call's combine) and each combine of its pass 1, so their start overlaps the
// previous kernel's tail, and the partials' buffers of one call are the caching allocator's blocks freed by the call
// before. Every output must equal the reference: a pass 1 that read or wrote before the previous kernel had
// finished would mix two calls' partials. Three shapes in turn change the kernels, grids and buffer sizes: the
// 16-row latent kernel (H 16), the wgmma one (sm_90a, H 64) and GQA.
TEST(DecodeAttention, BackToBackCallsMatchTheReference) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const DType t = DType::BF16;
  const int64_t Dc = 512, Dr = 64;
  struct Latent {
    int64_t B, S, H;
    Tensor q_abs, q_rope, c, kr, expect;
  };
  Latent lat[] = {{1, 9000, 16, {}, {}, {}, {}, {}}, {2, 3000, 64, {}, {}, {}, {}, {}}};
  const double lscale = 1.0 / std::sqrt(double(Dc + Dr));
  uint64_t seed = 9500;
  for (Latent& l : lat) {
    l.q_abs = rnd({l.B, l.H, Dc}, seed++, t);
    l.q_rope = rnd({l.B, l.H, Dr}, seed++, t);
    l.c = rnd({l.B, l.S, Dc}, seed++, t);
    l.kr = rnd({l.B, l.S, Dr}, seed++, t);
    l.expect = latent_reference(l.q_abs, l.q_rope, l.c, l.kr, lscale).out;
  }
  const int64_t gB = 3, gS = 5000, Hq = 8, Hk = 2, D = 128;
  Tensor q = rnd({gB, Hq, D}, seed++, t), k = rnd({gB, gS, Hk, D}, seed++, t), v = rnd({gB, gS, Hk, D}, seed++, t);
  const double gscale = 1.0 / std::sqrt(double(D));
  Tensor eo = Tensor::empty({gB, 1, Hq, D}, DType::F64), elg = Tensor::empty({gB, Hq, 1}, DType::F64);
  cpu::attention_forward(eo, elg, ref(q).view({gB, 1, Hq, D}), ref(k), ref(v), 1, gscale, true);

  const int order[] = {0, 0, 2, 1, 0, 2, 2, 1, 1, 0};  // latent H16, latent H64, GQA
  std::vector<Tensor> outs;
  for (int which : order) {
    if (which < 2) {
      const Latent& l = lat[which];
      outs.push_back(poisoned({l.B, l.H, Dc}, t));
      Tensor lse = poisoned({l.B, l.H}, DType::F32);
      cuda::decode_attention_latent(outs.back(), lse, l.q_abs, l.q_rope, l.c, l.kr, lscale, l.S - 1);
    } else {
      outs.push_back(poisoned({gB, Hq, D}, t));
      Tensor lse = poisoned({gB, Hq}, DType::F32);
      cuda::decode_attention(outs.back(), lse, q, k, v, gscale, gS - 1);
    }
  }
  for (size_t i = 0; i < outs.size(); ++i) {
    SCOPED_TRACE(testing::Message() << "call " << i << " of shape " << order[i]);
    EXPECT_CLOSE(outs[i], order[i] < 2 ? lat[order[i]].expect : eo.view({gB, Hq, D}), t);
  }
}

// The newest cache row written by the kernel just before the call (as a decode step appends its token), with
// ready_rows = S - 1: pass 1 may load the older rows' tiles before that kernel has finished, but must read the
// newest row after it. The writer (delayed_copy) lets the call start at once and writes 2 ms later; the new row
// takes most of every head's weight (score 8 against ~N(0, 1): 93% at S = 128, ~40% at 3000), so an output computed from
// the stale row is far from the reference. The control: with a false ready_rows = S the sm_90 kernels do load the
// newest tile early and read the stale row, which shows that the first half can fail.
TEST(DecodeAttention, RowsPastReadyRowsAreReadAfterThePreviousKernel) {
  if (!latte::cuda_available()) GTEST_SKIP() << "no CUDA device";
  const DType t = DType::BF16;
  // The control needs pass 1's early loads: sm_90 (TMA tiles, programmatic dependent launches), switches on.
  bool early_loads = cuda::device_properties(0).major == 9;
  for (const char* name : {"LATTE_DECODE_PDL", "LATTE_DECODE_TMA", "LATTE_DECODE_PRELOAD"}) {
    const char* v = std::getenv(name);
    if (v && std::string(v) == "0") early_loads = false;
  }
  // kind 0: latent, 16-row kernel; 1: latent, wgmma kernel (sm_90a, 64 heads; it loads nothing early, so no
  // control); 2: GQA. S = 128: one split of two key tiles, both of which the 16-row kernel may load early.
  const struct { int kind; int64_t S; } cases[] = {{0, 128}, {1, 128}, {2, 128}, {0, 3000}, {1, 3000}, {2, 3000}};
  uint64_t seed = 9700;
  for (const auto& c : cases) {
    SCOPED_TRACE(testing::Message() << "kind " << c.kind << " S=" << c.S);
    const bool latent = c.kind < 2;
    const int64_t S = c.S, H = c.kind == 1 ? 64 : 16, Hk = latent ? 1 : 4, D = latent ? 512 : 128, Dr = 64;
    const int64_t row = Hk * D;  // elements of one cache row (B = 1)
    std::vector<double> u = Tensor::randn({D}, seed += 10, 0, 1.0, DType::F64).to_vector();
    double norm = 0;
    for (double x : u) norm += x * x;
    for (double& x : u) x /= std::sqrt(norm);
    std::vector<double> qv = Tensor::randn({1, H, D}, seed + 1, 0, 0.3 / std::sqrt(double(D)), DType::F64).to_vector();
    for (size_t i = 0; i < qv.size(); ++i) qv[i] += u[i % D];
    std::vector<double> kv = Tensor::randn({1, S, Hk, D}, seed + 2, 0, 1.0 / std::sqrt(double(D)), DType::F64).to_vector();
    std::vector<double> fresh(kv.end() - row, kv.end());
    for (int64_t i = 0; i < row; ++i) fresh[i] = 8.0 * u[i % D];  // the new key row (or latent row)
    Tensor q = Tensor::from_vector(qv, {1, H, D}, DType::F64).to(t).to(gpu());
    Tensor kcache = Tensor::from_vector(kv, {1, S, Hk, D}, DType::F64).to(t).to(gpu());  // newest row stale
    Tensor fresh_k = Tensor::from_vector(fresh, {row}, DType::F64).to(t).to(gpu());
    Tensor stale_k = kcache.view({S * row}).narrow(0, (S - 1) * row, row).clone();
    Tensor vcache, fresh_v, stale_v, q_rope, kr;
    if (latent) {
      q_rope = rnd({1, H, Dr}, seed + 3, t, 0.1), kr = rnd({1, S, Dr}, seed + 4, t, 0.1);
    } else {
      vcache = rnd({1, S, Hk, D}, seed + 3, t);
      fresh_v = rnd({row}, seed + 4, t);
      stale_v = vcache.view({S * row}).narrow(0, (S - 1) * row, row).clone();
    }
    auto newest = [&](const Tensor& cache) { return cache.view({S * row}).narrow(0, (S - 1) * row, row); };
    // One step: the writers put `k_row` (GQA: then, slowly, `v_row`) into the newest row; the call follows at once.
    auto step = [&](const Tensor& k_row, const Tensor& v_row, int64_t ready_rows) {
      Tensor out = poisoned({1, H, D}, t);
      cuda::delayed_copy(newest(kcache), k_row, latent ? 2'000'000 : 0);
      if (!latent) cuda::delayed_copy(newest(vcache), v_row, 2'000'000);
      if (latent) cuda::decode_attention_latent(out, Tensor(), q, q_rope, kcache.view({1, S, D}), kr, 1.0, ready_rows);
      else cuda::decode_attention(out, Tensor(), q, kcache, vcache, 1.0, ready_rows);
      return out;
    };
    Tensor got = step(fresh_k, fresh_v, S - 1);
    Tensor expect;  // computed after the step: the cache now holds the new row
    if (latent) {
      expect = latent_reference(q, q_rope, kcache.view({1, S, D}), kr, 1.0).out;
    } else {
      Tensor eo = Tensor::empty({1, 1, H, D}, DType::F64), el = Tensor::empty({1, H, 1}, DType::F64);
      cpu::attention_forward(eo, el, ref(q).view({1, 1, H, D}), ref(kcache), ref(vcache), 1, 1.0, true);
      expect = eo.view({1, H, D});
    }
    EXPECT_CLOSE(got, expect, t);
    if (!early_loads || S > 128 || c.kind == 1) continue;  // (at S = 3000 the newest tile is not a split's first)
    // The control: the stale row back in place, the same step with a false promise.
    cuda::delayed_copy(newest(kcache), stale_k, 0);
    if (!latent) cuda::delayed_copy(newest(vcache), stale_v, 0);
    Tensor early = step(fresh_k, fresh_v, S);
    const double e = rel_err(early, expect);
    EXPECT_GT(e, 0.1) << "with ready_rows = S the newest tile was not loaded early (rel. error " << e << ")";
  }
}

}  // namespace
#endif  // LATTE_WITH_CUDA
