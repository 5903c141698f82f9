#include "core/config_keys.h"

#include <mutex>

namespace latte {

namespace {
std::mutex g_mu;
std::set<std::string>& keys() {
  static std::set<std::string>* k = new std::set<std::string>();  // never destroyed: parsers may run at exit
  return *k;
}
}  // namespace

void note_config_key(const std::string& path) {
  std::lock_guard<std::mutex> lock(g_mu);
  keys().insert(path);
}

std::set<std::string> config_keys_noted() {
  std::lock_guard<std::mutex> lock(g_mu);
  return keys();
}

void forget_config_keys() {
  std::lock_guard<std::mutex> lock(g_mu);
  keys().clear();
}

}  // namespace latte
