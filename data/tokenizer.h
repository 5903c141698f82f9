// The tokenizer interface the rest of latte sees: text bytes <-> token ids. Two implementations:
// GPT-2's byte-level BPE (bpe_tokenizer.h; what the corpora are tokenized with) and a plain byte
// tokenizer (byte_tokenizer.h; no files needed, for tests and toy runs). Both are lossless on any
// byte string, valid UTF-8 or not: decode(encode(s)) == s.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace latte::data {

// The document separator in text form; encode_with_specials() maps it to eot_token().
inline constexpr std::string_view kEndOfTextText = "<|endoftext|>";

class Tokenizer {
 public:
  virtual ~Tokenizer() = default;

  // Appends the ids of `text` to `out`. Special-token text such as "<|endoftext|>" is ordinary text
  // here (it is split and merged like any other bytes), so untrusted input cannot inject an EOT.
  // Thread-safe: workers may share one tokenizer.
  virtual void encode_append(std::string_view text, std::vector<int32_t>& out) const = 0;

  // Appends the bytes of `ids` to `out`; an id outside [0, vocab_size()) is a latte::Error.
  virtual void decode_append(std::span<const int32_t> ids, std::string& out) const = 0;

  virtual int32_t vocab_size() const = 0;
  virtual int32_t eot_token() const = 0;
  virtual std::string name() const = 0;

  std::vector<int32_t> encode(std::string_view text) const;
  // Like encode(), but each literal "<|endoftext|>" becomes eot_token(); the text between them is
  // encoded independently (as GPT-2's reference does with allowed specials).
  std::vector<int32_t> encode_with_specials(std::string_view text) const;
  std::string decode(std::span<const int32_t> ids) const;
};

// name: "gpt2" (reads encoder.json and vocab.bpe from `dir`) or "byte" (ignores `dir`).
// Unknown names and missing/corrupt files are a latte::Error naming the name or file.
std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& dir = "data/gpt2");

}  // namespace latte::data
