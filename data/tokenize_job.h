// `latte tokenize` as a library function: input files -> documents -> token ids (K worker threads,
// document order preserved) -> a val shard and train shards + manifest.json.
//
// Layout of the output directory (llm.c convention: every document is preceded by EOT):
//   <prefix>_val_000000.<ext>     the first val_tokens tokens of the stream (if val_tokens > 0)
//   <prefix>_train_000000.<ext>   then shard_tokens tokens per shard, the last one partial
//   manifest.json                 settings, per-shard token count and FNV-1a 64 checksum, and for
//                                 each shard where the stream stood after it (input file, byte
//                                 offset of the document, tokens of it already written)
// Each shard and the manifest are published atomically; the manifest is rewritten after every
// shard. A re-run with the same settings verifies the shards listed there, keeps the longest
// verified prefix and resumes the stream right after it, so an interrupted job loses at most one
// shard of work and a finished one costs only the checksums.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/documents.h"
#include "data/shard.h"

namespace latte::data {

inline constexpr const char* kManifestName = "manifest.json";

struct TokenizeJobConfig {
  std::vector<std::string> inputs;       // files, directories (recursive) or globs, in this order
  std::string output_dir;                // created if missing
  std::string prefix;                    // shard file prefix; empty: the output directory's name
  std::string tokenizer = "gpt2";        // "gpt2" | "byte"
  std::string tokenizer_dir = "data/gpt2";
  ShardFormat format = ShardFormat::Bin;
  uint64_t shard_tokens = 100'000'000;   // tokens per train shard
  uint64_t val_tokens = 0;               // tokens of the single val shard (0: no val shard)
  int workers = 0;                       // tokenizing threads; 0: all hardware threads
  DocMode doc_mode = DocMode::File;
  std::string jsonl_key = "text";        // field holding the text in jsonl mode
  bool force = false;                    // ignore an existing manifest (start over)
  bool progress = true;                  // progress line on stderr
};

struct TokenizeJobResult {
  uint64_t documents = 0;       // documents in the whole stream (including resumed-over ones)
  uint64_t input_bytes = 0;     // bytes of all inputs
  uint64_t val_tokens = 0;
  uint64_t train_tokens = 0;
  int shards_written = 0;       // by this run
  int shards_kept = 0;          // verified from a previous run and skipped
  double seconds = 0;
  std::vector<std::string> shard_paths;  // all shards of the output, val first
};

TokenizeJobResult run_tokenize_job(const TokenizeJobConfig& config);

}  // namespace latte::data
