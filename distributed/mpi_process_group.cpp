// MPI backend of ProcessGroup: nonblocking MPI collectives (MPI-3) on CPU buffers.
//
// A tensor that is not already a contiguous CPU buffer of the wire dtype (strided, on a GPU, or
// bf16/f16 in a reduction, which MPI cannot add) is staged: copied into a contiguous CPU buffer
// (f32 for bf16/f16 reductions), and the result copied back when the Work completes. Avg is the Sum
// divided by the group size, computed after the sum (MPI has no average).
#include <climits>
#include <functional>
#include <vector>

#include "autograd/node.h"
#include "distributed/backends.h"
#include "distributed/mpi_comm.h"

namespace latte::dist {

namespace {

MPI_Datatype mpi_type(DType t) {
  switch (t) {
    case DType::F32: return MPI_FLOAT;
    case DType::F64: return MPI_DOUBLE;
    case DType::I32: return MPI_INT32_T;
    case DType::I64: return MPI_INT64_T;
    case DType::BF16:
    case DType::F16:
    case DType::U16: return MPI_UINT16_T;  // raw bits: only moved, never reduced
    case DType::U8: return MPI_UINT8_T;
  }
  LATTE_CHECK(false, "unknown dtype");
  return MPI_BYTE;
}

MPI_Op mpi_op(ReduceOp op) {
  switch (op) {
    case ReduceOp::Sum:
    case ReduceOp::Avg: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_SUM;
}

// MPI cannot add 16-bit floats: they are reduced in f32.
DType reduction_wire_dtype(DType t) { return t == DType::BF16 || t == DType::F16 ? DType::F32 : t; }

// The CPU buffer a collective works on, and where its result goes when it is a copy of the user's tensor.
struct Staged {
  Tensor buffer;  // contiguous, CPU, wire dtype
  Tensor target;  // the caller's tensor
  bool is_copy = false;

  void write_back() const {
    if (is_copy) target.copy_(buffer);
  }
};

Staged stage(const Tensor& t, DType wire, bool load) {
  if (t.device().is_cpu() && t.dtype() == wire && t.is_contiguous()) return {t, t, false};
  Tensor buffer = Tensor::empty(t.shape(), wire, Device::cpu());
  if (load) buffer.copy_(t);
  return {buffer, t, true};
}

bool overlaps(const Tensor& a, const Tensor& b) {
  const char* pa = static_cast<const char*>(a.data_ptr());
  const char* pb = static_cast<const char*>(b.data_ptr());
  return pa < pb + b.nbytes() && pb < pa + a.nbytes();
}

int mpi_count(int64_t elements, const char* collective) {
  LATTE_REQUIRE(elements <= INT_MAX, collective, ": ", elements, " elements exceed the MPI count limit (", INT_MAX,
                "); use the NCCL backend or smaller buckets");
  return static_cast<int>(elements);
}

// Sum -> average, in place on the f32/f64 wire buffer.
void divide_in_place(const Tensor& buffer, int size) {
  if (buffer.dtype() == DType::F64) {
    double* p = buffer.data<double>();
    for (int64_t i = 0; i < buffer.numel(); ++i) p[i] /= size;
  } else {
    float* p = buffer.data<float>();
    for (int64_t i = 0; i < buffer.numel(); ++i) p[i] /= static_cast<float>(size);
  }
}

class MpiWork : public Work {
 public:
  MpiWork(MPI_Request request, std::function<void()> on_complete)
      : request_(request), on_complete_(std::move(on_complete)) {}
  ~MpiWork() override {
    // Never let MPI write into buffers that are about to be freed.
    if (!done_ && request_ != MPI_REQUEST_NULL) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  }
  void wait() override {
    if (done_) return;
    LATTE_MPI_CHECK(MPI_Wait(&request_, MPI_STATUS_IGNORE));
    complete();
  }
  bool test() override {
    if (done_) return true;
    int flag = 0;
    LATTE_MPI_CHECK(MPI_Test(&request_, &flag, MPI_STATUS_IGNORE));
    if (flag) complete();
    return done_;
  }

 private:
  void complete() {
    done_ = true;
    if (on_complete_) on_complete_();
    on_complete_ = nullptr;  // releases the staged buffers
  }
  MPI_Request request_;
  std::function<void()> on_complete_;
  bool done_ = false;
};

class MpiProcessGroup : public ProcessGroup {
 public:
  MpiProcessGroup(std::shared_ptr<MpiComm> comm, const std::string& name)
      : ProcessGroup(name), comm_(std::move(comm)) {}

  int rank() const override { return comm_->rank; }
  int size() const override { return comm_->size; }
  std::string backend() const override { return "mpi"; }

  std::shared_ptr<Work> all_reduce_async(const Tensor& t, ReduceOp op) override {
    check_reduce_dtype(*this, "all_reduce", t.dtype(), op);
    autograd::NoGradGuard no_grad;
    Staged s = stage(t, reduction_wire_dtype(t.dtype()), /*load=*/true);
    MPI_Request request = MPI_REQUEST_NULL;
    LATTE_MPI_CHECK(MPI_Iallreduce(MPI_IN_PLACE, s.buffer.data_ptr(), mpi_count(t.numel(), "all_reduce"),
                                   mpi_type(s.buffer.dtype()), mpi_op(op), comm_->comm, &request));
    const int n = size();
    return std::make_shared<MpiWork>(request, [s, op, n] {
      if (op == ReduceOp::Avg) divide_in_place(s.buffer, n);
      s.write_back();
    });
  }

  std::shared_ptr<Work> reduce_scatter_async(const Tensor& out, const Tensor& in, ReduceOp op) override {
    check_reduce_dtype(*this, "reduce_scatter", in.dtype(), op);
    check_reduce_scatter_sizes(*this, out, in);
    autograd::NoGradGuard no_grad;
    const DType wire = reduction_wire_dtype(in.dtype());
    Staged src = stage(in, wire, /*load=*/true);
    Staged dst = stage(out, wire, /*load=*/false);
    if (overlaps(src.buffer, dst.buffer)) dst = {Tensor::empty(out.shape(), wire, Device::cpu()), out, true};
    MPI_Request request = MPI_REQUEST_NULL;
    LATTE_MPI_CHECK(MPI_Ireduce_scatter_block(src.buffer.data_ptr(), dst.buffer.data_ptr(),
                                              mpi_count(out.numel(), "reduce_scatter"), mpi_type(wire), mpi_op(op),
                                              comm_->comm, &request));
    const int n = size();
    return std::make_shared<MpiWork>(request, [src, dst, op, n] {
      (void)src;  // kept alive until MPI is done reading it
      if (op == ReduceOp::Avg) divide_in_place(dst.buffer, n);
      dst.write_back();
    });
  }

  std::shared_ptr<Work> all_gather_async(const Tensor& out, const Tensor& in) override {
    check_all_gather_sizes(*this, out, in);
    autograd::NoGradGuard no_grad;
    Staged dst = stage(out, out.dtype(), /*load=*/false);
    // In place when `in` is this rank's slice of the output buffer (MPI forbids other aliasing).
    const char* my_slice = static_cast<const char*>(dst.buffer.data_ptr()) + static_cast<size_t>(rank()) * in.nbytes();
    const bool in_place = !dst.is_copy && in.device().is_cpu() && in.is_contiguous() && in.data_ptr() == my_slice;
    Staged src;
    const void* send = MPI_IN_PLACE;
    if (!in_place) {
      src = stage(in, in.dtype(), /*load=*/true);
      if (overlaps(src.buffer, dst.buffer)) src = {in.detach().clone(), in, true};
      send = src.buffer.data_ptr();
    }
    const int count = mpi_count(in.numel(), "all_gather");
    MPI_Request request = MPI_REQUEST_NULL;
    LATTE_MPI_CHECK(MPI_Iallgather(send, count, mpi_type(in.dtype()), dst.buffer.data_ptr(), count,
                                   mpi_type(out.dtype()), comm_->comm, &request));
    return std::make_shared<MpiWork>(request, [src, dst] {
      (void)src;
      dst.write_back();
    });
  }

  std::shared_ptr<Work> broadcast_async(const Tensor& t, int root) override {
    LATTE_REQUIRE(root >= 0 && root < size(), "broadcast on process group '", name(), "': root ", root,
                  " is not a rank of this ", size(), "-rank group");
    autograd::NoGradGuard no_grad;
    Staged s = stage(t, t.dtype(), /*load=*/rank() == root);
    MPI_Request request = MPI_REQUEST_NULL;
    LATTE_MPI_CHECK(MPI_Ibcast(s.buffer.data_ptr(), mpi_count(t.numel(), "broadcast"), mpi_type(t.dtype()), root,
                               comm_->comm, &request));
    return std::make_shared<MpiWork>(request, [s] { s.write_back(); });
  }

  void barrier() override { LATTE_MPI_CHECK(MPI_Barrier(comm_->comm)); }

 private:
  std::shared_ptr<MpiComm> comm_;
};

}  // namespace

std::shared_ptr<ProcessGroup> make_mpi_process_group(std::shared_ptr<MpiComm> comm, const std::string& name) {
  return std::make_shared<MpiProcessGroup>(std::move(comm), name);
}

}  // namespace latte::dist
