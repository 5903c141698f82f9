// The tokenize job: reader thread -> K tokenizing workers -> in-order shard writer (see
// tokenize_job.h for the output layout and the resume rule).
#include "data/tokenize_job.h"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <set>
#include <thread>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "core/log.h"
#include "data/files.h"
#include "data/tokenizer.h"

namespace latte::data {

namespace fs = std::filesystem;
using nlohmann::json;

namespace {

struct InputFile {
  std::string path;
  uint64_t bytes;
  int64_t mtime;
};

// Where the token stream stands: document starting at byte `offset` of input `input`, of which
// `skip` tokens (its EOT included) are already in earlier shards; `documents` precede it.
struct StreamPosition {
  uint64_t input = 0;
  uint64_t offset = 0;
  uint64_t skip = 0;
  uint64_t documents = 0;
};

json to_json_value(const StreamPosition& p) {
  return {{"input", p.input}, {"offset", p.offset}, {"skip", p.skip}, {"documents", p.documents}};
}

StreamPosition position_from_json(const json& j) {
  return {j.at("input").get<uint64_t>(), j.at("offset").get<uint64_t>(), j.at("skip").get<uint64_t>(),
          j.at("documents").get<uint64_t>()};
}

struct ShardRecord {
  std::string file;   // name inside the output directory
  std::string split;  // "val" | "train"
  uint64_t tokens = 0;
  std::string checksum;  // FNV-1a 64 of the file bytes, hex
  StreamPosition end;    // stream position right after this shard
};

json to_json_value(const ShardRecord& r) {
  return {{"file", r.file}, {"split", r.split}, {"tokens", r.tokens}, {"fnv1a64", r.checksum}, {"end", to_json_value(r.end)}};
}

ShardRecord record_from_json(const json& j) {
  return {j.at("file").get<std::string>(), j.at("split").get<std::string>(), j.at("tokens").get<uint64_t>(),
          j.at("fnv1a64").get<std::string>(), position_from_json(j.at("end"))};
}

std::vector<InputFile> list_inputs(const std::vector<std::string>& specs) {
  std::vector<InputFile> inputs;
  for (const auto& path : expand_input_paths(specs)) {
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) LATTE_FAIL(path, ": cannot stat input");
    inputs.push_back({path, static_cast<uint64_t>(st.st_size), static_cast<int64_t>(st.st_mtime)});
  }
  return inputs;
}

std::string default_prefix(const std::string& output_dir) {
  fs::path dir = fs::path(output_dir).lexically_normal();
  if (dir.filename().empty()) dir = dir.parent_path();
  std::string name = dir.filename().string();
  return name.empty() || name == "." || name == ".." ? "tokens" : name;
}

// Settings that determine the output bytes; a manifest is only resumed with identical settings.
json settings_json(const TokenizeJobConfig& config, const std::string& prefix, const Tokenizer& tokenizer,
                   TokenDtype dtype, const std::vector<InputFile>& inputs) {
  json input_list = json::array();
  for (const auto& input : inputs) input_list.push_back({{"path", input.path}, {"bytes", input.bytes}, {"mtime", input.mtime}});
  json settings = {{"tokenizer", tokenizer.name()},
                   {"vocab_size", tokenizer.vocab_size()},
                   {"eot_token", tokenizer.eot_token()},
                   {"format", config.format == ShardFormat::Bin ? "bin" : "h5"},
                   {"dtype", dtype_name(dtype)},
                   {"shard_tokens", config.shard_tokens},
                   {"val_tokens", config.val_tokens},
                   {"doc_mode", doc_mode_name(config.doc_mode)},
                   {"prefix", prefix},
                   {"inputs", input_list}};
  if (config.doc_mode == DocMode::Jsonl) settings["jsonl_key"] = config.jsonl_key;
  return settings;
}

std::string describe_difference(const json& old_settings, const json& new_settings) {
  for (const auto& [key, value] : new_settings.items()) {
    if (!old_settings.contains(key)) return str("'", key, "' is new");
    if (old_settings[key] != value) {
      if (key == "inputs") return "the input files (list, sizes or modification times) changed";
      return str("'", key, "' was ", old_settings[key].dump(), ", now ", value.dump());
    }
  }
  return "the settings differ";
}

void write_json_atomically(const std::string& path, const json& value) {
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::trunc);
    out << value.dump(2) << "\n";
    out.flush();
    if (!out) LATTE_FAIL(temp, ": cannot write (disk full? permissions?)");
  }
  publish_atomically(temp, path);
}

