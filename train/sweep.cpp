// Sweep files (train/sweep.h): parsing and expansion into runs, validation of every run's config,
// the progress of a run directory, and the launchers (print, local in-process or subprocess, mpirun).
// A sweep is idempotent: the command of each run ends in --resume auto, finished runs are skipped,
// and a per-run lock lets concurrent sweep processes split the work without training a run twice.
#include "train/sweep.h"

#include <fcntl.h>
#include <fnmatch.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iomanip>
#include <map>
#include <nlohmann/json.hpp>
#include <ostream>
#include <set>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "data/files.h"
#include "train/checkpoint_store.h"
#include "train/metrics.h"
#include "train/trainer.h"
#include "train/yaml_reader.h"

namespace fs = std::filesystem;

namespace latte {

namespace {

// ---- parsing ---------------------------------------------------------------------------------------

// A path written in the sweep file: relative to the sweep file's folder, else to the current
// directory (as experiment configs resolve base:). Returned lexically normalized, relative when given so.
std::string resolve_path(const std::string& sweep_path, const std::string& written, const std::string& key) {
  const fs::path dir = fs::path(sweep_path).parent_path();
  const fs::path beside = (dir / written).lexically_normal();
  if (fs::exists(beside)) return beside.string();
  if (fs::exists(written)) return fs::path(written).lexically_normal().string();
  LATTE_FAIL(sweep_path, ": ", key, ": ", written, " not found (looked in ", dir.empty() ? "." : dir.string(),
             "/ and in the current directory)");
}

bool valid_key_path(const std::string& key) {
  if (key.empty() || key.front() == '.' || key.back() == '.' || key.find("..") != std::string::npos) return false;
  return std::all_of(key.begin(), key.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.'; });
}

// Sets every collection of a (cloned) node to flow style so that it emits on one line.
void make_flow(YAML::Node node) {
  if (node.IsMap() || node.IsSequence()) {
    node.SetStyle(YAML::EmitterStyle::Flow);
    if (node.IsMap())
      for (auto kv : node) make_flow(kv.second);
    else
      for (auto item : node) make_flow(item);
  }
}

// The text of a value as `--set key=<text>` expects it: parsing it back as YAML gives the same node.
std::string value_text(const YAML::Node& value) {
  if (value.IsScalar()) {
    const std::string& text = value.Scalar();
    try {
      const YAML::Node back = YAML::Load(text);
      if (back.IsScalar() && back.Scalar() == text) return text;
    } catch (const YAML::Exception&) {
    }
    YAML::Emitter e;
    e << YAML::DoubleQuoted << text;
    return e.c_str();
  }
  YAML::Node copy = YAML::Clone(value);
  make_flow(copy);
  YAML::Emitter e;
  e << copy;
  return e.c_str();
}

// Keeps letters, digits and . _ + -; any other run of characters becomes one '-'.
std::string filesystem_safe(const std::string& text) {
  std::string out;
  for (char c : text) {
    const bool keep = std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '+' || c == '-';
    if (keep) out += c;
    else if (!out.empty() && out.back() != '-') out += '-';
  }
  while (!out.empty() && (out.back() == '-' || out.back() == '.')) out.pop_back();
  while (!out.empty() && (out.front() == '-' || out.front() == '.')) out.erase(out.begin());
  return out.empty() ? "empty" : out;
}

bool valid_run_name(const std::string& name) {
  return !name.empty() && filesystem_safe(name) == name;
}

// Reads a `set:` value: a mapping {key.path: value} or a list of "key.path=value" strings.
std::vector<std::string> parse_set(const YAML::Node& node, const std::string& file, const std::string& where) {
  std::vector<std::string> out;
  if (!node || node.IsNull()) return out;
  auto check_key = [&](const std::string& key) {
    LATTE_REQUIRE(valid_key_path(key), file, ": ", where, ": '", key,
                  "' is not a key path; write section.key (e.g. model.attention.kv_rank)");
    LATTE_REQUIRE(key != "train.out_dir" && key != "train", file, ": ", where, ".", key,
                  ": train.out_dir is set by the sweep to <out_dir>/<run name>; change the sweep's out_dir instead");
  };
  if (node.IsMap()) {
    for (const auto& kv : node) {
      const std::string key = kv.first.as<std::string>();
      check_key(key);
      LATTE_REQUIRE(kv.second && !kv.second.IsNull(), file, ": ", where, ".", key, ": the value is missing");
      out.push_back(key + "=" + value_text(kv.second));
    }
  } else if (node.IsSequence()) {
    for (const auto& item : node) {
      LATTE_REQUIRE(item.IsScalar(), file, ": ", where, ": list entries must be key.path=value strings");
      const std::string text = item.Scalar();
      const size_t eq = text.find('=');
      LATTE_REQUIRE(eq != std::string::npos && eq > 0, file, ": ", where, ": '", text, "' must be key.path=value");
      check_key(text.substr(0, eq));
      out.push_back(text);
    }
  } else {
    LATTE_FAIL(file, ": ", where, " must be a mapping {key.path: value} or a list of key.path=value strings");
  }
  return out;
}

// The `model:` section of a model or experiment file, as one override replacing the whole section.
std::string model_override(const std::string& sweep_path, const std::string& written, const std::string& where) {
  const std::string path = resolve_path(sweep_path, written, where);
  const YAML::Node root = load_yaml_with_bases(path);
  LATTE_REQUIRE(root["model"] && root["model"].IsMap(), sweep_path, ": ", where, ": ", path,
                " has no model: section (give a file from configs/models/ or an experiment config)");
  return "model=" + value_text(root["model"]);
}

}  // namespace

std::string grid_point_name(const std::vector<std::string>& keys, const std::vector<std::string>& values) {
  LATTE_CHECK(keys.size() == values.size());
  auto split = [](const std::string& key) {
    std::vector<std::string> parts;
    std::stringstream ss(key);
    for (std::string p; std::getline(ss, p, '.');) parts.push_back(p);
    return parts;
  };
  auto suffix = [](const std::vector<std::string>& parts, size_t n) {
    std::string s;
    for (size_t i = parts.size() - std::min(n, parts.size()); i < parts.size(); ++i) s += (s.empty() ? "" : ".") + parts[i];
    return s;
  };
  std::string name;
  for (size_t i = 0; i < keys.size(); ++i) {
    const std::vector<std::string> parts = split(keys[i]);
    // The shortest suffix of the key path that no other key shares.
    size_t n = 1;
    for (; n < parts.size(); ++n) {
      bool unique = true;
      for (size_t j = 0; j < keys.size() && unique; ++j)
        if (j != i && suffix(split(keys[j]), n) == suffix(parts, n)) unique = false;
      if (unique) break;
    }
    std::string label = suffix(parts, n);
    std::replace(label.begin(), label.end(), '.', '-');
    name += (name.empty() ? "" : "_") + label + "-" + filesystem_safe(values[i]);
  }
  return name;
}

Sweep load_sweep(const std::string& path, const SweepCliOverrides& cli) {
  LATTE_REQUIRE(fs::exists(path), path, ": sweep file not found");
  YAML::Node root;
  try {
    root = YAML::LoadFile(path);
  } catch (const YAML::Exception& e) {
    LATTE_FAIL(path, ": invalid YAML at line ", e.mark.line + 1, ", column ", e.mark.column + 1, ": ", e.msg);
  }
  LATTE_REQUIRE(root.IsMap(), path, ": a sweep file is a mapping with base:, out_dir: and grid: or runs:");
  const bool experiment_like = root["model"] || root["train"] || root["data"];
  LATTE_REQUIRE(!experiment_like || root["grid"] || root["runs"], path,
                ": this is an experiment config (it has model:/train:/data:), not a sweep; train it with latte train, "
                "or write a sweep file whose base: is this file (docs/ablations.md)");
  YamlReader top(root, "", path);
  Sweep sweep;
  sweep.source = path;
  sweep.description = top.get<std::string>("description", "");
  const std::string base_written = top.get<std::string>("base", "");
  const std::string base = base_written.empty() ? "" : resolve_path(path, base_written, "base");
  sweep.out_dir = cli.out_dir.empty() ? top.get<std::string>("out_dir", "") : cli.out_dir;
  if (!cli.out_dir.empty()) top.raw("out_dir");
  LATTE_REQUIRE(!sweep.out_dir.empty(), path, ": out_dir is required (the root of the run directories, e.g. runs/ablations/x)");
  const std::vector<std::string> common = parse_set(top.raw("set"), path, "set");
  const bool has_runs = top.has("runs"), has_grid = top.has("grid");
  const YAML::Node runs = top.raw("runs");
  const YAML::Node grid = top.raw("grid");
  top.finish();
  LATTE_REQUIRE(has_runs || has_grid, path, ": give grid: (key.path: [values]) or runs: (a list of {name, set}); the file has neither");
  for (const std::string& s : cli.set) LATTE_REQUIRE(s.rfind("train.out_dir=", 0) != 0, "--set ", s, ": use --out-dir for the sweep's root");

  auto add_run = [&](const std::string& name, const std::string& run_base, std::vector<std::string> overrides,
                     const std::string& where) {
    LATTE_REQUIRE(!run_base.empty(), path, ": ", where, ": no base config; give base: at the top of the sweep or in the run");
    SweepRun r;
    r.name = name;
    r.base = run_base;
    r.run_dir = (fs::path(sweep.out_dir) / name).lexically_normal().string();
    r.overrides = std::move(overrides);
    r.overrides.insert(r.overrides.end(), cli.set.begin(), cli.set.end());
    r.overrides.push_back("train.out_dir=" + r.run_dir);
    sweep.runs.push_back(std::move(r));
  };

  if (has_runs) {
    LATTE_REQUIRE(runs.IsSequence() && runs.size() > 0, path, ": runs must be a non-empty list of {name: ..., set: {...}}");
    for (size_t i = 0; i < runs.size(); ++i) {
      const std::string where = str("runs[", i, "]");
      LATTE_REQUIRE(runs[i].IsMap(), path, ": ", where, " must be a mapping with name: and set:");
      YamlReader r(runs[i], where, path);
      const std::string name = r.require<std::string>("name");
      LATTE_REQUIRE(valid_run_name(name), path, ": ", where, ".name '", name,
                    "' must be filesystem-safe: letters, digits and . _ + - (not first or last: . -)");
      const std::string run_base_written = r.get<std::string>("base", "");
      const std::string run_base = run_base_written.empty() ? base : resolve_path(path, run_base_written, where + ".base");
      std::vector<std::string> overrides;
      const std::string model_file = r.get<std::string>("model", "");
      if (!model_file.empty()) overrides.push_back(model_override(path, model_file, where + ".model"));
      overrides.insert(overrides.end(), common.begin(), common.end());
      for (const std::string& s : parse_set(r.raw("set"), path, where + ".set")) overrides.push_back(s);
      r.finish();
      add_run(name, run_base, std::move(overrides), where);
    }
  }

  if (has_grid) {
    LATTE_REQUIRE(grid.IsMap() && grid.size() > 0, path, ": grid must be a non-empty mapping of key.path: [values]");
    std::vector<std::string> keys;
    std::vector<std::vector<std::string>> values;
    for (const auto& kv : grid) {
      const std::string key = kv.first.as<std::string>();
      const std::string where = "grid." + key;
      LATTE_REQUIRE(valid_key_path(key), path, ": grid: '", key, "' is not a key path; write section.key (e.g. model.attention.kv_rank)");
      LATTE_REQUIRE(key != "train.out_dir", path, ": ", where, ": the sweep sets train.out_dir per run; vary out_dir instead");
      LATTE_REQUIRE(kv.second.IsSequence(), path, ": ", where, " must be a list of values, e.g. [32, 64, 128]");
      LATTE_REQUIRE(kv.second.size() > 0, path, ": ", where, " is an empty list: give at least one value");
      keys.push_back(key);
      values.emplace_back();
      for (const auto& v : kv.second) {
        LATTE_REQUIRE(v && !v.IsNull(), path, ": ", where, " has an empty value");
        values.back().push_back(value_text(v));
      }
    }
    // Cartesian product, first key varying slowest (like nested loops in key order).
    std::vector<size_t> index(keys.size(), 0);
    while (true) {
      std::vector<std::string> point_values, overrides = common;
      for (size_t k = 0; k < keys.size(); ++k) {
        point_values.push_back(values[k][index[k]]);
        overrides.push_back(keys[k] + "=" + values[k][index[k]]);
      }
      add_run(grid_point_name(keys, point_values), base, std::move(overrides), "grid");
      size_t k = keys.size();
      while (k > 0 && ++index[k - 1] == values[k - 1].size()) index[--k] = 0;
      if (k == 0) break;
    }
  }

  std::map<std::string, size_t> seen;
  for (size_t i = 0; i < sweep.runs.size(); ++i) {
    auto [it, fresh] = seen.emplace(sweep.runs[i].name, i);
    LATTE_REQUIRE(fresh, path, ": two runs are named '", sweep.runs[i].name,
                  "' (run names are directory names and must be unique; give each run its own name)");
  }
  return sweep;
}

std::vector<ExperimentConfig> resolve_sweep(const Sweep& sweep) {
  std::vector<ExperimentConfig> configs;
  std::string errors;
  int failed = 0;
  for (const SweepRun& run : sweep.runs) {
    try {
      configs.push_back(load_experiment(run.base, run.overrides));
    } catch (const Error& e) {
      if (++failed <= 8) errors += str("\n  run '", run.name, "': ", e.what());
      configs.emplace_back();
    }
  }
  if (failed > 8) errors += str("\n  ... and ", failed - 8, " more");
  LATTE_REQUIRE(failed == 0, sweep.source, ": ", failed, " of ", sweep.runs.size(), " runs have an invalid config:", errors);
  std::map<std::string, std::string> owner;  // checkpoint dir -> run
  for (size_t i = 0; i < configs.size(); ++i) {
    const std::string ckpt = fs::absolute(configs[i].checkpoint.dir).lexically_normal().string();
    auto [it, fresh] = owner.emplace(ckpt, sweep.runs[i].name);
    LATTE_REQUIRE(fresh, sweep.source, ": runs '", it->second, "' and '", sweep.runs[i].name, "' would share the checkpoint dir ",
                  configs[i].checkpoint.dir, "; drop checkpoint.dir from the config (it defaults to <out_dir>/ckpt)");
  }
  return configs;
}

// ---- progress ----------------------------------------------------------------------------------------

const char* run_state_name(RunState state) {
  switch (state) {
    case RunState::New: return "new";
    case RunState::Partial: return "partial";
    case RunState::Finished: return "finished";
  }
  return "?";
}

namespace {

std::vector<nlohmann::json> read_metrics_rows(const std::string& run_dir) {
  std::vector<nlohmann::json> rows;
  std::ifstream in(fs::path(run_dir) / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    if (line.empty()) continue;
    try {
      nlohmann::json row = nlohmann::json::parse(line);
      if (row.is_object() && row.contains("step")) rows.push_back(std::move(row));
    } catch (const std::exception&) {
      // A torn last line from a crash: the trainer drops it on resume too.
    }
  }
  return rows;
}

int64_t newest_checkpoint_step(const std::string& ckpt_dir) {
  const std::vector<std::string> complete = CheckpointStore(ckpt_dir).list_complete();
  if (complete.empty()) return -1;
  const std::string name = fs::path(complete.back()).filename().string();  // step_00000300
  return std::stoll(name.substr(name.find('_') + 1));
}

// The first key path where two YAML trees differ ("" when equal).
std::string first_difference(const YAML::Node& a, const YAML::Node& b, const std::string& path) {
  auto text = [](const YAML::Node& n) { return n && n.IsScalar() ? n.Scalar() : n && n.IsDefined() && !n.IsNull() ? "<section>" : "<absent>"; };
  if (a.IsMap() && b.IsMap()) {
    std::set<std::string> keys;
    for (const auto& kv : a) keys.insert(kv.first.as<std::string>());
    for (const auto& kv : b) keys.insert(kv.first.as<std::string>());
    for (const std::string& k : keys) {
      std::string d = first_difference(a[k], b[k], path + "." + k);
      if (!d.empty()) return d;
    }
    return "";
  }
  if (a.IsSequence() && b.IsSequence() && a.size() == b.size()) {
    for (size_t i = 0; i < a.size(); ++i) {
      std::string d = first_difference(a[i], b[i], str(path, "[", i, "]"));
      if (!d.empty()) return d;
    }
    return "";
  }
  if (a.IsScalar() && b.IsScalar() && a.Scalar() == b.Scalar()) return "";
  if (!a.IsDefined() && !b.IsDefined()) return "";
  return str(path, " (", text(a), " there, ", text(b), " now)");
}

}  // namespace

RunProgress inspect_run(const ExperimentConfig& cfg) {
  RunProgress p;
  p.steps = cfg.train.steps;
  const int64_t ckpt_step = newest_checkpoint_step(cfg.checkpoint.dir);
  const std::vector<nlohmann::json> rows = read_metrics_rows(cfg.train.out_dir);
  const int64_t metrics_step = rows.empty() ? 0 : rows.back()["step"].get<int64_t>();
  if (ckpt_step >= 0) {
    p.step = ckpt_step;
    p.state = ckpt_step >= p.steps ? RunState::Finished : RunState::Partial;
  } else if (metrics_step >= p.steps) {
    p.step = metrics_step;
    p.state = RunState::Finished;
  } else if (fs::exists(cfg.train.out_dir) &&
             (fs::exists(fs::path(cfg.train.out_dir) / "config.yaml") || !rows.empty() || fs::exists(cfg.checkpoint.dir))) {
    p.state = RunState::Partial;  // started, no checkpoint yet: --resume auto starts it again from step 0
  }
  return p;
}

RunMetrics read_run_metrics(const std::string& run_dir) {
  RunMetrics m;
  const std::vector<nlohmann::json> rows = read_metrics_rows(run_dir);
  if (rows.empty()) return m;
  m.last_step = rows.back()["step"].get<int64_t>();
  const size_t n = std::min<size_t>(10, rows.size());
  double sum = 0;
  for (size_t i = rows.size() - n; i < rows.size(); ++i) sum += rows[i].value("loss", 0.0);
  m.final_loss = sum / static_cast<double>(n);
  for (auto it = rows.rbegin(); it != rows.rend(); ++it)
    if (it->contains("val_loss")) {
      m.val_loss = (*it)["val_loss"].get<double>();
      break;
    }
  return m;
}

void check_run_dir_matches(const SweepRun& run, const ExperimentConfig& cfg) {
  const fs::path saved = fs::path(cfg.train.out_dir) / "config.yaml";
  if (!fs::exists(saved)) return;
  ModelConfig before;
  try {
    before = parse_model_config(YAML::LoadFile(saved.string())["model"], "model");
  } catch (const std::exception& e) {
    log::warn(saved.string(), ": cannot compare with the sweep's model (", e.what(), ")");
    return;
  }
  const std::string diff = first_difference(before.to_yaml(), cfg.model.to_yaml(), "model");
  LATTE_REQUIRE(diff.empty(), "run '", run.name, "': ", cfg.train.out_dir, " was trained with a different model: ", diff,
                "; move that directory away (or change the sweep's out_dir) to train the new config");
}

// ---- commands ----------------------------------------------------------------------------------------

std::vector<std::string> train_command(const SweepRun& run, const SweepOptions& options) {
  std::vector<std::string> argv;
  if (options.launcher == Launcher::Mpirun) {
    argv = options.mpirun;
    argv.push_back("-np");
    argv.push_back(std::to_string(options.np));
  }
  argv.push_back(options.exe.empty() ? "latte" : options.exe);
  argv.push_back("train");
  argv.push_back(run.base);
  for (const std::string& o : run.overrides) {
    argv.push_back("--set");
    argv.push_back(o);
  }
  argv.push_back("--resume");
  argv.push_back("auto");
  return argv;
}

std::string shell_join(const std::vector<std::string>& argv) {
  std::string out;
  for (const std::string& a : argv) {
    const bool plain = !a.empty() && std::all_of(a.begin(), a.end(), [](char c) {
      return std::isalnum(static_cast<unsigned char>(c)) || std::strchr("_./=:,+@%-", c) != nullptr;
    });
    if (!out.empty()) out += ' ';
    if (plain) {
      out += a;
      continue;
    }
    out += '\'';
    for (char c : a) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    out += '\'';
  }
  return out;
}

// ---- running -----------------------------------------------------------------------------------------

namespace {

std::atomic<bool> g_sweep_stop{false};
std::atomic<pid_t> g_child{0};

void on_sweep_signal(int sig) {
  g_sweep_stop.store(true);
  const pid_t child = g_child.load();
  // The trainer finishes its step, saves and exits 0; a repeated signal is harmless there.
  if (child > 0) kill(child, sig == SIGINT ? SIGINT : SIGTERM);
}

// Installs the sweep's SIGINT/SIGTERM handlers for its lifetime (no SA_RESTART: read() wakes up).
class SignalScope {
 public:
  SignalScope() {
    g_sweep_stop.store(false);
    struct sigaction sa {};
    sa.sa_handler = on_sweep_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, &old_int_);
    sigaction(SIGTERM, &sa, &old_term_);
  }
  ~SignalScope() {
    sigaction(SIGINT, &old_int_, nullptr);
    sigaction(SIGTERM, &old_term_, nullptr);
  }
  SignalScope(const SignalScope&) = delete;
  SignalScope& operator=(const SignalScope&) = delete;

