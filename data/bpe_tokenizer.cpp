// GPT-2 byte-level BPE: loading the reference vocabulary, the merge loop, and the per-thread cache.
#include "data/bpe_tokenizer.h"

#include <algorithm>
#include <atomic>
#include <fstream>
#include <functional>
#include <queue>
#include <sstream>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "data/pretokenizer.h"

namespace latte::data {

// ---- byte <-> unicode mapping (encoder.py's bytes_to_unicode) -----------------------------------

namespace {

struct ByteUnicodeTables {
  std::array<char32_t, 256> byte_to_unicode{};
  std::array<int16_t, 324> unicode_to_byte{};  // images lie in [0, 324)
  ByteUnicodeTables() {
    unicode_to_byte.fill(-1);
    auto printable = [](int b) { return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF); };
    int next_unused = 256;
    for (int b = 0; b < 256; ++b) {
      const char32_t cp = printable(b) ? char32_t(b) : char32_t(next_unused++);
      byte_to_unicode[b] = cp;
      unicode_to_byte[cp] = static_cast<int16_t>(b);
    }
  }
};

const ByteUnicodeTables& byte_unicode_tables() {
  static const ByteUnicodeTables tables;
  return tables;
}

}  // namespace

char32_t gpt2_byte_to_unicode(uint8_t byte) { return byte_unicode_tables().byte_to_unicode[byte]; }

int gpt2_unicode_to_byte(char32_t code_point) {
  if (code_point >= 324) return -1;
  return byte_unicode_tables().unicode_to_byte[code_point];
}

// ---- loading ------------------------------------------------------------------------------------

namespace {

// Converts a token as written in encoder.json / vocab.bpe (UTF-8 of mapped code points) back to
// the raw bytes it stands for.
std::string unmap_token(std::string_view mapped, const std::string& file, size_t line) {
  std::string bytes;
  size_t pos = 0;
  while (pos < mapped.size()) {
    const Utf8Unit unit = decode_utf8_unit(mapped, pos);
    const int byte = unit.valid ? gpt2_unicode_to_byte(unit.code_point) : -1;
    if (byte < 0)
      LATTE_FAIL(file, ":", line, ": token '", mapped, "' contains a character that is not in GPT-2's ",
                 "byte-to-unicode mapping; is this a GPT-2 vocabulary file? (re-run scripts/fetch_gpt2_tokenizer.sh)");
    bytes.push_back(static_cast<char>(byte));
    pos += unit.length;
  }
  return bytes;
}

std::ifstream open_or_fail(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    LATTE_FAIL(path, ": cannot open the GPT-2 tokenizer file; run scripts/fetch_gpt2_tokenizer.sh ",
               "(or pass --tokenizer-dir / tokenizer_dir pointing at encoder.json and vocab.bpe)");
  return in;
}

std::atomic<uint64_t> g_next_instance_id{1};

}  // namespace

Gpt2Tokenizer::Gpt2Tokenizer(const std::string& dir) : instance_id_(g_next_instance_id++) {
  load_encoder(dir + "/encoder.json");
  load_merges(dir + "/vocab.bpe");
}

void Gpt2Tokenizer::load_encoder(const std::string& path) {
  std::ifstream in = open_or_fail(path);
  nlohmann::json encoder;
  try {
    encoder = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    LATTE_FAIL(path, ": not valid JSON (", e.what(), "); re-run scripts/fetch_gpt2_tokenizer.sh");
  }
  LATTE_REQUIRE(encoder.is_object() && !encoder.empty(), path, ": expected a JSON object mapping tokens to ids");
  token_bytes_.assign(encoder.size(), std::string());
  std::vector<bool> seen(encoder.size(), false);
  for (const auto& [mapped, value] : encoder.items()) {
    LATTE_REQUIRE(value.is_number_integer(), path, ": the id of token '", mapped, "' is not an integer");
    const int64_t id = value.get<int64_t>();
    LATTE_REQUIRE(id >= 0 && id < static_cast<int64_t>(encoder.size()) && !seen[id], path, ": token '", mapped,
                  "' has id ", id, ", but ids must be unique and in [0, ", encoder.size(), ")");
    seen[id] = true;
    std::string bytes = unmap_token(mapped, path, 0);
    if (mapped == kEndOfTextText) eot_token_ = static_cast<int32_t>(id);
    auto [it, inserted] = bytes_to_id_.emplace(bytes, static_cast<int32_t>(id));
    LATTE_REQUIRE(inserted, path, ": tokens ", it->second, " and ", id, " stand for the same bytes");
    token_bytes_[id] = std::move(bytes);
  }
  LATTE_REQUIRE(eot_token_ >= 0, path, ": no '<|endoftext|>' token");
  for (int b = 0; b < 256; ++b) {
    auto it = bytes_to_id_.find(std::string(1, static_cast<char>(b)));
    LATTE_REQUIRE(it != bytes_to_id_.end(), path, ": byte ", b, " has no single-byte token");
    byte_token_[b] = it->second;
  }
}

