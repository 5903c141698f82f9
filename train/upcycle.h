// Upcycling a trained MHA/GQA model into MLA by SVD (X-EcoMLA; spec/upcycling.md "SVD initialisation"):
// per converted layer, in fp32,
//   query      W_q [n_h d_h, d] = U S Vh  ->  wq_a = diag(S_r) Vh_r [r_q, d], wq_b = per head the nope rows
//              [0, d_n) and the last d_r rows of U_r [n_h (d_n + d_r), r_q]
//   key/value  W_kv = [Wk; Wv] with GQA's kv heads expanded to n_h heads [2 n_h d_h, d] = U S Vh
//              down = diag(S_r) Vh_r [r_kv, d]; rope key = mean over the kv heads of each head's last d_r
//              rows of Wk [d_r, d]; wkv_a = [down; rope key]; wkv_b = per head [first d_n rows of its K
//              block of U_r; all d_h rows of its V block] [n_h (d_n + d_h), r_kv]
// and everything else (wo, the MLP, norms, embeddings, lm_head) copied. The target has latent_norm and
// latent_scale off, so at full rank the student's content scores q^N.k^N and values equal the teacher's
// (pre-RoPE, restricted to the nope channels); the positional part is re-paired and distillation recovers it.
// Ranks: fixed, or the smallest prefix of singular values whose energy fraction stays <= a threshold,
// rounded up to a multiple of 8. latte's config has one MLA sub-config per model, so the energy rule's
// per-layer ranks are reported and the largest is used for every converted layer (each layer then keeps at
// least the requested energy). Unconverted layers stay MHA (layer_kinds + attention_overrides).
#pragma once
#include <yaml-cpp/yaml.h>

#include <cstdint>
#include <map>
#include <string>
#include <vector>

#include "layers/model_config.h"
#include "layers/safetensors.h"

namespace latte {

struct UpcycleOptions {
  std::vector<int64_t> layers;  // layers to convert; empty = all
  double energy = 0;            // > 0: ranks not fixed below come from this singular-value energy threshold
  int64_t q_rank = -1;          // fixed query rank (0: no query compression, wq copied); -1: energy or target config
  int64_t kv_rank = -1;         // fixed KV rank; -1: energy or target config
  int64_t rank_multiple = 8;    // ranks are rounded up to a multiple of this
};

struct LayerUpcycleReport {
  int64_t layer = 0;
  int64_t q_rank = 0, kv_rank = 0;                // used (q_rank 0: uncompressed query)
  int64_t q_energy_rank = 0, kv_energy_rank = 0;  // what the energy rule picks for this layer alone (0 without --energy)
  double q_energy = 1, kv_energy = 1;             // fraction of sum(S^2) kept at the used rank
  double q_error = 0, kv_error = 0;               // ||W - W_hat||_F / ||W||_F over the rows the student represents
};

struct UpcycleResult {
  ModelConfig config;                     // the student (MLA on converted layers)
  NamedTensors tensors;                   // f32, spec names, teacher order with converted attention replaced
  std::vector<LayerUpcycleReport> report;  // one per converted layer
  std::vector<std::string> notes;         // adjustments worth telling the user (forced latent_norm false, padded ranks)
};

// Smallest-energy rank rule of spec/upcycling.md: the number of prefixes k with
// cumsum(S^2)_k / sum(S^2) <= energy (at least 1), before rounding.
int64_t energy_rank(const std::vector<double>& singular_values, double energy);
// ceil(rank / multiple) * multiple.
int64_t round_rank(int64_t rank, int64_t multiple);
// "0-15", "0,2,5-7", "all" -> sorted unique layer indices, each < n_layers.
std::vector<int64_t> parse_layer_list(const std::string& text, int64_t n_layers);
// "q:64,kv:128" (either part optional) -> options.q_rank / options.kv_rank.
void parse_ranks(const std::string& text, UpcycleOptions* options);

// The student's MLA sub-config from the teacher and an optional target `model:` section (YAML; may hold
// only `attention:`). Keys the target leaves out are filled for upcycling: nope_dim = d_h - rope_dim,
// rope_dim = d_h / 2, v_dim = d_h. Shapes the upcycle cannot change (d_model, vocab, n_heads, ...) must
// match the teacher; errors name the key. `max_seq_len` may differ (returned through *max_seq_len).
AttentionConfig upcycle_target_attention(const ModelConfig& teacher, const YAML::Node& target_model,
                                         const std::string& where, const UpcycleOptions& options,
                                         int64_t* max_seq_len, std::vector<std::string>* notes);

// The SVD initialisation. teacher_weights: the teacher's tensors (any float dtype, spec names);
// target: from upcycle_target_attention (its ranks are used where options fix none).
UpcycleResult upcycle(const ModelConfig& teacher, const NamedTensors& teacher_weights, const AttentionConfig& target,
                      const UpcycleOptions& options);

// The per-layer table printed by `latte upcycle` (and the KV footprint before/after).
std::string format_upcycle_report(const ModelConfig& teacher, const UpcycleResult& result);

}  // namespace latte
