// The tokenize job and `latte tokenize`: stream layout (EOT before each document, val shard then
// train shards of exact sizes), determinism across worker counts, resume after interruption or
// corruption, settings changes, document modes, and the CLI.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include <nlohmann/json.hpp>

#include "apps/commands.h"
#include "core/error.h"
#include "data/files.h"
#include "data/shard.h"
#include "data/tokenize_job.h"
#include "data/tokenizer.h"

using namespace latte::data;
namespace fs = std::filesystem;
using nlohmann::json;

namespace {

const std::string kGpt2Dir = std::string(LATTE_SOURCE_DIR) + "/data/gpt2";

class TokenizeJobTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("latte_tokjob_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_ / "in");
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string write(const std::string& name, const std::string& content) {
    const fs::path path = dir_ / "in" / name;
    fs::create_directories(path.parent_path());
    std::ofstream(path, std::ios::binary) << content;
    return path.string();
  }

  // Documents of varied lengths (some longer than a shard) with non-ASCII text.
  std::vector<std::string> make_documents(int count) {
    std::vector<std::string> docs;
    for (int i = 0; i < count; ++i) {
      std::string doc;
      for (int j = 0; j <= (i * 37) % 23; ++j) doc += "Doc " + std::to_string(i) + " line " + std::to_string(j) + ": caf\xc3\xa9 it's 42.\n";
      docs.push_back(doc);
    }
    return docs;
  }

  TokenizeJobConfig job(const std::string& output, std::vector<std::string> inputs) {
    TokenizeJobConfig c;
    c.inputs = std::move(inputs);
    c.output_dir = (dir_ / output).string();
    c.tokenizer = "byte";
    c.shard_tokens = 1000;
    c.val_tokens = 700;
    c.workers = 3;
    c.progress = false;
    return c;
  }

  static std::vector<int32_t> concatenated(const TokenizeJobResult& result) {
    std::vector<int32_t> all;
    for (const auto& path : result.shard_paths) {
      const auto tokens = read_shard(path);
      all.insert(all.end(), tokens.begin(), tokens.end());
    }
    return all;
  }

  static std::vector<int32_t> expected_stream(const Tokenizer& tokenizer, const std::vector<std::string>& docs) {
    std::vector<int32_t> all;
    for (const auto& doc : docs) {
      all.push_back(tokenizer.eot_token());
      tokenizer.encode_append(doc, all);
    }
    return all;
  }

  static std::map<std::string, std::string> file_checksums(const TokenizeJobResult& result) {
    std::map<std::string, std::string> sums;
    for (const auto& path : result.shard_paths) sums[path] = hex64(fnv1a64_file(path));
    return sums;
  }

  fs::path dir_;
};

json read_json(const fs::path& path) {
  std::ifstream in(path);
  return json::parse(in);
}

void write_json(const fs::path& path, const json& value) { std::ofstream(path) << value.dump(2); }

}  // namespace

TEST_F(TokenizeJobTest, StreamLayoutAndManifest) {
  const auto docs = make_documents(40);
  std::vector<std::string> inputs;
  for (size_t i = 0; i < docs.size(); ++i) {
    char name[32];
    std::snprintf(name, sizeof name, "doc_%03zu.txt", i);
    inputs.push_back(write(name, docs[i]));
  }
  auto config = job("out", {(dir_ / "in").string()});  // a directory: all files, sorted
  const auto result = run_tokenize_job(config);
  const auto tokenizer = make_tokenizer("byte");
  const auto expected = expected_stream(*tokenizer, docs);
  EXPECT_EQ(concatenated(result), expected);
  EXPECT_EQ(result.documents, 40u);
  EXPECT_EQ(result.val_tokens, 700u);
  EXPECT_EQ(result.train_tokens, expected.size() - 700);
  EXPECT_EQ(result.input_bytes, [&] { uint64_t n = 0; for (auto& d : docs) n += d.size(); return n; }());

  // Names and exact sizes: val first, then full train shards, the last one partial.
  ASSERT_GE(result.shard_paths.size(), 3u);
  EXPECT_EQ(fs::path(result.shard_paths[0]).filename(), "out_val_000000.bin");
  EXPECT_EQ(fs::path(result.shard_paths[1]).filename(), "out_train_000000.bin");
  EXPECT_EQ(ShardReader::open(result.shard_paths[0])->size(), 700u);
  for (size_t i = 1; i + 1 < result.shard_paths.size(); ++i) EXPECT_EQ(ShardReader::open(result.shard_paths[i])->size(), 1000u);
  EXPECT_EQ(read_shard(result.shard_paths[0])[0], 256) << "EOT before the first document";

  const json manifest = read_json(dir_ / "out" / "manifest.json");
  EXPECT_TRUE(manifest["complete"].get<bool>());
  EXPECT_EQ(manifest["documents"], 40);
  EXPECT_EQ(manifest["settings"]["tokenizer"], "byte");
  EXPECT_EQ(manifest["settings"]["eot_token"], 256);
  ASSERT_EQ(manifest["shards"].size(), result.shard_paths.size());
  for (size_t i = 0; i < result.shard_paths.size(); ++i) {
    const auto& entry = manifest["shards"][i];
    EXPECT_EQ(entry["file"], fs::path(result.shard_paths[i]).filename().string());
    EXPECT_EQ(entry["tokens"], ShardReader::open(result.shard_paths[i])->size());
    EXPECT_EQ(entry["fnv1a64"], hex64(fnv1a64_file(result.shard_paths[i])));
  }
}

