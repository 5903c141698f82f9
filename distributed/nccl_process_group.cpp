// NCCL backend of ProcessGroup for CUDA tensors (compiled only with NCCL, CUDA and MPI).
//
// Streams. Each group owns a non-blocking, highest-priority communication stream. A collective is
// ordered after everything already queued on latte's compute stream (an event recorded there and
// waited on by the communication stream), runs on the communication stream, and its Work records a
// second event; Work::wait() makes the compute stream wait for that event, so the host never blocks
// and compute that does not touch the buffers overlaps the communication. Every buffer is marked
// with record_stream(), so the caching allocator does not hand its block to a new tensor before
// NCCL has finished with it, even when the caller drops the tensor right away.
//
// Setup. Rank 0 of the group creates the NCCL unique id; it travels over the group's MPI
// communicator, which also serves CPU tensors given to this group (through the MPI backend).
#include "distributed/backends.h"

#ifdef LATTE_HAS_NCCL_GROUP
#include <nccl.h>

#include <functional>

#include "autograd/node.h"
#include "core/cuda_context.h"
#include "distributed/mpi_comm.h"
#include "kernels/ops.h"

namespace latte::dist {

namespace {

void check_nccl(ncclResult_t result, const char* call, ncclComm_t comm) {
  if (result == ncclSuccess) return;
  std::string name(call);
  if (size_t paren = name.find('('); paren != std::string::npos) name.resize(paren);
  const char* detail = comm != nullptr ? ncclGetLastError(comm) : nullptr;
  throw Error(str(name, " failed: ", ncclGetErrorString(result),
                  detail != nullptr && *detail != '\0' ? str(" (", detail, ")") : std::string(),
                  "; run with NCCL_DEBUG=WARN for NCCL's own report"));
}
#define LATTE_NCCL_CHECK(call, comm) check_nccl((call), #call, (comm))

ncclDataType_t nccl_type(DType t) {
  switch (t) {
    case DType::F32: return ncclFloat32;
    case DType::F64: return ncclFloat64;
    case DType::BF16: return ncclBfloat16;
    case DType::F16: return ncclFloat16;
    case DType::I32: return ncclInt32;
    case DType::I64: return ncclInt64;
    case DType::U16: return ncclFloat16;  // raw 16-bit values: only moved (gather, broadcast), never reduced
    case DType::U8: return ncclUint8;
  }
  LATTE_CHECK(false, "unknown dtype");
  return ncclUint8;
}

ncclRedOp_t nccl_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Avg: return ncclAvg;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  return ncclSum;
}

// A contiguous device buffer for `t` (t itself when it already is one) and the copy back to t.
struct DeviceStaged {
  Tensor buffer;
  Tensor target;
  bool is_copy = false;
  void write_back() const {
    if (is_copy) ops::copy(target, buffer);
  }
};

DeviceStaged stage_on_device(const Tensor& t, bool load) {
  if (t.is_contiguous()) return {t, t, false};
  Tensor buffer = Tensor::empty(t.shape(), t.dtype(), t.device());
  if (load) ops::copy(buffer, t);
  return {buffer, t, true};
}

class NcclWork : public Work {
 public:
  NcclWork(int device, std::shared_ptr<cuda::Event> done, ncclComm_t comm, std::function<void()> after_wait)
      : device_(device), done_(std::move(done)), comm_(comm), after_wait_(std::move(after_wait)) {}
  void wait() override {
    if (waited_) return;
    waited_ = true;
    ncclResult_t async_error = ncclSuccess;
    LATTE_NCCL_CHECK(ncclCommGetAsyncError(comm_, &async_error), comm_);
    LATTE_NCCL_CHECK(async_error, comm_);
    cuda::DeviceGuard guard(device_);
    done_->wait(cuda::current_stream());
    if (after_wait_) after_wait_();
    after_wait_ = nullptr;
  }
  bool test() override { return waited_ || done_->query(); }

 private:
  int device_;
  std::shared_ptr<cuda::Event> done_;
  ncclComm_t comm_;
  std::function<void()> after_wait_;
  bool waited_ = false;
};

class NcclProcessGroup : public ProcessGroup {
 public:
  NcclProcessGroup(std::shared_ptr<MpiComm> comm, int device, const std::string& name)
      : ProcessGroup(name), comm_(std::move(comm)), device_(device) {
    cpu_group_ = make_mpi_process_group(mpi_comm_dup(comm_->comm), name);
    ncclUniqueId id{};
    if (comm_->rank == 0) LATTE_NCCL_CHECK(ncclGetUniqueId(&id), nullptr);
    LATTE_MPI_CHECK(MPI_Bcast(&id, sizeof(id), MPI_BYTE, 0, comm_->comm));
    cuda::DeviceGuard guard(device_);
    LATTE_NCCL_CHECK(ncclCommInitRank(&nccl_, comm_->size, id, comm_->rank), nullptr);
    int least_priority = 0, greatest_priority = 0;
    CUDA_CHECK(cudaDeviceGetStreamPriorityRange(&least_priority, &greatest_priority));
    CUDA_CHECK(cudaStreamCreateWithPriority(&stream_, cudaStreamNonBlocking, greatest_priority));
  }

  ~NcclProcessGroup() override {
    // Errors are ignored: at process exit the driver may already be shutting down.
    if (nccl_ != nullptr) ncclCommDestroy(nccl_);
    if (stream_ != nullptr) cudaStreamDestroy(stream_);
  }

