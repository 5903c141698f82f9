// Command-line reading shared by the commands (apps/args.h).
#include "apps/cli.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "core/error.h"

namespace latte::apps {

ArgCursor::ArgCursor(int argc, char** argv, std::string usage) : argc_(argc), argv_(argv), usage_(std::move(usage)) {}

bool ArgCursor::next() {
  if (++i_ >= argc_) return false;
  arg_ = argv_[i_];
  return true;
}

std::string ArgCursor::value() {
  LATTE_REQUIRE(i_ + 1 < argc_, arg_, " needs a value", usage_.empty() ? "" : "\n", usage_);
  return argv_[++i_];
}

void ArgCursor::values(std::vector<std::string>& out) {
  const size_t before = out.size();
  while (i_ + 1 < argc_ && std::strncmp(argv_[i_ + 1], "--", 2) != 0) out.push_back(argv_[++i_]);
  LATTE_REQUIRE(out.size() > before, arg_, " needs at least one value");
}

int64_t parse_int(const std::string& option, const std::string& text) {
  char* end = nullptr;
  const long long v = std::strtoll(text.c_str(), &end, 10);
  LATTE_REQUIRE(end && *end == '\0' && !text.empty(), option, " expects an integer, got '", text, "'");
  return v;
}

double parse_real(const std::string& option, const std::string& text) {
  char* end = nullptr;
  const double v = std::strtod(text.c_str(), &end);
  LATTE_REQUIRE(end && *end == '\0' && !text.empty(), option, " expects a number, got '", text, "'");
  return v;
}

std::string human_bytes(double b) {
  char buf[64];
  if (b >= 1024.0 * 1024 * 1024) std::snprintf(buf, sizeof buf, "%.2f GiB", b / (1024.0 * 1024 * 1024));
  else if (b >= 1024.0 * 1024) std::snprintf(buf, sizeof buf, "%.2f MiB", b / (1024.0 * 1024));
  else if (b >= 1024.0) std::snprintf(buf, sizeof buf, "%.2f KiB", b / 1024.0);
  else std::snprintf(buf, sizeof buf, "%.0f B", b);
  return buf;
}

}  // namespace latte::apps
