// The model section of a latte YAML config as a typed struct, its parser/validator, and the
// numbers derived from it without building the model: parameter counts, FLOPs per token (the
// spec's formula, for MFU) and KV-cache elements per token. `latte kv-report` and the trainer's
// MFU use these; tests check that the counts equal what TransformerLM actually allocates.
// spec/attention.md is the contract for every key's meaning.
#pragma once
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace YAML { class Node; }

namespace latte {

enum class AttentionKind { MHA, MLA, EGMLA, MLRA };
const char* attention_kind_name(AttentionKind kind);  // "mha", "mla", "egmla", "mlra"

enum class GatePosition { Latent, KV };
enum class GateNormKind { LayerNorm, RMSNorm };
enum class GateInit { Unit, Small };

// EG-MLA's embedding gate (spec: "EG-MLA").
struct GateConfig {
  GatePosition position = GatePosition::Latent;  // latent: gate c~_t (D = d_c); kv: gate k^N/v after wkv_b
  GateNormKind norm = GateNormKind::LayerNorm;   // norm applied after gating (rmsnorm: weight only)
  GateInit init = GateInit::Unit;                // unit: embed N(0,1), wgate N(0,1/sqrt(d_e)); small: both N(0, init.std)
  int64_t share_layers = 1;                      // consecutive layers sharing one gate table gates.g.embed
  int64_t embed_dim = 0;                         // d_e, width of the gate table; YAML default: kv_rank
};

// One attention sub-config (the `model.attention` section, or one entry of `model.attention_overrides`).
// All fields are resolved (no zeros standing for "default") after parse_model_config.
struct AttentionConfig {
  AttentionKind kind = AttentionKind::MHA;
  int64_t n_heads = 0;        // n_h, query heads
  // ---- MHA / GQA / MQA
  int64_t n_kv_heads = 0;     // n_kv: = n_h (MHA), 1 (MQA), a divisor of n_h (GQA); default n_heads
  int64_t head_dim = 0;       // d_h; default d_model / n_heads
  // ---- MLA family (mla, egmla, mlra)
  int64_t kv_rank = 0;        // d_c, width of the cached KV latent
  int64_t q_rank = 0;         // d_cq, query latent width; 0 = no query compression (wq applied directly)
  int64_t nope_dim = 0;       // d_n, per-head non-rotary key/query width; default d_model / n_heads
  int64_t rope_dim = 0;       // d_r, width of the shared rotary key (even); default nope_dim / 2
  int64_t v_dim = 0;          // d_v, per-head value width; default nope_dim
  bool latent_scale = false;  // multiply normed latents by sqrt(d/d_cq), sqrt(d/d_c) (MLRA: sqrt(d/d_l))
  bool latent_norm = true;    // false drops q_norm / kv_norm(s) (identity), as X-EcoMLA's upcycled MLA
  // ---- MLRA
  int64_t blocks = 1;         // L, latent blocks (mlra default 4); d_l = kv_rank / blocks
  int64_t branches = 1;       // attention branches summed per head (mlra default 4): 4 = MLRA-4, 2 = MLRA-2
  // ---- EG-MLA
  GateConfig gate;

