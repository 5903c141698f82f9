// The checkpoint directory protocol (DESIGN.md "Formats"): <dir>/step_XXXXXXXX/ holds the files of one
// checkpoint plus checksums.json; COMPLETE is written last, then the `latest` pointer is replaced
// atomically (write temp, fsync, rename). A crash at any point leaves the previous checkpoint usable;
// a corrupt or partial checkpoint is skipped with a warning when resuming.
#pragma once
#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

namespace latte {

class CheckpointStore {
 public:
  explicit CheckpointStore(std::string dir, int keep_last = 3);

  const std::string& dir() const { return dir_; }
  std::string step_dir(int64_t step) const;  // <dir>/step_00000100

  // Creates a fresh staging directory for `step`; write_files(staging_dir) writes every file; then
  // checksums are computed, COMPLETE written, the directory renamed into place, `latest` updated
  // and checkpoints beyond keep_last removed. Only rank 0 should call finalize-type operations for
  // shared files; per-rank files are written by each rank into the staging dir before finalize.
  std::string begin(int64_t step) const;                    // returns the staging directory
  void commit(int64_t step, const std::string& staging) const;

  // Newest complete checkpoint whose checksums verify (skipping and warning about broken ones).
  std::optional<std::string> latest_valid() const;
  // Verifies one checkpoint directory; returns an empty string when fine, else what is wrong.
  static std::string verify(const std::string& step_dir);
  std::vector<std::string> list_complete() const;  // oldest first

 private:
  void prune() const;
  std::string dir_;
  int keep_last_;
};

// Writes `contents` to `path` atomically (temp file, fsync, rename; see data/files.h).
void write_file_atomic(const std::string& path, const std::string& contents);
std::string read_file(const std::string& path);  // whole file; latte::Error naming it when unreadable

}  // namespace latte
