// CPU reference MLRA branch sum: the attention kernel runs MLRA's branch attentions as R*H virtual heads, laid
// out branch-major (head r*H + h), and the layer combines them as out = scale * sum_r in[..., r*H + h, :]
// (scale 1/2 for MLRA-4, 1/sqrt(2) for MLRA-2; spec/attention.md). The backward broadcasts scale * dout to
// every branch. Contiguous tensors; f32/f64, sums in double.
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

namespace {
// Views both tensors as rows of (R, H*D) and (H*D): the branch index is the slowest within a (b, t) row.
void check_shapes(const Tensor& in, const Tensor& out, int64_t branches, const char* op) {
  LATTE_CHECK(in.dim() == 4 && out.dim() == 4 && branches >= 1, op, ": in ", in.str(), " out ", out.str());
  LATTE_CHECK(in.size(0) == out.size(0) && in.size(1) == out.size(1) && in.size(2) == branches * out.size(2) &&
                  in.size(3) == out.size(3),
              op, ": in ", in.str(), " out ", out.str(), " branches ", branches);
  LATTE_CHECK(in.is_contiguous() && out.is_contiguous() && in.dtype() == out.dtype(), op, " wants contiguous, one dtype");
}
}  // namespace

void branch_sum_forward(const Tensor& out, const Tensor& in, int64_t branches, double scale) {
  check_shapes(in, out, branches, "branch_sum_forward");
  const int64_t rows = out.size(0) * out.size(1), width = out.size(2) * out.size(3);
  dispatch_float(in.dtype(), "branch_sum_forward", [&]<typename T>() {
    const T* pi = in.data<T>();  // (B*T, R, H*D)
    T* po = out.data<T>();       // (B*T, H*D)
    for (int64_t n = 0; n < rows; ++n)
      for (int64_t c = 0; c < width; ++c) {
        double s = 0;
        for (int64_t r = 0; r < branches; ++r) s += static_cast<double>(pi[(n * branches + r) * width + c]);
        po[n * width + c] = static_cast<T>(scale * s);
      }
  });
}

void branch_sum_backward(const Tensor& din, const Tensor& dout, int64_t branches, double scale) {
  check_shapes(din, dout, branches, "branch_sum_backward");
  const int64_t rows = dout.size(0) * dout.size(1), width = dout.size(2) * dout.size(3);
  dispatch_float(din.dtype(), "branch_sum_backward", [&]<typename T>() {
    T* pdi = din.data<T>();          // (B*T, R, H*D)
    const T* pdo = dout.data<T>();   // (B*T, H*D)
    for (int64_t n = 0; n < rows; ++n)
      for (int64_t r = 0; r < branches; ++r)
        for (int64_t c = 0; c < width; ++c)
          pdi[(n * branches + r) * width + c] = static_cast<T>(scale * static_cast<double>(pdo[n * width + c]));
  });
}

}  // namespace latte::cpu
