// `latte train <config.yaml> [--set a.b.c=value ...] [--resume auto|<ckpt dir>] [--stop-after N]`
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "apps/commands.h"
#include "core/log.h"
#include "train/experiment.h"
#include "train/trainer.h"

namespace latte::apps {

namespace {
void usage() {
  std::printf(
      "usage: latte train <config.yaml> [--set key.path=value ...] [--resume auto|<checkpoint dir>] [--stop-after N]\n"
      "  --set         override any config key (repeatable), e.g. --set train.steps=200 --set model.n_layers=4\n"
      "  --resume      auto: continue from the newest complete checkpoint in checkpoint.dir; or a step_XXXXXXXX dir\n"
      "  --stop-after  end this invocation after N steps with a checkpoint (the LR schedule is unchanged)\n");
}
}  // namespace

int cmd_train(int argc, char** argv) {
  std::string config_path, resume;
  std::vector<std::string> overrides;
  for (ArgCursor args(argc, argv); args.next();) {
    const std::string& a = args.arg();
    auto value = [&](const char*) { return args.value(); };
    if (args.is_help()) {
      usage();
      return 0;
    } else if (a == "--set") {
      overrides.push_back(value("--set"));
    } else if (a.rfind("--set=", 0) == 0) {
      overrides.push_back(a.substr(6));
    } else if (a == "--resume") {
      resume = value("--resume");
    } else if (a == "--stop-after") {
      overrides.push_back("train.stop_after=" + value("--stop-after"));
    } else if (a.rfind("--", 0) == 0) {
      LATTE_FAIL("unknown option ", a, " (see latte train --help)");
    } else {
      LATTE_REQUIRE(config_path.empty(), "more than one config file given: ", config_path, " and ", a);
      config_path = a;
    }
  }
  if (config_path.empty()) {
    usage();
    return 1;
  }
  ExperimentConfig cfg = load_experiment(config_path, overrides);
  log::info("# resolved config (", config_path, ")\n", YAML::Dump(cfg.resolved));
  install_stop_signal_handlers();
  TrainResult r = train(cfg, TrainOptions{resume, false});
  log::info("done: step ", r.last_step,
            r.last_loss >= 0 ? str(", train loss ", r.last_loss)
                             : std::string(", no step to run (the checkpoint is already at train.steps)"),
            r.last_val_loss >= 0 ? ", val loss " + std::to_string(r.last_val_loss) : std::string(),
            r.interrupted ? " (stopped early; resume with --resume auto)" : "");
  return 0;
}

}  // namespace latte::apps
