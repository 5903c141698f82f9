// `latte generate`: sample a continuation from trained weights with the KV cache (layers/decode.h).
//
//   latte generate <checkpoint dir | run dir | exported.safetensors | weights.safetensors --config <yaml>>
//       (--prompt "text" [--tokenizer gpt2|byte] [--tokenizer-dir DIR] | --ids "1 2 3")
//       [--max-new N] [--temperature T] [--top-k K] [--seed S] [--greedy] [--absorbed]
//       [--stop-at-eot] [--device cpu|cuda]
//
// With --prompt the text streams to stdout as it is generated; with --ids the new ids are printed.
// Parameters are f32 on CPU and bf16 on CUDA (weights of any float dtype are converted on load).
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "apps/commands.h"
#include "core/error.h"
#include "data/tokenizer.h"
#include "layers/decode.h"
#include "layers/safetensors.h"
#include "train/model_source.h"

namespace latte::apps {

namespace {

constexpr const char* kUsage = R"(usage: latte generate <checkpoint dir | run dir | model.safetensors>
         (--prompt TEXT [--tokenizer gpt2|byte] [--tokenizer-dir DIR] | --ids "1 2 3") [options]
  --config FILE        model or experiment YAML, for a safetensors file without an embedded config
  --prompt TEXT        text prompt, encoded with --tokenizer (default gpt2, files in --tokenizer-dir, default data/gpt2)
  --ids "1 2 3"        prompt as token ids (prints the generated ids)
  --max-new N          tokens to generate (default 64)
  --temperature T      sampling temperature (default 1.0; 0 = greedy)
  --top-k K            sample among the K most likely tokens (default 0 = all)
  --seed S             sampling seed (default 0)
  --greedy             always take the most likely token
  --absorbed           MLA-family layers attend in latent space (same result, less memory traffic)
  --stop-at-eot        stop when the tokenizer's end-of-text token is produced
  --device D           auto | cpu | cuda (default auto: the GPU when there is one)
)";

}  // namespace

int cmd_generate(int argc, char** argv) {
  std::string weights, config_path, prompt, ids_text, tokenizer_name = "gpt2", tokenizer_dir = "data/gpt2", device_name = "auto";
  bool have_prompt = false, have_ids = false, stop_at_eot = false;
  GenerateOptions opt;
  for (ArgCursor args(argc, argv, kUsage); args.next();) {
    const std::string& arg = args.arg();
    auto value = [&] { return args.value(); };
    if (args.is_help()) {
      std::printf("%s", kUsage);
      return 0;
    }
    if (arg == "--config") config_path = value();
    else if (arg == "--prompt") prompt = value(), have_prompt = true;
    else if (arg == "--ids") ids_text = value(), have_ids = true;
    else if (arg == "--tokenizer") tokenizer_name = value();
    else if (arg == "--tokenizer-dir") tokenizer_dir = value();
    else if (arg == "--max-new") opt.max_new_tokens = parse_int(arg, value());
    else if (arg == "--temperature") opt.temperature = parse_real(arg, value());
    else if (arg == "--top-k") opt.top_k = parse_int(arg, value());
    else if (arg == "--seed") opt.seed = static_cast<uint64_t>(parse_int(arg, value()));
    else if (arg == "--greedy") opt.greedy = true;
    else if (arg == "--absorbed") opt.absorbed = true;
    else if (arg == "--stop-at-eot") stop_at_eot = true;
    else if (arg == "--device") device_name = value();
    else if (!arg.empty() && arg[0] == '-') LATTE_FAIL("unknown option ", arg, "\n", kUsage);
    else {
      LATTE_REQUIRE(weights.empty(), "one weights file expected, got ", weights, " and ", arg, "\n", kUsage);
      weights = arg;
    }
  }
  LATTE_REQUIRE(!weights.empty(), "no checkpoint or weights file given\n", kUsage);
  LATTE_REQUIRE(have_prompt != have_ids, "give exactly one of --prompt and --ids\n", kUsage);
  LATTE_REQUIRE(opt.max_new_tokens > 0, "--max-new must be positive, got ", opt.max_new_tokens);
  LATTE_REQUIRE(opt.top_k >= 0, "--top-k must be >= 0, got ", opt.top_k);

  const ModelSource source = resolve_model_source(weights, config_path);
  const ModelConfig& cfg = source.config;
  const Device device = resolve_device(device_name);

  std::unique_ptr<data::Tokenizer> tokenizer;
  std::vector<int32_t> prompt_ids;
  if (have_prompt) {
    tokenizer = data::make_tokenizer(tokenizer_name, tokenizer_dir);
    LATTE_REQUIRE(tokenizer->vocab_size() <= cfg.vocab_size, "the ", tokenizer_name, " tokenizer has ", tokenizer->vocab_size(),
                  " tokens but model.vocab_size is ", cfg.vocab_size, "; use the tokenizer the model was trained with");
    prompt_ids = tokenizer->encode(prompt);
    opt.sample_vocab = tokenizer->vocab_size();  // padded vocab rows cannot be decoded
    if (stop_at_eot) opt.stop_token = tokenizer->eot_token();
  } else {
    std::istringstream in(ids_text);
    std::string tok;
    while (in >> tok) prompt_ids.push_back(static_cast<int32_t>(parse_int("--ids", tok)));
    LATTE_REQUIRE(!stop_at_eot, "--stop-at-eot needs --prompt (the tokenizer defines the EOT token)");
  }
  LATTE_REQUIRE(!prompt_ids.empty(), "the prompt encodes to no tokens; give a non-empty prompt");

  std::unique_ptr<TransformerLM> loaded = load_model(source, device, default_dtype(device));
  TransformerLM& model = *loaded;

  if (have_prompt) {
    // Stream text: decode everything generated so far and print what was not printed yet (a BPE token can
    // end inside a UTF-8 character, so per-token decoding would print broken bytes).
    std::printf("%s", prompt.c_str());
    std::fflush(stdout);
    std::vector<int32_t> produced;
    size_t printed = 0;
    generate(model, {prompt_ids}, opt, [&](int64_t, int32_t token) {
      produced.push_back(token);
      const std::string text = tokenizer->decode(produced);
      if (text.size() > printed) {
        std::fwrite(text.data() + printed, 1, text.size() - printed, stdout);
        std::fflush(stdout);
        printed = text.size();
      }
    });
    std::printf("\n");
  } else {
    std::vector<std::vector<int32_t>> out = generate(model, {prompt_ids}, opt);
    for (size_t k = 0; k < out[0].size(); ++k) std::printf(k ? " %d" : "%d", out[0][k]);
    std::printf("\n");
  }
  return 0;
}

}  // namespace latte::apps
