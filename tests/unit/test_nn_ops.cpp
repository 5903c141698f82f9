// Forward tests of the neural-network ops (autograd/nn_functions.h over the CPU kernels) against naive fp64
// references written here from the definitions in spec/attention.md and kernels/op_decls.inc, independently of
// the kernels: norms by definition, RoPE by its rotate-half formula, attention by an explicit masked score
// matrix per (branch, head). Inputs are random with odd sizes; f32 must match to a relative error < 1e-5 and
// f64 to ~1e-12. Also: the f32 backward kernels agree with the f64 ones, and bad shapes raise latte::Error
// naming the shapes.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "autograd/basic_functions.h"
#include "autograd/nn_functions.h"
#include "autograd/node.h"
#include "core/tensor.h"
#include "kernels/ops.h"

using namespace latte;

namespace {

using Vec = std::vector<double>;

// ||a - b|| / ||b||, the relative error measure of DESIGN.md ("How we test").
double rel_err(const Vec& a, const Vec& b) {
  EXPECT_EQ(a.size(), b.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    num += (a[i] - b[i]) * (a[i] - b[i]);
    den += b[i] * b[i];
  }
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

double tol(DType t) { return t == DType::F64 ? 1e-12 : 1e-5; }

Tensor randn(const Shape& s, uint64_t seed, DType t) { return Tensor::randn(s, seed, 0, 1.0, t); }

// Row-major index helpers for the references.
struct Idx4 {
  int64_t n0, n1, n2, n3;
  size_t operator()(int64_t a, int64_t b, int64_t c, int64_t d) const {
    return static_cast<size_t>(((a * n1 + b) * n2 + c) * n3 + d);
  }
};

// ---- references ------------------------------------------------------------------------------------------

// RMSNorm of each row of x (N, D): x / sqrt(mean(x^2) + eps) * w.
Vec ref_rmsnorm(const Vec& x, const Vec& w, int64_t N, int64_t D, double eps) {
  Vec y(x.size());
  for (int64_t n = 0; n < N; ++n) {
    double ms = 0;
    for (int64_t d = 0; d < D; ++d) ms += x[n * D + d] * x[n * D + d];
    ms /= static_cast<double>(D);
    for (int64_t d = 0; d < D; ++d) y[n * D + d] = x[n * D + d] / std::sqrt(ms + eps) * (w.empty() ? 1.0 : w[d]);
  }
  return y;
}

// LayerNorm (or RMSNorm) of each group of Dg channels, then the per-channel affine.
Vec ref_group_norm(const Vec& x, const Vec& w, const Vec& b, int64_t N, int64_t C, int64_t G, double eps, bool rms) {
  const int64_t Dg = C / G;
  Vec y(x.size());
  for (int64_t n = 0; n < N; ++n)
    for (int64_t g = 0; g < G; ++g) {
      const double* xs = &x[static_cast<size_t>(n * C + g * Dg)];
      double mean = 0;
      if (!rms) {
        for (int64_t d = 0; d < Dg; ++d) mean += xs[d];
        mean /= static_cast<double>(Dg);
      }
      double var = 0;  // biased variance about the mean (or mean square for rms)
      for (int64_t d = 0; d < Dg; ++d) var += (xs[d] - mean) * (xs[d] - mean);
      var /= static_cast<double>(Dg);
      for (int64_t d = 0; d < Dg; ++d) {
        const int64_t c = g * Dg + d;
        double v = (xs[d] - mean) / std::sqrt(var + eps);
        if (!w.empty()) v *= w[c];
        if (!b.empty()) v += b[c];
        y[n * C + c] = v;
      }
    }
  return y;
}

// Rotate-half RoPE from spec/attention.md on channels [off, off + R) of each head of x (B, T, H, D).
Vec ref_rope(const Vec& x, const Vec& inv, Idx4 s, int64_t start_pos, int64_t off) {
  Vec y = x;
  const int64_t half = static_cast<int64_t>(inv.size());
  for (int64_t b = 0; b < s.n0; ++b)
    for (int64_t t = 0; t < s.n1; ++t)
      for (int64_t h = 0; h < s.n2; ++h)
        for (int64_t j = 0; j < half; ++j) {
          const double angle = static_cast<double>(start_pos + t) * inv[j];
          const double x1 = x[s(b, t, h, off + j)], x2 = x[s(b, t, h, off + half + j)];
          y[s(b, t, h, off + j)] = x1 * std::cos(angle) - x2 * std::sin(angle);
          y[s(b, t, h, off + half + j)] = x2 * std::cos(angle) + x1 * std::sin(angle);
        }
  return y;
}

struct AttnRef {
  Vec out;  // (B, T, R*Hq, Dv)
  Vec lse;  // (B, R*Hq, T)
};

// Attention by explicit score matrices: for every batch, branch r and query head i, build the (T, S) matrix of
// scaled scores with kv head r*Hk + i/(Hq/Hk), mask keys after t + S - T, softmax each row, multiply by V.
AttnRef ref_attention(const Vec& q, const Vec& k, const Vec& v, int64_t B, int64_t T, int64_t S, int64_t Hq,
                      int64_t Hk, int64_t R, int64_t Dqk, int64_t Dv, double scale, bool causal) {
  const Idx4 qi{B, T, Hq, Dqk}, ki{B, S, R * Hk, Dqk}, vi{B, S, R * Hk, Dv}, oi{B, T, R * Hq, Dv};
  AttnRef ref{Vec(static_cast<size_t>(B * T * R * Hq * Dv)), Vec(static_cast<size_t>(B * R * Hq * T))};
  const double ninf = -std::numeric_limits<double>::infinity();
  for (int64_t b = 0; b < B; ++b)
    for (int64_t r = 0; r < R; ++r)
      for (int64_t i = 0; i < Hq; ++i) {
        const int64_t kv = r * Hk + i / (Hq / Hk);
        std::vector<Vec> P(static_cast<size_t>(T), Vec(static_cast<size_t>(S), ninf));
        for (int64_t t = 0; t < T; ++t)
          for (int64_t j = 0; j < S; ++j) {
            if (causal && j > t + S - T) continue;
            double dot = 0;
            for (int64_t c = 0; c < Dqk; ++c) dot += q[qi(b, t, i, c)] * k[ki(b, j, kv, c)];
            P[t][j] = scale * dot;
          }
        for (int64_t t = 0; t < T; ++t) {
          double mx = ninf;
          for (double s : P[t]) mx = std::max(mx, s);
          double z = 0;
          for (double s : P[t]) z += std::exp(s - mx);
          ref.lse[static_cast<size_t>((b * R * Hq + r * Hq + i) * T + t)] = mx + std::log(z);
          for (double& s : P[t]) s = std::exp(s - mx) / z;
          for (int64_t c = 0; c < Dv; ++c) {
            double o = 0;
            for (int64_t j = 0; j < S; ++j) o += P[t][j] * v[vi(b, j, kv, c)];
            ref.out[oi(b, t, r * Hq + i, c)] = o;
          }
        }
      }
  return ref;
}

// Expects fn to throw latte::Error whose message contains every string in `parts`.
template <typename F>
void expect_error(F&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected latte::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' not in: " << msg;
  }
}

class NnDtype : public ::testing::TestWithParam<DType> {};

}  // namespace

