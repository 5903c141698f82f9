// Minimal leveled logging to stderr; rank-aware so that only rank 0 prints info under mpirun.
#pragma once
#include <string>
#include "core/error.h"

namespace latte::log {

enum class Level { Debug = 0, Info = 1, Warn = 2, Error = 3 };

void set_level(Level level);
void set_rank(int rank);  // messages from rank != 0 are dropped below Warn
void write(Level level, const std::string& msg);

template <typename... Args> void info(const Args&... a) { write(Level::Info, str(a...)); }
template <typename... Args> void warn(const Args&... a) { write(Level::Warn, str(a...)); }
template <typename... Args> void debug(const Args&... a) { write(Level::Debug, str(a...)); }
template <typename... Args> void error(const Args&... a) { write(Level::Error, str(a...)); }

}  // namespace latte::log