  bool is_latent() const { return kind != AttentionKind::MHA; }  // MLA family (cache c_t + k^R_t)
  int64_t qk_dim() const { return is_latent() ? nope_dim + rope_dim : head_dim; }  // d_qk
  int64_t value_dim() const { return is_latent() ? v_dim : head_dim; }           // per-head output width
  double softmax_scale() const;                                                    // 1/sqrt(d_qk)
  int64_t block_dim() const { return kv_rank / blocks; }                          // d_l (d_c when not MLRA)
  int64_t head_groups() const { return blocks / branches; }                       // MLRA: G, heads split in G groups
  int64_t heads_per_block() const { return n_heads / head_groups(); }             // MLRA: H_b
  bool gate_on_kv() const { return kind == AttentionKind::EGMLA && gate.position == GatePosition::KV; }
  // Cached elements per token for one layer: 2 n_kv d_h (MHA family), d_c + d_r (MLA family).
  int64_t kv_elements_per_token() const;
};

// HF transformers' Llama-3 RoPE frequency rescaling (rope_scaling: {type: llama3, ...}).
struct RopeScaling {
  bool enabled = false;                               // absent in YAML = no rescaling
  double factor = 8.0;                                // divides the low frequencies
  double low_freq_factor = 1.0;                       // wavelengths above original/low_freq_factor are divided
  double high_freq_factor = 4.0;                      // wavelengths below original/high_freq_factor are kept
  int64_t original_max_position_embeddings = 8192;    // the pre-extension context length
};

struct InitConfig {
  double std = 0.02;          // N(0, std) for every matrix and embedding
  bool zero_out_proj = true;  // attn.wo and mlp.w_down start at zero
};

struct ModelConfig {
  int64_t vocab_size = 0;       // V, rows of tok_embed (padded to a multiple of 64/128; pads never targets)
  int64_t d_model = 0;          // d
  int64_t n_layers = 0;         // decoder blocks
  int64_t ffn_dim = 0;          // SwiGLU hidden width
  double norm_eps = 1e-6;       // eps of every RMSNorm / gate norm
  double rope_base = 10000.0;   // RoPE base
  RopeScaling rope_scaling;     // optional llama3 rescaling of inv_freq
  bool tie_embeddings = true;   // logits use tok_embed (no lm_head.weight)
  int64_t max_seq_len = 0;      // longest context (training T and decode capacity)
  bool recompute = false;       // activation recomputation per block (autograd::checkpoint)
  InitConfig init;              // initialisation rules
  AttentionConfig attention;    // attention of every layer whose layer_kinds entry is attention.kind
  // Optional per-layer kinds (upcycling keeps unconverted layers MHA). Empty = every layer attention.kind.
  std::vector<AttentionKind> layer_kinds;
  // Sub-config of each kind in layer_kinds other than attention.kind (YAML: attention_overrides: {mha: {...}}).
  std::map<AttentionKind, AttentionConfig> attention_overrides;

  AttentionKind layer_kind(int64_t layer) const;
  const AttentionConfig& layer_attention(int64_t layer) const;
  // The EG-MLA sub-config when any layer is egmla, else nullptr.
  const AttentionConfig* egmla_attention() const;
  // EG-MLA gate-table index of a layer (floor(i / share_layers)); -1 for non-egmla layers.
  int64_t gate_group(int64_t layer) const;
  // Gate-table indices in use, ascending (ceil(n_layers / share_layers) when every layer is egmla).
  std::vector<int64_t> gate_groups() const;
  // True when some layer gates K/V (cache keeps token ids; decode cannot absorb).
  bool needs_token_ids_in_cache() const;

  // Throws latte::Error naming the key path (prefixed by `where`) and the fix.
  void validate(const std::string& where = "model") const;
  // The resolved config as the YAML of a `model:` section (every default written out).
  YAML::Node to_yaml() const;
  std::string to_yaml_string() const;
};

// Parses a `model:` section. `where` prefixes key paths in errors ("model" or "run.yaml: model").
// Unknown keys are errors with a did-you-mean hint; the result is validated.
ModelConfig parse_model_config(const YAML::Node& node, const std::string& where = "model");
// Reads a YAML file with a top-level `model:` section (model-only or full experiment file; other sections ignored).
ModelConfig load_model_config(const std::string& path);

// ---- derived numbers ------------------------------------------------------------------------------
struct ParamCounts {
  int64_t total = 0;          // every parameter
  int64_t embedding = 0;      // tok_embed, lm_head (untied) and EG-MLA gate tables
  int64_t non_embedding = 0;  // total - embedding
  int64_t matmul = 0;         // N of the FLOPs formula: matmul weights + the LM head once (lookups excluded)
};
ParamCounts count_parameters(const ModelConfig& cfg);

// 6 N + 6 sum_layers B_r n_h (d_qk + d_v) T/2 with T = context (spec: "FLOPs, for MFU").
double flops_per_token(const ModelConfig& cfg, int64_t context);

struct KvFootprint {
  int64_t elements_per_token_per_layer = 0;  // of the first layer (all layers equal unless layer_kinds mixes)
  int64_t elements_per_token = 0;            // summed over layers
  int64_t token_ids_per_token = 0;           // EG-MLA(kv): one int32 per token for the whole model, else 0
  int64_t mha_elements_per_token_per_layer = 0;  // 2 d: MHA of the same width
};
KvFootprint kv_footprint(const ModelConfig& cfg);

}  // namespace latte