// ---- norms ---------------------------------------------------------------------------------------------------

TEST_P(NnDtype, RmsNormMatchesDefinition) {
  const DType dt = GetParam();
  Tensor x = randn({3, 5, 37}, 1, dt);
  Tensor w = randn({37}, 2, dt);
  Tensor y = rmsnorm(x, w, 1e-6);
  ASSERT_EQ(y.shape(), x.shape());
  EXPECT_LT(rel_err(y.to_vector(), ref_rmsnorm(x.to_vector(), w.to_vector(), 15, 37, 1e-6)), tol(dt));
  // A strided input (a transposed view) gives the same rows as its contiguous copy.
  Tensor xt = randn({37, 4}, 3, dt).transpose(0, 1);  // (4, 37) non-contiguous
  EXPECT_LT(rel_err(rmsnorm(xt, w, 1e-5).to_vector(), ref_rmsnorm(xt.to_vector(), w.to_vector(), 4, 37, 1e-5)),
            tol(dt));
}

TEST_P(NnDtype, RmsNormLargeEpsAndUndefinedWeight) {
  const DType dt = GetParam();
  Tensor x = Tensor::randn({7, 9}, 4, 0, 0.1, dt);
  // eps comparable to mean(x^2): a kernel that dropped or misplaced eps fails this.
  Tensor y = rmsnorm(x, Tensor(), 0.05);
  EXPECT_LT(rel_err(y.to_vector(), ref_rmsnorm(x.to_vector(), {}, 7, 9, 0.05)), tol(dt));
}

TEST_P(NnDtype, GroupNormMatchesDefinition) {
  const DType dt = GetParam();
  const int64_t N = 2 * 7, C = 3 * 11;
  Tensor x = Tensor::randn({2, 7, C}, 5, 0, 2.0, dt);
  {  // shift the input so the LayerNorm mean matters
    std::vector<double> xv = x.to_vector();
    for (double& v : xv) v += 1.5;
    x = Tensor::from_vector(xv, x.shape(), dt);
  }
  Tensor w = randn({C}, 6, dt), b = randn({C}, 7, dt);
  for (int64_t groups : {1, 3, 11})
    for (bool rms : {false, true})
      for (int affine = 0; affine < 4; ++affine) {
        Tensor wi = (affine & 1) ? w : Tensor(), bi = (affine & 2) ? b : Tensor();
        Tensor y = group_norm(x, wi, bi, groups, 1e-5, rms);
        Vec ref = ref_group_norm(x.to_vector(), wi.defined() ? w.to_vector() : Vec{},
                                 bi.defined() ? b.to_vector() : Vec{}, N, C, groups, 1e-5, rms);
        EXPECT_LT(rel_err(y.to_vector(), ref), tol(dt)) << "groups " << groups << " rms " << rms << " affine " << affine;
      }
  // layernorm() is group_norm with one group, LayerNorm flavour.
  EXPECT_LT(rel_err(layernorm(x, w, b, 1e-5).to_vector(),
                    ref_group_norm(x.to_vector(), w.to_vector(), b.to_vector(), N, C, 1, 1e-5, false)),
            tol(dt));
}

TEST_P(NnDtype, GroupNormSavesStatistics) {
  const DType dt = GetParam();
  Tensor x = randn({5, 12}, 8, dt);
  const DType sd = dt == DType::F64 ? DType::F64 : DType::F32;
  Tensor out = Tensor::empty({5, 12}, dt), mean = Tensor::empty({5, 3}, sd), rstd = Tensor::empty({5, 3}, sd);
  ops::group_norm_forward(out, mean, rstd, x, Tensor(), Tensor(), 3, 1e-6, false);
  const Vec xv = x.to_vector();
  for (int64_t n = 0; n < 5; ++n)
    for (int64_t g = 0; g < 3; ++g) {
      double m = 0, v = 0;
      for (int64_t d = 0; d < 4; ++d) m += xv[n * 12 + g * 4 + d] / 4;
      for (int64_t d = 0; d < 4; ++d) v += (xv[n * 12 + g * 4 + d] - m) * (xv[n * 12 + g * 4 + d] - m) / 4;
      EXPECT_NEAR(mean.at({n, g}), m, 1e-6);
      EXPECT_NEAR(rstd.at({n, g}), 1 / std::sqrt(v + 1e-6), 1e-5 * (1 / std::sqrt(v + 1e-6)));
    }
}

