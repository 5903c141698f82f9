// AdamW plus the DP / TP / ZeRO-1 gradient reductions of one training step (train/optimizer_setup.h).
#include "train/optimizer_setup.h"

#include <filesystem>

#include "core/log.h"
#include "distributed/data_parallel.h"
#include "distributed/process_group.h"
#include "distributed/topology.h"
#include "distributed/zero1.h"
#include "layers/safetensors.h"
#include "layers/transformer.h"

namespace fs = std::filesystem;

namespace latte {

namespace {

bool contains(const std::vector<Tensor>& tensors, const Tensor& t) {
  for (const Tensor& x : tensors)
    if (x.same(t)) return true;
  return false;
}

// How a checkpoint's (or this run's) optimizer state is laid out, for resume errors.
std::string sharding_description(bool zero1, int dp, int64_t bucket_bytes) {
  if (!zero1) return str("parallel.zero1 off (full optimizer state on every rank, dp = ", dp, ")");
  return str("parallel.zero1 on (optimizer state sharded over dp = ", dp, ", GradSync buckets of ", bucket_bytes,
             " bytes)");
}

}  // namespace

TrainOptimizer::TrainOptimizer(TransformerLM& model, const ExperimentConfig& cfg, const RunSetup& run)
    : cfg_(cfg), run_(run) {
  const TrainConfig& tc = cfg.train;
  for (auto& [name, tensor] : model.named_parameters()) {
    const bool is_norm_or_embedding = tensor.dim() < 2 || name.find("embed") != std::string::npos;
    params_.push_back({name, tensor, tc.decay_norms_and_embeddings || !is_norm_or_embedding});
  }
  const AdamWConfig adamw_config{tc.beta1, tc.beta2, tc.eps, tc.weight_decay};
  if (run.topology && cfg.parallel.tp > 1) {
    tp_group_ = run.topology->tp_group().get();
    tp_sharded_ = model.tp_sharded_parameters();
    tp_replicated_ = model.tp_replicated_parameters();
  }
  const bool data_parallel = run.dp_group() && cfg.parallel.dp > 1;
  if (cfg.parallel.zero1 && !data_parallel && run.is_logging_rank)
    log::info("parallel.zero1: no effect with dp = 1 (there is no data-parallel group to shard the optimizer state "
              "over); training with the full optimizer state");

  if (!data_parallel) {
    adamw_ = std::make_unique<AdamW>(params_, adamw_config);
    return;
  }
  std::vector<Tensor> tensors;
  std::vector<std::string> names;
  for (const OptimParam& p : params_) {
    tensors.push_back(p.param);
    names.push_back(p.name);
  }
  dist::GradSyncOptions sync_options;
  if (!cfg.parallel.zero1) {
    // Bucketed gradient all-reduce over the DP group, overlapped with the backward.
    grad_sync_ = std::make_unique<dist::GradSync>(tensors, run.topology->dp_group(), sync_options, names);
    adamw_ = std::make_unique<AdamW>(params_, adamw_config);
    return;
  }

  // ZeRO-1: reduce-scatter instead of all-reduce; the shards are f32 even for bf16 models (the master
  // shards and AdamW need f32 gradients; f64 models keep f64).
  sync_options.shard_gradients = true;
  sync_options.reduce_in_fp32 = true;
  grad_sync_ = std::make_unique<dist::GradSync>(tensors, run.topology->dp_group(), sync_options, names);
  zero_ = std::make_unique<dist::Zero1>(*grad_sync_);
  // AdamW sees this rank's pieces as ordinary 1-D f32 parameters; the decay rule looks at the whole
  // parameter (a piece of a matrix is 1-D but still decays).
  std::vector<OptimParam> shards;
  for (const dist::ShardPiece& piece : zero_->pieces())
    shards.push_back({piece.name, piece.master, params_[piece.param].decay});
  adamw_ = std::make_unique<AdamW>(shards, adamw_config);
  if (tp_group_) {
    param_replicated_.assign(params_.size(), false);
    for (size_t i = 0; i < params_.size(); ++i) param_replicated_[i] = contains(tp_replicated_, params_[i].param);
    // The TP ranks of one DP rank hold equally shaped parameters, hence the same buckets and the same
    // pieces in the same order: their replicated pieces can be summed element by element.
    int64_t replicated_elements = 0;
    for (const dist::ShardPiece& piece : zero_->pieces())
      if (param_replicated_[piece.param]) {
        replicated_pieces_.push_back(piece.master);
        replicated_elements += piece.length;
      }
    // Checked, not assumed: a layout with unequal shards would make the TP sum add unrelated elements.
    const double n = static_cast<double>(replicated_elements);
    LATTE_REQUIRE(tp_group_->all_reduce_scalar(n, dist::ReduceOp::Max) ==
                      tp_group_->all_reduce_scalar(n, dist::ReduceOp::Min),
                  cfg.source, ": parallel.zero1 with tp = ", cfg.parallel.tp, ": the TP ranks' ZeRO-1 shards "
                  "hold different numbers of replicated-parameter elements (unequal TP shard shapes); set "
                  "parallel.zero1: false");
  } else {
    one_rank_ = std::make_shared<dist::SingleProcessGroup>("tp");
  }
  int64_t full_bytes = 0;  // master + exp_avg + exp_avg_sq of every parameter, f32 (f64 for f64 models)
  for (const OptimParam& p : params_)
    full_bytes += 3 * p.param.numel() * static_cast<int64_t>(p.param.dtype() == DType::F64 ? 8 : 4);
  log::info("parallel.zero1: optimizer state sharded over dp = ", cfg.parallel.dp, ": ", state_bytes() >> 10,
            " KiB per rank (", full_bytes >> 10, " KiB unsharded)");
}

TrainOptimizer::~TrainOptimizer() = default;

void TrainOptimizer::zero_grad() {
  if (grad_sync_) {
    grad_sync_->zero_grad();  // the gradients accumulate straight into the DP buckets
  } else {
    for (OptimParam& p : params_) p.param.zero_grad();
  }
}

void TrainOptimizer::begin_micro_batch(bool last) {
  if (grad_sync_) grad_sync_->set_sync_enabled(last);  // reduce over DP once per optimizer step
}

void TrainOptimizer::reduce_gradients() {
  if (grad_sync_) grad_sync_->finish();  // averaged over DP: into .grad, or (ZeRO-1) into this rank's shard
  if (!tp_group_) return;
  // Replicated parameters saw only this TP rank's part of the computation: sum their gradients over TP
  // (sums commute with the DP average, so the order is free).
  if (zero_)
    dist::all_reduce_gradients(replicated_pieces_, *tp_group_);  // the slices in the gradient shard
  else
    dist::all_reduce_gradients(tp_replicated_, *tp_group_);
}

double TrainOptimizer::grad_norm() const {
  if (zero_) return zero_->global_grad_norm(param_replicated_, tp_group_ ? *tp_group_ : *one_rank_);
  if (tp_group_) return dist::global_grad_norm(tp_sharded_, tp_replicated_, *tp_group_);
  return global_grad_norm(params_);  // DP ranks hold identical averaged gradients
}

void TrainOptimizer::step(double lr, double grad_scale) {
  adamw_->step(lr, grad_scale);
  if (zero_) zero_->gather_parameters();  // every replica gets the weights updated by the other shards
}

std::string TrainOptimizer::state_file() const {
  // Without ZeRO-1 the DP replicas hold identical optimizer states (same averaged gradients, same
  // updates): the first replica of each TP rank writes it (world rank = tp_rank there) and every replica
  // reads that file. Before this, every rank wrote its own identical copy under its own rank; those
  // checkpoints still load, since the first replica's file has the same name.
  if (!zero_) return str("optimizer-rank", run_.tp_rank, ".safetensors");
  return str("optimizer-tp", run_.tp_rank, "-dp", run_.dp_rank, ".safetensors");
}

void TrainOptimizer::save_state(const std::string& checkpoint_dir) const {
  if (!zero_ && run_.dp_rank != 0) return;  // a copy of the first replica's state (state_file())
  write_safetensors((fs::path(checkpoint_dir) / state_file()).string(), adamw_->state());
}

void TrainOptimizer::load_state(const std::string& checkpoint_dir, int64_t steps_taken) {
  const std::string path = (fs::path(checkpoint_dir) / state_file()).string();
  SafetensorsFile file = read_safetensors(path, run_.device);
  adamw_->load_state(file.tensors, steps_taken);
  // The masters are the authority: make every replica's weights the gathered masters (the model file
  // holds the same values, rounded to the parameter dtype).
  if (zero_) zero_->gather_parameters();
}

void TrainOptimizer::record_in(nlohmann::json& state) const {
  state["zero1"] = zero1();
  if (!zero_) return;
  state["zero1_dp"] = cfg_.parallel.dp;
  state["zero1_bucket_bytes"] = grad_sync_->options().bucket_bytes;
}

void TrainOptimizer::check_resume(const nlohmann::json& state, const std::string& checkpoint_dir) const {
  const bool saved_zero1 = state.value("zero1", false);
  const int saved_dp = state.contains("world") ? state.at("world").value("dp", 1) : 1;
  const int64_t saved_bucket = state.value("zero1_bucket_bytes", int64_t{0});
  const int dp = cfg_.parallel.dp;
  const int64_t bucket = zero_ ? static_cast<int64_t>(grad_sync_->options().bucket_bytes) : 0;
  const bool same = saved_zero1 == zero1() && (!saved_zero1 || (saved_dp == dp && saved_bucket == bucket));
  LATTE_REQUIRE(same, checkpoint_dir, ": cannot resume: the checkpoint was saved with ",
                sharding_description(saved_zero1, saved_dp, saved_bucket), " but this run has ",
                sharding_description(zero1(), dp, bucket),
                cfg_.parallel.zero1 && !zero_ ? " (parallel.zero1 is a no-op with dp = 1)" : "",
                "; ZeRO-1 optimizer state reloads only with the same parallel.zero1, parallel.dp and bucket size");
}

int64_t TrainOptimizer::state_bytes() const {
  int64_t bytes = 0;
  for (const auto& [name, tensor] : adamw_->state()) bytes += static_cast<int64_t>(tensor.nbytes());
  return bytes;
}

}  // namespace latte
