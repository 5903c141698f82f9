// X-EcoMLA's SVD initialisation of MLA from MHA/GQA (train/upcycle.h). Matrices are handled as
// row-major Eigen maps of the [out, in] weights; the decompositions are Eigen::BDCSVD in fp32, all
// layers first (the energy rule's rank is the largest over layers), then the factors are assembled.
#include "train/upcycle.h"

#include <Eigen/Dense>
#include <Eigen/SVD>
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <set>
#include <thread>

#include "core/error.h"

namespace latte {

namespace {

using RowMat = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

RowMat to_matrix(const Tensor& t) {
  LATTE_CHECK(t.dim() == 2, "upcycle: expected a matrix, got ", t.str());
  Tensor c = t.to(DType::F32).cpu().contiguous();
  return Eigen::Map<const RowMat>(c.data<float>(), c.size(0), c.size(1));
}

Tensor to_tensor(const RowMat& m) {
  Tensor t = Tensor::empty({m.rows(), m.cols()}, DType::F32);
  std::memcpy(t.data_ptr(), m.data(), static_cast<size_t>(m.size()) * sizeof(float));
  return t;
}

// W = U diag(S) V^T, thin.
struct Factorization {
  Eigen::MatrixXf U;  // (m, k)
  Eigen::VectorXf S;  // (k) descending
  Eigen::MatrixXf V;  // (n, k)
  std::vector<double> singular_values() const { return {S.data(), S.data() + S.size()}; }
  double energy_kept(int64_t r) const {
    double kept = 0, total = 0;
    for (int64_t i = 0; i < S.size(); ++i) {
      const double s2 = static_cast<double>(S[i]) * S[i];
      total += s2;
      if (i < r) kept += s2;
    }
    return total > 0 ? kept / total : 1.0;
  }
  // up = U_r (m, r), down = diag(S_r) V_r^T (r, n); components beyond k are zero.
  void truncate(int64_t r, RowMat* up, RowMat* down) const {
    const int64_t k = std::min<int64_t>(r, S.size());
    up->setZero(U.rows(), r);
    down->setZero(r, V.rows());
    up->leftCols(k) = U.leftCols(k);
    down->topRows(k) = S.head(k).asDiagonal() * V.leftCols(k).transpose();
  }
};

Factorization factorize(const RowMat& w) {
  Eigen::BDCSVD<Eigen::MatrixXf> svd(Eigen::MatrixXf(w), Eigen::ComputeThinU | Eigen::ComputeThinV);
  return {svd.matrixU(), svd.singularValues(), svd.matrixV()};
}

double relative_error(const RowMat& target, const RowMat& approx) {
  const double norm = static_cast<double>(target.norm());
  return norm > 0 ? static_cast<double>((target - approx).norm()) / norm : 0.0;
}

// One converted layer's teacher matrices and decompositions.
struct LayerWork {
  int64_t layer = 0;
  RowMat wq;        // (n_h d_h, d)
  RowMat wk;        // (n_kv d_h, d)
  RowMat w_kv;      // (2 n_h d_h, d): [Wk expanded to n_h heads; Wv expanded]
  Factorization q;  // of wq (when the query is compressed)
  Factorization kv; // of w_kv
};

std::string layer_name(int64_t layer, const std::string& rest) { return "layers." + std::to_string(layer) + "." + rest; }

// Parses one integer of a list; `what` names the whole argument in errors.
int64_t parse_index(const std::string& text, const std::string& what) {
  size_t used = 0;
  long long v = -1;
  try {
    v = std::stoll(text, &used);
  } catch (const std::exception&) {
    used = 0;
  }
  LATTE_REQUIRE(used == text.size() && !text.empty() && v >= 0, what, ": '", text, "' is not a non-negative integer");
  return v;
}

bool same_attention(const AttentionConfig& a, const AttentionConfig& b) {
  ModelConfig x, y;
  x.attention = a;
  y.attention = b;
  return YAML::Dump(x.to_yaml()["attention"]) == YAML::Dump(y.to_yaml()["attention"]);
}

}  // namespace

int64_t energy_rank(const std::vector<double>& s, double energy) {
  double total = 0;
  for (double v : s) total += v * v;
  if (total <= 0) return 1;
  int64_t count = 0;
  double cum = 0;
  for (double v : s) {
    cum += v * v;
    if (cum / total <= energy + 1e-12) ++count;
    else break;
  }
  return std::max<int64_t>(count, 1);
}

int64_t round_rank(int64_t rank, int64_t multiple) {
  LATTE_REQUIRE(multiple > 0, "rank multiple must be positive, got ", multiple);
  return (rank + multiple - 1) / multiple * multiple;
}

std::vector<int64_t> parse_layer_list(const std::string& text, int64_t n_layers) {
  const std::string what = "--layers " + text;
  std::set<int64_t> layers;
  if (text == "all") {
    for (int64_t i = 0; i < n_layers; ++i) layers.insert(i);
    return {layers.begin(), layers.end()};
  }
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    LATTE_REQUIRE(!item.empty(), what, ": empty entry; expected e.g. 0-15 or 0,2,4-7");
    const size_t dash = item.find('-');
    int64_t lo = 0, hi = 0;
    if (dash == std::string::npos) {
      lo = hi = parse_index(item, what);
    } else {
      lo = parse_index(item.substr(0, dash), what);
      hi = parse_index(item.substr(dash + 1), what);
      LATTE_REQUIRE(lo <= hi, what, ": range ", item, " runs backwards");
    }
    LATTE_REQUIRE(hi < n_layers, what, ": layer ", hi, " does not exist (the teacher has layers 0-", n_layers - 1, ")");
    for (int64_t i = lo; i <= hi; ++i) layers.insert(i);
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  return {layers.begin(), layers.end()};
}

void parse_ranks(const std::string& text, UpcycleOptions* options) {
  size_t start = 0;
  while (start <= text.size()) {
    const size_t comma = text.find(',', start);
    const std::string item = text.substr(start, comma == std::string::npos ? std::string::npos : comma - start);
    const size_t colon = item.find(':');
    LATTE_REQUIRE(colon != std::string::npos, "--ranks ", text, ": '", item, "' should be q:<rank> or kv:<rank>");
    const std::string key = item.substr(0, colon);
    const int64_t value = parse_index(item.substr(colon + 1), "--ranks " + text);
    if (key == "q") options->q_rank = value;
    else if (key == "kv") options->kv_rank = value;
    else LATTE_FAIL("--ranks ", text, ": unknown matrix '", key, "' (q or kv)");
    if (comma == std::string::npos) break;
    start = comma + 1;
  }
  LATTE_REQUIRE(options->kv_rank != 0, "--ranks ", text, ": kv rank must be positive (the latent is the KV cache)");
}

AttentionConfig upcycle_target_attention(const ModelConfig& teacher, const YAML::Node& target_model,
                                         const std::string& where, const UpcycleOptions& options,
                                         int64_t* max_seq_len, std::vector<std::string>* notes) {
  // The teacher's MHA settings (of the layers being converted: every MHA layer shares one sub-config).
  const AttentionConfig* mha = nullptr;
  for (int64_t i = 0; i < teacher.n_layers && !mha; ++i)
    if (teacher.layer_kind(i) == AttentionKind::MHA) mha = &teacher.layer_attention(i);
  LATTE_REQUIRE(mha, "upcycle: the teacher has no MHA/GQA layer to convert");
  const int64_t dh = mha->head_dim;

  YAML::Node target = target_model && target_model.IsDefined() && !target_model.IsNull() ? target_model
                                                                                         : YAML::Node(YAML::NodeType::Map);
  LATTE_REQUIRE(target.IsMap(), where, ": model must be a mapping");
  for (const char* key : {"layer_kinds", "attention_overrides"})
    LATTE_REQUIRE(!target[key], where, ": model.", key, " is set; choose the converted layers with --layers instead");
  YAML::Node merged = teacher.to_yaml();
  merged.remove("layer_kinds");
  merged.remove("attention_overrides");
  for (const auto& kv : target) {
    const std::string key = kv.first.as<std::string>();
    if (key != "attention") merged[key] = YAML::Clone(kv.second);
  }
  YAML::Node att = target["attention"] ? YAML::Clone(target["attention"]) : YAML::Node(YAML::NodeType::Map);
  LATTE_REQUIRE(att.IsMap(), where, ": model.attention must be a mapping");
  const std::string kind = att["kind"] ? att["kind"].as<std::string>() : "mla";
  LATTE_REQUIRE(kind == "mla", where, ": model.attention.kind is ", kind,
                "; the SVD initialisation produces kind mla (latent_norm false)");
  att["kind"] = "mla";
  if (!att["n_heads"]) att["n_heads"] = mha->n_heads;
  if (!att["rope_dim"]) att["rope_dim"] = att["nope_dim"] ? dh - att["nope_dim"].as<int64_t>() : dh / 2;
  if (!att["nope_dim"]) att["nope_dim"] = dh - att["rope_dim"].as<int64_t>();
  if (!att["v_dim"]) att["v_dim"] = dh;
  for (const char* key : {"latent_norm", "latent_scale"}) {
    if (att[key] && att[key].as<bool>())
      notes->push_back(str(where, ": model.attention.", key, " true replaced by false (the SVD factors reproduce the "
                           "teacher only without a latent norm/scale, as in X-EcoMLA)"));
    att[key] = false;
  }
  if (!att["kv_rank"]) {
    LATTE_REQUIRE(options.kv_rank > 0 || options.energy > 0, where,
                  ": model.attention.kv_rank is missing; give --ranks kv:<rank>, --energy <fraction> or attention.kv_rank");
    att["kv_rank"] = 8;  // placeholder; upcycle() picks the rank
  }
  if (!att["q_rank"]) att["q_rank"] = 0;
  merged["attention"] = att;
  const ModelConfig parsed = parse_model_config(merged, where + ": model");

  auto differs = [&](const char* key, const std::string& mine, const std::string& theirs) {
    LATTE_REQUIRE(mine == theirs, where, ": model.", key, " is ", mine, " but the teacher's is ", theirs,
                  "; upcycling changes only the attention of the converted layers");
  };
  differs("vocab_size", std::to_string(parsed.vocab_size), std::to_string(teacher.vocab_size));
  differs("d_model", std::to_string(parsed.d_model), std::to_string(teacher.d_model));
  differs("n_layers", std::to_string(parsed.n_layers), std::to_string(teacher.n_layers));
  differs("ffn_dim", std::to_string(parsed.ffn_dim), std::to_string(teacher.ffn_dim));
  differs("tie_embeddings", parsed.tie_embeddings ? "true" : "false", teacher.tie_embeddings ? "true" : "false");
  differs("norm_eps", str(parsed.norm_eps), str(teacher.norm_eps));
  differs("rope_base", str(parsed.rope_base), str(teacher.rope_base));
  differs("rope_scaling", YAML::Dump(parsed.to_yaml()["rope_scaling"]), YAML::Dump(teacher.to_yaml()["rope_scaling"]));

  const AttentionConfig& a = parsed.attention;
  LATTE_REQUIRE(a.n_heads == mha->n_heads, where, ": model.attention.n_heads is ", a.n_heads, " but the teacher has ",
                mha->n_heads, " heads; the upcycled MLA keeps every query head");
  LATTE_REQUIRE(a.nope_dim + a.rope_dim == dh, where, ": model.attention.nope_dim + rope_dim = ", a.nope_dim, " + ", a.rope_dim,
                " must equal the teacher's head_dim ", dh, " (per head the query keeps its nope rows and its last rope_dim rows)");
  LATTE_REQUIRE(a.v_dim == dh, where, ": model.attention.v_dim is ", a.v_dim, " but must equal the teacher's head_dim ", dh,
                " (wo is copied unchanged)");
  *max_seq_len = parsed.max_seq_len;
  return a;
}

UpcycleResult upcycle(const ModelConfig& teacher, const NamedTensors& teacher_weights, const AttentionConfig& target,
                      const UpcycleOptions& options) {
  LATTE_REQUIRE(target.kind == AttentionKind::MLA && !target.latent_norm && !target.latent_scale,
                "upcycle: the target must be kind mla with latent_norm and latent_scale false");
  UpcycleResult result;
  std::map<std::string, Tensor> weights;
  for (const auto& [name, t] : teacher_weights) weights[name] = t;
  auto weight = [&](const std::string& name) -> const Tensor& {
    auto it = weights.find(name);
    LATTE_REQUIRE(it != weights.end(), "upcycle: the teacher's weights have no ", name);
    return it->second;
  };

  std::vector<int64_t> layers = options.layers;
  if (layers.empty())
    for (int64_t i = 0; i < teacher.n_layers; ++i) layers.push_back(i);
  const std::set<int64_t> converted(layers.begin(), layers.end());
  for (int64_t i : layers) {
    LATTE_REQUIRE(i >= 0 && i < teacher.n_layers, "upcycle: layer ", i, " does not exist (0-", teacher.n_layers - 1, ")");
    LATTE_REQUIRE(teacher.layer_kind(i) == AttentionKind::MHA, "upcycle: layer ", i, " of the teacher is ",
                  attention_kind_name(teacher.layer_kind(i)), ", not MHA/GQA; leave it out of --layers");
  }
  const AttentionConfig& mha = teacher.layer_attention(layers.front());
  const int64_t H = mha.n_heads, Hkv = mha.n_kv_heads, dh = mha.head_dim, d = teacher.d_model;
  const int64_t dn = target.nope_dim, dr = target.rope_dim, group = H / Hkv;
  LATTE_REQUIRE(target.n_heads == H && dn + dr == dh && target.v_dim == dh,
                "upcycle: target heads/widths do not fit the teacher (use upcycle_target_attention)");

  // ---- decompositions ------------------------------------------------------------------------------
  const bool fixed_q = options.q_rank >= 0, fixed_kv = options.kv_rank > 0;
  const bool compress_q = fixed_q ? options.q_rank > 0 : (options.energy > 0 || target.q_rank > 0);
  std::vector<LayerWork> work(layers.size());
  for (size_t li = 0; li < layers.size(); ++li) {
    const int64_t i = layers[li];
    LayerWork& w = work[li];
    w.layer = i;
    w.wq = to_matrix(weight(layer_name(i, "attn.wq.weight")));  // (n_h d_h, d)
    w.wk = to_matrix(weight(layer_name(i, "attn.wk.weight")));  // (n_kv d_h, d)
    const RowMat wv = to_matrix(weight(layer_name(i, "attn.wv.weight")));  // (n_kv d_h, d)
    LATTE_REQUIRE(w.wq.rows() == H * dh && w.wq.cols() == d && w.wk.rows() == Hkv * dh && wv.rows() == Hkv * dh,
                  "upcycle: layer ", i, " projections do not have the teacher config's shapes");
    // GQA expansion: query head h reads kv head h / (n_h / n_kv).
    w.w_kv.resize(2 * H * dh, d);
    for (int64_t h = 0; h < H; ++h) {
      w.w_kv.middleRows(h * dh, dh) = w.wk.middleRows((h / group) * dh, dh);
      w.w_kv.middleRows((H + h) * dh, dh) = wv.middleRows((h / group) * dh, dh);
    }
  }
  // The SVDs are independent per layer: spread them over the cores (Eigen's BDCSVD is single-threaded).
  const size_t n_threads = std::clamp<size_t>(std::thread::hardware_concurrency(), 1, work.size());
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t li = next++; li < work.size(); li = next++) {
      if (compress_q) work[li].q = factorize(work[li].wq);
      work[li].kv = factorize(work[li].w_kv);
    }
  };
  std::vector<std::thread> threads;
  for (size_t t = 1; t < n_threads; ++t) threads.emplace_back(worker);
  worker();
  for (std::thread& t : threads) t.join();

  // ---- ranks ---------------------------------------------------------------------------------------
  const int64_t m = options.rank_multiple;
  int64_t q_rank = 0, kv_rank = 0;
  for (LayerWork& w : work) {
    LayerUpcycleReport r;
    r.layer = w.layer;
    if (options.energy > 0) {
      if (compress_q && !fixed_q) r.q_energy_rank = round_rank(energy_rank(w.q.singular_values(), options.energy), m);
      if (!fixed_kv) r.kv_energy_rank = round_rank(energy_rank(w.kv.singular_values(), options.energy), m);
    }
    q_rank = std::max(q_rank, r.q_energy_rank);
    kv_rank = std::max(kv_rank, r.kv_energy_rank);
    result.report.push_back(r);
  }
  auto fixed = [&](int64_t rank, const char* what) {
    const int64_t rounded = round_rank(rank, m);
    if (rounded != rank) result.notes.push_back(str(what, " rank ", rank, " rounded up to ", rounded, " (a multiple of ", m, ")"));
    return rounded;
  };
  if (!compress_q) q_rank = 0;
  else if (fixed_q) q_rank = fixed(options.q_rank, "query");
  else if (options.energy <= 0) q_rank = fixed(target.q_rank, "query");
  if (fixed_kv) kv_rank = fixed(options.kv_rank, "kv");
  else if (options.energy <= 0) kv_rank = fixed(target.kv_rank, "kv");
  if (q_rank > std::min(H * dh, d))
    result.notes.push_back(str("query rank ", q_rank, " exceeds rank(W_q) <= ", std::min(H * dh, d),
                               "; the extra latent channels start (and, with both factors zero, stay) at zero"));
  if (kv_rank > std::min(2 * H * dh, d))
    result.notes.push_back(str("kv rank ", kv_rank, " exceeds rank(W_kv) <= ", std::min(2 * H * dh, d),
                               "; the extra latent channels start (and, with both factors zero, stay) at zero"));

  // ---- student config ------------------------------------------------------------------------------
  ModelConfig student = teacher;
  student.attention = target;
  student.attention.q_rank = q_rank;
  student.attention.kv_rank = kv_rank;
  student.attention_overrides.clear();
  student.layer_kinds.clear();
  bool mixed = false;
  for (int64_t i = 0; i < teacher.n_layers; ++i) {
    const AttentionKind kind = converted.count(i) ? AttentionKind::MLA : teacher.layer_kind(i);
    student.layer_kinds.push_back(kind);
    if (kind == AttentionKind::MLA) {
      LATTE_REQUIRE(converted.count(i) || same_attention(teacher.layer_attention(i), student.attention), "upcycle: layer ", i,
                    " of the teacher is already MLA with other settings; convert it too or use the same MLA settings");
      continue;
    }
    mixed = true;
    student.attention_overrides[kind] = teacher.layer_attention(i);
  }
  if (!mixed) student.layer_kinds.clear();
  student.validate("upcycled model");
  result.config = student;

  // ---- factors -------------------------------------------------------------------------------------
  std::map<int64_t, NamedTensors> attention_tensors;  // per converted layer, in MLA registration order
  for (size_t li = 0; li < work.size(); ++li) {
    LayerWork& w = work[li];
    LayerUpcycleReport& r = result.report[li];
    r.q_rank = q_rank;
    r.kv_rank = kv_rank;
    NamedTensors& out = attention_tensors[w.layer];
    // Rows of a head the student keeps from the query (and, for K, its nope rows).
    RowMat q_target(H * (dn + dr), d);  // (n_h (d_n + d_r), d)
    for (int64_t h = 0; h < H; ++h) {
      q_target.middleRows(h * (dn + dr), dn) = w.wq.middleRows(h * dh, dn);
      q_target.middleRows(h * (dn + dr) + dn, dr) = w.wq.middleRows(h * dh + dh - dr, dr);
    }
    if (q_rank == 0) {
      out.emplace_back(layer_name(w.layer, "attn.wq.weight"), to_tensor(q_target));
    } else {
      RowMat up, down;  // (n_h d_h, r_q), (r_q, d)
      w.q.truncate(q_rank, &up, &down);
      RowMat wq_b(H * (dn + dr), q_rank);  // (n_h (d_n + d_r), r_q)
      for (int64_t h = 0; h < H; ++h) {
        wq_b.middleRows(h * (dn + dr), dn) = up.middleRows(h * dh, dn);
        wq_b.middleRows(h * (dn + dr) + dn, dr) = up.middleRows(h * dh + dh - dr, dr);
      }
      r.q_energy = w.q.energy_kept(q_rank);
      r.q_error = relative_error(q_target, wq_b * down);
      out.emplace_back(layer_name(w.layer, "attn.wq_a.weight"), to_tensor(down));
      out.emplace_back(layer_name(w.layer, "attn.wq_b.weight"), to_tensor(wq_b));
    }
    RowMat up, down;  // (2 n_h d_h, r_kv), (r_kv, d)
    w.kv.truncate(kv_rank, &up, &down);
    RowMat rope_key = RowMat::Zero(dr, d);  // (d_r, d): mean over kv heads of each head's last d_r rows of Wk
    for (int64_t g = 0; g < Hkv; ++g) rope_key += w.wk.middleRows(g * dh + dh - dr, dr);
    rope_key /= static_cast<float>(Hkv);
    RowMat wkv_a(kv_rank + dr, d);  // (r_kv + d_r, d) = [down; rope key]
    wkv_a.topRows(kv_rank) = down;
    wkv_a.bottomRows(dr) = rope_key;
    RowMat wkv_b(H * (dn + dh), kv_rank);  // (n_h (d_n + d_h), r_kv), per head [k^N rows | v rows]
    RowMat kv_target(H * (dn + dh), d);    // the teacher rows wkv_b down approximates
    for (int64_t h = 0; h < H; ++h) {
      wkv_b.middleRows(h * (dn + dh), dn) = up.middleRows(h * dh, dn);
      wkv_b.middleRows(h * (dn + dh) + dn, dh) = up.middleRows((H + h) * dh, dh);
      kv_target.middleRows(h * (dn + dh), dn) = w.w_kv.middleRows(h * dh, dn);
      kv_target.middleRows(h * (dn + dh) + dn, dh) = w.w_kv.middleRows((H + h) * dh, dh);
    }
    r.kv_energy = w.kv.energy_kept(kv_rank);
    r.kv_error = relative_error(kv_target, wkv_b * down);
    out.emplace_back(layer_name(w.layer, "attn.wkv_a.weight"), to_tensor(wkv_a));
    out.emplace_back(layer_name(w.layer, "attn.wkv_b.weight"), to_tensor(wkv_b));
    w = LayerWork();  // free the decompositions
  }

  // ---- assemble in the teacher's order -------------------------------------------------------------
  for (const auto& [name, t] : teacher_weights) {
    int64_t layer = -1;
    std::string rest;
    if (name.rfind("layers.", 0) == 0) {
      const size_t dot = name.find('.', 7);
      layer = std::stoll(name.substr(7, dot - 7));
      rest = name.substr(dot + 1);
    }
    if (layer >= 0 && converted.count(layer)) {
      if (rest == "attn.wq.weight") {
        for (auto& entry : attention_tensors.at(layer)) result.tensors.push_back(entry);
        continue;
      }
      if (rest == "attn.wk.weight" || rest == "attn.wv.weight") continue;
    }
    result.tensors.emplace_back(name, t.to(DType::F32).cpu().contiguous());
  }
  return result;
}

