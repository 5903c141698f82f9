#include "train/model_source.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>

#include "core/error.h"
#include "layers/safetensors.h"
#include "layers/tp_layout.h"
#include "train/checkpoint_store.h"

namespace fs = std::filesystem;

namespace latte {

namespace {
constexpr const char* kConfigKey = "latte_model_config";

ModelConfig config_from_yaml_text(const std::string& text, const std::string& where) {
  YAML::Node root = YAML::Load(text);
  LATTE_REQUIRE(root["model"], where, ": no model: section");
  return parse_model_config(root["model"], where + ": model");
}
}  // namespace

ModelSource resolve_model_source(const std::string& path, const std::string& config_path) {
  LATTE_REQUIRE(fs::exists(path), path, ": not found (give a checkpoint directory, a run directory or a .safetensors file)");
  ModelSource src;
  if (fs::is_directory(path)) {
    std::string step_dir = path;
    if (!fs::exists(fs::path(path) / "COMPLETE")) {
      // A run directory (holding ckpt/) or a checkpoint directory (holding step_*).
      std::string ckpt_dir = fs::exists(fs::path(path) / "ckpt") ? (fs::path(path) / "ckpt").string() : path;
      auto latest = CheckpointStore(ckpt_dir).latest_valid();
      LATTE_REQUIRE(latest.has_value(), path, ": no complete checkpoint found under ", ckpt_dir);
      step_dir = *latest;
    }
    const std::string problem = CheckpointStore::verify(step_dir);
    LATTE_REQUIRE(problem.empty(), step_dir, ": unusable checkpoint: ", problem);
    const fs::path shard = fs::path(step_dir) / "model-tp0.safetensors";
    LATTE_REQUIRE(fs::exists(shard), step_dir, ": holds no model-tp0.safetensors");
    src.weights = shard.string();
    for (int r = 1; fs::exists(fs::path(step_dir) / ("model-tp" + std::to_string(r) + ".safetensors")); ++r) {
      if (src.tp_shards.empty()) src.tp_shards.push_back(shard.string());
      src.tp_shards.push_back((fs::path(step_dir) / ("model-tp" + std::to_string(r) + ".safetensors")).string());
    }
    src.config_yaml = read_file((fs::path(step_dir) / "config.yaml").string());
    src.config = config_from_yaml_text(src.config_yaml, (fs::path(step_dir) / "config.yaml").string());
    src.description = step_dir;
  } else {
    src.weights = path;
    src.description = path;
    if (!config_path.empty()) {
      src.config = load_model_config(config_path);
      src.config_yaml = read_file(config_path);
    } else {
      SafetensorsFile header = read_safetensors_header(path);
      auto it = header.metadata.find(kConfigKey);
      LATTE_REQUIRE(it != header.metadata.end(), path, ": has no embedded latte config; pass --config <model yaml>");
      src.config_yaml = it->second;
      src.config = config_from_yaml_text(it->second, path + " (embedded config)");
    }
  }
  return src;
}

NamedTensors read_source_weights(const ModelSource& source) {
  return source.tp_shards.empty() ? read_safetensors(source.weights).tensors : read_merged_tp_shards(source.tp_shards);
}

std::unique_ptr<TransformerLM> load_model(const ModelSource& source, Device device, DType dtype) {
  auto model = std::make_unique<TransformerLM>(source.config, 0, dtype, device);
  if (source.tp_shards.empty())
    load_state(*model, source.weights);
  else  // a tensor-parallel checkpoint: merge the shards into the full (tp = 1) weights
    load_state(*model, read_merged_tp_shards(source.tp_shards), source.description);
  return model;
}

Device resolve_device(const std::string& name) {
  if (name == "auto") return cuda_available() ? Device::cuda(0) : Device::cpu();
  Device d = Device::parse(name);
  LATTE_REQUIRE(!d.is_cuda() || cuda_available(), "--device ", name, ": no CUDA device is available");
  return d;
}

DType default_dtype(Device device) { return device.is_cuda() ? DType::BF16 : DType::F32; }

}  // namespace latte
