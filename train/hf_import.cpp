// HF Llama checkpoint import and the model directory format (train/hf_import.h).
// The config translation is strict on purpose: a key latte would silently ignore (a bias, a sliding
// window, another rope scaling) would give a model whose logits differ from the original's, so it
// is refused by name with what to do instead.
#include "train/hf_import.h"

#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "core/error.h"
#include "train/checkpoint_store.h"

namespace fs = std::filesystem;

namespace latte {

namespace {

constexpr const char* kConfigKey = "latte_model_config";

using json = nlohmann::json;

bool present(const json& cfg, const char* key) { return cfg.contains(key) && !cfg.at(key).is_null(); }

int64_t get_int(const json& cfg, const char* key, const std::string& where, const int64_t* fallback = nullptr) {
  if (!present(cfg, key)) {
    LATTE_REQUIRE(fallback, where, ": ", key, " is missing (a Llama config.json has it)");
    return *fallback;
  }
  const json& v = cfg.at(key);
  const bool integral = v.is_number_integer() || (v.is_number_float() && std::floor(v.get<double>()) == v.get<double>());
  LATTE_REQUIRE(integral, where, ": ", key, " must be an integer, got ", v.dump());
  return v.is_number_integer() ? v.get<int64_t>() : static_cast<int64_t>(v.get<double>());
}

double get_real(const json& cfg, const char* key, const std::string& where, double fallback) {
  if (!present(cfg, key)) return fallback;
  const json& v = cfg.at(key);
  LATTE_REQUIRE(v.is_number(), where, ": ", key, " must be a number, got ", v.dump());
  return v.get<double>();
}

bool get_bool(const json& cfg, const char* key, const std::string& where, bool fallback) {
  if (!present(cfg, key)) return fallback;
  const json& v = cfg.at(key);
  LATTE_REQUIRE(v.is_boolean(), where, ": ", key, " must be true or false, got ", v.dump());
  return v.get<bool>();
}

std::string get_text(const json& cfg, const char* key, const std::string& fallback) {
  if (!present(cfg, key)) return fallback;
  const json& v = cfg.at(key);
  return v.is_string() ? v.get<std::string>() : v.dump();
}

// Fills the rope fields: rope_theta and a llama3 rescaling from either transformers 4's
// rope_theta + rope_scaling or transformers 5's rope_parameters {rope_theta, rope_type, ...}.
void read_rope(const json& cfg, const std::string& where, ModelConfig* out) {
  const char* params_key = present(cfg, "rope_parameters") ? "rope_parameters" : "rope_scaling";
  json params = present(cfg, params_key) ? cfg.at(params_key) : json::object();
  LATTE_REQUIRE(params.is_object(), where, ": ", params_key, " must be an object, got ", params.dump());
  // transformers 5 may key rope_parameters by layer type ({"full_attention": {...}}) for hybrid models.
  if (params.contains("full_attention") && params.at("full_attention").is_object()) {
    LATTE_REQUIRE(params.size() == 1, where, ": ", params_key, " has per-layer-type entries ", params.dump(),
                  "; latte represents one rotary setting for every layer");
    params = params.at("full_attention");
  }
  out->rope_base = present(cfg, "rope_theta") ? get_real(cfg, "rope_theta", where, 10000.0)
                                              : get_real(params, "rope_theta", where + " " + params_key, 10000.0);
  const std::string type = present(params, "rope_type") ? get_text(params, "rope_type", "") : get_text(params, "type", "default");
  const std::string key = std::string(params_key) + ".rope_type";
  if (type == "default") return;
  LATTE_REQUIRE(type == "llama3", where, ": ", key, " is '", type,
                "'; latte implements only plain RoPE and the llama3 rescaling (linear, dynamic, yarn, longrope... are not "
                "represented)");
  const std::string pwhere = where + " " + params_key;
  out->rope_scaling.enabled = true;
  auto need = [&](const char* k) {
    LATTE_REQUIRE(present(params, k), pwhere, ": llama3 rope scaling needs ", k);
    return get_real(params, k, pwhere, 0);
  };
  out->rope_scaling.factor = need("factor");
  out->rope_scaling.low_freq_factor = need("low_freq_factor");
  out->rope_scaling.high_freq_factor = need("high_freq_factor");
  out->rope_scaling.original_max_position_embeddings = get_int(params, "original_max_position_embeddings", pwhere);
}

// HF name (after "model.layers.<i>.") -> latte name (after "layers.<i>.").
const std::map<std::string, std::string> kLayerNames = {
    {"self_attn.q_proj.weight", "attn.wq.weight"},  {"self_attn.k_proj.weight", "attn.wk.weight"},
    {"self_attn.v_proj.weight", "attn.wv.weight"},  {"self_attn.o_proj.weight", "attn.wo.weight"},
    {"mlp.gate_proj.weight", "mlp.w_gate.weight"},  {"mlp.up_proj.weight", "mlp.w_up.weight"},
    {"mlp.down_proj.weight", "mlp.w_down.weight"},  {"input_layernorm.weight", "attn_norm.weight"},
    {"post_attention_layernorm.weight", "mlp_norm.weight"}};

// The inverse mapping, for messages about missing tensors.
std::string latte_to_hf_name(const std::string& name) {
  if (name == "tok_embed.weight") return "model.embed_tokens.weight";
  if (name == "final_norm.weight") return "model.norm.weight";
  if (name == "lm_head.weight") return name;
  const size_t dot = name.find('.', 7);  // after "layers."
  for (const auto& [hf, latte] : kLayerNames)
    if (name.compare(dot + 1, std::string::npos, latte) == 0) return "model.layers." + name.substr(7, dot - 7) + "." + hf;
  return name;
}

// Expected latte parameter names and shapes of an imported (mha) model, in TransformerLM order.
std::vector<std::pair<std::string, Shape>> expected_parameters(const ModelConfig& c) {
  const int64_t V = c.vocab_size, d = c.d_model, f = c.ffn_dim;
  const AttentionConfig& a = c.attention;
  std::vector<std::pair<std::string, Shape>> out;
  out.push_back({"tok_embed.weight", Shape{V, d}});
  for (int64_t i = 0; i < c.n_layers; ++i) {
    const std::string p = "layers." + std::to_string(i) + ".";
    out.push_back({p + "attn_norm.weight", Shape{d}});
    out.push_back({p + "attn.wq.weight", Shape{a.n_heads * a.head_dim, d}});
    out.push_back({p + "attn.wk.weight", Shape{a.n_kv_heads * a.head_dim, d}});
    out.push_back({p + "attn.wv.weight", Shape{a.n_kv_heads * a.head_dim, d}});
    out.push_back({p + "attn.wo.weight", Shape{d, a.n_heads * a.head_dim}});
    out.push_back({p + "mlp_norm.weight", Shape{d}});
    out.push_back({p + "mlp.w_gate.weight", Shape{f, d}});
    out.push_back({p + "mlp.w_up.weight", Shape{f, d}});
    out.push_back({p + "mlp.w_down.weight", Shape{d, f}});
  }
  out.push_back({"final_norm.weight", Shape{d}});
  if (!c.tie_embeddings) out.push_back({"lm_head.weight", Shape{V, d}});
  return out;
}

// Every tensor of the checkpoint by HF name, with the file it came from.
struct HfTensors {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> file_of;
};

HfTensors read_hf_tensors(const std::string& dir) {
  HfTensors out;
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::vector<std::string> files;
  std::map<std::string, std::string> weight_map;  // name -> shard file (sharded checkpoints)
  if (fs::exists(index)) {
    json idx;
    try {
      idx = json::parse(read_file(index.string()));
    } catch (const json::exception& e) {
      LATTE_FAIL(index.string(), ": not valid JSON: ", e.what());
    }
    LATTE_REQUIRE(idx.is_object() && idx.contains("weight_map") && idx.at("weight_map").is_object(), index.string(),
                  ": has no weight_map object (expected {\"weight_map\": {tensor name: shard file}})");
    std::set<std::string> seen;
    for (const auto& [name, file] : idx.at("weight_map").items()) {
      LATTE_REQUIRE(file.is_string(), index.string(), ": weight_map.", name, " must be a file name, got ", file.dump());
      weight_map[name] = file.get<std::string>();
      if (seen.insert(file.get<std::string>()).second) files.push_back(file.get<std::string>());
    }
    LATTE_REQUIRE(!files.empty(), index.string(), ": weight_map is empty");
  } else {
    LATTE_REQUIRE(fs::exists(single), dir, ": holds neither model.safetensors nor model.safetensors.index.json (PyTorch .bin "
                                           "checkpoints are not read: re-save with save_pretrained(..., safe_serialization=True))");
    files.push_back("model.safetensors");
  }
  for (const std::string& file : files) {
    const fs::path path = fs::path(dir) / file;
    LATTE_REQUIRE(fs::exists(path), path.string(), ": shard named in model.safetensors.index.json is missing");
    SafetensorsFile st = read_safetensors(path.string());
    for (auto& [name, t] : st.tensors) {
      if (!weight_map.empty()) {
        auto it = weight_map.find(name);
        if (it == weight_map.end() || it->second != file) continue;  // the index is authoritative
      }
      LATTE_REQUIRE(!out.tensors.count(name), path.string(), ": tensor ", name, " also appears in ", out.file_of[name]);
      out.tensors[name] = t;
      out.file_of[name] = path.string();
    }
  }
  for (const auto& [name, file] : weight_map)
    LATTE_REQUIRE(out.tensors.count(name), (fs::path(dir) / file).string(), ": holds no tensor ", name,
                  " although model.safetensors.index.json says it does");
  return out;
}

DType output_dtype(const HfImportOptions& options, DType source) {
  if (!options.dtype.empty()) {
    const DType d = dtype_from_name(options.dtype);
    LATTE_REQUIRE(d == DType::F32 || d == DType::BF16, "--dtype ", options.dtype, ": import writes f32 or bf16");
    return d;
  }
  return source == DType::BF16 ? DType::BF16 : DType::F32;
}

std::string yaml_comment(const std::string& text) {
  std::string out, line;
  for (char ch : text) {
    if (ch == '\n') {
      out += "# " + line + "\n";
      line.clear();
    } else {
      line += ch;
    }
  }
  if (!line.empty()) out += "# " + line + "\n";
  return out;
}

}  // namespace

ModelConfig hf_config_to_latte(const json& cfg, const std::string& where, int64_t vocab_multiple, int64_t* hf_vocab_size) {
  LATTE_REQUIRE(cfg.is_object(), where, ": the top level must be a JSON object");
  // Architecture: Llama and the configs that share its tensors and math (Mistral without a window).
  const std::string model_type = get_text(cfg, "model_type", "");
  static const std::set<std::string> kLlamaLike = {"llama", "mistral"};
  bool llama_arch = kLlamaLike.count(model_type) > 0;
  if (model_type.empty() && present(cfg, "architectures") && cfg.at("architectures").is_array())
    for (const json& a : cfg.at("architectures"))
      llama_arch = llama_arch || (a.is_string() && (a.get<std::string>() == "LlamaForCausalLM" || a.get<std::string>() == "MistralForCausalLM"));
  LATTE_REQUIRE(llama_arch, where, ": model_type is '", model_type.empty() ? std::string("(absent)") : model_type,
                "'; latte imports Llama-architecture checkpoints (model_type llama or mistral)");
  LATTE_REQUIRE(!present(cfg, "quantization_config"), where,
                ": quantization_config is set; import the unquantized (bf16/f16/f32) checkpoint instead");
  const std::string act = get_text(cfg, "hidden_act", "silu");
  LATTE_REQUIRE(act == "silu" || act == "swish", where, ": hidden_act is '", act, "'; latte's MLP is SwiGLU (silu)");
  LATTE_REQUIRE(!get_bool(cfg, "attention_bias", where, false), where,
                ": attention_bias is true; latte's attention projections have no biases");
  LATTE_REQUIRE(!get_bool(cfg, "mlp_bias", where, false), where, ": mlp_bias is true; latte's MLP has no biases");
  for (const char* key : {"sliding_window", "use_sliding_window"}) {
    if (!present(cfg, key)) continue;
    const json& v = cfg.at(key);
    LATTE_REQUIRE(v.is_boolean() && !v.get<bool>(), where, ": ", key, " is ", v.dump(),
                  "; latte attends over the whole causal context (no sliding window)");
  }
  if (present(cfg, "partial_rotary_factor"))
    LATTE_REQUIRE(get_real(cfg, "partial_rotary_factor", where, 1.0) == 1.0, where, ": partial_rotary_factor is ",
                  cfg.at("partial_rotary_factor").dump(), "; latte's MHA rotates the whole head");

  ModelConfig c;
  const int64_t vocab = get_int(cfg, "vocab_size", where);
  LATTE_REQUIRE(vocab > 0 && vocab_multiple > 0, where, ": vocab_size must be positive, got ", vocab);
  if (hf_vocab_size) *hf_vocab_size = vocab;
  c.vocab_size = (vocab + vocab_multiple - 1) / vocab_multiple * vocab_multiple;
  c.d_model = get_int(cfg, "hidden_size", where);
  c.n_layers = get_int(cfg, "num_hidden_layers", where);
  c.ffn_dim = get_int(cfg, "intermediate_size", where);
  c.norm_eps = get_real(cfg, "rms_norm_eps", where, 1e-6);
  const int64_t default_positions = 2048;  // LlamaConfig's default
  c.max_seq_len = get_int(cfg, "max_position_embeddings", where, &default_positions);
  c.tie_embeddings = get_bool(cfg, "tie_word_embeddings", where, false);  // LlamaConfig's default is untied
  c.init.std = get_real(cfg, "initializer_range", where, 0.02);
  read_rope(cfg, where, &c);

  AttentionConfig& a = c.attention;
  a.kind = AttentionKind::MHA;
  a.n_heads = get_int(cfg, "num_attention_heads", where);
  LATTE_REQUIRE(a.n_heads > 0, where, ": num_attention_heads must be positive, got ", a.n_heads);
  a.n_kv_heads = get_int(cfg, "num_key_value_heads", where, &a.n_heads);
  LATTE_REQUIRE(present(cfg, "head_dim") || c.d_model % a.n_heads == 0, where, ": hidden_size ", c.d_model,
                " is not a multiple of num_attention_heads ", a.n_heads, " and head_dim is absent");
  const int64_t default_head = c.d_model / a.n_heads;
  a.head_dim = get_int(cfg, "head_dim", where, &default_head);
  try {
    c.validate("model (from " + where + ")");
  } catch (const Error& e) {
    LATTE_FAIL(where, ": the config does not describe a model latte can build: ", e.what());
  }
  return c;
}

std::string hf_to_latte_name(const std::string& hf, int64_t n_layers) {
  if (hf == "model.embed_tokens.weight") return "tok_embed.weight";
  if (hf == "model.norm.weight") return "final_norm.weight";
  if (hf == "lm_head.weight") return "lm_head.weight";
  const std::string prefix = "model.layers.";
  if (hf.rfind(prefix, 0) != 0) return "";
  const size_t dot = hf.find('.', prefix.size());
  if (dot == std::string::npos || dot == prefix.size()) return "";
  const std::string index = hf.substr(prefix.size(), dot - prefix.size());
  if (!std::all_of(index.begin(), index.end(), [](char ch) { return ch >= '0' && ch <= '9'; }) || index.size() > 6) return "";
  const int64_t layer = std::stoll(index);
  if (layer >= n_layers || std::to_string(layer) != index) return "";
  auto it = kLayerNames.find(hf.substr(dot + 1));
  return it == kLayerNames.end() ? "" : "layers." + index + "." + it->second;
}

HfModel read_hf_checkpoint(const std::string& dir, const HfImportOptions& options) {
  LATTE_REQUIRE(fs::is_directory(dir), dir, ": not a directory (give the folder holding config.json and model.safetensors)");
  const fs::path config_path = fs::path(dir) / "config.json";
  LATTE_REQUIRE(fs::exists(config_path), dir, ": has no config.json");
  json cfg;
  try {
    cfg = json::parse(read_file(config_path.string()));
  } catch (const json::exception& e) {
    LATTE_FAIL(config_path.string(), ": not valid JSON: ", e.what());
  }
  HfModel out;
  out.source = dir;
  out.config = hf_config_to_latte(cfg, config_path.string(), options.vocab_multiple, &out.hf_vocab_size);
  const ModelConfig& c = out.config;

  HfTensors hf = read_hf_tensors(dir);
  std::map<std::string, std::pair<std::string, Tensor>> by_latte;  // latte name -> (hf name, tensor)
  std::vector<std::string> unknown;  // "name (why) [file]"
  for (const auto& [name, t] : hf.tensors) {
    const std::string latte_name = hf_to_latte_name(name, c.n_layers);
    if (latte_name.empty()) {
      if (name.size() > 20 && name.compare(name.size() - 20, 20, "rotary_emb.inv_freq") == 0) {
        out.skipped.push_back(name);  // recomputed from rope_theta
        continue;
      }
      std::string why;
      if (name.size() > 5 && name.compare(name.size() - 5, 5, ".bias") == 0) why = " (latte's Llama layers have no biases)";
      else if (name.rfind("model.layers.", 0) == 0) why = " (not a Llama layer tensor, or a layer index >= num_hidden_layers)";
      unknown.push_back(name + why + "  [" + hf.file_of[name] + "]");
      continue;
    }
    if (latte_name == "lm_head.weight" && c.tie_embeddings) {
      out.skipped.push_back(name);  // a tied checkpoint that also stores the head: latte uses tok_embed
      continue;
    }
    by_latte[latte_name] = {name, t};
  }
  if (!unknown.empty()) {
    std::string list;
    for (size_t i = 0; i < unknown.size() && i < 12; ++i) list += "\n  " + unknown[i];
    if (unknown.size() > 12) list += "\n  ... and " + std::to_string(unknown.size() - 12) + " more";
    LATTE_FAIL(dir, ": ", unknown.size(), " tensor(s) latte cannot place:", list);
  }

  std::string problems;
  const auto expected = expected_parameters(c);
  for (const auto& [name, shape] : expected) {
    auto it = by_latte.find(name);
    if (it == by_latte.end()) {
      problems += "\n  missing: " + latte_to_hf_name(name) + " (latte " + name + ")" +
                  (name == "lm_head.weight" ? "; tie_word_embeddings is false, so the head must be stored" : "");
      continue;
    }
    const Tensor& t = it->second.second;
    Shape want = shape;
    if (name == "tok_embed.weight" || name == "lm_head.weight") want = Shape{out.hf_vocab_size, c.d_model};
    if (!(t.shape() == want))
      problems += "\n  " + it->second.first + ": shape " + t.shape().str() + " but config.json implies " + want.str();
    if (!is_floating(t.dtype()))
      problems += "\n  " + it->second.first + ": dtype " + dtype_name(t.dtype()) + " is not a float type";
  }
  LATTE_REQUIRE(problems.empty(), dir, ": the checkpoint does not match its config.json:", problems);

  for (const auto& [name, shape] : expected) {
    const Tensor& src = by_latte.at(name).second;
    const DType dt = output_dtype(options, src.dtype());
    Tensor t = src.dtype() == dt ? src : src.to(dt);
    if ((name == "tok_embed.weight" || name == "lm_head.weight") && c.vocab_size != out.hf_vocab_size) {
      Tensor padded = Tensor::zeros(shape, dt);  // (V padded, d): pad rows stay zero and are never targets
      padded.narrow(0, 0, out.hf_vocab_size).copy_(t);
      t = padded;
    }
    out.tensors.emplace_back(name, t);
  }
  return out;
}

void write_model_dir(const std::string& dir, const ModelConfig& config, const NamedTensors& tensors,
                     const std::string& comment, const std::map<std::string, std::string>& extra_metadata) {
  fs::create_directories(dir);
  const std::string yaml = config.to_yaml_string();
  write_file_atomic((fs::path(dir) / "config.yaml").string(), yaml_comment(comment) + yaml);
  std::map<std::string, std::string> metadata = extra_metadata;
  metadata[kConfigKey] = yaml;
  metadata["format"] = "pt";
  write_safetensors((fs::path(dir) / "model.safetensors").string(), tensors, metadata);
}

ModelSource resolve_model_dir(const std::string& path) {
  const fs::path weights = fs::path(path) / "model.safetensors";
  if (fs::is_directory(path) && fs::exists(weights) && !fs::exists(fs::path(path) / "COMPLETE")) {
    const SafetensorsFile header = read_safetensors_header(weights.string());
    if (header.metadata.count(kConfigKey)) return resolve_model_source(weights.string());
    const fs::path config = fs::path(path) / "config.yaml";
    LATTE_REQUIRE(fs::exists(config), weights.string(), ": has no embedded latte config and ", config.string(), " is missing");
    return resolve_model_source(weights.string(), config.string());
  }
  return resolve_model_source(path);
}

}  // namespace latte
