// Tokenizer throughput on real English text, single thread (the tokenize job scales by workers).
// Input: a file given as argv[1], else the King James Bible printed by `bible` (Debian package
// bible-kjv), else /usr/share/common-licenses. Prints one table; speeds are also given relative to
// the pre-tokenizer alone and to the 5 MB/s/core target. MB/s is per core: bytes over the thread's
// CPU time (on a shared machine wall time also counts other processes; it is shown too).
//   bench_tokenizer [text-file] [--tokenizer-dir data/gpt2] [--repeats N]
#include <time.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <sstream>
#include <string>
#include <vector>

#include "data/bpe_tokenizer.h"
#include "data/byte_tokenizer.h"
#include "data/pretokenizer.h"

using namespace latte::data;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream buffer;
  buffer << in.rdbuf();
  return buffer.str();
}

std::string default_text(std::string& source) {
  if (std::FILE* pipe = ::popen("bible -f gen1:1-rev22:21 2>/dev/null", "r")) {
    std::string text;
    char chunk[1 << 16];
    size_t got;
    while ((got = std::fread(chunk, 1, sizeof chunk, pipe)) > 0) text.append(chunk, got);
    ::pclose(pipe);
    if (text.size() > 1000000) {
      source = "King James Bible (bible -f gen1:1-rev22:21)";
      return text;
    }
  }
  std::string text;
  for (const auto& entry : std::filesystem::directory_iterator("/usr/share/common-licenses"))
    if (entry.is_regular_file()) text += read_file(entry.path().string());
  source = "/usr/share/common-licenses/*";
  return text;
}

double thread_cpu_seconds() {
  timespec ts{};
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return ts.tv_sec + ts.tv_nsec * 1e-9;
}

struct Timing {
  double cpu = 0;   // seconds of this thread's CPU time
  double wall = 0;  // seconds of wall-clock time
};

Timing time_once(const std::function<void()>& fn) {
  const double cpu_start = thread_cpu_seconds();
  const auto wall_start = std::chrono::steady_clock::now();
  fn();
  return {thread_cpu_seconds() - cpu_start,
          std::chrono::duration<double>(std::chrono::steady_clock::now() - wall_start).count()};
}

// Median over `repeats` runs of fn (after one warm-up run), by CPU time.
Timing median_timing(int repeats, const std::function<void()>& fn) {
  fn();
  std::vector<Timing> times;
  for (int i = 0; i < repeats; ++i) times.push_back(time_once(fn));
  std::sort(times.begin(), times.end(), [](const Timing& a, const Timing& b) { return a.cpu < b.cpu; });
  return times[times.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::string path, tokenizer_dir = "data/gpt2";
  int repeats = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    if (arg == "--tokenizer-dir" && i + 1 < argc) tokenizer_dir = argv[++i];
    else if (arg == "--repeats" && i + 1 < argc) repeats = std::max(1, std::atoi(argv[++i]));
    else path = arg;
  }
  std::string source = path;
  const std::string text = path.empty() ? default_text(source) : read_file(path);
  const double megabytes = text.size() / 1e6;
  std::printf("input: %s, %.2f MB\n\n", source.c_str(), megabytes);
  std::printf("%-34s %10s %11s %12s %10s %11s\n", "stage", "MB/s/core", "MB/s wall", "tokens", "vs pretok",
              "vs 5 MB/s");

  size_t pieces = 0;
  const Timing pretok = median_timing(repeats, [&] {
    pieces = 0;
    gpt2_pretokenize(text, [&](std::string_view) { ++pieces; });
  });
  auto row = [&](const char* stage, Timing t, size_t tokens) {
    std::printf("%-34s %10.1f %11.1f %12zu %9.2fx %10.1fx\n", stage, megabytes / t.cpu, megabytes / t.wall, tokens,
                pretok.cpu / t.cpu, megabytes / t.cpu / 5.0);
  };
  row("gpt2 pre-tokenize only", pretok, pieces);

  ByteTokenizer bytes;
  std::vector<int32_t> ids;
  Timing timing = median_timing(repeats, [&] { ids = bytes.encode(text); });
  row("byte encode", timing, ids.size());

  if (!std::filesystem::exists(tokenizer_dir + "/encoder.json")) {
    std::printf("\n(no %s/encoder.json: run scripts/fetch_gpt2_tokenizer.sh for the GPT-2 rows)\n", tokenizer_dir.c_str());
    return 0;
  }
  const auto load_start = std::chrono::steady_clock::now();
  Gpt2Tokenizer gpt2(tokenizer_dir);
  const double load = std::chrono::duration<double>(std::chrono::steady_clock::now() - load_start).count();

  // Cold: a fresh tokenizer instance has an empty piece cache, so every distinct word runs BPE.
  {
    Gpt2Tokenizer cold(tokenizer_dir);
    timing = time_once([&] { ids = cold.encode(text); });
    row("gpt2 encode (cold cache, 1 pass)", timing, ids.size());
  }
  timing = median_timing(repeats, [&] { ids = gpt2.encode(text); });
  row("gpt2 encode (warm cache)", timing, ids.size());
  std::string decoded;
  timing = median_timing(repeats, [&] { decoded = gpt2.decode(ids); });
  row("gpt2 decode", timing, ids.size());
  std::printf("\ngpt2 files load: %.0f ms; bytes per token %.2f; round trip %s\n", load * 1e3,
              double(text.size()) / ids.size(), decoded == text ? "exact" : "MISMATCH");
  return decoded == text ? 0 : 1;
}
