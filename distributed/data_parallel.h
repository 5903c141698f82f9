// Data parallelism: averaging parameter gradients over the DP group, overlapped with the backward.
//
// GradSync follows PyTorch DDP's reducer. Parameters are packed, in reverse registration order (the
// order in which a backward finishes them), into buckets of about 25 MB. Each parameter's
// TensorImpl::grad_accumulated_hook counts the gradient contributions it receives; once every
// parameter of a bucket has received all of its contributions, the bucket's gradients are copied
// into its flat buffer and an asynchronous all-reduce (average) starts while the backward goes on.
// finish() waits for the buckets and copies the averages back into each parameter's .grad
// (with shard_gradients, ZeRO-1, each rank keeps only its shard of the averages instead).
//
// Contribution counts. A parameter used k times in a forward (tied embeddings: the lookup and the
// LM head) receives k contributions. The counts are learned during the first synchronised backward,
// whose buckets are all-reduced at finish() (no overlap on that step); later steps use them. If a
// parameter later receives more contributions than learned, its bucket may already have gone, so
// that is an error (use overlap = false for models whose parameter use changes between steps);
// fewer contributions (a parameter unused this step) are fine: its bucket goes at finish().
// Buckets are always launched in bucket order on every rank (MPI and NCCL match collectives by order).
//
// Gradient accumulation: call set_sync_enabled(false) before the backward of every micro-batch but
// the last, set_sync_enabled(true) before the last one, then finish():
//
//   for (int m = 0; m < micro_batches; ++m) {
//     sync.set_sync_enabled(m == micro_batches - 1);
//     (loss(m) * (1.0 / micro_batches)).backward();
//   }
//   sync.finish();       // .grad = average over DP ranks of the accumulated gradients
//   optimizer.step(lr);
//
// Memory: the buckets hold one flat copy of the gradients. zero_grad() avoids the second copy: it
// points each parameter's .grad at its slice of the bucket (zeroed), so the backward accumulates
// straight into the buckets and nothing is copied in or out (when the bucket dtype is the gradient
// dtype). model.zero_grad() instead drops the .grad tensors; both are correct.
#pragma once
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "distributed/process_group.h"

namespace latte::dist {

struct GradSyncOptions {
  size_t bucket_bytes = size_t{25} << 20;  // bucket capacity in bytes of the reduction dtype (DDP's 25 MB)
  bool overlap = true;                      // launch buckets from inside the backward (after the first step)
  bool reduce_in_fp32 = false;              // all-reduce bf16/f16 gradients in f32 buckets (2x traffic, exact sums)
  // ZeRO-1 (distributed/zero1.h): reduce-scatter each bucket instead of all-reducing it; this rank
  // keeps only its averaged shard (bucket(b).shard) and .grad is left as the local gradient.
  bool shard_gradients = false;
};

class GradSync {
 public:
  // A bucket's layout (read-only outside GradSync).
  struct Bucket {
    std::vector<size_t> params;    // indices into the parameter list, in bucket order
    std::vector<int64_t> offsets;  // element offset of each param in `flat`
    int64_t numel = 0;             // elements used by the params (flat may be padded beyond it)
    Tensor flat;                   // (padded numel) reduction dtype, on the parameters' device
    Tensor shard;                  // shard_gradients: (padded numel / group size), this rank's averaged slice
    int pending = 0;               // params still expecting contributions in this step
    std::shared_ptr<Work> work;    // in flight when defined
  };

  // `params`: the model's trainable leaves (all on one device), in registration order; `names`
  // (optional, same length) label them in error messages. Installs the hooks.
  GradSync(std::vector<Tensor> params, std::shared_ptr<ProcessGroup> group, GradSyncOptions options = {},
           std::vector<std::string> names = {});
  ~GradSync();  // removes the hooks (waits for buckets still in flight)
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // false: the coming backward passes only accumulate locally (non-final micro-batches).
  void set_sync_enabled(bool enabled);
  bool sync_enabled() const { return enabled_; }
  // After the last backward of an optimizer step: launches the buckets not launched yet, waits for
  // all, and leaves each parameter's .grad = the average over the group (a parameter without a
  // local gradient gets the average too).
  void finish();
  // Zeroes the buckets and makes each .grad a view of its bucket slice (see "Memory" above). Call
  // instead of model.zero_grad() at the start of an optimizer step.
  void zero_grad();

  // ---- introspection (tests, logs) ----
  size_t num_buckets() const { return buckets_.size(); }
  size_t bucket_of(size_t param) const { return bucket_of_[param]; }
  bool contributions_learned() const { return learned_; }
  int64_t expected_contributions(size_t param) const { return expected_[param]; }
  // Buckets launched so far in the current step (in bucket order).
  size_t buckets_launched() const { return next_to_launch_; }
  // How many buckets the last finish() found already launched from inside the backward.
  int buckets_launched_in_backward() const { return last_launched_in_backward_; }
  const ProcessGroup& group() const { return *group_; }
  const std::shared_ptr<ProcessGroup>& group_ptr() const { return group_; }
  const Bucket& bucket(size_t b) const { return buckets_[b]; }
  const std::vector<Tensor>& params() const { return params_; }
  const std::string& name_of(size_t param) const;  // "" when no names were given
  const GradSyncOptions& options() const { return options_; }

 private:
  void on_gradient(size_t param);
  void launch_ready_buckets(bool from_backward);
  void launch(Bucket& bucket);
  void complete(Bucket& bucket);
  void reset_step();
  Tensor slice_of(const Bucket& bucket, size_t position) const;  // the view of one param in bucket.flat
  std::string param_name(size_t param) const;

  std::vector<Tensor> params_;
  std::vector<std::string> names_;
  std::shared_ptr<ProcessGroup> group_;
  GradSyncOptions options_;
  std::vector<Bucket> buckets_;
  std::vector<size_t> bucket_of_;      // per param
  std::vector<size_t> position_in_bucket_;
  std::vector<int64_t> count_;         // contributions received in this step
  std::vector<int64_t> expected_;      // learned in the first synchronised step
  std::vector<std::function<void(TensorImpl&)>> previous_hooks_;
  size_t next_to_launch_ = 0;
  bool enabled_ = true;
  bool learned_ = false;
  int launched_in_backward_ = 0;
  int last_launched_in_backward_ = 0;
};

// Reduces the gradients of `params` over `group` (one coalesced collective per dtype, synchronous).
// For parameters replicated over tensor parallelism whose gradient is a partial sum on each TP rank
// (spec: "Replicated, gradient all-reduced (sum) over the TP group"); call it after GradSync::finish().
// A parameter without a gradient contributes zeros and receives the result.
void all_reduce_gradients(const std::vector<Tensor>& params, ProcessGroup& group, ReduceOp op = ReduceOp::Sum);

// The L2 norm of the whole model's gradient (for clipping), from synchronised gradients:
// `sharded`: this rank's tensor-parallel shards (each shard counted once); `replicated`: parameters
// whose full gradient every TP rank holds (counted once, on TP rank 0). The sum of squares is
// all-reduced over `tp_group`; DP ranks hold identical gradients after GradSync, so DP adds nothing.
// One host synchronisation. Parameters without a gradient count zero.
double global_grad_norm(const std::vector<Tensor>& sharded, const std::vector<Tensor>& replicated,
                        ProcessGroup& tp_group);

}  // namespace latte::dist
