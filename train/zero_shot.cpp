// Zero-shot scoring (train/zero_shot.h): task-file parsing and validation, lm-eval's request
// construction and tokenization, the batched log-likelihood scorer, and the metrics.
#include "train/zero_shot.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>
#include <set>
#include <sstream>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "core/error.h"

namespace fs = std::filesystem;

namespace latte {

const char* scoring_name(Scoring scoring) { return scoring == Scoring::Partial ? "partial" : "full"; }

// ---- task files -----------------------------------------------------------------------------------------

namespace {

const std::set<std::string> kItemKeys = {"context", "choices", "label", "id", "scoring", "meta"};
const std::set<std::string> kHeaderKeys = {"name", "scoring", "primary", "description", "source"};

// nlohmann's messages start with "[json.exception.parse_error.101] "; the bracket says nothing to a user.
std::string clean_json_error(const std::string& what) {
  const size_t close = what.find("] ");
  return what.rfind("[json.exception", 0) == 0 && close != std::string::npos ? what.substr(close + 2) : what;
}

std::string list_keys(const std::set<std::string>& keys) {
  std::string out;
  for (const std::string& k : keys) out += (out.empty() ? "" : ", ") + k;
  return out;
}

Scoring parse_scoring(const nlohmann::json& value, const std::string& where) {
  LATTE_REQUIRE(value.is_string() && (value == "full" || value == "partial"), where,
                "\"scoring\" must be \"full\" or \"partial\", got ", value.dump());
  return value == "partial" ? Scoring::Partial : Scoring::Full;
}

// Python's str.strip() for the ASCII whitespace characters it strips.
bool is_space(char c) { return c == ' ' || (c >= '\t' && c <= '\r') || (c >= '\x1c' && c <= '\x1f'); }
std::string strip(const std::string& s) {
  size_t b = 0, e = s.size();
  while (b < e && is_space(s[b])) ++b;
  while (e > b && is_space(s[e - 1])) --e;
  return s.substr(b, e - b);
}

}  // namespace

Task parse_task(const std::string& text, const std::string& path) {
  Task task;
  task.path = path;
  task.name = fs::path(path).stem().string();
  Scoring default_scoring = Scoring::Full;
  int64_t header_line = 0;
  bool seen_object = false;
  size_t start = 0;
  int64_t line_no = 0;
  while (start < text.size()) {
    size_t end = text.find('\n', start);
    if (end == std::string::npos) end = text.size();
    std::string line = text.substr(start, end - start);
    start = end + 1;
    ++line_no;
    if (line_no == 1 && line.rfind("\xEF\xBB\xBF", 0) == 0) line = line.substr(3);  // UTF-8 byte-order mark
    if (strip(line).empty()) continue;
    const std::string where = str(path, ":", line_no, ": ");
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception& e) {
      LATTE_FAIL(where, "not valid JSON: ", clean_json_error(e.what()));
    }
    LATTE_REQUIRE(j.is_object(), where, "each line must be a JSON object {\"context\": ..., \"choices\": [...], \"label\": ...}, got ",
                  j.type_name());

    if (!j.contains("context")) {
      // A header line: only as the first object, and only with header keys.
      bool header_keys_only = !j.empty();
      for (const auto& [key, value] : j.items()) header_keys_only = header_keys_only && kHeaderKeys.count(key);
      LATTE_REQUIRE(header_keys_only, where, "missing \"context\" (an item needs \"context\", \"choices\" and \"label\"; a header line "
                                             "may only hold ", list_keys(kHeaderKeys), ")");
      LATTE_REQUIRE(!seen_object, where, "a header line (no \"context\") must be the first line of the file");
      header_line = line_no;
      if (j.contains("name")) {
        LATTE_REQUIRE(j["name"].is_string() && !j["name"].get<std::string>().empty(), where, "\"name\" must be a non-empty string");
        task.name = j["name"].get<std::string>();
      }
      if (j.contains("scoring")) default_scoring = parse_scoring(j["scoring"], where);
      if (j.contains("primary")) {
        LATTE_REQUIRE(j["primary"] == "acc" || j["primary"] == "acc_norm", where, "\"primary\" must be \"acc\" or \"acc_norm\", got ",
                      j["primary"].dump());
        task.primary = j["primary"].get<std::string>();
      }
      for (const char* key : {"description", "source"})
        LATTE_REQUIRE(!j.contains(key) || j[key].is_string(), where, "\"", key, "\" must be a string");
      seen_object = true;
      continue;
    }
    seen_object = true;

    for (const auto& [key, value] : j.items())
      LATTE_REQUIRE(kItemKeys.count(key), where, "unknown key \"", key, "\" (an item has ", list_keys(kItemKeys), ")");
    TaskItem item;
    item.line = line_no;
    LATTE_REQUIRE(j["context"].is_string(), where, "\"context\" must be a string, got ", j["context"].type_name());
    item.context = j["context"].get<std::string>();
    LATTE_REQUIRE(j.contains("choices"), where, "missing \"choices\" (a list of continuation strings)");
    const nlohmann::json& choices = j["choices"];
    LATTE_REQUIRE(choices.is_array() && !choices.empty(), where, "\"choices\" must be a non-empty list of strings, got ",
                  choices.dump());
    for (size_t c = 0; c < choices.size(); ++c) {
      LATTE_REQUIRE(choices[c].is_string(), where, "choice ", c, " must be a string, got ", choices[c].type_name());
      LATTE_REQUIRE(!choices[c].get<std::string>().empty(), where, "choice ", c, " is empty (nothing to score)");
      item.choices.push_back(choices[c].get<std::string>());
    }
    LATTE_REQUIRE(j.contains("label"), where, "missing \"label\" (index of the right choice)");
    LATTE_REQUIRE(j["label"].is_number_integer(), where, "\"label\" must be an integer index, got ", j["label"].dump());
    item.label = j["label"].get<int64_t>();
    LATTE_REQUIRE(item.label >= 0 && item.label < static_cast<int64_t>(item.choices.size()), where, "\"label\" is ", item.label,
                  " but the item has ", item.choices.size(), " choice(s) (valid: 0..", item.choices.size() - 1, ")");
    if (j.contains("id")) {
      LATTE_REQUIRE(j["id"].is_string() || j["id"].is_number_integer(), where, "\"id\" must be a string or an integer");
      item.id = j["id"].is_string() ? j["id"].get<std::string>() : j["id"].dump();
    }
    item.scoring = j.contains("scoring") ? parse_scoring(j["scoring"], where) : default_scoring;
    if (item.scoring == Scoring::Partial) {
      LATTE_REQUIRE(item.choices.size() >= 2, where, "partial scoring needs at least 2 choices to substitute for the blank");
      const size_t blank = item.context.find('_');
      LATTE_REQUIRE(blank != std::string::npos, where, "partial scoring needs a blank \"_\" in \"context\" for the choice");
      LATTE_REQUIRE(!strip(item.context.substr(blank + 1)).empty(), where,
                    "partial scoring scores the text after the blank \"_\", but nothing follows it");
    }
    if (!task.items.empty()) {
      const bool first_single = task.items.front().choices.size() == 1;
      LATTE_REQUIRE(first_single == (item.choices.size() == 1), where, "this item has ", item.choices.size(),
                    " choice(s) but the item on line ", task.items.front().line, " has ", task.items.front().choices.size(),
                    "; a task file is either multiple-choice (2+ choices) or LAMBADA-style (1 choice) throughout");
    }
    task.items.push_back(std::move(item));
  }
  LATTE_REQUIRE(!task.items.empty(), path, ": no items (expected JSON lines {\"context\": ..., \"choices\": [...], \"label\": ...}; "
                                           "scripts/convert_tasks.py writes them)");
  if (task.primary == "acc_norm") {
    const bool any_partial = std::any_of(task.items.begin(), task.items.end(), [](const TaskItem& i) { return i.scoring == Scoring::Partial; });
    LATTE_REQUIRE(!task.single_choice() && !any_partial, path, ":", header_line, ": \"primary\": \"acc_norm\" is not reported for ",
                  task.single_choice() ? "single-choice (LAMBADA-style)" : "partial-scoring", " tasks; use \"acc\"");
  }
  return task;
}

