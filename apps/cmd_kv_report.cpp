// `latte kv-report`: what a model config costs at inference and in training, without building it:
// KV-cache elements and bytes per token (spec: "KV cache per token per layer"), the cache size at a
// context and batch, the reduction vs MHA of the same width (2d per layer) and vs another config,
// parameter counts and FLOPs per token (spec: "FLOPs, for MFU").
//
//   latte kv-report <config.yaml> [--json] [--context N] [--batch B] [--vs other.yaml]
//
// The YAML may be a model file or an experiment file; only its `model:` section is read.
#include <cstdio>
#include <cstdlib>
#include <nlohmann/json.hpp>
#include <string>

#include "apps/cli.h"
#include "apps/commands.h"
#include "core/error.h"
#include "layers/model_config.h"

namespace latte::apps {

namespace {

constexpr const char* kUsage = R"(usage: latte kv-report <config.yaml> [--json] [--context N] [--batch B] [--vs other.yaml]
  KV-cache footprint, params and FLOPs per token of a model config (model or experiment YAML).
  --json        machine-readable output
  --context N   context length for the cache size and the FLOPs (default: model.max_seq_len)
  --batch B     sequences in the cache (default 1)
  --vs FILE     also report the KV reduction relative to this config (e.g. an MLA config)
)";

int64_t parse_positive(const std::string& option, const std::string& text) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  LATTE_REQUIRE(end && *end == '\0' && v > 0, "latte kv-report: ", option, " expects a positive integer, got '", text, "'");
  return v;
}

std::string human(double n, const char* unit_suffix = "") {
  char buf[64];
  if (n >= 1e9) std::snprintf(buf, sizeof buf, "%.3fB%s", n / 1e9, unit_suffix);
  else if (n >= 1e6) std::snprintf(buf, sizeof buf, "%.2fM%s", n / 1e6, unit_suffix);
  else if (n >= 1e3) std::snprintf(buf, sizeof buf, "%.1fK%s", n / 1e3, unit_suffix);
  else std::snprintf(buf, sizeof buf, "%.0f%s", n, unit_suffix);
  return buf;
}

// "egmla (d_c 96 + d_r 32)" / "mha (2 x 4 kv heads x 64)".
std::string describe_layer(const AttentionConfig& a) {
  if (!a.is_latent()) return str("mha: 2 x ", a.n_kv_heads, " kv heads x ", a.head_dim);
  return str(attention_kind_name(a.kind), ": d_c ", a.kv_rank, " + d_r ", a.rope_dim);
}

}  // namespace

