// `latte tokenize`: text <-> token ids on stdin/stdout, and corpus files -> token shards.
//
//   latte tokenize [--tokenizer gpt2|byte] [--tokenizer-dir data/gpt2] --stdin --ids [--specials]
//       encodes stdin and prints the ids, space-separated (--specials: "<|endoftext|>" -> EOT)
//   latte tokenize [--tokenizer ...] --decode
//       reads whitespace-separated ids from stdin and writes the text they stand for
//   latte tokenize --input <files|dirs|globs...> --output <dir> [--format bin|h5]
//       [--shard-tokens N] [--val-tokens N] [--workers K] [--doc-mode file|jsonl|blank-line]
//       [--jsonl-key text] [--prefix NAME] [--force] [--quiet]
//       tokenizes a corpus into shards + manifest.json (see data/tokenize_job.h)
//
// cmd_tokenize(argc, argv) takes the arguments after the `latte` program name: argv[0] is the
// command name ("tokenize") and options start at argv[1]. Mistakes throw latte::Error, which main()
// prints as "latte tokenize: error: <message>" with a non-zero exit code.
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <iterator>
#include <string>
#include <string_view>
#include <vector>

#include "apps/commands.h"
#include "core/error.h"
#include "data/tokenize_job.h"
#include "data/tokenizer.h"

