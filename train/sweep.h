// Sweeps behind `latte sweep`: one YAML file names a base experiment config, an output root and
// either a grid of values (cartesian product) or a list of named runs; each point becomes one run
// directory <out_dir>/<name> and one `latte train <base> --set ... --resume auto` command. Every
// point's config is validated before anything runs; finished runs are skipped and interrupted ones
// resumed, so re-running a sweep after a crash or Ctrl-C continues where it stopped. Runs hold a
// lock on their directory while training, so several sweep processes (one per GPU) can share a
// sweep file and each takes the next free run. docs/ablations.md documents the file format.
#pragma once
#include <cstdint>
#include <iosfwd>
#include <string>
#include <vector>

#include "train/experiment.h"

namespace latte {

// One point of a sweep, fully expanded.
struct SweepRun {
  std::string name;                    // stable, filesystem-safe; the run directory's name
  std::string base;                    // experiment config the run starts from (path as the command uses it)
  std::vector<std::string> overrides;  // key.path=value in order: sweep set, model:, run set / grid values,
                                       // command-line --set, and last train.out_dir=<run_dir>
  std::string run_dir;                 // <out_dir>/<name>
};

struct Sweep {
  std::string source;                  // the sweep file
  std::string description;             // optional free text (description: key)
  std::string out_dir;                 // root of the run directories
  std::vector<SweepRun> runs;          // runs: entries first, then grid points (first key varies slowest)
};

// Extra settings from the command line of `latte sweep`.
struct SweepCliOverrides {
  std::vector<std::string> set;        // appended to every run after the file's overrides (the command line wins)
  std::string out_dir;                 // replaces the file's out_dir when not empty
};

// Parses and expands a sweep file. Errors (unknown keys, an empty grid, a bad run name, duplicate
// names, an override of train.out_dir) name the file and the key. Does not load the run configs:
// resolve_sweep() does.
Sweep load_sweep(const std::string& path, const SweepCliOverrides& cli = {});

// Loads every run's experiment config (base + overrides) with load_experiment: an unknown key path or
// a bad value is reported with the run's name. Also checks that runs do not share an output or
// checkpoint directory.
std::vector<ExperimentConfig> resolve_sweep(const Sweep& sweep);

// "kind-mla_kv_rank-128" for {model.attention.kind: mla, model.attention.kv_rank: 128}: the last
// component of each key path (more components when two keys would otherwise collide), '-', the value
// made filesystem-safe; pairs joined by '_'.
std::string grid_point_name(const std::vector<std::string>& keys, const std::vector<std::string>& values);

// ---- progress of a run directory -------------------------------------------------------------------
enum class RunState { New, Partial, Finished };
const char* run_state_name(RunState state);  // "new", "partial", "finished"

struct RunProgress {
  RunState state = RunState::New;
  int64_t step = 0;                    // steps done: the newest complete checkpoint (else metrics.jsonl's last step)
  int64_t steps = 0;                   // train.steps of the config
};

// Finished when the newest complete checkpoint is at train.steps or later, or (with no checkpoint at
// all, e.g. deleted to save disk) when metrics.jsonl's last step is; Partial when anything of the run
// exists (it is resumed with --resume auto); New otherwise.
RunProgress inspect_run(const ExperimentConfig& cfg);

// What metrics.jsonl says about a run: the mean train loss of the last 10 steps and the last val loss.
struct RunMetrics {
  int64_t last_step = 0;
  double final_loss = -1;              // -1 when there are no rows
  double val_loss = -1;                // -1 when no validation ran
};
RunMetrics read_run_metrics(const std::string& run_dir);

// Refuses a run directory that was trained with a different model than the sweep now asks for
// (skipping it would report stale results; resuming it would fail on shapes): the message names the
// first differing key. Nothing to check when the directory has no config.yaml.
void check_run_dir_matches(const SweepRun& run, const ExperimentConfig& cfg);

// ---- running ---------------------------------------------------------------------------------------
enum class Launcher { Print, Local, Mpirun };

struct SweepOptions {
  Launcher launcher = Launcher::Local;
  bool dry_run = false;                // print the commands (with each run's state) and run nothing
  int np = 1;                          // mpirun -np
  std::vector<std::string> mpirun = {"mpirun"};  // launcher prefix; "-np N" is appended
  std::string exe;                     // latte binary for subprocesses; empty = train in this process (local only)
  std::vector<std::string> only;       // run names or glob patterns to keep (empty = all)
  bool quiet = false;                  // in-process training without console lines (tests)
};

// The argv of one run: [mpirun -np N] exe train <base> --set ... --resume auto.
std::vector<std::string> train_command(const SweepRun& run, const SweepOptions& options);
// Joins argv for a POSIX shell, quoting what needs it (globs, spaces, braces).
std::string shell_join(const std::vector<std::string>& argv);

// Runs (or prints) the sweep. Writes <out_dir>/sweep.json (the runs in order, for
// scripts/ablation_table.py), and a summary table at the end. Returns the exit code: 0 when every
// selected run is finished or was printed, 1 when one failed or the sweep was stopped.
int run_sweep(const Sweep& sweep, const SweepOptions& options, std::ostream& out);

}  // namespace latte