void Gpt2Tokenizer::load_merges(const std::string& path) {
  std::ifstream in = open_or_fail(path);
  std::string line;
  size_t line_number = 0;
  int32_t rank = 0;
  while (std::getline(in, line)) {
    ++line_number;
    if (line_number == 1 && line.starts_with("#version")) continue;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.empty()) continue;
    const size_t space = line.find(' ');
    LATTE_REQUIRE(space != std::string::npos && space > 0 && space + 1 < line.size() &&
                      line.find(' ', space + 1) == std::string::npos,
                  path, ":", line_number, ": expected two tokens separated by one space, got '", line, "'");
    const std::string left = unmap_token(std::string_view(line).substr(0, space), path, line_number);
    const std::string right = unmap_token(std::string_view(line).substr(space + 1), path, line_number);
    auto lookup = [&](const std::string& bytes, std::string_view what) {
      auto it = bytes_to_id_.find(bytes);
      if (it == bytes_to_id_.end())
        LATTE_FAIL(path, ":", line_number, ": the ", what, " of merge '", line,
                   "' is not in encoder.json; the two files do not belong together");
      return it->second;
    };
    const int32_t left_id = lookup(left, "left token");
    const int32_t right_id = lookup(right, "right token");
    const int32_t merged_id = lookup(left + right, "result");
    // encoder.py builds its ranks with dict(zip(merges, range(...))): a repeated pair keeps its last rank.
    merges_[pair_key(left_id, right_id)] = Merge{rank++, merged_id};
  }
  LATTE_REQUIRE(rank > 0, path, ": no merges found");
}

const std::string& Gpt2Tokenizer::token_bytes(int32_t id) const {
  LATTE_REQUIRE(id >= 0 && id < vocab_size(), "gpt2 tokenizer: token id ", id, " is outside the vocabulary [0, ",
                vocab_size(), ")");
  return token_bytes_[id];
}

// ---- BPE ----------------------------------------------------------------------------------------

void Gpt2Tokenizer::bpe_piece_rescan(std::string_view piece, std::vector<int32_t>& out) const {
  // encoder.py's loop: find the lowest-ranked adjacent pair, merge all its occurrences left to right.
  thread_local std::vector<int32_t> word;
  word.clear();
  for (char c : piece) word.push_back(byte_token_[static_cast<unsigned char>(c)]);
  while (word.size() > 1) {
    const Merge* best = nullptr;
    int32_t best_left = 0, best_right = 0;
    for (size_t i = 0; i + 1 < word.size(); ++i) {
      const Merge* merge = find_merge(word[i], word[i + 1]);
      if (merge && (!best || merge->rank < best->rank)) {
        best = merge;
        best_left = word[i];
        best_right = word[i + 1];
      }
    }
    if (!best) break;
    size_t write = 0;
    for (size_t read = 0; read < word.size(); ++write) {
      if (read + 1 < word.size() && word[read] == best_left && word[read + 1] == best_right) {
        word[write] = best->merged_id;
        read += 2;
      } else {
        word[write] = word[read++];
      }
    }
    word.resize(write);
  }
  out.insert(out.end(), word.begin(), word.end());
}

