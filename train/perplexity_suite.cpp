// Perplexity over named validation sets and the combined evaluation suite (train/perplexity_suite.h).
#include "train/perplexity_suite.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "autograd/node.h"
#include "core/error.h"
#include "data/files.h"
#include "data/loader.h"
#include "data/shard.h"

namespace latte {

std::vector<NamedSet> parse_set_specs(const std::vector<std::string>& specs) {
  std::vector<NamedSet> sets;
  std::set<std::string> names;
  for (const std::string& spec : specs) {
    size_t start = 0;
    while (start <= spec.size()) {
      size_t comma = spec.find(',', start);
      if (comma == std::string::npos) comma = spec.size();
      const std::string piece = spec.substr(start, comma - start);
      start = comma + 1;
      if (piece.empty()) continue;
      const size_t eq = piece.find('=');
      if (eq == std::string::npos) {
        LATTE_REQUIRE(!sets.empty(), "--sets ", spec, ": '", piece, "' has no name; write name=glob, e.g. wikipedia=data/val/wiki_*.bin");
        sets.back().patterns.push_back(piece);
        continue;
      }
      const std::string name = piece.substr(0, eq), glob = piece.substr(eq + 1);
      LATTE_REQUIRE(!name.empty(), "--sets ", spec, ": '", piece, "' has an empty set name; write name=glob");
      LATTE_REQUIRE(!glob.empty(), "--sets ", spec, ": set '", name, "' has no shard glob after '='");
      LATTE_REQUIRE(names.insert(name).second, "--sets: the set name '", name, "' is given twice");
      sets.push_back({name, {glob}});
    }
  }
  return sets;
}

SetResult evaluate_set(const TransformerLM& model, const NamedSet& set, const PerplexityOptions& options,
                       const BatchProgressFn& progress) {
  const int64_t max_seq = model.config().max_seq_len;
  const int64_t T = options.seq_len > 0 ? options.seq_len : max_seq;
  LATTE_REQUIRE(T <= max_seq, "eval set '", set.name, "': seq_len ", T, " exceeds model.max_seq_len ", max_seq);
  LATTE_REQUIRE(options.batch_size > 0, "eval set '", set.name, "': the batch must be positive, got ", options.batch_size);
  data::LoaderConfig lc;
  lc.shard_patterns = set.patterns;
  lc.seq_len = T;
  lc.batch_size = options.batch_size;
  lc.shuffle = false;
  lc.single_pass = true;
  lc.vocab_size = static_cast<int32_t>(model.config().vocab_size);
  std::unique_ptr<data::DataLoader> loader;
  try {
    // Windows per shard as the loader counts them, so that a set smaller than one batch is read whole
    // in one smaller batch instead of being refused.
    uint64_t windows = 0;
    for (const std::string& path : data::expand_globs(set.patterns, "eval set '" + set.name + "'")) {
      const uint64_t n = data::ShardReader::open(path)->size();
      windows += n >= static_cast<uint64_t>(T) + 1 ? (n - 1) / static_cast<uint64_t>(T) : 0;
    }
    LATTE_REQUIRE(windows > 0, "the shards (", set.patterns.front(), ") hold no full window of seq_len + 1 = ", T + 1, " tokens");
    lc.batch_size = std::min<int64_t>(lc.batch_size, static_cast<int64_t>(windows));
    loader = std::make_unique<data::DataLoader>(lc);
  } catch (const Error& e) {
    LATTE_FAIL("eval set '", set.name, "': ", e.what());
  }
  int64_t total = static_cast<int64_t>(loader->batches_per_epoch());
  if (options.max_batches > 0) total = std::min(total, options.max_batches);

  autograd::NoGradGuard no_grad;
  const Device device = model.device();
  double loss_sum = 0;
  int64_t n = 0;
  if (progress) progress(0, total, 0.0);
  while (n < total) {
    const data::Batch* b = loader->next();
    if (!b) break;
    Tensor ids = Tensor::empty({b->batch_size, b->seq_len}, DType::I32);      // (B, T)
    Tensor targets = Tensor::empty({b->batch_size, b->seq_len}, DType::I32);  // (B, T)
    std::memcpy(ids.data_ptr(), b->inputs, ids.nbytes());
    std::memcpy(targets.data_ptr(), b->targets, targets.nbytes());
    if (!device.is_cpu()) {
      ids = ids.to(device);
      targets = targets.to(device);
    }
    loss_sum += model.loss(ids, targets).item();
    ++n;
    if (progress) progress(n, total, loss_sum / static_cast<double>(n));
  }
  LATTE_CHECK(n > 0);
  SetResult r;
  r.name = set.name;
  r.loss = loss_sum / static_cast<double>(n);
  r.ppl = std::exp(r.loss);
  r.windows = n * lc.batch_size;
  r.tokens = r.windows * T;
  r.seq_len = T;
  return r;
}

SetsSummary summarize_sets(std::vector<SetResult> sets) {
  SetsSummary s;
  s.sets = std::move(sets);
  for (const SetResult& r : s.sets) {
    s.avg_loss += r.loss;
    s.avg_ppl += r.ppl;
  }
  if (!s.sets.empty()) {
    s.avg_loss /= static_cast<double>(s.sets.size());
    s.avg_ppl /= static_cast<double>(s.sets.size());
  }
  return s;
}

nlohmann::json to_json(const SetsSummary& s) {
  nlohmann::json sets = nlohmann::json::object();
  for (const SetResult& r : s.sets)
    sets[r.name] = {{"loss", r.loss}, {"ppl", r.ppl}, {"tokens", r.tokens}, {"windows", r.windows}, {"seq_len", r.seq_len}};
  return {{"sets", sets}, {"avg_loss", s.avg_loss}, {"avg_ppl", s.avg_ppl}};
}

std::string markdown_table(const SetsSummary& s) {
  std::string out = "| set | tokens | loss | ppl |\n|:--|--:|--:|--:|\n";
  char buf[160];
  for (const SetResult& r : s.sets) {
    std::snprintf(buf, sizeof(buf), " | %lld | %.4f | %.3f |\n", static_cast<long long>(r.tokens), r.loss, r.ppl);
    out += "| " + r.name + buf;
  }
  std::snprintf(buf, sizeof(buf), "| **average** | | %.4f | **%.3f** |\n", s.avg_loss, s.avg_ppl);
  return out + buf;
}

// ---- the suite -------------------------------------------------------------------------------------------

EvalSuite::EvalSuite(EvalSuiteConfig config) : config_(std::move(config)) {
  std::set<std::string> set_names;
  for (const NamedSet& s : config_.sets) {
    LATTE_REQUIRE(!s.name.empty() && !s.patterns.empty(), "an eval set needs a name and shard globs");
    LATTE_REQUIRE(set_names.insert(s.name).second, "eval set '", s.name, "' is given twice");
    try {
      data::expand_globs(s.patterns, "eval set '" + s.name + "'");
    } catch (const Error& e) {
      LATTE_FAIL("eval set '", s.name, "': ", e.what());
    }
  }
  std::set<std::string> task_names;
  for (const std::string& path : config_.task_files) {
    tasks_.push_back(load_task(path));
    LATTE_REQUIRE(task_names.insert(tasks_.back().name).second, path, ": a task named '", tasks_.back().name,
                  "' is already loaded; give one of them another \"name\" in its header line");
  }
  if (!tasks_.empty()) tokenizer_ = data::make_tokenizer(config_.tokenizer, config_.tokenizer_dir);
}

EvalReport EvalSuite::run(const TransformerLM& model, const SuiteProgress& progress) const {
  EvalReport report;
  std::vector<SetResult> sets;
  for (const NamedSet& s : config_.sets) {
    BatchProgressFn fn;
    if (progress.set) fn = [&](int64_t done, int64_t total, double loss) { progress.set(s.name, done, total, loss); };
    sets.push_back(evaluate_set(model, s, config_.perplexity, fn));
  }
  report.sets = summarize_sets(std::move(sets));
  std::vector<TaskResult> tasks;
  for (const Task& t : tasks_) {
    ScoreProgressFn fn;
    if (progress.task) fn = [&](const ScoreProgress& p) { progress.task(t.name, p); };
    tasks.push_back(evaluate_task(model, *tokenizer_, t, config_.zero_shot, fn));
  }
  report.tasks = summarize_tasks(std::move(tasks));
  return report;
}

void add_metrics(const EvalReport& report, nlohmann::json& row) {
  if (report.has_sets()) {
    for (const SetResult& s : report.sets.sets) {
      row["val/" + s.name + "_loss"] = s.loss;
      row["val/" + s.name + "_ppl"] = s.ppl;
    }
    row["val/avg_loss"] = report.sets.avg_loss;
    row["val/avg_ppl"] = report.sets.avg_ppl;
  }
  if (report.has_tasks()) {
    for (const TaskResult& t : report.tasks.tasks) {
      row["task/" + t.name + "_acc"] = t.acc;
      if (t.acc_norm >= 0) row["task/" + t.name + "_acc_norm"] = t.acc_norm;
      if (t.ppl >= 0) row["task/" + t.name + "_ppl"] = t.ppl;
    }
    row["task/avg"] = report.tasks.average;
  }
}

nlohmann::json to_json(const EvalReport& report) {
  nlohmann::json j = nlohmann::json::object();
  if (report.has_sets()) j["perplexity"] = to_json(report.sets);
  if (report.has_tasks()) j["zero_shot"] = to_json(report.tasks);
  return j;
}

std::string markdown(const EvalReport& report) {
  std::string out;
  if (report.has_sets()) out += "### Validation perplexity\n\n" + markdown_table(report.sets);
  if (report.has_tasks()) out += std::string(out.empty() ? "" : "\n") + "### Zero-shot accuracy (%)\n\n" + markdown_table(report.tasks);
  return out;
}

std::string summary_line(const EvalReport& report) {
  std::string out;
  char buf[96];
  if (report.has_sets()) {
    std::snprintf(buf, sizeof(buf), "val avg ppl %.3f (", report.sets.avg_ppl);
    out += buf;
    for (size_t i = 0; i < report.sets.sets.size(); ++i) {
      std::snprintf(buf, sizeof(buf), "%s%s %.3f", i ? ", " : "", report.sets.sets[i].name.c_str(), report.sets.sets[i].ppl);
      out += buf;
    }
    out += ")";
  }
  if (report.has_tasks()) {
    std::snprintf(buf, sizeof(buf), "%szero-shot avg %.2f%% (", out.empty() ? "" : " | ", 100 * report.tasks.average);
    out += buf;
    for (size_t i = 0; i < report.tasks.tasks.size(); ++i) {
      const TaskResult& t = report.tasks.tasks[i];
      std::snprintf(buf, sizeof(buf), "%s%s %.2f", i ? ", " : "", t.name.c_str(), 100 * t.primary_value());
      out += buf;
    }
    out += ")";
  }
  return out;
}

}  // namespace latte
