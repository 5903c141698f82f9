// CPU matmul: out[b] = alpha * op(a[b]) @ op(b[b]) + beta * out[b] through OpenBLAS (cblas_sgemm /
// cblas_dgemm), one GEMM per batch entry. BLAS reads a matrix from a pointer, a row stride (ld) and
// unit column stride, which is exactly the layout the contract allows (any batch stride, any row stride,
// last-dim stride 1); an operand outside that layout (e.g. a transpose view) is first copied contiguous.
#include <cblas.h>

#include <algorithm>

#include "kernels/cpu/cpu_ops.h"

namespace latte::cpu {

namespace {

// One operand as BLAS sees it: a base pointer, rows x cols with row stride ld, and a batch stride
// (0 for a 2-D operand broadcast over the batch).
struct GemmOperand {
  Tensor keep;  // the tensor the pointer points into (a contiguous copy when the input was not usable)
  int64_t rows = 0, cols = 0, ld = 1, batch = 1, batch_stride = 0;
};

// True when every matrix of t can be handed to BLAS as (pointer, ld) with unit column stride.
bool blas_layout(const Tensor& t) {
  const int64_t rows = t.size(-2), cols = t.size(-1);
  if (rows == 0 || cols == 0) return true;
  if (cols > 1 && t.stride(-1) != 1) return false;
  return rows == 1 || t.stride(-2) >= cols;
}

GemmOperand gemm_operand(const Tensor& t) {
  GemmOperand g;
  // detach(): a kernel must never record autograd history, even when called with a tensor that requires grad.
  g.keep = blas_layout(t) ? t : t.detach().contiguous();
  g.rows = t.size(-2);
  g.cols = t.size(-1);
  // A single row has no meaningful row stride; BLAS still requires ld >= max(1, cols).
  g.ld = (g.rows <= 1 || g.cols == 0) ? std::max<int64_t>(1, g.cols) : g.keep.stride(-2);
  g.ld = std::max<int64_t>(g.ld, std::max<int64_t>(1, g.cols));
  if (t.dim() == 3) {
    g.batch = t.size(0);
    g.batch_stride = g.keep.stride(0);
  }
  return g;
}

}  // namespace

void matmul(const Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha, double beta) {
  const std::string shapes = str("a ", a.shape().str(), (trans_a ? "^T" : ""), ", b ", b.shape().str(),
                                 (trans_b ? "^T" : ""), ", out ", out.shape().str());
  LATTE_REQUIRE((a.dim() == 2 || a.dim() == 3) && (b.dim() == 2 || b.dim() == 3) && (out.dim() == 2 || out.dim() == 3),
                "matmul: operands must be 2-D or 3-D, got ", shapes);
  LATTE_REQUIRE(a.dtype() == b.dtype() && out.dtype() == a.dtype(), "matmul: dtypes differ, a ", dtype_name(a.dtype()),
                ", b ", dtype_name(b.dtype()), ", out ", dtype_name(out.dtype()));
  const int64_t M = trans_a ? a.size(-1) : a.size(-2);
  const int64_t K = trans_a ? a.size(-2) : a.size(-1);
  const int64_t Kb = trans_b ? b.size(-1) : b.size(-2);
  const int64_t N = trans_b ? b.size(-2) : b.size(-1);
  LATTE_REQUIRE(K == Kb, "matmul: inner dimensions differ (", K, " vs ", Kb, "): ", shapes);
  LATTE_REQUIRE(out.size(-2) == M && out.size(-1) == N, "matmul: out must be (", M, ", ", N, "): ", shapes);
  const int64_t batch = out.dim() == 3 ? out.size(0) : 1;
  LATTE_REQUIRE(out.dim() == 3 || (a.dim() == 2 && b.dim() == 2), "matmul: a 3-D operand needs a 3-D out: ", shapes);
  LATTE_REQUIRE((a.dim() == 2 || a.size(0) == batch) && (b.dim() == 2 || b.size(0) == batch),
                "matmul: batch sizes differ: ", shapes);
  LATTE_REQUIRE(blas_layout(out), "matmul: out must have last-dim stride 1 and row stride >= its width, got strides ",
                out.strides().str(), ": ", shapes);
  if (batch == 0 || M == 0 || N == 0) return;

  const GemmOperand ga = gemm_operand(a), gb = gemm_operand(b), gc = gemm_operand(out);
  const CBLAS_TRANSPOSE ta = trans_a ? CblasTrans : CblasNoTrans;
  const CBLAS_TRANSPOSE tb = trans_b ? CblasTrans : CblasNoTrans;
  const int m = static_cast<int>(M), n = static_cast<int>(N), k = static_cast<int>(K);
  const int lda = static_cast<int>(ga.ld), ldb = static_cast<int>(gb.ld), ldc = static_cast<int>(gc.ld);
  for (int64_t i = 0; i < batch; ++i) {
    if (out.dtype() == DType::F32) {
      const float* pa = ga.keep.data<float>() + i * ga.batch_stride;
      const float* pb = gb.keep.data<float>() + i * gb.batch_stride;
      float* pc = out.data<float>() + i * gc.batch_stride;
      // beta == 0 must overwrite (out may hold garbage or NaN); BLAS treats beta == 0 as "C is not read".
      cblas_sgemm(CblasRowMajor, ta, tb, m, n, k, static_cast<float>(alpha), pa, lda, pb, ldb, static_cast<float>(beta),
                  pc, ldc);
    } else if (out.dtype() == DType::F64) {
      const double* pa = ga.keep.data<double>() + i * ga.batch_stride;
      const double* pb = gb.keep.data<double>() + i * gb.batch_stride;
      double* pc = out.data<double>() + i * gc.batch_stride;
      cblas_dgemm(CblasRowMajor, ta, tb, m, n, k, alpha, pa, lda, pb, ldb, beta, pc, ldc);
    } else {
      LATTE_FAIL("matmul: CPU kernels support f32 and f64, got ", dtype_name(out.dtype()), "; cast with .to(DType::F32)");
    }
  }
}

// The addend copied into out, then the product added (beta = 1).
void matmul_add(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& addend, bool trans_a, bool trans_b) {
  if (addend.data_ptr() != out.data_ptr()) copy(out, addend);
  matmul(out, a, b, trans_a, trans_b, 1.0, 1.0);
}

}  // namespace latte::cpu