void Gpt2Tokenizer::bpe_piece_heap(std::string_view piece, std::vector<int32_t>& out) const {
  // Symbols form a linked list indexed by the position of their first byte. Candidate pairs sit in
  // a min-heap by (rank, position); entries go stale when a neighbour merges and are checked when
  // popped. To reproduce encoder.py exactly, all occurrences of the current lowest rank are merged
  // (left to right) before the pairs they create are pushed: a created pair may outrank pairs of
  // the same round, but encoder.py only looks at it in its next round.
  const int n = static_cast<int>(piece.size());
  std::vector<int32_t> id(n), prev(n), next(n);
  for (int i = 0; i < n; ++i) {
    id[i] = byte_token_[static_cast<unsigned char>(piece[i])];
    prev[i] = i - 1;
    next[i] = i + 1 < n ? i + 1 : -1;
  }
  struct Candidate {
    int32_t rank, position, left, right;
    bool operator>(const Candidate& o) const { return rank != o.rank ? rank > o.rank : position > o.position; }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  auto push_pair = [&](int left_pos) {
    if (left_pos < 0 || next[left_pos] < 0) return;
    if (const Merge* m = find_merge(id[left_pos], id[next[left_pos]]))
      heap.push({m->rank, left_pos, id[left_pos], id[next[left_pos]]});
  };
  for (int i = 0; i + 1 < n; ++i) push_pair(i);
  std::vector<bool> alive(n, true);
  auto still_valid = [&](const Candidate& c) {
    return alive[c.position] && id[c.position] == c.left && next[c.position] >= 0 && id[next[c.position]] == c.right;
  };
  std::vector<int> merged_this_round;
  while (!heap.empty()) {
    if (!still_valid(heap.top())) {
      heap.pop();
      continue;
    }
    const int32_t round_rank = heap.top().rank;
    merged_this_round.clear();
    while (!heap.empty() && heap.top().rank == round_rank) {
      const Candidate c = heap.top();
      heap.pop();
      if (!still_valid(c)) continue;
      const int right_pos = next[c.position];
      id[c.position] = find_merge(c.left, c.right)->merged_id;
      alive[right_pos] = false;
      next[c.position] = next[right_pos];
      if (next[right_pos] >= 0) prev[next[right_pos]] = c.position;
      merged_this_round.push_back(c.position);
    }
    for (int position : merged_this_round) {
      if (!alive[position]) continue;
      push_pair(prev[position]);
      push_pair(position);
    }
  }
  for (int i = 0; i >= 0 && i < n; i = next[i]) out.push_back(id[i]);
}

void Gpt2Tokenizer::bpe_piece(std::string_view piece, std::vector<int32_t>& out) const {
  // Crossover measured with bench_tokenizer: the rescan wins on the short pieces of natural text.
  constexpr size_t kHeapThreshold = 64;
  if (piece.size() < kHeapThreshold)
    bpe_piece_rescan(piece, out);
  else
    bpe_piece_heap(piece, out);
}

namespace {

// Per-thread memo of piece -> ids. Per thread so that workers never contend on a lock; keyed by the
// tokenizer instance so that two tokenizers on one thread do not share entries.
struct PieceCache {
  struct Hash {
    using is_transparent = void;
    size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  struct Span {
    uint32_t offset, length;
  };
  static constexpr size_t kMaxPieceBytes = 48;  // longer pieces rarely repeat
  static constexpr size_t kMaxEntries = 1 << 19;

  uint64_t owner = 0;
  std::unordered_map<std::string, Span, Hash, std::equal_to<>> spans;
  std::vector<int32_t> ids;

  void claim(uint64_t instance_id) {
    if (owner == instance_id && spans.size() < kMaxEntries) return;
    owner = instance_id;
    spans.clear();
    ids.clear();
  }
};

}  // namespace

void Gpt2Tokenizer::encode_append(std::string_view text, std::vector<int32_t>& out) const {
  thread_local PieceCache cache;
  cache.claim(instance_id_);
  gpt2_pretokenize(text, [&](std::string_view piece) {
    if (piece.size() == 1) {
      out.push_back(byte_token_[static_cast<unsigned char>(piece[0])]);
      return;
    }
    if (piece.size() > PieceCache::kMaxPieceBytes) {
      bpe_piece(piece, out);
      return;
    }
    if (auto it = cache.spans.find(piece); it != cache.spans.end()) {
      // Most pieces are 1-2 tokens: a loop beats vector::insert's memmove call here.
      const int32_t* ids = cache.ids.data() + it->second.offset;
      for (uint32_t i = 0; i < it->second.length; ++i) out.push_back(ids[i]);
      return;
    }
    const size_t first = out.size();
    bpe_piece(piece, out);
    const auto offset = static_cast<uint32_t>(cache.ids.size());
    cache.ids.insert(cache.ids.end(), out.begin() + first, out.end());
    cache.spans.emplace(std::string(piece), PieceCache::Span{offset, static_cast<uint32_t>(out.size() - first)});
  });
  cache.claim(instance_id_);  // evicts everything once the cache is full
}

void Gpt2Tokenizer::decode_append(std::span<const int32_t> ids, std::string& out) const {
  for (size_t i = 0; i < ids.size(); ++i) {
    const int32_t id = ids[i];
    if (id < 0 || id >= vocab_size())
      LATTE_FAIL("gpt2 tokenizer: token id ", id, " at position ", i, " is outside the vocabulary [0, ",
                 vocab_size(), ")");
    out.append(token_bytes_[id]);
  }
}

}  // namespace latte::data
