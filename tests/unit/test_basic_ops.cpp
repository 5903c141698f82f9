// Forward tests of the basic ops (kernels/cpu/{elementwise,reduce,matmul,embedding,cross_entropy}.cpp through
// ops::, and the autograd functions of autograd/basic_functions.h): every result is compared with a naive
// fp64 loop written here, on Philox-random inputs with odd sizes, in f32 (relative error < 1e-5) and f64.
// Bad inputs (shape mismatch, out-of-range ids/targets) must throw latte::Error naming the culprit.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "autograd/basic_functions.h"
#include "autograd/node.h"
#include "kernels/ops.h"

namespace latte {
namespace {

const DType kFloatTypes[] = {DType::F32, DType::F64};

// ||out - ref|| / ||ref||: the error measure of DESIGN.md "How we test".
double rel_err(const std::vector<double>& out, const std::vector<double>& ref) {
  EXPECT_EQ(out.size(), ref.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < out.size() && i < ref.size(); ++i) {
    num += (out[i] - ref[i]) * (out[i] - ref[i]);
    den += ref[i] * ref[i];
  }
  if (std::isnan(num)) return std::numeric_limits<double>::infinity();
  return std::sqrt(num) / std::max(std::sqrt(den), 1e-300);
}

double tol(DType t) { return t == DType::F32 ? 1e-5 : 1e-12; }

// i32 ids from a list.
Tensor ids_tensor(const std::vector<double>& v, const Shape& shape) { return Tensor::from_vector(v, shape, DType::I32); }

// Expects `fn` to throw latte::Error whose message contains every string of `needles`.
template <typename F>
void expect_error(F&& fn, const std::vector<std::string>& needles) {
  try {
    fn();
    ADD_FAILURE() << "expected latte::Error";
  } catch (const Error& e) {
    for (const std::string& n : needles) EXPECT_NE(std::string(e.what()).find(n), std::string::npos) << e.what();
  }
}

// ---- elementwise --------------------------------------------------------------------------------------

TEST(BasicOps, AddMulScaleMatchReference) {
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(dtype_name(t));
    const Shape shape{7, 13};
    Tensor a = Tensor::randn(shape, 1, 0, 1.0, t), b = Tensor::randn(shape, 2, 0, 1.0, t);
    const auto av = a.to_vector(), bv = b.to_vector();
    std::vector<double> ref_add(av.size()), ref_mul(av.size()), ref_scale(av.size()), ref_sub(av.size());
    for (size_t i = 0; i < av.size(); ++i) {
      ref_add[i] = 0.7 * av[i] - 1.3 * bv[i];
      ref_mul[i] = av[i] * bv[i];
      ref_scale[i] = -2.5 * av[i];
      ref_sub[i] = av[i] - bv[i];
    }
    Tensor out = Tensor::full(shape, NAN, t);
    ops::add(out, a, b, 0.7, -1.3);
    EXPECT_LT(rel_err(out.to_vector(), ref_add), tol(t));
    ops::mul(out, a, b);
    EXPECT_LT(rel_err(out.to_vector(), ref_mul), tol(t));
    ops::scale(out, a, -2.5);
    EXPECT_LT(rel_err(out.to_vector(), ref_scale), tol(t));

    EXPECT_LT(rel_err(mul(a, b).to_vector(), ref_mul), tol(t));
    EXPECT_LT(rel_err(scale(a, -2.5).to_vector(), ref_scale), tol(t));
    EXPECT_LT(rel_err(sub(a, b).to_vector(), ref_sub), tol(t));
    Tensor s = add(a, b);
    EXPECT_EQ(s.dtype(), t);
    EXPECT_EQ(s.shape(), shape);
    EXPECT_NEAR(s.at({3, 5}), a.at({3, 5}) + b.at({3, 5}), 1e-6);
  }
}

TEST(BasicOps, FunctionsAcceptStridedInputs) {
  // A transpose view and an expand: the functions copy them contiguous before the kernel.
  Tensor a = Tensor::randn({5, 9}, 3, 0, 1.0, DType::F64);
  Tensor bt = Tensor::randn({9, 5}, 4, 0, 1.0, DType::F64).transpose(0, 1);  // (5, 9), strides (1, 5)
  Tensor row = Tensor::randn({1, 9}, 5, 0, 1.0, DType::F64);
  Tensor out = add(mul(a, bt), row.expand({5, 9}));
  for (int64_t i = 0; i < 5; ++i)
    for (int64_t j = 0; j < 9; ++j)
      EXPECT_NEAR(out.at({i, j}), a.at({i, j}) * bt.at({i, j}) + row.at({0, j}), 1e-14);
}

// ---- reductions ---------------------------------------------------------------------------------------

TEST(BasicOps, SumAndSumSquaresMatchReference) {
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(dtype_name(t));
    // 3 * 333 * 7 elements with a nonzero mean: naive fp32 accumulation would drift past 1e-5.
    Tensor x = Tensor::rand({3, 333, 7}, 7, 0, 0.5, 1.5, t);
    double ref_sum = 0, ref_sq = 0;
    for (double v : x.to_vector()) {
      ref_sum += v;
      ref_sq += v * v;
    }
    Tensor out = Tensor::full({}, NAN, t);
    ops::sum(out, x);
    EXPECT_LT(std::fabs(out.item() - ref_sum) / ref_sum, tol(t));
    ops::sum_squares(out, x);
    EXPECT_LT(std::fabs(out.item() - ref_sq) / ref_sq, tol(t));
    // A strided (permuted) input sums to the same value.
    ops::sum(out, x.permute({2, 0, 1}));
    EXPECT_LT(std::fabs(out.item() - ref_sum) / ref_sum, tol(t));

    Tensor s = sum(x);
    EXPECT_EQ(s.dim(), 0);
    EXPECT_EQ(s.dtype(), t);
    EXPECT_LT(std::fabs(s.item() - ref_sum) / ref_sum, tol(t));
    EXPECT_LT(std::fabs(mean(x).item() - ref_sum / static_cast<double>(x.numel())) / ref_sum * x.numel(), tol(t));
    EXPECT_LT(std::fabs(sum_squares(x).item() - ref_sq) / ref_sq, tol(t));
  }
}

