// Zero-shot evaluation by continuation log-likelihood, scored exactly as lm-evaluation-harness does
// (v0.4 `loglikelihood` / `multiple_choice`), so that our numbers sit next to the papers' tables:
//   - every (context, choice) pair is one request; its score is the summed log-probability of the
//     choice's tokens given the context (trailing context whitespace moves to the continuation, the
//     continuation's tokens are those of encode(context + choice) after the context's, and the whole
//     sequence is truncated from the left to max_seq_len + 1 tokens);
//   - acc: argmax of the summed log-likelihoods; acc_norm: argmax of the log-likelihood divided by the
//     choice's length in characters (lm-eval's `len(choice)`, which counts code points; the one space
//     that separates choice from context is not counted, as lm-eval's target_delimiter is not);
//   - partial scoring (WinoGrande): the choice replaces the blank "_" of the context and only the
//     shared suffix after the blank is scored;
//   - single-choice tasks (LAMBADA): acc = every target token is the greedy (argmax) token; ppl =
//     exp(-mean over items of the target's summed log-likelihood), lm-eval's `perplexity`.
// Requests are sorted by length and packed as rows of a batch (right-padded, targets -1), one forward
// per batch on the model's device; only the scored positions go through the LM head.
//
// Task files are JSONL (docs/evaluation.md; scripts/convert_tasks.py writes them from the public
// formats): an optional header line {"name", "scoring", "primary", "description", "source"}, then one
// item per line {"context": str, "choices": [str...], "label": int, "id"?, "scoring"?, "meta"?}.
#pragma once
#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "layers/transformer.h"

namespace latte {

enum class Scoring { Full, Partial };
const char* scoring_name(Scoring scoring);  // "full" | "partial"

struct TaskItem {
  std::string context;               // text before the choice; with partial scoring it holds the blank "_"
  std::vector<std::string> choices;  // continuations verbatim (converters put the separating space in front)
  int64_t label = 0;                 // index of the right choice (0 for single-choice items)
  std::string id;                    // "id" of the file, or "" when absent
  Scoring scoring = Scoring::Full;
  int64_t line = 0;                  // 1-based line in the task file
};

struct Task {
  std::string name;                  // header "name", else the file name without its extension
  std::string path;
  std::string primary = "acc";       // the metric the suite average takes: acc | acc_norm
  std::vector<TaskItem> items;
  bool single_choice() const { return !items.empty() && items.front().choices.size() == 1; }  // LAMBADA-style
};

// Reads and validates a task file. Every problem is a latte::Error "<path>:<line>: <what is wrong>".
Task load_task(const std::string& path);
// The same from text (tests); `path` names the source in errors.
Task parse_task(const std::string& text, const std::string& path);

// ---- requests -----------------------------------------------------------------------------------------

// One (context, continuation) pair as text.
struct ScoreRequest {
  std::string context;
  std::string continuation;
};

// The requests of an item, one per choice. Full: (context, choice). Partial: (context up to the first
// "_" + choice, " " + the text after the blank with surrounding whitespace stripped), as lm-eval's
// winogrande (doc_to_choice / doc_to_target with target_delimiter " ").
std::vector<ScoreRequest> build_requests(const TaskItem& item);

// A request as tokens: `tokens` = context + continuation, left-truncated to max_len + 1; the model reads
// tokens[0 .. n-1) and the last `continuation` tokens are scored.
struct EncodedRequest {
  std::vector<int32_t> tokens;
  int64_t continuation = 0;
  bool greedy = false;  // also check that each scored token is the argmax (single-choice tasks)
};

// lm-eval's _encode_pair + truncation. An empty context becomes the EOT token. A continuation longer
// than max_len tokens is a latte::Error (lm-eval asserts the same).
EncodedRequest encode_request(const ScoreRequest& request, const data::Tokenizer& tokenizer, int64_t max_len,
                              bool greedy = false);

struct RequestScore {
  double logprob = 0;    // summed log-probability of the continuation tokens
  int64_t tokens = 0;    // continuation tokens scored
  bool greedy = false;   // every continuation token was the argmax (only computed when requested)
};

// Scores requests in batches of up to `batch_rows` rows, longest first. on_done(i) is called once for
// every request i as soon as its score is final. Runs with grad disabled.
std::vector<RequestScore> score_requests(const TransformerLM& model, const std::vector<EncodedRequest>& requests,
                                         int64_t batch_rows, const std::function<void(size_t)>& on_done = {});

// ---- metrics --------------------------------------------------------------------------------------------

// The acc_norm length of a choice: Unicode code points, not counting one leading space.
double choice_length(const std::string& choice);

struct ChoicePrediction {
  int64_t pred = 0;       // argmax of logprobs (first on ties, as np.argmax)
  int64_t pred_norm = 0;  // argmax of logprobs[i] / lengths[i]
};
ChoicePrediction predict_choice(const std::vector<double>& logprobs, const std::vector<double>& lengths);

// What one item scored.
struct ItemOutcome {
  int64_t line = 0;
  std::string id;
  int64_t label = 0;
  int64_t pred = 0, pred_norm = 0;   // single-choice: pred = 0 when greedy-correct, else -1
  std::vector<double> logprobs;      // one per choice
  std::vector<int64_t> tokens;       // scored tokens per choice
  bool correct = false, correct_norm = false;
};

struct TaskResult {
  std::string name, path, primary;
  bool single_choice = false;
  bool partial = false;              // every item partial-scored (acc_norm is then omitted, as lm-eval)
  int64_t items = 0;
  double acc = 0, acc_stderr = 0;
  double acc_norm = -1, acc_norm_stderr = 0;  // -1: not reported (single-choice or partial tasks)
  double ppl = -1, ppl_per_token = -1;        // single-choice tasks only
  double seconds = 0;
  std::vector<ItemOutcome> outcomes;
  double primary_value() const { return primary == "acc_norm" && acc_norm >= 0 ? acc_norm : acc; }
};

// Metrics of a task from its items' request scores (scores[i][c]: item i, choice c). Pure.
TaskResult summarize_task(const Task& task, const std::vector<std::vector<RequestScore>>& scores);

struct ZeroShotOptions {
  int64_t batch_rows = 8;    // (context, choice) rows per forward
  int64_t max_len = 0;       // context + continuation tokens per row; 0 or above model.max_seq_len: max_seq_len
  int64_t limit = 0;         // first N items of each task; 0 = all
};

// Progress while a task runs (for a progress bar): items whose every choice is scored, and requests.
struct ScoreProgress {
  int64_t items_done = 0, items_total = 0;
  int64_t requests_done = 0, requests_total = 0;
};
using ScoreProgressFn = std::function<void(const ScoreProgress&)>;

TaskResult evaluate_task(const TransformerLM& model, const data::Tokenizer& tokenizer, const Task& task,
                         const ZeroShotOptions& options, const ScoreProgressFn& progress = {});

// Several tasks and their average of primary metrics (the papers' "avg zero-shot").
struct ZeroShotSummary {
  std::vector<TaskResult> tasks;
  double average = 0;  // mean over tasks of primary_value()
};
ZeroShotSummary summarize_tasks(std::vector<TaskResult> tasks);

nlohmann::json to_json(const TaskResult& result);
nlohmann::json to_json(const ZeroShotSummary& summary);
std::string markdown_table(const ZeroShotSummary& summary);  // | task | items | acc | acc_norm | ppl | reported |
// One line per item: {"task", "line", "id", "label", "pred", "pred_norm", "logprobs", "tokens", "correct"}.
std::string samples_jsonl(const ZeroShotSummary& summary);

}  // namespace latte