// ---- RoPE ----------------------------------------------------------------------------------------------------

namespace {
Tensor make_inv_freq(int64_t rope_width, double base = 10000.0) {
  Vec inv(static_cast<size_t>(rope_width / 2));
  for (size_t j = 0; j < inv.size(); ++j) inv[j] = std::pow(base, -2.0 * static_cast<double>(j) / static_cast<double>(rope_width));
  return Tensor::from_vector(inv, {static_cast<int64_t>(inv.size())}, DType::F32);
}
}  // namespace

TEST_P(NnDtype, RopeWholeHeadMatchesFormula) {
  const DType dt = GetParam();
  Tensor x = randn({2, 9, 3, 16}, 10, dt);
  Tensor inv = make_inv_freq(16);
  // The reference uses the f32-rounded inv_freq, as the kernel must.
  Vec y = rope(x, inv, 0).to_vector();
  EXPECT_LT(rel_err(y, ref_rope(x.to_vector(), inv.to_vector(), {2, 9, 3, 16}, 0, 0)), tol(dt));
}

TEST_P(NnDtype, RopeOnASliceWithStartPos) {
  const DType dt = GetParam();
  // MLA-style head: 5 nope channels, 8 rope channels, 3 trailing channels copied; decode positions from 100.
  const int64_t off = 5, width = 8, D = 16;
  Tensor x = randn({2, 7, 3, D}, 11, dt);
  Tensor inv = make_inv_freq(width, 500.0);
  Tensor y = rope(x, inv, 100, off);
  const Vec xv = x.to_vector(), yv = y.to_vector();
  EXPECT_LT(rel_err(yv, ref_rope(xv, inv.to_vector(), {2, 7, 3, D}, 100, off)), tol(dt));
  // The channels outside the rope range are copied bit for bit.
  const Idx4 s{2, 7, 3, D};
  for (int64_t b = 0; b < 2; ++b)
    for (int64_t t = 0; t < 7; ++t)
      for (int64_t h = 0; h < 3; ++h)
        for (int64_t d = 0; d < D; ++d)
          if (d < off || d >= off + width) {
            ASSERT_EQ(yv[s(b, t, h, d)], xv[s(b, t, h, d)]) << d;
          }
}

TEST_P(NnDtype, RopeStridedInput) {
  const DType dt = GetParam();
  // q heads as a view of a fused projection: (B, T, 2*H, D) narrowed to H heads, and a (B, H, T, D) permute.
  Tensor fused = randn({2, 5, 8, 12}, 12, dt);
  Tensor xq = fused.narrow(2, 4, 4);                               // (2, 5, 4, 12), strided in H/T/B
  Tensor xp = randn({2, 4, 5, 12}, 13, dt).permute({0, 2, 1, 3});  // (2, 5, 4, 12)
  Tensor inv = make_inv_freq(8);
  for (const Tensor& x : {xq, xp}) {
    ASSERT_FALSE(x.is_contiguous());
    EXPECT_LT(rel_err(rope(x, inv, 3, 2).to_vector(), ref_rope(x.to_vector(), inv.to_vector(), {2, 5, 4, 12}, 3, 2)),
              tol(dt));
  }
}

TEST_P(NnDtype, RopeAtPositionZeroIsACopyAndBackwardInverts) {
  const DType dt = GetParam();
  Tensor x = randn({3, 1, 4, 10}, 14, dt);
  Tensor inv = make_inv_freq(10);
  EXPECT_EQ(rope(x, inv, 0).to_vector(), x.to_vector());  // T = 1, start 0: every angle is 0
  // The backward kernel applies the inverse rotation: rope_backward(rope(x)) == x.
  Tensor x2 = randn({2, 6, 3, 10}, 15, dt);
  Tensor y = rope(x2, inv, 7);
  Tensor back = Tensor::empty(y.shape(), dt);
  ops::rope_backward(back, y, inv, 7, 0);
  EXPECT_LT(rel_err(back.to_vector(), x2.to_vector()), 10 * tol(dt));
  EXPECT_GT(rel_err(y.to_vector(), x2.to_vector()), 0.1);  // and the rotation did move it
}

TEST(NnRope, RvalueRotatesInPlaceOnlyWhenNothingElseSeesTheMemory) {
  Tensor inv = make_inv_freq(6);
  Tensor x = randn({2, 5, 3, 11}, 70, DType::F64);
  const Vec expect = rope(x, inv, 4, 3).to_vector();  // out of place
  Tensor t = x.clone();
  const void* memory = t.data_ptr();
  Tensor y = rope(std::move(t), inv, 4, 3);
  EXPECT_EQ(y.data_ptr(), memory);      // rotated where it was
  EXPECT_EQ(y.to_vector(), expect);     // the same kernel on the same values: bit for bit
  // Another handle sees the memory: rotated out of place, the other handle's values untouched.
  Tensor u = x.clone();
  Tensor other = u.view({10, 33});
  Tensor z = rope(std::move(u), inv, 4, 3);
  EXPECT_NE(z.data_ptr(), other.data_ptr());
  EXPECT_EQ(z.to_vector(), expect);
  EXPECT_EQ(other.to_vector(), x.to_vector());
}

// ---- SwiGLU --------------------------------------------------------------------------------------------------

