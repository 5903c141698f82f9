// The .h5 shard format: HDF5 dataset /tokens (uint16/uint32, 1-D, chunked) with attributes
// vocab_size, eot_token and tokenizer. Every HDF5 call runs under one process-wide mutex (HDF5 may be
// built without thread safety, and the loader reads from a prefetch thread) with HDF5's own error
// printing muted, since each failure becomes a latte::Error that says what is wrong in our terms.
#include <hdf5.h>

#include <filesystem>
#include <mutex>

#include "core/error.h"
#include "data/shard.h"
#include "data/shard_backend.h"

namespace latte::data {

namespace {

// 16K tokens (32 KiB of uint16) per chunk: a window read touches one or two chunks, and the
// chunk index of a 100M-token shard stays small.
constexpr hsize_t kChunkTokens = 16384;

// Recursive so that a Handle can take it when closing, inside or outside an Hdf5Scope (members are
// destroyed after a throwing constructor's scope has ended).
std::recursive_mutex& hdf5_mutex() {
  static std::recursive_mutex mutex;
  return mutex;
}

// Holds the HDF5 lock and mutes HDF5's automatic error printing for one scope.
class Hdf5Scope {
 public:
  Hdf5Scope() : lock_(hdf5_mutex()) {
    H5Eget_auto2(H5E_DEFAULT, &old_func_, &old_data_);
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
  ~Hdf5Scope() { H5Eset_auto2(H5E_DEFAULT, old_func_, old_data_); }

 private:
  std::lock_guard<std::recursive_mutex> lock_;
  H5E_auto2_t old_func_ = nullptr;
  void* old_data_ = nullptr;
};

// Owns one HDF5 identifier and closes it with the matching H5?close.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle() = default;
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  Handle(Handle&& other) noexcept : id_(other.id_), closer_(other.closer_) { other.id_ = -1; }
  Handle& operator=(Handle&& other) noexcept {
    reset();
    id_ = other.id_;
    closer_ = other.closer_;
    other.id_ = -1;
    return *this;
  }
  ~Handle() { reset(); }
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }
  herr_t reset() {
    herr_t rc = 0;
    if (id_ >= 0 && closer_) {
      std::lock_guard<std::recursive_mutex> lock(hdf5_mutex());
      rc = closer_(id_);
    }
    id_ = -1;
    return rc;
  }

