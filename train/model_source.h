// Finding a trained model on disk for generate / eval / export. A source is one of:
//   - a checkpoint step directory (ckpt/step_XXXXXXXX/ with config.yaml and model-tp*.safetensors),
//   - a checkpoint directory or run directory (its newest valid checkpoint is used),
//   - a .safetensors file written by `latte export` (the config travels in its metadata), or any
//     .safetensors with spec names plus an explicit config YAML.
#pragma once
#include <memory>
#include <string>

#include "layers/model_config.h"
#include "layers/safetensors.h"
#include "layers/transformer.h"

namespace latte {

struct ModelSource {
  std::string weights;        // the safetensors file to load (the TP rank-0 shard of a TP checkpoint)
  std::vector<std::string> tp_shards;  // model-tp0..N-1 of a tensor-parallel checkpoint (merged on load)
  std::string description;    // what was resolved, for logs
  ModelConfig config;
  std::string config_yaml;    // the model: section as YAML text (embedded by export)
};

// config_path may be empty unless `path` is a bare safetensors without embedded config.
ModelSource resolve_model_source(const std::string& path, const std::string& config_path = "");

// The full (TP-merged) weights of a source, on the CPU.
NamedTensors read_source_weights(const ModelSource& source);

// Builds the model on device/dtype and loads the weights (names, shapes, dtypes checked).
std::unique_ptr<TransformerLM> load_model(const ModelSource& source, Device device, DType dtype);

// Default device/dtype for inference commands: "auto" -> CUDA + bf16 when available, else CPU + f32.
Device resolve_device(const std::string& name);
DType default_dtype(Device device);

}  // namespace latte
