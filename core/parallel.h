// Splitting independent CPU work over the machine's cores with plain std::threads (the CPU kernels are
// otherwise single-threaded; BLAS has its own threads).
#pragma once
#include <algorithm>
#include <cstdint>
#include <thread>
#include <vector>

namespace latte {

// Runs fn(begin, end) over [0, n) cut into contiguous ranges of at least `grain` items, one per thread, at most
// one thread per core (and 32); the calling thread takes the last range. Only for items that are independent of
// each other: then the result does not depend on the split, so runs stay bitwise reproducible on any machine.
// fn must not throw (check the inputs before).
template <typename F>
void parallel_ranges(int64_t n, int64_t grain, F&& fn) {
  const int64_t cores = std::max<int64_t>(1, static_cast<int64_t>(std::thread::hardware_concurrency()));
  const int64_t threads = std::clamp<int64_t>(n / std::max<int64_t>(grain, 1), 1, std::min<int64_t>(cores, 32));
  if (threads <= 1) {
    if (n > 0) fn(int64_t{0}, n);
    return;
  }
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  for (int64_t k = 0; k + 1 < threads; ++k) pool.emplace_back(fn, k * chunk, std::min(n, (k + 1) * chunk));
  fn((threads - 1) * chunk, n);
  for (std::thread& t : pool) t.join();
}

}  // namespace latte