// Large enough for the blocked, multi-threaded path (blocks of 2^16, spread over the cores from 2^20 elements):
// matches a sequential fp64 sum, a tail block is included, and two calls agree bitwise.
TEST(BasicOps, LargeSumOverBlocksMatchesReference) {
  const int64_t n = 3 * (int64_t{1} << 20) + 17;
  Tensor x = Tensor::rand({n}, 99, 0, 0.5, 1.5, DType::F32);
  double ref_sum = 0, ref_sq = 0;
  for (double v : x.to_vector()) ref_sum += v, ref_sq += v * v;
  Tensor out = Tensor::full({}, NAN, DType::F64), again = Tensor::full({}, NAN, DType::F64);
  ops::sum(out, x);
  EXPECT_LT(std::fabs(out.item() - ref_sum) / ref_sum, 1e-12);
  ops::sum_squares(out, x);
  EXPECT_LT(std::fabs(out.item() - ref_sq) / ref_sq, 1e-12);
  ops::sum_squares(again, x);
  EXPECT_EQ(out.item(), again.item());
}

TEST(BasicOps, SumToMatchesReference) {
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(dtype_name(t));
    const int64_t A = 3, B = 5, C = 7;
    Tensor x = Tensor::randn({A, B, C}, 11, 0, 1.0, t);
    const auto xv = x.to_vector();
    for (const Shape& target : {Shape{1, B, 1}, Shape{A, 1, C}, Shape{A, B, C}, Shape{1, 1, 1}, Shape{A, B, 1}}) {
      SCOPED_TRACE(target.str());
      std::vector<double> ref(static_cast<size_t>(target.numel()), 0.0);
      for (int64_t i = 0; i < A; ++i)
        for (int64_t j = 0; j < B; ++j)
          for (int64_t k = 0; k < C; ++k) {
            const int64_t oi = target[0] == 1 ? 0 : i, oj = target[1] == 1 ? 0 : j, ok = target[2] == 1 ? 0 : k;
            ref[static_cast<size_t>((oi * target[1] + oj) * target[2] + ok)] += xv[static_cast<size_t>((i * B + j) * C + k)];
          }
      Tensor out = Tensor::full(target, NAN, t);
      ops::sum_to(out, x);
      EXPECT_LT(rel_err(out.to_vector(), ref), tol(t));
    }
    // Strided input: sum a transpose view (C, B, A) down to (C, 1, 1).
    Tensor xt = x.permute({2, 1, 0});
    Tensor out = Tensor::empty({C, 1, 1}, t);
    ops::sum_to(out, xt);
    std::vector<double> ref(static_cast<size_t>(C), 0.0);
    for (int64_t i = 0; i < A * B * C; ++i) ref[static_cast<size_t>(i % C)] += xv[static_cast<size_t>(i)];
    EXPECT_LT(rel_err(out.to_vector(), ref), tol(t));
  }
}

// ---- matmul -------------------------------------------------------------------------------------------