Task load_task(const std::string& path) {
  LATTE_REQUIRE(fs::is_regular_file(path), path, ": task file not found (scripts/convert_tasks.py makes them; see docs/evaluation.md)");
  std::ifstream in(path, std::ios::binary);
  LATTE_REQUIRE(in, path, ": cannot open the task file");
  std::ostringstream text;
  text << in.rdbuf();
  return parse_task(text.str(), path);
}

// ---- requests -------------------------------------------------------------------------------------------

std::vector<ScoreRequest> build_requests(const TaskItem& item) {
  std::vector<ScoreRequest> out;
  if (item.scoring == Scoring::Full) {
    for (const std::string& choice : item.choices) out.push_back({item.context, choice});
    return out;
  }
  const size_t blank = item.context.find('_');
  LATTE_REQUIRE(blank != std::string::npos, "partial scoring needs a blank \"_\" in the context: ", item.context);
  const std::string suffix = " " + strip(item.context.substr(blank + 1));
  for (const std::string& choice : item.choices) out.push_back({item.context.substr(0, blank) + choice, suffix});
  return out;
}

EncodedRequest encode_request(const ScoreRequest& request, const data::Tokenizer& tokenizer, int64_t max_len, bool greedy) {
  LATTE_CHECK(max_len > 0);
  std::string context = request.context, continuation = request.continuation;
  // lm-eval: trailing whitespace of the context belongs to the continuation (BPE attaches spaces to the next word).
  size_t keep = context.size();
  while (keep > 0 && is_space(context[keep - 1])) --keep;
  continuation = context.substr(keep) + continuation;
  context.resize(keep);
  std::vector<int32_t> context_ids, continuation_ids;
  if (context.empty()) {
    context_ids = {tokenizer.eot_token()};
    continuation_ids = tokenizer.encode(continuation);
  } else {
    const std::vector<int32_t> whole = tokenizer.encode(context + continuation);
    context_ids = tokenizer.encode(context);
    if (context_ids.size() < whole.size()) {
      continuation_ids.assign(whole.begin() + static_cast<std::ptrdiff_t>(context_ids.size()), whole.end());
    } else {
      continuation_ids = tokenizer.encode(continuation);  // merges swallowed the boundary: encode apart
    }
  }
  LATTE_REQUIRE(!continuation_ids.empty(), "the continuation \"", request.continuation, "\" encodes to no tokens");
  LATTE_REQUIRE(static_cast<int64_t>(continuation_ids.size()) <= max_len, "a continuation of ", continuation_ids.size(),
                " tokens does not fit max_seq_len ", max_len);
  EncodedRequest out;
  out.tokens = std::move(context_ids);
  out.tokens.insert(out.tokens.end(), continuation_ids.begin(), continuation_ids.end());
  if (static_cast<int64_t>(out.tokens.size()) > max_len + 1)
    out.tokens.erase(out.tokens.begin(), out.tokens.end() - (max_len + 1));  // left truncation
  out.continuation = static_cast<int64_t>(continuation_ids.size());
  out.greedy = greedy;
  return out;
}