TEST_P(NnDtype, SwigluMatchesDefinition) {
  const DType dt = GetParam();
  Tensor gu = Tensor::randn({3, 5, 2 * 13}, 16, 0, 4.0, dt);  // wide range: exercises both sigmoid branches
  Tensor gate = gu.narrow(2, 0, 13), up = gu.narrow(2, 13, 13);  // views, as from a fused projection
  Tensor y = swiglu(gate, up);
  const Vec g = gate.to_vector(), u = up.to_vector();
  Vec ref(g.size());
  for (size_t i = 0; i < g.size(); ++i) ref[i] = g[i] / (1 + std::exp(-g[i])) * u[i];
  EXPECT_LT(rel_err(y.to_vector(), ref), tol(dt));
}

// ---- attention -------------------------------------------------------------------------------------------------

namespace {
struct AttnCase {
  const char* name;
  int64_t B, T, S, Hq, Hk, R, Dqk, Dv;
  bool causal;
  double scale;  // 0: 1/sqrt(Dqk)
};

const AttnCase kAttnCases[] = {
    {"mha", 2, 7, 7, 3, 3, 1, 8, 8, true, 0},
    {"dqk_ne_dv", 2, 6, 6, 2, 2, 1, 12, 5, true, 0},
    {"gqa_6_2", 1, 9, 9, 6, 2, 1, 7, 6, true, 0},
    {"mqa", 2, 5, 5, 4, 1, 1, 6, 9, true, 0},
    {"mlra2", 2, 6, 6, 4, 2, 2, 10, 6, true, 0},  // MLRA-2: H_b = n_h/2 heads per block, 2 branches
    {"mlra4", 1, 5, 5, 3, 3, 4, 6, 4, true, 0},   // MLRA-4: every block serves all heads
    {"decode_S_gt_T", 2, 3, 11, 4, 2, 1, 8, 8, true, 0},
    {"decode_one_row", 1, 1, 9, 6, 2, 2, 5, 7, true, 0},
    {"non_causal", 2, 5, 8, 2, 1, 2, 6, 6, false, 0},
    {"explicit_scale", 1, 6, 6, 2, 2, 1, 4, 4, true, 0.9},
};

Tensor attn_lse(const Tensor& q, const Tensor& k, const Tensor& v, int64_t R, double scale, bool causal, Tensor* out) {
  const DType sd = q.dtype() == DType::F64 ? DType::F64 : DType::F32;
  *out = Tensor::empty({q.size(0), q.size(1), R * q.size(2), v.size(3)}, q.dtype());
  Tensor lse = Tensor::empty({q.size(0), R * q.size(2), q.size(1)}, sd);
  ops::attention_forward(*out, lse, q, k, v, R, scale, causal);
  return lse;
}
}  // namespace

TEST_P(NnDtype, AttentionMatchesScoreMatrixReference) {
  const DType dt = GetParam();
  uint64_t seed = 100;
  for (const AttnCase& c : kAttnCases) {
    SCOPED_TRACE(c.name);
    const double scale = c.scale > 0 ? c.scale : 1.0 / std::sqrt(static_cast<double>(c.Dqk));
    Tensor q = randn({c.B, c.T, c.Hq, c.Dqk}, seed++, dt);
    Tensor k = randn({c.B, c.S, c.R * c.Hk, c.Dqk}, seed++, dt);
    Tensor v = randn({c.B, c.S, c.R * c.Hk, c.Dv}, seed++, dt);
    AttnRef ref = ref_attention(q.to_vector(), k.to_vector(), v.to_vector(), c.B, c.T, c.S, c.Hq, c.Hk, c.R, c.Dqk,
                                c.Dv, scale, c.causal);
    Tensor y = attention(q, k, v, c.R, scale, c.causal);
    ASSERT_EQ(y.shape(), Shape({c.B, c.T, c.R * c.Hq, c.Dv}));
    EXPECT_LT(rel_err(y.to_vector(), ref.out), tol(dt));
    Tensor out;
    Tensor lse = attn_lse(q, k, v, c.R, scale, c.causal, &out);
    EXPECT_LT(rel_err(lse.to_vector(), ref.lse), tol(dt));
  }
}

TEST_P(NnDtype, AttentionStridedInputs) {
  const DType dt = GetParam();
  // q/k/v sliced from one fused (B, T, 3*H, D) projection, and a (B, H, T, D) layout permuted to (B, T, H, D).
  const int64_t B = 2, T = 6, H = 4, D = 8;
  Tensor qkv = randn({B, T, 3 * H, D}, 200, dt);
  Tensor q = qkv.narrow(2, 0, H), k = qkv.narrow(2, H, H), v = qkv.narrow(2, 2 * H, H);
  Tensor kp = randn({B, H, T, D}, 201, dt).permute({0, 2, 1, 3});
  for (const Tensor& kk : {k, kp}) {
    ASSERT_FALSE(kk.is_contiguous());
    AttnRef ref = ref_attention(q.to_vector(), kk.to_vector(), v.to_vector(), B, T, T, H, H, 1, D, D, 0.3, true);
    EXPECT_LT(rel_err(attention(q, kk, v, 1, 0.3).to_vector(), ref.out), tol(dt));
  }
  // Narrowed in T too: the last T rows of a longer sequence as the queries of a cached decode.
  Tensor qlast = q.narrow(1, 2, 4);
  AttnRef ref = ref_attention(qlast.to_vector(), k.to_vector(), v.to_vector(), B, 4, T, H, H, 1, D, D, 0.3, true);
  EXPECT_LT(rel_err(attention(qlast, k, v, 1, 0.3).to_vector(), ref.out), tol(dt));
}

TEST_P(NnDtype, AttentionDecodeEqualsTheFullForwardRows) {
  // The queries of a cached decode are the last T of S positions: they must equal those rows of the full pass.
  const DType dt = GetParam();
  const int64_t S = 10, T = 3;
  Tensor q = randn({2, S, 6, 8}, 300, dt), k = randn({2, S, 4, 8}, 301, dt), v = randn({2, S, 4, 5}, 302, dt);
  Tensor full = attention(q, k, v, 2, 0.35);
  Tensor dec = attention(q.narrow(1, S - T, T), k, v, 2, 0.35);
  EXPECT_LT(rel_err(dec.to_vector(), full.narrow(1, S - T, T).to_vector()), tol(dt));
}