std::string format_duration(double seconds) {
  if (!(seconds >= 0) || seconds > 1e7) return "?";
  const auto s = static_cast<long long>(seconds + 0.5);
  char text[32];
  std::snprintf(text, sizeof text, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  return text;
}

std::string format_seconds(double seconds) {
  if (seconds >= 60) return format_duration(seconds);
  char text[32];
  std::snprintf(text, sizeof text, "%.2f s", seconds);
  return text;
}

std::string format_count(double value) {
  char text[32];
  if (value >= 1e9) std::snprintf(text, sizeof text, "%.2fG", value / 1e9);
  else if (value >= 1e6) std::snprintf(text, sizeof text, "%.2fM", value / 1e6);
  else if (value >= 1e3) std::snprintf(text, sizeof text, "%.1fK", value / 1e3);
  else std::snprintf(text, sizeof text, "%.0f", value);
  return text;
}

// ---- the ordered shard sequence -----------------------------------------------------------------

class ShardSequence {
 public:
  ShardSequence(const TokenizeJobConfig& config, std::string prefix, TokenDtype dtype, ShardMetadata metadata,
                json settings, std::vector<ShardRecord> kept)
      : config_(config), prefix_(std::move(prefix)), dtype_(dtype), metadata_(std::move(metadata)),
        settings_(std::move(settings)), records_(std::move(kept)) {
    for (const auto& record : records_) {
      if (record.split == "val") val_done_ = true;
      else ++train_shards_;
    }
    if (config_.val_tokens == 0) val_done_ = true;
  }

  // Appends the tokens of one document; `position.skip` tokens of it were written before `tokens`.
  void add(std::span<const int32_t> tokens, const StreamPosition& position) {
    size_t done = 0;
    while (done < tokens.size()) {
      if (!writer_) open_next();
      const uint64_t room = limit_ - writer_->token_count();
      const size_t take = static_cast<size_t>(std::min<uint64_t>(room, tokens.size() - done));
      writer_->append(tokens.subspan(done, take));
      done += take;
      if (writer_->token_count() == limit_) {
        StreamPosition end = position;
        end.skip += done;
        close_current(end);
      }
    }
  }

  void finish(const StreamPosition& end_of_stream) {
    if (writer_ && writer_->token_count() > 0) close_current(end_of_stream);
    writer_.reset();
    documents_ = end_of_stream.documents;
    write_manifest(true);
  }

  const std::vector<ShardRecord>& records() const { return records_; }
  int written() const { return written_; }

 private:
  std::string path_of(const std::string& file) const { return (fs::path(config_.output_dir) / file).string(); }

  void open_next() {
    char name[512];
    if (!val_done_) {
      std::snprintf(name, sizeof name, "%s_val_%06d%s", prefix_.c_str(), 0, shard_extension(config_.format));
      limit_ = config_.val_tokens;
      current_split_ = "val";
    } else {
      std::snprintf(name, sizeof name, "%s_train_%06d%s", prefix_.c_str(), train_shards_, shard_extension(config_.format));
      limit_ = config_.shard_tokens;
      current_split_ = "train";
    }
    current_file_ = name;
    writer_ = std::make_unique<ShardWriter>(path_of(current_file_), config_.format, dtype_, metadata_);
  }

  void close_current(const StreamPosition& end) {
    const uint64_t tokens = writer_->finish();
    writer_.reset();
    const std::string checksum = hex64(fnv1a64_file(path_of(current_file_)));
    records_.push_back({current_file_, current_split_, tokens, checksum, end});
    if (current_split_ == "val") val_done_ = true;
    else ++train_shards_;
    ++written_;
    write_manifest(false);
  }

  void write_manifest(bool complete) {
    json shards = json::array();
    uint64_t val_tokens = 0, train_tokens = 0;
    for (const auto& record : records_) {
      shards.push_back(to_json_value(record));
      (record.split == "val" ? val_tokens : train_tokens) += record.tokens;
    }
    json manifest = {{"version", 1},
                     {"settings", settings_},
                     {"shards", shards},
                     {"val_tokens", val_tokens},
                     {"train_tokens", train_tokens},
                     {"complete", complete}};
    if (complete) manifest["documents"] = documents_;
    write_json_atomically(path_of(kManifestName), manifest);
  }

  const TokenizeJobConfig& config_;
  std::string prefix_;
  TokenDtype dtype_;
  ShardMetadata metadata_;
  json settings_;
  std::vector<ShardRecord> records_;
  bool val_done_ = false;
  int train_shards_ = 0;
  int written_ = 0;
  uint64_t documents_ = 0;
  std::unique_ptr<ShardWriter> writer_;
  std::string current_file_, current_split_;
  uint64_t limit_ = 0;
};

// ---- reader -> workers -> writer pipeline -------------------------------------------------------

class Pipeline {
 public:
  Pipeline(const TokenizeJobConfig& config, const Tokenizer& tokenizer, const std::vector<InputFile>& inputs,
           StreamPosition start)
      : config_(config), tokenizer_(tokenizer), inputs_(inputs), start_(start) {}

  // Runs the job, calling consume(tokens, position) in document order on the calling thread.
  template <typename Consume, typename Progress>
  StreamPosition run(Consume&& consume, Progress&& progress) {
    const int workers = config_.workers > 0 ? config_.workers : std::max(1u, std::thread::hardware_concurrency());
    std::vector<std::thread> threads;
    threads.emplace_back([this] { guarded([this] { read_documents(); }); });
    for (int i = 0; i < workers; ++i) threads.emplace_back([this] { guarded([this] { tokenize_documents(); }); });

    StreamPosition position = start_;
    uint64_t documents = start_.documents;  // non-empty documents before the current one
    try {
      for (uint64_t seq = 0;; ++seq) {
        Result result;
        {
          std::unique_lock<std::mutex> lock(mutex_);
          result_ready_.wait(lock, [&] { return error_ || results_.count(seq) || (reading_done_ && seq == documents_read_); });
          if (error_ || !results_.count(seq)) break;  // failed, or every document is written
          result = std::move(results_[seq]);
          results_.erase(seq);
          in_flight_bytes_ -= result.text_bytes;
        }
        space_free_.notify_one();
        if (result.tokens.empty()) continue;  // a jsonl record with empty text: no document
        position.input = result.input;
        position.offset = result.offset;
        position.skip = seq == 0 ? start_.skip : 0;
        position.documents = documents++;
        LATTE_REQUIRE(position.skip <= result.tokens.size(), inputs_[result.input].path, ": document at byte ",
                      result.offset, " has ", result.tokens.size(), " tokens, but the manifest says ", position.skip,
                      " of them were written; the input changed since the last run (use --force)");
        consume(std::span<const int32_t>(result.tokens).subspan(position.skip), position);
        progress(result.input, result.end);
      }
    } catch (...) {
      fail(std::current_exception());
    }
    stop();
    for (auto& thread : threads) thread.join();
    if (error_) std::rethrow_exception(error_);
    // The end of the stream: "after the last document" (resuming there re-reads nothing).
    return StreamPosition{inputs_.size(), 0, 0, documents};
  }

 private:
  struct Work {
    uint64_t seq;
    uint64_t input;
    Document doc;
  };
  struct Result {
    std::vector<int32_t> tokens;  // EOT + the document's tokens; empty for an empty document
    uint64_t input = 0, offset = 0, end = 0, text_bytes = 0;
  };

  template <typename Body>
  void guarded(Body&& body) {
    try {
      body();
    } catch (...) {
      fail(std::current_exception());
    }
  }

  void fail(std::exception_ptr error) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!error_) error_ = error;
    }
    stop();
  }

  void stop() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stopping_ = true;
    }
    work_ready_.notify_all();
    result_ready_.notify_all();
    space_free_.notify_all();
  }

  void read_documents() {
    // Bounds the text held between reading and writing (documents wait in order for the writer).
    constexpr uint64_t kMaxInFlightBytes = 256ull << 20;
    uint64_t seq = 0;
    for (uint64_t input = start_.input; input < inputs_.size(); ++input) {
      // jsonl lines are parsed by the workers: JSON parsing would otherwise cap the whole job.
      DocumentReader reader(inputs_[input].path, config_.doc_mode, config_.jsonl_key,
                            input == start_.input ? start_.offset : 0, /*raw_jsonl=*/true);
      Document doc;
      while (reader.next(doc)) {
        std::unique_lock<std::mutex> lock(mutex_);
        space_free_.wait(lock, [&] {
          return stopping_ || in_flight_bytes_ == 0 || in_flight_bytes_ + doc.text.size() <= kMaxInFlightBytes;
        });
        if (stopping_) return;
        in_flight_bytes_ += doc.text.size();
        work_.push_back({seq++, input, std::move(doc)});
        documents_read_ = seq;
        lock.unlock();
        work_ready_.notify_one();
        doc = Document{};
      }
    }
    {
      std::lock_guard<std::mutex> lock(mutex_);
      reading_done_ = true;
    }
    work_ready_.notify_all();
    result_ready_.notify_all();
  }

  void tokenize_documents() {
    while (true) {
      Work work;
      {
        std::unique_lock<std::mutex> lock(mutex_);
        work_ready_.wait(lock, [&] { return stopping_ || !work_.empty() || reading_done_; });
        if (stopping_ || work_.empty()) return;
        work = std::move(work_.front());
        work_.pop_front();
      }
      Result result;
      result.input = work.input;
      result.offset = work.doc.offset;
      result.end = work.doc.end;
      result.text_bytes = work.doc.text.size();
      const std::string jsonl = config_.doc_mode == DocMode::Jsonl
                                    ? jsonl_text(work.doc.text, config_.jsonl_key,
                                                 document_location(inputs_[work.input].path, work.doc))
                                    : std::string();
      const std::string_view text = config_.doc_mode == DocMode::Jsonl ? std::string_view(jsonl) : work.doc.text;
      if (!text.empty()) {
        result.tokens.reserve(text.size() / 3 + 2);
        result.tokens.push_back(tokenizer_.eot_token());  // llm.c convention: EOT before every document
        tokenizer_.encode_append(text, result.tokens);
      }
      {
        std::lock_guard<std::mutex> lock(mutex_);
        results_.emplace(work.seq, std::move(result));
      }
      result_ready_.notify_one();  // only the writer waits for results
    }
  }

  const TokenizeJobConfig& config_;
  const Tokenizer& tokenizer_;
  const std::vector<InputFile>& inputs_;
  StreamPosition start_;

  std::mutex mutex_;
  std::condition_variable work_ready_;    // workers wait for documents
  std::condition_variable result_ready_;  // the writer waits for the next result
  std::condition_variable space_free_;    // the reader waits for in-flight room
  std::deque<Work> work_;
  std::map<uint64_t, Result> results_;
  uint64_t documents_read_ = 0;
  uint64_t in_flight_bytes_ = 0;
  bool reading_done_ = false;
  bool stopping_ = false;
  std::exception_ptr error_;
};

