// Document splitting of input files (see documents.h).
#include "data/documents.h"

#include <cerrno>
#include <cstdlib>
#include <cstring>

#include <nlohmann/json.hpp>

#include "core/error.h"

namespace latte::data {

DocMode parse_doc_mode(std::string_view name) {
  if (name == "file") return DocMode::File;
  if (name == "jsonl") return DocMode::Jsonl;
  if (name == "blank-line") return DocMode::BlankLine;
  LATTE_FAIL("unknown document mode '", name, "': use 'file' (a file is a document), 'jsonl' (one JSON object ",
             "per line) or 'blank-line' (paragraphs separated by blank lines)");
}

const char* doc_mode_name(DocMode mode) {
  switch (mode) {
    case DocMode::File: return "file";
    case DocMode::Jsonl: return "jsonl";
    case DocMode::BlankLine: return "blank-line";
  }
  return "?";
}

std::string document_location(const std::string& path, const Document& doc) {
  return doc.line > 0 ? str(path, ":", doc.line) : str(path, " (byte ", doc.offset, ")");
}

std::string jsonl_text(std::string_view line, const std::string& key, const std::string& where) {
  nlohmann::json object;
  try {
    object = nlohmann::json::parse(line);
  } catch (const nlohmann::json::exception& e) {
    LATTE_FAIL(where, ": not valid JSON (", e.what(), "); --doc-mode jsonl expects one JSON object per line");
  }
  if (!object.is_object() || !object.contains(key) || !object[key].is_string())
    LATTE_FAIL(where, ": expected a JSON object with a string field '", key, "' (see --jsonl-key)");
  return object[key].get<std::string>();
}

DocumentReader::DocumentReader(std::string path, DocMode mode, std::string jsonl_key, uint64_t start_offset,
                               bool raw_jsonl)
    : path_(std::move(path)), mode_(mode), jsonl_key_(std::move(jsonl_key)), position_(start_offset),
      raw_jsonl_(raw_jsonl) {
  file_ = std::fopen(path_.c_str(), "rb");
  if (!file_) LATTE_FAIL(path_, ": cannot open input: ", std::strerror(errno));
  if (start_offset > 0 && fseeko(file_, static_cast<off_t>(start_offset), SEEK_SET) != 0)
    LATTE_FAIL(path_, ": cannot seek to byte ", start_offset, " to resume: ", std::strerror(errno));
  resumed_mid_file_ = start_offset > 0;
}

DocumentReader::~DocumentReader() {
  if (file_) std::fclose(file_);
  std::free(line_buffer_);
}

bool DocumentReader::read_line(std::string& line) {
  const ssize_t got = ::getline(&line_buffer_, &line_capacity_, file_);
  if (got < 0) {
    if (std::ferror(file_)) LATTE_FAIL(path_, ": read error: ", std::strerror(errno));
    return false;
  }
  line.assign(line_buffer_, static_cast<size_t>(got));
  position_ += static_cast<uint64_t>(got);
  ++line_number_;
  return true;
}

namespace {
bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\n\f\v") == std::string_view::npos;
}
}  // namespace

bool DocumentReader::next(Document& doc) {
  doc.text.clear();
  if (done_) return false;
  std::string line;
  switch (mode_) {
    case DocMode::File: {
      done_ = true;
      doc.offset = position_;
      doc.line = 0;
      char buffer[1 << 16];
      size_t got;
      while ((got = std::fread(buffer, 1, sizeof buffer, file_)) > 0) doc.text.append(buffer, got);
      if (std::ferror(file_)) LATTE_FAIL(path_, ": read error: ", std::strerror(errno));
      position_ += doc.text.size();
      doc.end = position_;
      return !doc.text.empty();
    }
    case DocMode::Jsonl: {
      while (true) {
        const uint64_t line_start = position_;
        if (!read_line(line)) {
          done_ = true;
          return false;
        }
        if (is_blank(line)) continue;
        doc.line = resumed_mid_file_ ? 0 : line_number_;
        doc.offset = line_start;
        doc.end = position_;
        if (raw_jsonl_) {
          doc.text = std::move(line);
          return true;
        }
        doc.text = jsonl_text(line, jsonl_key_, document_location(path_, doc));
        if (!doc.text.empty()) return true;
      }
    }
    case DocMode::BlankLine: {
      // Skip separator lines, then collect lines up to the next blank line (consumed with it).
      uint64_t line_start = position_;
      bool have_line;
      while ((have_line = read_line(line)) && is_blank(line)) line_start = position_;
      if (!have_line) {
        done_ = true;
        return false;
      }
      doc.offset = line_start;
      doc.line = resumed_mid_file_ ? 0 : line_number_;
      doc.text = line;
      while (read_line(line) && !is_blank(line)) doc.text += line;
      doc.end = position_;
      return true;
    }
  }
  return false;
}

}  // namespace latte::data
