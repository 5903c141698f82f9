// GPT-2 pre-tokenization and the Unicode tables behind it. Expected splits follow the regex
//   's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// (each was checked against Python's `regex` package running that exact pattern).
#include <gtest/gtest.h>

#include "data/pretokenizer.h"
#include "data/unicode_tables.h"

using namespace latte::data;
using Pieces = std::vector<std::string>;

TEST(Pretokenizer, SplitsLikeGpt2Regex) {
  const std::vector<std::pair<std::string, Pieces>> cases = {
      {"Hello world", {"Hello", " world"}},
      {"I'm here", {"I", "'m", " here"}},
      {"don't", {"don", "'t"}},
      {"DON'T", {"DON", "'", "T"}},  // contractions are lower-case only
      {"they'll've", {"they", "'ll", "'ve"}},
      {"x'sy", {"x", "'s", "y"}},
      {"'''s", {"'''", "s"}},  // a punctuation run swallows the apostrophe of "'s"
      {" 's", {" '", "s"}},
      {"  hello", {" ", " hello"}},  // the last space of a run joins the word
      {"hello  ", {"hello", "  "}},  // at the end the whole run stays together
      {"   ", {"   "}},
      {"a\n\nb", {"a", "\n", "\n", "b"}},
      {"x\r\ny", {"x", "\r", "\n", "y"}},
      {"x  \ty", {"x", "  ", "\t", "y"}},
      {"a \n b", {"a", " \n", " b"}},
      {"tab\tthen", {"tab", "\t", "then"}},
      {"123456", {"123456"}},
      {" 42abc", {" 42", "abc"}},
      {"3.14", {"3", ".", "14"}},
      {"!!!?", {"!!!?"}},
      {"hi \xf0\x9f\x98\x80\xf0\x9f\x98\x80!", {"hi", " \xf0\x9f\x98\x80\xf0\x9f\x98\x80!"}},
      {"e\xcc\x81", {"e", "\xcc\x81"}},  // combining mark is not a letter
      {"\xc2\xa0word", {"\xc2\xa0", "word"}},  // NBSP is whitespace but not the optional ' '
      {"word\x1c", {"word", "\x1c"}},  // U+001C is not \s for regex (it is for str.isspace)
      {"\xc2\xbfQu\xc3\xa9?", {"\xc2\xbf", "Qu\xc3\xa9", "?"}},
      {"\xd9\xa1\xd9\xa2 \xc2\xbd", {"\xd9\xa1\xd9\xa2", " \xc2\xbd"}},  // Arabic-Indic digits, vulgar fraction
  };
  for (const auto& [text, expected] : cases) EXPECT_EQ(gpt2_pretokenize(text), expected) << "text: '" << text << "'";
}

TEST(Pretokenizer, InvalidBytesArePunctuationLikeUnits) {
  EXPECT_EQ(gpt2_pretokenize("a\xff" "b"), (Pieces{"a", "\xff", "b"}));
  EXPECT_EQ(gpt2_pretokenize(" \xff\xfe"), (Pieces{" \xff\xfe"}));
  EXPECT_EQ(gpt2_pretokenize("\xe2\x82 x"), (Pieces{"\xe2\x82", " x"}));       // truncated 3-byte sequence
  EXPECT_EQ(gpt2_pretokenize("ok\xed\xa0\x80"), (Pieces{"ok", "\xed\xa0\x80"}));  // encoded surrogate
  EXPECT_EQ(gpt2_pretokenize("\xc3\xa9\x80"), (Pieces{"\xc3\xa9", "\x80"}));  // letter then stray continuation
}

TEST(Pretokenizer, PiecesConcatenateToInput) {
  std::string text;
  for (int i = 0; i < 5000; ++i) text.push_back(static_cast<char>((i * 7919 + i / 3) & 0xff));
  std::string joined;
  for (const auto& piece : gpt2_pretokenize(text)) {
    EXPECT_FALSE(piece.empty());
    joined += piece;
  }
  EXPECT_EQ(joined, text);
}

