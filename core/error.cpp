#include "core/error.h"

namespace latte::detail {

void throw_check(const char* file, int line, const char* cond, const std::string& msg) {
  std::string text = str(file, ":", line, ": check `", cond, "` failed");
  if (!msg.empty()) text += ": " + msg;
  throw Error(text);
}

}  // namespace latte::detail
