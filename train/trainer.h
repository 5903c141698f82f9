// The training loop behind `latte train`: micro-batches with gradient accumulation up to the global
// batch, bf16 compute with fp32 master weights (AdamW), LR schedule, global-norm clipping, a NaN/spike
// guard, periodic validation, metrics, and checkpoints that resume exactly (model, optimizer, schedule
// position, data-loader position). SIGTERM/SIGINT finish the current step, save, and exit 0.
#pragma once
#include <cstdint>
#include <memory>
#include <string>

#include "train/experiment.h"

namespace latte {

struct TrainOptions {
  std::string resume;        // "" (fresh unless a checkpoint exists: then refuse), "auto", or a checkpoint dir
  bool quiet = false;        // no console lines (tests)
  bool local_only = false;   // one process even inside an MPI job (tests compute references this way)
};

struct TrainResult {
  int64_t last_step = 0;     // steps completed in total
  double last_loss = -1;     // mean train loss of the last step; -1 when this call ran none (resumed at the end)
  double last_val_loss = -1; // -1 when no validation ran
  bool interrupted = false;  // stopped by a signal or stop_after
};

TrainResult train(const ExperimentConfig& config, const TrainOptions& options);

// Installs SIGTERM/SIGINT handlers that ask the running loop to stop after the current step.
void install_stop_signal_handlers();
void request_stop();  // the same, programmatically (tests)

}  // namespace latte