TEST_F(TokenizeJobTest, WorkerCountDoesNotChangeOutput) {
  const auto docs = make_documents(60);
  std::string jsonl;
  for (const auto& doc : docs) jsonl += json{{"text", doc}, {"id", 7}}.dump() + "\n";
  write("corpus.jsonl", jsonl);
  auto one = job("one", {(dir_ / "in" / "*.jsonl").string()});
  one.doc_mode = DocMode::Jsonl;
  one.workers = 1;
  auto many = one;
  many.output_dir = (dir_ / "many").string();
  many.prefix = "one";
  many.workers = 8;
  const auto a = run_tokenize_job(one);
  const auto b = run_tokenize_job(many);
  ASSERT_EQ(a.shard_paths.size(), b.shard_paths.size());
  for (size_t i = 0; i < a.shard_paths.size(); ++i)
    EXPECT_EQ(fnv1a64_file(a.shard_paths[i]), fnv1a64_file(b.shard_paths[i])) << a.shard_paths[i];
  EXPECT_EQ(concatenated(a), expected_stream(*make_tokenizer("byte"), docs));
}

TEST_F(TokenizeJobTest, RerunSkipsFinishedShards) {
  write("a.txt", make_documents(30)[7] + make_documents(30)[20]);
  write("b.txt", make_documents(30)[21]);
  auto config = job("out", {(dir_ / "in").string()});
  const auto first = run_tokenize_job(config);
  const auto sums = file_checksums(first);
  const auto again = run_tokenize_job(config);
  EXPECT_EQ(again.shards_written, 0);
  EXPECT_EQ(again.shards_kept, static_cast<int>(first.shard_paths.size()));
  EXPECT_EQ(again.documents, first.documents);
  EXPECT_EQ(file_checksums(again), sums);
}

TEST_F(TokenizeJobTest, ResumesMidFileAfterInterruption) {
  // Blank-line documents in two files; pretend the run died after 3 shards by cutting the manifest.
  const auto docs = make_documents(50);
  std::string part1, part2;
  for (size_t i = 0; i < docs.size(); ++i) (i < 30 ? part1 : part2) += docs[i] + "\n  \n\n";
  write("p1.txt", part1);
  write("p2.txt", part2);
  auto config = job("out", {(dir_ / "in" / "p*.txt").string()});
  config.doc_mode = DocMode::BlankLine;
  const auto full = run_tokenize_job(config);
  const auto sums = file_checksums(full);
  ASSERT_GE(full.shard_paths.size(), 6u);

  json manifest = read_json(dir_ / "out" / "manifest.json");
  json kept = json::array();
  for (int i = 0; i < 3; ++i) kept.push_back(manifest["shards"][i]);
  ASSERT_GT(kept.back()["end"]["skip"].get<uint64_t>(), 0u) << "test wants a shard boundary inside a document";
  ASSERT_GT(kept.back()["end"]["offset"].get<uint64_t>(), 0u) << "test wants a resume point inside a file";
  manifest["shards"] = kept;
  manifest["complete"] = false;
  manifest.erase("documents");
  write_json(dir_ / "out" / "manifest.json", manifest);
  for (size_t i = 3; i < full.shard_paths.size(); ++i) fs::remove(full.shard_paths[i]);

  const auto resumed = run_tokenize_job(config);
  EXPECT_EQ(resumed.shards_kept, 3);
  EXPECT_EQ(resumed.shards_written, static_cast<int>(full.shard_paths.size()) - 3);
  EXPECT_EQ(resumed.documents, 50u);
  EXPECT_EQ(file_checksums(resumed), sums) << "resumed output differs from an uninterrupted run";
  EXPECT_EQ(read_json(dir_ / "out" / "manifest.json"), read_json(dir_ / "out" / "manifest.json"));
}