TEST_P(NnDtype, DecodeOpsEqualAttentionOfOneRow) {
  // ops::decode_attention / decode_attention_latent (one token against a cache, every position visible) against
  // attention() of that one query row, reading the caches as strided views (the valid prefix of a longer buffer,
  // one latent block of a wider latent), with the optional lse.
  const DType dt = GetParam();
  const DType sd = dt == DType::F64 ? DType::F64 : DType::F32;
  const int64_t B = 2, S = 9, cap = 13, Hq = 6, Hk = 2, D = 8, Dv = 5;
  autograd::NoGradGuard no_grad;
  Tensor q = randn({B, 1, Hq, D}, 500, dt);
  Tensor k = randn({B, cap, Hk, D}, 501, dt).narrow(1, 0, S), v = randn({B, cap, Hk, Dv}, 502, dt).narrow(1, 0, S);
  Tensor ref = attention(q, k, v, 1, 0.3, false);  // (B, 1, Hq, Dv)
  Tensor out = decode_attention(q.reshape({B, Hq, D}), k, v, 0.3);
  ASSERT_TRUE(out.defined());
  EXPECT_LT(rel_err(out.to_vector(), ref.to_vector()), tol(dt));
  Tensor lse = Tensor::empty({B, Hq}, sd), out2 = Tensor::empty({B, Hq, Dv}, dt);
  ops::decode_attention(out2, lse, q.reshape({B, Hq, D}), k, v, 0.3, S);
  Tensor ref_out, ref_lse = attn_lse(q, k, v, 1, 0.3, false, &ref_out);  // (B, Hq, 1)
  EXPECT_LT(rel_err(lse.to_vector(), ref_lse.to_vector()), tol(dt));

  // Latent: block 1 of a (B, cap, 3 * Dc) latent buffer, the rope key of its own buffer; with and without rope.
  const int64_t H = 4, Dc = 6, Dr = 4;
  Tensor latents = randn({B, cap, 3 * Dc}, 503, dt).narrow(1, 0, S).reshape({B, S, 3, Dc});
  Tensor c = latents.select(2, 1), kr = randn({B, cap, Dr}, 504, dt).narrow(1, 0, S);
  Tensor qa = randn({B, H, Dc}, 505, dt), qr = randn({B, H, Dr}, 506, dt);
  for (bool with_rope : {true, false}) {
    SCOPED_TRACE(with_rope ? "with rope" : "no rope");
    Tensor kk = with_rope ? concat({c, kr}, 2) : c.contiguous();                       // (B, S, Dc [+ Dr])
    Tensor qq = with_rope ? concat({qa, qr}, 2) : qa;                                  // (B, H, Dc [+ Dr])
    Tensor zref = attention(qq.unsqueeze(1), kk.unsqueeze(2), c.unsqueeze(2), 1, 0.4, false);  // (B, 1, H, Dc)
    Tensor z = decode_attention_latent(qa, with_rope ? qr : Tensor(), c, with_rope ? kr : Tensor(), 0.4);
    ASSERT_TRUE(z.defined());
    EXPECT_EQ(z.shape(), Shape({B, H, Dc}));
    EXPECT_LT(rel_err(z.to_vector(), zref.to_vector()), tol(dt));
  }
}

TEST(NnBadInput, DecodeAttentionShapes) {
  Tensor qa = Tensor::randn({2, 3, 6}, 4), c = Tensor::randn({2, 5, 6}, 5);
  {
    autograd::NoGradGuard no_grad;
    Tensor q = Tensor::randn({2, 6, 8}, 1), k = Tensor::randn({2, 5, 4, 8}, 2), v = Tensor::randn({2, 5, 4, 7}, 3);
    expect_error([&] { decode_attention(q, k, v, 0.3); }, {"[2, 6, 8]", "[2, 5, 4, 8]"});  // 6 heads over 4 kv heads
    expect_error([&] { decode_attention(q.unsqueeze(1), k, v, 0.3); }, {"(B, Hq, Dqk)", "[2, 1, 6, 8]"});
    expect_error([&] { decode_attention_latent(qa, Tensor::randn({2, 3, 4}, 6), c, Tensor(), 0.3); }, {"both q_rope and kr"});
    expect_error([&] { decode_attention_latent(qa, Tensor(), Tensor::randn({2, 5, 7}, 7), Tensor(), 0.3); }, {"[2, 5, 7]"});
    // ready_rows counts cache rows: 0..S.
    expect_error([&] { decode_attention_latent(qa, Tensor(), c, Tensor(), 0.3, 6); }, {"ready_rows", "[0, 5]", "6"});
    Tensor q2 = Tensor::randn({2, 8, 8}, 9);
    expect_error([&] { decode_attention(q2, k, v, 0.3, -1); }, {"ready_rows", "-1"});
  }
  Tensor needs_grad = Tensor::randn({2, 3, 6}, 8);
  needs_grad.set_requires_grad(true);
  expect_error([&] { decode_attention_latent(needs_grad, Tensor(), c, Tensor(), 0.3); }, {"inference-only"});
}