// fp64 reference of out = alpha * op(a) @ op(b) + beta * c0, computed from the logical values of the tensors
// (views included). A 2-D operand is used for every batch entry.
std::vector<double> ref_matmul(const Tensor& a, const Tensor& b, bool ta, bool tb, double alpha, double beta,
                               const std::vector<double>& c0, int64_t batch) {
  const auto av = a.to_vector(), bv = b.to_vector();
  const int64_t M = ta ? a.size(-1) : a.size(-2), K = ta ? a.size(-2) : a.size(-1);
  const int64_t N = tb ? b.size(-2) : b.size(-1);
  auto A = [&](int64_t bi, int64_t m, int64_t k) {
    const int64_t base = a.dim() == 3 ? bi * a.size(-2) * a.size(-1) : 0;
    return av[static_cast<size_t>(base + (ta ? k * a.size(-1) + m : m * a.size(-1) + k))];
  };
  auto B = [&](int64_t bi, int64_t k, int64_t n) {
    const int64_t base = b.dim() == 3 ? bi * b.size(-2) * b.size(-1) : 0;
    return bv[static_cast<size_t>(base + (tb ? n * b.size(-1) + k : k * b.size(-1) + n))];
  };
  std::vector<double> out(static_cast<size_t>(batch * M * N));
  for (int64_t bi = 0; bi < batch; ++bi)
    for (int64_t m = 0; m < M; ++m)
      for (int64_t n = 0; n < N; ++n) {
        double acc = 0;
        for (int64_t k = 0; k < K; ++k) acc += A(bi, m, k) * B(bi, k, n);
        const size_t o = static_cast<size_t>((bi * M + m) * N + n);
        out[o] = alpha * acc + (beta != 0 ? beta * c0[o] : 0.0);
      }
  return out;
}

// Operand of logical shape (rows, cols), or (batch, rows, cols) when batch > 0.
Tensor operand(int64_t batch, int64_t rows, int64_t cols, uint64_t seed, DType t) {
  return batch > 0 ? Tensor::randn({batch, rows, cols}, seed, 0, 1.0, t) : Tensor::randn({rows, cols}, seed, 0, 1.0, t);
}

// matmul_add = matmul + addend, the addend untouched (or updated in place when it is out); a mismatched addend
// is refused with its shape named.
TEST(BasicMatmul, AddendEqualsMatmulPlusAdd) {
  Tensor a = Tensor::randn({5, 4}, 301, 0, 1.0, DType::F64), b = Tensor::randn({3, 4}, 302, 0, 1.0, DType::F64);
  Tensor r = Tensor::randn({5, 3}, 303, 0, 1.0, DType::F64);
  const std::vector<double> before = r.to_vector();
  Tensor out = Tensor::empty({5, 3}, DType::F64), prod = Tensor::empty({5, 3}, DType::F64);
  ops::matmul_add(out, a, b, r, false, true);
  ops::matmul(prod, a, b, false, true, 1.0, 0.0);
  const std::vector<double> got = out.to_vector(), p = prod.to_vector();
  for (size_t i = 0; i < got.size(); ++i) EXPECT_NEAR(got[i], p[i] + before[i], 1e-12);
  EXPECT_EQ(r.to_vector(), before);
  ops::matmul_add(r, a, b, r, false, true);
  EXPECT_EQ(r.to_vector(), got);
  try {
    ops::matmul_add(out, a, b, Tensor::zeros({3, 5}, DType::F64), false, true);
    FAIL() << "expected an error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("[3, 5]"), std::string::npos) << e.what();
  }
}

