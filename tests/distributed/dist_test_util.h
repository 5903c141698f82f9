// Shared helpers of the distributed suite (run under mpirun -np 2 and -np 4 on CPU; see main.cpp).
// Every rank runs every test in the same order; collectives inside a test must be reached by all
// ranks, so tests use EXPECT_* (not ASSERT_*) around collective calls.
#pragma once
#include <cmath>
#include <cstdint>
#include <vector>

#include "core/tensor.h"
#include "distributed/world.h"

namespace latte::test {

// The job's World, created on first use after main()'s MPI_Init (destroyed at exit, harmlessly after MPI_Finalize).
inline dist::World& world() {
  static dist::World instance;
  return instance;
}

// ||a - b|| / ||b|| over all elements (b == 0: ||a - b||).
inline double rel_error(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  if (va.size() != vb.size()) return INFINITY;
  double diff = 0, ref = 0;
  for (size_t i = 0; i < va.size(); ++i) {
    diff += (va[i] - vb[i]) * (va[i] - vb[i]);
    ref += vb[i] * vb[i];
  }
  return ref > 0 ? std::sqrt(diff / ref) : std::sqrt(diff);
}

inline double max_abs_diff(const Tensor& a, const Tensor& b) {
  std::vector<double> va = a.to_vector(), vb = b.to_vector();
  if (va.size() != vb.size()) return INFINITY;
  double m = 0;
  for (size_t i = 0; i < va.size(); ++i) m = std::max(m, std::fabs(va[i] - vb[i]));
  return m;
}

}  // namespace latte::test
