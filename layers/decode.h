// Autoregressive generation with the KV cache: prefill the prompt (whole or in chunks), then one
// token per step, sampling on the host from the last position's logits (greedy, temperature, top-k).
// Sampling draws come from Philox (seed, step, row), so a run is reproducible from its seed.
// Under tensor parallelism every TP rank calls generate() with the same prompts and options (the model's
// forward_cached contains collectives): the logits are gathered identically on every rank, so every rank
// samples the same tokens, and each rank's cache holds only its shard (layers/kv_cache.h).
#pragma once
#include <cstdint>
#include <functional>
#include <vector>

#include "layers/transformer.h"

namespace latte {

struct GenerateOptions {
  int64_t max_new_tokens = 64;  // tokens appended per row (fewer when every row hit stop_token)
  double temperature = 1.0;     // logits are divided by it; <= 0 means greedy
  int64_t top_k = 0;            // sample among the k most likely tokens; 0 = the whole vocabulary
  bool greedy = false;          // argmax (ties: lowest id)
  uint64_t seed = 0;            // Philox key of the sampling draws
  bool absorbed = false;        // MLA-family layers attend in latent space (see AttentionContext)
  int32_t stop_token = -1;      // a row stops after emitting it; -1 = never
  int64_t prefill_chunk = 0;    // prompt positions per prefill call; 0 = the whole prompt at once
  int64_t sample_vocab = 0;     // only ids < sample_vocab are drawn (the tokenizer's size when the model's
                                // vocab is padded); 0 = every id
};

// Picks the next token from one row of logits (V floats, the first sample_vocab of them when set).
// `draw` is a uniform number in (0, 1].
int32_t sample_token(const std::vector<float>& logits, const GenerateOptions& options, double draw);

// Generates continuations of equal-length prompts (rows of a batch). Returns each row's new tokens.
// on_token(row, token) is called as tokens are produced (streaming output).
std::vector<std::vector<int32_t>> generate(const TransformerLM& model, const std::vector<std::vector<int32_t>>& prompts,
                                           const GenerateOptions& options,
                                           const std::function<void(int64_t, int32_t)>& on_token = {});

}  // namespace latte
