// Token shards: the on-disk form of a tokenized corpus (DESIGN.md "Formats").
//   .bin  llm.c / nanoGPT FineWeb compatible: a header of 256 little-endian int32 ([0] magic
//         20240520, [1] version 1 = uint16 tokens or 2 = uint32 tokens, [2] token count), then the
//         tokens, little-endian. Read through mmap.
//   .h5   HDF5: 1-D chunked dataset /tokens (uint16 or uint32) with attributes vocab_size,
//         eot_token, tokenizer.
// Writers publish atomically (temp file, fsync, rename); readers validate header, size and dtype,
// and every problem is a latte::Error naming the file, what is wrong and what to do.
#pragma once
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

namespace latte::data {

enum class ShardFormat { Bin, H5 };
enum class TokenDtype { U16, U32 };

inline constexpr int32_t kBinMagic = 20240520;
inline constexpr int32_t kBinHeaderInts = 256;
inline constexpr int64_t kBinHeaderBytes = kBinHeaderInts * 4;

ShardFormat parse_shard_format(std::string_view name);     // "bin" | "h5", else latte::Error
ShardFormat shard_format_of_path(const std::string& path);  // by extension, else latte::Error
const char* shard_extension(ShardFormat format);            // ".bin" | ".h5"
const char* dtype_name(TokenDtype dtype);                   // "uint16" | "uint32"
size_t dtype_bytes(TokenDtype dtype);
// The narrowest dtype that holds every id of a vocabulary (GPT-2's 50257 fits uint16).
TokenDtype dtype_for_vocab(int64_t vocab_size);

// What a shard says about the tokenizer that produced it. .h5 stores it as attributes; .bin has no
// room for it (those fields read back as 0 / -1 / "").
struct ShardMetadata {
  int32_t vocab_size = 0;
  int32_t eot_token = -1;
  std::string tokenizer;
};

// Streams tokens into `<path>.tmp` and publishes it as `path` on finish(). A writer destroyed
// before finish() (an exception, a crash) leaves no file under `path`.
class ShardWriter {
 public:
  ShardWriter(std::string path, ShardFormat format, TokenDtype dtype, ShardMetadata metadata);
  ~ShardWriter();
  ShardWriter(const ShardWriter&) = delete;
  ShardWriter& operator=(const ShardWriter&) = delete;

  // Every token must fit the dtype (0 <= t < 2^16 for uint16), else latte::Error.
  void append(std::span<const int32_t> tokens);
  // Writes the final header / closes the HDF5 file, fsyncs and renames. Returns the token count.
  uint64_t finish();
  uint64_t token_count() const { return count_; }
  const std::string& path() const { return path_; }

  struct Backend;  // format-specific part (shard_bin.cpp, shard_h5.cpp)

 private:
  std::string path_;
  std::string temp_path_;
  TokenDtype dtype_;
  uint64_t count_ = 0;
  bool finished_ = false;
  std::unique_ptr<Backend> backend_;
  std::vector<unsigned char> scratch_;
};

void write_shard(const std::string& path, std::span<const int32_t> tokens, ShardFormat format, TokenDtype dtype,
                 const ShardMetadata& metadata = {});

// Read access to one validated shard. read() may be called from one thread at a time per reader.
class ShardReader {
 public:
  virtual ~ShardReader() = default;
  // Opens and validates `path` (format by extension); any defect is a latte::Error naming the file.
  static std::unique_ptr<ShardReader> open(const std::string& path);

  uint64_t size() const { return size_; }
  TokenDtype dtype() const { return dtype_; }
  const std::string& path() const { return path_; }
  const ShardMetadata& metadata() const { return metadata_; }
  // Copies tokens [begin, begin + count) widened to int32; a range past the end is a latte::Error.
  void read(uint64_t begin, uint64_t count, int32_t* out) const;

 protected:
  virtual void read_checked(uint64_t begin, uint64_t count, int32_t* out) const = 0;
  std::string path_;
  uint64_t size_ = 0;
  TokenDtype dtype_ = TokenDtype::U16;
  ShardMetadata metadata_;
};

std::unique_ptr<ShardReader> open_bin_shard(const std::string& path);
std::unique_ptr<ShardReader> open_h5_shard(const std::string& path);

// All tokens of a shard (tests, tools; the loader reads windows instead).
std::vector<int32_t> read_shard(const std::string& path);

}  // namespace latte::data
