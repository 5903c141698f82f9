// The trainer end to end on CPU with a tiny MLA model and a synthetic corpus: loss goes down,
// N straight steps equal k steps + save + resume + N-k steps bitwise, gradient accumulation matches a
// bigger micro-batch, a corrupt newest checkpoint falls back to the previous one, and an existing run
// directory is not silently overwritten.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "data/shard.h"
#include "train/checkpoint_store.h"
#include "core/error.h"
#include "train/experiment.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace latte;

namespace {

std::string root() {
  static std::string d = [] {
    fs::path p = fs::temp_directory_path() / ("latte_trainer_" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::create_directories(p / "data");
    // A learnable synthetic corpus: a repeating pattern with a little noise, vocab 96.
    std::vector<int32_t> tokens;
    uint64_t s = 12345;
    for (int i = 0; i < 24000; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      tokens.push_back((s >> 60) == 0 ? static_cast<int32_t>((s >> 33) % 96) : (i * 7) % 61);
    }
    data::write_shard((p / "data/syn_train_000000.bin").string(), {tokens.data(), 20000}, data::ShardFormat::Bin,
                      data::TokenDtype::U16);
    data::write_shard((p / "data/syn_val_000000.bin").string(), {tokens.data() + 20000, 4000}, data::ShardFormat::Bin,
                      data::TokenDtype::U16);
    std::ofstream(p / "run.yaml") << R"(model:
  vocab_size: 96
  d_model: 32
  n_layers: 2
  ffn_dim: 64
  max_seq_len: 32
  attention: {kind: mla, n_heads: 4, kv_rank: 16, q_rank: 12, rope_dim: 4, nope_dim: 8, v_dim: 8}
train: {steps: 8, seed: 7, micro_batch: 2, seq_len: 16, lr: 3.0e-3, warmup_steps: 2, dtype: f32, device: cpu}
data: {train: data/syn_train_*.bin, val: data/syn_val_*.bin}
eval: {every: 4, batches: 2}
)";
    return p.string();
  }();
  return d;
}

ExperimentConfig config(const std::string& run, std::vector<std::string> overrides = {}) {
  overrides.push_back("train.out_dir=" + root() + "/" + run);
  overrides.push_back("data.train=" + root() + "/data/syn_train_*.bin");
  overrides.push_back("data.val=" + root() + "/data/syn_val_*.bin");
  return load_experiment(root() + "/run.yaml", overrides);
}

std::vector<nlohmann::json> metrics(const std::string& run) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(root() + "/" + run + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

}  // namespace

TEST(Trainer, LossDecreasesAndMetricsAreWritten) {
  TrainResult r = train(config("decrease", {"train.steps=30", "train.lr=1e-2"}), {"", true});
  EXPECT_EQ(r.last_step, 30);
  std::vector<nlohmann::json> rows = metrics("decrease");
  ASSERT_EQ(rows.size(), 30u);
  for (const char* key : {"step", "loss", "lr", "grad_norm", "tokens_per_s", "mfu"}) EXPECT_TRUE(rows[0].contains(key)) << key;
  EXPECT_TRUE(rows[3].contains("val_loss"));  // eval.every = 4
  EXPECT_LT(rows.back()["loss"].get<double>(), 0.7 * rows.front()["loss"].get<double>());
  EXPECT_TRUE(fs::exists(root() + "/decrease/config.yaml"));
  EXPECT_TRUE(fs::exists(root() + "/decrease/ckpt/step_00000030/COMPLETE"));
}

// checkpoint.at_end = false skips only the save at train.steps: periodic saves and --stop-after still write.
TEST(Trainer, AtEndFalseSkipsOnlyTheFinalSave) {
  train(config("no_final", {"train.steps=6", "checkpoint.every=4", "checkpoint.at_end=false"}), {"", true});
  EXPECT_TRUE(fs::exists(root() + "/no_final/ckpt/step_00000004/COMPLETE"));
  EXPECT_FALSE(fs::exists(root() + "/no_final/ckpt/step_00000006"));
  train(config("no_final_cut", {"train.steps=6", "checkpoint.at_end=false", "train.stop_after=3"}), {"", true});
  EXPECT_TRUE(fs::exists(root() + "/no_final_cut/ckpt/step_00000003/COMPLETE"));
}

TEST(Trainer, ResumeIsBitwiseIdentical) {
  train(config("straight"), {"", true});
  TrainResult first = train(config("resumed", {"train.stop_after=3"}), {"", true});
  EXPECT_TRUE(first.interrupted);
  EXPECT_EQ(first.last_step, 3);
  train(config("resumed"), {"auto", true});
  std::vector<nlohmann::json> a = metrics("straight"), b = metrics("resumed");
  ASSERT_EQ(a.size(), 8u);
  ASSERT_EQ(b.size(), 8u);
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["loss"].get<double>(), b[i]["loss"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(a[i]["grad_norm"].get<double>(), b[i]["grad_norm"].get<double>()) << "step " << i + 1;
    EXPECT_EQ(a[i]["lr"].get<double>(), b[i]["lr"].get<double>());
    EXPECT_EQ(a[i].contains("val_loss"), b[i].contains("val_loss"));
    if (a[i].contains("val_loss")) {
      EXPECT_EQ(a[i]["val_loss"].get<double>(), b[i]["val_loss"].get<double>());
    }
  }
}

// The spike guard's running mean and bad-step count are part of the checkpoint: with a guard tight enough
// to skip steps, N straight steps and k + resume + (N - k) skip the same steps and end with the same state.
TEST(Trainer, ResumeKeepsTheSpikeGuardState) {
  const std::vector<std::string> guard = {"train.spike_factor=1.0", "train.max_bad_steps=100", "train.steps=12",
                                          "eval.every=0"};
  auto with = [&](std::vector<std::string> extra) {
    extra.insert(extra.end(), guard.begin(), guard.end());
    return extra;
  };
  train(config("guard_straight", with({})), {"", true});
  train(config("guard_resumed", with({"train.stop_after=5"})), {"", true});
  train(config("guard_resumed", with({})), {"auto", true});
  std::vector<nlohmann::json> a = metrics("guard_straight"), b = metrics("guard_resumed");
  ASSERT_EQ(a.size(), b.size());  // skipped steps write no row: the same steps were skipped
  EXPECT_LT(a.size(), 12u) << "the guard skipped nothing, so this test would not see a lost running mean";
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i]["step"].get<int64_t>(), b[i]["step"].get<int64_t>());
    EXPECT_EQ(a[i]["loss"].get<double>(), b[i]["loss"].get<double>()) << "row " << i;
  }
  auto guard_state = [&](const std::string& run) {
    std::ifstream in(root() + "/" + run + "/ckpt/step_00000012/state.json");
    return nlohmann::json::parse(in).at("guard");
  };
  EXPECT_EQ(guard_state("guard_straight"), guard_state("guard_resumed"));
  EXPECT_GT(guard_state("guard_straight").at("loss_ema").get<double>(), 0.0);
}