TEST_F(TokenizeJobTest, CorruptShardIsRewritten) {
  std::string big;
  for (const auto& doc : make_documents(40)) big += doc;
  write("a.txt", big);
  write("b.txt", make_documents(40)[22]);
  auto config = job("out", {(dir_ / "in").string()});
  config.format = ShardFormat::H5;
  const auto full = run_tokenize_job(config);
  const auto expected = concatenated(full);
  ASSERT_GE(full.shard_paths.size(), 3u);
  fs::resize_file(full.shard_paths[2], fs::file_size(full.shard_paths[2]) - 10);
  const auto repaired = run_tokenize_job(config);
  EXPECT_EQ(repaired.shards_kept, 2);
  EXPECT_EQ(concatenated(repaired), expected);
}

TEST_F(TokenizeJobTest, DifferentSettingsAreRefusedUnlessForced) {
  write("a.txt", make_documents(10)[9]);
  auto config = job("out", {(dir_ / "in").string()});
  run_tokenize_job(config);
  config.shard_tokens = 500;
  try {
    run_tokenize_job(config);
    FAIL() << "expected latte::Error";
  } catch (const latte::Error& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("manifest.json"), std::string::npos) << message;
    EXPECT_NE(message.find("shard_tokens"), std::string::npos) << message;
    EXPECT_NE(message.find("--force"), std::string::npos) << message;
  }
  // A stale shard of this prefix (from an old run with more shards) must not survive --force.
  std::ofstream(dir_ / "out" / "out_train_000099.bin") << "stale";
  config.force = true;
  const auto result = run_tokenize_job(config);
  EXPECT_FALSE(fs::exists(dir_ / "out" / "out_train_000099.bin"));
  for (size_t i = 1; i + 1 < result.shard_paths.size(); ++i) EXPECT_EQ(ShardReader::open(result.shard_paths[i])->size(), 500u);
}

TEST_F(TokenizeJobTest, BadJsonlNamesFileAndLine) {
  const std::string path = write("bad.jsonl", "{\"text\": \"ok\"}\n\n{\"text\": oops}\n");
  auto config = job("out", {path});
  config.doc_mode = DocMode::Jsonl;
  try {
    run_tokenize_job(config);
    FAIL() << "expected latte::Error";
  } catch (const latte::Error& e) {
    EXPECT_NE(std::string(e.what()).find(path + ":3"), std::string::npos) << e.what();
  }
  write("bad.jsonl", "{\"body\": \"no text key\"}\n");
  try {
    run_tokenize_job(config);
    FAIL() << "expected latte::Error";
  } catch (const latte::Error& e) {
    EXPECT_NE(std::string(e.what()).find("'text'"), std::string::npos) << e.what();
  }
}

TEST_F(TokenizeJobTest, JsonlSkipsEmptyRecordsAndBlankLines) {
  write("c.jsonl", "{\"text\": \"first\"}\n\n{\"text\": \"\"}\n  \n{\"text\": \"second\\nline\", \"meta\": 1}\n");
  auto config = job("out", {(dir_ / "in" / "c.jsonl").string()});
  config.doc_mode = DocMode::Jsonl;
  config.val_tokens = 0;
  const auto result = run_tokenize_job(config);
  EXPECT_EQ(result.documents, 2u);
  EXPECT_EQ(concatenated(result), expected_stream(*make_tokenizer("byte"), {"first", "second\nline"}));
}

TEST_F(TokenizeJobTest, BlankLineParagraphs) {
  write("p.txt", "\n\npara one\nstill one\n\n \t\npara two\n\n\npara three");
  auto config = job("out", {(dir_ / "in" / "p.txt").string()});
  config.doc_mode = DocMode::BlankLine;
  config.val_tokens = 0;
  const auto result = run_tokenize_job(config);
  EXPECT_EQ(result.documents, 3u);
  EXPECT_EQ(concatenated(result),
            expected_stream(*make_tokenizer("byte"), {"para one\nstill one\n", "para two\n", "para three"}));
}

TEST_F(TokenizeJobTest, MissingInputIsAnError) {
  auto config = job("out", {(dir_ / "in" / "nothing_here_*.txt").string()});
  EXPECT_THROW(run_tokenize_job(config), latte::Error);
}

