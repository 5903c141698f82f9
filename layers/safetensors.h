// safetensors read/write (https://github.com/huggingface/safetensors): an 8-byte little-endian header
// length, a JSON header {name: {dtype, shape, data_offsets: [begin, end]}, "__metadata__": {str: str}}
// padded with spaces to 8 bytes, then the raw little-endian tensor bytes. Writes are atomic (temp
// file, fsync, rename, fsync of the directory) so a crash never leaves a half-written weights file.
// Loading a model checks every name, shape and dtype and reports every mismatch in one error.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "layers/module.h"

namespace latte {

struct SafetensorsEntry {
  std::string name;
  DType dtype;
  Shape shape;
  int64_t begin = 0, end = 0;  // byte offsets into the data section
};

using NamedTensors = std::vector<std::pair<std::string, Tensor>>;

struct SafetensorsFile {
  std::vector<SafetensorsEntry> entries;         // in data order
  std::map<std::string, std::string> metadata;  // __metadata__
  NamedTensors tensors;                          // in data order; empty when only the header was read
  const SafetensorsEntry* find(const std::string& name) const;
  Tensor get(const std::string& name) const;     // throws naming the file's tensors when absent
  std::string path;
};

// "F32" <-> DType::F32, "BF16", "F64", "F16", "I32", "I64", "U16", "U8". Unsupported names throw.
const char* safetensors_dtype_name(DType dtype);
DType safetensors_dtype_from_name(const std::string& name, const std::string& context);

// Writes tensors (any device; copied to the host) in the given order, atomically.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {});
// Reads the header (validated: offsets in range, non-overlapping, sizes matching dtype x shape) and
// every tensor onto `device`.
SafetensorsFile read_safetensors(const std::string& path, Device device = Device::cpu());
// Only the header (names, dtypes, shapes, offsets, metadata).
SafetensorsFile read_safetensors_header(const std::string& path);

// Saves a module's named parameters (the spec's names) with metadata.
void save_state(const Module& module, const std::string& path, const std::map<std::string, std::string>& metadata = {});
// Loads a file into a module's parameters. Names must match exactly; shapes must match; float dtypes
// are cast (e.g. F32 file into bf16 parameters). Throws one latte::Error naming the file and listing every
// missing, unexpected, wrongly shaped or wrongly typed tensor; parameters are untouched on error.
void load_state(const Module& module, const std::string& path);
// The same from tensors in memory (e.g. read_merged_tp_shards() of a TP checkpoint, or split_to_tp() of a
// full one); `source` names them in errors.
void load_state(const Module& module, const NamedTensors& tensors, const std::string& source);

}  // namespace latte
