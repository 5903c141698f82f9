// `latte sweep <sweep.yaml>`: expands a sweep file (grid or named runs over a base experiment config)
// into one run directory and one `latte train ... --resume auto` command per point, validates them
// all, then prints or runs them (in sequence here, or under mpirun), skipping finished runs. The logic
// is in train/sweep.h; the format is documented in docs/ablations.md.
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "apps/commands.h"
#include "core/error.h"
#include "train/sweep.h"

namespace fs = std::filesystem;

namespace latte::apps {

namespace {

constexpr const char* kUsage =
    R"(usage: latte sweep <sweep.yaml> [--dry-run] [--launcher local|mpirun|print] [--np N] [--only NAME]
                   [--set key.path=value ...] [--out-dir DIR] [--in-process] [--mpirun-args "ARGS"] [--quiet]
  Runs every point of a sweep (grid: or runs: over a base experiment config) as
  `latte train <base> --set ... --set train.out_dir=<out_dir>/<name> --resume auto`.
  Finished runs are skipped, interrupted ones resumed; a summary table ends the output.
  --dry-run         print each run's state and command; run nothing
  --launcher L      local (default): one run after another on this machine, each a child process of
                    this binary (logs also go to <run dir>/train.log); mpirun: each run under
                    `mpirun -np N`; print: print the commands (like --dry-run)
  --np N            processes per run for --launcher mpirun (= parallel.dp * parallel.tp of the runs)
  --only NAME       run only this run (repeatable or comma-separated; shell globs such as 'egmla-*')
  --set k=v         override a config key in every run (repeatable; wins over the sweep file),
                    e.g. --set data.train='data/kjv/kjv_train_*.bin' --set data.val='data/kjv/kjv_val_*.bin'
  --out-dir DIR     root of the run directories instead of the file's out_dir
  --in-process      local launcher: train in this process instead of child processes
  --mpirun-args A   extra arguments after `mpirun` (split at spaces), e.g. "--bind-to none"
  --quiet           do not echo the training logs (they still go to <run dir>/train.log)
Several `latte sweep` processes on the same file (e.g. one per GPU with CUDA_VISIBLE_DEVICES) share the
work: a run being trained is locked and the others move on to the next one.
)";

std::vector<std::string> split(const std::string& text, char sep) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string part; std::getline(ss, part, sep);)
    if (!part.empty()) out.push_back(part);
  return out;
}

// This binary, relative to the current directory when it lies below it (build/latte), so that the
// printed commands can be pasted on another checkout.
std::string self_exe() {
  char buf[PATH_MAX];
  const ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  LATTE_REQUIRE(n > 0, "cannot find this binary through /proc/self/exe; use --in-process");
  const fs::path exe(std::string(buf, static_cast<size_t>(n)));
  std::error_code ec;
  const fs::path rel = fs::relative(exe, fs::current_path(), ec);
  if (ec || rel.empty() || *rel.begin() == "..") return exe.string();
  return rel.has_parent_path() ? rel.string() : "./" + rel.string();
}

}  // namespace

int cmd_sweep(int argc, char** argv) {
  std::string sweep_path, launcher = "local";
  SweepCliOverrides cli;
  SweepOptions options;
  bool in_process = false;
  for (ArgCursor args(argc, argv, kUsage); args.next();) {
    const std::string& a = args.arg();
    auto value = [&] { return args.value(); };
    if (args.is_help()) {
      std::printf("%s", kUsage);
      return 0;
    } else if (a == "--dry-run") {
      options.dry_run = true;
    } else if (a == "--launcher") {
      launcher = value();
    } else if (a == "--np") {
      const std::string v = value();
      char* end = nullptr;
      const long np = std::strtol(v.c_str(), &end, 10);
      LATTE_REQUIRE(end && *end == '\0' && np >= 1, "--np expects a positive integer, got '", v, "'");
      options.np = static_cast<int>(np);
    } else if (a == "--only") {
      for (const std::string& name : split(value(), ',')) options.only.push_back(name);
    } else if (a == "--set") {
      cli.set.push_back(value());
    } else if (a.rfind("--set=", 0) == 0) {
      cli.set.push_back(a.substr(6));
    } else if (a == "--out-dir") {
      cli.out_dir = value();
    } else if (a == "--in-process") {
      in_process = true;
    } else if (a == "--mpirun-args") {
      for (const std::string& arg : split(value(), ' ')) options.mpirun.push_back(arg);
    } else if (a == "--quiet") {
      options.quiet = true;
    } else if (a.rfind("--", 0) == 0) {
      LATTE_FAIL("unknown option ", a, "\n", kUsage);
    } else {
      LATTE_REQUIRE(sweep_path.empty(), "one sweep file at a time (got ", sweep_path, " and ", a, ")");
      sweep_path = a;
    }
  }
  if (sweep_path.empty()) {
    std::printf("%s", kUsage);
    return 1;
  }
  if (launcher == "local") options.launcher = Launcher::Local;
  else if (launcher == "mpirun") options.launcher = Launcher::Mpirun;
  else if (launcher == "print") options.launcher = Launcher::Print;
  else LATTE_FAIL("--launcher must be local, mpirun or print, got '", launcher, "'");
  LATTE_REQUIRE(!(in_process && options.launcher == Launcher::Mpirun), "--in-process cannot be combined with --launcher mpirun");
  LATTE_REQUIRE(options.np == 1 || options.launcher == Launcher::Mpirun, "--np is for --launcher mpirun");
  if (!in_process) options.exe = self_exe();

  const Sweep sweep = load_sweep(sweep_path, cli);
  return run_sweep(sweep, options, std::cout);
}

}  // namespace latte::apps
