#include "train/checkpoint_store.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "core/error.h"
#include "core/log.h"
#include "data/files.h"

namespace fs = std::filesystem;

namespace latte {

namespace {
constexpr const char* kComplete = "COMPLETE";
constexpr const char* kChecksums = "checksums.json";
constexpr const char* kLatest = "latest";

void fsync_dir(const std::string& dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

int64_t step_of(const std::string& name) {
  if (name.rfind("step_", 0) != 0 || name.size() != 13) return -1;
  for (size_t i = 5; i < name.size(); ++i)
    if (!std::isdigit(static_cast<unsigned char>(name[i]))) return -1;
  return std::stoll(name.substr(5));
}
}  // namespace

void write_file_atomic(const std::string& path, const std::string& contents) {
  const std::string temp = path + ".tmp";
  {
    std::ofstream out(temp, std::ios::binary | std::ios::trunc);
    LATTE_REQUIRE(out.good(), path, ": cannot open for writing (does the directory exist and is it writable?)");
    out << contents;
    out.flush();
    LATTE_REQUIRE(out.good(), path, ": write failed (disk full?)");
  }
  data::publish_atomically(temp, path);
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  LATTE_REQUIRE(in.good(), path, ": cannot open for reading");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

CheckpointStore::CheckpointStore(std::string dir, int keep_last) : dir_(std::move(dir)), keep_last_(keep_last) {}

std::string CheckpointStore::step_dir(int64_t step) const {
  char name[32];
  std::snprintf(name, sizeof(name), "step_%08lld", static_cast<long long>(step));
  return (fs::path(dir_) / name).string();
}

std::string CheckpointStore::begin(int64_t step) const {
  fs::create_directories(dir_);
  std::string staging = step_dir(step) + ".partial";
  fs::remove_all(staging);
  fs::create_directories(staging);
  return staging;
}

void CheckpointStore::commit(int64_t step, const std::string& staging) const {
  // Checksums of every file written, then COMPLETE, then the atomic rename into place.
  nlohmann::json sums = nlohmann::json::object();
  std::vector<std::string> names;
  for (const auto& entry : fs::directory_iterator(staging))
    if (entry.is_regular_file()) names.push_back(entry.path().filename().string());
  std::sort(names.begin(), names.end());
  for (const std::string& name : names) {
    const std::string path = (fs::path(staging) / name).string();
    sums[name] = {{"fnv1a64", data::hex64(data::fnv1a64_file(path))}, {"bytes", data::file_size(path)}};
  }
  write_file_atomic((fs::path(staging) / kChecksums).string(), sums.dump(2));
  write_file_atomic((fs::path(staging) / kComplete).string(), std::to_string(step) + "\n");
  const std::string final_dir = step_dir(step);
  if (fs::exists(final_dir)) fs::remove_all(final_dir);  // re-saving the same step replaces it
  fs::rename(staging, final_dir);
  fsync_dir(dir_);
  write_file_atomic((fs::path(dir_) / kLatest).string(), fs::path(final_dir).filename().string() + "\n");
  prune();
}

std::vector<std::string> CheckpointStore::list_complete() const {
  std::vector<std::pair<int64_t, std::string>> found;
  if (!fs::exists(dir_)) return {};
  for (const auto& entry : fs::directory_iterator(dir_)) {
    if (!entry.is_directory()) continue;
    int64_t step = step_of(entry.path().filename().string());
    if (step >= 0 && fs::exists(entry.path() / kComplete)) found.emplace_back(step, entry.path().string());
  }
  std::sort(found.begin(), found.end());
  std::vector<std::string> out;
  for (auto& f : found) out.push_back(f.second);
  return out;
}

std::string CheckpointStore::verify(const std::string& step_dir) {
  if (!fs::exists(fs::path(step_dir) / kComplete)) return "no COMPLETE marker (the save was interrupted)";
  nlohmann::json sums;
  try {
    sums = nlohmann::json::parse(read_file((fs::path(step_dir) / kChecksums).string()));
  } catch (const std::exception& e) {
    return std::string("unreadable ") + kChecksums + ": " + e.what();
  }
  for (const auto& [name, info] : sums.items()) {
    const std::string path = (fs::path(step_dir) / name).string();
    if (!fs::exists(path)) return name + " is missing";
    if (data::file_size(path) != info.at("bytes").get<uint64_t>())
      return name + " has " + std::to_string(data::file_size(path)) + " bytes, expected " +
             std::to_string(info.at("bytes").get<uint64_t>());
    if (data::hex64(data::fnv1a64_file(path)) != info.at("fnv1a64").get<std::string>()) return name + " fails its checksum";
  }
  return "";
}

std::optional<std::string> CheckpointStore::latest_valid() const {
  std::vector<std::string> all = list_complete();
  for (auto it = all.rbegin(); it != all.rend(); ++it) {
    std::string problem = verify(*it);
    if (problem.empty()) return *it;
    log::warn("checkpoint ", *it, " is unusable (", problem, "); trying the previous one");
  }
  return std::nullopt;
}

void CheckpointStore::prune() const {
  if (keep_last_ <= 0) return;
  std::vector<std::string> all = list_complete();
  for (size_t i = 0; i + static_cast<size_t>(keep_last_) < all.size(); ++i) fs::remove_all(all[i]);
}

}  // namespace latte