TEST(Trainer, SameSeedSameLosses) {
  train(config("seed_a", {"train.steps=3"}), {"", true});
  train(config("seed_b", {"train.steps=3"}), {"", true});
  train(config("seed_c", {"train.steps=3", "train.seed=8"}), {"", true});
  std::vector<nlohmann::json> a = metrics("seed_a"), b = metrics("seed_b"), c = metrics("seed_c");
  for (size_t i = 0; i < 3; ++i) EXPECT_EQ(a[i]["loss"].get<double>(), b[i]["loss"].get<double>());
  EXPECT_NE(a[0]["loss"].get<double>(), c[0]["loss"].get<double>());
}

TEST(Trainer, GradientAccumulationMatchesLargerMicroBatch) {
  train(config("accum", {"train.steps=2", "train.global_batch_tokens=64"}), {"", true});  // 2 x (2 x 16)
  train(config("wide", {"train.steps=2", "train.micro_batch=4"}), {"", true});            // 1 x (4 x 16)
  std::vector<nlohmann::json> a = metrics("accum"), w = metrics("wide");
  ASSERT_EQ(a.size(), 2u);
  for (size_t i = 0; i < 2; ++i) {
    EXPECT_NEAR(a[i]["loss"].get<double>(), w[i]["loss"].get<double>(), 1e-5);
    EXPECT_NEAR(a[i]["grad_norm"].get<double>(), w[i]["grad_norm"].get<double>(), 1e-5);
  }
}