namespace {

using namespace latte;

constexpr const char* kUsage = R"(usage:
  latte tokenize [--tokenizer gpt2|byte] [--tokenizer-dir DIR] --stdin --ids [--specials]
      encode stdin, print token ids separated by spaces
      (--specials: the text "<|endoftext|>" becomes the EOT token)
  latte tokenize [--tokenizer gpt2|byte] [--tokenizer-dir DIR] --decode
      read token ids from stdin, write the text they decode to
  latte tokenize --input PATH... --output DIR [options]
      tokenize files / directories / globs into token shards and DIR/manifest.json;
      every document is preceded by the EOT token; a re-run resumes and skips finished shards
      --format bin|h5            shard format (default bin, llm.c compatible)
      --shard-tokens N           tokens per train shard (default 100M; K/M/G suffixes allowed)
      --val-tokens N             the first N tokens go to <prefix>_val_000000 (default 0)
      --workers K                tokenizing threads (default: all cores)
      --doc-mode MODE            file (default) | jsonl | blank-line
      --jsonl-key KEY            field with the text in jsonl mode (default text)
      --prefix NAME              shard name prefix (default: the output directory's name)
      --force                    replace shards made with other settings instead of failing
      --quiet                    no progress line
common options:
  --tokenizer NAME             gpt2 (default) or byte
  --tokenizer-dir DIR          where encoder.json and vocab.bpe are (default data/gpt2)
)";

// Parses "123", "100M", "1.5G", "20K" (decimal multipliers: token counts, not bytes).
uint64_t parse_count(const std::string& option, const std::string& text) {
  size_t used = 0;
  double value = 0;
  try {
    value = std::stod(text, &used);
  } catch (const std::exception&) {
    LATTE_FAIL("latte tokenize: ", option, " expects a number such as 1000000 or 100M, got '", text, "'");
  }
  const std::string suffix = text.substr(used);
  double scale = 1;
  if (suffix == "K" || suffix == "k") scale = 1e3;
  else if (suffix == "M" || suffix == "m") scale = 1e6;
  else if (suffix == "G" || suffix == "g" || suffix == "B" || suffix == "b") scale = 1e9;
  else if (!suffix.empty()) LATTE_FAIL("latte tokenize: ", option, ": unknown suffix '", suffix, "' in '", text, "' (use K, M or G)");
  LATTE_REQUIRE(value >= 0 && value * scale < 1.8e19, "latte tokenize: ", option, " must be a non-negative count, got '", text, "'");
  return static_cast<uint64_t>(value * scale + 0.5);
}

int run(const std::vector<std::string>& args) {
  std::string tokenizer_name = "gpt2", tokenizer_dir = "data/gpt2";
  bool use_stdin = false, print_ids = false, decode = false, specials = false;
  data::TokenizeJobConfig job;
  bool have_job_options = false;

  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    auto value = [&]() -> const std::string& {
      LATTE_REQUIRE(i + 1 < args.size() && !args[i + 1].starts_with("--"), "latte tokenize: ", arg, " needs a value");
      return args[++i];
    };
    if (arg == "--help" || arg == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (arg == "--tokenizer") {
      tokenizer_name = value();
    } else if (arg == "--tokenizer-dir") {
      tokenizer_dir = value();
    } else if (arg == "--stdin") {
      use_stdin = true;
    } else if (arg == "--ids") {
      print_ids = true;
    } else if (arg == "--specials") {
      specials = true;
    } else if (arg == "--decode") {
      decode = true;
    } else if (arg == "--input") {
      LATTE_REQUIRE(i + 1 < args.size() && !args[i + 1].starts_with("--"), "latte tokenize: --input needs at least one path");
      while (i + 1 < args.size() && !args[i + 1].starts_with("--")) job.inputs.push_back(args[++i]);
      have_job_options = true;
    } else if (arg == "--output") {
      job.output_dir = value();
      have_job_options = true;
    } else if (arg == "--format") {
      job.format = data::parse_shard_format(value());
    } else if (arg == "--shard-tokens") {
      job.shard_tokens = parse_count(arg, value());
    } else if (arg == "--val-tokens") {
      job.val_tokens = parse_count(arg, value());
    } else if (arg == "--workers") {
      job.workers = static_cast<int>(parse_count(arg, value()));
    } else if (arg == "--doc-mode") {
      job.doc_mode = data::parse_doc_mode(value());
    } else if (arg == "--jsonl-key") {
      job.jsonl_key = value();
    } else if (arg == "--prefix") {
      job.prefix = value();
    } else if (arg == "--force") {
      job.force = true;
    } else if (arg == "--quiet") {
      job.progress = false;
    } else {
      LATTE_FAIL("latte tokenize: unknown option '", arg, "'; see latte tokenize --help");
    }
  }

  const int modes = (use_stdin || print_ids) + decode + have_job_options;
  LATTE_REQUIRE(modes == 1, "latte tokenize: choose one of --stdin --ids, --decode, or --input ... --output ...; ",
                "see latte tokenize --help");

  if (decode) {
    const auto tokenizer = data::make_tokenizer(tokenizer_name, tokenizer_dir);
    std::vector<int32_t> ids;
    std::string word;
    while (std::cin >> word) {
      char* end = nullptr;
      const long long id = std::strtoll(word.c_str(), &end, 10);
      LATTE_REQUIRE(end && *end == '\0' && id >= INT32_MIN && id <= INT32_MAX, "latte tokenize --decode: '", word,
                    "' (token #", ids.size(), ") is not an integer token id");
      ids.push_back(static_cast<int32_t>(id));
    }
    const std::string text = tokenizer->decode(ids);
    std::fwrite(text.data(), 1, text.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  }

  if (use_stdin || print_ids) {
    LATTE_REQUIRE(use_stdin && print_ids, "latte tokenize: encoding reads --stdin and prints --ids; give both");
    const auto tokenizer = data::make_tokenizer(tokenizer_name, tokenizer_dir);
    const std::string text((std::istreambuf_iterator<char>(std::cin)), std::istreambuf_iterator<char>());
    const std::vector<int32_t> ids = specials ? tokenizer->encode_with_specials(text) : tokenizer->encode(text);
    std::string line;
    line.reserve(ids.size() * 6);
    for (size_t i = 0; i < ids.size(); ++i) {
      if (i) line.push_back(' ');
      line += std::to_string(ids[i]);
    }
    line.push_back('\n');
    std::fwrite(line.data(), 1, line.size(), stdout);
    return std::fflush(stdout) == 0 ? 0 : 1;
  }

  LATTE_REQUIRE(!job.inputs.empty(), "latte tokenize: --input <files|dirs|globs...> is required with --output");
  LATTE_REQUIRE(!job.output_dir.empty(), "latte tokenize: --output <dir> is required with --input");
  job.tokenizer = tokenizer_name;
  job.tokenizer_dir = tokenizer_dir;
  data::run_tokenize_job(job);
  return 0;
}

}  // namespace

namespace latte::apps {

int cmd_tokenize(int argc, char** argv) {
  std::vector<std::string> args;
  for (int i = 1; i < argc; ++i) args.emplace_back(argv[i]);
  return run(args);
}

}  // namespace latte::apps
