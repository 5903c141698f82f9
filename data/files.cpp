// Globbing, atomic publication and checksums (see files.h).
#include "data/files.h"

#include <fcntl.h>
#include <glob.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <set>

#include "core/error.h"

namespace latte::data {

namespace fs = std::filesystem;

namespace {

std::vector<std::string> glob_one(const std::string& pattern) {
  glob_t result{};
  const int rc = ::glob(pattern.c_str(), GLOB_NOSORT | GLOB_BRACE | GLOB_TILDE, nullptr, &result);
  std::vector<std::string> paths;
  if (rc == 0)
    for (size_t i = 0; i < result.gl_pathc; ++i) paths.emplace_back(result.gl_pathv[i]);
  globfree(&result);
  if (rc != 0 && rc != GLOB_NOMATCH) LATTE_FAIL(pattern, ": glob failed (", rc == GLOB_NOSPACE ? "out of memory" : "read error", ")");
  std::sort(paths.begin(), paths.end());
  return paths;
}

void append_unique(std::vector<std::string>& out, std::set<std::string>& seen, const std::string& path) {
  if (seen.insert(path).second) out.push_back(path);
}

}  // namespace

std::vector<std::string> expand_globs(const std::vector<std::string>& patterns, const std::string& what) {
  LATTE_REQUIRE(!patterns.empty(), "no ", what, " given");
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& pattern : patterns) {
    const auto matches = glob_one(pattern);
    LATTE_REQUIRE(!matches.empty(), pattern, ": matches no ", what, " (check the path; the working directory is ",
                  fs::current_path().string(), ")");
    for (const auto& path : matches) append_unique(out, seen, path);
  }
  return out;
}

std::vector<std::string> expand_input_paths(const std::vector<std::string>& specs) {
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& spec : expand_globs(specs, "input files")) {
    std::error_code ec;
    if (!fs::is_directory(spec, ec)) {
      append_unique(out, seen, spec);
      continue;
    }
    std::vector<std::string> files;
    for (auto it = fs::recursive_directory_iterator(spec, fs::directory_options::skip_permission_denied, ec);
         it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (ec) LATTE_FAIL(spec, ": cannot list directory: ", ec.message());
      const std::string name = it->path().filename().string();
      if (name.starts_with(".")) {
        if (it->is_directory(ec)) it.disable_recursion_pending();
        continue;
      }
      if (it->is_regular_file(ec)) files.push_back(it->path().string());
    }
    LATTE_REQUIRE(!files.empty(), spec, ": directory holds no files");
    std::sort(files.begin(), files.end());
    for (const auto& file : files) append_unique(out, seen, file);
  }
  return out;
}

void publish_atomically(const std::string& temp_path, const std::string& final_path) {
  const int fd = ::open(temp_path.c_str(), O_RDONLY);
  if (fd < 0) LATTE_FAIL(temp_path, ": cannot open to fsync: ", std::strerror(errno));
  const int sync_rc = ::fsync(fd);
  ::close(fd);
  if (sync_rc != 0) LATTE_FAIL(temp_path, ": fsync failed: ", std::strerror(errno));
  if (std::rename(temp_path.c_str(), final_path.c_str()) != 0)
    LATTE_FAIL(final_path, ": cannot rename ", temp_path, " over it: ", std::strerror(errno));
  fs::path dir = fs::path(final_path).parent_path();
  if (dir.empty()) dir = ".";
  const int dir_fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (dir_fd >= 0) {  // best effort: some file systems refuse to fsync directories
    ::fsync(dir_fd);
    ::close(dir_fd);
  }
}

uint64_t fnv1a64(const void* data, size_t size, uint64_t hash) {
  const auto* bytes = static_cast<const unsigned char*>(data);
  for (size_t i = 0; i < size; ++i) {
    hash ^= bytes[i];
    hash *= 0x100000001b3ull;
  }
  return hash;
}

uint64_t fnv1a64_file(const std::string& path) {
  std::FILE* file = std::fopen(path.c_str(), "rb");
  if (!file) LATTE_FAIL(path, ": cannot open to checksum: ", std::strerror(errno));
  std::vector<unsigned char> buffer(1 << 20);
  uint64_t hash = 0xcbf29ce484222325ull;
  size_t got;
  while ((got = std::fread(buffer.data(), 1, buffer.size(), file)) > 0) hash = fnv1a64(buffer.data(), got, hash);
  const bool failed = std::ferror(file);
  std::fclose(file);
  LATTE_REQUIRE(!failed, path, ": read error while checksumming");
  return hash;
}

std::string hex64(uint64_t value) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(value));
  return text;
}

uint64_t file_size(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) LATTE_FAIL(path, ": cannot stat: ", std::strerror(errno));
  return static_cast<uint64_t>(st.st_size);
}

}  // namespace latte::data
