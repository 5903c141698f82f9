// Shared Tokenizer helpers and the factory that picks an implementation by name.
#include "data/tokenizer.h"

#include "core/error.h"
#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"

namespace latte::data {

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  encode_append(text, ids);
  return ids;
}

std::vector<int32_t> Tokenizer::encode_with_specials(std::string_view text) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 1);
  size_t pos = 0;
  while (pos <= text.size()) {
    const size_t special = text.find(kEndOfTextText, pos);
    const size_t end = special == std::string_view::npos ? text.size() : special;
    encode_append(text.substr(pos, end - pos), ids);
    if (special == std::string_view::npos) break;
    ids.push_back(eot_token());
    pos = special + kEndOfTextText.size();
  }
  return ids;
}

std::string Tokenizer::decode(std::span<const int32_t> ids) const {
  std::string text;
  text.reserve(ids.size() * 4);
  decode_append(ids, text);
  return text;
}

std::unique_ptr<Tokenizer> make_tokenizer(const std::string& name, const std::string& dir) {
  if (name == "gpt2") return std::make_unique<Gpt2Tokenizer>(dir);
  if (name == "byte") return std::make_unique<ByteTokenizer>();
  LATTE_FAIL("unknown tokenizer '", name, "': use 'gpt2' (GPT-2 byte-level BPE) or 'byte'");
}

}  // namespace latte::data
