// `latte decode-bench`: per-token decode latency and per-device KV-cache bytes of a model config at long
// contexts, with tensor parallelism when launched under mpirun (one TP group of every process, or --tp).
// The model gets seeded random weights (no checkpoint needed); the cache is filled to the context directly
// with random latents / keys / values (writing the cache tensors, not prefilling N tokens), then single-token
// steps are timed (device synchronised after each, steady clock; median over --steps after --warmup).
//
//   latte decode-bench <config.yaml> [--context N[,N...]] [--batch B] [--steps S] [--warmup W] [--json]
//                      [--mlra-layout blocks|heads] [--plain] [--tp T] [--device auto|cpu|cuda] [--dtype D] [--seed S]
//   scripts/launch.sh -n 4 -- build/latte decode-bench configs/models/mlra4-1b3.yaml --context 131072,1048576
//
// What one step is: forward_cached of one token per sequence, i.e. the vocab-parallel embedding, every
// layer's attention against the cache (absorbed latent path for MLA / EG-MLA / MLRA unless --plain; the
// split-K decode kernels on a GPU), wo's and w_down's all-reduces under TP, the LM head and the gather of
// the logits. The reported latency is the slowest TP rank's median.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "apps/cli.h"
#include "apps/commands.h"
#include "autograd/node.h"
#include "core/device.h"
#include "core/error.h"
#include "distributed/process_group.h"
#include "distributed/topology.h"
#include "distributed/world.h"
#include "layers/model_config.h"
#include "layers/transformer.h"
#include "train/run_setup.h"

