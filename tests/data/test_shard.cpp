// Token shard formats: round trips of .bin and .h5 in both dtypes, atomic publication, and every
// corrupt-input path raising a latte::Error that names the file and the defect.
#include <gtest/gtest.h>
#include <hdf5.h>
#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <numeric>

#include "core/error.h"
#include "data/files.h"
#include "data/shard.h"

using namespace latte::data;
namespace fs = std::filesystem;

namespace {

class ShardTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("latte_shard_test_" + std::to_string(::getpid()) + "_" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  std::string path(const std::string& name) const { return (dir_ / name).string(); }
  fs::path dir_;
};

std::vector<int32_t> sample_tokens(size_t n, int32_t modulus) {
  std::vector<int32_t> tokens(n);
  for (size_t i = 0; i < n; ++i) tokens[i] = static_cast<int32_t>((i * 2654435761u + 17) % modulus);
  return tokens;
}

// Expects `fn` to throw a latte::Error whose message contains every needle.
template <typename Fn>
void expect_error(Fn&& fn, std::initializer_list<std::string> needles) {
  try {
    fn();
    ADD_FAILURE() << "expected a latte::Error";
  } catch (const latte::Error& e) {
    for (const auto& needle : needles)
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << "message: " << e.what() << "\nmissing: " << needle;
  }
}

std::vector<unsigned char> read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

void write_bytes(const std::string& path, const std::vector<unsigned char>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

void set_header_int(const std::string& path, int index, int32_t value) {
  auto bytes = read_bytes(path);
  std::memcpy(bytes.data() + 4 * index, &value, 4);
  write_bytes(path, bytes);
}

}  // namespace

TEST_F(ShardTest, BinRoundTripBothDtypes) {
  for (TokenDtype dtype : {TokenDtype::U16, TokenDtype::U32}) {
    const auto tokens = sample_tokens(10007, dtype == TokenDtype::U16 ? 65536 : 1 << 30);
    const std::string file = path(std::string("x_") + dtype_name(dtype) + ".bin");
    write_shard(file, tokens, ShardFormat::Bin, dtype);
    EXPECT_EQ(read_shard(file), tokens);
    auto reader = ShardReader::open(file);
    EXPECT_EQ(reader->size(), tokens.size());
    EXPECT_EQ(reader->dtype(), dtype);
    std::vector<int32_t> window(100);
    reader->read(5000, 100, window.data());
    EXPECT_TRUE(std::equal(window.begin(), window.end(), tokens.begin() + 5000));
    // The llm.c layout, byte for byte.
    const auto bytes = read_bytes(file);
    ASSERT_EQ(bytes.size(), 1024 + tokens.size() * dtype_bytes(dtype));
    int32_t header[3];
    std::memcpy(header, bytes.data(), sizeof header);
    EXPECT_EQ(header[0], 20240520);
    EXPECT_EQ(header[1], dtype == TokenDtype::U16 ? 1 : 2);
    EXPECT_EQ(header[2], 10007);
    uint32_t first = 0;
    std::memcpy(&first, bytes.data() + 1024, dtype_bytes(dtype));
    EXPECT_EQ(first, static_cast<uint32_t>(tokens[0]));
  }
}

TEST_F(ShardTest, H5RoundTripBothDtypesWithAttributes) {
  for (TokenDtype dtype : {TokenDtype::U16, TokenDtype::U32}) {
    const auto tokens = sample_tokens(40000, dtype == TokenDtype::U16 ? 50257 : 200000);
    const std::string file = path(std::string("x_") + dtype_name(dtype) + ".h5");
    ShardWriter writer(file, ShardFormat::H5, dtype, ShardMetadata{50257, 50256, "gpt2"});
    // Streamed in uneven pieces to exercise dataset extension across chunk boundaries.
    writer.append(std::span(tokens).subspan(0, 1));
    writer.append(std::span(tokens).subspan(1, 20000));
    writer.append(std::span(tokens).subspan(20001));
    EXPECT_EQ(writer.finish(), tokens.size());
    auto reader = ShardReader::open(file);
    EXPECT_EQ(reader->size(), tokens.size());
    EXPECT_EQ(reader->dtype(), dtype);
    EXPECT_EQ(reader->metadata().vocab_size, 50257);
    EXPECT_EQ(reader->metadata().eot_token, 50256);
    EXPECT_EQ(reader->metadata().tokenizer, "gpt2");
    EXPECT_EQ(read_shard(file), tokens);
    std::vector<int32_t> window(3000);
    reader->read(16000, 3000, window.data());  // crosses a chunk boundary (16384)
    EXPECT_TRUE(std::equal(window.begin(), window.end(), tokens.begin() + 16000));
  }
}

TEST_F(ShardTest, EmptyShardsAreValid) {
  write_shard(path("e.bin"), {}, ShardFormat::Bin, TokenDtype::U16);
  write_shard(path("e.h5"), {}, ShardFormat::H5, TokenDtype::U16);
  EXPECT_TRUE(read_shard(path("e.bin")).empty());
  EXPECT_TRUE(read_shard(path("e.h5")).empty());
}

TEST_F(ShardTest, WriterIsAtomic) {
  const std::string file = path("atomic.bin");
  {
    ShardWriter writer(file, ShardFormat::Bin, TokenDtype::U16, {});
    writer.append(sample_tokens(100, 1000));
    EXPECT_FALSE(fs::exists(file)) << "visible before finish()";
    EXPECT_TRUE(fs::exists(file + ".tmp"));
  }  // destroyed without finish(): an interrupted write
  EXPECT_FALSE(fs::exists(file));
  EXPECT_FALSE(fs::exists(file + ".tmp"));
  // A finished shard is replaced only by a finished one.
  write_shard(file, sample_tokens(10, 1000), ShardFormat::Bin, TokenDtype::U16);
  {
    ShardWriter writer(file, ShardFormat::Bin, TokenDtype::U16, {});
    writer.append(sample_tokens(5, 7));
  }
  EXPECT_EQ(read_shard(file), sample_tokens(10, 1000));
}

TEST_F(ShardTest, TokenMustFitDtype) {
  ShardWriter writer(path("narrow.bin"), ShardFormat::Bin, TokenDtype::U16, {});
  expect_error([&] { writer.append(std::vector<int32_t>{1, 65536}); }, {path("narrow.bin"), "65536", "uint16"});
  expect_error([&] { writer.append(std::vector<int32_t>{-1}); }, {"-1"});
}

TEST_F(ShardTest, DtypeForVocab) {
  EXPECT_EQ(dtype_for_vocab(257), TokenDtype::U16);
  EXPECT_EQ(dtype_for_vocab(50257), TokenDtype::U16);
  EXPECT_EQ(dtype_for_vocab(65536), TokenDtype::U16);
  EXPECT_EQ(dtype_for_vocab(65537), TokenDtype::U32);
}

TEST_F(ShardTest, BinBadMagic) {
  write_shard(path("m.bin"), sample_tokens(100, 1000), ShardFormat::Bin, TokenDtype::U16);
  set_header_int(path("m.bin"), 0, 12345);
  expect_error([&] { ShardReader::open(path("m.bin")); }, {path("m.bin"), "bad magic number 12345", "20240520"});
}

TEST_F(ShardTest, BinBadVersion) {
  write_shard(path("v.bin"), sample_tokens(100, 1000), ShardFormat::Bin, TokenDtype::U16);
  set_header_int(path("v.bin"), 1, 3);
  expect_error([&] { ShardReader::open(path("v.bin")); }, {path("v.bin"), "unsupported shard version 3"});
}

TEST_F(ShardTest, BinTruncated) {
  write_shard(path("t.bin"), sample_tokens(1000, 1000), ShardFormat::Bin, TokenDtype::U16);
  fs::resize_file(path("t.bin"), 1024 + 2 * 990);
  expect_error([&] { ShardReader::open(path("t.bin")); },
               {path("t.bin"), "header says 1000 tokens but the file holds 990", "truncated", "latte tokenize"});
  fs::resize_file(path("t.bin"), 100);
  expect_error([&] { ShardReader::open(path("t.bin")); }, {path("t.bin"), "shorter than the 1024-byte header"});
}

TEST_F(ShardTest, BinCountMismatch) {
  write_shard(path("c.bin"), sample_tokens(1000, 1000), ShardFormat::Bin, TokenDtype::U32);
  set_header_int(path("c.bin"), 2, 900);  // file holds more than the header says
  expect_error([&] { ShardReader::open(path("c.bin")); }, {path("c.bin"), "header says 900 tokens", "1000 tokens"});
  set_header_int(path("c.bin"), 2, -5);
  expect_error([&] { ShardReader::open(path("c.bin")); }, {path("c.bin"), "-5"});
  // uint32 data read as uint16 (version flipped): the sizes no longer add up.
  set_header_int(path("c.bin"), 2, 1000);
  set_header_int(path("c.bin"), 1, 1);
  expect_error([&] { ShardReader::open(path("c.bin")); }, {path("c.bin"), "header says 1000 tokens"});
}

TEST_F(ShardTest, MissingFileAndUnknownExtension) {
  expect_error([&] { ShardReader::open(path("absent.bin")); }, {path("absent.bin"), "cannot open"});
  expect_error([&] { ShardReader::open(path("absent.h5")); }, {path("absent.h5"), "no such"});
  expect_error([&] { ShardReader::open(path("tokens.txt")); }, {path("tokens.txt"), ".bin or .h5"});
}

TEST_F(ShardTest, ReadPastEnd) {
  write_shard(path("r.bin"), sample_tokens(10, 100), ShardFormat::Bin, TokenDtype::U16);
  auto reader = ShardReader::open(path("r.bin"));
  std::vector<int32_t> out(20);
  expect_error([&] { reader->read(5, 6, out.data()); }, {path("r.bin"), "past the end"});
}

TEST_F(ShardTest, H5NotHdf5) {
  write_bytes(path("junk.h5"), {'n', 'o', 't', ' ', 'h', 'd', 'f'});
  expect_error([&] { ShardReader::open(path("junk.h5")); }, {path("junk.h5"), "cannot open as HDF5"});
}

TEST_F(ShardTest, H5Truncated) {
  write_shard(path("t.h5"), sample_tokens(50000, 50257), ShardFormat::H5, TokenDtype::U16);
  fs::resize_file(path("t.h5"), fs::file_size(path("t.h5")) / 2);
  expect_error(
      [&] {
        auto reader = ShardReader::open(path("t.h5"));
        std::vector<int32_t> all(reader->size());
        reader->read(0, all.size(), all.data());
      },
      {path("t.h5")});
}

namespace {
// Writes an HDF5 file with a dataset `name` of the given type and shape (tokens 0..n-1).
void write_raw_h5(const std::string& path, const char* name, hid_t type, std::vector<hsize_t> dims) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  hid_t file = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
  hid_t space = H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr);
  hid_t dataset = H5Dcreate2(file, name, type, space, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
  hsize_t total = 1;
  for (hsize_t d : dims) total *= d;
  std::vector<double> values(total);
  std::iota(values.begin(), values.end(), 0.0);
  H5Dwrite(dataset, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
  H5Dclose(dataset);
  H5Sclose(space);
  H5Fclose(file);
}
}  // namespace

TEST_F(ShardTest, H5MissingTokensDataset) {
  write_raw_h5(path("nodata.h5"), "ids", H5T_STD_U16LE, {100});
  expect_error([&] { ShardReader::open(path("nodata.h5")); }, {path("nodata.h5"), "no /tokens dataset"});
}

TEST_F(ShardTest, H5WrongDtype) {
  write_raw_h5(path("f.h5"), "tokens", H5T_IEEE_F32LE, {100});
  expect_error([&] { ShardReader::open(path("f.h5")); }, {path("f.h5"), "dtype float32", "uint16 or uint32"});
  write_raw_h5(path("i.h5"), "tokens", H5T_STD_I32LE, {100});
  expect_error([&] { ShardReader::open(path("i.h5")); }, {path("i.h5"), "dtype int32"});
  write_raw_h5(path("u64.h5"), "tokens", H5T_STD_U64LE, {100});
  expect_error([&] { ShardReader::open(path("u64.h5")); }, {path("u64.h5"), "dtype uint64"});
}

TEST_F(ShardTest, H5WrongRank) {
  write_raw_h5(path("2d.h5"), "tokens", H5T_STD_U16LE, {10, 10});
  expect_error([&] { ShardReader::open(path("2d.h5")); }, {path("2d.h5"), "2 dimensions", "1-D"});
}

TEST_F(ShardTest, H5WithoutAttributesStillReads) {
  write_raw_h5(path("plain.h5"), "tokens", H5T_STD_U32LE, {100});
  auto reader = ShardReader::open(path("plain.h5"));
  EXPECT_EQ(reader->size(), 100u);
  EXPECT_EQ(reader->metadata().vocab_size, 0);
  std::vector<int32_t> tokens(100);
  reader->read(0, 100, tokens.data());
  EXPECT_EQ(tokens[99], 99);
}

TEST_F(ShardTest, ChecksumDetectsChange) {
  write_shard(path("k.bin"), sample_tokens(100, 1000), ShardFormat::Bin, TokenDtype::U16);
  const uint64_t before = fnv1a64_file(path("k.bin"));
  EXPECT_EQ(hex64(before).size(), 16u);
  auto bytes = read_bytes(path("k.bin"));
  ASSERT_GT(bytes.size(), 1100u);
  bytes[1100] ^= 1;
  write_bytes(path("k.bin"), bytes);
  EXPECT_NE(fnv1a64_file(path("k.bin")), before);
  EXPECT_EQ(fnv1a64("a", 1), 0xaf63dc4c8601ec8cull);  // published FNV-1a 64 test vector
}

TEST_F(ShardTest, GlobExpansion) {
  for (const char* name : {"c_train_000001.bin", "c_train_000000.bin", "c_val_000000.bin"})
    write_shard(path(name), sample_tokens(5, 10), ShardFormat::Bin, TokenDtype::U16);
  const auto train = expand_globs({path("c_train_*.bin")}, "token shards");
  ASSERT_EQ(train.size(), 2u);
  EXPECT_EQ(train[0], path("c_train_000000.bin"));  // sorted
  expect_error([&] { expand_globs({path("nothing_*.bin")}, "token shards"); }, {path("nothing_*.bin"), "matches no token shards"});
  expect_error([&] { expand_globs({}, "token shards"); }, {"no token shards given"});
}
