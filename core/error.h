// Errors that carry context. Two kinds:
//  - latte::Error: a user-facing problem (bad config key, corrupt shard, shape mismatch). The message
//    names the file/key/value and the fix; the CLI prints it and exits non-zero.
//  - LATTE_CHECK failures: broken invariants inside latte; they carry file:line so a bug report is useful.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>

namespace latte {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& msg) : std::runtime_error(msg) {}
};

namespace detail {
// Concatenates any streamable arguments: str("rope_dim must be even, got ", 33).
template <typename... Args>
std::string str(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}
[[noreturn]] void throw_check(const char* file, int line, const char* cond, const std::string& msg);
}  // namespace detail

using detail::str;

}  // namespace latte

// Throws latte::Error with a message built from the remaining arguments (user-facing error).
#define LATTE_FAIL(...) throw ::latte::Error(::latte::str(__VA_ARGS__))

// Internal invariant: on failure throws latte::Error("file:line: check `cond` failed: <msg>").
#define LATTE_CHECK(cond, ...)                                                          \
  do {                                                                                  \
    if (!(cond)) ::latte::detail::throw_check(__FILE__, __LINE__, #cond, ::latte::str("" __VA_OPT__(,) __VA_ARGS__)); \
  } while (0)

// User-facing precondition: on failure throws latte::Error(<msg>) without source location.
#define LATTE_REQUIRE(cond, ...)                       \
  do {                                                 \
    if (!(cond)) LATTE_FAIL(__VA_ARGS__);              \
  } while (0)