TEST(NnBackward, AttentionF32AgreesWithF64) {
  // The backward kernel in f32 against the same kernel in f64 (itself checked by gradcheck).
  const int64_t B = 2, T = 5, S = 7, Hq = 4, Hk = 1, R = 2, Dqk = 6, Dv = 5;
  auto grads = [&](DType t) {
    Tensor q = randn({B, T, Hq, Dqk}, 400, DType::F64).to(t), k = randn({B, S, R * Hk, Dqk}, 401, DType::F64).to(t);
    Tensor v = randn({B, S, R * Hk, Dv}, 402, DType::F64).to(t), dout = randn({B, T, R * Hq, Dv}, 403, DType::F64).to(t);
    Tensor out;
    Tensor lse = attn_lse(q, k, v, R, 0.4, true, &out);
    Tensor dq = Tensor::empty(q.shape(), t), dk = Tensor::empty(k.shape(), t), dv = Tensor::empty(v.shape(), t);
    ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, R, 0.4, true);
    return std::vector<Vec>{dq.to_vector(), dk.to_vector(), dv.to_vector()};
  };
  auto g32 = grads(DType::F32), g64 = grads(DType::F64);
  for (size_t i = 0; i < 3; ++i) EXPECT_LT(rel_err(g32[i], g64[i]), 1e-5) << "gradient " << i;
}

// Enough work per batch entry for the CPU kernels to spread the batch over threads: bitwise the same forward and
// backward as one call per batch entry (a single entry never splits).
TEST(NnBackward, AttentionBatchesSplitOverThreadsMatchOneCallEach) {
  const int64_t B = 3, T = 64, S = 64, Hq = 4, Hk = 2, R = 1, Dqk = 64, Dv = 64;
  Tensor q = randn({B, T, Hq, Dqk}, 410, DType::F32), k = randn({B, S, Hk, Dqk}, 411, DType::F32);
  Tensor v = randn({B, S, Hk, Dv}, 412, DType::F32), dout = randn({B, T, Hq, Dv}, 413, DType::F32);
  Tensor out = Tensor::empty({B, T, Hq, Dv}, DType::F32), lse = Tensor::empty({B, Hq, T}, DType::F32);
  ops::attention_forward(out, lse, q, k, v, R, 0.125, true);
  Tensor dq = Tensor::empty(q.shape(), DType::F32), dk = Tensor::empty(k.shape(), DType::F32),
         dv = Tensor::empty(v.shape(), DType::F32);
  ops::attention_backward(dq, dk, dv, dout, q, k, v, out, lse, R, 0.125, true);
  for (int64_t b = 0; b < B; ++b) {
    SCOPED_TRACE(str("batch ", b));
    auto one = [&](const Tensor& t) { return t.narrow(0, b, 1).contiguous(); };
    Tensor out1 = Tensor::empty({1, T, Hq, Dv}, DType::F32), lse1 = Tensor::empty({1, Hq, T}, DType::F32);
    ops::attention_forward(out1, lse1, one(q), one(k), one(v), R, 0.125, true);
    EXPECT_EQ(out1.to_vector(), one(out).to_vector());
    EXPECT_EQ(lse1.to_vector(), one(lse).to_vector());
    Tensor dq1 = Tensor::empty({1, T, Hq, Dqk}, DType::F32), dk1 = Tensor::empty({1, S, Hk, Dqk}, DType::F32),
           dv1 = Tensor::empty({1, S, Hk, Dv}, DType::F32);
    ops::attention_backward(dq1, dk1, dv1, one(dout), one(q), one(k), one(v), out1, lse1, R, 0.125, true);
    EXPECT_EQ(dq1.to_vector(), one(dq).to_vector());
    EXPECT_EQ(dk1.to_vector(), one(dk).to_vector());
    EXPECT_EQ(dv1.to_vector(), one(dv).to_vector());
  }
}

TEST(NnBackward, NormsF32AgreeWithF64) {
  auto grads = [&](DType t, bool rms) {
    Tensor x = randn({6, 12}, 500, DType::F64).to(t), w = randn({12}, 501, DType::F64).to(t);
    Tensor b = randn({12}, 502, DType::F64).to(t), dy = randn({6, 12}, 503, DType::F64).to(t);
    const DType sd = t == DType::F64 ? DType::F64 : DType::F32;
    Tensor y = Tensor::empty({6, 12}, t), mean = Tensor::empty({6, 2}, sd), rstd = Tensor::empty({6, 2}, sd);
    ops::group_norm_forward(y, mean, rstd, x, w, b, 2, 1e-5, rms);
    Tensor dx = Tensor::empty({6, 12}, t), dw = Tensor::zeros({12}, t), db = Tensor::zeros({12}, t);
    ops::group_norm_backward(dx, dw, db, dy, x, w, mean, rstd, 2, rms);
    Tensor r1 = Tensor::empty({6}, sd), y1 = Tensor::empty({6, 12}, t);
    ops::rmsnorm_forward(y1, r1, x, w, 1e-5);
    Tensor dx1 = Tensor::empty({6, 12}, t), dw1 = Tensor::zeros({12}, t);
    ops::rmsnorm_backward(dx1, dw1, dy, x, w, r1, false);
    return std::vector<Vec>{dx.to_vector(), dw.to_vector(), db.to_vector(), dx1.to_vector(), dw1.to_vector()};
  };
  for (bool rms : {false, true}) {
    auto g32 = grads(DType::F32, rms), g64 = grads(DType::F64, rms);
    for (size_t i = 0; i < g32.size(); ++i) EXPECT_LT(rel_err(g32[i], g64[i]), 1e-5) << "gradient " << i << " rms " << rms;
  }
}