TEST_F(TokenizeJobTest, Gpt2StreamMatchesEncode) {
  if (!fs::exists(kGpt2Dir + "/encoder.json")) GTEST_SKIP() << kGpt2Dir << "/encoder.json missing: run scripts/fetch_gpt2_tokenizer.sh";
  const auto docs = make_documents(25);
  for (size_t i = 0; i < docs.size(); ++i) write("d" + std::to_string(100 + i) + ".txt", docs[i]);
  auto config = job("gpt", {(dir_ / "in").string()});
  config.tokenizer = "gpt2";
  config.tokenizer_dir = kGpt2Dir;
  config.format = ShardFormat::H5;
  const auto result = run_tokenize_job(config);
  const auto tokenizer = make_tokenizer("gpt2", kGpt2Dir);
  EXPECT_EQ(concatenated(result), expected_stream(*tokenizer, docs));
  const auto reader = ShardReader::open(result.shard_paths[0]);
  EXPECT_EQ(reader->dtype(), TokenDtype::U16);
  EXPECT_EQ(reader->metadata().tokenizer, "gpt2");
  EXPECT_EQ(reader->metadata().eot_token, 50256);
  EXPECT_EQ(reader->metadata().vocab_size, 50257);
}

namespace {
int run_cli(std::vector<std::string> args) {
  args.insert(args.begin(), "tokenize");
  std::vector<char*> argv;
  for (auto& arg : args) argv.push_back(arg.data());
  return latte::apps::cmd_tokenize(static_cast<int>(argv.size()), argv.data());
}

// Runs `latte tokenize ...` with stdin from a file; returns stdout (exit code in *rc).
std::string run_binary(const std::string& args, const std::string& stdin_path, int* rc) {
  const std::string command = std::string(LATTE_CLI) + " tokenize " + args + " < " + stdin_path + " 2>/dev/null";
  std::FILE* pipe = ::popen(command.c_str(), "r");
  std::string out;
  char buffer[4096];
  size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) out.append(buffer, got);
  *rc = WEXITSTATUS(::pclose(pipe));
  return out;
}
}  // namespace

TEST_F(TokenizeJobTest, CliJobMode) {
  std::string all;
  for (const auto& doc : make_documents(30)) all += doc;
  write("x.txt", all);
  write("y.txt", make_documents(10)[8]);
  const std::string out = (dir_ / "cli").string();
  EXPECT_EQ(run_cli({"--tokenizer", "byte", "--input", (dir_ / "in" / "x.txt").string(), (dir_ / "in" / "y.txt").string(),
                     "--output", out, "--format", "bin", "--shard-tokens", "1K", "--val-tokens", "100", "--workers", "2",
                     "--doc-mode", "file", "--quiet"}),
            0);
  EXPECT_TRUE(fs::exists(fs::path(out) / "cli_val_000000.bin"));
  EXPECT_TRUE(fs::exists(fs::path(out) / "cli_train_000000.bin"));
  EXPECT_EQ(ShardReader::open((fs::path(out) / "cli_train_000000.bin").string())->size(), 1000u);
  auto expect_error = [](std::vector<std::string> args, const std::string& needle) {
    try {
      run_cli(args);
      ADD_FAILURE() << "expected latte::Error mentioning " << needle;
    } catch (const latte::Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error({"--bogus"}, "unknown option '--bogus'");
  expect_error({"--input", "a", "--output", out, "--shard-tokens", "12Q"}, "12Q");
  expect_error({"--tokenizer", "byte", "--input", (dir_ / "in" / "none*").string(), "--output", out}, "none*");
  expect_error({"--stdin", "--ids", "--decode"}, "choose one of");
  expect_error({"--format", "csv", "--input", "a", "--output", out}, "csv");
  expect_error({"--doc-mode", "lines", "--input", "a", "--output", out}, "lines");
  EXPECT_EQ(run_cli({"--help"}), 0);
}

TEST_F(TokenizeJobTest, CliStdinIdsAndDecode) {
  if (!fs::exists(LATTE_CLI)) GTEST_SKIP() << LATTE_CLI << " not built";
  const std::string text_path = write("text.txt", "Hello world");
  int rc = -1;
  run_binary("--help", text_path, &rc);
  ASSERT_EQ(rc, 0) << "`latte tokenize --help` failed: is cmd_tokenize registered in apps/main.cpp's command table?";
  EXPECT_EQ(run_binary("--tokenizer byte --stdin --ids", text_path, &rc), "72 101 108 108 111 32 119 111 114 108 100\n");
  EXPECT_EQ(rc, 0);
  if (fs::exists(kGpt2Dir + "/encoder.json")) {
    EXPECT_EQ(run_binary("--tokenizer-dir " + kGpt2Dir + " --stdin --ids", text_path, &rc), "15496 995\n");
    const std::string ids_path = write("ids.txt", "15496 995\n50256 23748");
    EXPECT_EQ(run_binary("--tokenizer-dir " + kGpt2Dir + " --decode", ids_path, &rc), "Hello world<|endoftext|> hello");
    EXPECT_EQ(rc, 0);
    const std::string bad_path = write("bad.txt", "15496 nope");
    run_binary("--tokenizer-dir " + kGpt2Dir + " --decode", bad_path, &rc);
    EXPECT_NE(rc, 0);
  }
}
