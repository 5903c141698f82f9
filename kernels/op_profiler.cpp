// Per-op timing (see op_profiler.h).
#include "kernels/op_profiler.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#ifdef LATTE_WITH_CUDA
#include "core/cuda_context.h"
#endif

namespace latte::ops {

namespace {

struct Total {
  double ms = 0;       // device time (CUDA ops) or wall time (CPU ops)
  double host_ms = 0;  // time the host spent inside the op's call (launching, for a CUDA op)
  int64_t calls = 0;
};

struct Pending {
  std::string name;  // the op, or "op <- caller"
  int start, stop;  // event slots (CUDA), or -1
  double ms;        // measured on the host (CPU ops)
  double host_ms;   // host time inside the call (between the two events for a CUDA op)
};

struct State {
  std::mutex mu;
  std::map<std::string, Total> totals;
  std::vector<Pending> pending;
  int64_t steps = 0;
  double wall_s = 0, last_collect_s = 0;
  double wait_ms = 0, step_wait_ms = 0;  // host blocked on the device: counted steps, the step in progress
#ifdef LATTE_WITH_CUDA
  std::vector<cudaEvent_t> events;  // a pool; slots [0, used) are recorded since the last collect
  int used = 0;
#endif
};

thread_local std::string t_caller;  // ProfileCaller's innermost name ("" outside any)

State& state() {
  static State* s = new State();  // never destroyed: events may outlive the CUDA context at exit
  return *s;
}

double now_s() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

#ifdef LATTE_WITH_CUDA
int record_event(State& s) {
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.used == static_cast<int>(s.events.size())) {
    cudaEvent_t e;
    CUDA_CHECK(cudaEventCreate(&e));
    s.events.push_back(e);
  }
  const int i = s.used++;
  CUDA_CHECK(cudaEventRecord(s.events[static_cast<size_t>(i)], cuda::current_stream()));
  return i;
}
#endif

}  // namespace

bool op_profiling() {
  static const bool on = [] {
    const char* v = std::getenv("LATTE_PROFILE_OPS");
    return v && (std::string(v) == "1" || op_profiling_callers());
  }();
  return on;
}

bool op_profiling_callers() {
  static const bool on = [] {
    const char* v = std::getenv("LATTE_PROFILE_OPS");
    return v && std::string(v) == "callers";
  }();
  return on;
}

ProfileCaller::ProfileCaller(const std::string& caller) {
  if (caller.empty() || !op_profiling_callers()) return;
  active_ = true;
  previous_ = std::move(t_caller);
  t_caller = caller;
}

ProfileCaller::~ProfileCaller() {
  if (active_) t_caller = std::move(previous_);
}

OpScope::OpScope(const char* name, bool cuda) : name_(name), cuda_(cuda) {
#ifdef LATTE_WITH_CUDA
  if (cuda_) start_ = record_event(state());
#endif
  t0_ = now_s();  // after the event: the host time excludes the profiler's own event records
}

OpScope::~OpScope() {
  State& s = state();
  const double host_ms = (now_s() - t0_) * 1e3;
  const std::string key = t_caller.empty() ? std::string(name_) : std::string(name_) + " <- " + t_caller;
#ifdef LATTE_WITH_CUDA
  if (cuda_) {
    const int stop = record_event(s);
    std::lock_guard<std::mutex> lock(s.mu);
    s.pending.push_back({key, start_, stop, 0.0, host_ms});
    return;
  }
#endif
  std::lock_guard<std::mutex> lock(s.mu);
  s.pending.push_back({key, -1, -1, host_ms, host_ms});
}

WaitScope::WaitScope() {
  if (op_profiling()) t0_ = now_s();
}

WaitScope::~WaitScope() {
  if (!op_profiling()) return;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  s.step_wait_ms += (now_s() - t0_) * 1e3;
}

void op_profile_collect(bool count_step) {
  if (!op_profiling()) return;
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  const double t_sync = now_s();  // the first event wait below blocks until the step's work is done
  for (const Pending& p : s.pending) {
    double ms = p.ms;
#ifdef LATTE_WITH_CUDA
    if (p.start >= 0) {
      float f = 0;
      CUDA_CHECK(cudaEventSynchronize(s.events[static_cast<size_t>(p.stop)]));
      CUDA_CHECK(cudaEventElapsedTime(&f, s.events[static_cast<size_t>(p.start)], s.events[static_cast<size_t>(p.stop)]));
      ms = f;
    }
#endif
    Total& t = s.totals[p.name];
    t.ms += ms;
    t.host_ms += p.host_ms;
    ++t.calls;
  }
  s.pending.clear();
#ifdef LATTE_WITH_CUDA
  s.used = 0;
#endif
  const double now = now_s();
  s.step_wait_ms += (now - t_sync) * 1e3;
  if (count_step && s.last_collect_s > 0) {
    ++s.steps;
    s.wall_s += now - s.last_collect_s;
    s.wait_ms += s.step_wait_ms;
  } else {
    s.totals.clear();  // a warm-up step: drop what it measured
  }
  s.step_wait_ms = 0;
  s.last_collect_s = now;
}

std::string op_profile_report() {
  if (!op_profiling()) return "";
  State& s = state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.steps == 0 || s.totals.empty()) return "";
  std::vector<std::pair<std::string, Total>> rows(s.totals.begin(), s.totals.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.ms > b.second.ms; });
  double sum = 0, host_sum = 0, calls = 0;
  for (const auto& r : rows) sum += r.second.ms, host_sum += r.second.host_ms, calls += static_cast<double>(r.second.calls);
  const double steps = static_cast<double>(s.steps), wall_ms = s.wall_s * 1e3 / steps;
  std::string out = "op profile over " + std::to_string(s.steps) + " steps (device time per step, by op):\n";
  char line[512];
  std::snprintf(line, sizeof line, "  %8s %6s %8s %9s %8s  %s\n", "ms/step", "share", "calls", "host ms", "us/call",
                "op");
  out += line;
  for (const auto& [name, t] : rows) {
    std::snprintf(line, sizeof line, "  %8.3f %5.1f%% %8.1f %9.3f %8.1f  %s\n", t.ms / steps, 100 * t.ms / sum,
                  static_cast<double>(t.calls) / steps, t.host_ms / steps, 1e3 * t.host_ms / static_cast<double>(t.calls),
                  name.c_str());
    out += line;
  }
  std::snprintf(line, sizeof line,
                "  ops %.2f ms/step, step wall %.2f ms: the device is idle (waiting on the host) ~%.0f%% of the step\n",
                sum / steps, wall_ms, wall_ms > 0 ? std::max(0.0, 100 * (1 - sum / steps / wall_ms)) : 0.0);
  out += line;
  // Host side: the time inside op calls (launch work: argument checks, allocation, plan lookups, the launch
  // itself) and the rest of the step (autograd, layers, data, optimizer logic, syncs). When ops' host time plus
  // the framework's time reaches the step's wall time, the step is bound by the host.
  std::snprintf(line, sizeof line,
                "  host: %.2f ms/step inside op calls (%.1f us per call), %.2f ms/step waiting for the device, %.2f ms/step "
                "elsewhere (autograd, layers, data, optimizer)\n",
                host_sum / steps, calls > 0 ? 1e3 * host_sum / calls : 0.0, s.wait_ms / steps,
                wall_ms - host_sum / steps - s.wait_ms / steps);
  out += line;
  s.totals.clear();
  s.steps = 0;
  s.wall_s = 0;
  s.wait_ms = 0;
  return out;
}

}  // namespace latte::ops
