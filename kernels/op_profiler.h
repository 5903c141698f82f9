// Per-op GPU and host time, for finding where a training step goes (LATTE_PROFILE_OPS=1 in the environment).
// Every kernel-contract op (kernels/op_decls.inc) runs through LATTE_DISPATCH; with profiling on, a CUDA op is
// bracketed by two events on the current stream (a CPU op by the wall clock) and its time is added to the op's
// total when op_profile_collect() is called (once per step by the trainer, after the step's host sync). Off,
// the cost is one branch per op. The report ranks ops by time per step and compares their sum with the step's
// wall time: the difference is time the GPU waited for the host (launch gaps, syncs). Each op also counts the
// host time inside its call, so a host-bound step shows as host time (ops + elsewhere) near the wall time.
#pragma once
#include <string>

namespace latte::ops {

bool op_profiling();  // LATTE_PROFILE_OPS=1 or =callers (read once)
// LATTE_PROFILE_OPS=callers: every op's time is also split by its caller (the autograd node whose backward ran
// it, or the gradient accumulation into a node's output), e.g. "axpy <- accumulate into AddBackward".
bool op_profiling_callers();

// Names the caller of the ops run in its scope (LATTE_PROFILE_OPS=callers; otherwise it does nothing). Scopes
// nest; the innermost names the caller. An empty name does nothing (callers pass "" when profiling is off).
class ProfileCaller {
 public:
  explicit ProfileCaller(const std::string& caller);
  ~ProfileCaller();
  ProfileCaller(const ProfileCaller&) = delete;
  ProfileCaller& operator=(const ProfileCaller&) = delete;

 private:
  bool active_ = false;
  std::string previous_;
};

// Brackets one op call.
class OpScope {
 public:
  OpScope(const char* name, bool cuda);
  ~OpScope();
  OpScope(const OpScope&) = delete;
  OpScope& operator=(const OpScope&) = delete;

 private:
  const char* name_;
  bool cuda_;
  int start_ = -1;     // event slot (CUDA)
  double t0_ = 0;      // seconds (CPU)
};

// Brackets a place where the host blocks on the device (the trainer's loss and gradient-norm reads): its time
// is reported as the host's wait, which is near zero when the step is bound by the host.
class WaitScope {
 public:
  WaitScope();
  ~WaitScope();
  WaitScope(const WaitScope&) = delete;
  WaitScope& operator=(const WaitScope&) = delete;

 private:
  double t0_ = 0;
};

// Waits for the recorded ops, adds their times into the totals and recycles the events. Called once per step:
// `count_step` false drops what was measured (warm-up steps); true counts one step, whose wall time is the time
// since the previous call.
void op_profile_collect(bool count_step);
// The ranked table (empty when profiling is off or nothing was measured). Resets the totals.
std::string op_profile_report();

// Wraps the op LATTE_DISPATCH picked so that the call is timed when profiling is on.
template <typename F>
struct ProfiledOp {
  const char* name;
  F* fn;
  bool cuda;
  template <typename... A>
  decltype(auto) operator()(A&&... args) const {
    if (!op_profiling()) return fn(static_cast<A&&>(args)...);
    OpScope scope(name, cuda);
    return fn(static_cast<A&&>(args)...);
  }
};

}  // namespace latte::ops
