#include "train/run_setup.h"

#include <sys/resource.h>

#include <cstdio>

#include "core/log.h"
#include "distributed/topology.h"
#include "distributed/world.h"
#include "layers/transformer.h"

namespace latte {

dist::World& process_world() {
  static dist::World world;
  return world;
}

dist::ProcessGroup* RunSetup::dp_group() const { return topology ? topology->dp_group().get() : nullptr; }
dist::ProcessGroup* RunSetup::world_group() const { return topology ? topology->world_group().get() : nullptr; }
void RunSetup::barrier() const {
  if (topology) topology->world_group()->barrier();
}

RunSetup setup_run(const ExperimentConfig& cfg, bool local_only) {
  RunSetup run;
  const std::string& dev = cfg.train.device;
  const bool multi = !local_only && (cfg.parallel.dp * cfg.parallel.tp > 1 || process_world().size() > 1);
  if (dev == "auto")
    run.device = cuda_available() ? Device::cuda(0) : Device::cpu();
  else
    run.device = Device::parse(dev);
  if (multi && run.device.is_cuda()) run.device = process_world().select_device(DeviceType::CUDA);  // GPU = local rank
  LATTE_REQUIRE(!run.device.is_cuda() || cuda_available(), cfg.source, ": train.device = ", dev,
                " but no CUDA device is available; use train.device: auto or cpu");
  const std::string& dt = cfg.train.dtype;
  if (dt == "auto")
    run.dtype = run.device.is_cuda() ? DType::BF16 : DType::F32;
  else
    run.dtype = dtype_from_name(dt);
  LATTE_REQUIRE(!(run.device.is_cpu() && run.dtype == DType::BF16), cfg.source,
                ": train.dtype = bf16 needs a CUDA device; CPU kernels run in f32 or f64");
  if (!multi) return run;
  dist::World& world = process_world();
  run.topology = std::make_shared<dist::Topology>(world, cfg.parallel.dp, cfg.parallel.tp, run.device);
  run.world_size = world.size();
  run.rank = world.rank();
  run.dp_rank = run.topology->dp_rank();
  run.tp_rank = run.topology->tp_rank();
  run.is_logging_rank = world.rank() == 0;
  log::set_rank(world.rank());
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
