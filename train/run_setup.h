// What a run resolves before training: the device and compute dtype ("auto" picks CUDA + bf16 when a
// GPU is visible, else CPU + f32), this process's place in the world (dp/tp ranks), per-rank file names
// inside a checkpoint, and human-readable summaries for the start-up and step lines.
#pragma once
#include <nlohmann/json.hpp>
#include <string>

#include "core/tensor.h"
#include "train/experiment.h"

namespace latte {

class TransformerLM;

struct RunSetup {
  Device device;
  DType dtype = DType::F32;
  int world_size = 1;
  int rank = 0;
  int dp_rank = 0;
  int tp_rank = 0;
  bool is_logging_rank = true;  // rank 0 prints and writes metrics
};

RunSetup setup_run(const ExperimentConfig& cfg);

// "model-tp0.safetensors" (shared by the DP replicas of a TP rank) or "optimizer-rank3.safetensors".
std::string rank_file(const std::string& kind, const RunSetup& run);

// Refuses to resume a checkpoint saved with another world shape, naming both shapes.
void check_world_shape(const nlohmann::json& state, const ExperimentConfig& cfg, const std::string& ckpt_dir);

std::string model_summary(const TransformerLM& model, const ExperimentConfig& cfg);  // "egmla 124.4M params"
std::string memory_summary(Device device);  // CUDA allocator peak, or the process's peak RSS

}  // namespace latte
