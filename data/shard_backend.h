// Internal to the shard code: the format-specific half of ShardWriter. shard.cpp validates and
// narrows tokens and handles publication; a backend only stores bytes in its format.
#pragma once
#include <memory>
#include <string>

#include "data/shard.h"

namespace latte::data {

struct ShardWriter::Backend {
  virtual ~Backend() = default;  // closes the temp file without finishing it
  // `tokens` already narrowed to the shard dtype, little-endian.
  virtual void write(const void* tokens, uint64_t count) = 0;
  // Completes the file (header / attributes), flushes and closes it. No fsync or rename.
  virtual void finish(uint64_t total_count) = 0;
};

std::unique_ptr<ShardWriter::Backend> make_bin_backend(const std::string& temp_path, TokenDtype dtype);
std::unique_ptr<ShardWriter::Backend> make_h5_backend(const std::string& temp_path, TokenDtype dtype,
                                                      const ShardMetadata& metadata);

}  // namespace latte::data
