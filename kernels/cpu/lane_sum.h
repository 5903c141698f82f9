// fp64 sum of term(0) + ... + term(n - 1) in kLaneCount interleaved partial sums (term i goes to lane i % 8 for
// the whole groups of 8, the tail to lane 0), combined in lane order: independent add chains instead of one add
// waiting on the previous, and a fixed order, so the result depends only on n and the terms. term may have side
// effects (it is called once per index, in increasing order within each group).
#pragma once
#include <cstdint>

namespace latte::cpu {

constexpr int64_t kLaneCount = 8;

template <typename Term>
double lane_sum(int64_t n, Term&& term) {
  double lane[kLaneCount] = {};
  int64_t i = 0;
  for (; i + kLaneCount <= n; i += kLaneCount)
    for (int64_t l = 0; l < kLaneCount; ++l) lane[l] += term(i + l);
  for (; i < n; ++i) lane[0] += term(i);
  double s = 0.0;
  for (int64_t l = 0; l < kLaneCount; ++l) s += lane[l];
  return s;
}

}  // namespace latte::cpu
