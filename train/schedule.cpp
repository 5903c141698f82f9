#include "train/schedule.h"

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace latte {

double LrSchedule::at(int64_t step) const {
  if (warmup_steps > 0 && step < warmup_steps) return lr * static_cast<double>(step + 1) / static_cast<double>(warmup_steps);
  const double min_lr = lr * min_lr_ratio;
  if (kind == "constant") return lr;
  if (kind == "cosine") {
    const double span = static_cast<double>(std::max<int64_t>(1, total_steps - warmup_steps));
    const double progress = std::clamp(static_cast<double>(step - warmup_steps) / span, 0.0, 1.0);
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + std::cos(M_PI * progress));
  }
  if (kind == "wsd") {
    const int64_t decay_steps = std::max<int64_t>(1, static_cast<int64_t>(std::llround(decay_fraction * static_cast<double>(total_steps))));
    const int64_t decay_start = total_steps - decay_steps;
    if (step < decay_start) return lr;
    const double progress = std::clamp(static_cast<double>(step - decay_start) / static_cast<double>(decay_steps), 0.0, 1.0);
    return lr + (min_lr - lr) * progress;
  }
  LATTE_FAIL("train.schedule: unknown schedule '", kind, "'; expected cosine, wsd or constant");
}

}  // namespace latte