 private:
  hid_t id_ = -1;
  Closer closer_ = nullptr;
};

hid_t file_type_of(TokenDtype dtype) { return dtype == TokenDtype::U16 ? H5T_STD_U16LE : H5T_STD_U32LE; }
hid_t memory_type_of(TokenDtype dtype) { return dtype == TokenDtype::U16 ? H5T_NATIVE_UINT16 : H5T_NATIVE_UINT32; }

void write_int_attribute(hid_t object, const char* name, int32_t value, const std::string& path) {
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(object, name, H5T_STD_I32LE, space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid() || H5Awrite(attr.get(), H5T_NATIVE_INT32, &value) < 0)
    LATTE_FAIL(path, ": cannot write HDF5 attribute ", name);
}

void write_string_attribute(hid_t object, const char* name, const std::string& value, const std::string& path) {
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  H5Tset_size(type.get(), value.empty() ? 1 : value.size());
  H5Tset_strpad(type.get(), H5T_STR_NULLPAD);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  Handle attr(H5Acreate2(object, name, type.get(), space.get(), H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  if (!attr.valid() || H5Awrite(attr.get(), type.get(), padded.data()) < 0)
    LATTE_FAIL(path, ": cannot write HDF5 attribute ", name);
}

class H5Backend final : public ShardWriter::Backend {
 public:
  H5Backend(std::string path, TokenDtype dtype, const ShardMetadata& metadata) : path_(std::move(path)), dtype_(dtype) {
    Hdf5Scope scope;
    file_ = Handle(H5Fcreate(path_.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
    if (!file_.valid()) LATTE_FAIL(path_, ": cannot create HDF5 file (does the directory exist and is it writable?)");
    const hsize_t dims[1] = {0};
    const hsize_t max_dims[1] = {H5S_UNLIMITED};
    Handle space(H5Screate_simple(1, dims, max_dims), H5Sclose);
    Handle create_props(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
    const hsize_t chunk[1] = {kChunkTokens};
    H5Pset_chunk(create_props.get(), 1, chunk);
    dataset_ = Handle(H5Dcreate2(file_.get(), "tokens", file_type_of(dtype_), space.get(), H5P_DEFAULT,
                                 create_props.get(), H5P_DEFAULT),
                      H5Dclose);
    if (!dataset_.valid()) LATTE_FAIL(path_, ": cannot create the HDF5 dataset /tokens");
    write_int_attribute(dataset_.get(), "vocab_size", metadata.vocab_size, path_);
    write_int_attribute(dataset_.get(), "eot_token", metadata.eot_token, path_);
    write_string_attribute(dataset_.get(), "tokenizer", metadata.tokenizer, path_);
  }
  ~H5Backend() override {
    Hdf5Scope scope;
    dataset_.reset();
    file_.reset();
  }

  void write(const void* tokens, uint64_t count) override {
    if (count == 0) return;
    Hdf5Scope scope;
    const hsize_t offset[1] = {written_};
    const hsize_t extent[1] = {written_ + count};
    const hsize_t block[1] = {count};
    bool ok = H5Dset_extent(dataset_.get(), extent) >= 0;
    Handle file_space(H5Dget_space(dataset_.get()), H5Sclose);
    Handle memory_space(H5Screate_simple(1, block, nullptr), H5Sclose);
    ok = ok && file_space.valid() && memory_space.valid() &&
         H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, offset, nullptr, block, nullptr) >= 0 &&
         H5Dwrite(dataset_.get(), memory_type_of(dtype_), memory_space.get(), file_space.get(), H5P_DEFAULT, tokens) >= 0;
    if (!ok) LATTE_FAIL(path_, ": HDF5 write of ", count, " tokens failed (disk full?)");
    written_ += count;
  }

  void finish(uint64_t total_count) override {
    Hdf5Scope scope;
    LATTE_CHECK(total_count == written_);
    const bool ok = dataset_.reset() >= 0 && file_.reset() >= 0;
    if (!ok) LATTE_FAIL(path_, ": closing the HDF5 file failed (disk full?)");
  }

 private:
  std::string path_;
  TokenDtype dtype_;
  Handle file_, dataset_;
  uint64_t written_ = 0;
};

std::string describe_type(hid_t type) {
  const size_t bits = H5Tget_size(type) * 8;
  switch (H5Tget_class(type)) {
    case H5T_INTEGER: return str(H5Tget_sign(type) == H5T_SGN_NONE ? "uint" : "int", bits);
    case H5T_FLOAT: return str("float", bits);
    case H5T_STRING: return "string";
    default: return str("a non-numeric HDF5 type of ", bits, " bits");
  }
}

class H5ShardReader final : public ShardReader {
 public:
  explicit H5ShardReader(const std::string& path) {
    path_ = path;
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) LATTE_FAIL(path, ": no such token shard");
    Hdf5Scope scope;
    file_ = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
    if (!file_.valid())
      LATTE_FAIL(path, ": cannot open as HDF5 (not an HDF5 file, or truncated/corrupt; re-run latte tokenize)");
    if (H5Lexists(file_.get(), "tokens", H5P_DEFAULT) <= 0)
      LATTE_FAIL(path, ": has no /tokens dataset; token shards written by latte tokenize store tokens there");
    dataset_ = Handle(H5Dopen2(file_.get(), "tokens", H5P_DEFAULT), H5Dclose);
    if (!dataset_.valid()) LATTE_FAIL(path, ": /tokens is not a readable dataset (corrupt shard? re-run latte tokenize)");

    Handle type(H5Dget_type(dataset_.get()), H5Tclose);
    const bool unsigned_int = H5Tget_class(type.get()) == H5T_INTEGER && H5Tget_sign(type.get()) == H5T_SGN_NONE;
    const size_t width = H5Tget_size(type.get());
    if (!unsigned_int || (width != 2 && width != 4))
      LATTE_FAIL(path, ": dataset /tokens has dtype ", describe_type(type.get()), "; expected uint16 or uint32");
    dtype_ = width == 2 ? TokenDtype::U16 : TokenDtype::U32;

    Handle space(H5Dget_space(dataset_.get()), H5Sclose);
    const int rank = H5Sget_simple_extent_ndims(space.get());
    if (rank != 1) LATTE_FAIL(path, ": dataset /tokens has ", rank, " dimensions; expected a 1-D array of tokens");
    hsize_t dims[1] = {0};
    H5Sget_simple_extent_dims(space.get(), dims, nullptr);
    size_ = dims[0];

    metadata_.vocab_size = read_int_attribute("vocab_size", 0);
    metadata_.eot_token = read_int_attribute("eot_token", -1);
    metadata_.tokenizer = read_string_attribute("tokenizer");
  }
  ~H5ShardReader() override {
    Hdf5Scope scope;
    dataset_.reset();
    file_.reset();
  }

 protected:
  void read_checked(uint64_t begin, uint64_t count, int32_t* out) const override {
    Hdf5Scope scope;
    const hsize_t offset[1] = {begin};
    const hsize_t block[1] = {count};
    Handle file_space(H5Dget_space(dataset_.get()), H5Sclose);
    Handle memory_space(H5Screate_simple(1, block, nullptr), H5Sclose);
    const bool ok = file_space.valid() && memory_space.valid() &&
                    H5Sselect_hyperslab(file_space.get(), H5S_SELECT_SET, offset, nullptr, block, nullptr) >= 0 &&
                    H5Dread(dataset_.get(), H5T_NATIVE_INT32, memory_space.get(), file_space.get(), H5P_DEFAULT, out) >= 0;
    if (!ok)
      LATTE_FAIL(path_, ": reading tokens [", begin, ", ", begin + count,
                 ") failed; the file is corrupt or truncated (re-run latte tokenize)");
  }

 private:
  // Attributes are optional on read (shards from other tools may lack them).
  int32_t read_int_attribute(const char* name, int32_t fallback) const {
    if (H5Aexists(dataset_.get(), name) <= 0) return fallback;
    Handle attr(H5Aopen(dataset_.get(), name, H5P_DEFAULT), H5Aclose);
    int32_t value = fallback;
    if (!attr.valid() || H5Aread(attr.get(), H5T_NATIVE_INT32, &value) < 0)
      LATTE_FAIL(path_, ": attribute ", name, " of /tokens is not an integer");
    return value;
  }
  std::string read_string_attribute(const char* name) const {
    if (H5Aexists(dataset_.get(), name) <= 0) return "";
    Handle attr(H5Aopen(dataset_.get(), name, H5P_DEFAULT), H5Aclose);
    Handle type(H5Aget_type(attr.get()), H5Tclose);
    if (H5Tget_class(type.get()) != H5T_STRING) LATTE_FAIL(path_, ": attribute ", name, " of /tokens is not a string");
    if (H5Tis_variable_str(type.get()) > 0) {
      Handle memory_type(H5Tcopy(H5T_C_S1), H5Tclose);
      H5Tset_size(memory_type.get(), H5T_VARIABLE);
      char* text = nullptr;
      if (H5Aread(attr.get(), memory_type.get(), &text) < 0 || !text)
        LATTE_FAIL(path_, ": cannot read attribute ", name, " of /tokens");
      std::string value(text);
      H5free_memory(text);
      return value;
    }
    std::string value(H5Tget_size(type.get()), '\0');
    if (H5Aread(attr.get(), type.get(), value.data()) < 0) LATTE_FAIL(path_, ": cannot read attribute ", name, " of /tokens");
    value.resize(value.find('\0') == std::string::npos ? value.size() : value.find('\0'));
    return value;
  }

  Handle file_, dataset_;
};

}  // namespace

std::unique_ptr<ShardWriter::Backend> make_h5_backend(const std::string& temp_path, TokenDtype dtype,
                                                      const ShardMetadata& metadata) {
  return std::make_unique<H5Backend>(temp_path, dtype, metadata);
}

std::unique_ptr<ShardReader> open_h5_shard(const std::string& path) { return std::make_unique<H5ShardReader>(path); }

}  // namespace latte::data
