// The .bin shard format (llm.c compatible): writer backend and mmap reader with full validation.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "core/error.h"
#include "data/shard.h"
#include "data/shard_backend.h"

namespace latte::data {

namespace {

int32_t bin_version(TokenDtype dtype) { return dtype == TokenDtype::U16 ? 1 : 2; }

class BinBackend final : public ShardWriter::Backend {
 public:
  BinBackend(std::string path, TokenDtype dtype) : path_(std::move(path)), dtype_(dtype) {
    file_ = std::fopen(path_.c_str(), "wb");
    if (!file_) LATTE_FAIL(path_, ": cannot create: ", std::strerror(errno));
    write_header(0);  // placeholder; the count is known at finish()
  }
  ~BinBackend() override {
    if (file_) std::fclose(file_);
  }
  void write(const void* tokens, uint64_t count) override {
    const size_t bytes = count * dtype_bytes(dtype_);
    if (bytes && std::fwrite(tokens, 1, bytes, file_) != bytes) LATTE_FAIL(path_, ": write failed: ", std::strerror(errno));
  }
  void finish(uint64_t total_count) override {
    LATTE_REQUIRE(total_count <= 0x7fffffffull, path_, ": ", total_count,
                  " tokens do not fit the int32 count of a .bin header; use a smaller --shard-tokens");
    if (std::fseek(file_, 0, SEEK_SET) != 0) LATTE_FAIL(path_, ": seek failed: ", std::strerror(errno));
    write_header(static_cast<int32_t>(total_count));
    const bool ok = std::fflush(file_) == 0;
    const bool closed = std::fclose(file_) == 0;
    file_ = nullptr;
    LATTE_REQUIRE(ok && closed, path_, ": flush failed: ", std::strerror(errno));
  }

 private:
  void write_header(int32_t count) {
    std::array<int32_t, kBinHeaderInts> header{};
    header[0] = kBinMagic;
    header[1] = bin_version(dtype_);
    header[2] = count;
    if (std::fwrite(header.data(), 4, header.size(), file_) != header.size())
      LATTE_FAIL(path_, ": write failed: ", std::strerror(errno));
  }
  std::string path_;
  TokenDtype dtype_;
  std::FILE* file_ = nullptr;
};

class BinShardReader final : public ShardReader {
 public:
  explicit BinShardReader(const std::string& path) {
    path_ = path;
    const int fd = ::open(path.c_str(), O_RDONLY);
    if (fd < 0) LATTE_FAIL(path, ": cannot open token shard: ", std::strerror(errno));
    struct stat st{};
    if (::fstat(fd, &st) != 0) {
      ::close(fd);
      LATTE_FAIL(path, ": cannot stat: ", std::strerror(errno));
    }
    const size_t file_bytes = static_cast<size_t>(st.st_size);
    if (file_bytes < static_cast<size_t>(kBinHeaderBytes)) {
      ::close(fd);
      LATTE_FAIL(path, ": file is ", file_bytes, " bytes, shorter than the ", kBinHeaderBytes,
                 "-byte header of a .bin token shard (truncated? re-run latte tokenize)");
    }
    void* mapped = ::mmap(nullptr, file_bytes, PROT_READ, MAP_SHARED, fd, 0);
    ::close(fd);  // the mapping keeps the file alive
    if (mapped == MAP_FAILED) LATTE_FAIL(path, ": mmap failed: ", std::strerror(errno));
    mapping_.base = static_cast<const unsigned char*>(mapped);
    mapping_.bytes = file_bytes;
    validate_header();
  }

 protected:
  void read_checked(uint64_t begin, uint64_t count, int32_t* out) const override {
    const unsigned char* tokens = mapping_.base + kBinHeaderBytes;
    if (dtype_ == TokenDtype::U16) {
      for (uint64_t i = 0; i < count; ++i) {
        uint16_t token;
        std::memcpy(&token, tokens + (begin + i) * 2, 2);
        out[i] = token;
      }
    } else {
      for (uint64_t i = 0; i < count; ++i) {
        uint32_t token;
        std::memcpy(&token, tokens + (begin + i) * 4, 4);
        out[i] = static_cast<int32_t>(token);
      }
    }
  }

 private:
  void validate_header() {
    int32_t header[3];
    std::memcpy(header, mapping_.base, sizeof header);
    if (header[0] != kBinMagic)
      LATTE_FAIL(path_, ": bad magic number ", header[0], " (expected ", kBinMagic,
                 "); not a latte/llm.c token shard, or its header is corrupt (re-run latte tokenize)");
    if (header[1] != 1 && header[1] != 2)
      LATTE_FAIL(path_, ": unsupported shard version ", header[1],
                 " (expected 1 = uint16 tokens or 2 = uint32 tokens); the header is corrupt or from a newer tool");
    dtype_ = header[1] == 1 ? TokenDtype::U16 : TokenDtype::U32;
    if (header[2] < 0) LATTE_FAIL(path_, ": header says ", header[2], " tokens; the header is corrupt (re-run latte tokenize)");
    size_ = static_cast<uint64_t>(header[2]);
    const uint64_t width = dtype_bytes(dtype_);
    const uint64_t payload = mapping_.bytes - kBinHeaderBytes;
    const uint64_t held = payload / width;
    if (payload < size_ * width)
      LATTE_FAIL(path_, ": header says ", size_, " tokens but the file holds ", held,
                 " (truncated? re-run latte tokenize)");
    if (payload != size_ * width)
      LATTE_FAIL(path_, ": header says ", size_, " tokens but the file holds ", payload, " bytes of ", dtype_name(dtype_),
                 " tokens (", held, " tokens", payload % width ? " and a partial one" : "",
                 "); the shard is corrupt (re-run latte tokenize)");
  }
  // Unmaps in its destructor, so a constructor that throws after mmap does not leak the mapping.
  struct Mapping {
    const unsigned char* base = nullptr;
    size_t bytes = 0;
    ~Mapping() {
      if (base) ::munmap(const_cast<unsigned char*>(base), bytes);
    }
  } mapping_;
};

}  // namespace

std::unique_ptr<ShardWriter::Backend> make_bin_backend(const std::string& temp_path, TokenDtype dtype) {
  return std::make_unique<BinBackend>(temp_path, dtype);
}

std::unique_ptr<ShardReader> open_bin_shard(const std::string& path) { return std::make_unique<BinShardReader>(path); }

}  // namespace latte::data
