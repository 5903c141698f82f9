#include "train/yaml_reader.h"

#include "core/config_keys.h"
#include "core/text_match.h"

#include <algorithm>
#include <cstdint>

namespace latte {

namespace {
template <typename T> const char* type_name();
template <> const char* type_name<int64_t>() { return "an integer"; }
template <> const char* type_name<int>() { return "an integer"; }
template <> const char* type_name<uint64_t>() { return "a non-negative integer"; }
template <> const char* type_name<double>() { return "a number"; }
template <> const char* type_name<bool>() { return "true or false"; }
template <> const char* type_name<std::string>() { return "a string"; }
}  // namespace

YamlReader::YamlReader(const YAML::Node& node, std::string where, std::string file)
    : node_(node), where_(std::move(where)), file_(std::move(file)) {
  if (node_ && !node_.IsNull() && !node_.IsMap())
    LATTE_FAIL((file_.empty() ? "" : file_ + ": "), where_, " must be a mapping of keys to values");
}

void YamlReader::mark(const std::string& key) {
  read_.insert(key);
  note_config_key(path(key));
}

void YamlReader::fail(const std::string& key, const std::string& message) const {
  LATTE_FAIL((file_.empty() ? "" : file_ + ": "), path(key), " ", message);
}

bool YamlReader::has(const std::string& key) const { return node_ && node_.IsMap() && node_[key]; }

template <typename T>
T YamlReader::convert(const std::string& key, const YAML::Node& value) const {
  if (!value.IsScalar()) fail(key, str("must be ", type_name<T>(), ", got a ", value.IsMap() ? "mapping" : "list"));
  try {
    if constexpr (std::is_same_v<T, int64_t> || std::is_same_v<T, int> || std::is_same_v<T, uint64_t>) {
      // Accept 1e6-style integers and underscores (1_000_000) as researchers write them.
      std::string s = value.as<std::string>();
      s.erase(std::remove(s.begin(), s.end(), '_'), s.end());
      size_t used = 0;
      double d = std::stod(s, &used);
      if (used != s.size() || d != static_cast<double>(static_cast<int64_t>(d))) throw std::invalid_argument(s);
      if constexpr (std::is_same_v<T, uint64_t>)
        if (d < 0) throw std::invalid_argument(s);
      return static_cast<T>(d);
    } else if constexpr (std::is_same_v<T, double>) {
      std::string s = value.as<std::string>();
      size_t used = 0;
      double d = std::stod(s, &used);
      if (used != s.size()) throw std::invalid_argument(s);
      return d;
    } else {
      return value.as<T>();
    }
  } catch (const Error&) {
    throw;
  } catch (const std::exception&) {
    fail(key, str("must be ", type_name<T>(), ", got '", value.as<std::string>(), "'"));
  }
}

template <typename T>
T YamlReader::get(const std::string& key, const T& fallback) {
  mark(key);
  if (!has(key) || node_[key].IsNull()) return fallback;
  return convert<T>(key, node_[key]);
}

template <typename T>
T YamlReader::require(const std::string& key) {
  mark(key);
  if (!has(key) || node_[key].IsNull()) fail(key, "is required but missing");
  return convert<T>(key, node_[key]);
}

template int64_t YamlReader::get<int64_t>(const std::string&, const int64_t&);
template int YamlReader::get<int>(const std::string&, const int&);
template uint64_t YamlReader::get<uint64_t>(const std::string&, const uint64_t&);
template double YamlReader::get<double>(const std::string&, const double&);
template bool YamlReader::get<bool>(const std::string&, const bool&);
template std::string YamlReader::get<std::string>(const std::string&, const std::string&);
template int64_t YamlReader::require<int64_t>(const std::string&);
template int YamlReader::require<int>(const std::string&);
template double YamlReader::require<double>(const std::string&);
template std::string YamlReader::require<std::string>(const std::string&);

std::vector<std::string> YamlReader::get_strings(const std::string& key) {
  mark(key);
  std::vector<std::string> out;
  if (!has(key)) return out;
  const YAML::Node v = node_[key];
  if (v.IsScalar()) {
    out.push_back(v.as<std::string>());
  } else if (v.IsSequence()) {
    for (const auto& item : v) {
      if (!item.IsScalar()) fail(key, "must be a string or a list of strings");
      out.push_back(item.as<std::string>());
    }
  } else if (!v.IsNull()) {
    fail(key, "must be a string or a list of strings");
  }
  return out;
}

YamlReader YamlReader::child(const std::string& key) {
  mark(key);
  return YamlReader(has(key) ? node_[key] : YAML::Node(), path(key), file_);
}

YAML::Node YamlReader::raw(const std::string& key) {
  mark(key);
  return has(key) ? node_[key] : YAML::Node();
}

void YamlReader::finish() const {
  if (!node_ || !node_.IsMap()) return;
  std::vector<std::string> known(read_.begin(), read_.end());
  for (const auto& kv : node_) {
    std::string key = kv.first.as<std::string>();
    if (read_.count(key)) continue;
    std::string hint = closest_match(key, known);
    fail(key, "is not a known key" + (hint.empty() ? std::string(" (known: ") + [&] {
      std::string all;
      for (const auto& k : known) all += (all.empty() ? "" : ", ") + k;
      return all;
    }() + ")" : "; did you mean " + hint + "?"));
  }
}

}  // namespace latte
