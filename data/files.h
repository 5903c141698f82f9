// File-system helpers shared by the shard writers, the tokenize job and the loader: glob/directory
// expansion with a deterministic order, atomic publication of a finished file, and the checksum the
// manifest records.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace latte::data {

// Expands each pattern with glob(3) (sorted); a pattern that matches nothing is a latte::Error
// naming it, because a silently empty corpus would train on nothing. Duplicates are dropped.
std::vector<std::string> expand_globs(const std::vector<std::string>& patterns, const std::string& what);

// Like expand_globs(), but a directory (given or matched) stands for every regular file under it,
// recursively, in sorted path order; hidden entries (".name") inside directories are skipped.
std::vector<std::string> expand_input_paths(const std::vector<std::string>& specs);

// Makes `temp_path` durable and visible as `final_path`: fsync the file, rename it over the final
// name (atomic on POSIX), fsync the directory. Readers see the old file or the whole new one.
void publish_atomically(const std::string& temp_path, const std::string& final_path);

// FNV-1a 64-bit hash of a file's bytes (cheap, no dependency; detects truncation and bit rot in
// shards, not tampering).
uint64_t fnv1a64_file(const std::string& path);
uint64_t fnv1a64(const void* data, size_t size, uint64_t hash = 0xcbf29ce484222325ull);
std::string hex64(uint64_t value);  // 16 lower-case hex digits

// Size in bytes of a regular file; a latte::Error naming the file if it cannot be stat'ed.
uint64_t file_size(const std::string& path);

}  // namespace latte::data