TEST(BasicMatmul, AllTransposeCombinationsAlphaBeta) {
  const int64_t M = 7, K = 11, N = 5;
  for (DType t : kFloatTypes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        for (double beta : {0.0, 0.3}) {
          SCOPED_TRACE(str(dtype_name(t), " ta=", ta, " tb=", tb, " beta=", beta));
          Tensor a = ta ? operand(0, K, M, 21, t) : operand(0, M, K, 21, t);
          Tensor b = tb ? operand(0, N, K, 22, t) : operand(0, K, N, 22, t);
          // beta == 0 must overwrite a NaN-poisoned out; beta != 0 must read it.
          Tensor out = beta == 0 ? Tensor::full({M, N}, NAN, t) : Tensor::randn({M, N}, 23, 0, 1.0, t);
          const auto ref = ref_matmul(a, b, ta, tb, 0.5, beta, out.to_vector(), 1);
          ops::matmul(out, a, b, ta, tb, 0.5, beta);
          EXPECT_LT(rel_err(out.to_vector(), ref), tol(t));
          // The autograd function (alpha 1, beta 0).
          Tensor y = matmul(a, b, ta, tb);
          EXPECT_EQ(y.shape(), (Shape{M, N}));
          EXPECT_LT(rel_err(y.to_vector(), ref_matmul(a, b, ta, tb, 1.0, 0.0, {}, 1)), tol(t));
        }
}

TEST(BasicMatmul, BatchedAndBroadcast) {
  const int64_t Bt = 3, M = 5, K = 9, N = 7;
  for (DType t : kFloatTypes)
    for (int ta = 0; ta < 2; ++ta)
      for (int tb = 0; tb < 2; ++tb)
        // Which operand is 3-D: both, only a (b broadcast), only b (a broadcast).
        for (int mode = 0; mode < 3; ++mode) {
          SCOPED_TRACE(str(dtype_name(t), " ta=", ta, " tb=", tb, " mode=", mode));
          const int64_t ba = mode == 2 ? 0 : Bt, bb = mode == 1 ? 0 : Bt;
          Tensor a = ta ? operand(ba, K, M, 31, t) : operand(ba, M, K, 31, t);
          Tensor b = tb ? operand(bb, N, K, 32, t) : operand(bb, K, N, 32, t);
          Tensor out = Tensor::randn({Bt, M, N}, 33, 0, 1.0, t);
          const auto ref = ref_matmul(a, b, ta, tb, 1.5, -0.5, out.to_vector(), Bt);
          ops::matmul(out, a, b, ta, tb, 1.5, -0.5);
          EXPECT_LT(rel_err(out.to_vector(), ref), tol(t));
          Tensor y = matmul(a, b, ta, tb);
          EXPECT_EQ(y.shape(), (Shape{Bt, M, N}));
          EXPECT_LT(rel_err(y.to_vector(), ref_matmul(a, b, ta, tb, 1.0, 0.0, {}, Bt)), tol(t));
        }
}

TEST(BasicMatmul, StridedOperands) {
  const int64_t M = 7, K = 11, N = 5, Bt = 3;
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(dtype_name(t));
    // a: columns [3, 3+K) of a wider matrix (row stride 20 != width K).
    Tensor a = Tensor::randn({M, 20}, 41, 0, 1.0, t).narrow(1, 3, K);
    // b: a transpose view (last-dim stride != 1): the kernel must copy it.
    Tensor b = Tensor::randn({N, K}, 42, 0, 1.0, t).transpose(0, 1);  // (K, N), strides (1, K)
    // out: a narrow of a wider matrix; the columns outside must stay untouched.
    Tensor wide = Tensor::full({M, N + 4}, 9.0, t);
    Tensor out = wide.narrow(1, 2, N);
    ops::matmul(out, a, b, false, false, 1.0, 0.0);
    EXPECT_LT(rel_err(out.to_vector(), ref_matmul(a, b, false, false, 1.0, 0.0, {}, 1)), tol(t));
    for (int64_t i = 0; i < M; ++i) {
      EXPECT_EQ(wide.at({i, 0}), 9.0);
      EXPECT_EQ(wide.at({i, 1}), 9.0);
      EXPECT_EQ(wide.at({i, N + 2}), 9.0);
      EXPECT_EQ(wide.at({i, N + 3}), 9.0);
    }
    EXPECT_LT(rel_err(matmul(a, b).to_vector(), ref_matmul(a, b, false, false, 1.0, 0.0, {}, 1)), tol(t));

    // Batch-strided: every other matrix of a (2*Bt, M, K) stack, and a narrow in the row dim of b.
    Tensor a3 = Tensor::randn({2 * Bt, M, K}, 43, 0, 1.0, t).slice(0, 0, 2 * Bt, 2);  // batch stride 2*M*K
    Tensor b3 = Tensor::randn({Bt, K + 3, N}, 44, 0, 1.0, t).narrow(1, 1, K);
    Tensor out3 = Tensor::empty({Bt, M, N}, t);
    ops::matmul(out3, a3, b3, false, false, 1.0, 0.0);
    EXPECT_LT(rel_err(out3.to_vector(), ref_matmul(a3, b3, false, false, 1.0, 0.0, {}, Bt)), tol(t));
    // A batch-transposed view of a (B, K, M) tensor read with trans_a.
    Tensor at = Tensor::randn({Bt, M, K}, 45, 0, 1.0, t).transpose(1, 2);  // (Bt, K, M), last-dim stride K
    EXPECT_LT(rel_err(matmul(at, b3, true, false).to_vector(), ref_matmul(at, b3, true, false, 1.0, 0.0, {}, Bt)), tol(t));
  }
}

