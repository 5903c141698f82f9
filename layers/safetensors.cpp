// safetensors I/O and model state load/save (layers/safetensors.h).
#include "layers/safetensors.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>

#include "autograd/node.h"

namespace latte {

namespace {

constexpr uint64_t kMaxHeaderBytes = 100ull << 20;  // the reference implementation's limit

struct DTypeName {
  DType dtype;
  const char* name;
};
constexpr DTypeName kDTypeNames[] = {{DType::F32, "F32"}, {DType::F64, "F64"}, {DType::BF16, "BF16"}, {DType::F16, "F16"},
                                     {DType::I32, "I32"}, {DType::I64, "I64"}, {DType::U16, "U16"},  {DType::U8, "U8"}};

std::string directory_of(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  return slash == std::string::npos ? "." : (slash == 0 ? "/" : path.substr(0, slash));
}

void write_all(int fd, const void* data, size_t bytes, const std::string& path) {
  const char* p = static_cast<const char*>(data);
  while (bytes > 0) {
    const ssize_t n = ::write(fd, p, bytes);
    if (n < 0 && errno == EINTR) continue;
    LATTE_REQUIRE(n > 0, path, ": write failed: ", std::strerror(errno));
    p += n;
    bytes -= static_cast<size_t>(n);
  }
}

}  // namespace

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  for (const SafetensorsEntry& e : entries)
    if (e.name == name) return &e;
  return nullptr;
}

Tensor SafetensorsFile::get(const std::string& name) const {
  for (const auto& [n, t] : tensors)
    if (n == name) return t;
  LATTE_FAIL(path, ": no tensor named '", name, "' (", entries.size(), " tensors in the file)");
}

const char* safetensors_dtype_name(DType dtype) {
  for (const DTypeName& d : kDTypeNames)
    if (d.dtype == dtype) return d.name;
  LATTE_FAIL("dtype ", dtype_name(dtype), " has no safetensors name");
}

