// Zero-shot scoring (train/zero_shot.h): acc / acc_norm on known log-likelihoods, lm-eval's request
// construction (WinoGrande partial scoring, whitespace moved to the continuation, left truncation),
// task-file validation with file:line errors, the converters on public-format samples, and the scorer
// on a tiny byte-level model trained here to memorise a few sentences: it must pick the memorised
// continuation every time, be at chance on shuffled controls, decode LAMBADA-style targets greedily,
// give the same numbers for any batch size and agree with TransformerLM::loss. Ends with `latte eval`.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "autograd/functions.h"
#include "autograd/node.h"
#include "core/error.h"
#include "data/shard.h"
#include "data/tokenizer.h"
#include "layers/safetensors.h"
#include "layers/transformer.h"
#include "train/adamw.h"
#include "train/zero_shot.h"
#include "tests/test_util.h"

namespace fs = std::filesystem;
using namespace latte;

namespace {

const std::string kTasks = std::string(LATTE_SOURCE_DIR) + "/tests/data_files/tasks/";

std::string temp_dir() {
  static std::string d = [] {
    fs::path p = fs::temp_directory_path() / ("latte_zero_shot_" + std::to_string(::getpid()));
    fs::remove_all(p);
    fs::create_directories(p);
    return p.string();
  }();
  return d;
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

using test::error_of;

}  // namespace

// ---- metrics on known log-likelihoods ---------------------------------------------------------------------

TEST(ZeroShotMetrics, AccAndAccNormDefinitions) {
  // acc: argmax of the sums; acc_norm: argmax of sum / length.
  ChoicePrediction p = predict_choice({-5.0, -4.0, -6.0}, {10, 2, 30});
  EXPECT_EQ(p.pred, 1);       // -4 is the largest sum
  EXPECT_EQ(p.pred_norm, 2);  // -0.5, -2, -0.2 per character
  // Ties go to the first index, as np.argmax.
  p = predict_choice({-1.0, -1.0}, {1, 1});
  EXPECT_EQ(p.pred, 0);
  EXPECT_EQ(p.pred_norm, 0);
  p = predict_choice({-3.0}, {3});
  EXPECT_EQ(p.pred, 0);
}

TEST(ZeroShotMetrics, ChoiceLengthCountsCharactersWithoutTheDelimiter) {
  EXPECT_EQ(choice_length(" blue"), 4);         // lm-eval: len("blue"), the " " delimiter not counted
  EXPECT_EQ(choice_length("blue"), 4);
  EXPECT_EQ(choice_length("  two spaces"), 11);  // only one delimiter is dropped
  EXPECT_EQ(choice_length(" \xE2\x9C\x93 yes"), 5);  // "✓ yes": code points, not bytes (7)
  EXPECT_EQ(choice_length(" "), 1);             // never 0 (no division by zero)
}

TEST(ZeroShotMetrics, SummarizeMultipleChoiceTask) {
  Task task = parse_task(
      "{\"context\": \"q1\", \"choices\": [\" a\", \" bbbbbbbbbb\"], \"label\": 1}\n"
      "{\"context\": \"q2\", \"choices\": [\" a\", \" b\", \" c\"], \"label\": 0}\n"
      "{\"context\": \"q3\", \"choices\": [\" aa\", \" b\"], \"label\": 0}\n"
      "{\"context\": \"q4\", \"choices\": [\" a\", \" b\"], \"label\": 1}\n",
      "synthetic.jsonl");
  auto s = [](double lp) { return RequestScore{lp, 1, false}; };
  std::vector<std::vector<RequestScore>> scores = {
      {s(-1.0), s(-5.0)},           // acc wrong (0), norm right: -1/1 < -5/10
      {s(-1.0), s(-2.0), s(-3.0)},  // both right
      {s(-3.0), s(-2.0)},           // acc wrong, norm: -1.5 vs -2 -> right
      {s(-2.0), s(-3.0)},           // both wrong
  };
  TaskResult r = summarize_task(task, scores);
  EXPECT_EQ(r.name, "synthetic");
  EXPECT_EQ(r.items, 4);
  EXPECT_DOUBLE_EQ(r.acc, 0.25);
  EXPECT_DOUBLE_EQ(r.acc_norm, 0.75);
  EXPECT_NEAR(r.acc_stderr, std::sqrt(0.25 * 0.75 / 3), 1e-12);  // lm-eval's sample stderr
  EXPECT_NEAR(r.acc_norm_stderr, std::sqrt(0.75 * 0.25 / 3), 1e-12);
  EXPECT_LT(r.ppl, 0);  // only single-choice tasks have a perplexity
  EXPECT_EQ(r.outcomes[0].pred, 0);
  EXPECT_EQ(r.outcomes[0].pred_norm, 1);
  // The summary averages the primary metrics.
  TaskResult other = r;
  other.name = "other";
  other.primary = "acc_norm";
  ZeroShotSummary sum = summarize_tasks({r, other});
  EXPECT_DOUBLE_EQ(sum.average, (0.25 + 0.75) / 2);
}

TEST(ZeroShotMetrics, SummarizeSingleChoiceTask) {
  Task task = parse_task("{\"context\": \"a b\", \"choices\": [\" c\"], \"label\": 0}\n"
                         "{\"context\": \"d e\", \"choices\": [\" f\"], \"label\": 0}\n", "lambada_like.jsonl");
  ASSERT_TRUE(task.single_choice());
  TaskResult r = summarize_task(task, {{RequestScore{-1.0, 2, true}}, {RequestScore{-3.0, 1, false}}});
  EXPECT_DOUBLE_EQ(r.acc, 0.5);
  EXPECT_LT(r.acc_norm, 0);                             // not reported
  EXPECT_NEAR(r.ppl, std::exp(2.0), 1e-12);             // exp(-mean per-item log-likelihood), lm-eval's
  EXPECT_NEAR(r.ppl_per_token, std::exp(4.0 / 3), 1e-12);  // exp(-sum / tokens)
}

// ---- request construction ----------------------------------------------------------------------------------

TEST(ZeroShotRequests, WinograndePartialScoring) {
  Task task = load_task(kTasks + "tiny_partial.jsonl");
  ASSERT_EQ(task.items.size(), 3u);
  std::vector<ScoreRequest> r = build_requests(task.items[0]);
  ASSERT_EQ(r.size(), 2u);
  // The choice replaces the blank; the shared suffix (stripped, after lm-eval's " " delimiter) is scored.
  EXPECT_EQ(r[0].context, "The trophy doesn't fit into the suitcase because the trophy");
  EXPECT_EQ(r[1].context, "The trophy doesn't fit into the suitcase because the suitcase");
  EXPECT_EQ(r[0].continuation, " is too large.");
  EXPECT_EQ(r[1].continuation, " is too large.");
  // Whitespace around the suffix is stripped; the first blank is the one used.
  TaskItem item;
  item.context = "A _ b_c  \n";
  item.choices = {"x", "y"};
  item.scoring = Scoring::Partial;
  r = build_requests(item);
  EXPECT_EQ(r[0].context, "A x");
  EXPECT_EQ(r[0].continuation, " b_c");
  // Per-item "scoring": "full" overrides the header.
  EXPECT_EQ(task.items[2].scoring, Scoring::Full);
  r = build_requests(task.items[2]);
  EXPECT_EQ(r[1].context, "Full scoring can be mixed in:");
  EXPECT_EQ(r[1].continuation, " no");
}

TEST(ZeroShotRequests, EncodeMovesWhitespaceAndTruncatesFromTheLeft) {
  auto byte = data::make_tokenizer("byte");
  auto text = [&](const EncodedRequest& e) { return byte->decode(e.tokens); };
  // Trailing context whitespace moves to the continuation.
  EncodedRequest e = encode_request({"abc ", "def"}, *byte, 64);
  EXPECT_EQ(text(e), "abc def");
  EXPECT_EQ(e.continuation, 4);  // " def"
  // An empty context is the EOT token.
  e = encode_request({"", "xy"}, *byte, 64);
  ASSERT_EQ(e.tokens.size(), 3u);
  EXPECT_EQ(e.tokens[0], byte->eot_token());
  EXPECT_EQ(e.continuation, 2);
  // Left truncation to max_len + 1 tokens (the model reads max_len of them).
  e = encode_request({"abcdef", "gh"}, *byte, 4);
  EXPECT_EQ(text(e), "defgh");
  EXPECT_EQ(e.continuation, 2);
  // A continuation that cannot fit is an error (lm-eval asserts the same).
  EXPECT_NE(error_of([&] { encode_request({"a", "12345"}, *byte, 4); }).find("does not fit max_seq_len 4"), std::string::npos);
}

TEST(ZeroShotRequests, Gpt2ContinuationTokens) {
  const std::string dir = std::string(LATTE_SOURCE_DIR) + "/data/gpt2";
  if (!fs::exists(dir + "/encoder.json")) GTEST_SKIP() << dir << " missing: run scripts/fetch_gpt2_tokenizer.sh";
  auto gpt2 = data::make_tokenizer("gpt2", dir);
  // "is " + "Paris": the space joins the continuation, which is then the single token " Paris".
  EncodedRequest e = encode_request({"The capital of France is ", "Paris"}, *gpt2, 1024);
  EXPECT_EQ(e.continuation, 1);
  EXPECT_EQ(gpt2->decode(std::vector<int32_t>(e.tokens.end() - 1, e.tokens.end())), " Paris");
  EXPECT_EQ(gpt2->decode(e.tokens), "The capital of France is Paris");
}

// ---- task files ----------------------------------------------------------------------------------------------

TEST(ZeroShotTaskFile, ParsesHeaderItemsAndIds) {
  Task t = load_task(kTasks + "tiny_mc.jsonl");
  EXPECT_EQ(t.name, "tiny_mc");
  EXPECT_EQ(t.primary, "acc_norm");
  ASSERT_EQ(t.items.size(), 3u);  // the blank line is skipped
  EXPECT_EQ(t.items[0].id, "sky");
  EXPECT_EQ(t.items[0].line, 2);
  EXPECT_EQ(t.items[0].context, "Question: What colour is the sky on a clear day?\nAnswer:");
  EXPECT_EQ(t.items[1].id, "7");
  EXPECT_EQ(t.items[1].line, 4);
  EXPECT_EQ(t.items[1].label, 1);
  EXPECT_EQ(t.items[2].choices[0], " \xE2\x9C\x93 yes");
  EXPECT_FALSE(t.single_choice());
  Task l = load_task(kTasks + "tiny_lambada.jsonl");
  EXPECT_EQ(l.name, "tiny_lambada");  // no header: the file name
  EXPECT_TRUE(l.single_choice());
}

TEST(ZeroShotTaskFile, MalformedFilesNameFileLineAndProblem) {
  struct Case {
    const char* file;
    const char* where;  // "<file>:<line>:" expected in the message
    const char* what;
  };
  const Case cases[] = {
      {"bad_json.jsonl", "bad_json.jsonl:3:", "not valid JSON"},
      {"bad_label.jsonl", "bad_label.jsonl:2:", "\"label\" is 2 but the item has 2 choice(s)"},
      {"bad_label_type.jsonl", "bad_label_type.jsonl:1:", "\"label\" must be an integer"},
      {"bad_missing_choices.jsonl", "bad_missing_choices.jsonl:4:", "missing \"choices\""},
      {"bad_partial_no_blank.jsonl", "bad_partial_no_blank.jsonl:2:", "needs a blank \"_\""},
      {"bad_mixed_choices.jsonl", "bad_mixed_choices.jsonl:3:", "either multiple-choice"},
      {"bad_header_late.jsonl", "bad_header_late.jsonl:3:", "must be the first line"},
      {"bad_unknown_key.jsonl", "bad_unknown_key.jsonl:1:", "unknown key \"choice\""},
      {"bad_empty_choice.jsonl", "bad_empty_choice.jsonl:1:", "choice 1 is empty"},
      {"bad_not_object.jsonl", "bad_not_object.jsonl:1:", "must be a JSON object"},
      {"bad_empty.jsonl", "bad_empty.jsonl:", "no items"},
      {"does_not_exist.jsonl", "does_not_exist.jsonl:", "not found"},
  };
  for (const Case& c : cases) {
    const std::string msg = error_of([&] { load_task(kTasks + c.file); });
    EXPECT_NE(msg.find(c.where), std::string::npos) << c.file << ": " << msg;
    EXPECT_NE(msg.find(c.what), std::string::npos) << c.file << ": " << msg;
  }
  // Inline cases without a fixture file.
  EXPECT_NE(error_of([] { parse_task("{\"scoring\": \"sideways\"}\n{\"context\": \"a\", \"choices\": [\" b\"], \"label\": 0}", "x.jsonl"); })
                .find("x.jsonl:1: \"scoring\" must be \"full\" or \"partial\""),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_task("{\"primary\": \"acc_norm\"}\n{\"context\": \"a\", \"choices\": [\" b\"], \"label\": 0}", "y.jsonl"); })
                .find("y.jsonl:1: \"primary\": \"acc_norm\" is not reported for single-choice"),
            std::string::npos);
  EXPECT_NE(error_of([] { parse_task("{\"context\": \"a _ b\", \"choices\": [\"x\", \"y\"], \"label\": 0, \"scoring\": \"partial\"}\n"
                                     "{\"context\": \"a b _ \", \"choices\": [\"x\", \"y\"], \"label\": 0, \"scoring\": \"partial\"}", "z.jsonl"); })
                .find("z.jsonl:2: partial scoring scores the text after the blank"),
            std::string::npos);
}

