// `latte eval <checkpoint|run dir|weights>`: the evaluations the papers report, from one command.
//   --data <globs...>        loss and perplexity over non-overlapping windows of the shards (one set)
//   --sets name=glob,...     the same per named validation set, with the average over sets
//   --tasks <files...>       zero-shot accuracy on JSONL task files (lm-eval scoring, train/zero_shot.h)
// Progress goes to stderr; the results go to stdout as JSON (and --json / --markdown / --samples files).
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "apps/commands.h"
#include "core/log.h"
#include "data/tokenizer.h"
#include "train/metrics.h"
#include "train/model_source.h"
#include "train/perplexity_suite.h"

namespace latte::apps {

namespace {

constexpr const char* kUsage =
    R"(usage: latte eval <checkpoint dir | run dir | weights.safetensors>
                  [--data <shard globs...>] [--sets name=glob[,name=glob...]] [--tasks <task.jsonl...>] [options]

  --data GLOBS...        loss / perplexity over non-overlapping windows of these shards
  --sets SPEC...         named validation sets: name=glob[,glob][,name=glob...]; per-set loss/ppl and the average
  --tasks FILES...       zero-shot task files (JSONL; scripts/convert_tasks.py writes them, docs/evaluation.md)
  --seq-len T            perplexity window and task context limit (default model.max_seq_len)
  --batch B              windows (perplexity) or (context, choice) rows (tasks) per forward (default 8)
  --max-batches N        perplexity batches per set (default all)
  --limit N              first N items of each task (default all)
  --tokenizer NAME       gpt2 | byte for the task texts (default: the checkpoint's data.tokenizer, else gpt2)
  --tokenizer-dir DIR    GPT-2 vocabulary files (default: the checkpoint's data.tokenizer_dir, else data/gpt2)
  --config model.yaml    model config of a bare .safetensors without embedded config
  --device auto|cpu|cuda (default auto: the GPU when there is one)
  --json out.json        also write the results JSON to a file
  --markdown out.md      write the result tables as Markdown
  --samples out.jsonl    write every task item's log-likelihoods and prediction
  --quiet                no progress line and no tables on stderr
)";

// One rewritten stderr line; at most every 0.2 s except the last update of a run. Without a terminal
// only each run's final line is printed.
class ProgressLine {
 public:
  explicit ProgressLine(bool enabled) : enabled_(enabled), tty_(isatty(STDERR_FILENO) != 0) {}
  void start() { t0_ = Clock::now(), last_ = t0_ - std::chrono::seconds(1); }
  double elapsed() const { return std::chrono::duration<double>(Clock::now() - t0_).count(); }
  void show(const std::string& text, bool final) {
    if (!enabled_) return;
    const auto now = Clock::now();
    if (!final && (!tty_ || now - last_ < std::chrono::milliseconds(200))) return;
    last_ = now;
    std::fprintf(stderr, tty_ ? "\r%s\033[K%s" : "%s%s", text.c_str(), final ? "\n" : "");
    std::fflush(stderr);
  }

 private:
  using Clock = std::chrono::steady_clock;
  bool enabled_, tty_;
  Clock::time_point t0_, last_;
};

void write_text(const std::string& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  LATTE_REQUIRE(out, path, ": cannot open for writing");
  out << text;
  LATTE_REQUIRE(out.good(), path, ": write failed");
}

// data.tokenizer / data.tokenizer_dir of the run config a checkpoint carries, when present.
void tokenizer_from_config(const std::string& config_yaml, std::string& name, std::string& dir) {
  try {
    YAML::Node root = YAML::Load(config_yaml);
    if (root["data"] && root["data"]["tokenizer"]) name = root["data"]["tokenizer"].as<std::string>();
    if (root["data"] && root["data"]["tokenizer_dir"]) dir = root["data"]["tokenizer_dir"].as<std::string>();
  } catch (const YAML::Exception&) {
    // A model-only config: keep the defaults.
  }
}

int64_t parse_count(const std::string& flag, const std::string& text) {
  size_t used = 0;
  int64_t v = 0;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  LATTE_REQUIRE(used == text.size() && v >= 0, flag, " expects a non-negative integer, got '", text, "'");
  return v;
}

}  // namespace

int cmd_eval(int argc, char** argv) {
  std::string source_path, config_path, device_name = "auto", json_out, markdown_out, samples_out;
  std::string tokenizer_name, tokenizer_dir;
  std::vector<std::string> data, set_specs, task_files;
  int64_t seq_len = 0, batch = 8, max_batches = 0, limit = 0;
  bool quiet = false;
  for (ArgCursor args(argc, argv, kUsage); args.next();) {
    const std::string& a = args.arg();
    auto value = [&] { return args.value(); };
    auto values = [&](std::vector<std::string>& out) { args.values(out); };
    if (args.is_help()) {
      std::printf("%s", kUsage);
      return 0;
    } else if (a == "--data") {
      values(data);
    } else if (a == "--sets") {
      values(set_specs);
    } else if (a == "--tasks") {
      values(task_files);
    } else if (a == "--seq-len") {
      seq_len = parse_count(a, value());
    } else if (a == "--batch") {
      batch = parse_count(a, value());
      LATTE_REQUIRE(batch > 0, "--batch must be positive");
    } else if (a == "--max-batches") {
      max_batches = parse_count(a, value());
    } else if (a == "--limit") {
      limit = parse_count(a, value());
    } else if (a == "--tokenizer") {
      tokenizer_name = value();
    } else if (a == "--tokenizer-dir") {
      tokenizer_dir = value();
    } else if (a == "--config") {
      config_path = value();
    } else if (a == "--device") {
      device_name = value();
    } else if (a == "--json") {
      json_out = value();
    } else if (a == "--markdown") {
      markdown_out = value();
    } else if (a == "--samples") {
      samples_out = value();
    } else if (a == "--quiet") {
      quiet = true;
    } else if (a.rfind("--", 0) == 0) {
      LATTE_FAIL("unknown option ", a, " (see latte eval --help)");
    } else {
      LATTE_REQUIRE(source_path.empty(), "two models given ('", source_path, "' and '", a, "'); latte eval takes one");
      source_path = a;
    }
  }
  LATTE_REQUIRE(!source_path.empty() && (!data.empty() || !set_specs.empty() || !task_files.empty()),
                "usage: latte eval <checkpoint> --data <shard globs...> | --sets name=glob,... | --tasks <files...> (see --help)");

  ModelSource src = resolve_model_source(source_path, config_path);
  std::string tok_name = "gpt2", tok_dir = "data/gpt2";
  tokenizer_from_config(src.config_yaml, tok_name, tok_dir);
  if (!tokenizer_name.empty()) tok_name = tokenizer_name;
  if (!tokenizer_dir.empty()) tok_dir = tokenizer_dir;

  // Everything the user gave is checked (globs, task files, tokenizer) before the model is loaded.
  EvalSuiteConfig sc;
  sc.sets = parse_set_specs(set_specs);
  sc.perplexity = {seq_len, batch, max_batches};
  sc.task_files = task_files;
  sc.zero_shot.batch_rows = batch;
  sc.zero_shot.max_len = seq_len;
  sc.zero_shot.limit = limit;
  sc.tokenizer = tok_name;
  sc.tokenizer_dir = tok_dir;
  EvalSuite suite(sc);

  const Device device = resolve_device(device_name);
  auto model = load_model(src, device, default_dtype(device));
  if (!quiet) log::info("evaluating ", src.description, " on ", device.str());

  ProgressLine line(!quiet);
  nlohmann::json result = {{"model", src.description}};
  if (!data.empty()) {
    // The original single-set form: its keys stay at the top level.
    PerplexityOptions po{seq_len, batch, max_batches};
    const int64_t window = po.seq_len > 0 ? po.seq_len : src.config.max_seq_len;
    SetResult r = evaluate_set(*model, {"data", data}, po, [&](int64_t done, int64_t total, double loss) {
      if (done == 0) {
        line.start();
        return;
      }
      const double dt = line.elapsed();
      char buf[200];
      std::snprintf(buf, sizeof(buf), "eval %lld/%lld batches | loss %.4f | %.0f tok/s | eta %s", static_cast<long long>(done),
                    static_cast<long long>(total), loss, static_cast<double>(done * batch * window) / dt,
                    format_duration(dt / static_cast<double>(done) * static_cast<double>(total - done)).c_str());
      line.show(buf, done == total);
    });
    result["loss"] = r.loss;
    result["perplexity"] = r.ppl;
    result["tokens"] = r.tokens;
    result["seq_len"] = r.seq_len;
  }

  SuiteProgress progress;
  progress.set = [&](const std::string& name, int64_t done, int64_t total, double loss) {
    if (done == 0) {
      line.start();
      return;
    }
    char buf[200];
    std::snprintf(buf, sizeof(buf), "%s: %lld/%lld batches | loss %.4f | eta %s", name.c_str(), static_cast<long long>(done),
                  static_cast<long long>(total), loss,
                  format_duration(line.elapsed() / static_cast<double>(done) * static_cast<double>(total - done)).c_str());
    line.show(buf, done == total);
  };
  progress.task = [&](const std::string& name, const ScoreProgress& p) {
    if (p.requests_done == 0) {
      line.start();
      return;
    }
    const double dt = line.elapsed();
    const double eta = dt / static_cast<double>(p.requests_done) * static_cast<double>(p.requests_total - p.requests_done);
    char buf[200];
    std::snprintf(buf, sizeof(buf), "%s: %lld/%lld items | %.1f items/s | eta %s", name.c_str(),
                  static_cast<long long>(p.items_done), static_cast<long long>(p.items_total),
                  static_cast<double>(p.items_done) / std::max(dt, 1e-9), format_duration(eta).c_str());
    line.show(buf, p.requests_done == p.requests_total);
  };
  EvalReport report = suite.run(*model, progress);
  const nlohmann::json suite_json = to_json(report);
  result.update(suite_json);

  std::printf("%s\n", result.dump(2).c_str());
  if (!json_out.empty()) write_text(json_out, result.dump(2) + "\n");
  const std::string tables = markdown(report);
  if (!tables.empty() && !quiet) std::fprintf(stderr, "\n%s", tables.c_str());
  if (!markdown_out.empty()) {
    std::string md = "## " + src.description + "\n\n";
    if (!data.empty()) {
      char buf[160];
      std::snprintf(buf, sizeof(buf), "Perplexity on --data: loss %.4f, ppl %.3f (%lld tokens)\n\n", result["loss"].get<double>(),
                    result["perplexity"].get<double>(), static_cast<long long>(result["tokens"].get<int64_t>()));
      md += buf;
    }
    write_text(markdown_out, md + tables);
  }
  if (!samples_out.empty()) {
    LATTE_REQUIRE(report.has_tasks(), "--samples needs --tasks");
    write_text(samples_out, samples_jsonl(report.tasks));
  }
  return 0;
}

}  // namespace latte::apps
