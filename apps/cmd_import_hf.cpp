// `latte import-hf <hf_dir> --out <dir>`: converts a Hugging Face Llama-architecture checkpoint
// (config.json + model.safetensors or sharded model.safetensors.index.json) into a latte model
// directory: <dir>/config.yaml and <dir>/model.safetensors with the config embedded, so that
// `latte generate <dir>/model.safetensors`, `latte upcycle --teacher <dir>` and `train.init_from: <dir>`
// take it as is. `--logits-for IDS` also runs the imported model on the ids of a safetensors file
// (tensor "ids", (B, T) i32) and writes the logits over the original vocabulary, for
// scripts/reference/hf_parity.py to compare against transformers.
#include <cstdio>
#include <string>

#include "apps/cli.h"
#include "autograd/node.h"
#include "core/error.h"
#include "core/log.h"
#include "train/hf_import.h"

namespace latte::apps {

namespace {

constexpr const char* kUsage = R"(usage: latte import-hf <hf_dir> --out <dir> [--dtype f32|bf16] [--vocab-multiple 64]
                       [--logits-for IDS.safetensors [--logits-out FILE] [--device cpu|cuda|auto] [--logits-dtype f32|bf16]]
  Reads a Llama-architecture checkpoint (config.json, model.safetensors or model.safetensors.index.json) and
  writes <dir>/config.yaml + <dir>/model.safetensors (latte names, config embedded; vocabulary padded with
  zero rows). --dtype defaults to the checkpoint's (bf16 stays bf16, f16 becomes f32).
  --logits-for runs the imported model on the (B, T) i32 tensor "ids" of IDS and writes "logits" (B, T, V_hf)
  f32 to FILE (default <dir>/logits.safetensors); f32 on CPU by default.
)";

// Runs the imported model on the ids in `ids_path`; writes logits over the first `vocab` columns.
void write_logits(const std::string& model_dir, const std::string& ids_path, const std::string& out_path,
                  const std::string& device_name, const std::string& dtype_text, int64_t vocab) {
  ModelSource src = resolve_model_dir(model_dir);
  const Device device = resolve_device(device_name);
  const DType dtype = dtype_text.empty() ? DType::F32 : dtype_from_name(dtype_text);
  auto model = load_model(src, device, dtype);
  Tensor ids = read_safetensors(ids_path).get("ids");
  LATTE_REQUIRE(ids.dim() == 2 && ids.dtype() == DType::I32, ids_path, ": tensor ids must be (B, T) i32, got ", ids.str());
  autograd::NoGradGuard no_grad;
  Tensor logits = model->logits(ids.to(device));                       // (B, T, V padded)
  logits = logits.narrow(2, 0, vocab).to(DType::F32).cpu().contiguous();  // (B, T, V_hf)
  write_safetensors(out_path, {{"logits", logits}});
  log::info("wrote logits ", logits.shape().str(), " (", dtype_name(dtype), " on ", device.str(), ") to ", out_path);
}

}  // namespace

int cmd_import_hf(int argc, char** argv) {
  std::string hf_dir, out_dir, ids_path, logits_out, device_name = "cpu", logits_dtype;
  HfImportOptions options;
  for (ArgCursor args(argc, argv, kUsage); args.next();) {
    const std::string& arg = args.arg();
    auto value = [&] { return args.value(); };
    if (args.is_help()) {
      std::printf("%s", kUsage);
      return 0;
    }
    if (arg == "--out") out_dir = value();
    else if (arg == "--dtype") options.dtype = value();
    else if (arg == "--vocab-multiple") options.vocab_multiple = parse_int(arg, value());
    else if (arg == "--logits-for") ids_path = value();
    else if (arg == "--logits-out") logits_out = value();
    else if (arg == "--device") device_name = value();
    else if (arg == "--logits-dtype") logits_dtype = value();
    else if (!arg.empty() && arg[0] == '-') LATTE_FAIL("unknown option ", arg, "\n", kUsage);
    else {
      LATTE_REQUIRE(hf_dir.empty(), "one checkpoint directory expected, got '", hf_dir, "' and '", arg, "'\n", kUsage);
      hf_dir = arg;
    }
  }
  LATTE_REQUIRE(!hf_dir.empty() && !out_dir.empty(), "a checkpoint directory and --out are required\n", kUsage);
  LATTE_REQUIRE(options.vocab_multiple > 0, "--vocab-multiple must be positive, got ", options.vocab_multiple);

  HfModel model = read_hf_checkpoint(hf_dir, options);
  const ModelConfig& c = model.config;
  const AttentionConfig& a = c.attention;
  const std::string comment = str("Imported by latte import-hf from ", hf_dir, "\n", "original vocab_size ", model.hf_vocab_size,
                                  " (padded to ", c.vocab_size, " with zero rows; padded ids never appear as targets)");
  write_model_dir(out_dir, c, model.tensors, comment,
                  {{"hf_source", hf_dir}, {"hf_vocab_size", std::to_string(model.hf_vocab_size)}});
  int64_t params = 0;
  for (const auto& [name, t] : model.tensors) params += t.numel();
  std::printf("latte import-hf: %s -> %s\n", hf_dir.c_str(), out_dir.c_str());
  std::printf("  %lld layers, d_model %lld, %lld heads (%lld kv, head_dim %lld), ffn %lld, %s embeddings, rope_base %g%s\n",
              static_cast<long long>(c.n_layers), static_cast<long long>(c.d_model), static_cast<long long>(a.n_heads),
              static_cast<long long>(a.n_kv_heads), static_cast<long long>(a.head_dim), static_cast<long long>(c.ffn_dim),
              c.tie_embeddings ? "tied" : "untied", c.rope_base, c.rope_scaling.enabled ? " (llama3 scaling)" : "");
  std::printf("  vocab %lld -> %lld, %zu tensors, %.1fM parameters (%s)\n", static_cast<long long>(model.hf_vocab_size),
              static_cast<long long>(c.vocab_size), model.tensors.size(), static_cast<double>(params) / 1e6,
              dtype_name(model.tensors.front().second.dtype()));
  for (const std::string& s : model.skipped) std::printf("  skipped %s\n", s.c_str());

  if (!ids_path.empty())
    write_logits(out_dir, ids_path, logits_out.empty() ? out_dir + "/logits.safetensors" : logits_out, device_name,
                 logits_dtype, model.hf_vocab_size);
  return 0;
}

}  // namespace latte::apps
