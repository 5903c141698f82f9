// Lookup over the generated Unicode range tables (see unicode_tables.h for why they are ranges).
#include <algorithm>

#include "data/unicode_tables.h"

namespace latte::data::unicode {

bool in_ranges(std::span<const CodepointRange> ranges, char32_t cp) {
  // First range whose last >= cp; cp is inside iff that range also starts at or before it.
  auto it = std::lower_bound(ranges.begin(), ranges.end(), cp,
                             [](const CodepointRange& r, char32_t value) { return r.last < value; });
  return it != ranges.end() && it->first <= cp;
}

CharClass classify_non_ascii(char32_t cp) {
  if (in_ranges(kLetters, cp)) return CharClass::Letter;
  if (in_ranges(kNumbers, cp)) return CharClass::Number;
  if (in_ranges(kWhitespace, cp)) return CharClass::Whitespace;
  return CharClass::Other;
}

}  // namespace latte::data::unicode
