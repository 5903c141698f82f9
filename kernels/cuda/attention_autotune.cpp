// Timing-based choice between attention implementations (see attention_autotune.h).
#ifdef LATTE_WITH_CUDA
#include "kernels/cuda/attention_autotune.h"

#include <map>
#include <mutex>
#include <sstream>

#include "core/cuda_context.h"
#include "core/log.h"

namespace latte::cuda {

namespace {

std::mutex g_mu;
std::map<std::string, size_t> g_chosen;  // call key -> index of the fastest candidate

}  // namespace

int attention_autotune_choice(const std::string& key) {
  std::lock_guard<std::mutex> lock(g_mu);
  auto it = g_chosen.find(key);
  return it == g_chosen.end() ? -1 : static_cast<int>(it->second);
}

size_t attention_autotune(const std::string& key, const std::vector<const char*>& names,
                          const std::function<void(size_t)>& run) {
  if (names.size() <= 1) return 0;
  if (const int known = attention_autotune_choice(key); known >= 0) return static_cast<size_t>(known);
  constexpr int kRepeats = 3;
  std::vector<float> ms(names.size());
  for (size_t i = 0; i < names.size(); ++i) {
    run(i);  // warm-up: plan building, kernel loading, allocator growth
    Event start, stop;
    start.record();
    for (int r = 0; r < kRepeats; ++r) run(i);
    stop.record();
    stop.synchronize();
    ms[i] = stop.elapsed_ms(start) / kRepeats;
  }
  size_t best = 0;
  for (size_t i = 1; i < ms.size(); ++i)
    if (ms[i] < ms[best]) best = i;
  std::ostringstream line;
  line << "attention auto " << key << ":";
  for (size_t i = 0; i < ms.size(); ++i) line << " " << names[i] << " " << ms[i] << " ms";
  line << " -> " << names[best];
  log::info(line.str());
  std::lock_guard<std::mutex> lock(g_mu);
  g_chosen.emplace(key, best);
  return best;
}

}  // namespace latte::cuda
#endif  // LATTE_WITH_CUDA
