#include "kernels/attention_backend.h"

#include <cstdlib>

#include "core/error.h"

namespace latte {

namespace {
AttentionBackend g_backend = AttentionBackend::Auto;
}

AttentionBackend parse_attention_backend(const std::string& name, const std::string& where) {
  if (name == "auto") return AttentionBackend::Auto;
  if (name == "latte" || name == "flash") return AttentionBackend::Latte;
  if (name == "cudnn") return AttentionBackend::Cudnn;
  if (name == "reference") return AttentionBackend::Reference;
  LATTE_FAIL(where, ": unknown attention backend '", name, "'; expected auto, latte, cudnn or reference");
}

AttentionBackend attention_backend() {
  static const char* env = std::getenv("LATTE_ATTENTION_BACKEND");
  if (env && *env) return parse_attention_backend(env, "LATTE_ATTENTION_BACKEND");
  return g_backend;
}

void set_attention_backend(AttentionBackend backend) { g_backend = backend; }

bool deterministic_attention() {
  static const bool on = [] {
    const char* env = std::getenv("LATTE_DETERMINISTIC");
    return env && std::string(env) == "1";
  }();
  return on;
}

}  // namespace latte