// accumulate_dx adds the input gradient into dx (the residual stream's gradient so far) instead of writing it.
TEST(NnNorm, RmsNormBackwardAddsIntoPriorGradient) {
  Tensor x = randn({5, 8}, 610, DType::F64), w = randn({8}, 611, DType::F64), dy = randn({5, 8}, 612, DType::F64);
  Tensor r = Tensor::empty({5}, DType::F64), y = Tensor::empty({5, 8}, DType::F64);
  ops::rmsnorm_forward(y, r, x, w, 1e-5);
  Tensor dx = Tensor::empty({5, 8}, DType::F64), dw = Tensor::zeros({8}, DType::F64);
  ops::rmsnorm_backward(dx, dw, dy, x, w, r, false);
  Tensor prior = randn({5, 8}, 613, DType::F64), dw2 = Tensor::zeros({8}, DType::F64);
  const Vec before = prior.to_vector(), fresh = dx.to_vector();
  ops::rmsnorm_backward(prior, dw2, dy, x, w, r, true);
  const Vec after = prior.to_vector();
  for (size_t i = 0; i < after.size(); ++i) EXPECT_NEAR(after[i], before[i] + fresh[i], 1e-12) << i;
  EXPECT_EQ(dw2.to_vector(), dw.to_vector());
}

TEST(NnNorm, WeightGradientAccumulates) {
  // The contract says dweight accumulates (+=): two backward passes give twice the gradient of one.
  Tensor x = randn({4, 6}, 600, DType::F64);
  Tensor w = randn({6}, 601, DType::F64).set_requires_grad();
  Tensor dy = randn({4, 6}, 602, DType::F64);
  rmsnorm(x, w, 1e-6).backward(dy);
  const Vec once = w.grad().to_vector();
  rmsnorm(x, w, 1e-6).backward(dy);
  Vec twice = w.grad().to_vector();
  for (double& g : twice) g /= 2;
  EXPECT_LT(rel_err(twice, once), 1e-14);
  EXPECT_GT(std::fabs(once[0]), 0.0);
  EXPECT_FALSE(x.grad().defined());  // x did not ask for a gradient
}

// ---- branch sum ----------------------------------------------------------------------------------------------

TEST_P(NnDtype, BranchSumMatchesDefinitionAndComposesWithAttention) {
  const DType dt = GetParam();
  const int64_t B = 2, T = 5, H = 3, D = 7, R = 4;
  Tensor x = randn({B, T, R * H, D}, 700, dt);
  Tensor y = branch_sum(x, R, 0.5);
  ASSERT_EQ(y.shape(), Shape({B, T, H, D}));
  const Vec xv = x.to_vector();
  const Idx4 xi{B, T, R * H, D}, yi{B, T, H, D};
  Vec ref(static_cast<size_t>(B * T * H * D), 0.0);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t d = 0; d < D; ++d)
          for (int64_t r = 0; r < R; ++r) ref[yi(b, t, h, d)] += 0.5 * xv[xi(b, t, r * H + h, d)];
  EXPECT_LT(rel_err(y.to_vector(), ref), tol(dt));

  // MLRA-2 as in spec/attention.md: o_i = 1/sqrt(2) (Attn(q_i, K_A(i), V_A(i)) + Attn(q_i, K_B(i), V_B(i))),
  // computed once as 2 branches of virtual heads and once as two separate single-branch attentions.
  Tensor q = randn({B, T, 4, 6}, 701, dt), k = randn({B, T, 2 * 2, 6}, 702, dt), v = randn({B, T, 2 * 2, 5}, 703, dt);
  const double s = 1 / std::sqrt(2.0);
  Tensor fused = branch_sum(attention(q, k, v, 2, 0.4), 2, s);
  Tensor a0 = attention(q, k.narrow(2, 0, 2), v.narrow(2, 0, 2), 1, 0.4);
  Tensor a1 = attention(q, k.narrow(2, 2, 2), v.narrow(2, 2, 2), 1, 0.4);
  const Vec v0 = a0.to_vector(), v1 = a1.to_vector();
  Vec sep(v0.size());
  for (size_t i = 0; i < sep.size(); ++i) sep[i] = s * (v0[i] + v1[i]);
  EXPECT_LT(rel_err(fused.to_vector(), sep), tol(dt));
}

namespace {
// Head h of a row-major (B, L, H, D) vector, as a (B, L, 1, D) vector.
Vec head_of(const Vec& x, int64_t B, int64_t L, int64_t H, int64_t D, int64_t h) {
  Vec out;
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l)
      for (int64_t d = 0; d < D; ++d) out.push_back(x[static_cast<size_t>(((b * L + l) * H + h) * D + d)]);
  return out;
}
}  // namespace