// ---- the scorer ------------------------------------------------------------------------------------------

std::vector<RequestScore> score_requests(const TransformerLM& model, const std::vector<EncodedRequest>& requests,
                                         int64_t batch_rows, const std::function<void(size_t)>& on_done) {
  LATTE_REQUIRE(batch_rows > 0, "the scoring batch must be positive, got ", batch_rows);
  const int64_t max_seq = model.config().max_seq_len, vocab = model.config().vocab_size;
  for (const EncodedRequest& r : requests) {
    LATTE_CHECK(r.tokens.size() >= 2 && r.continuation >= 1 && r.continuation < static_cast<int64_t>(r.tokens.size()));
    LATTE_CHECK(static_cast<int64_t>(r.tokens.size()) - 1 <= max_seq, "request of ", r.tokens.size() - 1, " inputs > max_seq_len");
    for (int32_t t : r.tokens) LATTE_REQUIRE(t >= 0 && t < vocab, "token id ", t, " is outside the model's vocabulary of ", vocab);
  }
  // Longest first (lm-eval's order): rows of a batch have similar lengths, so little padding.
  std::vector<size_t> order(requests.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(), [&](size_t a, size_t b) { return requests[a].tokens.size() > requests[b].tokens.size(); });

  autograd::NoGradGuard no_grad;
  const Device device = model.device();
  const Tensor& head = model.output_weight();  // (V, d)
  const int64_t d = model.config().d_model;
  std::vector<RequestScore> scores(requests.size());
  for (size_t first = 0; first < order.size(); first += static_cast<size_t>(batch_rows)) {
    const size_t rows = std::min(order.size() - first, static_cast<size_t>(batch_rows));
    const int64_t L = static_cast<int64_t>(requests[order[first]].tokens.size()) - 1;  // longest input of the batch
    const int64_t B = static_cast<int64_t>(rows);
    Tensor ids = Tensor::zeros({B, L}, DType::I32);  // (B, L), right-padded with token 0 (causal: never read)
    int32_t* id_data = ids.data<int32_t>();
    // The scored positions, flattened over (B, L), with their target tokens; request r owns [row_start[r], +continuation).
    std::vector<int32_t> positions, targets;
    std::vector<int64_t> row_start(rows);
    for (size_t r = 0; r < rows; ++r) {
      const EncodedRequest& req = requests[order[first + r]];
      const int64_t n = static_cast<int64_t>(req.tokens.size()) - 1;
      std::memcpy(id_data + static_cast<int64_t>(r) * L, req.tokens.data(), static_cast<size_t>(n) * sizeof(int32_t));
      row_start[r] = static_cast<int64_t>(positions.size());
      for (int64_t p = n - req.continuation; p < n; ++p) {
        positions.push_back(static_cast<int32_t>(static_cast<int64_t>(r) * L + p));
        targets.push_back(req.tokens[static_cast<size_t>(p + 1)]);
      }
    }
    const int64_t N = static_cast<int64_t>(positions.size());
    Tensor pos = Tensor::empty({N}, DType::I32), tgt = Tensor::empty({N}, DType::I32);
    std::memcpy(pos.data_ptr(), positions.data(), static_cast<size_t>(N) * sizeof(int32_t));
    std::memcpy(tgt.data_ptr(), targets.data(), static_cast<size_t>(N) * sizeof(int32_t));

    Tensor hidden = model.hidden(device.is_cpu() ? ids : ids.to(device));         // (B, L, d)
    Tensor scored = embedding(hidden.reshape({B * L, d}), device.is_cpu() ? pos : pos.to(device));  // (N, d) gather
    if (!device.is_cpu()) tgt = tgt.to(device);
    std::vector<double> logprob(static_cast<size_t>(N));
    std::vector<char> is_argmax(static_cast<size_t>(N), 1);
    const int64_t chunk_rows = model.loss_chunk_rows(N);
    for (int64_t s = 0; s < N; s += chunk_rows) {
      const int64_t m = std::min(chunk_rows, N - s);
      Tensor logits = linear(scored.narrow(0, s, m), head);                     // (m, V)
      std::vector<double> losses = cross_entropy_per_token(logits, tgt.narrow(0, s, m), -1).cpu().to_vector();  // (m)
      for (int64_t k = 0; k < m; ++k) logprob[static_cast<size_t>(s + k)] = -losses[static_cast<size_t>(k)];
      // Greedy check on the host, for the rows of requests that ask for it (LAMBADA: a few tokens per item).
      for (size_t r = 0; r < rows; ++r) {
        const EncodedRequest& req = requests[order[first + r]];
        if (!req.greedy) continue;
        const int64_t a = std::max(row_start[r], s), b = std::min(row_start[r] + req.continuation, s + m);
        if (a >= b) continue;
        Tensor host = logits.narrow(0, a - s, b - a).cpu().to(DType::F32).contiguous();  // (b - a, V)
        const float* x = host.data<float>();
        for (int64_t k = 0; k < b - a; ++k) {
          const float* row = x + k * vocab;
          const int64_t best = std::max_element(row, row + vocab) - row;  // first maximum, as torch.argmax
          is_argmax[static_cast<size_t>(a + k)] = best == targets[static_cast<size_t>(a + k)];
        }
      }
    }
    for (size_t r = 0; r < rows; ++r) {
      const size_t index = order[first + r];
      RequestScore& score = scores[index];
      score.tokens = requests[index].continuation;
      score.greedy = true;
      for (int64_t k = row_start[r]; k < row_start[r] + score.tokens; ++k) {
        score.logprob += logprob[static_cast<size_t>(k)];
        score.greedy = score.greedy && is_argmax[static_cast<size_t>(k)];
      }
      if (!requests[index].greedy) score.greedy = false;
      if (on_done) on_done(index);
    }
  }
  return scores;
}

