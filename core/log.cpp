#include "core/log.h"

#include <cstdio>
#include <cstdlib>
#include <mutex>

namespace latte::log {

namespace {
Level g_level = [] {
  const char* env = std::getenv("LATTE_LOG");
  if (env && std::string(env) == "debug") return Level::Debug;
  return Level::Info;
}();
int g_rank = 0;
std::mutex g_mutex;
}  // namespace

void set_level(Level level) { g_level = level; }
void set_rank(int rank) { g_rank = rank; }

void write(Level level, const std::string& msg) {
  if (level < g_level) return;
  if (g_rank != 0 && level < Level::Warn) return;
  static const char* tags[] = {"debug", "info", "warn", "error"};
  std::lock_guard<std::mutex> lock(g_mutex);
  if (level == Level::Info)
    std::fprintf(stderr, "%s\n", msg.c_str());
  else
    std::fprintf(stderr, "[%s] %s\n", tags[static_cast<int>(level)], msg.c_str());
}

}  // namespace latte::log