 private:
  struct sigaction old_int_ {}, old_term_ {};
};

// An exclusive flock on <run_dir>/.sweep.lock, held while the run trains (inherited by the child, so
// the lock lives as long as the training process). Another sweep process skips a locked run.
class RunLock {
 public:
  explicit RunLock(const std::string& run_dir) {
    fs::create_directories(run_dir);
    const std::string path = (fs::path(run_dir) / ".sweep.lock").string();
    fd_ = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
    LATTE_REQUIRE(fd_ >= 0, path, ": cannot open the run lock: ", std::strerror(errno));
    held_ = ::flock(fd_, LOCK_EX | LOCK_NB) == 0;
  }
  ~RunLock() {
    if (fd_ >= 0) ::close(fd_);  // closing releases the flock
  }
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;
  bool held() const { return held_; }

 private:
  int fd_ = -1;
  bool held_ = false;
};

std::string now_text() {
  const std::time_t t = std::time(nullptr);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%d %H:%M:%S", std::localtime(&t));
  return buf;
}

// Runs argv as a child process; its stdout and stderr go to <run_dir>/train.log and (unless quiet)
// to this process's stdout. Returns a status text: "" on exit code 0, else what happened.
std::string run_subprocess(const std::vector<std::string>& argv, const std::string& run_dir, bool quiet) {
  const std::string log_path = (fs::path(run_dir) / "train.log").string();
  std::ofstream log_file(log_path, std::ios::app);
  LATTE_REQUIRE(log_file.good(), log_path, ": cannot open for writing");
  log_file << "=== latte sweep " << now_text() << ": " << shell_join(argv) << "\n";
  log_file.flush();
  std::fflush(stdout);
  int fds[2];
  LATTE_REQUIRE(::pipe(fds) == 0, "pipe: ", std::strerror(errno));
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t pid = ::fork();
  LATTE_REQUIRE(pid >= 0, "fork: ", std::strerror(errno));
  if (pid == 0) {
    ::dup2(fds[1], STDOUT_FILENO);
    ::dup2(fds[1], STDERR_FILENO);
    ::close(fds[0]);
    ::close(fds[1]);
    ::execvp(args[0], args.data());
    std::fprintf(stderr, "latte sweep: cannot run %s: %s\n", args[0], std::strerror(errno));
    ::_exit(127);
  }
  ::close(fds[1]);
  g_child.store(pid);
  if (g_sweep_stop.load()) ::kill(pid, SIGTERM);  // a signal that came before the child existed
  char buf[4096];
  while (true) {
    const ssize_t n = ::read(fds[0], buf, sizeof buf);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    log_file.write(buf, n);
    log_file.flush();
    if (!quiet) {
      std::fwrite(buf, 1, static_cast<size_t>(n), stdout);
      std::fflush(stdout);
    }
  }
  ::close(fds[0]);
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  g_child.store(0);
  if (WIFEXITED(status) && WEXITSTATUS(status) == 0) return "";
  if (WIFEXITED(status)) return str("failed (exit ", WEXITSTATUS(status), ")");
  return str("failed (signal ", WTERMSIG(status), ")");
}

std::string fixed(double v, int digits) {
  if (v < 0) return "-";
  std::ostringstream os;
  os << std::fixed << std::setprecision(digits) << v;
  return os.str();
}

struct Row {
  std::string name, status, step, loss, val, time;
};

void print_table(std::ostream& out, const std::vector<Row>& rows) {
  const std::vector<std::string> head = {"run", "status", "step", "loss (last 10)", "val loss", "time"};
  std::vector<size_t> w(head.size());
  for (size_t c = 0; c < head.size(); ++c) w[c] = head[c].size();
  auto cells = [](const Row& r) { return std::vector<std::string>{r.name, r.status, r.step, r.loss, r.val, r.time}; };
  for (const Row& r : rows) {
    const std::vector<std::string> cs = cells(r);
    for (size_t c = 0; c < cs.size(); ++c) w[c] = std::max(w[c], cs[c].size());
  }
  auto line = [&](const std::vector<std::string>& cs) {
    std::string s;
    for (size_t c = 0; c < cs.size(); ++c) {
      std::string cell = cs[c];
      cell.resize(w[c], ' ');
      s += (c ? "  " : "") + cell;
    }
    while (!s.empty() && s.back() == ' ') s.pop_back();
    out << s << "\n";
  };
  line(head);
  std::vector<std::string> rule;
  for (size_t c = 0; c < head.size(); ++c) rule.push_back(std::string(w[c], '-'));
  line(rule);
  for (const Row& r : rows) line(cells(r));
}

bool selected(const std::string& name, const std::vector<std::string>& only) {
  if (only.empty()) return true;
  return std::any_of(only.begin(), only.end(), [&](const std::string& p) { return ::fnmatch(p.c_str(), name.c_str(), 0) == 0; });
}

}  // namespace

int run_sweep(const Sweep& sweep, const SweepOptions& options, std::ostream& out) {
  LATTE_REQUIRE(options.launcher != Launcher::Mpirun || !options.exe.empty(),
                "--launcher mpirun needs the latte binary (run it from the latte CLI)");
  LATTE_REQUIRE(options.np >= 1, "--np must be >= 1, got ", options.np);
  for (const std::string& pattern : options.only) {
    const bool any = std::any_of(sweep.runs.begin(), sweep.runs.end(),
                                 [&](const SweepRun& r) { return ::fnmatch(pattern.c_str(), r.name.c_str(), 0) == 0; });
    if (any) continue;
    std::string names;
    for (const SweepRun& r : sweep.runs) names += (names.empty() ? "" : ", ") + r.name;
    LATTE_FAIL("--only ", pattern, " matches no run of ", sweep.source, "; its runs are: ", names);
  }

  // Validate everything before running anything.
  const std::vector<ExperimentConfig> configs = resolve_sweep(sweep);
  std::vector<size_t> chosen;
  for (size_t i = 0; i < sweep.runs.size(); ++i)
    if (selected(sweep.runs[i].name, options.only)) chosen.push_back(i);
  const bool printing = options.dry_run || options.launcher == Launcher::Print;
  for (size_t i : chosen) {
    const ExperimentConfig& cfg = configs[i];
    const int world = cfg.parallel.dp * cfg.parallel.tp;
    if (options.launcher == Launcher::Local)
      LATTE_REQUIRE(world == 1, "run '", sweep.runs[i].name, "' needs parallel.dp * parallel.tp = ", world,
                    " processes; use --launcher mpirun --np ", world);
    if (options.launcher == Launcher::Mpirun)
      LATTE_REQUIRE(world == options.np, "run '", sweep.runs[i].name, "' has parallel.dp * parallel.tp = ", world,
                    " but --np is ", options.np, "; pass --np ", world, " or --set parallel.dp=", options.np / cfg.parallel.tp);
    check_run_dir_matches(sweep.runs[i], cfg);
    if (!printing) {
      try {
        data::expand_globs(cfg.data.train, "data.train");
        if (!cfg.data.val.empty()) data::expand_globs(cfg.data.val, "data.val");
      } catch (const Error& e) {
        LATTE_FAIL("run '", sweep.runs[i].name, "': ", e.what(),
                   " (scripts/prepare_data.sh linux-doc makes data/linuxdoc/; other corpora: --set data.train=... --set data.val=...)");
      }
    }
  }

  out << "# sweep " << sweep.source << ": " << chosen.size() << " of " << sweep.runs.size() << " runs under "
      << sweep.out_dir << "\n";
  if (!sweep.description.empty()) out << "# " << sweep.description << "\n";

  std::vector<Row> rows;
  auto row_for = [&](size_t i, const std::string& status, const std::string& time) {
    const RunMetrics m = read_run_metrics(sweep.runs[i].run_dir);
    const RunProgress p = inspect_run(configs[i]);
    return Row{sweep.runs[i].name, status, str(std::max(p.step, m.last_step), "/", p.steps), fixed(m.final_loss, 4),
               fixed(m.val_loss, 4), time};
  };

  if (printing) {
    for (size_t i : chosen) {
      const RunProgress p = inspect_run(configs[i]);
      const std::string command = shell_join(train_command(sweep.runs[i], options));
      std::string state = p.state == RunState::New        ? "new"
                          : p.state == RunState::Partial ? str("resume from step ", p.step, " of ", p.steps)
                                                         : str("finished (step ", p.step, " of ", p.steps, "), skipped");
      out << "# " << sweep.runs[i].name << ": " << state << "\n";
      out << (p.state == RunState::Finished ? "# " : "") << command << "\n";
      rows.push_back(row_for(i, p.state == RunState::Finished ? "finished" : p.state == RunState::New ? "new" : "partial", ""));
    }
    out << "\n";
    print_table(out, rows);
    return 0;
  }

  // The manifest scripts/ablation_table.py reads to order its rows and name the sweep.
  {
    nlohmann::ordered_json manifest;
    manifest["sweep"] = sweep.source;
    manifest["description"] = sweep.description;
    manifest["out_dir"] = sweep.out_dir;
    manifest["runs"] = nlohmann::ordered_json::array();
    for (const SweepRun& r : sweep.runs)
      manifest["runs"].push_back({{"name", r.name}, {"base", r.base}, {"run_dir", r.run_dir}, {"overrides", r.overrides}});
    fs::create_directories(sweep.out_dir);
    write_file_atomic((fs::path(sweep.out_dir) / "sweep.json").string(), manifest.dump(2) + "\n");
  }

  SignalScope signals;
  const bool in_process = options.exe.empty();
  if (in_process) install_stop_signal_handlers();  // the trainer's own: it finishes the step and saves
  bool failed = false, stopped = false;
  for (size_t i : chosen) {
    const SweepRun& run = sweep.runs[i];
    const ExperimentConfig& cfg = configs[i];
    if (stopped) {
      rows.push_back(row_for(i, "not run (sweep stopped)", ""));
      continue;
    }
    RunProgress p = inspect_run(cfg);
    if (p.state == RunState::Finished) {
      out << "# " << run.name << ": finished (step " << p.step << " of " << p.steps << "), skipped\n";
      rows.push_back(row_for(i, "skipped (finished)", ""));
      continue;
    }
    RunLock lock(run.run_dir);
    if (!lock.held()) {
      out << "# " << run.name << ": another sweep process is training it, skipped\n";
      rows.push_back(row_for(i, "busy (other sweep)", ""));
      continue;
    }
    p = inspect_run(cfg);  // it may have finished while we waited for the lock
    if (p.state == RunState::Finished) {
      rows.push_back(row_for(i, "skipped (finished)", ""));
      continue;
    }
    const std::vector<std::string> argv = train_command(run, options);
    out << "# " << run.name << ": " << (p.state == RunState::New ? "starting" : str("resuming from step ", p.step)) << "\n"
        << shell_join(argv) << "\n";
    out.flush();
    const auto t0 = std::chrono::steady_clock::now();
    std::string problem;
    if (in_process) {
      try {
        TrainResult r = train(cfg, TrainOptions{"auto", options.quiet});
        if (r.interrupted && cfg.train.stop_after == 0) g_sweep_stop.store(true);  // a signal stopped it
      } catch (const std::exception& e) {
        problem = "failed";
        out << "# " << run.name << ": error: " << e.what() << "\n";
      }
    } else {
      problem = run_subprocess(argv, run.run_dir, options.quiet);
    }
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    p = inspect_run(cfg);
    std::string status = problem;
    if (status.empty())
      status = p.state == RunState::Finished ? "done" : str("stopped at step ", p.step);
    if (!problem.empty()) {
      failed = true;
      if (!in_process) out << "# " << run.name << ": " << problem << "; its log: " << run.run_dir << "/train.log\n";
    }
    if (g_sweep_stop.load()) {
      stopped = true;
      if (p.state != RunState::Finished && problem.empty()) status = str("interrupted at step ", p.step);
    }
    rows.push_back(row_for(i, status, format_duration(seconds)));
  }

  out << "\n# sweep " << sweep.source << " (" << sweep.out_dir << ")\n";
  print_table(out, rows);
  if (stopped) out << "stopped by a signal; run the same command again to resume\n";
  return failed || stopped ? 1 : 0;
}

}  // namespace latte
