// Byte tokenizer: id = byte value, EOT = 256 (decodes to "<|endoftext|>" like GPT-2's EOT does).
#include "data/byte_tokenizer.h"

#include "core/error.h"

namespace latte::data {

void ByteTokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  const size_t first = out.size();
  out.resize(first + text.size());
  for (size_t i = 0; i < text.size(); ++i) out[first + i] = static_cast<unsigned char>(text[i]);
}

void ByteTokenizer::decode_append(std::span<const int32_t> ids, std::string& out) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id >= 0 && id < 256) {
      out.push_back(static_cast<char>(id));
    } else if (id == kEot) {
      out.append(kEndOfTextText);
    } else {
      LATTE_FAIL("byte tokenizer: token id ", id, " at position ", i, " is outside the vocabulary [0, 257)");
    }
  }
}

}  // namespace latte::data
