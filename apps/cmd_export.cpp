// `latte export <checkpoint|run dir> --out model.safetensors [--dtype bf16|f32]`: one safetensors file
// with the spec's parameter names and the model config embedded in its metadata, so that
// `latte generate model.safetensors` and PyTorch code following spec/attention.md can load it alone.
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <string>

#include "apps/cli.h"
#include "apps/commands.h"
#include "core/log.h"
#include "layers/safetensors.h"
#include "train/model_source.h"

namespace latte::apps {

int cmd_export(int argc, char** argv) {
  std::string source_path, out, dtype_name_arg;
  for (ArgCursor args(argc, argv); args.next();) {
    const std::string& a = args.arg();
    auto value = [&] { return args.value(); };
    if (args.is_help()) {
      std::printf("usage: latte export <checkpoint dir | run dir> --out model.safetensors [--dtype bf16|f32]\n");
      return 0;
    } else if (a == "--out") {
      out = value();
    } else if (a == "--dtype") {
      dtype_name_arg = value();
    } else if (a.rfind("--", 0) == 0) {
      LATTE_FAIL("unknown option ", a, " (see latte export --help)");
    } else {
      source_path = a;
    }
  }
  LATTE_REQUIRE(!source_path.empty() && !out.empty(), "usage: latte export <checkpoint dir> --out model.safetensors");
  ModelSource src = resolve_model_source(source_path);
  NamedTensors tensors = read_source_weights(src);  // TP shards merged
  if (!dtype_name_arg.empty()) {
    const DType target = dtype_from_name(dtype_name_arg);
    for (auto& [name, t] : tensors) t = t.to(target);
  }
  YAML::Node model_only;
  model_only["model"] = YAML::Load(src.config_yaml)["model"];
  write_safetensors(out, tensors, {{"latte_model_config", YAML::Dump(model_only)}, {"format", "pt"}});
  log::info("exported ", tensors.size(), " tensors from ", src.description, " to ", out);
  return 0;
}

}  // namespace latte::apps
