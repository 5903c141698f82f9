// Learning-rate schedules as pure functions of the step, so resume needs no schedule state.
//  cosine:   linear warmup to lr, cosine decay to lr * min_lr_ratio at `total_steps`.
//  wsd:      warmup, stable at lr, then linear decay to lr * min_lr_ratio over the last decay_fraction.
//  constant: warmup, then lr.
#pragma once
#include <cstdint>
#include <string>

namespace latte {

struct LrSchedule {
  std::string kind = "cosine";  // cosine | wsd | constant
  double lr = 6e-4;             // peak learning rate
  double min_lr_ratio = 0.1;    // final lr as a fraction of the peak (cosine, wsd)
  int64_t warmup_steps = 0;     // linear warmup from lr/warmup_steps
  int64_t total_steps = 1;      // the step count the decay is planned for
  double decay_fraction = 0.2;  // wsd: share of total_steps spent decaying

  // Learning rate for optimizer step `step` (0-based).
  double at(int64_t step) const;
};

}  // namespace latte