struct PreviousRun {
  std::vector<ShardRecord> kept;  // the longest prefix of its shards that verified
  bool complete = false;          // it finished and every shard verified
  uint64_t documents = 0;         // documents of the whole stream, when complete
};

// Verifies the shards a previous run recorded in the manifest (nothing when there is none).
PreviousRun verify_previous_run(const std::string& manifest_path, const std::string& output_dir, const json& settings,
                                bool force) {
  PreviousRun previous;
  std::error_code ec;
  if (force || !fs::exists(manifest_path, ec)) return previous;
  json manifest;
  try {
    std::ifstream in(manifest_path);
    manifest = json::parse(in);
  } catch (const json::exception& e) {
    log::warn(manifest_path, ": unreadable (", e.what(), "); starting over");
    return previous;
  }
  if (!manifest.contains("settings") || manifest["settings"] != settings)
    LATTE_FAIL(manifest_path, ": the existing shards were made with different settings (",
               describe_difference(manifest.value("settings", json::object()), settings),
               "); use another --output directory, or --force to replace them");
  try {
    for (const auto& entry : manifest.at("shards")) {
      ShardRecord record = record_from_json(entry);
      const std::string path = (fs::path(output_dir) / record.file).string();
      if (!fs::exists(path, ec) || hex64(fnv1a64_file(path)) != record.checksum) {
        log::warn(path, ": missing or its checksum differs from the manifest; re-tokenizing from here");
        return previous;
      }
      previous.kept.push_back(std::move(record));
    }
    previous.complete = manifest.at("complete").get<bool>();
    if (previous.complete) previous.documents = manifest.at("documents").get<uint64_t>();
  } catch (const json::exception& e) {
    log::warn(manifest_path, ": malformed (", e.what(), "); starting over");
    return {};
  }
  return previous;
}

