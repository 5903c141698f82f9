// Hand-written scanner equivalent to GPT-2's pre-tokenization regex (see pretokenizer.h).
#include "data/pretokenizer.h"

#include "data/unicode_tables.h"

namespace latte::data {

using unicode::CharClass;

Utf8Unit decode_utf8_unit(std::string_view text, size_t pos) {
  const auto* s = reinterpret_cast<const unsigned char*>(text.data());
  const size_t n = text.size();
  const unsigned char b0 = s[pos];
  const Utf8Unit invalid{0, 1, false};
  if (b0 < 0x80) return {b0, 1, true};
  auto continuation = [&](size_t i, unsigned char lo = 0x80, unsigned char hi = 0xBF) {
    return pos + i < n && s[pos + i] >= lo && s[pos + i] <= hi;
  };
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    if (!continuation(1)) return invalid;
    return {char32_t((b0 & 0x1F) << 6 | (s[pos + 1] & 0x3F)), 2, true};
  }
  if (b0 >= 0xE0 && b0 <= 0xEF) {
    // E0 excludes overlong forms (< U+0800), ED excludes the UTF-16 surrogates D800..DFFF.
    const unsigned char lo = b0 == 0xE0 ? 0xA0 : 0x80;
    const unsigned char hi = b0 == 0xED ? 0x9F : 0xBF;
    if (!continuation(1, lo, hi) || !continuation(2)) return invalid;
    return {char32_t((b0 & 0x0F) << 12 | (s[pos + 1] & 0x3F) << 6 | (s[pos + 2] & 0x3F)), 3, true};
  }
  if (b0 >= 0xF0 && b0 <= 0xF4) {
    // F0 excludes overlong forms (< U+10000), F4 excludes code points above U+10FFFF.
    const unsigned char lo = b0 == 0xF0 ? 0x90 : 0x80;
    const unsigned char hi = b0 == 0xF4 ? 0x8F : 0xBF;
    if (!continuation(1, lo, hi) || !continuation(2) || !continuation(3)) return invalid;
    return {char32_t((b0 & 0x07) << 18 | (s[pos + 1] & 0x3F) << 12 | (s[pos + 2] & 0x3F) << 6 |
                     (s[pos + 3] & 0x3F)),
            4, true};
  }
  return invalid;  // stray continuation byte, C0/C1 (overlong lead), F5..FF
}

namespace {

struct ClassifiedUnit {
  size_t length;
  CharClass cls;
};

inline ClassifiedUnit unit_at(std::string_view text, size_t pos) {
  const auto b = static_cast<unsigned char>(text[pos]);
  if (b < 0x80) return {1, unicode::classify(b)};
  const Utf8Unit unit = decode_utf8_unit(text, pos);
  if (!unit.valid) return {1, CharClass::Other};
  return {unit.length, unicode::classify_non_ascii(unit.code_point)};
}

// End of the run of units of class `cls` that starts at pos.
inline size_t run_end(std::string_view text, size_t pos, CharClass cls) {
  while (pos < text.size()) {
    const ClassifiedUnit unit = unit_at(text, pos);
    if (unit.cls != cls) break;
    pos += unit.length;
  }
  return pos;
}

// 's 't 'm 'd 're 've 'll (lower case only, as in GPT-2's pattern): length of the match or 0.
inline size_t contraction_length(std::string_view text, size_t begin) {
  if (text[begin] != '\'' || begin + 1 >= text.size()) return 0;
  const char c1 = text[begin + 1];
  if (c1 == 's' || c1 == 't' || c1 == 'm' || c1 == 'd') return 2;
  if (begin + 2 >= text.size()) return 0;
  const char c2 = text[begin + 2];
  if ((c1 == 'r' && c2 == 'e') || (c1 == 'v' && c2 == 'e') || (c1 == 'l' && c2 == 'l')) return 3;
  return 0;
}

}  // namespace

namespace detail {

size_t gpt2_piece_end(std::string_view text, size_t begin) {
  // Alternatives are tried in the regex's order; the first that matches at `begin` wins.
  if (const size_t length = contraction_length(text, begin)) return begin + length;

  // " ?\p{L}+ | ?\p{N}+ | ?[^\s\p{L}\p{N}]+": an optional ASCII space, then a run of one class.
  if (text[begin] == ' ' && begin + 1 < text.size()) {
    const ClassifiedUnit next = unit_at(text, begin + 1);
    if (next.cls != CharClass::Whitespace) return run_end(text, begin + 1, next.cls);
  }
  const ClassifiedUnit first = unit_at(text, begin);
  if (first.cls != CharClass::Whitespace) return run_end(text, begin, first.cls);

  // "\s+(?!\S)|\s+": the whitespace run, minus its last unit when a non-space follows (that unit
  // then starts the next piece, e.g. " world"), unless the run is a single unit.
  size_t last_unit = begin;
  size_t pos = begin;
  while (pos < text.size()) {
    const ClassifiedUnit unit = unit_at(text, pos);
    if (unit.cls != CharClass::Whitespace) break;
    last_unit = pos;
    pos += unit.length;
  }
  if (pos == text.size()) return pos;
  return last_unit > begin ? last_unit : pos;
}

}  // namespace detail

std::vector<std::string> gpt2_pretokenize(std::string_view text) {
  std::vector<std::string> pieces;
  gpt2_pretokenize(text, [&](std::string_view piece) { pieces.emplace_back(piece); });
  return pieces;
}

}  // namespace latte::data