// ---- converters (python3 standard library) --------------------------------------------------------------------

TEST(ZeroShotConverters, PublicFormatsBecomeTaskFiles) {
  if (std::system("python3 -c 'import json' > /dev/null 2>&1") != 0) GTEST_SKIP() << "python3 not available";
  const std::string script = std::string(LATTE_SOURCE_DIR) + "/scripts/convert_tasks.py";
  // Every conversion runs through the script's main() in one python3 process (interpreter start-up is slow).
  struct Job {
    std::string format, input, extra;
  };
  const std::vector<Job> jobs = {{"hellaswag", "raw_hellaswag.jsonl", ""},
                                 {"arc", "raw_arc.jsonl", "--name arc_challenge"},
                                 {"piqa", "raw_piqa.jsonl", "--labels " + kTasks + "raw_piqa-labels.lst"},
                                 {"winogrande", "raw_winogrande.jsonl", ""},
                                 {"boolq", "raw_boolq.jsonl", ""},
                                 {"openbookqa", "raw_obqa.jsonl", ""},
                                 {"sciq", "raw_sciq.json", ""},
                                 {"lambada", "raw_lambada.jsonl", ""}};
  std::string driver = "import shlex, sys\nsys.path.insert(0, '" + std::string(LATTE_SOURCE_DIR) + "/scripts')\n"
                       "import convert_tasks\nfailed = 0\n";
  for (const Job& j : jobs)
    driver += "failed += convert_tasks.main(shlex.split('" + j.format + " " + kTasks + j.input + " " + j.extra + " -o " + temp_dir() +
              "/" + j.format + ".jsonl'))\n";
  driver += "sys.exit(failed)\n";
  std::ofstream(temp_dir() + "/convert_all.py") << driver;
  const std::string cmd = "python3 " + temp_dir() + "/convert_all.py 2> " + temp_dir() + "/convert_all.txt";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_text(temp_dir() + "/convert_all.txt");
  auto convert = [&](const std::string& format, const std::string&, const std::string& = "") {
    return load_task(temp_dir() + "/" + format + ".jsonl");
  };
  Task h = convert("hellaswag", "raw_hellaswag.jsonl");
  EXPECT_EQ(h.name, "hellaswag");
  EXPECT_EQ(h.primary, "acc_norm");
  ASSERT_EQ(h.items.size(), 2u);
  EXPECT_EQ(h.items[0].context, "Roof shingle removal: A man is sitting on a roof. He");
  EXPECT_EQ(h.items[0].choices[3], " starts pulling up roofing on a roof.");
  EXPECT_EQ(h.items[0].label, 3);
  // lm-eval's preprocess: " [title]" -> ". ", other [brackets] dropped, double spaces collapsed; ctx_b.capitalize().
  EXPECT_EQ(h.items[1].context, "Personal Care and Style: How to grow longer hair. Eat a healthy diet. Eat more protein");
  EXPECT_EQ(h.items[1].choices[1], " Eggs and fish are good sources.");
  EXPECT_EQ(h.items[1].choices[2], " You can also cut it.");
  EXPECT_EQ(h.items[1].label, 1);  // a string label in the file

  Task a = convert("arc", "raw_arc.jsonl", "--name arc_challenge");
  EXPECT_EQ(a.primary, "acc_norm");
  EXPECT_EQ(a.items[0].context.substr(0, 25), "Question: An astronomer o");
  EXPECT_EQ(a.items[0].context.substr(a.items[0].context.size() - 8), "\nAnswer:");
  EXPECT_EQ(a.items[0].label, 2);  // answerKey C
  EXPECT_EQ(a.items[1].choices[3], " sound");
  EXPECT_EQ(a.items[1].label, 3);  // answerKey "4" with numeric labels (HF layout)

  Task p = convert("piqa", "raw_piqa.jsonl", "--labels " + kTasks + "raw_piqa-labels.lst");
  EXPECT_EQ(p.items[1].context, "Question: dresser\nAnswer:");
  EXPECT_EQ(p.items[1].choices[0], " replace drawer with bobby pin ");
  EXPECT_EQ(p.items[1].label, 1);

  Task w = convert("winogrande", "raw_winogrande.jsonl");
  EXPECT_EQ(w.items[1].scoring, Scoring::Partial);
  EXPECT_EQ(w.items[1].label, 1);  // answer "2"
  std::vector<ScoreRequest> wr = build_requests(w.items[1]);
  EXPECT_EQ(wr[1].context, "Sarah was a much better surgeon than Maria so Maria");
  EXPECT_EQ(wr[1].continuation, " always got the easier cases.");

  Task b = convert("boolq", "raw_boolq.jsonl");
  EXPECT_EQ(b.items[0].context, "All biomass goes through at least some of these steps.\nQuestion: does ethanol take more energy make "
                                "that produces?\nAnswer:");
  EXPECT_EQ(b.items[0].choices, (std::vector<std::string>{" no", " yes"}));
  EXPECT_EQ(b.items[0].label, 0);
  EXPECT_EQ(b.items[1].label, 1);

  Task o = convert("openbookqa", "raw_obqa.jsonl");
  EXPECT_EQ(o.items[0].context, "The sun is responsible for");
  EXPECT_EQ(o.items[1].context, "When standing miles away from Mount Rushmore");
  EXPECT_EQ(o.items[1].label, 3);

  Task s = convert("sciq", "raw_sciq.json");
  EXPECT_EQ(s.items[0].context.substr(0, 47), "Mesophiles grow best in moderate temperature.\nQ");
  EXPECT_EQ(s.items[0].label, 3);
  EXPECT_EQ(s.items[0].choices[3], " mesophilic organisms");

  Task l = convert("lambada", "raw_lambada.jsonl");
  EXPECT_EQ(l.name, "lambada_openai");
  EXPECT_TRUE(l.single_choice());
  EXPECT_EQ(l.items[1].choices[0], " dock");
  EXPECT_EQ(l.items[1].context.substr(l.items[1].context.size() - 7), " to the");  // text.split(' ')[:-1] joined
}

