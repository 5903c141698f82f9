// Data-parallel training end to end under mpirun (CPU, MPI backend): `train()` with parallel.dp = world
// size and micro-batch B per rank gives the same losses, gradient norms and validation loss as one
// process training on micro-batch B * dp (the loader hands rank r every dp-th window, so both see the
// same windows per step), and a DP checkpoint resumes to the same metrics as an uninterrupted run.
#include <gtest/gtest.h>
#include <mpi.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/shard.h"
#include "dist_test_util.h"
#include "train/experiment.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace latte;

namespace {

using test::world_rank;
using test::world_size;

std::string shared_root() {
  static const std::string root = test::shared_run_dir("latte_dp_", std::string(test::kTinyEgmlaModelYaml) + R"(
train: {steps: 4, seed: 3, seq_len: 16, lr: 3.0e-3, warmup_steps: 1, dtype: f32, device: cpu}
eval: {every: 2, batches: 2}
)");
  return root;
}

ExperimentConfig config(const std::string& run, std::vector<std::string> overrides) {
  const std::string root = shared_root();
  overrides.push_back("train.out_dir=" + root + "/" + run);
  overrides.push_back("data.train=" + root + "/data/syn_train_*.bin");
  overrides.push_back("data.val=" + root + "/data/syn_val_*.bin");
  return load_experiment(root + "/run.yaml", overrides);
}

std::vector<nlohmann::json> metrics(const std::string& run) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(shared_root() + "/" + run + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

void expect_same_metrics(const std::vector<nlohmann::json>& a, const std::vector<nlohmann::json>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_NEAR(a[i]["loss"].get<double>(), b[i]["loss"].get<double>(), tol) << "step " << i + 1;
    EXPECT_NEAR(a[i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>(), tol) << "step " << i + 1;
    ASSERT_EQ(a[i].contains("val_loss"), b[i].contains("val_loss"));
    if (a[i].contains("val_loss")) EXPECT_NEAR(a[i]["val_loss"].get<double>(), b[i]["val_loss"].get<double>(), tol);
  }
}

}  // namespace

TEST(DpTraining, MatchesOneProcessOnTheSameGlobalBatch) {
  const int dp = world_size();
  const std::string tag = "dp" + std::to_string(dp);
  train(config(tag, {"parallel.dp=" + std::to_string(dp), "train.micro_batch=2"}), {"", true});
  if (world_rank() == 0) {
    train(config(tag + "_ref", {"train.micro_batch=" + std::to_string(2 * dp)}), {"", true, true});
    expect_same_metrics(metrics(tag), metrics(tag + "_ref"), 2e-5);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(DpTraining, ResumeMatchesStraightRun) {
  const int dp = world_size();
  const std::string tag = "resume" + std::to_string(dp);
  const std::vector<std::string> base = {"parallel.dp=" + std::to_string(dp), "train.micro_batch=2"};
  train(config(tag + "_straight", base), {"", true});
  std::vector<std::string> stop = base;
  stop.push_back("train.stop_after=2");
  train(config(tag, stop), {"", true});
  train(config(tag, base), {"auto", true});
  if (world_rank() == 0) {
    expect_same_metrics(metrics(tag + "_straight"), metrics(tag), 0.0);  // bitwise on CPU
    // Without ZeRO-1 the replicas' optimizer states are identical: only the first replica writes it.
    EXPECT_TRUE(fs::exists(shared_root() + "/" + tag + "/ckpt/step_00000004/optimizer-rank0.safetensors"));
    EXPECT_FALSE(fs::exists(shared_root() + "/" + tag + "/ckpt/step_00000004/optimizer-rank1.safetensors"));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(DpTraining, WrongWorldShapeIsAClearError) {
  // dp * tp must equal the number of processes; every rank throws the same error (no collective runs).
  try {
    train(config("wrong", {"parallel.dp=" + std::to_string(world_size() + 1)}), {"", true});
    FAIL() << "expected an error";
  } catch (const latte::Error& e) {
    EXPECT_NE(std::string(e.what()).find("parallel.dp"), std::string::npos) << e.what();
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// Tensor parallelism (tp = 2, and dp x tp = 2 x 2 on four ranks) through `train()`: the same metrics as
// one process, a TP checkpoint resumes bitwise, and `latte export` merges its shards into weights that
// a single process loads and scores identically.
TEST(TpTraining, MatchesOneProcessAndResumes) {
  const int world = world_size();
  const int dp = world / 2;
  const std::string tag = "tp2dp" + std::to_string(dp);
  const std::vector<std::string> base = {"parallel.tp=2", "parallel.dp=" + std::to_string(dp), "train.micro_batch=2"};
  train(config(tag, base), {"", true});
  std::vector<std::string> stop = base;
  stop.push_back("train.stop_after=2");
  train(config(tag + "_resumed", stop), {"", true});
  train(config(tag + "_resumed", base), {"auto", true});
  if (world_rank() == 0) {
    train(config(tag + "_ref", {"train.micro_batch=" + std::to_string(2 * dp)}), {"", true, true});
    expect_same_metrics(metrics(tag), metrics(tag + "_ref"), 5e-5);
    expect_same_metrics(metrics(tag), metrics(tag + "_resumed"), 0.0);
    const std::string ckpt = shared_root() + "/" + tag + "/ckpt/step_00000004";
    EXPECT_TRUE(fs::exists(ckpt + "/model-tp1.safetensors"));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}