std::string format_upcycle_report(const ModelConfig& teacher, const UpcycleResult& result) {
  const AttentionConfig& a = result.config.attention;
  std::string out;
  char line[256];
  std::snprintf(line, sizeof(line), "%5s | %6s %6s %8s %8s | %6s %6s %8s %8s\n", "layer", "q_rank", "energy", "kept",
                "rel_err", "kv_rnk", "energy", "kept", "rel_err");
  out += line;
  out += std::string(std::strlen(line) - 1, '-') + "\n";
  for (const LayerUpcycleReport& r : result.report) {
    auto rank_or_dash = [](int64_t v) { return v > 0 ? std::to_string(v) : std::string("-"); };
    std::snprintf(line, sizeof(line), "%5lld | %6s %6s %8.4f %8.2e | %6lld %6s %8.4f %8.2e\n", static_cast<long long>(r.layer),
                  rank_or_dash(r.q_rank).c_str(), rank_or_dash(r.q_energy_rank).c_str(), r.q_energy, r.q_error,
                  static_cast<long long>(r.kv_rank), rank_or_dash(r.kv_energy_rank).c_str(), r.kv_energy, r.kv_error);
    out += line;
  }
  const AttentionConfig& mha = teacher.layer_attention(result.report.front().layer);
  const int64_t before = mha.kv_elements_per_token(), after = a.kv_elements_per_token();
  std::snprintf(line, sizeof(line),
                "(energy: the rank the energy rule picks for that layer alone; kept: fraction of sum S^2 at the used rank)\n"
                "KV cache per token per converted layer: %lld (2 n_kv d_h) -> %lld (kv_rank %lld + rope_dim %lld), %.1f%%, %.1fx smaller\n",
                static_cast<long long>(before), static_cast<long long>(after), static_cast<long long>(a.kv_rank),
                static_cast<long long>(a.rope_dim), 100.0 * static_cast<double>(after) / static_cast<double>(before),
                static_cast<double>(before) / static_cast<double>(after));
  out += line;
  const KvFootprint t = kv_footprint(teacher), s = kv_footprint(result.config);
  std::snprintf(line, sizeof(line), "KV cache per token, whole model: %lld -> %lld elements\n",
                static_cast<long long>(t.elements_per_token), static_cast<long long>(s.elements_per_token));
  out += line;
  return out;
}

}  // namespace latte