// ---- metrics ----------------------------------------------------------------------------------------------

double choice_length(const std::string& choice) {
  int64_t points = 0;
  for (unsigned char c : choice) points += (c & 0xC0) != 0x80;  // count UTF-8 lead bytes
  if (!choice.empty() && choice[0] == ' ') --points;              // the delimiter lm-eval does not count
  return static_cast<double>(std::max<int64_t>(points, 1));
}

ChoicePrediction predict_choice(const std::vector<double>& logprobs, const std::vector<double>& lengths) {
  LATTE_CHECK(!logprobs.empty() && logprobs.size() == lengths.size());
  ChoicePrediction p;
  for (size_t i = 1; i < logprobs.size(); ++i) {
    if (logprobs[i] > logprobs[static_cast<size_t>(p.pred)]) p.pred = static_cast<int64_t>(i);
    if (logprobs[i] / lengths[i] > logprobs[static_cast<size_t>(p.pred_norm)] / lengths[static_cast<size_t>(p.pred_norm)])
      p.pred_norm = static_cast<int64_t>(i);
  }
  return p;
}

namespace {
// lm-eval's mean_stderr of 0/1 outcomes: sample std / sqrt(n).
double binary_stderr(double p, int64_t n) {
  return n > 1 ? std::sqrt(p * (1 - p) / static_cast<double>(n - 1)) : 0.0;
}
}  // namespace

