// AdamW with fp32 master weights (Loshchilov & Hutter, decoupled weight decay, bias correction).
// Model parameters may be bf16 (CUDA mixed precision): the optimizer keeps an fp32 master copy and
// fp32 first/second moments per parameter and writes the updated weights back in the param dtype.
// f32/f64 parameters are updated in place (the parameter is its own master).
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "core/tensor.h"

namespace latte {

struct AdamWConfig {
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double weight_decay = 0.1;
};

struct OptimParam {
  std::string name;
  Tensor param;        // the model's leaf tensor (its .grad() is read)
  bool decay = true;   // weight decay applies
};

class AdamW {
 public:
  AdamW(std::vector<OptimParam> params, AdamWConfig config);

  // One update with learning rate lr; gradients are multiplied by grad_scale first (clipping,
  // averaging over accumulation). Parameters without a gradient are skipped.
  void step(double lr, double grad_scale = 1.0);
  int64_t steps_taken() const { return step_; }

  // State for checkpoints: "<name>.master", "<name>.exp_avg", "<name>.exp_avg_sq" (fp32) and "step".
  std::vector<std::pair<std::string, Tensor>> state() const;
  void load_state(const std::vector<std::pair<std::string, Tensor>>& state, int64_t step);

  const std::vector<OptimParam>& params() const { return params_; }

 private:
  struct Slot {
    Tensor master;    // fp32 (or the param itself when it is f32/f64)
    Tensor exp_avg;   // m, same dtype as master
    Tensor exp_avg_sq;// v
  };
  std::vector<OptimParam> params_;
  std::vector<Slot> slots_;
  AdamWConfig config_;
  int64_t step_ = 0;
};

// sqrt(sum of squares of every gradient), accumulated in fp64 on the host from per-tensor fp32 sums.
double global_grad_norm(const std::vector<OptimParam>& params);

}  // namespace latte