TEST(BasicMatmul, EmptyInnerDimensionGivesBetaTimesOut) {
  Tensor a = Tensor::empty({3, 0}, DType::F64), b = Tensor::empty({0, 4}, DType::F64);
  Tensor out = Tensor::full({3, 4}, 2.0, DType::F64);
  ops::matmul(out, a, b, false, false, 1.0, 0.5);
  for (double v : out.to_vector()) EXPECT_EQ(v, 1.0);
  ops::matmul(out, a, b, false, false, 1.0, 0.0);
  for (double v : out.to_vector()) EXPECT_EQ(v, 0.0);
}

TEST(BasicMatmul, LinearFlattensLeadingDims) {
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(dtype_name(t));
    const int64_t B = 2, T = 3, in = 13, out_features = 5;
    Tensor x = Tensor::randn({B, T, in}, 51, 0, 1.0, t), w = Tensor::randn({out_features, in}, 52, 0, 1.0, t);
    Tensor y = linear(x, w);
    ASSERT_EQ(y.shape(), (Shape{B, T, out_features}));
    const auto xv = x.to_vector(), wv = w.to_vector();
    std::vector<double> ref;
    for (int64_t r = 0; r < B * T; ++r)
      for (int64_t o = 0; o < out_features; ++o) {
        double acc = 0;
        for (int64_t i = 0; i < in; ++i) acc += xv[static_cast<size_t>(r * in + i)] * wv[static_cast<size_t>(o * in + i)];
        ref.push_back(acc);
      }
    EXPECT_LT(rel_err(y.to_vector(), ref), tol(t));
  }
}

// ---- embedding ----------------------------------------------------------------------------------------

TEST(BasicEmbedding, ForwardAndBackwardWithDuplicateIds) {
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(dtype_name(t));
    const int64_t V = 9, D = 13;
    const std::vector<double> idv = {4, 0, 8, 4, 4, 1, 0, 7, 3, 4};  // duplicates: 4 (x4), 0 (x2)
    Tensor ids = ids_tensor(idv, {2, 5});
    Tensor table = Tensor::randn({V, D}, 61, 0, 1.0, t);
    const auto tv = table.to_vector();

    Tensor y = embedding(table, ids);
    ASSERT_EQ(y.shape(), (Shape{2, 5, D}));
    std::vector<double> ref;
    for (double id : idv)
      for (int64_t d = 0; d < D; ++d) ref.push_back(tv[static_cast<size_t>(static_cast<int64_t>(id) * D + d)]);
    EXPECT_EQ(rel_err(y.to_vector(), ref), 0.0);  // a gather is exact

    // Backward kernel: accumulates into a nonzero dtable.
    Tensor dout = Tensor::randn({10, D}, 62, 0, 1.0, t);
    Tensor dtable = Tensor::randn({V, D}, 63, 0, 1.0, t);
    std::vector<double> ref_dt = dtable.to_vector();
    const auto dv = dout.to_vector();
    for (size_t n = 0; n < idv.size(); ++n)
      for (int64_t d = 0; d < D; ++d)
        ref_dt[static_cast<size_t>(static_cast<int64_t>(idv[n]) * D + d)] += dv[n * static_cast<size_t>(D) + static_cast<size_t>(d)];
    ops::embedding_backward(dtable, dout, ids.view({10}));
    EXPECT_LT(rel_err(dtable.to_vector(), ref_dt), tol(t));

    // Deterministic: a second run from the same start is bitwise equal.
    Tensor again = Tensor::randn({V, D}, 63, 0, 1.0, t);
    ops::embedding_backward(again, dout, ids.view({10}));
    EXPECT_EQ(again.to_vector(), dtable.to_vector());
  }
}

// ---- cross-entropy ------------------------------------------------------------------------------------

// fp64 reference: per-row loss and dlogits = (softmax - onehot) * grad_scale, zeros for ignored rows.
void ref_cross_entropy(const std::vector<double>& x, const std::vector<double>& targets, int64_t V, int64_t ignore,
                       double grad_scale, std::vector<double>* losses, std::vector<double>* dlogits) {
  const int64_t N = static_cast<int64_t>(targets.size());
  losses->assign(static_cast<size_t>(N), 0.0);
  dlogits->assign(static_cast<size_t>(N * V), 0.0);
  for (int64_t n = 0; n < N; ++n) {
    const int64_t tgt = static_cast<int64_t>(targets[static_cast<size_t>(n)]);
    if (tgt == ignore) continue;
    double mx = -INFINITY;
    for (int64_t v = 0; v < V; ++v) mx = std::max(mx, x[static_cast<size_t>(n * V + v)]);
    double se = 0;
    for (int64_t v = 0; v < V; ++v) se += std::exp(x[static_cast<size_t>(n * V + v)] - mx);
    (*losses)[static_cast<size_t>(n)] = mx + std::log(se) - x[static_cast<size_t>(n * V + tgt)];
    for (int64_t v = 0; v < V; ++v)
      (*dlogits)[static_cast<size_t>(n * V + v)] =
          (std::exp(x[static_cast<size_t>(n * V + v)] - mx) / se - (v == tgt ? 1.0 : 0.0)) * grad_scale;
  }
}