// Deletes shard files of this prefix that the manifest does not list (left by an older run with
// more shards, or temp files of an interrupted one), so a glob over the directory sees exactly the
// corpus described by the manifest.
void remove_unlisted_shards(const std::string& output_dir, const std::string& prefix,
                            const std::vector<ShardRecord>& records) {
  std::set<std::string> listed;
  for (const auto& record : records) listed.insert(record.file);
  const std::regex ours("(val|train)_[0-9]{6}\\.(bin|h5)(\\.tmp)?");
  std::error_code ec;
  for (const auto& entry : fs::directory_iterator(output_dir, ec)) {
    const std::string name = entry.path().filename().string();
    if (!name.starts_with(prefix + "_") || listed.count(name)) continue;
    if (!std::regex_match(name.substr(prefix.size() + 1), ours)) continue;
    log::warn(entry.path().string(), ": not part of this corpus (stale shard from an earlier run); removed");
    fs::remove(entry.path(), ec);
  }
}

}  // namespace

TokenizeJobResult run_tokenize_job(const TokenizeJobConfig& config) {
  const auto started = std::chrono::steady_clock::now();
  LATTE_REQUIRE(!config.output_dir.empty(), "latte tokenize: --output <dir> is required");
  LATTE_REQUIRE(config.shard_tokens > 0, "latte tokenize: --shard-tokens must be positive");
  if (config.format == ShardFormat::Bin)
    LATTE_REQUIRE(config.shard_tokens <= 0x7fffffffull && config.val_tokens <= 0x7fffffffull,
                  "latte tokenize: .bin shards hold at most 2^31-1 tokens (int32 header count); lower --shard-tokens/--val-tokens");
  const std::vector<InputFile> inputs = list_inputs(config.inputs);
  const auto tokenizer = make_tokenizer(config.tokenizer, config.tokenizer_dir);
  const TokenDtype dtype = dtype_for_vocab(tokenizer->vocab_size());
  const std::string prefix = config.prefix.empty() ? default_prefix(config.output_dir) : config.prefix;
  const json settings = settings_json(config, prefix, *tokenizer, dtype, inputs);

  std::error_code ec;
  fs::create_directories(config.output_dir, ec);
  LATTE_REQUIRE(fs::is_directory(config.output_dir, ec), config.output_dir, ": cannot create the output directory");
  const std::string manifest_path = (fs::path(config.output_dir) / kManifestName).string();

  TokenizeJobResult result;
  for (const auto& input : inputs) result.input_bytes += input.bytes;
  const PreviousRun previous = verify_previous_run(manifest_path, config.output_dir, settings, config.force);
  const std::vector<ShardRecord>& kept = previous.kept;
  result.shards_kept = static_cast<int>(kept.size());
  result.documents = previous.documents;

  ShardMetadata metadata{tokenizer->vocab_size(), tokenizer->eot_token(), tokenizer->name()};
  ShardSequence shards(config, prefix, dtype, metadata, settings, kept);
  if (previous.complete) {
    log::info("latte tokenize: ", config.output_dir, " is up to date (", kept.size(), " shards verified against ",
              manifest_path, ")");
  } else {
    const StreamPosition start = kept.empty() ? StreamPosition{} : kept.back().end;
    if (!kept.empty())
      log::info("latte tokenize: resuming after ", kept.size(), " verified shards (input ", start.input, ", byte ",
                start.offset, ")");
    uint64_t bytes_before_start = 0;
    std::vector<uint64_t> input_base(inputs.size() + 1, 0);
    for (size_t i = 0; i < inputs.size(); ++i) input_base[i + 1] = input_base[i] + inputs[i].bytes;
    if (start.input < inputs.size()) bytes_before_start = input_base[start.input] + start.offset;
    else bytes_before_start = result.input_bytes;

    uint64_t tokens_this_run = 0;
    auto last_print = std::chrono::steady_clock::now();
    bool printed = false;
    auto progress = [&](uint64_t input, uint64_t end_offset) {
      const auto now = std::chrono::steady_clock::now();
      if (!config.progress || now - last_print < std::chrono::milliseconds(500)) return;
      last_print = now;
      const double elapsed = std::chrono::duration<double>(now - started).count();
      const double done = static_cast<double>(input_base[input] + end_offset);
      const double rate = (done - static_cast<double>(bytes_before_start)) / std::max(elapsed, 1e-9);
      const double remaining = static_cast<double>(result.input_bytes) - done;
      std::fprintf(stderr, "\rtokenize: %.1f/%.1f MB (%.0f%%)  %s tokens  %s tok/s  ETA %s   ", done / 1e6,
                   result.input_bytes / 1e6, 100.0 * done / std::max<double>(1, result.input_bytes),
                   format_count(tokens_this_run).c_str(), format_count(tokens_this_run / std::max(elapsed, 1e-9)).c_str(),
                   format_duration(rate > 0 ? remaining / rate : -1).c_str());
      std::fflush(stderr);
      printed = true;
    };
    Pipeline pipeline(config, *tokenizer, inputs, start);
    const StreamPosition end = pipeline.run(
        [&](std::span<const int32_t> tokens, const StreamPosition& position) {
          shards.add(tokens, position);
          tokens_this_run += tokens.size();
        },
        progress);
    if (printed) std::fprintf(stderr, "\n");
    shards.finish(end);
    result.documents = end.documents;
  }
  remove_unlisted_shards(config.output_dir, prefix, shards.records());

  for (const auto& record : shards.records()) {
    (record.split == "val" ? result.val_tokens : result.train_tokens) += record.tokens;
    result.shard_paths.push_back((fs::path(config.output_dir) / record.file).string());
  }
  result.shards_written = shards.written();
  result.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  if (config.val_tokens > 0 && result.train_tokens == 0)
    log::warn("latte tokenize: the corpus has only ", result.val_tokens, " tokens, all in the val shard (--val-tokens ",
              config.val_tokens, "); no train shards");
  log::info("latte tokenize: ", result.documents, " documents, ", format_count(result.input_bytes), "B -> ",
            result.val_tokens + result.train_tokens, " tokens (val ", result.val_tokens, ", train ", result.train_tokens,
            ") in ", shards.records().size(), " shards (", result.shards_written, " written, ", result.shards_kept,
            " kept) in ", format_seconds(result.seconds), "; manifest ", manifest_path);
  return result;
}

}  // namespace latte::data
