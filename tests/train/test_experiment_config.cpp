// Experiment YAML: base: inheritance, --set overrides, strict validation with key paths and hints.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "core/error.h"
#include "train/experiment.h"

namespace fs = std::filesystem;
using namespace latte;

namespace {
std::string dir() {
  static std::string d = [] {
    fs::path p = fs::temp_directory_path() / ("latte_cfg_" + std::to_string(::getpid()));
    fs::create_directories(p);
    return p.string();
  }();
  return d;
}

std::string write(const std::string& name, const std::string& text) {
  std::string path = dir() + "/" + name;
  std::ofstream(path) << text;
  return path;
}

const char* kTinyModel = R"(model:
  vocab_size: 128
  d_model: 32
  n_layers: 2
  ffn_dim: 64
  max_seq_len: 64
  attention: {kind: mla, n_heads: 4, kv_rank: 16, rope_dim: 4, nope_dim: 8, v_dim: 8}
)";

// Expects load_experiment to throw an Error whose message contains every fragment.
void expect_error(const std::string& path, const std::vector<std::string>& overrides,
                  const std::vector<std::string>& fragments) {
  try {
    load_experiment(path, overrides);
    FAIL() << "expected an error from " << path;
  } catch (const latte::Error& e) {
    for (const auto& f : fragments) EXPECT_NE(std::string(e.what()).find(f), std::string::npos) << e.what();
  }
}
}  // namespace

TEST(ExperimentConfig, BaseInheritanceAndOverrides) {
  write("base.yaml", std::string(kTinyModel) + "train: {steps: 50, lr: 1.0e-3, seq_len: 32, micro_batch: 2}\n");
  std::string child = write("child.yaml", "base: base.yaml\ntrain: {steps: 80}\nmodel: {n_layers: 3}\n");
  ExperimentConfig c = load_experiment(child, {"train.lr=5e-4", "parallel.dp=1", "model.attention.kv_rank=24"});
  EXPECT_EQ(c.train.steps, 80);          // child wins
  EXPECT_DOUBLE_EQ(c.train.lr, 5e-4);    // --set wins over both
  EXPECT_EQ(c.train.seq_len, 32);        // inherited
  EXPECT_EQ(c.model.n_layers, 3);        // deep merge keeps the rest of model:
  EXPECT_EQ(c.model.d_model, 32);
  EXPECT_EQ(c.model.attention.kv_rank, 24);
  EXPECT_EQ(c.resolved["train"]["steps"].as<int>(), 80);
  EXPECT_FALSE(c.resolved["base"]);
  EXPECT_EQ(c.checkpoint.dir, "runs/default/ckpt");
}

TEST(ExperimentConfig, UnknownKeysAreErrorsWithHints) {
  std::string p = write("typo.yaml", std::string(kTinyModel) + "train: {stpes: 10}\n");
  expect_error(p, {}, {"train.stpes", "did you mean steps"});
  std::string s = write("section.yaml", std::string(kTinyModel) + "trian: {steps: 10}\n");
  expect_error(s, {}, {"trian", "did you mean train"});
}

TEST(ExperimentConfig, WrongTypesNameKeyAndValue) {
  std::string p = write("types.yaml", std::string(kTinyModel) + "train: {steps: many}\n");
  expect_error(p, {}, {"train.steps", "integer", "many"});
  std::string q = write("types2.yaml", std::string(kTinyModel));
  expect_error(q, {"train.lr=fast"}, {"train.lr", "number", "fast"});
  expect_error(q, {"train.micro_batch=2.5"}, {"train.micro_batch", "integer"});
}

TEST(ExperimentConfig, ImpossibleCombinations) {
  std::string p = write("combo.yaml", std::string(kTinyModel) + "train: {seq_len: 32, micro_batch: 2}\n");
  expect_error(p, {"train.global_batch_tokens=100"}, {"train.global_batch_tokens", "multiple", "64"});
  expect_error(p, {"train.seq_len=128"}, {"train.seq_len", "max_seq_len"});
  expect_error(p, {"train.schedule=linear"}, {"train.schedule", "linear"});
  expect_error(p, {"train.warmup_steps=5000"}, {"train.warmup_steps"});
  ExperimentConfig ok = load_experiment(p, {"train.global_batch_tokens=256"});
  EXPECT_EQ(ok.grad_accum_steps(), 4);
}

TEST(ExperimentConfig, ModelErrorsNameTheKey) {
  std::string p = write("odd.yaml", std::string(kTinyModel));
  expect_error(p, {"model.attention.rope_dim=5"}, {"model.attention.rope_dim", "even", "5"});
  std::string missing = write("nomodel.yaml", "train: {steps: 3}\n");
  expect_error(missing, {}, {"model"});
  expect_error(dir() + "/does_not_exist.yaml", {}, {"does_not_exist.yaml", "not found"});
  std::string broken = write("broken.yaml", "model: [1, 2\n");
  expect_error(broken, {}, {"broken.yaml", "line"});
}

TEST(ExperimentConfig, ShippedConfigsParse) {
  for (const char* f : {"configs/examples/quickstart.yaml", "configs/examples/quickstart-gpu.yaml"}) {
    ExperimentConfig c = load_experiment(std::string(LATTE_SOURCE_DIR) + "/" + f);
    EXPECT_EQ(attention_kind_name(c.model.attention.kind), std::string("egmla")) << f;
  }
}