TEST(BasicCrossEntropy, KernelMatchesReferenceWithIgnoreIndex) {
  const int64_t N = 11, V = 37;
  for (DType t : kFloatTypes)
    for (int64_t ignore : {int64_t{-1}, int64_t{3}}) {  // -1: padding; 3: ignoring a real class id
      SCOPED_TRACE(str(dtype_name(t), " ignore=", ignore));
      const std::vector<double> tv = {5, -1, 36, 0, 3, 3, 12, -1, 7, 1, 20};
      std::vector<double> targets = tv;
      if (ignore == 3)
        for (double& v : targets)
          if (v == -1) v = 3;
      Tensor logits = Tensor::randn({N, V}, 71, 0, 3.0, t);
      std::vector<double> ref_l, ref_d;
      ref_cross_entropy(logits.to_vector(), targets, V, ignore, 0.37, &ref_l, &ref_d);
      Tensor losses = Tensor::full({N}, NAN, t);
      Tensor dlogits = Tensor::full({N, V}, NAN, t);
      ops::cross_entropy_forward_backward(losses, dlogits, logits, ids_tensor(targets, {N}), ignore, 0.37);
      EXPECT_LT(rel_err(losses.to_vector(), ref_l), tol(t));
      EXPECT_LT(rel_err(dlogits.to_vector(), ref_d), tol(t));
      // Ignored rows: zero loss and an exactly zero gradient row.
      for (int64_t n = 0; n < N; ++n) {
        if (static_cast<int64_t>(targets[static_cast<size_t>(n)]) != ignore) continue;
        EXPECT_EQ(losses.at({n}), 0.0);
        for (int64_t v = 0; v < V; ++v) EXPECT_EQ(dlogits.at({n, v}), 0.0);
      }
      // Without dlogits: losses only (f32 losses, as the contract says for every logits dtype).
      Tensor losses32 = Tensor::empty({N}, DType::F32);
      ops::cross_entropy_forward_backward(losses32, Tensor(), logits, ids_tensor(targets, {N}), ignore, 1.0);
      EXPECT_LT(rel_err(losses32.to_vector(), ref_l), 1e-6);

      // The autograd functions: mean over counted targets, and per-token losses shaped like targets.
      double ref_sum = 0;
      int counted = 0;
      for (int64_t n = 0; n < N; ++n)
        if (static_cast<int64_t>(targets[static_cast<size_t>(n)]) != ignore) {
          ref_sum += ref_l[static_cast<size_t>(n)];
          ++counted;
        }
      Tensor loss = cross_entropy(logits, ids_tensor(targets, {N}), ignore);
      EXPECT_EQ(loss.dim(), 0);
      EXPECT_EQ(loss.dtype(), t == DType::F64 ? DType::F64 : DType::F32);
      EXPECT_NEAR(loss.item(), ref_sum / counted, 1e-5 * ref_sum / counted);
      Tensor per = cross_entropy_per_token(logits.view({1, N, V}), ids_tensor(targets, {1, N}), ignore);
      EXPECT_EQ(per.shape(), (Shape{1, N}));
      EXPECT_LT(rel_err(per.to_vector(), ref_l), tol(t));
    }
}

TEST(BasicCrossEntropy, StableForLargeLogitsAndAllIgnored) {
  // Logits near 1e4: a naive exp overflows to inf; the max-subtracted version stays exact.
  const int64_t N = 3, V = 5;
  Tensor logits = Tensor::from_vector({1e4, 1e4 + 1, 1e4 - 2, 1e4, 1e4 + 3,  //
                                       -1e4, -1e4, -1e4, -1e4, -1e4,          //
                                       0, 0, 0, 0, 100},
                                      {N, V}, DType::F32);
  Tensor targets = ids_tensor({4, 2, 0}, {N});
  Tensor losses = Tensor::empty({N}, DType::F32), dlogits = Tensor::empty({N, V}, DType::F32);
  ops::cross_entropy_forward_backward(losses, dlogits, logits, targets, -1, 1.0);
  std::vector<double> ref_l, ref_d;
  ref_cross_entropy(logits.to_vector(), {4, 2, 0}, V, -1, 1.0, &ref_l, &ref_d);
  for (double v : losses.to_vector()) EXPECT_TRUE(std::isfinite(v));
  EXPECT_LT(rel_err(losses.to_vector(), ref_l), 1e-5);
  EXPECT_LT(rel_err(dlogits.to_vector(), ref_d), 1e-5);
  EXPECT_NEAR(losses.at({1}), std::log(5.0), 1e-6);
  // Every target ignored: the mean is 0 (count clamps to 1), not NaN.
  EXPECT_EQ(cross_entropy(logits, ids_tensor({-1, -1, -1}, {N})).item(), 0.0);
}

