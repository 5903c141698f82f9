// Strict, typed reading of one YAML mapping (a config section): every key read is remembered, and
// finish() rejects the keys nobody read ("train.stpes: unknown key; did you mean steps?"). Type errors
// name the full key path, the value and the expected type.
#pragma once
#include <yaml-cpp/yaml.h>

#include <set>
#include <string>
#include <vector>

#include "core/error.h"

namespace latte {

class YamlReader {
 public:
  // `where` is the dotted path of this mapping ("train", "model.attention"); `file` names the source.
  YamlReader(const YAML::Node& node, std::string where, std::string file = "");

  bool has(const std::string& key) const;
  template <typename T> T get(const std::string& key, const T& fallback);  // optional key
  template <typename T> T require(const std::string& key);               // missing -> error
  std::vector<std::string> get_strings(const std::string& key);          // a string or a list of strings
  YamlReader child(const std::string& key);                              // nested mapping (empty if absent)
  YAML::Node raw(const std::string& key);                                // marks the key as read
  std::string path(const std::string& key) const { return where_.empty() ? key : where_ + "." + key; }
  // Throws for every key present in the mapping but never read.
  void finish() const;
  [[noreturn]] void fail(const std::string& key, const std::string& message) const;

 private:
  template <typename T> T convert(const std::string& key, const YAML::Node& value) const;
  void mark(const std::string& key);  // read (finish() accepts it) and noted (core/config_keys.h)
  YAML::Node node_;
  std::string where_, file_;
  std::set<std::string> read_;
};


}  // namespace latte
