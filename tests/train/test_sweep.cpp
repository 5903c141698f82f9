// `latte sweep` (train/sweep.h): grid expansion order and run names, runs: lists, the printed
// commands of --dry-run, the finished/partial/new logic on fake run directories, bad sweep files
// rejected with the key named, a real two-run sweep on a synthetic corpus that is skipped when run
// again and resumed after an interruption, and the shipped configs/ablations/ files (they parse,
// every run's config validates, and the MLRA comparison is matched in parameters within 1%).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "apps/commands.h"
#include "core/error.h"
#include "data/shard.h"
#include "layers/model_config.h"
#include "train/experiment.h"
#include "train/sweep.h"

namespace fs = std::filesystem;
using namespace latte;

// apps/cmd_sweep.cpp (compiled into liblatte); repeated here so that this suite does not depend on
// the line in apps/commands.h.
namespace latte::apps {
int cmd_sweep(int argc, char** argv);
}

namespace {

std::string root() {
  static std::string d = [] {
    fs::path p = fs::temp_directory_path() / ("latte_sweep_" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::create_directories(p / "data");
    // A learnable synthetic corpus (as tests/train/test_trainer.cpp), vocab 96.
    std::vector<int32_t> tokens;
    uint64_t s = 4242;
    for (int i = 0; i < 12000; ++i) {
      s = s * 6364136223846793005ull + 1442695040888963407ull;
      tokens.push_back((s >> 60) == 0 ? static_cast<int32_t>((s >> 33) % 96) : (i * 7) % 61);
    }
    data::write_shard((p / "data/syn_train_000000.bin").string(), {tokens.data(), 10000}, data::ShardFormat::Bin,
                      data::TokenDtype::U16);
    data::write_shard((p / "data/syn_val_000000.bin").string(), {tokens.data() + 10000, 2000}, data::ShardFormat::Bin,
                      data::TokenDtype::U16);
    std::ofstream(p / "tiny.yaml") << "model:\n"
                                      "  vocab_size: 96\n"
                                      "  d_model: 32\n"
                                      "  n_layers: 2\n"
                                      "  ffn_dim: 64\n"
                                      "  max_seq_len: 32\n"
                                      "  attention: {kind: mla, n_heads: 4, kv_rank: 16, rope_dim: 4, nope_dim: 8, v_dim: 8}\n"
                                      "train: {steps: 3, seed: 7, micro_batch: 2, seq_len: 16, lr: 3.0e-3, dtype: f32, device: cpu}\n"
                                      "data:\n"
                                      "  train: " << (p / "data/syn_train_*.bin").string() << "\n"
                                      "  val: " << (p / "data/syn_val_*.bin").string() << "\n"
                                      "eval: {every: 0, batches: 2}\n";
    std::ofstream(p / "other_model.yaml") << "model:\n"
                                             "  vocab_size: 96\n"
                                             "  d_model: 32\n"
                                             "  n_layers: 1\n"
                                             "  ffn_dim: 48\n"
                                             "  max_seq_len: 32\n"
                                             "  attention: {kind: mha, n_heads: 4}\n";
    return p.string();
  }();
  return d;
}

std::string write(const std::string& name, const std::string& text) {
  const std::string path = root() + "/" + name;
  fs::create_directories(fs::path(path).parent_path());
  std::ofstream(path) << text;
  return path;
}

std::vector<std::string> names(const Sweep& s) {
  std::vector<std::string> out;
  for (const SweepRun& r : s.runs) out.push_back(r.name);
  return out;
}

// Expects `fn` to throw latte::Error whose message contains every fragment.
template <typename Fn>
void expect_error(Fn fn, const std::vector<std::string>& fragments) {
  try {
    fn();
    FAIL() << "expected an error";
  } catch (const latte::Error& e) {
    for (const std::string& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}

void touch(const fs::path& path, const std::string& text = "") {
  fs::create_directories(path.parent_path());
  std::ofstream(path) << text;
}

std::string metrics_rows(int steps) {
  std::string s;
  for (int i = 1; i <= steps; ++i) s += "{\"step\": " + std::to_string(i) + ", \"loss\": " + std::to_string(5.0 - i) + "}\n";
  return s;
}

std::string dry_run(const Sweep& sweep, SweepOptions options = {}) {
  options.dry_run = true;
  std::ostringstream out;
  EXPECT_EQ(run_sweep(sweep, options, out), 0);
  return out.str();
}

}  // namespace

TEST(Sweep, GridExpandsInKeyOrderWithStableNames) {
  const std::string out = root() + "/grid_runs";
  const std::string path = write("grid.yaml", "base: tiny.yaml\nout_dir: " + out +
                                                  "\nset: {train.steps: 5}\n"
                                                  "grid:\n  model.attention.kind: [mla, egmla]\n"
                                                  "  model.attention.kv_rank: [16, 32, 8]\n");
  const Sweep s = load_sweep(path);
  EXPECT_EQ(names(s), (std::vector<std::string>{"kind-mla_kv_rank-16", "kind-mla_kv_rank-32", "kind-mla_kv_rank-8",
                                                "kind-egmla_kv_rank-16", "kind-egmla_kv_rank-32", "kind-egmla_kv_rank-8"}));
  const SweepRun& r = s.runs[4];
  EXPECT_EQ(r.base, root() + "/tiny.yaml");
  EXPECT_EQ(r.run_dir, out + "/kind-egmla_kv_rank-32");
  EXPECT_EQ(r.overrides, (std::vector<std::string>{"train.steps=5", "model.attention.kind=egmla", "model.attention.kv_rank=32",
                                                   "train.out_dir=" + out + "/kind-egmla_kv_rank-32"}));
  // The same file always gives the same names (they are directory names).
  EXPECT_EQ(names(load_sweep(path)), names(s));
  const std::vector<ExperimentConfig> cfgs = resolve_sweep(s);
  EXPECT_EQ(cfgs[4].model.attention.kind, AttentionKind::EGMLA);
  EXPECT_EQ(cfgs[4].model.attention.kv_rank, 32);
  EXPECT_EQ(cfgs[4].train.steps, 5);
  EXPECT_EQ(cfgs[4].train.out_dir, out + "/kind-egmla_kv_rank-32");
}

TEST(Sweep, GridPointNames) {
  EXPECT_EQ(grid_point_name({"model.attention.kind", "model.attention.kv_rank"}, {"mla", "128"}), "kind-mla_kv_rank-128");
  // Keys with the same last component keep enough of their path to stay apart.
  EXPECT_EQ(grid_point_name({"train.lr", "model.attention.gate.embed_dim", "other.gate.embed_dim"}, {"1e-3", "64", "32"}),
            "lr-1e-3_attention-gate-embed_dim-64_other-gate-embed_dim-32");
  // Values are made filesystem-safe.
  EXPECT_EQ(grid_point_name({"data.train"}, {"data/kjv/kjv_train_*.bin"}), "train-data-kjv-kjv_train_-.bin");
  EXPECT_EQ(grid_point_name({"model.attention.gate"}, {"{position: kv, share_layers: 2}"}), "gate-position-kv-share_layers-2");
}

TEST(Sweep, RunsListWithPerRunBaseModelAndSetForms) {
  const std::string out = root() + "/list_runs";
  write("sub/base2.yaml", "base: ../tiny.yaml\ntrain: {steps: 4}\n");
  const std::string path = write("list.yaml", "description: three runs\nbase: tiny.yaml\nout_dir: " + out +
                                                  "\nset: {train.lr: 1.0e-3}\n"
                                                  "runs:\n"
                                                  "  - name: mla-small\n"
                                                  "    set: {model.attention.kv_rank: 8}\n"
                                                  "  - name: other_base\n"
                                                  "    base: sub/base2.yaml\n"
                                                  "    set: [model.n_layers=1, 'data.train=" + root() + "/data/syn_train_*.bin']\n"
                                                  "  - name: mha.1\n"
                                                  "    model: other_model.yaml\n"
                                                  "    set: {model.attention: {kind: mha, n_heads: 2}}\n");
  SweepCliOverrides cli;
  cli.set = {"train.seed=9"};
  const Sweep s = load_sweep(path, cli);
  EXPECT_EQ(s.description, "three runs");
  EXPECT_EQ(names(s), (std::vector<std::string>{"mla-small", "other_base", "mha.1"}));
  EXPECT_EQ(s.runs[0].overrides, (std::vector<std::string>{"train.lr=1.0e-3", "model.attention.kv_rank=8", "train.seed=9",
                                                           "train.out_dir=" + out + "/mla-small"}));
  EXPECT_EQ(s.runs[1].base, root() + "/sub/base2.yaml");
  EXPECT_EQ(s.runs[1].overrides[1], "model.n_layers=1");
  EXPECT_EQ(s.runs[2].overrides[0].rfind("model={vocab_size: 96", 0), 0u) << s.runs[2].overrides[0];
  EXPECT_EQ(s.runs[2].overrides[2], "model.attention={kind: mha, n_heads: 2}");

  const std::vector<ExperimentConfig> cfgs = resolve_sweep(s);
  EXPECT_EQ(cfgs[0].model.attention.kv_rank, 8);
  EXPECT_DOUBLE_EQ(cfgs[0].train.lr, 1e-3);
  EXPECT_EQ(cfgs[0].train.seed, 9u);
  EXPECT_EQ(cfgs[1].train.steps, 4);  // from the run's own base
  EXPECT_EQ(cfgs[1].model.n_layers, 1);
  EXPECT_EQ(cfgs[2].model.n_layers, 1);  // model: replaced the whole section...
  EXPECT_EQ(cfgs[2].model.ffn_dim, 48);
  EXPECT_EQ(cfgs[2].model.attention.kind, AttentionKind::MHA);  // ...and set: applied on top
  EXPECT_EQ(cfgs[2].model.attention.n_heads, 2);

  // --out-dir replaces the file's root.
  SweepCliOverrides moved;
  moved.out_dir = root() + "/elsewhere";
  EXPECT_EQ(load_sweep(path, moved).runs[0].run_dir, root() + "/elsewhere/mla-small");
}

TEST(Sweep, DryRunPrintsEveryCommandQuotedForTheShell) {
  const std::string out = root() + "/dry_runs";
  const std::string path = write("dry.yaml", "base: tiny.yaml\nout_dir: " + out +
                                                 "\nset: {data.train: 'x/kjv_train_*.bin'}\n"
                                                 "grid: {model.attention.kv_rank: [8, 16]}\n");
  const Sweep s = load_sweep(path);
  const std::string text = dry_run(s);
  const std::string base = root() + "/tiny.yaml";
  EXPECT_NE(text.find("# kv_rank-8: new\nlatte train " + base + " --set 'data.train=x/kjv_train_*.bin' --set model.attention.kv_rank=8 "
                      "--set train.out_dir=" + out + "/kv_rank-8 --resume auto\n"),
            std::string::npos)
      << text;
  EXPECT_NE(text.find("# kv_rank-16: new\nlatte train " + base), std::string::npos) << text;
  EXPECT_LT(text.find("kv_rank-8"), text.find("kv_rank-16"));
  EXPECT_FALSE(fs::exists(out)) << "a dry run creates nothing";

  // mpirun wraps each command; --only selects runs by name or glob.
  SweepOptions mpi;
  mpi.launcher = Launcher::Mpirun;
  mpi.exe = "build/latte";
  mpi.only = {"*-16"};
  const std::string wrapped = dry_run(s, mpi);
  EXPECT_NE(wrapped.find("\nmpirun -np 1 build/latte train " + base), std::string::npos) << wrapped;
  EXPECT_EQ(wrapped.find("kv_rank-8"), std::string::npos) << wrapped;
  mpi.only = {"nope"};
  std::ostringstream sink;
  expect_error([&] { run_sweep(s, mpi, sink); }, {"--only nope matches no run", "kv_rank-8, kv_rank-16"});
  mpi.only = {};
  mpi.np = 4;
  expect_error([&] { run_sweep(s, mpi, sink); }, {"parallel.dp * parallel.tp = 1 but --np is 4", "--set parallel.dp=4"});

  EXPECT_EQ(shell_join({"a", "b c", "it's", "x=y,z", "{k: v}"}), "a 'b c' 'it'\\''s' x=y,z '{k: v}'");
}

TEST(Sweep, FinishedRunsAreSkippedAndInterruptedOnesResumed) {
  const std::string out = root() + "/state_runs";
  const std::string path = write("state.yaml", "base: tiny.yaml\nout_dir: " + out +
                                                   "\ngrid: {train.lr: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]}\n");
  const Sweep s = load_sweep(path);
  const std::vector<ExperimentConfig> cfgs = resolve_sweep(s);  // train.steps = 3
  auto dir = [&](int i) { return fs::path(s.runs[static_cast<size_t>(i)].run_dir); };
  touch(dir(0) / "ckpt/step_00000003/COMPLETE");                      // final checkpoint: finished
  touch(dir(1) / "ckpt/step_00000002/COMPLETE");                      // interrupted at step 2
  touch(dir(1) / "ckpt/step_00000003/model-tp0.safetensors");         // an unfinished save does not count
  touch(dir(1) / "metrics.jsonl", metrics_rows(3));                    // crashed after logging step 3
  /* run 2: nothing */
  touch(dir(3) / "metrics.jsonl", metrics_rows(3));                    // checkpoints deleted, metrics complete
  touch(dir(4) / "config.yaml", "model: {}\n");                        // started, no checkpoint yet
  touch(dir(5) / "metrics.jsonl", metrics_rows(2) + "{\"step\": 3, \"lo");  // torn last line

  auto state = [&](int i) { return inspect_run(cfgs[static_cast<size_t>(i)]); };
  EXPECT_EQ(state(0).state, RunState::Finished);
  EXPECT_EQ(state(0).step, 3);
  EXPECT_EQ(state(1).state, RunState::Partial);
  EXPECT_EQ(state(1).step, 2);
  EXPECT_EQ(state(2).state, RunState::New);
  EXPECT_EQ(state(3).state, RunState::Finished);
  EXPECT_EQ(state(4).state, RunState::Partial);
  EXPECT_EQ(state(4).step, 0);
  EXPECT_EQ(state(5).state, RunState::Partial);

  const RunMetrics m = read_run_metrics(dir(1).string());
  EXPECT_EQ(m.last_step, 3);
  EXPECT_DOUBLE_EQ(m.final_loss, 3.0);  // mean of 4, 3, 2
  EXPECT_EQ(m.val_loss, -1);

  fs::remove(dir(4) / "config.yaml");  // ("model: {}" would not match the sweep's model)
  touch(dir(4) / "metrics.jsonl", metrics_rows(1));
  const std::string text = dry_run(s);
  EXPECT_NE(text.find("# lr-0.1: finished (step 3 of 3), skipped\n# latte train"), std::string::npos) << text;
  EXPECT_NE(text.find("# lr-0.2: resume from step 2 of 3\nlatte train"), std::string::npos) << text;
  EXPECT_NE(text.find("# lr-0.3: new\nlatte train"), std::string::npos) << text;
  EXPECT_NE(text.find("# lr-0.4: finished"), std::string::npos) << text;
}

TEST(Sweep, BadSweepFilesAreRejectedWithTheKeyNamed) {
  auto load = [](const std::string& name, const std::string& text) {
    const std::string path = write(name, text);
    return [path] { resolve_sweep(load_sweep(path)); };
  };
  const std::string out = "out_dir: " + root() + "/bad_runs\n";
  expect_error(load("b1.yaml", "base: tiny.yaml\n" + out + "grdi: {train.lr: [1]}\n"), {"b1.yaml", "grdi", "did you mean grid?"});
  expect_error(load("b2.yaml", "base: tiny.yaml\n" + out + "grid: {model.attention.kv_rank: []}\n"),
               {"grid.model.attention.kv_rank is an empty list"});
  expect_error(load("b3.yaml", "base: tiny.yaml\n" + out + "grid: {}\n"), {"grid must be a non-empty mapping"});
  expect_error(load("b4.yaml", "base: tiny.yaml\n" + out + "grid: {model.attention.kv_rnak: [8]}\n"),
               {"b4.yaml", "run 'kv_rnak-8'", "model.attention.kv_rnak", "did you mean kv_rank?"});
  expect_error(load("b5.yaml", "base: tiny.yaml\n" + out + "runs:\n  - {name: a, sett: {train.lr: 1}}\n"),
               {"runs[0].sett", "did you mean set?"});
  expect_error(load("b6.yaml", "base: tiny.yaml\n" + out + "runs:\n  - {name: a}\n  - {name: a}\n"), {"two runs are named 'a'"});
  expect_error(load("b7.yaml", "base: tiny.yaml\n" + out + "runs:\n  - {name: a/b}\n"), {"runs[0].name 'a/b'", "filesystem-safe"});
  expect_error(load("b8.yaml", "base: tiny.yaml\n" + out + "set: {train.out_dir: x}\nruns: [{name: a}]\n"),
               {"set.train.out_dir", "change the sweep's out_dir"});
  expect_error(load("b9.yaml", out + "runs: [{name: a}]\n"), {"runs[0]: no base config"});
  expect_error(load("b10.yaml", "base: tiny.yaml\nruns: [{name: a}]\n"), {"out_dir is required"});
  expect_error(load("b11.yaml", "base: tiny.yaml\n" + out), {"give grid:", "or runs:"});
  expect_error(load("b12.yaml", "base: nowhere.yaml\n" + out + "runs: [{name: a}]\n"), {"base: nowhere.yaml not found"});
  expect_error(load("b13.yaml", "base: tiny.yaml\n" + out + "grid: {train.steps: [0]}\n"), {"run 'steps-0'", "train.steps"});
  expect_error(load("b14.yaml", "base: tiny.yaml\n" + out + "runs: [{name: a, set: {train.lr: }}]\n"), {"runs[0].set.train.lr", "missing"});
  expect_error(load("b15.yaml", "base: tiny.yaml\n" + out + "grid: {'model attention': [1]}\n"), {"'model attention' is not a key path"});
  expect_error(load("b16.yaml", "base: tiny.yaml\n" + out + "runs:\n  - {name: a, set: {checkpoint.dir: /tmp/x}}\n"
                                 "  - {name: b, set: {checkpoint.dir: /tmp/x}}\n"),
               {"runs 'a' and 'b' would share the checkpoint dir"});
  expect_error(load("b18.yaml", "base: tiny.yaml\n" + out + "runs: [{name: a}]\nmodel: {d_model: 4}\n"), {"model", "is not a known key"});
  expect_error([] { load_sweep(root() + "/tiny.yaml"); }, {"tiny.yaml: this is an experiment config", "latte train"});
  expect_error(load("b17.yaml", "base: tiny.yaml\n" + out + "grid: {train.lr: [1, 2]\n"), {"b17.yaml: invalid YAML at line"});

  // A run directory trained with another model is refused, naming the differing key.
  const std::string path = write("mismatch.yaml", "base: tiny.yaml\nout_dir: " + root() +
                                                      "/mismatch_runs\nruns: [{name: a, set: {model.attention.kv_rank: 8}}]\n");
  const Sweep s = load_sweep(path);
  touch(fs::path(s.runs[0].run_dir) / "config.yaml", "model: {vocab_size: 96, d_model: 32, n_layers: 2, ffn_dim: 64, max_seq_len: 32,"
                                                   " attention: {kind: mla, n_heads: 4, kv_rank: 16, rope_dim: 4, nope_dim: 8, v_dim: 8}}\n");
  std::ostringstream sink;
  expect_error([&] { run_sweep(s, SweepOptions{}, sink); },
               {"run 'a'", "was trained with a different model: model.attention.kv_rank (16 there, 8 now)"});

  // Command-line mistakes of `latte sweep`.
  auto cli = [](std::vector<std::string> args) {
    return [args]() mutable {
      std::vector<char*> argv;
      for (std::string& a : args) argv.push_back(a.data());
      apps::cmd_sweep(static_cast<int>(argv.size()), argv.data());
    };
  };
  expect_error(cli({"sweep", path, "--launcher", "slurm"}), {"--launcher must be local, mpirun or print"});
  expect_error(cli({"sweep", path, "--np", "0"}), {"--np expects a positive integer"});
  expect_error(cli({"sweep", path, "--bogus"}), {"unknown option --bogus"});
  expect_error(cli({"sweep", root() + "/missing.yaml"}), {"missing.yaml: sweep file not found"});
}

TEST(Sweep, RealTinySweepRunsThenSkipsThenResumes) {
  const std::string out = root() + "/real_runs";
  const std::string path = write("real.yaml", "base: tiny.yaml\nout_dir: " + out +
                                                  "\ngrid: {model.attention.kind: [mla, egmla]}\n");
  SweepOptions options;  // local, in-process
  options.quiet = true;
  {
    SweepCliOverrides stop;
    stop.set = {"train.stop_after=2"};  // as if interrupted after 2 of 3 steps
    std::ostringstream text;
    EXPECT_EQ(run_sweep(load_sweep(path, stop), options, text), 0) << text.str();
    EXPECT_NE(text.str().find("stopped at step 2"), std::string::npos) << text.str();
  }
  const Sweep s = load_sweep(path);
  const std::vector<ExperimentConfig> cfgs = resolve_sweep(s);
  EXPECT_EQ(inspect_run(cfgs[0]).state, RunState::Partial);
  EXPECT_EQ(inspect_run(cfgs[0]).step, 2);
  {
    std::ostringstream text;
    EXPECT_EQ(run_sweep(s, options, text), 0) << text.str();
    EXPECT_NE(text.str().find("# kind-mla: resuming from step 2"), std::string::npos) << text.str();
    EXPECT_NE(text.str().find("kind-egmla  done"), std::string::npos) << text.str();
  }
  for (const ExperimentConfig& c : cfgs) {
    EXPECT_EQ(inspect_run(c).state, RunState::Finished);
    EXPECT_TRUE(fs::exists(fs::path(c.checkpoint.dir) / "step_00000003/COMPLETE"));
    const RunMetrics m = read_run_metrics(c.train.out_dir);
    EXPECT_EQ(m.last_step, 3);
    EXPECT_GT(m.final_loss, 0);
    EXPECT_GT(m.val_loss, 0);  // validation runs at the last step
  }
  EXPECT_EQ(YAML::LoadFile(out + "/kind-egmla/config.yaml")["model"]["attention"]["kind"].as<std::string>(), "egmla");
  const nlohmann::json manifest = nlohmann::json::parse(std::ifstream(out + "/sweep.json"));
  EXPECT_EQ(manifest["runs"].size(), 2u);
  EXPECT_EQ(manifest["runs"][1]["name"], "kind-egmla");

  const auto before = fs::last_write_time(out + "/kind-mla/metrics.jsonl");
  std::ostringstream again;
  EXPECT_EQ(run_sweep(s, options, again), 0);
  EXPECT_NE(again.str().find("# kind-mla: finished (step 3 of 3), skipped"), std::string::npos) << again.str();
  EXPECT_NE(again.str().find("kind-egmla  skipped (finished)  3/3"), std::string::npos) << again.str();
  EXPECT_EQ(fs::last_write_time(out + "/kind-mla/metrics.jsonl"), before);
}

TEST(Sweep, SubprocessLauncherUsesTheCliAndLogsPerRun) {
  if (!fs::exists(LATTE_CLI)) GTEST_SKIP() << LATTE_CLI << " is not built";
  const std::string out = root() + "/sub_runs";
  const std::string path = write("sub.yaml", "base: tiny.yaml\nout_dir: " + out + "\nruns: [{name: one, set: {train.steps: 2}}]\n");
  SweepOptions options;
  options.exe = LATTE_CLI;
  options.quiet = true;
  std::ostringstream text;
  EXPECT_EQ(run_sweep(load_sweep(path), options, text), 0) << text.str();
  EXPECT_NE(text.str().find("one  done"), std::string::npos) << text.str();
  std::ifstream log(out + "/one/train.log");
  const std::string log_text((std::istreambuf_iterator<char>(log)), std::istreambuf_iterator<char>());
  EXPECT_NE(log_text.find("=== latte sweep"), std::string::npos) << log_text;
  EXPECT_TRUE(fs::exists(out + "/one/ckpt/step_00000002/COMPLETE")) << log_text;
}

// The shipped ablation suites: every sweep parses and every run's config validates; the MLRA
// comparison's runs have the same parameter count within 1% (the point of adjusting ffn_dim).
TEST(Sweep, AblationConfigsValidate) {
  const fs::path dir = fs::path(LATTE_SOURCE_DIR) / "configs/ablations";
  if (!fs::exists(dir)) GTEST_SKIP() << dir << " missing";
  int sweeps = 0;
  for (const auto& entry : fs::directory_iterator(dir)) {
    if (entry.path().extension() != ".yaml") continue;
    const YAML::Node doc = YAML::LoadFile(entry.path().string());
    if (!doc["grid"] && !doc["runs"]) continue;  // a base experiment config, not a sweep
    SCOPED_TRACE(entry.path().string());
    ++sweeps;
    const Sweep s = load_sweep(entry.path().string());
    std::vector<ExperimentConfig> cfgs;
    ASSERT_NO_THROW(cfgs = resolve_sweep(s));
    const std::string stem = entry.path().stem().string();
    if (stem.rfind("mlra_comparison", 0) != 0) continue;
    int64_t lo = INT64_MAX, hi = 0;
    for (const ExperimentConfig& c : cfgs) {
      const int64_t n = count_parameters(c.model).total;
      lo = std::min(lo, n);
      hi = std::max(hi, n);
    }
    EXPECT_LT(static_cast<double>(hi) / static_cast<double>(lo), 1.01) << "params from " << lo << " to " << hi;
  }
  EXPECT_GE(sweeps, 5);
}
