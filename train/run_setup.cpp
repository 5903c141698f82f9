#include "train/run_setup.h"

#include <sys/resource.h>

#include <cstdio>

#include "layers/transformer.h"

namespace latte {

RunSetup setup_run(const ExperimentConfig& cfg) {
  RunSetup run;
  const std::string& dev = cfg.train.device;
  if (dev == "auto")
    run.device = cuda_available() ? Device::cuda(0) : Device::cpu();
  else
    run.device = Device::parse(dev);
  LATTE_REQUIRE(!run.device.is_cuda() || cuda_available(), cfg.source, ": train.device = ", dev,
                " but no CUDA device is available; use train.device: auto or cpu");
  const std::string& dt = cfg.train.dtype;
  if (dt == "auto")
    run.dtype = run.device.is_cuda() ? DType::BF16 : DType::F32;
  else
    run.dtype = dtype_from_name(dt);
  LATTE_REQUIRE(!(run.device.is_cpu() && run.dtype == DType::BF16), cfg.source,
                ": train.dtype = bf16 needs a CUDA device; CPU kernels run in f32 or f64");
  LATTE_REQUIRE(cfg.parallel.dp * cfg.parallel.tp == 1, cfg.source, ": parallel.dp = ", cfg.parallel.dp, ", parallel.tp = ",
                cfg.parallel.tp, " need ", cfg.parallel.dp * cfg.parallel.tp,
                " processes; launch with mpirun -np N (multi-process training is not built yet in this version)");
  return run;
}

std::string rank_file(const std::string& kind, const RunSetup& run) {
  if (kind == "model") return "model-tp" + std::to_string(run.tp_rank) + ".safetensors";
  return kind + "-rank" + std::to_string(run.rank) + ".safetensors";
}

void check_world_shape(const nlohmann::json& state, const ExperimentConfig& cfg, const std::string& ckpt_dir) {
  const int dp = state.at("world").at("dp").get<int>(), tp = state.at("world").at("tp").get<int>();
  LATTE_REQUIRE(dp == cfg.parallel.dp && tp == cfg.parallel.tp, ckpt_dir, ": saved with dp = ", dp, ", tp = ", tp,
                " but this run has dp = ", cfg.parallel.dp, ", tp = ", cfg.parallel.tp,
                "; resume with the same parallel.dp and parallel.tp (resharding is not supported)");
}

std::string model_summary(const TransformerLM& model, const ExperimentConfig& cfg) {
  int64_t n = 0;
  for (const auto& [name, t] : model.named_parameters()) n += t.numel();
  char buf[96];
  std::snprintf(buf, sizeof(buf), "%s %.1fM params", attention_kind_name(cfg.model.attention.kind), static_cast<double>(n) / 1e6);
  return buf;
}

std::string memory_summary(Device device) {
  char buf[64];
  if (device.is_cuda()) {
    std::snprintf(buf, sizeof(buf), "%.1fG", static_cast<double>(cuda_memory_stats(device.index).peak_allocated) / (1 << 30));
  } else {
    struct rusage usage {};
    getrusage(RUSAGE_SELF, &usage);
    std::snprintf(buf, sizeof(buf), "%.2fG rss", static_cast<double>(usage.ru_maxrss) / (1 << 20));
  }
  return buf;
}

}  // namespace latte
