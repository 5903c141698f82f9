// ZeRO-1 through `train()` under mpirun (CPU, MPI backend), dp = world size (np 2: dp = 2, np 4: dp = 4,
// and tp = 2 x dp = 2):
//   - parallel.zero1: true trains like plain data parallelism: the same losses, gradient norms,
//     validation losses and final weights (tolerances below), with gradient accumulation;
//   - the run really took the ZeRO-1 path: state.json says zero1, every (tp, dp) rank wrote its own
//     optimizer shard, and the shards of one TP rank together hold exactly the full state's elements;
//   - 4 straight steps equal 2 steps + checkpoint + resume + 2 steps bitwise (metrics, and the final
//     model and optimizer-shard files byte for byte);
//   - a resume with zero1 toggled, or onto another dp, is refused naming the checkpoint and both settings;
//   - with one replica zero1 is a no-op (bitwise the same run as without it).
//
// Tolerances of the zero1-on vs zero1-off comparisons (absolute, on losses and gradient norms of
// about 1 to 5 and on weights below 1): both runs do the same arithmetic on the same values except for
// the order of two sums: MPI's reduce-scatter and all-reduce may add the dp contributions in different
// orders, and the two gradient-norm paths group their partial sums of squares differently (the norm
// sets the clip scale: grad_clip 0.5 clips every step here). That is one rounding, ~1e-16 relative in
// f64 and ~1e-7 in f32, carried through four Adam steps; measured: at most 9e-16 (f64) and 1.2e-7
// (f32, a weight). The bounds, 1e-12 (f64) and 2e-6 (f32), leave >= 16x room and are still far below
// what a real mistake gives (leaving out the TP sum of the replicated gradient slices: 1e-4 on the
// first gradient norm, 1e-2 on the final weights).
#include <gtest/gtest.h>
#include <mpi.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/shard.h"
#include "dist_test_util.h"
#include "layers/safetensors.h"
#include "train/experiment.h"
#include "train/trainer.h"

namespace fs = std::filesystem;
using namespace latte;

namespace {

using test::world_rank;
using test::world_size;

// grad_clip 0.5 so that clipping (and with it the sharded gradient norm) shapes the updates.
std::string shared_root() {
  static const std::string root = test::shared_run_dir("latte_zero1_", std::string(test::kTinyEgmlaModelYaml) + R"(
train: {steps: 4, seed: 5, seq_len: 16, micro_batch: 2, lr: 3.0e-3, warmup_steps: 1, grad_clip: 0.5, device: cpu}
eval: {every: 2, batches: 2}
)");
  return root;
}

std::string run_dir(const std::string& run) { return shared_root() + "/" + run; }
std::string ckpt(const std::string& run, int step) {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%08d", step);
  return run_dir(run) + "/ckpt/" + name;
}

ExperimentConfig config(const std::string& run, std::vector<std::string> overrides) {
  overrides.push_back("train.out_dir=" + run_dir(run));
  overrides.push_back("data.train=" + shared_root() + "/data/syn_train_*.bin");
  overrides.push_back("data.val=" + shared_root() + "/data/syn_val_*.bin");
  return load_experiment(shared_root() + "/run.yaml", overrides);
}

std::vector<std::string> with(std::vector<std::string> base, const std::vector<std::string>& more) {
  base.insert(base.end(), more.begin(), more.end());
  return base;
}

std::vector<nlohmann::json> metrics(const std::string& run) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(run_dir(run) + "/metrics.jsonl");
  std::string line;
  while (std::getline(in, line))
    if (!line.empty()) rows.push_back(nlohmann::json::parse(line));
  return rows;
}

nlohmann::json state_json(const std::string& dir) {
  std::ifstream in(dir + "/state.json");
  return nlohmann::json::parse(in);
}

std::string file_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void expect_same_metrics(const std::vector<nlohmann::json>& a, const std::vector<nlohmann::json>& b, double tol) {
  ASSERT_EQ(a.size(), b.size());
  ASSERT_FALSE(a.empty());
  for (size_t i = 0; i < a.size(); ++i) {
    for (const char* key : {"loss", "grad_norm", "val_loss"}) {
      ASSERT_EQ(a[i].contains(key), b[i].contains(key)) << key << " step " << i + 1;
      if (!a[i].contains(key)) continue;
      if (tol == 0)
        EXPECT_EQ(a[i][key].get<double>(), b[i][key].get<double>()) << key << " step " << i + 1;
      else
        EXPECT_NEAR(a[i][key].get<double>(), b[i][key].get<double>(), tol) << key << " step " << i + 1;
    }
  }
}