TEST(ZeroShotConverters, BadInputNamesFileAndLine) {
  if (std::system("python3 -c 'import json' > /dev/null 2>&1") != 0) GTEST_SKIP() << "python3 not available";
  const std::string script = std::string(LATTE_SOURCE_DIR) + "/scripts/convert_tasks.py";
  const std::string err = temp_dir() + "/convert_err.txt";
  const std::string cmd = "python3 " + script + " hellaswag " + kTasks + "raw_arc.jsonl > /dev/null 2> " + err;
  EXPECT_NE(std::system(cmd.c_str()), 0);
  EXPECT_NE(read_text(err).find("raw_arc.jsonl:1: missing field 'ctx_a'"), std::string::npos) << read_text(err);
}

// ---- the scorer on a model that memorised a few sentences --------------------------------------------------------

namespace {

const std::vector<std::string>& sentences() {
  static const std::vector<std::string> s = {
      "the quick brown fox jumps over the lazy dog.",       "a stitch in time saves nine, as grandmother said.",
      "seven silver swans swam silently seaward at dawn.",  "every cloud has a silver lining, or so they say.",
      "my dog sat on the mat because it was very tired.",   "paris is the capital of france and lies on the seine.",
  };
  return s;
}

ModelConfig memorise_config() {
  return parse_model_config(YAML::Load(R"(model:
  vocab_size: 320
  d_model: 64
  n_layers: 2
  ffn_dim: 128
  max_seq_len: 64
  attention: {kind: mha, n_heads: 4}
)")["model"], "model");
}

// A byte-level MHA model trained on CPU until it reproduces every sentence (AdamW, full batch).
const TransformerLM& memorised_model() {
  static std::unique_ptr<TransformerLM> model = [] {
    auto m = std::make_unique<TransformerLM>(memorise_config(), 11, DType::F32, Device::cpu());
    const int64_t S = static_cast<int64_t>(sentences().size()), T = 63;
    Tensor ids = Tensor::zeros({S, T}, DType::I32), targets = Tensor::full({S, T}, -1, DType::I32);
    for (int64_t s = 0; s < S; ++s) {
      const std::string& text = sentences()[static_cast<size_t>(s)];
      for (size_t k = 0; k + 1 < text.size(); ++k) {
        ids.data<int32_t>()[s * T + static_cast<int64_t>(k)] = static_cast<unsigned char>(text[k]);
        targets.data<int32_t>()[s * T + static_cast<int64_t>(k)] = static_cast<unsigned char>(text[k + 1]);
      }
    }
    std::vector<OptimParam> params;
    for (auto& [name, tensor] : m->named_parameters()) params.push_back({name, tensor, false});
    AdamW adam(params, {0.9, 0.95, 1e-8, 0.0});
    double loss = 0;
    for (int step = 0; step < 800; ++step) {
      for (auto& p : params) p.param.zero_grad();
      Tensor l = m->loss(ids, targets);
      loss = l.item();
      if (loss < 0.01) break;
      l.backward();
      adam.step(step < 20 ? 3e-3 * (step + 1) / 20 : 3e-3);
    }
    EXPECT_LT(loss, 0.05) << "the test model did not memorise its sentences";
    return m;
  }();
  return *model;
}

// Item i: the first words of sentence i as context; its own continuation and three others as choices,
// the right one at position i % 4.
struct Split {
  std::string context, continuation;
};
Split split_after_words(const std::string& s, int words) {
  size_t pos = 0;
  for (int w = 0; w < words; ++w) pos = s.find(' ', pos + 1);
  return {s.substr(0, pos), s.substr(pos)};
}

std::string mc_task_text(bool controls) {
  const size_t n = sentences().size();
  std::vector<Split> splits;
  for (size_t i = 0; i < n; ++i) splits.push_back(split_after_words(sentences()[i], 3));
  std::string text = "{\"name\": \"" + std::string(controls ? "controls" : "memorised") + "\", \"primary\": \"acc_norm\"}\n";
  uint64_t rng = 99;
  auto next = [&] { return (rng = rng * 6364136223846793005ull + 1442695040888963407ull) >> 33; };
  const int repeats = controls ? 8 : 1;
  for (int rep = 0; rep < repeats; ++rep) {
    for (size_t i = 0; i < n; ++i) {
      std::vector<std::string> choices;
      for (size_t k = 1; k <= 3; ++k) choices.push_back(splits[(i + k) % n].continuation);
      choices.insert(choices.begin() + static_cast<int64_t>(i % 4), splits[i].continuation);
      std::string context = splits[i].context;
      int64_t label = static_cast<int64_t>(i % 4);
      if (controls) {
        // Shuffled: a context of random letters the model never saw, and a label drawn at random, so
        // that nothing links the label to the text; a scorer that peeked at labels would stand out.
        for (char& ch : context) ch = static_cast<char>('a' + next() % 26);
        label = static_cast<int64_t>(next() % 4);
      }
      text += nlohmann::json({{"context", context}, {"choices", choices}, {"label", label}}).dump() + "\n";
    }
  }
  return text;
}

ZeroShotOptions options(int64_t batch_rows) {
  ZeroShotOptions o;
  o.batch_rows = batch_rows;
  return o;
}

}  // namespace

TEST(ZeroShotScorer, PicksTheMemorisedContinuation) {
  const TransformerLM& model = memorised_model();
  auto byte = data::make_tokenizer("byte");
  TaskResult r = evaluate_task(model, *byte, parse_task(mc_task_text(false), "memorised.jsonl"), options(5));
  EXPECT_EQ(r.items, 6);
  EXPECT_DOUBLE_EQ(r.acc, 1.0);
  EXPECT_DOUBLE_EQ(r.acc_norm, 1.0);
  for (const ItemOutcome& o : r.outcomes) {
    // The memorised continuation is nearly certain; the others are far less likely.
    const double right = o.logprobs[static_cast<size_t>(o.label)];
    EXPECT_GT(right, -1.0) << "line " << o.line;
    for (size_t c = 0; c < o.logprobs.size(); ++c) {
      if (static_cast<int64_t>(c) != o.label) {
        EXPECT_LT(o.logprobs[c], right - 5) << "line " << o.line;
      }
    }
  }
}

TEST(ZeroShotScorer, ShuffledControlsAreNearChance) {
  const TransformerLM& model = memorised_model();
  auto byte = data::make_tokenizer("byte");
  TaskResult r = evaluate_task(model, *byte, parse_task(mc_task_text(true), "controls.jsonl"), options(8));
  EXPECT_EQ(r.items, 48);
  // 4 choices: chance is 0.25 (standard error ~0.06 over 48 items).
  EXPECT_GT(r.acc, 0.05);
  EXPECT_LT(r.acc, 0.5);
  EXPECT_LT(r.acc_norm, 0.5);
}

TEST(ZeroShotScorer, PartialScoringPrefersTheMemorisedFiller) {
  const TransformerLM& model = memorised_model();
  auto byte = data::make_tokenizer("byte");
  Task task = parse_task(R"({"scoring": "partial"}
{"context": "my _ sat on the mat because it was very tired.", "choices": ["cat", "dog"], "label": 1}
{"context": "my _ sat on the mat because it was very tired.", "choices": ["dog", "cat"], "label": 0}
{"context": "the quick brown _ jumps over the lazy dog.", "choices": ["fox", "cow"], "label": 0}
{"context": "seven silver _ swam silently seaward at dawn.", "choices": ["geese", "swans"], "label": 1}
)", "partial.jsonl");
  TaskResult r = evaluate_task(model, *byte, task, options(3));
  EXPECT_DOUBLE_EQ(r.acc, 1.0);
  EXPECT_LT(r.acc_norm, 0);  // not reported for partial scoring, as lm-eval's winogrande
  // Only the shared suffix is scored: the same number of tokens for both choices.
  for (const ItemOutcome& o : r.outcomes) EXPECT_EQ(o.tokens[0], o.tokens[1]);
  EXPECT_EQ(r.outcomes[0].tokens[0], static_cast<int64_t>(std::string(" sat on the mat because it was very tired.").size()));
}

TEST(ZeroShotScorer, LambadaStyleGreedyAccuracyAndPerplexity) {
  const TransformerLM& model = memorised_model();
  auto byte = data::make_tokenizer("byte");
  std::string right, wrong;
  for (const std::string& s : sentences()) {
    const size_t last = s.rfind(' ');
    right += nlohmann::json({{"context", s.substr(0, last)}, {"choices", {s.substr(last)}}, {"label", 0}}).dump() + "\n";
    wrong += nlohmann::json({{"context", s.substr(0, last)}, {"choices", {" zebra."}}, {"label", 0}}).dump() + "\n";
  }
  TaskResult r = evaluate_task(model, *byte, parse_task(right, "lambada_right.jsonl"), options(4));
  EXPECT_DOUBLE_EQ(r.acc, 1.0);
  EXPECT_LT(r.ppl, 1.5);
  EXPECT_GE(r.ppl, 1.0);
  TaskResult w = evaluate_task(model, *byte, parse_task(wrong, "lambada_wrong.jsonl"), options(4));
  EXPECT_DOUBLE_EQ(w.acc, 0.0);
  EXPECT_GT(w.ppl, 100.0);
}

TEST(ZeroShotScorer, BatchSizeDoesNotChangeScoresAndMatchesModelLoss) {
  const TransformerLM& model = memorised_model();
  auto byte = data::make_tokenizer("byte");
  Task task = parse_task(mc_task_text(false), "memorised.jsonl");
  // A context longer than max_seq_len is truncated from the left (and still scores).
  task.items.push_back(task.items[0]);
  task.items.back().context = std::string(200, 'z') + " " + task.items[0].context;
  TaskResult one = evaluate_task(model, *byte, task, options(1));
  TaskResult many = evaluate_task(model, *byte, task, options(7));
  ASSERT_EQ(one.outcomes.size(), many.outcomes.size());
  for (size_t i = 0; i < one.outcomes.size(); ++i)
    for (size_t c = 0; c < one.outcomes[i].logprobs.size(); ++c)
      EXPECT_NEAR(one.outcomes[i].logprobs[c], many.outcomes[i].logprobs[c], 1e-4) << "item " << i << " choice " << c;
  EXPECT_TRUE(std::isfinite(one.outcomes.back().logprobs[0]));

  // Reference: the mean loss of TransformerLM::loss over the continuation targets, times their count.
  EncodedRequest e = encode_request(build_requests(task.items[1])[2], *byte, 64);
  const int64_t n = static_cast<int64_t>(e.tokens.size()) - 1;
  Tensor ids = Tensor::zeros({1, n}, DType::I32), targets = Tensor::full({1, n}, -1, DType::I32);
  for (int64_t p = 0; p < n; ++p) {
    ids.data<int32_t>()[p] = e.tokens[static_cast<size_t>(p)];
    if (p >= n - e.continuation) targets.data<int32_t>()[p] = e.tokens[static_cast<size_t>(p + 1)];
  }
  autograd::NoGradGuard no_grad;
  const double reference = -model.loss(ids, targets).item() * static_cast<double>(e.continuation);
  EXPECT_NEAR(one.outcomes[1].logprobs[2], reference, 1e-4 * std::max(1.0, std::fabs(reference)));
}

TEST(ZeroShotScorer, ReportsAndProgress) {
  const TransformerLM& model = memorised_model();
  auto byte = data::make_tokenizer("byte");
  Task task = parse_task(mc_task_text(false), "memorised.jsonl");
  ZeroShotOptions o = options(4);
  o.limit = 4;
  std::vector<ScoreProgress> seen;
  TaskResult r = evaluate_task(model, *byte, task, o, [&](const ScoreProgress& p) { seen.push_back(p); });
  EXPECT_EQ(r.items, 4);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().items_done, 4);
  EXPECT_EQ(seen.back().requests_done, 16);
  EXPECT_EQ(seen.back().requests_total, 16);
  for (size_t i = 1; i < seen.size(); ++i) EXPECT_GE(seen[i].items_done, seen[i - 1].items_done);
  ZeroShotSummary s = summarize_tasks({r});
  const nlohmann::json j = to_json(s);
  EXPECT_DOUBLE_EQ(j["tasks"]["memorised"]["acc"].get<double>(), 1.0);
  EXPECT_EQ(j["tasks"]["memorised"]["items"].get<int64_t>(), 4);
  EXPECT_TRUE(j["tasks"]["memorised"].contains("acc_norm_stderr"));
  const std::string md = markdown_table(s);
  EXPECT_NE(md.find("| memorised | 4 | 100.00 ± 0.00 | 100.00 ± 0.00 |"), std::string::npos) << md;
  EXPECT_NE(md.find("**average**"), std::string::npos);
  const std::string samples = samples_jsonl(s);
  EXPECT_EQ(std::count(samples.begin(), samples.end(), '\n'), 4);
}

