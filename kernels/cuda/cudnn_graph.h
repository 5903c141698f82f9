// A small builder over cuDNN's backend (graph) API: tensors, pointwise / reduction / matmul / reshape
// operations, an operation graph, heuristics -> the first engine config that finalizes -> an execution plan,
// and execution with a variant pack. Used by kernels/cuda/cudnn_attention.cpp (SDPA forward and backward).
//
// Why not cudnn_frontend: it is not packaged here, and the backend API is a C interface of cudnn.h that
// ships with the library. The cost is spelling out every descriptor attribute; this file keeps that in one
// place. Every descriptor a graph creates is owned by the graph, then by the plan built from it, and
// destroyed with it.
#pragma once
#ifdef LATTE_WITH_CUDNN
#include <cudnn.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

namespace latte::cuda::cudnn {

using Dims = std::vector<int64_t>;

// The cuDNN handle of the current device, bound to latte's current stream on return.
cudnnHandle_t handle();

// One tensor of a graph: its backend descriptor and the shape the operations were built with.
struct TensorRef {
  cudnnBackendDescriptor_t desc = nullptr;
  Dims dims, strides;
  cudnnDataType_t type = CUDNN_DATA_FLOAT;
};

class Plan;

class Graph {
 public:
  Graph();
  ~Graph();
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // A tensor the caller provides memory for (its uid goes in the variant pack). `reorder_f16x16` marks
  // cuDNN's internal fp32 accumulators (the SDPA backward's dQ).
  TensorRef tensor(int64_t uid, cudnnDataType_t type, Dims dims, Dims strides, bool reorder_f16x16 = false);
  // A scalar passed by value at execution (a pointer to host memory in the variant pack), dims 1,1,1,1.
  TensorRef scalar(int64_t uid, cudnnDataType_t type);
  // An intermediate that never touches memory.
  TensorRef virt(cudnnDataType_t type, Dims dims, Dims strides);
  TensorRef like(const TensorRef& t, cudnnDataType_t type) { return virt(type, t.dims, t.strides); }

  // y = mode(x, b, t); math precision `math`; `axis` for GEN_INDEX.
  void pointwise(cudnnPointwiseMode_t mode, const TensorRef& y, const TensorRef& x, const TensorRef* b = nullptr,
                 const TensorRef* t = nullptr, cudnnDataType_t math = CUDNN_DATA_FLOAT, int64_t axis = -1);
  // The same with a new virtual fp32 output shaped like x.
  TensorRef pointwise(cudnnPointwiseMode_t mode, const TensorRef& x, const TensorRef* b = nullptr,
                      const TensorRef* t = nullptr);
  void reduction(cudnnReduceTensorOp_t op, const TensorRef& y, const TensorRef& x);  // over the dims where y is 1
  void matmul(const TensorRef& c, const TensorRef& a, const TensorRef& b);            // fp32 compute
  void reshape(const TensorRef& y, const TensorRef& x);                               // same elements, new strides

  // The operation graph -> the first engine configuration (heuristics mode A, then fallback) whose plan
  // finalizes. Null and `why` set when no engine supports the graph (or a descriptor was refused).
  std::unique_ptr<Plan> build(cudnnHandle_t h, std::string* why);

 private:
  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type);
  TensorRef make_tensor(int64_t uid, cudnnDataType_t type, Dims dims, Dims strides, bool is_virtual, bool by_value,
                        bool reorder);

  std::vector<cudnnBackendDescriptor_t> owned_;  // destroyed in ~Graph unless moved into a Plan
  std::vector<cudnnBackendDescriptor_t> ops_;
  int64_t next_virtual_uid_ = 1 << 20;
  friend class Plan;
};

// A finalized execution plan (owns every descriptor of the graph it came from).
class Plan {
 public:
  ~Plan();
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  int64_t workspace_bytes() const { return workspace_; }
  // Runs on h's stream. uids[i] <-> pointers[i] (device memory, or host memory for by-value scalars).
  void execute(cudnnHandle_t h, const std::vector<int64_t>& uids, const std::vector<void*>& pointers,
               void* workspace) const;

 private:
  Plan() = default;
  std::vector<cudnnBackendDescriptor_t> owned_;
  cudnnBackendDescriptor_t plan_ = nullptr;
  int64_t workspace_ = 0;
  friend class Graph;
};

}  // namespace latte::cuda::cudnn
#endif  // LATTE_WITH_CUDNN