TEST_P(NnDtype, MlraLayoutsMatchTheSpecFormula) {
  // spec/attention.md, MLRA with L = 4 blocks, each block's keys/values laid out block after block along the
  // head dim (the order wkv_b's blocks produce them):
  //   MLRA-2 (H_b = n_h/2; block b serves heads [0, n_h/2) for even b, [n_h/2, n_h) for odd b):
  //     o_i = 1/sqrt(2) (Attn(q_i, block A(i)) + Attn(q_i, block 2 + A(i))), A(i) = 0 or 1 by half.
  //   MLRA-4 (H_b = n_h; every block serves all heads): o_i = 1/2 sum_b Attn(q_i, block b).
  // Here each branch attention is an independent single-head reference, and the kernel runs R = 2 (resp. 4)
  // branches of n_h kv heads followed by branch_sum.
  const DType dt = GetParam();
  const int64_t B = 2, T = 5, Dqk = 6, Dv = 4;
  const double scale = 1 / std::sqrt(static_cast<double>(Dqk));
  for (int variant : {2, 4}) {
    SCOPED_TRACE(variant == 2 ? "MLRA-2" : "MLRA-4");
    const int64_t nh = variant == 2 ? 4 : 3, Hb = variant == 2 ? nh / 2 : nh, R = variant == 2 ? 2 : 4;
    Tensor q = randn({B, T, nh, Dqk}, 800 + variant, dt);
    Tensor k = randn({B, T, 4 * Hb, Dqk}, 810 + variant, dt);  // blocks 0..3, H_b heads each
    Tensor v = randn({B, T, 4 * Hb, Dv}, 820 + variant, dt);
    const Vec qv = q.to_vector(), kv = k.to_vector(), vv = v.to_vector();
    const double combine = variant == 2 ? 1 / std::sqrt(2.0) : 0.5;
    Vec ref(static_cast<size_t>(B * T * nh * Dv), 0.0);
    for (int64_t i = 0; i < nh; ++i) {
      std::vector<int64_t> blocks;
      if (variant == 2) {
        const int64_t a = i < nh / 2 ? 0 : 1;
        blocks = {a, 2 + a};
      } else {
        blocks = {0, 1, 2, 3};
      }
      const int64_t local = variant == 2 ? i % (nh / 2) : i;  // head i's index inside its block
      for (int64_t blk : blocks) {
        const int64_t kvh = blk * Hb + local;
        AttnRef one = ref_attention(head_of(qv, B, T, nh, Dqk, i), head_of(kv, B, T, 4 * Hb, Dqk, kvh),
                                    head_of(vv, B, T, 4 * Hb, Dv, kvh), B, T, T, 1, 1, 1, Dqk, Dv, scale, true);
        for (int64_t b = 0; b < B; ++b)
          for (int64_t t = 0; t < T; ++t)
            for (int64_t d = 0; d < Dv; ++d)
              ref[static_cast<size_t>(((b * T + t) * nh + i) * Dv + d)] +=
                  combine * one.out[static_cast<size_t>((b * T + t) * Dv + d)];
      }
    }
    Tensor y = branch_sum(attention(q, k, v, R, scale), R, combine);
    ASSERT_EQ(y.shape(), Shape({B, T, nh, Dv}));
    EXPECT_LT(rel_err(y.to_vector(), ref), tol(dt));
  }
}

INSTANTIATE_TEST_SUITE_P(Nn, NnDtype, ::testing::Values(DType::F32, DType::F64),
                         [](const ::testing::TestParamInfo<DType>& info) { return std::string(dtype_name(info.param)); });

// ---- bad inputs ----------------------------------------------------------------------------------------------

TEST(NnBadInput, NormShapes) {
  Tensor x = Tensor::randn({4, 10}, 1);
  expect_error([&] { rmsnorm(x, Tensor::ones({9}), 1e-6); }, {"[9]", "[4, 10]"});
  expect_error([&] { group_norm(x, Tensor(), Tensor(), 3, 1e-5, false); }, {"[4, 10]", "3 equal groups"});
  expect_error([&] { layernorm(x, Tensor(), Tensor::zeros({11}), 1e-5); }, {"bias", "[11]", "[4, 10]"});
  expect_error([&] { rmsnorm(x, Tensor::ones({10}, DType::F64), 1e-6); }, {"f64", "f32"});
}

TEST(NnBadInput, RopeShapes) {
  Tensor inv = Tensor::ones({3});  // rope width 6
  // An odd head width that cannot hold the rope channels, a rope range past the head, a 3-D input.
  expect_error([&] { rope(Tensor::randn({1, 2, 2, 5}, 1), inv, 0); }, {"rope width 6", "[1, 2, 2, 5]", "width 5"});
  expect_error([&] { rope(Tensor::randn({1, 2, 2, 8}, 1), inv, 0, 3); }, {"[3, 9)", "[1, 2, 2, 8]"});
  expect_error([&] { rope(Tensor::randn({2, 2, 8}, 1), inv, 0); }, {"(B, T, H, D)", "[2, 2, 8]"});
  expect_error([&] { rope(Tensor::randn({1, 2, 2, 8}, 1), inv, -1); }, {"start_pos", "-1"});
}

TEST(NnBadInput, AttentionShapes) {
  Tensor q = Tensor::randn({2, 5, 6, 8}, 1);
  Tensor k = Tensor::randn({2, 5, 4, 8}, 2), v = Tensor::randn({2, 5, 4, 7}, 3);
  // 6 query heads over 4 kv heads: not a GQA grouping.
  expect_error([&] { attention(q, k, v, 1, 0.3); }, {"6 query heads", "4 kv heads", "[2, 5, 6, 8]", "[2, 5, 4, 8]"});
  // 4 kv heads in 3 branches.
  expect_error([&] { attention(q, k, v, 3, 0.3); }, {"3 branches", "[2, 5, 4, 8]"});
  // k and v of different lengths; q/k width mismatch.
  expect_error([&] { attention(q, k, Tensor::randn({2, 6, 4, 7}, 4), 2, 0.3); }, {"[2, 6, 4, 7]", "[2, 5, 4, 8]"});
  expect_error([&] { attention(q, Tensor::randn({2, 5, 4, 9}, 5), v, 2, 0.3); }, {"[2, 5, 4, 9]", "[2, 5, 6, 8]"});
  // Causal with fewer keys than queries.
  expect_error([&] { attention(q, k.narrow(1, 0, 3), v.narrow(1, 0, 3), 2, 0.3); }, {"S >= T", "S=3", "T=5"});
  expect_error([&] { attention(q, k, v, 2, 0.0); }, {"softmax_scale"});
  expect_error([&] { attention(q.reshape({2, 5, 48}), k, v, 2, 0.3); }, {"[2, 5, 48]"});
}

TEST(NnBadInput, SwigluAndBranchSumShapes) {
  expect_error([&] { swiglu(Tensor::randn({3, 4}, 1), Tensor::randn({3, 5}, 2)); }, {"[3, 4]", "[3, 5]"});
  expect_error([&] { branch_sum(Tensor::randn({2, 3, 5, 4}, 1), 2, 0.5); }, {"[2, 3, 5, 4]", "R = 2"});
}
