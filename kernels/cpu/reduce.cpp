// CPU reference reductions: sum and sum of squares of all elements, and sum_to (sum over the dims where
// the output has size 1: the backward of expand/broadcast). Accumulation is always in fp64, so f32
// results are the correctly rounded value of a nearly exact sum (a good reference for the CUDA kernels).
#include <algorithm>
#include <vector>

#include "core/parallel.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/lane_sum.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

namespace {
// out: one element of any float dtype (a bf16 sum on CUDA may land in f32; keep the CPU as permissive).
void check_scalar_out(const char* op, const Tensor& out, const Tensor& in) {
  LATTE_REQUIRE(out.numel() == 1, op, ": out must have one element, got shape ", out.shape().str(), " for input ",
                in.shape().str());
  LATTE_REQUIRE(is_floating(out.dtype()), op, ": out must be a float tensor, got ", dtype_name(out.dtype()));
}

// Sum of f(x) over all elements of `in` (contiguous or not), accumulated in fp64. A contiguous input is cut
// into fixed blocks of kBlock elements, each summed in interleaved partial sums (lane_sum.h), the blocks spread
// over the cores and their sums added in order: the result depends only on the input, not on the core count.
template <typename F>
double reduce_all(const Tensor& in, const char* op, F&& f) {
  double acc = 0.0;
  dispatch_float(in.dtype(), op, [&]<typename T>() {
    const T* x = in.data<T>();
    if (in.is_contiguous()) {
      constexpr int64_t kBlock = int64_t{1} << 16;
      const int64_t n = in.numel(), blocks = (n + kBlock - 1) / kBlock;
      std::vector<double> block_sum(static_cast<size_t>(blocks), 0.0);
      parallel_ranges(blocks, 8, [&](int64_t first, int64_t end) {
        for (int64_t b = first; b < end; ++b) {
          const T* xb = x + b * kBlock;
          block_sum[static_cast<size_t>(b)] =
              lane_sum(std::min(kBlock, n - b * kBlock), [&](int64_t i) { return f(static_cast<double>(xb[i])); });
        }
      });
      for (const double s : block_sum) acc += s;
    } else {
      for_each_offset(in.shape(), in.strides(), in.strides(), [&](int64_t o, int64_t) { acc += f(static_cast<double>(x[o])); });
    }
  });
  return acc;
}
}  // namespace

void sum(const Tensor& out, const Tensor& in) {
  check_scalar_out("sum", out, in);
  store_from_double(out.data_ptr(), out.dtype(), 0, reduce_all(in, "sum", [](double v) { return v; }));
}

void sum_squares(const Tensor& out, const Tensor& in) {
  check_scalar_out("sum_squares", out, in);
  store_from_double(out.data_ptr(), out.dtype(), 0, reduce_all(in, "sum_squares", [](double v) { return v * v; }));
}

void sum_to(const Tensor& out, const Tensor& in) {
  LATTE_REQUIRE(out.dim() == in.dim(), "sum_to: out ", out.shape().str(), " must have the rank of in ", in.shape().str());
  for (int d = 0; d < in.dim(); ++d)
    LATTE_REQUIRE(out.size(d) == 1 || out.size(d) == in.size(d), "sum_to: cannot sum ", in.shape().str(), " to ",
                  out.shape().str(), " (dim ", d, " of out must be 1 or ", in.size(d), ")");
  LATTE_REQUIRE(out.dtype() == in.dtype(), "sum_to: dtypes differ, out ", dtype_name(out.dtype()), ", in ",
                dtype_name(in.dtype()));
  LATTE_CHECK(out.is_contiguous(), "sum_to needs a contiguous out");
  // Walk `in` in row-major order; the matching out element has offset sum_d idx_d * reduced_stride_d,
  // where a summed-over dim gets stride 0 so all its elements land in the same accumulator.
  Strides reduced = contiguous_strides(out.shape());
  for (int d = 0; d < in.dim(); ++d)
    if (out.size(d) != in.size(d)) reduced[d] = 0;
  std::vector<double> acc(static_cast<size_t>(out.numel()), 0.0);
  dispatch_float(in.dtype(), "sum_to", [&]<typename T>() {
    const T* x = in.data<T>();
    for_each_offset(in.shape(), in.strides(), reduced,
                    [&](int64_t o_in, int64_t o_out) { acc[static_cast<size_t>(o_out)] += static_cast<double>(x[o_in]); });
    T* y = out.data<T>();
    for (int64_t i = 0; i < out.numel(); ++i) y[i] = static_cast<T>(acc[static_cast<size_t>(i)]);
  });
}

}  // namespace latte::cpu
