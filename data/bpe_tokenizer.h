// GPT-2's byte-level BPE tokenizer (50257 ids, EOT = 50256), loaded from the reference files
// encoder.json (token string -> id) and vocab.bpe (merges in priority order) that
// scripts/fetch_gpt2_tokenizer.sh puts into data/gpt2/. Produces the same ids as OpenAI's encoder.py
// on any byte string: the text is split by GPT-2's pre-tokenization (pretokenizer.h), each piece's
// bytes start as single-byte tokens, and the lowest-ranked adjacent pair is merged (every
// occurrence, left to right) until no pair has a rank. Results per piece are cached per thread,
// because natural text repeats a small set of words.
#pragma once
#include <array>
#include <cstdint>
#include <string>
#include <unordered_map>
#include <vector>

#include "data/tokenizer.h"

namespace latte::data {

// GPT-2's reversible byte <-> printable-code-point mapping: bytes that are printable Latin-1 map to
// themselves, the other 68 to U+0100..U+0143, so every token of encoder.json is a printable string.
char32_t gpt2_byte_to_unicode(uint8_t byte);
// Returns -1 for a code point that is not the image of a byte.
int gpt2_unicode_to_byte(char32_t code_point);

class Gpt2Tokenizer final : public Tokenizer {
 public:
  // Reads <dir>/encoder.json and <dir>/vocab.bpe; a missing or malformed file is a latte::Error.
  explicit Gpt2Tokenizer(const std::string& dir);

  void encode_append(std::string_view text, std::vector<int32_t>& out) const override;
  void decode_append(std::span<const int32_t> ids, std::string& out) const override;
  int32_t vocab_size() const override { return static_cast<int32_t>(token_bytes_.size()); }
  int32_t eot_token() const override { return eot_token_; }
  std::string name() const override { return "gpt2"; }

  // BPE of one pre-token without the cache. Two equivalent algorithms: the reference's quadratic
  // rescan (fast for the short pieces of natural text) and a heap over pair ranks (O(n log n), used
  // for long pieces such as runs of symbols or letters, where the rescan would take minutes).
  void bpe_piece_rescan(std::string_view piece, std::vector<int32_t>& out) const;
  void bpe_piece_heap(std::string_view piece, std::vector<int32_t>& out) const;
  // The bytes of one token (EOT's are "<|endoftext|>").
  const std::string& token_bytes(int32_t id) const;
  int32_t merge_count() const { return static_cast<int32_t>(merges_.size()); }

 private:
  struct Merge {
    int32_t rank;
    int32_t merged_id;
  };
  static uint64_t pair_key(int32_t left, int32_t right) {
    return static_cast<uint64_t>(static_cast<uint32_t>(left)) << 32 | static_cast<uint32_t>(right);
  }
  const Merge* find_merge(int32_t left, int32_t right) const {
    auto it = merges_.find(pair_key(left, right));
    return it == merges_.end() ? nullptr : &it->second;
  }
  void bpe_piece(std::string_view piece, std::vector<int32_t>& out) const;
  void load_encoder(const std::string& path);
  void load_merges(const std::string& path);

  std::vector<std::string> token_bytes_;               // id -> raw bytes
  std::unordered_map<std::string, int32_t> bytes_to_id_;
  std::array<int32_t, 256> byte_token_{};              // byte -> id of its one-byte token
  std::unordered_map<uint64_t, Merge> merges_;         // (left id, right id) -> rank, result
  int32_t eot_token_ = -1;
  uint64_t instance_id_;                               // keys the per-thread piece cache
};

}  // namespace latte::data