TEST(Trainer, CorruptNewestCheckpointFallsBack) {
  train(config("corrupt", {"checkpoint.every=2", "checkpoint.keep_last=5", "train.stop_after=4"}), {"", true});
  const std::string ckpt = root() + "/corrupt/ckpt";
  fs::resize_file(ckpt + "/step_00000004/model-tp0.safetensors", 100);
  TrainResult r = train(config("corrupt", {"checkpoint.every=2", "checkpoint.keep_last=5", "train.stop_after=1"}),
                        {"auto", true});
  EXPECT_EQ(r.last_step, 3);  // resumed from step 2, ran one step
}

TEST(Trainer, RefusesToOverwriteARunWithoutResume) {
  train(config("exists", {"train.steps=2"}), {"", true});
  EXPECT_THROW(train(config("exists", {"train.steps=2"}), {"", true}), latte::Error);
  EXPECT_THROW(train(config("exists", {"train.steps=2"}), {root() + "/exists/ckpt/step_00000099", true}), latte::Error);
}

namespace {
std::string run_cli(int (*cmd)(int, char**), std::vector<std::string> args) {
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  testing::internal::CaptureStdout();
  int rc = 0;
  try {
    rc = cmd(static_cast<int>(argv.size()), argv.data());
  } catch (...) {
    testing::internal::GetCapturedStdout();  // release the capture before rethrowing
    throw;
  }
  std::string out = testing::internal::GetCapturedStdout();
  EXPECT_EQ(rc, 0);
  return out;
}
}  // namespace

// generate reads a checkpoint directly, export writes one self-describing safetensors, and both give
// the same greedy continuation; eval reports the loss the trainer logged for the same data.
TEST(Trainer, CheckpointsFeedGenerateExportAndEval) {
  train(config("cli", {"train.steps=4", "train.warmup_steps=1"}), {"", true});
  const std::string run = root() + "/cli", exported = root() + "/cli/model.safetensors";
  std::string from_ckpt = run_cli(apps::cmd_generate, {"generate", run + "/ckpt", "--ids", "1 2 3", "--greedy", "--max-new", "6"});
  run_cli(apps::cmd_export, {"export", run, "--out", exported});
  std::string from_export = run_cli(apps::cmd_generate, {"generate", exported, "--ids", "1 2 3", "--greedy", "--max-new", "6"});
  EXPECT_EQ(from_ckpt, from_export);
  EXPECT_EQ(std::count(from_ckpt.begin(), from_ckpt.end(), ' '), 5) << from_ckpt;  // six ids printed
  std::string eval = run_cli(apps::cmd_eval, {"eval", run, "--data", root() + "/data/syn_val_*.bin", "--seq-len", "16",
                                               "--batch", "2", "--max-batches", "2"});
  nlohmann::json result = nlohmann::json::parse(eval);
  EXPECT_NEAR(result["loss"].get<double>(), metrics("cli").back()["val_loss"].get<double>(), 1e-5);
  EXPECT_THROW(run_cli(apps::cmd_generate, {"generate", root() + "/nowhere", "--ids", "1"}), latte::Error);
}
