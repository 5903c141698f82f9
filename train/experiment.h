// Experiment configuration: one YAML file per run with sections model, train, data, parallel,
// checkpoint, eval, log. `base: other.yaml` inherits (deep merge, this file wins); `--set a.b.c=value`
// overrides from the command line. Every key is validated: unknown keys, wrong types and impossible
// combinations are errors naming the key path and a fix. The resolved YAML is kept for saving. Every key is
// listed in docs/configuration.md (tests/train/test_config_docs.cpp keeps the two in step).
#pragma once
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "layers/model_config.h"
#include "train/distill.h"

namespace latte {

struct TrainConfig {
  int64_t steps = 1000;                 // optimizer steps
  uint64_t seed = 1337;                 // init, data order, sampling
  std::string out_dir = "runs/default"; // run directory: config.yaml, metrics.jsonl, ckpt/
  int64_t micro_batch = 8;              // sequences per forward/backward on one rank
  int64_t seq_len = 256;                // tokens per sequence (T)
  int64_t global_batch_tokens = 0;      // tokens per optimizer step over all ranks; 0 = one micro-batch per rank
  double lr = 6e-4;                     // peak learning rate
  double min_lr_ratio = 0.1;            // final lr / peak
  int64_t warmup_steps = 0;
  std::string schedule = "cosine";      // cosine | wsd | constant
  double wsd_decay_fraction = 0.2;      // wsd: share of steps spent decaying
  double weight_decay = 0.1;            // decoupled (AdamW)
  bool decay_norms_and_embeddings = true;  // false exempts norm gains/biases and embedding tables
  double beta1 = 0.9, beta2 = 0.95, eps = 1e-8;
  double grad_clip = 1.0;               // global-norm clip; 0 disables
  std::string device = "auto";          // auto | cpu | cuda
  std::string dtype = "auto";           // compute/param dtype: auto (bf16 on cuda, f32 on cpu) | bf16 | f32 | f64
  int64_t max_bad_steps = 5;            // NaN/spike guard: stop after this many skipped steps in a row
  double spike_factor = 0.0;            // skip a step whose loss exceeds factor * running mean; 0 = NaN/inf only
  int64_t stop_after = 0;               // end this invocation after N steps with a checkpoint (schedule untouched)
  std::string init_from;                // start from these weights (import-hf / upcycle dir, exported file, checkpoint); "" = seeded init
  DistillConfig distill;                // train.distill: teacher, temperature, kl_weight, ce_weight (off without a teacher)
  std::string attention_backend = "auto";  // auto | latte | cudnn | reference (kernels/attention_backend.h)
};

struct DataConfig {
  std::vector<std::string> train;       // shard globs (.bin / .h5)
  std::vector<std::string> val;         // validation shard globs
  std::string tokenizer = "gpt2";       // for generate/eval prompts: gpt2 | byte
  std::string tokenizer_dir = "data/gpt2";
};

struct ParallelConfig {
  int dp = 1;                           // data-parallel ranks
  int tp = 1;                           // tensor-parallel ranks (consecutive ranks inside a node)
  bool zero1 = false;                   // shard optimizer state over dp
};

struct CheckpointConfig {
  int64_t every = 0;                    // save every N steps (0: only at the end / on signal)
  int keep_last = 3;                    // complete checkpoints kept
  // Save when the run reaches train.steps. false: benchmarks skip writing a state nobody resumes from
  // (a 1.3B model's optimizer state is ~16 GB per rank); --stop-after and signals still save.
  bool at_end = true;
  std::string dir;                      // default <out_dir>/ckpt
};

struct EvalConfig {
  int64_t every = 0;                    // validation every N steps (0: only at the end)
  int64_t batches = 20;                 // validation micro-batches per evaluation (data.val and each eval.sets entry)
  // Named validation sets in YAML order, name -> shard globs (the MLRA paper averages 7); each is logged
  // as val/<name>_loss and val/<name>_ppl, with val/avg_loss and val/avg_ppl (train/perplexity_suite.h).
  std::vector<std::pair<std::string, std::vector<std::string>>> sets;
  std::vector<std::string> tasks;       // zero-shot task files (JSONL, scripts/convert_tasks.py): task/<name>_acc
  int64_t task_limit = 0;               // first N items of each task per evaluation (0 = all)
  int64_t task_batch = 0;               // (context, choice) rows per scoring forward (0 = train.micro_batch)
};

struct LogConfig {
  int64_t every = 1;                    // console line every N steps
};

struct ExperimentConfig {
  std::string source;                   // the YAML file it came from
  ModelConfig model;
  TrainConfig train;
  DataConfig data;
  ParallelConfig parallel;
  CheckpointConfig checkpoint;
  EvalConfig eval;
  LogConfig log;
  YAML::Node resolved;                  // after base + --set, as saved in the run directory

  int64_t tokens_per_micro_batch() const { return train.micro_batch * train.seq_len; }
  // Micro-batches each DP rank runs per optimizer step.
  int64_t grad_accum_steps() const;
};

// Loads `path` (following base: chains), applies overrides ("a.b.c=value", value parsed as YAML) and validates.
ExperimentConfig load_experiment(const std::string& path, const std::vector<std::string>& overrides = {});
// The same from an already-resolved YAML tree (a checkpoint's config snapshot).
ExperimentConfig parse_experiment(const YAML::Node& resolved, const std::string& source);
// Loads a YAML file with base: inheritance resolved (no validation).
YAML::Node load_yaml_with_bases(const std::string& path);
void apply_override(YAML::Node& root, const std::string& assignment);

}  // namespace latte
