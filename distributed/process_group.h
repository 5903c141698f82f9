// ProcessGroup: collectives over a fixed set of ranks, on latte Tensors, in place.
//
// Backends (chosen by new_group() from the device the group serves):
//   - NCCL (distributed/nccl_process_group.cpp) for CUDA tensors: collectives run on the group's own
//     high-priority communication stream, ordered after the work already queued on latte's compute
//     stream (event), and Work::wait() makes the compute stream wait for them; the host never blocks.
//     CPU tensors given to an NCCL group go through MPI on the same ranks.
//   - MPI (distributed/mpi_process_group.cpp) for CPU tensors: nonblocking MPI collectives.
//     bf16/f16 reductions are summed in an f32 copy; CUDA tensors are staged through host memory.
//   - SingleProcessGroup: one rank; every collective is a copy or nothing.
//
// Every rank of a group must call the same collectives in the same order (MPI and NCCL match them
// by order). Buffers: any dtype; strided tensors are staged through a contiguous copy. Reductions
// accept f32, f64, bf16, f16, i32, i64; Avg needs a floating dtype and is the Sum divided by size().
//
// Async: the *_async calls return a Work; the buffers must stay untouched until wait() returns
// (CPU) or until work queued after wait() on the compute stream (CUDA). The plain calls wait.
#pragma once
#include <memory>
#include <string>

#include "core/tensor.h"

namespace latte::dist {

class World;

enum class ReduceOp { Sum, Avg, Max, Min };
const char* reduce_op_name(ReduceOp op);

// A collective in flight.
class Work {
 public:
  virtual ~Work() = default;
  // Blocks until the result is usable: written into the tensor (CPU), or ordered before any work
  // queued afterwards on the current CUDA stream (NCCL). Idempotent.
  virtual void wait() = 0;
  // Progresses the operation (MPI advances nonblocking collectives only inside MPI calls); true when
  // wait() would not block.
  virtual bool test() = 0;
};

// A Work that is already complete (single-rank groups).
class CompletedWork : public Work {
 public:
  void wait() override {}
  bool test() override { return true; }
};

class ProcessGroup : public std::enable_shared_from_this<ProcessGroup> {
 public:
  virtual ~ProcessGroup() = default;
  virtual int rank() const = 0;
  virtual int size() const = 0;
  virtual std::string backend() const = 0;  // "nccl", "mpi", "single"
  const std::string& name() const { return name_; }

  // t = op over ranks of t.
  virtual std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) = 0;
  // in (size() * n elements, rank-major) -> out (n elements): out = op over ranks of in[rank*n, (rank+1)*n).
  virtual std::shared_ptr<Work> reduce_scatter_async(const Tensor& out, const Tensor& in, ReduceOp op) = 0;
  // in (n elements) -> out (size() * n elements): out[r*n, (r+1)*n) = in of rank r. `in` may be that
  // slice of `out` (in-place gather).
  virtual std::shared_ptr<Work> all_gather_async(const Tensor& out, const Tensor& in) = 0;
  // t = t of rank `root` (a rank of this group).
  virtual std::shared_ptr<Work> broadcast_async(const Tensor& t, int root) = 0;
  virtual void barrier() = 0;

  void all_reduce(const Tensor& t, ReduceOp op = ReduceOp::Sum) { all_reduce_async(t, op)->wait(); }
  void reduce_scatter(const Tensor& out, const Tensor& in, ReduceOp op = ReduceOp::Sum) {
    reduce_scatter_async(out, in, op)->wait();
  }
  void all_gather(const Tensor& out, const Tensor& in) { all_gather_async(out, in)->wait(); }
  void broadcast(const Tensor& t, int root = 0) { broadcast_async(t, root)->wait(); }
  // Host scalar conveniences (logging, loss averaging, grad norms): through a CPU f64 tensor.
  double all_reduce_scalar(double value, ReduceOp op = ReduceOp::Sum);

 protected:
  explicit ProcessGroup(std::string name) : name_(std::move(name)) {}

 private:
  std::string name_;
};

// One rank: all_reduce leaves t as is, reduce_scatter/all_gather copy, broadcast does nothing.
class SingleProcessGroup : public ProcessGroup {
 public:
  explicit SingleProcessGroup(std::string name = "single") : ProcessGroup(std::move(name)) {}
  int rank() const override { return 0; }
  int size() const override { return 1; }
  std::string backend() const override { return "single"; }
  std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override;
  std::shared_ptr<Work> reduce_scatter_async(const Tensor& out, const Tensor& in, ReduceOp op) override;
  std::shared_ptr<Work> all_gather_async(const Tensor& out, const Tensor& in) override;
  std::shared_ptr<Work> broadcast_async(const Tensor& t, int root) override;
  void barrier() override {}
};

// Collective over `world` (every rank calls it, in the same order as its other group creations):
// ranks passing the same `color` form one group, ranked by `key`. `device` picks the backend:
// NCCL for a CUDA device when latte was built with NCCL, MPI otherwise, SingleProcessGroup for a
// group of one. `name` appears in error messages ("tp", "dp", "world").
std::shared_ptr<ProcessGroup> new_group(const World& world, int color, int key, Device device, const std::string& name);
// The group of all ranks of `world` (world rank order).
std::shared_ptr<ProcessGroup> world_group(const World& world, Device device);

// Argument checks shared by the backends (throw latte::Error naming the group and the collective).
void check_reduce_dtype(const ProcessGroup& group, const char* collective, DType dtype, ReduceOp op);
void check_reduce_scatter_sizes(const ProcessGroup& group, const Tensor& out, const Tensor& in);
void check_all_gather_sizes(const ProcessGroup& group, const Tensor& out, const Tensor& in);

}  // namespace latte::dist
