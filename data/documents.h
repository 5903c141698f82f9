// Splits input files into documents for tokenization: a whole file, one JSON object per line
// (jsonl, text under a key), or paragraphs separated by blank lines. Each document carries the byte
// offset where it starts so that an interrupted `latte tokenize` can resume from the middle of a
// file by seeking there.
#pragma once
#include <cstdint>
#include <cstdio>
#include <string>
#include <string_view>

namespace latte::data {

enum class DocMode { File, Jsonl, BlankLine };
DocMode parse_doc_mode(std::string_view name);  // "file" | "jsonl" | "blank-line", else latte::Error
const char* doc_mode_name(DocMode mode);

struct Document {
  std::string text;        // the document, or in raw jsonl mode the JSON line (see jsonl_text)
  uint64_t offset = 0;     // byte offset of the document's start in its file
  uint64_t end = 0;        // byte offset just past the document (and its separator lines)
  uint64_t line = 0;       // 1-based line where it starts; 0 when unknown (file mode, resumed mid-file)
};

// "file:line", or "file (byte N)" when the line number is unknown: for error messages.
std::string document_location(const std::string& path, const Document& doc);

// The text under `key` of one jsonl line; malformed JSON or a missing/non-string key is a
// latte::Error naming `where`.
std::string jsonl_text(std::string_view line, const std::string& key, const std::string& where);

// Reads the documents of one file in order, starting at `start_offset` (a document boundary
// previously reported as Document::offset). Empty documents (empty file, blank line) are skipped.
// In jsonl mode the reader parses each line unless `raw_jsonl`, which hands out the JSON line so
// that parsing can happen on worker threads (then a document whose text is "" comes through).
class DocumentReader {
 public:
  DocumentReader(std::string path, DocMode mode, std::string jsonl_key = "text", uint64_t start_offset = 0,
                 bool raw_jsonl = false);
  ~DocumentReader();
  DocumentReader(const DocumentReader&) = delete;
  DocumentReader& operator=(const DocumentReader&) = delete;

  // Fills `doc` and returns true, or returns false at the end of the file.
  bool next(Document& doc);

 private:
  bool read_line(std::string& line);  // with its '\n' if present; false at EOF
  std::string path_;
  DocMode mode_;
  std::string jsonl_key_;
  std::FILE* file_ = nullptr;
  uint64_t position_ = 0;  // byte offset of the next unread byte
  uint64_t line_number_ = 0;  // of the last line read (jsonl messages); 0 when resumed mid-file
  bool resumed_mid_file_ = false;
  bool raw_jsonl_ = false;
  bool done_ = false;
  char* line_buffer_ = nullptr;
  size_t line_capacity_ = 0;
};

}  // namespace latte::data