TEST(Utf8, StrictDecoding) {
  auto unit = [](std::string_view s) { return decode_utf8_unit(s, 0); };
  EXPECT_TRUE(unit("A").valid);
  EXPECT_EQ(unit("\xc3\xa9").code_point, U'\u00e9');
  EXPECT_EQ(unit("\xc3\xa9").length, 2);
  EXPECT_EQ(unit("\xe2\x82\xac").code_point, U'\u20ac');
  EXPECT_EQ(unit("\xf0\x9f\x98\x80").code_point, U'\U0001F600');
  EXPECT_EQ(unit("\xf4\x8f\xbf\xbf").code_point, U'\U0010FFFF');
  for (std::string_view bad : {"\x80", "\xbf", "\xc0\xaf", "\xc1\xbf", "\xe0\x80\xaf", "\xed\xa0\x80", "\xf0\x80\x80\xaf",
                               "\xf4\x90\x80\x80", "\xf5\x80\x80\x80", "\xff", "\xc3", "\xe2\x82", "\xc3\x41"}) {
    const Utf8Unit u = unit(bad);
    EXPECT_FALSE(u.valid) << "bytes " << std::string(bad);
    EXPECT_EQ(u.length, 1);
  }
}

TEST(UnicodeTables, Classification) {
  using unicode::CharClass;
  using unicode::classify;
  EXPECT_EQ(classify(U'A'), CharClass::Letter);
  EXPECT_EQ(classify(U'z'), CharClass::Letter);
  EXPECT_EQ(classify(U'\u00e9'), CharClass::Letter);
  EXPECT_EQ(classify(U'\u00aa'), CharClass::Letter);  // feminine ordinal (Lo)
  EXPECT_EQ(classify(U'\u01c5'), CharClass::Letter);  // titlecase Lt
  EXPECT_EQ(classify(U'\u4e2d'), CharClass::Letter);
  EXPECT_EQ(classify(U'\U00020000'), CharClass::Letter);  // CJK extension B
  EXPECT_EQ(classify(U'7'), CharClass::Number);
  EXPECT_EQ(classify(U'\u0661'), CharClass::Number);
  EXPECT_EQ(classify(U'\u00b2'), CharClass::Number);  // No
  EXPECT_EQ(classify(U'\u216b'), CharClass::Number);  // Roman numeral twelve (Nl)
  EXPECT_EQ(classify(U'\U0001D7D9'), CharClass::Number);  // mathematical double-struck one
  for (char32_t ws : {U' ', U'\t', U'\n', U'\v', U'\f', U'\r', U'\u0085', U'\u00a0', U'\u1680', U'\u2000', U'\u200a',
                      U'\u2028', U'\u2029', U'\u202f', U'\u205f', U'\u3000'})
    EXPECT_EQ(classify(ws), CharClass::Whitespace) << std::hex << uint32_t(ws);
  for (char32_t other : {U'!', U'\'', U'\u001c', U'\u001f', U'\u200b', U'\ufeff', U'\u0301', U'\U0001F600', U'\u00a9',
                         U'\u20ac', U'\0', U'\u007f', U'\U0010FFFF'})
    EXPECT_EQ(classify(other), CharClass::Other) << std::hex << uint32_t(other);
}

TEST(UnicodeTables, RangesSortedDisjointAndAgreeWithAsciiFastPath) {
  for (auto table : {unicode::kLetters, unicode::kNumbers, unicode::kWhitespace}) {
    ASSERT_FALSE(table.empty());
    for (size_t i = 0; i < table.size(); ++i) {
      EXPECT_LE(table[i].first, table[i].last);
      if (i > 0) {
        EXPECT_LT(table[i - 1].last + 1, table[i].first) << "unmerged or overlapping ranges";
      }
    }
  }
  for (char32_t cp = 0; cp < 0x80; ++cp) {
    const bool letter = unicode::in_ranges(unicode::kLetters, cp);
    const bool number = unicode::in_ranges(unicode::kNumbers, cp);
    const bool space = unicode::in_ranges(unicode::kWhitespace, cp);
    const auto expected = letter ? unicode::CharClass::Letter
                          : number ? unicode::CharClass::Number
                          : space  ? unicode::CharClass::Whitespace
                                   : unicode::CharClass::Other;
    EXPECT_EQ(unicode::classify(cp), expected) << "code point " << uint32_t(cp);
  }
}