TaskResult summarize_task(const Task& task, const std::vector<std::vector<RequestScore>>& scores) {
  LATTE_CHECK(scores.size() <= task.items.size());
  TaskResult r;
  r.name = task.name;
  r.path = task.path;
  r.primary = task.primary;
  r.single_choice = task.single_choice();
  r.items = static_cast<int64_t>(scores.size());
  r.partial = r.items > 0;
  int64_t correct = 0, correct_norm = 0, tokens = 0;
  double ll_sum = 0;
  for (size_t i = 0; i < scores.size(); ++i) {
    const TaskItem& item = task.items[i];
    LATTE_CHECK(scores[i].size() == item.choices.size());
    r.partial = r.partial && item.scoring == Scoring::Partial;
    ItemOutcome o;
    o.line = item.line;
    o.id = item.id;
    o.label = item.label;
    std::vector<double> lengths;
    for (size_t c = 0; c < item.choices.size(); ++c) {
      o.logprobs.push_back(scores[i][c].logprob);
      o.tokens.push_back(scores[i][c].tokens);
      lengths.push_back(choice_length(item.choices[c]));
    }
    if (r.single_choice) {
      o.correct = o.correct_norm = scores[i][0].greedy;
      o.pred = o.pred_norm = o.correct ? 0 : -1;
      ll_sum += scores[i][0].logprob;
      tokens += scores[i][0].tokens;
    } else {
      const ChoicePrediction p = predict_choice(o.logprobs, lengths);
      o.pred = p.pred;
      o.pred_norm = p.pred_norm;
      o.correct = p.pred == item.label;
      o.correct_norm = p.pred_norm == item.label;
    }
    correct += o.correct;
    correct_norm += o.correct_norm;
    r.outcomes.push_back(std::move(o));
  }
  const double n = static_cast<double>(std::max<int64_t>(r.items, 1));
  r.acc = static_cast<double>(correct) / n;
  r.acc_stderr = binary_stderr(r.acc, r.items);
  const bool any_partial = std::any_of(task.items.begin(), task.items.begin() + static_cast<std::ptrdiff_t>(scores.size()),
                                       [](const TaskItem& i) { return i.scoring == Scoring::Partial; });
  if (!r.single_choice && !any_partial) {
    r.acc_norm = static_cast<double>(correct_norm) / n;
    r.acc_norm_stderr = binary_stderr(r.acc_norm, r.items);
  }
  if (r.single_choice && r.items > 0) {
    r.ppl = std::exp(-ll_sum / n);
    r.ppl_per_token = std::exp(-ll_sum / static_cast<double>(std::max<int64_t>(tokens, 1)));
  }
  return r;
}

TaskResult evaluate_task(const TransformerLM& model, const data::Tokenizer& tokenizer, const Task& task,
                         const ZeroShotOptions& options, const ScoreProgressFn& progress) {
  LATTE_REQUIRE(tokenizer.vocab_size() <= model.config().vocab_size, "the ", tokenizer.name(), " tokenizer has ",
                tokenizer.vocab_size(), " tokens but model.vocab_size is ", model.config().vocab_size,
                "; use the tokenizer the model was trained with");
  const auto t0 = std::chrono::steady_clock::now();
  const size_t n_items = options.limit > 0 ? std::min(task.items.size(), static_cast<size_t>(options.limit)) : task.items.size();
  int64_t max_len = model.config().max_seq_len;
  if (options.max_len > 0) max_len = std::min(max_len, options.max_len);
  const bool greedy = task.single_choice();

  std::vector<EncodedRequest> requests;
  std::vector<size_t> owner;        // request -> item
  std::vector<size_t> first_of(n_items + 1, 0);
  for (size_t i = 0; i < n_items; ++i) {
    const TaskItem& item = task.items[i];
    first_of[i] = requests.size();
    try {
      for (const ScoreRequest& req : build_requests(item)) {
        requests.push_back(encode_request(req, tokenizer, max_len, greedy));
        owner.push_back(i);
      }
    } catch (const Error& e) {
      LATTE_FAIL(task.path, ":", item.line, ": ", e.what());
    }
  }
  first_of[n_items] = requests.size();

  std::vector<int64_t> remaining(n_items);
  for (size_t i = 0; i < n_items; ++i) remaining[i] = static_cast<int64_t>(first_of[i + 1] - first_of[i]);
  ScoreProgress state{0, static_cast<int64_t>(n_items), 0, static_cast<int64_t>(requests.size())};
  if (progress) progress(state);
  std::vector<RequestScore> flat = score_requests(model, requests, options.batch_rows, [&](size_t index) {
    ++state.requests_done;
    if (--remaining[owner[index]] == 0) ++state.items_done;
    if (progress) progress(state);
  });
  std::vector<std::vector<RequestScore>> per_item(n_items);
  for (size_t i = 0; i < n_items; ++i)
    per_item[i].assign(flat.begin() + static_cast<std::ptrdiff_t>(first_of[i]), flat.begin() + static_cast<std::ptrdiff_t>(first_of[i + 1]));
  TaskResult result = summarize_task(task, per_item);
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return result;
}

