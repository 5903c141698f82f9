// CPU cross-entropy from logits, fused with its gradient. Per row: a numerically stable log-softmax
// (subtract the row max before exp, accumulate the exp-sum in fp64; the exponentials themselves in the
// logits' precision, each computed once), loss = logsumexp - logit[target],
// and, when dlogits is given, dlogits = (softmax - onehot(target)) * grad_scale written in the same pass,
// so no probability tensor is materialised. Rows whose target is ignore_index get loss 0 and a zero
// gradient row. losses may be f32 (the contract) or f64 (so fp64 gradchecks keep full precision).
#include <algorithm>
#include <cmath>

#include "core/parallel.h"
#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/lane_sum.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

void cross_entropy_forward_backward(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                                    const Tensor& targets, int64_t ignore_index, double grad_scale) {
  LATTE_REQUIRE(logits.dim() == 2 && targets.dim() == 1 && losses.dim() == 1 && targets.size(0) == logits.size(0) &&
                    losses.size(0) == logits.size(0),
                "cross_entropy: expected logits (N, V), targets (N), losses (N); got logits ", logits.shape().str(),
                ", targets ", targets.shape().str(), ", losses ", losses.shape().str());
  LATTE_REQUIRE(!dlogits.defined() || dlogits.shape() == logits.shape(), "cross_entropy: dlogits ",
                dlogits.shape().str(), " must have the shape of logits ", logits.shape().str());
  LATTE_REQUIRE(!dlogits.defined() || dlogits.dtype() == logits.dtype(), "cross_entropy: dlogits is ",
                dtype_name(dlogits.dtype()), " but logits are ", dtype_name(logits.dtype()));
  LATTE_REQUIRE(targets.dtype() == DType::I32, "cross_entropy: targets must be i32, got ", dtype_name(targets.dtype()));
  LATTE_REQUIRE(losses.dtype() == DType::F32 || losses.dtype() == DType::F64, "cross_entropy: losses must be f32 or f64, got ",
                dtype_name(losses.dtype()));
  LATTE_CHECK(logits.is_contiguous() && targets.is_contiguous() && losses.is_contiguous() &&
                  (!dlogits.defined() || dlogits.is_contiguous()),
              "cross_entropy needs contiguous tensors");
  const int64_t N = logits.size(0), V = logits.size(1);
  const int32_t* target = targets.data<int32_t>();
  // Validate every target before writing anything, so a bad batch leaves the outputs untouched.
  for (int64_t n = 0; n < N; ++n)
    LATTE_REQUIRE(target[n] == ignore_index || (target[n] >= 0 && target[n] < V), "cross_entropy: target ", target[n],
                  " at row ", n, " is out of range [0, ", V, ") and is not ignore_index (", ignore_index, ")");
  LATTE_REQUIRE(V > 0 || N == 0, "cross_entropy: logits ", logits.shape().str(), " have an empty vocabulary");

  dispatch_float(logits.dtype(), "cross_entropy", [&]<typename T>() {
    const T* x = logits.data<T>();                             // (N, V)
    T* dx = dlogits.defined() ? dlogits.data<T>() : nullptr;   // (N, V) or none
    void* loss_out = losses.data_ptr();                        // (N) f32 or f64
    // Rows are independent: split over the cores (the result does not depend on the split).
    const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 18) / std::max<int64_t>(V, 1));  // ~1 MB of logits
    parallel_ranges(N, grain, [&](int64_t first, int64_t end) {
      for (int64_t n = first; n < end; ++n) {
        const T* row = x + n * V;
        if (target[n] == ignore_index) {
          store_from_double(loss_out, losses.dtype(), n, 0.0);
          if (dx)
            for (int64_t v = 0; v < V; ++v) dx[n * V + v] = T(0);
          continue;
        }
        // Row max and exp-sum in kLaneCount interleaved partial results (lane_sum.h): independent chains instead
        // of one compare / add per element waiting on the previous one. The result depends only on V, not on the
        // thread split.
        T lane_max[kLaneCount];
        for (int64_t l = 0; l < kLaneCount; ++l) lane_max[l] = row[l < V ? l : 0];
        int64_t v = kLaneCount;
        for (; v + kLaneCount <= V; v += kLaneCount)
          for (int64_t l = 0; l < kLaneCount; ++l) lane_max[l] = std::max(lane_max[l], row[v + l]);
        for (; v < V; ++v) lane_max[0] = std::max(lane_max[0], row[v]);
        T max = lane_max[0];
        for (int64_t l = 1; l < kLaneCount; ++l) max = std::max(max, lane_max[l]);
        const double target_logit = static_cast<double>(row[target[n]]);  // before dlogits may overwrite it (alias)
        // exp in the logits' precision (float exp for f32: the row's sum is still accumulated in fp64), each
        // exponential computed once: kept in the gradient row, which is then scaled to softmax - onehot.
        T* e = dx ? dx + n * V : nullptr;
        const double sum_exp = lane_sum(V, [&](int64_t u) {
          const T ev = std::exp(row[u] - max);
          if (e) e[u] = ev;
          return static_cast<double>(ev);
        });
        const double lse = static_cast<double>(max) + std::log(sum_exp);
        store_from_double(loss_out, losses.dtype(), n, lse - target_logit);
        if (e) {
          const double inv = grad_scale / sum_exp;
          for (int64_t v = 0; v < V; ++v) e[v] = static_cast<T>(static_cast<double>(e[v]) * inv);
          e[target[n]] = static_cast<T>(static_cast<double>(e[target[n]]) - grad_scale);
        }
      }
    });
  });
}

}  // namespace latte::cpu
