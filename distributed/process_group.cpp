// The backend-independent parts of process groups: argument checks, the single-rank group and the
// factory that picks NCCL / MPI / single (distributed/process_group.h).
#include "distributed/process_group.h"

#include <cstdlib>
#include <string>

#include "autograd/node.h"
#include "distributed/backends.h"
#include "distributed/world.h"
#ifdef LATTE_WITH_MPI
#include "distributed/mpi_comm.h"
#endif

namespace latte::dist {

const char* reduce_op_name(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return "sum";
    case ReduceOp::Avg: return "avg";
    case ReduceOp::Max: return "max";
    case ReduceOp::Min: return "min";
  }
  return "?";
}

double ProcessGroup::all_reduce_scalar(double value, ReduceOp op) {
  Tensor t = Tensor::scalar(value, DType::F64, Device::cpu());
  all_reduce(t, op);
  return t.item();
}

// ---- argument checks ----------------------------------------------------------------------------------

void check_reduce_dtype(const ProcessGroup& group, const char* collective, DType dtype, ReduceOp op) {
  const bool reducible = dtype == DType::F32 || dtype == DType::F64 || dtype == DType::BF16 || dtype == DType::F16 ||
                         dtype == DType::I32 || dtype == DType::I64;
  LATTE_REQUIRE(reducible, collective, " on process group '", group.name(), "': cannot reduce a ", dtype_name(dtype),
                " tensor (reductions take f32, f64, bf16, f16, i32, i64)");
  LATTE_REQUIRE(op != ReduceOp::Avg || is_floating(dtype), collective, " on process group '", group.name(),
                "': avg needs a floating tensor, got ", dtype_name(dtype), " (use sum and divide yourself)");
}

void check_reduce_scatter_sizes(const ProcessGroup& group, const Tensor& out, const Tensor& in) {
  LATTE_REQUIRE(in.numel() == out.numel() * group.size(), "reduce_scatter on process group '", group.name(),
                "': input has ", in.numel(), " elements, expected size * output = ", group.size(), " * ",
                out.numel());
  LATTE_REQUIRE(in.dtype() == out.dtype() && in.device() == out.device(), "reduce_scatter on process group '",
                group.name(), "': input ", in.str(), " and output ", out.str(), " differ in dtype or device");
}

void check_all_gather_sizes(const ProcessGroup& group, const Tensor& out, const Tensor& in) {
  LATTE_REQUIRE(out.numel() == in.numel() * group.size(), "all_gather on process group '", group.name(),
                "': output has ", out.numel(), " elements, expected size * input = ", group.size(), " * ", in.numel());
  LATTE_REQUIRE(in.dtype() == out.dtype() && in.device() == out.device(), "all_gather on process group '",
                group.name(), "': input ", in.str(), " and output ", out.str(), " differ in dtype or device");
}

// ---- one rank -----------------------------------------------------------------------------------------

std::shared_ptr<Work> SingleProcessGroup::all_reduce_async(const Tensor& t, ReduceOp op) {
  check_reduce_dtype(*this, "all_reduce", t.dtype(), op);
  return std::make_shared<CompletedWork>();
}

std::shared_ptr<Work> SingleProcessGroup::reduce_scatter_async(const Tensor& out, const Tensor& in, ReduceOp op) {
  check_reduce_dtype(*this, "reduce_scatter", in.dtype(), op);
  check_reduce_scatter_sizes(*this, out, in);
  autograd::NoGradGuard no_grad;
  if (!out.same(in)) out.copy_(in.detach().reshape(out.shape()));
  return std::make_shared<CompletedWork>();
}

std::shared_ptr<Work> SingleProcessGroup::all_gather_async(const Tensor& out, const Tensor& in) {
  check_all_gather_sizes(*this, out, in);
  autograd::NoGradGuard no_grad;
  if (!out.same(in)) out.copy_(in.detach().reshape(out.shape()));
  return std::make_shared<CompletedWork>();
}

std::shared_ptr<Work> SingleProcessGroup::broadcast_async(const Tensor& t, int root) {
  LATTE_REQUIRE(root == 0, "broadcast on process group '", name(), "': root ", root, " is not a rank of a 1-rank group");
  (void)t;
  return std::make_shared<CompletedWork>();
}

// ---- factory ------------------------------------------------------------------------------------------

std::shared_ptr<ProcessGroup> new_group(const World& world, int color, int key, Device device, const std::string& name) {
  LATTE_CHECK(color >= 0, "process group colors are non-negative");
#ifdef LATTE_WITH_MPI
  if (world.comm()) {
    std::shared_ptr<MpiComm> comm = mpi_comm_split(*world.comm(), color, key);
#ifdef LATTE_HAS_NCCL_GROUP
    // A one-rank group needs no communication; LATTE_NCCL_SINGLE_RANK=1 still gives it an NCCL communicator,
    // so that the NCCL path (communicator set-up, stream ordering) can be exercised on a one-GPU machine.
    const char* force = std::getenv("LATTE_NCCL_SINGLE_RANK");
    const bool nccl_for_one = force && std::string(force) == "1";
    if (comm->size == 1 && !(device.is_cuda() && nccl_for_one)) return std::make_shared<SingleProcessGroup>(name);
    if (device.is_cuda()) return make_nccl_process_group(std::move(comm), device.index, name);
#else
    if (comm->size == 1) return std::make_shared<SingleProcessGroup>(name);
#endif
    return make_mpi_process_group(std::move(comm), name);
  }
#endif
  (void)world, (void)key, (void)device;
  return std::make_shared<SingleProcessGroup>(name);
}

std::shared_ptr<ProcessGroup> world_group(const World& world, Device device) {
  return new_group(world, 0, world.rank(), device, "world");
}

}  // namespace latte::dist
