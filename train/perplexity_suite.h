// The evaluation suite the papers report, in one call: perplexity on several named validation sets
// (the MLRA paper averages 7: Wikipedia, C4, Pile, RefinedWeb, Cosmopedia, FineWeb, FineWeb-Edu) and
// zero-shot accuracy on task files (train/zero_shot.h). `latte eval --sets/--tasks` and the trainer
// (eval.sets / eval.tasks, every eval.every steps) both run it through EvalSuite.
//
// A set is cut into non-overlapping windows of seq_len + 1 tokens at stride seq_len (the data loader's
// validation mode: corpus order, one pass); its loss is the mean per-token cross-entropy over the
// windows read (all full, so the mean of batch means), its ppl exp(loss). Across sets we report the mean
// of the per-set ppl (the papers' "avg ppl" column) and the mean of the per-set losses.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "layers/transformer.h"
#include "train/zero_shot.h"

namespace latte {

// A named validation set: shard globs (.bin / .h5).
struct NamedSet {
  std::string name;
  std::vector<std::string> patterns;
};

// "name=glob[,glob...][,name=glob...]" (one or more arguments): a piece without "=" adds a glob to the
// set before it. Empty names, duplicate names and a leading piece without a name are latte::Errors.
std::vector<NamedSet> parse_set_specs(const std::vector<std::string>& specs);

struct PerplexityOptions {
  int64_t seq_len = 0;      // window length T; 0 = model.max_seq_len
  int64_t batch_size = 8;   // windows per forward (lowered to the window count for tiny sets)
  int64_t max_batches = 0;  // per set; 0 = every full batch of the set
};

struct SetResult {
  std::string name;
  double loss = 0;          // mean per-token cross-entropy (nats)
  double ppl = 0;           // exp(loss)
  int64_t tokens = 0;       // scored tokens
  int64_t windows = 0;      // windows scored
  int64_t seq_len = 0;
};

// Progress of one set: batches done of total (first called with done = 0), running mean loss.
using BatchProgressFn = std::function<void(int64_t done, int64_t total, double mean_loss)>;

SetResult evaluate_set(const TransformerLM& model, const NamedSet& set, const PerplexityOptions& options,
                       const BatchProgressFn& progress = {});

struct SetsSummary {
  std::vector<SetResult> sets;
  double avg_loss = 0;  // mean of the per-set losses
  double avg_ppl = 0;   // mean of the per-set perplexities (the papers' average)
};
// Averages over sets (pure; each set counts once, whatever its size).
SetsSummary summarize_sets(std::vector<SetResult> sets);

nlohmann::json to_json(const SetsSummary& summary);
std::string markdown_table(const SetsSummary& summary);  // | set | tokens | loss | ppl | + average row

// ---- the suite ----------------------------------------------------------------------------------------------

struct EvalSuiteConfig {
  std::vector<NamedSet> sets;
  PerplexityOptions perplexity;
  std::vector<std::string> task_files;   // JSONL task files
  ZeroShotOptions zero_shot;
  std::string tokenizer = "gpt2";        // for the task texts: gpt2 | byte
  std::string tokenizer_dir = "data/gpt2";
};

struct EvalReport {
  SetsSummary sets;         // empty when no sets
  ZeroShotSummary tasks;    // empty when no tasks
  bool has_sets() const { return !sets.sets.empty(); }
  bool has_tasks() const { return !tasks.tasks.empty(); }
};

// Progress callbacks of a suite run; `what` names the set or task being evaluated.
struct SuiteProgress {
  std::function<void(const std::string& what, int64_t done, int64_t total, double mean_loss)> set;
  std::function<void(const std::string& what, const ScoreProgress&)> task;
};

class EvalSuite {
 public:
  // Loads and validates every task file, builds the tokenizer and expands every set's globs, so that a
  // mistake stops a training run at its start rather than at the first evaluation.
  explicit EvalSuite(EvalSuiteConfig config);
  bool empty() const { return config_.sets.empty() && tasks_.empty(); }
  const std::vector<Task>& tasks() const { return tasks_; }
  const EvalSuiteConfig& config() const { return config_; }

  EvalReport run(const TransformerLM& model, const SuiteProgress& progress = {}) const;

 private:
  EvalSuiteConfig config_;
  std::vector<Task> tasks_;
  std::unique_ptr<data::Tokenizer> tokenizer_;
};

// The metrics-row form of a report (metrics.jsonl): val/<set>_loss, val/<set>_ppl, val/avg_loss,
// val/avg_ppl, task/<name>_acc, task/<name>_acc_norm (when reported), task/<name>_ppl (single-choice),
// task/avg (mean of the primary metrics).
void add_metrics(const EvalReport& report, nlohmann::json& row);
nlohmann::json to_json(const EvalReport& report);
std::string markdown(const EvalReport& report);  // the tables, each under a heading
// One console line: "val avg ppl 29.24 (kjv 32.90, c4 25.59) | zero-shot avg 51.13% (hellaswag 53.00, ...)".
std::string summary_line(const EvalReport& report);

}  // namespace latte