// The gradient may overwrite the logits in place (the LM-head loss does): same losses and gradient.
TEST(BasicCrossEntropy, InPlaceGradientMatches) {
  const int64_t N = 4, V = 9;
  std::vector<double> x(static_cast<size_t>(N * V));
  for (size_t i = 0; i < x.size(); ++i) x[i] = std::sin(1.7 * static_cast<double>(i)) * 4;
  for (DType t : {DType::F32, DType::F64}) {
    Tensor logits = Tensor::from_vector(x, {N, V}, t), targets = ids_tensor({8, -1, 0, 3}, {N});
    Tensor losses = Tensor::empty({N}, DType::F64), dlogits = Tensor::empty({N, V}, t);
    ops::cross_entropy_forward_backward(losses, dlogits, logits, targets, -1, 0.5);
    Tensor in_place = logits.clone(), losses2 = Tensor::empty({N}, DType::F64);
    ops::cross_entropy_forward_backward(losses2, in_place, in_place, targets, -1, 0.5);
    EXPECT_EQ(losses2.to_vector(), losses.to_vector());
    EXPECT_EQ(in_place.to_vector(), dlogits.to_vector());
  }
}

// Enough rows to be split over threads (grain: 2^18 logits): bitwise the same as the rows computed in two calls
// too small to split.
TEST(BasicCrossEntropy, RowsSplitOverThreadsMatchSmallCalls) {
  const int64_t N = 10000, V = 64, half = N / 2;
  Tensor logits = Tensor::randn({N, V}, 321, 0, 2.0, DType::F32);
  std::vector<double> t(static_cast<size_t>(N));
  for (int64_t i = 0; i < N; ++i) t[static_cast<size_t>(i)] = i % 17 == 0 ? -1 : static_cast<double>((i * 7) % V);
  Tensor targets = ids_tensor(t, {N});
  Tensor losses = Tensor::empty({N}, DType::F32), dlogits = Tensor::empty({N, V}, DType::F32);
  ops::cross_entropy_forward_backward(losses, dlogits, logits, targets, -1, 0.25);
  Tensor l2 = Tensor::empty({N}, DType::F32), d2 = Tensor::empty({N, V}, DType::F32);
  for (int64_t r : {int64_t{0}, half})
    ops::cross_entropy_forward_backward(l2.narrow(0, r, half), d2.narrow(0, r, half), logits.narrow(0, r, half),
                                        targets.narrow(0, r, half), -1, 0.25);
  EXPECT_EQ(losses.to_vector(), l2.to_vector());
  EXPECT_EQ(dlogits.to_vector(), d2.to_vector());
}

// ---- concat / split -----------------------------------------------------------------------------------

TEST(BasicConcat, ConcatAndSplitRoundTrip) {
  for (DType t : kFloatTypes) {
    SCOPED_TRACE(dtype_name(t));
    Tensor a = Tensor::randn({3, 2, 5}, 81, 0, 1.0, t), b = Tensor::randn({3, 7, 5}, 82, 0, 1.0, t);
    Tensor c = Tensor::randn({5, 3, 1}, 83, 0, 1.0, t).permute({1, 2, 0});  // (3, 1, 5), strided
    Tensor y = concat({a, b, c}, 1);
    ASSERT_EQ(y.shape(), (Shape{3, 10, 5}));
    for (int64_t i = 0; i < 3; ++i)
      for (int64_t k = 0; k < 5; ++k) {
        for (int64_t j = 0; j < 2; ++j) EXPECT_EQ(y.at({i, j, k}), a.at({i, j, k}));
        for (int64_t j = 0; j < 7; ++j) EXPECT_EQ(y.at({i, 2 + j, k}), b.at({i, j, k}));
        EXPECT_EQ(y.at({i, 9, k}), c.at({i, 0, k}));
      }
    auto parts = split(y, {2, 7, 1}, -2);
    ASSERT_EQ(parts.size(), 3u);
    EXPECT_EQ(parts[0].to_vector(), a.to_vector());
    EXPECT_EQ(parts[1].to_vector(), b.to_vector());
    EXPECT_EQ(parts[2].to_vector(), c.to_vector());
    // Concat along the last dim.
    Tensor z = concat({a, a}, -1);
    EXPECT_EQ(z.shape(), (Shape{3, 2, 10}));
    EXPECT_EQ(z.at({2, 1, 7}), a.at({2, 1, 2}));
  }
}