int cmd_kv_report(int argc, char** argv) {
  std::string config_path, vs_path;
  bool json = false;
  int64_t context = 0, batch = 1;
  for (ArgCursor args(argc, argv, kUsage); args.next();) {
    const std::string& arg = args.arg();
    auto value = [&] { return args.value(); };
    if (args.is_help()) {
      std::printf("%s", kUsage);
      return 0;
    } else if (arg == "--json") {
      json = true;
    } else if (arg == "--context") {
      context = parse_positive(arg, value());
    } else if (arg == "--batch") {
      batch = parse_positive(arg, value());
    } else if (arg == "--vs") {
      vs_path = value();
    } else if (!arg.empty() && arg[0] == '-') {
      LATTE_FAIL("unknown option ", arg, "\n", kUsage);
    } else {
      LATTE_REQUIRE(config_path.empty(), "one config at a time (got ", config_path, " and ", arg, "); use --vs to compare\n", kUsage);
      config_path = arg;
    }
  }
  LATTE_REQUIRE(!config_path.empty(), "no config given\n", kUsage);

  const ModelConfig cfg = load_model_config(config_path);
  if (context == 0) context = cfg.max_seq_len;
  const KvFootprint kv = kv_footprint(cfg);
  const ParamCounts params = count_parameters(cfg);
  const double flops = flops_per_token(cfg, context);
  const int64_t bytes_per_token = 2 * kv.elements_per_token;  // bf16
  const int64_t id_bytes_per_token = 4 * kv.token_ids_per_token;
  const double cache_bytes = static_cast<double>(bytes_per_token + id_bytes_per_token) * context * batch;
  const int64_t mha_total = kv.mha_elements_per_token_per_layer * cfg.n_layers;
  const double vs_mha = 1.0 - static_cast<double>(kv.elements_per_token) / static_cast<double>(mha_total);

  nlohmann::ordered_json j;
  j["config"] = config_path;
  j["kind"] = attention_kind_name(cfg.attention.kind);
  j["d_model"] = cfg.d_model;
  j["n_layers"] = cfg.n_layers;
  j["kv_elements_per_token_per_layer"] = kv.elements_per_token_per_layer;
  j["kv_elements_per_token"] = kv.elements_per_token;
  j["kv_bytes_per_token"] = bytes_per_token;
  j["token_id_bytes_per_token"] = id_bytes_per_token;
  j["context"] = context;
  j["batch"] = batch;
  j["cache_bytes"] = cache_bytes;
  j["mha_kv_elements_per_token_per_layer"] = kv.mha_elements_per_token_per_layer;
  j["kv_reduction_vs_mha"] = vs_mha;
  j["params_total"] = params.total;
  j["params_non_embedding"] = params.non_embedding;
  j["params_embedding"] = params.embedding;
  j["params_matmul"] = params.matmul;
  j["flops_per_token"] = flops;

  std::string vs_line;
  if (!vs_path.empty()) {
    const ModelConfig other = load_model_config(vs_path);
    const KvFootprint okv = kv_footprint(other);
    const double vs_other = 1.0 - static_cast<double>(kv.elements_per_token) / static_cast<double>(okv.elements_per_token);
    j["vs"] = {{"config", vs_path},
               {"kind", attention_kind_name(other.attention.kind)},
               {"kv_elements_per_token_per_layer", okv.elements_per_token_per_layer},
               {"kv_elements_per_token", okv.elements_per_token},
               {"kv_reduction", vs_other}};
    j["kv_reduction_vs_other"] = vs_other;
    vs_line = str("reduction vs ", vs_path, " (", okv.elements_per_token_per_layer, " per layer): ");
    char pct[32];
    std::snprintf(pct, sizeof pct, "%.1f%%", 100.0 * vs_other);
    vs_line += pct;
  }

  if (json) {
    std::printf("%s\n", j.dump(2).c_str());
    return 0;
  }
  std::printf("config: %s (%s, d=%lld, %lld layers, %lld heads, vocab %lld)\n", config_path.c_str(),
              attention_kind_name(cfg.attention.kind), static_cast<long long>(cfg.d_model),
              static_cast<long long>(cfg.n_layers), static_cast<long long>(cfg.attention.n_heads),
              static_cast<long long>(cfg.vocab_size));
  std::printf("KV elements per token per layer: %lld (%s)\n", static_cast<long long>(kv.elements_per_token_per_layer),
              describe_layer(cfg.layer_attention(0)).c_str());
  std::printf("KV elements per token (model):   %lld\n", static_cast<long long>(kv.elements_per_token));
  std::printf("KV bytes per token (bf16):       %lld\n", static_cast<long long>(bytes_per_token));
  if (kv.token_ids_per_token)
    std::printf("  + token ids (EG-MLA kv gate):  %lld bytes per token (one int32 for the whole model)\n",
                static_cast<long long>(id_bytes_per_token));
  std::printf("cache at context %lld, batch %lld: %s\n", static_cast<long long>(context), static_cast<long long>(batch),
              human_bytes(cache_bytes).c_str());
  std::printf("reduction vs MHA of the same width (2d = %lld per layer): %.1f%%\n",
              static_cast<long long>(kv.mha_elements_per_token_per_layer), 100.0 * vs_mha);
  if (!vs_line.empty()) std::printf("%s\n", vs_line.c_str());
  std::printf("params: total %s (%lld), non-embedding %s, embedding %s\n", human(static_cast<double>(params.total)).c_str(),
              static_cast<long long>(params.total), human(static_cast<double>(params.non_embedding)).c_str(),
              human(static_cast<double>(params.embedding)).c_str());
  std::printf("FLOPs per token (training, context %lld): %s\n", static_cast<long long>(context), human(flops).c_str());
  return 0;
}

}  // namespace latte::apps
