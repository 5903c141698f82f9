// Importing a Hugging Face Llama-architecture checkpoint (Llama 2/3.x, SmolLM, TinyLlama, ...) into
// latte's `mha` kind (spec/upcycling.md: "Importing HF Llama-architecture weights"), and the model
// directory format that `latte import-hf` and `latte upcycle` both write:
//   <dir>/config.yaml         a `model:` section (usable as an experiment's base: file)
//   <dir>/model.safetensors   spec names, the same YAML embedded under `latte_model_config`, so
//                             `latte generate <dir>/model.safetensors` needs nothing else.
// HF's q/k rows are already in rotate-half order (latte's RoPE convention), so the mapping is a pure
// renaming plus vocabulary padding. Everything latte cannot represent is refused by its config key or
// tensor name, never silently approximated.
#pragma once
#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "layers/model_config.h"
#include "layers/safetensors.h"
#include "train/model_source.h"

namespace latte {

struct HfImportOptions {
  int64_t vocab_multiple = 64;  // pad the vocabulary with zero rows to a multiple of this
  std::string dtype;            // output dtype: "" keeps bf16/f32 (f16/f64 become f32), or "f32" / "bf16"
};

struct HfModel {
  ModelConfig config;                // latte model section (kind mha, vocabulary padded)
  int64_t hf_vocab_size = 0;         // the checkpoint's vocabulary before padding
  NamedTensors tensors;              // latte names, in TransformerLM parameter order
  std::vector<std::string> skipped;  // checkpoint tensors deliberately left out (rotary inv_freq, tied lm_head copy)
  std::string source;                // the checkpoint directory
};

// config.json -> latte model section. `where` names the file in errors. Refuses, naming the key:
// model_type not Llama-like, hidden_act other than silu, attention_bias / mlp_bias true, rope scaling
// other than llama3 (rope_scaling or transformers 5's rope_parameters), sliding windows, partial rotary.
// *hf_vocab_size receives the unpadded vocabulary.
ModelConfig hf_config_to_latte(const nlohmann::json& config, const std::string& where, int64_t vocab_multiple,
                               int64_t* hf_vocab_size);

// HF name -> latte name ("" when the name is not part of a Llama checkpoint). n_layers bounds the layer index.
std::string hf_to_latte_name(const std::string& hf_name, int64_t n_layers);

// Reads config.json and model.safetensors (or model.safetensors.index.json and its shards) from `dir`,
// checks every tensor's presence and shape against the config, and returns the latte-named tensors.
HfModel read_hf_checkpoint(const std::string& dir, const HfImportOptions& options = {});

// ---- the model directory format (import-hf and upcycle outputs) --------------------------------------
// Writes <dir>/config.yaml (`comment` lines first, as YAML comments) and <dir>/model.safetensors with
// the model section embedded under latte_model_config, plus `extra_metadata`.
void write_model_dir(const std::string& dir, const ModelConfig& config, const NamedTensors& tensors,
                     const std::string& comment, const std::map<std::string, std::string>& extra_metadata = {});

// Like resolve_model_source, and also accepts a directory written by write_model_dir (its
// model.safetensors with the embedded config, or its config.yaml when the file has none).
ModelSource resolve_model_dir(const std::string& path);

}  // namespace latte