// Every tensor of two weight files, max |a - b| <= tol.
void expect_same_weights(const std::string& a_path, const std::string& b_path, double tol) {
  const SafetensorsFile a = read_safetensors(a_path), b = read_safetensors(b_path);
  ASSERT_EQ(a.tensors.size(), b.tensors.size()) << a_path;
  ASSERT_FALSE(a.tensors.empty()) << a_path;
  for (const auto& [name, tensor] : a.tensors)
    EXPECT_LE(latte::test::max_abs_diff(tensor, b.get(name)), tol) << name << " in " << a_path << " vs " << b_path;
}

int64_t element_count(const std::string& path) {
  int64_t n = 0;
  for (const SafetensorsEntry& e : read_safetensors_header(path).entries) n += e.shape.numel();
  return n;
}

// Checks (rank 0) that `run` saved its optimizer state as ZeRO-1 shards over dp ranks at `step`, one
// per (tp, dp) rank, that together hold as many elements as the unsharded run `full_run`'s file.
void expect_zero1_checkpoint(const std::string& run, const std::string& full_run, int step, int dp, int tp) {
  const nlohmann::json state = state_json(ckpt(run, step));
  EXPECT_TRUE(state.value("zero1", false)) << state.dump();
  EXPECT_EQ(state.value("zero1_dp", 0), dp);
  EXPECT_FALSE(state_json(ckpt(full_run, step)).value("zero1", true));
  for (int t = 0; t < tp; ++t) {
    const std::string full = ckpt(full_run, step) + "/optimizer-rank" + std::to_string(t) + ".safetensors";
    ASSERT_TRUE(fs::exists(full)) << full;
    const int64_t full_elements = element_count(full);
    int64_t total = 0;
    for (int d = 0; d < dp; ++d) {
      const std::string shard = ckpt(run, step) + "/optimizer-tp" + std::to_string(t) + "-dp" + std::to_string(d) +
                                ".safetensors";
      ASSERT_TRUE(fs::exists(shard)) << shard;
      const int64_t n = element_count(shard);
      // Buckets are padded to a multiple of dp, so a shard holds at most one more element per bucket.
      EXPECT_LT(n, full_elements / dp + 64) << shard;
      EXPECT_LT(fs::file_size(shard), fs::file_size(full)) << shard;
      total += n;
    }
    EXPECT_EQ(total, full_elements) << "the shards of tp rank " << t << " hold every element once";
    EXPECT_FALSE(fs::exists(ckpt(run, step) + "/optimizer-rank" + std::to_string(t) + ".safetensors"));
  }
}

// Runs `make_run` expecting every rank that calls it to throw a latte::Error whose message holds all of `needles`.
template <typename F>
void expect_refused(F&& make_run, const std::vector<std::string>& needles) {
  try {
    make_run();
    ADD_FAILURE() << "expected the resume to be refused";
  } catch (const latte::Error& e) {
    for (const std::string& needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "'" << needle << "' not in: " << e.what();
  }
}

}  // namespace

TEST(TrainZero1, MatchesPlainDataParallel) {
  const int dp = world_size();
  // Two micro-batches per rank per step: the DP reduction happens only after the second one.
  const std::vector<std::string> base = {"parallel.dp=" + std::to_string(dp),
                                         "train.global_batch_tokens=" + std::to_string(2 * 16 * 2 * dp)};
  for (const auto& [dtype, tol] : {std::pair<std::string, double>{"f64", 1e-12}, {"f32", 2e-6}}) {
    const std::string tag = "dp" + std::to_string(dp) + "_" + dtype;
    const std::vector<std::string> run = with(base, {"train.dtype=" + dtype});
    train(config(tag + "_plain", run), {"", true});
    train(config(tag + "_zero1", with(run, {"parallel.zero1=true"})), {"", true});
    if (world_rank() == 0) {
      expect_same_metrics(metrics(tag + "_zero1"), metrics(tag + "_plain"), tol);
      expect_same_weights(ckpt(tag + "_zero1", 4) + "/model-tp0.safetensors",
                          ckpt(tag + "_plain", 4) + "/model-tp0.safetensors", tol);
      expect_zero1_checkpoint(tag + "_zero1", tag + "_plain", 4, dp, 1);
    }
    MPI_Barrier(MPI_COMM_WORLD);
  }
}