// ---- the CLI --------------------------------------------------------------------------------------------------

TEST(ZeroShotCli, EvalWritesJsonMarkdownAndSamples) {
  if (!fs::exists(LATTE_CLI)) GTEST_SKIP() << LATTE_CLI << " not built";
  const TransformerLM& model = memorised_model();
  const std::string dir = temp_dir() + "/cli";
  fs::create_directories(dir);
  save_state(model, dir + "/model.safetensors");
  YAML::Node root;
  root["model"] = model.config().to_yaml();
  std::ofstream(dir + "/model.yaml") << YAML::Dump(root) << "\n";
  std::ofstream(dir + "/memorised.jsonl") << mc_task_text(false);
  // A small shard for the original --data form.
  std::vector<int32_t> tokens;
  for (int rep = 0; rep < 3; ++rep)
    for (const std::string& s : sentences())
      for (unsigned char ch : s) tokens.push_back(ch);
  data::write_shard(dir + "/val.bin", tokens, data::ShardFormat::Bin, data::TokenDtype::U16);

  const std::string base = std::string(LATTE_CLI) + " eval " + dir + "/model.safetensors --config " + dir + "/model.yaml --device cpu ";
  std::string cmd = base + "--tasks " + dir + "/memorised.jsonl " + kTasks + "tiny_partial.jsonl --tokenizer byte --batch 4 --json " +
                    dir + "/out.json --markdown " + dir + "/out.md --samples " + dir + "/samples.jsonl --data " + dir +
                    "/val.bin --seq-len 64 --quiet > " + dir + "/stdout.txt 2> " + dir + "/stderr.txt";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << read_text(dir + "/stderr.txt");
  const nlohmann::json out = nlohmann::json::parse(read_text(dir + "/out.json"));
  EXPECT_EQ(nlohmann::json::parse(read_text(dir + "/stdout.txt")), out);
  EXPECT_DOUBLE_EQ(out["zero_shot"]["tasks"]["memorised"]["acc"].get<double>(), 1.0);
  EXPECT_EQ(out["zero_shot"]["tasks"]["tiny_winogrande"]["items"].get<int64_t>(), 3);
  for (const char* key : {"loss", "perplexity", "tokens", "seq_len"}) EXPECT_TRUE(out.contains(key)) << key;  // --data keys
  EXPECT_NEAR(out["perplexity"].get<double>(), std::exp(out["loss"].get<double>()), 1e-6 * out["perplexity"].get<double>());
  EXPECT_EQ(out["tokens"].get<int64_t>(), 12 * 64);  // 873 tokens: 13 windows of 65 at stride 64, 3 full batches of 4
  EXPECT_EQ(out["seq_len"].get<int64_t>(), 64);
  EXPECT_NE(read_text(dir + "/out.md").find("| memorised | 6 | 100.00"), std::string::npos);
  const std::string samples = read_text(dir + "/samples.jsonl");
  EXPECT_EQ(std::count(samples.begin(), samples.end(), '\n'), 9);

  // A malformed task file stops the command before the model is loaded, naming file and line.
  cmd = base + "--tasks " + kTasks + "bad_json.jsonl --tokenizer byte > /dev/null 2> " + dir + "/bad.txt";
  const int status = std::system(cmd.c_str());
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 2) << status;
  EXPECT_NE(read_text(dir + "/bad.txt").find("bad_json.jsonl:3: not valid JSON"), std::string::npos) << read_text(dir + "/bad.txt");
}
