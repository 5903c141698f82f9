// The dependency-free fallback tokenizer: one token per byte (ids 0..255) plus EOT = 256. Useful for
// tests, toy runs and any environment without the GPT-2 vocabulary files.
#pragma once
#include "data/tokenizer.h"

namespace latte::data {

class ByteTokenizer final : public Tokenizer {
 public:
  static constexpr int32_t kEot = 256;

  void encode_append(std::string_view text, std::vector<int32_t>& out) const override;
  void decode_append(std::span<const int32_t> ids, std::string& out) const override;
  int32_t vocab_size() const override { return 257; }
  int32_t eot_token() const override { return kEot; }
  std::string name() const override { return "byte"; }
};

}  // namespace latte::data