TEST(TrainZero1, ResumeIsBitwise) {
  const int dp = world_size();
  const std::string tag = "resume" + std::to_string(dp);
  const std::vector<std::string> base = {"parallel.dp=" + std::to_string(dp), "parallel.zero1=true", "train.dtype=f32"};
  train(config(tag + "_straight", base), {"", true});
  train(config(tag, with(base, {"train.stop_after=2"})), {"", true});
  train(config(tag, base), {"auto", true});
  if (world_rank() == 0) {
    expect_same_metrics(metrics(tag + "_straight"), metrics(tag), 0.0);
    const std::string model = "/model-tp0.safetensors";
    EXPECT_TRUE(file_bytes(ckpt(tag + "_straight", 4) + model) == file_bytes(ckpt(tag, 4) + model)) << model;
    for (int d = 0; d < dp; ++d) {
      const std::string file = "/optimizer-tp0-dp" + std::to_string(d) + ".safetensors";
      EXPECT_TRUE(fs::exists(ckpt(tag, 2) + file)) << file;
      EXPECT_TRUE(file_bytes(ckpt(tag + "_straight", 4) + file) == file_bytes(ckpt(tag, 4) + file)) << file;
    }
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(TrainZero1, ResumeWithOtherShardingIsRefused) {
  const int dp = world_size();
  const std::string dp_set = "parallel.dp=" + std::to_string(dp);
  const std::string sharded = "optimizer state sharded over dp = " + std::to_string(dp);

  // A ZeRO-1 checkpoint resumed without ZeRO-1 (every rank reads state.json and throws; no collective runs).
  train(config("refuse_on", {dp_set, "parallel.zero1=true", "train.stop_after=2"}), {"", true});
  const std::string on_ckpt = ckpt("refuse_on", 2);
  expect_refused([&] { train(config("refuse_on", {dp_set, "parallel.zero1=false"}), {"auto", true}); },
                 {on_ckpt, "parallel.zero1 on", sharded, "parallel.zero1 off", "ZeRO-1"});
  // ... and onto another dp: one process (dp = 1, where zero1 is a no-op) ...
  if (world_rank() == 0)
    expect_refused([&] { train(config("refuse_on", {"parallel.zero1=true"}), {on_ckpt, true, true}); },
                   {on_ckpt, sharded, "dp = 1", "no-op"});
  // ... and, on four ranks, dp = 2 x tp = 2, where zero1 is on but over another dp.
  if (dp == 4)
    expect_refused(
        [&] { train(config("refuse_on", {"parallel.dp=2", "parallel.tp=2", "parallel.zero1=true"}), {"auto", true}); },
        {on_ckpt, sharded, "optimizer state sharded over dp = 2", "same parallel.zero1, parallel.dp"});
  MPI_Barrier(MPI_COMM_WORLD);

  // A plain checkpoint resumed with ZeRO-1.
  train(config("refuse_off", {dp_set, "train.stop_after=2"}), {"", true});
  expect_refused([&] { train(config("refuse_off", {dp_set, "parallel.zero1=true"}), {"auto", true}); },
                 {ckpt("refuse_off", 2), "parallel.zero1 off", "parallel.zero1 on", sharded});
  // The same settings as saved resume fine.
  const TrainResult resumed = train(config("refuse_on", {dp_set, "parallel.zero1=true"}), {"auto", true});
  EXPECT_EQ(resumed.last_step, 4);
  MPI_Barrier(MPI_COMM_WORLD);
}

TEST(TrainZero1, OneReplicaIsANoOp) {
  // One process (dp = 1): nothing to shard over; the run is bitwise the plain one and saves full state.
  if (world_rank() == 0) {
    train(config("single_plain", {}), {"", true, true});
    train(config("single_zero1", {"parallel.zero1=true"}), {"", true, true});
    expect_same_metrics(metrics("single_zero1"), metrics("single_plain"), 0.0);
    EXPECT_FALSE(state_json(ckpt("single_zero1", 4)).value("zero1", true));
    EXPECT_TRUE(fs::exists(ckpt("single_zero1", 4) + "/optimizer-rank0.safetensors"));
  }
  MPI_Barrier(MPI_COMM_WORLD);
}

// Four ranks: tp = 2 x dp = 2. The TP-replicated parameters' gradient slices are summed over TP inside
// the ZeRO-1 shards and counted once in the norm; both TP ranks' weights must match the plain run.
TEST(TrainZero1, TensorParallelTimesDataParallel) {
  if (world_size() != 4) GTEST_SKIP() << "needs 4 ranks (tp = 2 x dp = 2)";
  const std::vector<std::string> base = {"parallel.tp=2", "parallel.dp=2", "train.dtype=f64"};
  train(config("tp2dp2_plain", base), {"", true});
  train(config("tp2dp2_zero1", with(base, {"parallel.zero1=true"})), {"", true});
  if (world_rank() == 0) {
    const double tol = 1e-12;  // f64: see the top of the file
    expect_same_metrics(metrics("tp2dp2_zero1"), metrics("tp2dp2_plain"), tol);
    for (const char* file : {"/model-tp0.safetensors", "/model-tp1.safetensors"})
      expect_same_weights(ckpt("tp2dp2_zero1", 4) + file, ckpt("tp2dp2_plain", 4) + file, tol);
    expect_zero1_checkpoint("tp2dp2_zero1", "tp2dp2_plain", 4, 2, 2);
  }
  MPI_Barrier(MPI_COMM_WORLD);
}
