// What a run resolves before training: the device and compute dtype ("auto" picks CUDA + bf16 when a
// GPU is visible, else CPU + f32), this process's place in the world (dp/tp ranks), per-rank file names
// inside a checkpoint, and human-readable summaries for the start-up and step lines.
#pragma once
#include <nlohmann/json.hpp>
#include <memory>
#include <string>

#include "core/tensor.h"
#include "train/experiment.h"

namespace latte {

class TransformerLM;
namespace dist {
class World;
class Topology;
class ProcessGroup;
}  // namespace dist

struct RunSetup {
  Device device;
  DType dtype = DType::F32;
  int world_size = 1;
  int rank = 0;
  int dp_rank = 0;
  int tp_rank = 0;
  bool is_logging_rank = true;  // rank 0 prints and writes metrics
  // Set when the run spans several processes (mpirun): groups for DP gradient sync and metrics.
  std::shared_ptr<dist::Topology> topology;
  dist::ProcessGroup* dp_group() const;     // null for a single process
  dist::ProcessGroup* world_group() const;  // null for a single process
  void barrier() const;
};

// local_only: train as one process even inside an MPI job (tests compute references this way).
RunSetup setup_run(const ExperimentConfig& cfg, bool local_only = false);

// The process's World (joins MPI when launched by mpirun); created on first use, lives until exit.
dist::World& process_world();

// "model-tp0.safetensors" (shared by the DP replicas of a TP rank) or "optimizer-rank3.safetensors".
std::string rank_file(const std::string& kind, const RunSetup& run);

// Refuses to resume a checkpoint saved with another world shape, naming both shapes.
void check_world_shape(const nlohmann::json& state, const ExperimentConfig& cfg, const std::string& ckpt_dir);

std::string model_summary(const TransformerLM& model, const ExperimentConfig& cfg);  // "egmla 124.4M params"
std::string memory_summary(Device device);  // CUDA allocator peak, or the process's peak RSS

}  // namespace latte