  int rank() const override { return comm_->rank; }
  int size() const override { return comm_->size; }
  std::string backend() const override { return "nccl"; }

  std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    if (t.device().is_cpu()) return cpu_group_->all_reduce_async(t, op);
    check_reduce_dtype(*this, "all_reduce", t.dtype(), op);
    check_device(t, "all_reduce");
    autograd::NoGradGuard no_grad;
    DeviceStaged s = stage_on_device(t, /*load=*/true);
    return launch({s.buffer}, [&](cudaStream_t stream) {
      LATTE_NCCL_CHECK(ncclAllReduce(s.buffer.data_ptr(), s.buffer.data_ptr(), static_cast<size_t>(t.numel()),
                                     nccl_type(t.dtype()), nccl_op(op), nccl_, stream), nccl_);
    }, [s] { s.write_back(); });
  }

  std::shared_ptr<Work> reduce_scatter_async(const Tensor& out, const Tensor& in, ReduceOp op) override {
    if (in.device().is_cpu()) return cpu_group_->reduce_scatter_async(out, in, op);
    check_reduce_dtype(*this, "reduce_scatter", in.dtype(), op);
    check_reduce_scatter_sizes(*this, out, in);
    check_device(in, "reduce_scatter");
    autograd::NoGradGuard no_grad;
    DeviceStaged src = stage_on_device(in, /*load=*/true);
    DeviceStaged dst = stage_on_device(out, /*load=*/false);
    return launch({src.buffer, dst.buffer}, [&](cudaStream_t stream) {
      LATTE_NCCL_CHECK(ncclReduceScatter(src.buffer.data_ptr(), dst.buffer.data_ptr(), static_cast<size_t>(out.numel()),
                                         nccl_type(in.dtype()), nccl_op(op), nccl_, stream), nccl_);
    }, [dst] { dst.write_back(); });
  }

  std::shared_ptr<Work> all_gather_async(const Tensor& out, const Tensor& in) override {
    if (in.device().is_cpu()) return cpu_group_->all_gather_async(out, in);
    check_all_gather_sizes(*this, out, in);
    check_device(in, "all_gather");
    autograd::NoGradGuard no_grad;
    DeviceStaged src = stage_on_device(in, /*load=*/true);  // NCCL allows in == this rank's slice of out
    DeviceStaged dst = stage_on_device(out, /*load=*/false);
    return launch({src.buffer, dst.buffer}, [&](cudaStream_t stream) {
      LATTE_NCCL_CHECK(ncclAllGather(src.buffer.data_ptr(), dst.buffer.data_ptr(), static_cast<size_t>(in.numel()),
                                     nccl_type(in.dtype()), nccl_, stream), nccl_);
    }, [dst] { dst.write_back(); });
  }

  std::shared_ptr<Work> broadcast_async(const Tensor& t, int root) override {
    if (t.device().is_cpu()) return cpu_group_->broadcast_async(t, root);
    LATTE_REQUIRE(root >= 0 && root < size(), "broadcast on process group '", name(), "': root ", root,
                  " is not a rank of this ", size(), "-rank group");
    check_device(t, "broadcast");
    autograd::NoGradGuard no_grad;
    DeviceStaged s = stage_on_device(t, /*load=*/rank() == root);
    return launch({s.buffer}, [&](cudaStream_t stream) {
      LATTE_NCCL_CHECK(ncclBroadcast(s.buffer.data_ptr(), s.buffer.data_ptr(), static_cast<size_t>(t.numel()),
                                     nccl_type(t.dtype()), root, nccl_, stream), nccl_);
    }, [s] { s.write_back(); });
  }

  void barrier() override {
    {
      cuda::DeviceGuard guard(device_);
      CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
    cpu_group_->barrier();
  }

 private:
  void check_device(const Tensor& t, const char* collective) const {
    LATTE_REQUIRE(t.device() == Device::cuda(device_), collective, " on NCCL process group '", name(), "': tensor on ",
                  t.device().str(), ", but this group's device is cuda:", device_);
  }

  // Orders the collective after the compute stream's queued work, issues it on the communication
  // stream, protects its buffers from reuse and returns a Work that orders the compute stream after it.
  std::shared_ptr<Work> launch(const std::vector<Tensor>& buffers, const std::function<void(cudaStream_t)>& issue,
                               std::function<void()> after_wait) {
    cuda::DeviceGuard guard(device_);
    cuda::Event inputs_ready(/*timing=*/false);
    inputs_ready.record(cuda::current_stream());
    inputs_ready.wait(stream_);
    issue(stream_);
    for (const Tensor& b : buffers) cuda::record_stream(b.storage()->data(), stream_);
    auto done = std::make_shared<cuda::Event>(/*timing=*/false);
    done->record(stream_);
    return std::make_shared<NcclWork>(device_, std::move(done), nccl_, std::move(after_wait));
  }

  std::shared_ptr<MpiComm> comm_;
  int device_;
  std::shared_ptr<ProcessGroup> cpu_group_;
  ncclComm_t nccl_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

std::shared_ptr<ProcessGroup> make_nccl_process_group(std::shared_ptr<MpiComm> comm, int device,
                                                      const std::string& name) {
  return std::make_shared<NcclProcessGroup>(std::move(comm), device, name);
}

}  // namespace latte::dist

#endif  // LATTE_HAS_NCCL_GROUP