// ---- autograd wiring ----------------------------------------------------------------------------------

TEST(BasicAutograd, RecordsOnlyWhenNeeded) {
  Tensor a = Tensor::randn({3, 4}, 91, 0, 1.0, DType::F64), b = Tensor::randn({4, 5}, 92, 0, 1.0, DType::F64);
  EXPECT_EQ(matmul(a, b).grad_fn(), nullptr);  // no input requires grad
  b.set_requires_grad(true);
  Tensor y = matmul(a, b);
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_EQ(y.grad_fn()->name(), "MatmulBackward");
  {
    autograd::NoGradGuard no_grad;
    EXPECT_EQ(matmul(a, b).grad_fn(), nullptr);
  }
  // Only b gets a gradient; a (not requiring grad) keeps none.
  sum(y).backward();
  EXPECT_FALSE(a.grad().defined());
  ASSERT_TRUE(b.grad().defined());
  // d sum(a @ b) / db[k][n] = sum_m a[m][k].
  for (int64_t k = 0; k < 4; ++k) {
    double col = 0;
    for (int64_t m = 0; m < 3; ++m) col += a.at({m, k});
    for (int64_t n = 0; n < 5; ++n) EXPECT_NEAR(b.grad().at({k, n}), col, 1e-12);
  }
}

// ---- bad inputs ---------------------------------------------------------------------------------------

TEST(BasicErrors, ShapeMismatchNamesShapes) {
  Tensor a = Tensor::randn({2, 3}, 1), b = Tensor::randn({3, 2}, 2);
  expect_error([&] { add(a, b); }, {"add", "[2, 3]", "[3, 2]"});
  expect_error([&] { mul(a, b); }, {"mul", "[2, 3]", "[3, 2]"});
  expect_error([&] { ops::add(Tensor::empty({2, 3}), a, b, 1.0, 1.0); }, {"add", "[3, 2]"});
  expect_error([&] { matmul(a, a); }, {"matmul", "inner", "[2, 3]"});
  expect_error([&] { ops::matmul(Tensor::empty({2, 2}), a, a, false, false, 1.0, 0.0); }, {"matmul", "[2, 3]"});
  expect_error([&] { matmul(Tensor::randn({2, 4, 3}, 3), Tensor::randn({3, 3, 5}, 4)); }, {"batch", "[2, 4, 3]", "[3, 3, 5]"});
  expect_error([&] { linear(Tensor::randn({4, 7}, 5), Tensor::randn({5, 6}, 6)); }, {"linear", "[4, 7]", "[5, 6]"});
  expect_error([&] { concat({a, b}, 0); }, {"concat", "[3, 2]", "[2, 3]"});
  expect_error([&] { split(a, {1, 1}, 1); }, {"split", "2", "3"});
  expect_error([&] { ops::sum_to(Tensor::empty({2, 2}), a); }, {"sum_to", "[2, 3]", "[2, 2]"});
  expect_error([&] { cross_entropy(Tensor::randn({4, 5}, 7), ids_tensor({0, 1, 2}, {3})); }, {"targets", "[3]", "[4]"});
  expect_error([&] { add(a, Tensor::randn({2, 3}, 8, 0, 1.0, DType::F64)); }, {"add", "f32", "f64"});
}

TEST(BasicErrors, OutOfRangeIdsNameTheId) {
  Tensor table = Tensor::randn({9, 4}, 1);
  expect_error([&] { embedding(table, ids_tensor({1, 9, 2}, {3})); }, {"token id 9", "position 1", "[0, 9)"});
  expect_error([&] { embedding(table, ids_tensor({-3}, {1})); }, {"token id -3"});
  Tensor dtable = Tensor::zeros({9, 4});
  expect_error([&] { ops::embedding_backward(dtable, Tensor::zeros({2, 4}), ids_tensor({0, 12}, {2})); }, {"token id 12"});
  expect_error([&] { embedding(table, Tensor::zeros({3}, DType::I64)); }, {"i32", "i64"});
  // Cross-entropy: a target outside [0, V) that is not ignore_index.
  expect_error([&] { cross_entropy(Tensor::randn({3, 5}, 2), ids_tensor({0, 5, 1}, {3})); }, {"target 5", "row 1"});
  expect_error([&] { cross_entropy(Tensor::randn({3, 5}, 2), ids_tensor({0, -1, 1}, {3}), -100); }, {"target -1"});
}

}  // namespace
}  // namespace latte
