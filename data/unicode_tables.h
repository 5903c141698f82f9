// Unicode classes used by GPT-2's pre-tokenization: letters (\p{L}), numbers (\p{N}) and whitespace
// (\s, i.e. the White_Space property). The range tables live in the generated unicode_tables.cpp
// (scripts/gen_unicode_tables.py) so that the classification is data, reviewed once, and the lookup
// stays a branch-light binary search with an ASCII fast path (almost all English text is ASCII).
#pragma once
#include <cstdint>
#include <span>

namespace latte::data::unicode {

struct CodepointRange {
  char32_t first;  // inclusive
  char32_t last;   // inclusive
};

extern const std::span<const CodepointRange> kLetters;
extern const std::span<const CodepointRange> kNumbers;
extern const std::span<const CodepointRange> kWhitespace;
extern const char* const kTableSource;  // which Unicode database produced the tables

// The three classes are disjoint; everything else (punctuation, symbols, marks, controls, and bytes
// that are not valid UTF-8) is Other, i.e. the [^\s\p{L}\p{N}] class of the regex.
enum class CharClass : uint8_t { Letter, Number, Whitespace, Other };

bool in_ranges(std::span<const CodepointRange> ranges, char32_t cp);

CharClass classify_non_ascii(char32_t cp);

inline CharClass classify(char32_t cp) {
  if (cp < 0x80) {
    if ((cp | 0x20) >= 'a' && (cp | 0x20) <= 'z') return CharClass::Letter;
    if (cp >= '0' && cp <= '9') return CharClass::Number;
    if (cp == ' ' || (cp >= '\t' && cp <= '\r')) return CharClass::Whitespace;
    return CharClass::Other;
  }
  return classify_non_ascii(cp);
}

}  // namespace latte::data::unicode
