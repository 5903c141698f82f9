// `latte upcycle --teacher <weights|ckpt|dir> --out <dir>`: turns a trained MHA/GQA model into MLA by
// X-EcoMLA's SVD initialisation (train/upcycle.h) and writes a latte model directory (config.yaml +
// model.safetensors with the config embedded + upcycle_report.json), ready for `latte generate` and for
// distillation with `train.init_from: <dir>` and `train.distill.teacher: <teacher>`.
#include <yaml-cpp/yaml.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>

#include "apps/cli.h"
#include "core/error.h"
#include "train/checkpoint_store.h"
#include "train/hf_import.h"
#include "train/upcycle.h"

namespace fs = std::filesystem;

namespace latte::apps {

namespace {

constexpr const char* kUsage = R"(usage: latte upcycle --teacher <weights | checkpoint | run dir | model dir> --out <dir>
                     [--config target.yaml] [--ranks q:R_Q,kv:R_KV] [--energy 0.95] [--layers 0-15]
                     [--rank-multiple 8] [--dtype f32|bf16]
  SVD initialisation of MLA from an MHA/GQA teacher (spec/upcycling.md). Writes <dir>/config.yaml,
  <dir>/model.safetensors (config embedded) and <dir>/upcycle_report.json.
  --config     a model: section for the student (may hold only attention:); kind mla, nope_dim + rope_dim
               = head_dim, v_dim = head_dim (filled when absent: rope_dim = head_dim/2); latent_norm is off
  --ranks      fixed ranks (q:0 keeps the query uncompressed); ranks are rounded up to --rank-multiple
  --energy     ranks not fixed by --ranks: smallest with kept singular-value energy <= E per layer; the
               largest over layers is used (one MLA config per model)
  priority: --ranks, then --energy, then the target config's q_rank / kv_rank
  --layers     layers to convert (0-15, 0,2,4-7; default all); the others stay MHA
  --dtype      of the written weights (default f32)
)";

}  // namespace

int cmd_upcycle(int argc, char** argv) {
  std::string teacher_path, out_dir, config_path, layers_text, ranks_text, dtype_text = "f32";
  UpcycleOptions options;
  for (ArgCursor args(argc, argv, kUsage); args.next();) {
    const std::string& arg = args.arg();
    auto value = [&] { return args.value(); };
    if (args.is_help()) {
      std::printf("%s", kUsage);
      return 0;
    }
    if (arg == "--teacher") teacher_path = value();
    else if (arg == "--out") out_dir = value();
    else if (arg == "--config") config_path = value();
    else if (arg == "--layers") layers_text = value();
    else if (arg == "--ranks") ranks_text = value();
    else if (arg == "--energy") options.energy = parse_real(arg, value());
    else if (arg == "--rank-multiple") options.rank_multiple = parse_int(arg, value());
    else if (arg == "--dtype") dtype_text = value();
    else LATTE_FAIL("unknown argument ", arg, "\n", kUsage);
  }
  LATTE_REQUIRE(!teacher_path.empty() && !out_dir.empty(), "--teacher and --out are required\n", kUsage);
  LATTE_REQUIRE(options.energy >= 0 && options.energy <= 1, "--energy must be a fraction in (0, 1], got ", options.energy);
  LATTE_REQUIRE(options.rank_multiple > 0, "--rank-multiple must be positive, got ", options.rank_multiple);
  const DType dtype = dtype_from_name(dtype_text);
  LATTE_REQUIRE(dtype == DType::F32 || dtype == DType::BF16, "--dtype ", dtype_text, ": upcycle writes f32 or bf16");
  if (!ranks_text.empty()) parse_ranks(ranks_text, &options);

  const ModelSource src = resolve_model_dir(teacher_path);
  const ModelConfig& teacher = src.config;
  if (!layers_text.empty()) options.layers = parse_layer_list(layers_text, teacher.n_layers);

  YAML::Node target_model;
  if (!config_path.empty()) {
    YAML::Node root;
    try {
      root = YAML::LoadFile(config_path);
    } catch (const YAML::Exception& e) {
      LATTE_FAIL(config_path, ": cannot read YAML: ", e.what());
    }
    LATTE_REQUIRE(root.IsMap() && root["model"], config_path, ": no top-level model: section (give at least model: {attention: {kind: mla, ...}})");
    target_model = root["model"];
  }
  std::vector<std::string> notes;
  int64_t max_seq_len = teacher.max_seq_len;
  const AttentionConfig target = upcycle_target_attention(teacher, target_model, config_path.empty() ? "upcycle target" : config_path,
                                                          options, &max_seq_len, &notes);

  const SafetensorsFile weights = read_safetensors(src.weights);
  UpcycleResult result = upcycle(teacher, weights.tensors, target, options);
  result.config.max_seq_len = max_seq_len;
  result.config.validate("upcycled model");
  notes.insert(notes.end(), result.notes.begin(), result.notes.end());
  if (dtype != DType::F32)
    for (auto& [name, t] : result.tensors) t = t.to(dtype);

  const std::string report = format_upcycle_report(teacher, result);
  std::string comment = str("Upcycled by latte upcycle (X-EcoMLA SVD initialisation) from ", src.description, "\n");
  for (const std::string& n : notes) comment += "note: " + n + "\n";
  comment += report;
  write_model_dir(out_dir, result.config, result.tensors, comment, {{"upcycled_from", src.description}});

  nlohmann::json layers = nlohmann::json::array();
  for (const LayerUpcycleReport& r : result.report)
    layers.push_back({{"layer", r.layer}, {"q_rank", r.q_rank}, {"kv_rank", r.kv_rank}, {"q_energy_rank", r.q_energy_rank},
                      {"kv_energy_rank", r.kv_energy_rank}, {"q_energy", r.q_energy}, {"kv_energy", r.kv_energy},
                      {"q_error", r.q_error}, {"kv_error", r.kv_error}});
  const nlohmann::json summary = {
      {"teacher", src.description},
      {"q_rank", result.config.attention.q_rank},
      {"kv_rank", result.config.attention.kv_rank},
      {"rope_dim", result.config.attention.rope_dim},
      {"energy", options.energy},
      {"kv_elements_per_token_teacher", kv_footprint(teacher).elements_per_token},
      {"kv_elements_per_token_student", kv_footprint(result.config).elements_per_token},
      {"notes", notes},
      {"layers", layers}};
  write_file_atomic((fs::path(out_dir) / "upcycle_report.json").string(), summary.dump(2) + "\n");

  std::printf("latte upcycle: %s -> %s (%zu of %lld layers to MLA)\n", src.description.c_str(), out_dir.c_str(),
              result.report.size(), static_cast<long long>(teacher.n_layers));
  for (const std::string& n : notes) std::printf("note: %s\n", n.c_str());
  std::printf("%s", report.c_str());
  return 0;
}

}  // namespace latte::apps
