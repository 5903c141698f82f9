// Helpers shared by the test suites (include as "tests/test_util.h").
#pragma once
#include <unistd.h>

#include <filesystem>
#include <functional>
#include <string>

#include "core/error.h"

namespace latte::test {

// The message of the latte::Error that f throws, or "(no error)" (so that a check on the text fails).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "(no error)";
}

// <tmp>/<prefix><pid>, emptied and created on the first call; a test suite keeps its files there.
inline std::string per_process_temp_dir(const std::string& prefix) {
  namespace fs = std::filesystem;
  fs::path p = fs::temp_directory_path() / (prefix + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

}  // namespace latte::test