DType safetensors_dtype_from_name(const std::string& name, const std::string& context) {
  for (const DTypeName& d : kDTypeNames)
    if (name == d.name) return d.dtype;
  LATTE_FAIL(context, ": unsupported safetensors dtype '", name, "' (latte reads F32, F64, BF16, F16, I32, I64, U16, U8)");
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<Tensor> host;
  int64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    LATTE_REQUIRE(name != "__metadata__" && !header.contains(name), path, ": duplicate or reserved tensor name '", name, "'");
    Tensor t = tensor.detach().cpu().contiguous();
    const int64_t bytes = static_cast<int64_t>(t.nbytes());
    header[name] = {{"dtype", safetensors_dtype_name(t.dtype())}, {"shape", t.shape().vec()}, {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    host.push_back(t);
  }
  std::string json = header.dump();
  json.append((8 - json.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  const uint64_t header_len = json.size();
  unsigned char len_le[8];
  for (int i = 0; i < 8; ++i) len_le[i] = static_cast<unsigned char>(header_len >> (8 * i));

  const std::string tmp = path + ".tmp." + std::to_string(::getpid());
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  LATTE_REQUIRE(fd >= 0, path, ": cannot create ", tmp, ": ", std::strerror(errno));
  try {
    write_all(fd, len_le, 8, tmp);
    write_all(fd, json.data(), json.size(), tmp);
    for (const Tensor& t : host) write_all(fd, t.data_ptr(), t.nbytes(), tmp);
    LATTE_REQUIRE(::fsync(fd) == 0, tmp, ": fsync failed: ", std::strerror(errno));
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  ::close(fd);
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    const std::string why = std::strerror(errno);
    ::unlink(tmp.c_str());
    LATTE_FAIL(path, ": cannot rename the temporary file into place: ", why);
  }
  const int dir = ::open(directory_of(path).c_str(), O_RDONLY);
  if (dir >= 0) {
    ::fsync(dir);  // make the rename durable
    ::close(dir);
  }
}

namespace {

SafetensorsFile read_file(const std::string& path, bool header_only, Device device) {
  std::ifstream in(path, std::ios::binary);
  LATTE_REQUIRE(in.good(), path, ": cannot open the safetensors file");
  in.seekg(0, std::ios::end);
  const uint64_t file_size = static_cast<uint64_t>(in.tellg());
  in.seekg(0);
  LATTE_REQUIRE(file_size >= 8, path, ": not a safetensors file (", file_size, " bytes, shorter than the 8-byte header length)");
  unsigned char len_le[8];
  in.read(reinterpret_cast<char*>(len_le), 8);
  uint64_t header_len = 0;
  for (int i = 0; i < 8; ++i) header_len |= static_cast<uint64_t>(len_le[i]) << (8 * i);
  LATTE_REQUIRE(header_len <= kMaxHeaderBytes && header_len <= file_size - 8, path, ": corrupt safetensors header length ",
                header_len, " (file has ", file_size, " bytes)");
  std::string json(header_len, '\0');
  in.read(json.data(), static_cast<std::streamsize>(header_len));
  LATTE_REQUIRE(in.good(), path, ": truncated safetensors header");
  nlohmann::json header;
  try {
    header = nlohmann::json::parse(json);
  } catch (const nlohmann::json::exception& e) {
    LATTE_FAIL(path, ": the safetensors header is not valid JSON: ", e.what());
  }
  LATTE_REQUIRE(header.is_object(), path, ": the safetensors header must be a JSON object");
  const uint64_t data_start = 8 + header_len, data_size = file_size - data_start;

  SafetensorsFile file;
  file.path = path;
  for (auto it = header.begin(); it != header.end(); ++it) {
    const std::string& name = it.key();
    const nlohmann::json& v = it.value();
    if (name == "__metadata__") {
      LATTE_REQUIRE(v.is_object(), path, ": __metadata__ must be an object of strings");
      for (auto m = v.begin(); m != v.end(); ++m) {
        LATTE_REQUIRE(m.value().is_string(), path, ": __metadata__.", m.key(), " must be a string");
        file.metadata[m.key()] = m.value().get<std::string>();
      }
      continue;
    }
    const std::string where = path + ": tensor '" + name + "'";
    LATTE_REQUIRE(v.is_object() && v.contains("dtype") && v.contains("shape") && v.contains("data_offsets"), where,
                  " needs dtype, shape and data_offsets");
    SafetensorsEntry e;
    e.name = name;
    LATTE_REQUIRE(v["dtype"].is_string(), where, ": dtype must be a string");
    e.dtype = safetensors_dtype_from_name(v["dtype"].get<std::string>(), where);
    LATTE_REQUIRE(v["shape"].is_array() && v["shape"].size() <= static_cast<size_t>(kMaxDims), where,
                  ": shape must be a list of at most ", kMaxDims, " sizes");
    std::vector<int64_t> dims;
    for (const auto& d : v["shape"]) {
      LATTE_REQUIRE(d.is_number_integer() && d.get<int64_t>() >= 0, where, ": shape entries must be non-negative integers");
      dims.push_back(d.get<int64_t>());
    }
    e.shape = Shape(dims);
    const nlohmann::json& off = v["data_offsets"];
    LATTE_REQUIRE(off.is_array() && off.size() == 2 && off[0].is_number_unsigned() && off[1].is_number_unsigned(), where,
                  ": data_offsets must be [begin, end]");
    e.begin = off[0].get<int64_t>();
    e.end = off[1].get<int64_t>();
    LATTE_REQUIRE(e.begin <= e.end && static_cast<uint64_t>(e.end) <= data_size, where, ": data_offsets [", e.begin, ", ",
                  e.end, "] outside the ", data_size, "-byte data section (truncated file?)");
    const int64_t expected = e.shape.numel() * static_cast<int64_t>(dtype_size(e.dtype));
    LATTE_REQUIRE(e.end - e.begin == expected, where, ": ", e.end - e.begin, " bytes for shape ", e.shape.str(), " ",
                  v["dtype"].get<std::string>(), " (expected ", expected, ")");
    file.entries.push_back(e);
  }
  std::sort(file.entries.begin(), file.entries.end(),
            [](const SafetensorsEntry& a, const SafetensorsEntry& b) { return a.begin < b.begin; });
  for (size_t i = 1; i < file.entries.size(); ++i)
    LATTE_REQUIRE(file.entries[i].begin >= file.entries[i - 1].end, path, ": tensors '", file.entries[i - 1].name, "' and '",
                  file.entries[i].name, "' overlap");
  if (header_only) return file;
  for (const SafetensorsEntry& e : file.entries) {
    Tensor t = Tensor::empty(e.shape, e.dtype);
    in.seekg(static_cast<std::streamoff>(data_start + static_cast<uint64_t>(e.begin)));
    in.read(static_cast<char*>(t.data_ptr()), e.end - e.begin);
    LATTE_REQUIRE(in.good(), path, ": read failed for tensor '", e.name, "'");
    file.tensors.emplace_back(e.name, device.is_cpu() ? t : t.to(device));
  }
  return file;
}

}  // namespace

SafetensorsFile read_safetensors(const std::string& path, Device device) { return read_file(path, false, device); }
SafetensorsFile read_safetensors_header(const std::string& path) { return read_file(path, true, Device::cpu()); }

void save_state(const Module& module, const std::string& path, const std::map<std::string, std::string>& metadata) {
  std::map<std::string, std::string> meta = metadata;
  meta.emplace("format", "pt");  // what HF's safe_open expects from PyTorch-convention weights
  NamedTensors tensors;
  for (const NamedParameter& p : module.named_parameters()) tensors.emplace_back(p.name, p.tensor);
  write_safetensors(path, tensors, meta);
}

namespace {

struct TensorMeta {
  std::string name;
  Shape shape;
  DType dtype;
};

// Every missing, unexpected, wrongly shaped or wrongly typed tensor, in one error naming `source`.
void check_against_module(const std::vector<NamedParameter>& params, const std::vector<TensorMeta>& found,
                          const std::string& source) {
  std::map<std::string, const TensorMeta*> by_name;
  for (const TensorMeta& m : found) by_name[m.name] = &m;
  std::vector<std::string> problems;
  std::map<std::string, bool> used;
  for (const NamedParameter& p : params) {
    auto it = by_name.find(p.name);
    if (it == by_name.end()) {
      problems.push_back("missing " + p.name + " " + p.tensor.shape().str());
      continue;
    }
    const TensorMeta* e = it->second;
    used[p.name] = true;
    if (e->shape != p.tensor.shape())
      problems.push_back("wrong shape " + p.name + ": file " + e->shape.str() + ", model " + p.tensor.shape().str());
    if (e->dtype != p.tensor.dtype() && !(is_floating(e->dtype) && is_floating(p.tensor.dtype())))
      problems.push_back(str("wrong dtype ", p.name, ": file ", safetensors_dtype_name(e->dtype), ", model ",
                             dtype_name(p.tensor.dtype()), " (only float dtypes convert)"));
  }
  for (const TensorMeta& e : found)
    if (!used.count(e.name)) problems.push_back("unexpected " + e.name + " " + e.shape.str());
  if (!problems.empty()) {
    std::string msg = str(source, ": does not match the model (", problems.size(), " problem", problems.size() > 1 ? "s" : "",
                          "; is --config the config the weights were trained with?)");
    for (const std::string& p : problems) msg += "\n  " + p;
    throw Error(msg);
  }
}

void copy_into(const std::vector<NamedParameter>& params, const NamedTensors& tensors) {
  std::map<std::string, Tensor> by_name(tensors.begin(), tensors.end());
  autograd::NoGradGuard no_grad;
  for (const NamedParameter& p : params) {
    Tensor target = p.tensor;
    target.copy_(by_name.at(p.name));  // casts and moves devices
  }
}

}  // namespace

void load_state(const Module& module, const std::string& path) {
  SafetensorsFile file = read_safetensors_header(path);
  std::vector<NamedParameter> params = module.named_parameters();
  std::vector<TensorMeta> found;
  for (const SafetensorsEntry& e : file.entries) found.push_back({e.name, e.shape, e.dtype});
  check_against_module(params, found, path);
  copy_into(params, read_safetensors(path).tensors);
}

void load_state(const Module& module, const NamedTensors& tensors, const std::string& source) {
  std::vector<NamedParameter> params = module.named_parameters();
  std::vector<TensorMeta> found;
  for (const auto& [name, t] : tensors) found.push_back({name, t.shape(), t.dtype()});
  check_against_module(params, found, source);
  copy_into(params, tensors);
}

}  // namespace latte
