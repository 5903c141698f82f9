// GPT-2's pre-tokenization, implemented by hand instead of with a regex engine. GPT-2 splits text
// into pieces with
//     's|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+
// before BPE merges each piece on its own; matching that split exactly (same leftmost-first
// alternation, same lookahead backtracking) is what makes our token ids identical to GPT-2's.
// A hand-written scanner is ~10x faster than a backtracking regex and has no dependency.
//
// The input is raw bytes. Valid UTF-8 sequences are classified by code point; each byte that is not
// part of a valid sequence (overlong forms, surrogates, > U+10FFFF, stray continuation bytes,
// truncated sequences) is its own unit of class Other -- what Python's regex sees when the bytes are
// decoded with errors="surrogateescape" -- so every byte string splits deterministically.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace latte::data {

// One decoded unit of the input: a valid UTF-8 code point, or a single invalid byte.
struct Utf8Unit {
  char32_t code_point;  // meaningless when !valid
  uint8_t length;       // bytes consumed, 1..4
  bool valid;
};

// Decodes the unit starting at text[pos] (pos < text.size()) with strict UTF-8 rules.
Utf8Unit decode_utf8_unit(std::string_view text, size_t pos);

// Calls on_piece(std::string_view piece) for each pre-token, in order; the pieces concatenate to
// the input exactly.
template <typename OnPiece>
void gpt2_pretokenize(std::string_view text, OnPiece&& on_piece);

// Convenience form for tests and tools.
std::vector<std::string> gpt2_pretokenize(std::string_view text);

// ---- implementation -----------------------------------------------------------------------------

namespace detail {
// Returns the end of the pre-token that starts at `begin` (begin < text.size()).
size_t gpt2_piece_end(std::string_view text, size_t begin);
}  // namespace detail

template <typename OnPiece>
void gpt2_pretokenize(std::string_view text, OnPiece&& on_piece) {
  size_t pos = 0;
  while (pos < text.size()) {
    size_t end = detail::gpt2_piece_end(text, pos);
    on_piece(text.substr(pos, end - pos));
    pos = end;
  }
}

}  // namespace latte::data
