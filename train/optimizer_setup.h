// The optimizer side of a training step: AdamW over the model's parameters plus the gradient
// reductions that must come before it. The trainer's loop is the same in every case; which case
// applies is decided once, at construction, from parallel.dp / parallel.tp / parallel.zero1:
//
//   - one replica (dp = 1): AdamW on each parameter's own gradient (parallel.zero1 is a no-op: there
//     is nothing to shard the optimizer state over);
//   - data parallel: GradSync averages the gradients over the DP group (bucketed all-reduce,
//     overlapped with the backward) and every rank runs AdamW on the whole model;
//   - data parallel with ZeRO-1 (distributed/zero1.h): GradSync reduce-scatters the buckets instead,
//     each rank runs AdamW only on its 1/dp shard of every bucket (fp32 masters and moments for that
//     shard alone), and the updated shards are all-gathered into every replica after the step.
//
// Under tensor parallelism the replicated parameters' partial gradients are summed over the TP group
// in every case (with ZeRO-1: their slices inside this rank's gradient shard).
//
// One optimizer step:
//   opt.zero_grad();
//   for (micro = 0; micro < accum; ++micro) { opt.begin_micro_batch(micro == accum - 1); ... backward(); }
//   opt.reduce_gradients();                 // DP average (all-reduce or reduce-scatter), TP sums
//   const double norm = opt.grad_norm();    // of the whole model, identical on every rank
//   opt.step(lr, clip_scale);               // AdamW (+ the ZeRO-1 weight all-gather)
//
// Checkpoints: the optimizer state is written per rank (state_file()). Without ZeRO-1 every rank holds
// the full state; with it, each (tp rank, dp rank) holds a different shard, which reloads only onto the
// same dp and GradSync bucket size, so record_in() writes the sharding into state.json and
// check_resume() refuses a checkpoint saved with another one.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "train/adamw.h"
#include "train/experiment.h"
#include "train/run_setup.h"

namespace latte {

class TransformerLM;
namespace dist {
class GradSync;
class Zero1;
class ProcessGroup;
}  // namespace dist

class TrainOptimizer {
 public:
  // Builds the GradSync / Zero1 / AdamW for this run. The model's current weights become the masters
  // (every DP rank must hold the same weights: same seed, or the same init_from file). `cfg` and `run`
  // must outlive it.
  TrainOptimizer(TransformerLM& model, const ExperimentConfig& cfg, const RunSetup& run);
  ~TrainOptimizer();
  TrainOptimizer(const TrainOptimizer&) = delete;
  TrainOptimizer& operator=(const TrainOptimizer&) = delete;

  // ---- one step ----
  void zero_grad();                     // at the start of an optimizer step
  void begin_micro_batch(bool last);    // before each micro-batch's backward: only the last one syncs over DP
  void reduce_gradients();              // after the last backward
  double grad_norm() const;             // L2 norm of the whole model's averaged gradient (every rank agrees)
  void step(double lr, double grad_scale);
  int64_t steps_taken() const { return adamw_->steps_taken(); }

  // ---- checkpoints ----
  bool zero1() const { return zero_ != nullptr; }  // the optimizer state is sharded over DP
  // The optimizer file of this rank inside a checkpoint directory: "optimizer-rank<r>.safetensors"
  // (full state) or "optimizer-tp<t>-dp<d>.safetensors" (this rank's ZeRO-1 shard).
  std::string state_file() const;
  void save_state(const std::string& checkpoint_dir) const;
  // Reads this rank's state_file() from checkpoint_dir; the model weights must already be loaded.
  void load_state(const std::string& checkpoint_dir, int64_t steps_taken);
  // Adds "zero1" (and, when sharded, "zero1_dp" and "zero1_bucket_bytes") to a checkpoint's state.json.
  void record_in(nlohmann::json& state) const;
  // Refuses (latte::Error naming checkpoint_dir and both settings) to resume from a checkpoint whose
  // optimizer state is sharded differently: ZeRO-1 toggled, or a ZeRO-1 checkpoint of another dp or
  // bucket size. Checkpoints from before ZeRO-1 was recorded count as unsharded.
  void check_resume(const nlohmann::json& state, const std::string& checkpoint_dir) const;

  // Bytes of optimizer state (masters, first and second moments) this rank holds.
  int64_t state_bytes() const;

 private:
  const ExperimentConfig& cfg_;
  const RunSetup& run_;
  std::vector<OptimParam> params_;           // the model's parameters (name, tensor, decay) in registration order
  std::vector<Tensor> tp_sharded_;           // under TP: this rank's shards of the split parameters
  std::vector<Tensor> tp_replicated_;        // under TP: parameters whose gradient is a per-TP-rank partial sum
  dist::ProcessGroup* tp_group_ = nullptr;   // null without TP
  std::unique_ptr<dist::GradSync> grad_sync_;  // null with one replica
  std::unique_ptr<dist::Zero1> zero_;          // null without ZeRO-1
  std::vector<Tensor> replicated_pieces_;      // ZeRO-1 under TP: masters of pieces of replicated parameters
                                               // (their .grad() is the slice of the gradient shard)
  std::vector<bool> param_replicated_;         // ZeRO-1 under TP: per parameter (Zero1::global_grad_norm's flags)
  std::shared_ptr<dist::ProcessGroup> one_rank_;  // ZeRO-1 without TP: the "TP group" of the norm
  std::unique_ptr<AdamW> adamw_;               // over params_, or over the ZeRO-1 shard pieces
};

}  // namespace latte
