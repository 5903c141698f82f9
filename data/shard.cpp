// Format-independent shard code: names, dtype rules, the writer's validation/publication, and
// reader dispatch by extension.
#include "data/shard.h"

#include <bit>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "data/files.h"
#include "data/shard_backend.h"

namespace latte::data {

static_assert(std::endian::native == std::endian::little, "shards are little-endian; add byte swapping for this host");

ShardFormat parse_shard_format(std::string_view name) {
  if (name == "bin") return ShardFormat::Bin;
  if (name == "h5") return ShardFormat::H5;
  LATTE_FAIL("unknown shard format '", name, "': use 'bin' (llm.c compatible) or 'h5' (HDF5)");
}

ShardFormat shard_format_of_path(const std::string& path) {
  if (path.ends_with(".bin")) return ShardFormat::Bin;
  if (path.ends_with(".h5") || path.ends_with(".hdf5")) return ShardFormat::H5;
  LATTE_FAIL(path, ": unknown shard type; token shards end in .bin or .h5");
}

const char* shard_extension(ShardFormat format) { return format == ShardFormat::Bin ? ".bin" : ".h5"; }
const char* dtype_name(TokenDtype dtype) { return dtype == TokenDtype::U16 ? "uint16" : "uint32"; }
size_t dtype_bytes(TokenDtype dtype) { return dtype == TokenDtype::U16 ? 2 : 4; }
TokenDtype dtype_for_vocab(int64_t vocab_size) { return vocab_size <= 65536 ? TokenDtype::U16 : TokenDtype::U32; }

// ---- writer -------------------------------------------------------------------------------------

ShardWriter::ShardWriter(std::string path, ShardFormat format, TokenDtype dtype, ShardMetadata metadata)
    : path_(std::move(path)), temp_path_(path_ + ".tmp"), dtype_(dtype) {
  backend_ = format == ShardFormat::Bin ? make_bin_backend(temp_path_, dtype)
                                        : make_h5_backend(temp_path_, dtype, metadata);
}

ShardWriter::~ShardWriter() {
  if (finished_) return;
  backend_.reset();
  std::remove(temp_path_.c_str());
}

void ShardWriter::append(std::span<const int32_t> tokens) {
  LATTE_CHECK(!finished_, "append after finish");
  const uint64_t limit = dtype_ == TokenDtype::U16 ? 65536ull : 4294967296ull;
  const size_t width = dtype_bytes(dtype_);
  scratch_.resize(tokens.size() * width);
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t token = tokens[i];
    if (token < 0 || static_cast<uint64_t>(token) >= limit)
      LATTE_FAIL(path_, ": token ", token, " (token #", count_ + i, ") does not fit the shard dtype ", dtype_name(dtype_),
                 "; use uint32 shards for vocabularies above 65536");
    if (width == 2) {
      const auto narrow = static_cast<uint16_t>(token);
      std::memcpy(&scratch_[i * 2], &narrow, 2);
    } else {
      const auto wide = static_cast<uint32_t>(token);
      std::memcpy(&scratch_[i * 4], &wide, 4);
    }
  }
  backend_->write(scratch_.data(), tokens.size());
  count_ += tokens.size();
}

uint64_t ShardWriter::finish() {
  LATTE_CHECK(!finished_, "finish called twice");
  backend_->finish(count_);
  backend_.reset();
  publish_atomically(temp_path_, path_);
  finished_ = true;
  return count_;
}

void write_shard(const std::string& path, std::span<const int32_t> tokens, ShardFormat format, TokenDtype dtype,
                 const ShardMetadata& metadata) {
  ShardWriter writer(path, format, dtype, metadata);
  writer.append(tokens);
  writer.finish();
}

// ---- reader -------------------------------------------------------------------------------------

std::unique_ptr<ShardReader> ShardReader::open(const std::string& path) {
  return shard_format_of_path(path) == ShardFormat::Bin ? open_bin_shard(path) : open_h5_shard(path);
}

void ShardReader::read(uint64_t begin, uint64_t count, int32_t* out) const {
  LATTE_REQUIRE(begin <= size_ && count <= size_ - begin, path_, ": read of tokens [", begin, ", ", begin + count,
                ") is past the end of the shard (", size_, " tokens)");
  if (count > 0) read_checked(begin, count, out);
}

std::vector<int32_t> read_shard(const std::string& path) {
  auto reader = ShardReader::open(path);
  std::vector<int32_t> tokens(reader->size());
  reader->read(0, tokens.size(), tokens.data());
  return tokens;
}

}  // namespace latte::data
