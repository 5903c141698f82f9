// Generation loop and sampling (layers/decode.h).
#include "layers/decode.h"

#include <algorithm>
#include <cmath>
#include <numeric>

#include "core/philox.h"

namespace latte {

int32_t sample_token(const std::vector<float>& logits, const GenerateOptions& options, double draw) {
  int64_t V = static_cast<int64_t>(logits.size());
  if (options.sample_vocab > 0) V = std::min(V, options.sample_vocab);
  LATTE_CHECK(V > 0);
  if (options.greedy || options.temperature <= 0)
    return static_cast<int32_t>(std::max_element(logits.begin(), logits.begin() + V) - logits.begin());
  std::vector<int32_t> order(static_cast<size_t>(V));
  std::iota(order.begin(), order.end(), 0);
  int64_t keep = options.top_k > 0 ? std::min(options.top_k, V) : V;
  // Highest logits first; ties keep the lower id so that the result does not depend on the sort.
  auto higher = [&](int32_t a, int32_t b) { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b); };
  if (keep < V) std::partial_sort(order.begin(), order.begin() + keep, order.end(), higher);
  else std::sort(order.begin(), order.end(), higher);
  const double top = logits[static_cast<size_t>(order[0])];
  std::vector<double> p(static_cast<size_t>(keep));
  double total = 0;
  for (int64_t i = 0; i < keep; ++i) {
    p[static_cast<size_t>(i)] = std::exp((logits[static_cast<size_t>(order[static_cast<size_t>(i)])] - top) / options.temperature);
    total += p[static_cast<size_t>(i)];
  }
  double target = draw * total, acc = 0;
  for (int64_t i = 0; i < keep; ++i) {
    acc += p[static_cast<size_t>(i)];
    if (acc >= target) return order[static_cast<size_t>(i)];
  }
  return order[static_cast<size_t>(keep - 1)];
}

std::vector<std::vector<int32_t>> generate(const TransformerLM& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options,
                                           const std::function<void(int64_t, int32_t)>& on_token) {
  const int64_t B = static_cast<int64_t>(prompts.size());
  LATTE_REQUIRE(B > 0, "generate: no prompt");
  const int64_t T0 = static_cast<int64_t>(prompts[0].size());
  LATTE_REQUIRE(T0 > 0, "generate: the prompt is empty; give at least one token");
  for (const auto& p : prompts) LATTE_REQUIRE(static_cast<int64_t>(p.size()) == T0, "generate: prompts of a batch must have equal length");
  const int64_t V = model.config().vocab_size;
  for (const auto& p : prompts)
    for (int32_t id : p) LATTE_REQUIRE(id >= 0 && id < V, "generate: token id ", id, " outside the vocabulary [0, ", V, ")");
  const int64_t capacity = T0 + options.max_new_tokens;
  LATTE_REQUIRE(capacity <= model.config().max_seq_len, "generate: prompt (", T0, ") + max_new_tokens (", options.max_new_tokens,
                ") exceeds model.max_seq_len ", model.config().max_seq_len);
  KVCache cache = model.make_cache(B, capacity);

  auto to_device = [&](const std::vector<int32_t>& flat, int64_t t) {
    std::vector<double> v(flat.begin(), flat.end());
    return Tensor::from_vector(v, {B, t}, DType::I32, model.device());
  };
  // Prefill; keep the logits of the last prompt position.
  Tensor last;  // (B, V) on the host, f32
  const int64_t chunk = options.prefill_chunk > 0 ? options.prefill_chunk : T0;
  for (int64_t s = 0; s < T0; s += chunk) {
    const int64_t n = std::min(chunk, T0 - s);
    std::vector<int32_t> flat;
    for (const auto& p : prompts) flat.insert(flat.end(), p.begin() + s, p.begin() + s + n);
    Tensor logits = model.forward_cached(to_device(flat, n), cache, options.absorbed);  // (B, n, V)
    if (s + n == T0) last = logits.select(1, n - 1).to(DType::F32).cpu().contiguous();
  }
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(B));
  std::vector<bool> stopped(static_cast<size_t>(B), false);
  for (int64_t step = 0; step < options.max_new_tokens; ++step) {
    std::vector<int32_t> next(static_cast<size_t>(B));
    const float* rows = last.data<float>();
    for (int64_t b = 0; b < B; ++b) {
      std::vector<float> row(rows + b * V, rows + (b + 1) * V);
      const double draw = philox::uniform(options.seed, static_cast<uint64_t>(step) * static_cast<uint64_t>(B), static_cast<uint64_t>(b));
      next[static_cast<size_t>(b)] = sample_token(row, options, draw);
      if (stopped[static_cast<size_t>(b)]) continue;
      out[static_cast<size_t>(b)].push_back(next[static_cast<size_t>(b)]);
      if (on_token) on_token(b, next[static_cast<size_t>(b)]);
      if (next[static_cast<size_t>(b)] == options.stop_token) stopped[static_cast<size_t>(b)] = true;
    }
    if (std::all_of(stopped.begin(), stopped.end(), [](bool s) { return s; })) break;
    if (step + 1 == options.max_new_tokens) break;  // the last token needs no forward
    Tensor logits = model.forward_cached(to_device(next, 1), cache, options.absorbed);  // (B, 1, V)
    last = logits.select(1, 0).to(DType::F32).cpu().contiguous();
  }
  return out;
}

}  // namespace latte
