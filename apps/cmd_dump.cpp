// `latte dump` (hidden; for scripts/reference/parity.py): runs one forward and backward of a model on a
// deterministic batch and writes everything a PyTorch reference needs to check latte:
//   DIR/config.yaml            the resolved model section
//   DIR/weights.safetensors    the parameters under the spec's names (param dtype)
//   DIR/outputs.safetensors    ids, targets (I32 (B, T); some targets -1), logits (B, T, V), loss [],
//                              and grad.<name> for every parameter; F64 for an f64 model, else F32
//
//   latte dump <config.yaml> --out DIR [--seed S] [--device cpu|cuda] [--dtype f32|f64|bf16]
//              [--batch B] [--seq T] [--weights FILE] [--no-zero-init] [--init-std X]
//
// --no-zero-init starts wo / w_down non-zero so the attention paths reach the logits and all gradients.
#include <sys/stat.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <string>

#include "apps/cli.h"
#include "apps/commands.h"
#include "autograd/node.h"
#include "core/error.h"
#include "core/philox.h"
#include "layers/safetensors.h"
#include "layers/transformer.h"

namespace latte::apps {

namespace {

constexpr const char* kUsage = R"(usage: latte dump <config.yaml> --out DIR [--seed S] [--device cpu|cuda] [--dtype f32|f64|bf16]
                  [--batch B] [--seq T] [--weights FILE] [--no-zero-init] [--init-std X]
  writes DIR/config.yaml, DIR/weights.safetensors and DIR/outputs.safetensors (ids, targets, logits, loss,
  grad.<param>) for the PyTorch parity check (scripts/reference/parity.py)
)";

}  // namespace

int cmd_dump(int argc, char** argv) {
  std::string config_path, out_dir, weights, device_name = "cpu", dtype_text;
  uint64_t seed = 1234;
  int64_t batch = 2, seq = 16;
  bool zero_init = true;
  double init_std = 0;
  for (ArgCursor args(argc, argv, kUsage); args.next();) {
    const std::string& arg = args.arg();
    auto value = [&] { return args.value(); };
    if (args.is_help()) {
      std::printf("%s", kUsage);
      return 0;
    }
    if (arg == "--out") out_dir = value();
    else if (arg == "--seed") seed = static_cast<uint64_t>(parse_int(arg, value()));
    else if (arg == "--device") device_name = value();
    else if (arg == "--dtype") dtype_text = value();
    else if (arg == "--batch") batch = parse_int(arg, value());
    else if (arg == "--seq") seq = parse_int(arg, value());
    else if (arg == "--weights") weights = value();
    else if (arg == "--no-zero-init") zero_init = false;
    else if (arg == "--init-std") init_std = std::strtod(value().c_str(), nullptr);
    else if (!arg.empty() && arg[0] == '-') LATTE_FAIL("unknown option ", arg, "\n", kUsage);
    else config_path = arg;
  }
  LATTE_REQUIRE(!config_path.empty() && !out_dir.empty(), "a config and --out are required\n", kUsage);
  ModelConfig cfg = load_model_config(config_path);
  if (!zero_init) cfg.init.zero_out_proj = false;
  if (init_std > 0) cfg.init.std = init_std;
  LATTE_REQUIRE(batch > 0 && seq > 0 && seq <= cfg.max_seq_len, "latte dump: need 0 < --seq <= max_seq_len (", cfg.max_seq_len, ")");
  const Device device = Device::parse(device_name);
  const DType dtype = dtype_text.empty() ? (device.is_cuda() ? DType::BF16 : DType::F32) : dtype_from_name(dtype_text);

  TransformerLM model(cfg, seed, dtype, device);
  if (!weights.empty()) load_state(model, weights);

  // Deterministic batch: ids from Philox, targets = next ids, every 7th target ignored.
  std::vector<double> ids(static_cast<size_t>(batch * seq)), targets(ids.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t t = 0; t <= seq; ++t) {
      const double id = std::floor(philox::uniform(seed + 1, 0, static_cast<uint64_t>(b * (seq + 1) + t)) * 0.999999 *
                                   static_cast<double>(cfg.vocab_size));
      if (t < seq) ids[static_cast<size_t>(b * seq + t)] = id;
      if (t > 0) targets[static_cast<size_t>(b * seq + t - 1)] = (b * seq + t) % 7 == 0 ? -1 : id;
    }
  Tensor ids_t = Tensor::from_vector(ids, {batch, seq}, DType::I32, device);
  Tensor targets_t = Tensor::from_vector(targets, {batch, seq}, DType::I32, device);

  const DType out_dtype = dtype == DType::F64 ? DType::F64 : DType::F32;
  Tensor logits;
  {
    autograd::NoGradGuard no_grad;
    logits = model.logits(ids_t).to(out_dtype).cpu();
  }
  Tensor loss = model.loss(ids_t, targets_t);
  loss.backward();

  ::mkdir(out_dir.c_str(), 0755);
  {
    std::ofstream yaml(out_dir + "/config.yaml");
    LATTE_REQUIRE(yaml.good(), out_dir, "/config.yaml: cannot write");
    yaml << cfg.to_yaml_string();
  }
  save_state(model, out_dir + "/weights.safetensors", {{"latte_config", cfg.to_yaml_string()}});
  NamedTensors outputs = {{"ids", ids_t.cpu()}, {"targets", targets_t.cpu()}, {"logits", logits},
                          {"loss", loss.detach().to(out_dtype).cpu()}};
  for (const NamedParameter& p : model.named_parameters()) {
    Tensor g = p.tensor.grad();
    outputs.emplace_back("grad." + p.name, g.defined() ? g.to(out_dtype).cpu() : Tensor::zeros(p.tensor.shape(), out_dtype));
  }
  write_safetensors(out_dir + "/outputs.safetensors", outputs);
  std::printf("latte dump: %s loss %.6f -> %s\n", attention_kind_name(cfg.attention.kind), loss.item(), out_dir.c_str());
  return 0;
}

}  // namespace latte::apps