ZeroShotSummary summarize_tasks(std::vector<TaskResult> tasks) {
  ZeroShotSummary s;
  s.tasks = std::move(tasks);
  for (const TaskResult& t : s.tasks) s.average += t.primary_value();
  if (!s.tasks.empty()) s.average /= static_cast<double>(s.tasks.size());
  return s;
}

// ---- reports -----------------------------------------------------------------------------------------------

nlohmann::json to_json(const TaskResult& r) {
  nlohmann::json j = {{"file", r.path}, {"items", r.items}, {"primary", r.primary}, {"acc", r.acc}, {"acc_stderr", r.acc_stderr},
                      {"scoring", r.single_choice ? "single_choice" : r.partial ? "partial" : "full"},
                      {"seconds", r.seconds}};
  if (r.acc_norm >= 0) {
    j["acc_norm"] = r.acc_norm;
    j["acc_norm_stderr"] = r.acc_norm_stderr;
  }
  if (r.ppl >= 0) {
    j["ppl"] = r.ppl;
    j["ppl_per_token"] = r.ppl_per_token;
  }
  return j;
}

nlohmann::json to_json(const ZeroShotSummary& s) {
  nlohmann::json tasks = nlohmann::json::object();
  for (const TaskResult& t : s.tasks) tasks[t.name] = to_json(t);
  return {{"tasks", tasks}, {"average", s.average}, {"average_of", "primary metric of each task"}};
}

namespace {
std::string percent(double value, double stderr_value) {
  char buf[64];
  std::snprintf(buf, sizeof(buf), "%.2f ± %.2f", 100 * value, 100 * stderr_value);
  return buf;
}
}  // namespace

std::string markdown_table(const ZeroShotSummary& s) {
  std::string out = "| task | items | acc | acc_norm | ppl | reported |\n|:--|--:|--:|--:|--:|--:|\n";
  char buf[64];
  for (const TaskResult& t : s.tasks) {
    std::string ppl;
    if (t.ppl >= 0) {
      std::snprintf(buf, sizeof(buf), "%.3f", t.ppl);
      ppl = buf;
    }
    std::snprintf(buf, sizeof(buf), "%.2f (%s)", 100 * t.primary_value(), t.acc_norm >= 0 ? t.primary.c_str() : "acc");
    out += str("| ", t.name, " | ", t.items, " | ", percent(t.acc, t.acc_stderr), " | ",
               t.acc_norm >= 0 ? percent(t.acc_norm, t.acc_norm_stderr) : std::string(), " | ", ppl, " | ", buf, " |\n");
  }
  std::snprintf(buf, sizeof(buf), "%.2f", 100 * s.average);
  out += str("| **average** | | | | | **", buf, "** |\n");
  return out;
}

std::string samples_jsonl(const ZeroShotSummary& s) {
  std::string out;
  for (const TaskResult& t : s.tasks) {
    for (const ItemOutcome& o : t.outcomes) {
      nlohmann::json j = {{"task", t.name}, {"line", o.line}, {"id", o.id}, {"label", o.label}, {"pred", o.pred},
                          {"pred_norm", o.pred_norm}, {"logprobs", o.logprobs}, {"tokens", o.tokens}, {"correct", o.correct}};
      out += j.dump() + "\n";
    }
  }
  return out;
}

}  // namespace latte