namespace latte::apps {

namespace {

constexpr const char* kUsage =
    R"(usage: latte decode-bench <config.yaml> [--context N[,N...]] [--batch B] [--steps S] [--warmup W] [--json]
                          [--mlra-layout blocks|heads] [--plain] [--tp T] [--device auto|cpu|cuda] [--dtype D] [--seed S]
  Times single-token decode steps against a KV cache filled (with random values) to each context length.
  Under mpirun the processes form TP groups of --tp ranks (default: all of them); the model is random.
  --context N,...   cached positions before the timed steps (default 1024); k/m suffixes allowed (128k, 1m)
  --batch B         sequences decoded together (default 1)
  --steps S         timed steps per context (default 20); --warmup W untimed steps first (default 3)
  --mlra-layout L   MLRA under TP: blocks (each rank caches blocks/tp latent blocks; default) or heads
  --plain           MLA-family layers expand K/V from the latents instead of the absorbed path
  --device, --dtype auto (CUDA + bf16 when a GPU is visible, else CPU + f32), or cpu/cuda, f32/bf16/f64
  --json            one JSON object on stdout (rank 0)
)";

int64_t parse_count(const std::string& option, std::string text) {
  int64_t scale = 1;
  if (!text.empty() && (text.back() == 'k' || text.back() == 'K')) scale = 1024, text.pop_back();
  else if (!text.empty() && (text.back() == 'm' || text.back() == 'M')) scale = 1024 * 1024, text.pop_back();
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  LATTE_REQUIRE(!text.empty() && end && *end == '\0' && v > 0, "latte decode-bench: ", option,
                " expects a positive integer (k/m suffixes allowed), got '", text, "'");
  return static_cast<int64_t>(v) * scale;
}

std::vector<int64_t> parse_list(const std::string& option, const std::string& text) {
  std::vector<int64_t> out;
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    out.push_back(parse_count(option, text.substr(start, comma == std::string::npos ? std::string::npos : comma - start)));
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return out;
}

// Fills every layer's cache buffers with N(0, 1) values (random latents / keys / values: the latency of a
// decode step does not depend on them) and marks `context` positions as cached. One block of up to 4096
// random positions per buffer is generated and repeated along the context by device copies: Philox fills
// run on the host, and 1M positions of a 24-layer model are ~10^10 values.
void fill_cache(KVCache& cache, int64_t context, uint64_t seed) {
  autograd::NoGradGuard no_grad;
  constexpr int64_t kBlock = 4096;
  uint64_t stream = 0;
  for (int64_t i = 0; i < cache.num_layers(); ++i) {
    const LayerKVCache& c = cache.layer(i);
    for (const Tensor* t : {&c.key, &c.value, &c.latent, &c.rope_key}) {
      if (!t->defined()) continue;
      const int64_t block = std::min(context, kBlock);
      Tensor first = t->narrow(1, 0, block);  // (B, block, ...)
      first.copy_(Tensor::randn(first.shape(), seed, (++stream) << 40, 1.0, t->dtype(), t->device()));
      for (int64_t start = block; start < context; start += block)
        t->narrow(1, start, std::min(block, context - start)).copy_(first.narrow(1, 0, std::min(block, context - start)));
    }
  }
  cache.advance(context);  // token ids (EG-MLA kv) stay 0: valid ids
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Options {
  std::string config_path;
  std::vector<int64_t> contexts{1024};
  int64_t batch = 1, steps = 20, warmup = 3, tp = 0;
  uint64_t seed = 1234;
  bool json = false, absorbed = true;
  MlraTpLayout layout = MlraTpLayout::Blocks;
  std::string device = "auto", dtype = "auto";
};

int run(const Options& o) {
  ModelConfig cfg = load_model_config(o.config_path);
  const int64_t longest = *std::max_element(o.contexts.begin(), o.contexts.end());
  // The cache capacity is checked against max_seq_len; the positions themselves only need RoPE.
  cfg.max_seq_len = std::max(cfg.max_seq_len, longest + o.warmup + o.steps);

  dist::World& world = process_world();
  Device device = o.device == "auto" ? (cuda_available() ? Device::cuda(0) : Device::cpu()) : Device::parse(o.device);
  LATTE_REQUIRE(!device.is_cuda() || cuda_available(), "latte decode-bench: --device ", o.device, ": no CUDA device is available");
  if (device.is_cuda() && world.size() > 1) device = world.select_device(DeviceType::CUDA);  // GPU = local rank
  const DType dtype = o.dtype == "auto" ? (device.is_cuda() ? DType::BF16 : DType::F32) : dtype_from_name(o.dtype);
  LATTE_REQUIRE(!(device.is_cpu() && dtype == DType::BF16), "latte decode-bench: bf16 needs a CUDA device; use --dtype f32");
  const int tp = o.tp > 0 ? static_cast<int>(o.tp) : world.size();
  std::shared_ptr<dist::Topology> topo;
  TensorParallelContext ctx;
  if (world.size() > 1) {
    topo = std::make_shared<dist::Topology>(world, 0, tp, device);  // dp = world / tp independent replicas
    ctx = TensorParallelContext::of(topo->tp_group().get(), o.layout);
  } else {
    LATTE_REQUIRE(tp == 1, "latte decode-bench: --tp ", tp, " needs ", tp, " processes (scripts/launch.sh -n ", tp, " -- ...)");
  }
  TransformerLM model(cfg, o.seed, dtype, device, ctx);
  const bool root = world.rank() == 0;
  const AttentionConfig& a = cfg.attention;

  nlohmann::ordered_json report;
  report["config"] = o.config_path;
  report["kind"] = attention_kind_name(a.kind);
  report["tp"] = tp;
  report["mlra_layout"] = mlra_tp_layout_name(o.layout);
  report["device"] = device.str();
  report["dtype"] = dtype_name(dtype);
  report["batch"] = o.batch;
  report["absorbed"] = o.absorbed;
  report["kv_elements_per_token_per_layer_per_device"] = local_kv_elements_per_token(a, ctx);
  report["results"] = nlohmann::ordered_json::array();
  if (root && !o.json)
    std::printf("decode-bench %s: %s, tp %d (MLRA layout %s), %s %s, batch %lld, %s path, %lld cached elements per token per "
                "layer per device\n%10s %16s %12s %12s\n",
                o.config_path.c_str(), attention_kind_name(a.kind), tp, mlra_tp_layout_name(o.layout), device.str().c_str(),
                dtype_name(dtype), static_cast<long long>(o.batch), o.absorbed ? "absorbed" : "plain",
                static_cast<long long>(local_kv_elements_per_token(a, ctx)), "context", "KV bytes/device", "ms/token",
                "tokens/s");

  Tensor step_ids = Tensor::full({o.batch, 1}, 1.0, DType::I32, device);  // any valid id
  for (int64_t context : o.contexts) {
    KVCache cache = model.make_cache(o.batch, context + o.warmup + o.steps);
    fill_cache(cache, context, o.seed + static_cast<uint64_t>(context));
    const int64_t kv_bytes = cache.bytes_per_position() * context;  // what `context` positions hold on this device
    for (int64_t s = 0; s < o.warmup; ++s) model.forward_cached(step_ids, cache, o.absorbed);
    cuda_synchronize();
    if (topo) topo->world_group()->barrier();
    std::vector<double> ms;
    for (int64_t s = 0; s < o.steps; ++s) {
      const auto t0 = std::chrono::steady_clock::now();
      model.forward_cached(step_ids, cache, o.absorbed);
      if (device.is_cuda()) cuda_synchronize();
      ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    }
    double step_ms = median(ms);
    if (topo) step_ms = topo->world_group()->all_reduce_scalar(step_ms, dist::ReduceOp::Max);  // the slowest rank
    const double tokens_per_s = static_cast<double>(o.batch) * 1000.0 / step_ms;
    report["results"].push_back({{"context", context},
                                 {"kv_bytes_per_device", kv_bytes},
                                 {"ms_per_token", step_ms},
                                 {"tokens_per_s", tokens_per_s}});
    if (root && !o.json)
      std::printf("%10lld %16s %12.3f %12.1f\n", static_cast<long long>(context), human_bytes(static_cast<double>(kv_bytes)).c_str(), step_ms,
                  tokens_per_s);
    std::fflush(stdout);
  }
  if (root && o.json) std::printf("%s\n", report.dump().c_str());
  return 0;
}

}  // namespace

int cmd_decode_bench(int argc, char** argv) {
  Options o;
  for (ArgCursor args(argc, argv, kUsage); args.next();) {
    const std::string& arg = args.arg();
    auto value = [&] { return args.value(); };
    if (args.is_help()) {
      std::printf("%s", kUsage);
      return 0;
    } else if (arg == "--context") {
      o.contexts = parse_list(arg, value());
    } else if (arg == "--batch") {
      o.batch = parse_count(arg, value());
    } else if (arg == "--steps") {
      o.steps = parse_count(arg, value());
    } else if (arg == "--warmup") {
      const std::string v = value();
      o.warmup = v == "0" ? 0 : parse_count(arg, v);
    } else if (arg == "--tp") {
      o.tp = parse_count(arg, value());
    } else if (arg == "--seed") {
      o.seed = static_cast<uint64_t>(parse_count(arg, value()));
    } else if (arg == "--mlra-layout") {
      o.layout = parse_mlra_tp_layout(value(), "latte decode-bench --mlra-layout");
    } else if (arg == "--plain") {
      o.absorbed = false;
    } else if (arg == "--json") {
      o.json = true;
    } else if (arg == "--device") {
      o.device = value();
    } else if (arg == "--dtype") {
      o.dtype = value();
    } else if (!arg.empty() && arg[0] == '-') {
      LATTE_FAIL("unknown option ", arg, "\n", kUsage);
    } else {
      LATTE_REQUIRE(o.config_path.empty(), "one config at a time (got ", o.config_path, " and ", arg, ")\n", kUsage);
      o.config_path = arg;
    }
  }
  LATTE_REQUIRE(!o.config_path.empty(), "no config given\n", kUsage);
  try {
    return run(o);
  } catch (const Error& e) {
    // Another rank may be waiting in a collective: end the whole job (docs/distributed.md).
    if (process_world().size() > 1) {
      std::fprintf(stderr, "latte decode-bench: error on rank %d: %s\n", process_world().rank(), e.what());
      dist::abort_job(2);
    }
    throw;
  }
}

}  // namespace latte::apps
