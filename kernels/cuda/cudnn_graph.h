// A small builder over cuDNN's backend (graph) API: tensors, pointwise / reduction / matmul / reshape
// operations, an operation graph, heuristics -> the engine configs that finalize -> execution plans (the caller
// checks them against each other and times them), and execution with a variant pack. Used by
// kernels/cuda/cudnn_attention.cpp (SDPA forward and backward).
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

// Descriptors destroyed together, last created first.
struct Descriptors {
  std::vector<cudnnBackendDescriptor_t> list;
  Descriptors() = default;
  Descriptors(const Descriptors&) = delete;
  Descriptors& operator=(const Descriptors&) = delete;
  ~Descriptors();
};

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

  // The operation graph -> a plan for each of the first `max_plans` engine configurations of heuristics mode A
  // (or, when none of those finalizes, of the fallback mode) that finalize, in the heuristics' order: the first
  // is the one cudnn_frontend's default policy (and so PyTorch) would run. Empty with `why` set when no engine
  // supports the graph (or a descriptor was refused). The graph's descriptors are shared by the plans.
  std::vector<std::unique_ptr<Plan>> build(cudnnHandle_t h, size_t max_plans, std::string* why);

 private:
  cudnnBackendDescriptor_t make(cudnnBackendDescriptorType_t type);
  // Finalizes a plan for `config` into `plans`, or says why not in `reasons`.
  void add_plan(cudnnHandle_t h, cudnnBackendDescriptor_t config, int64_t rank,
                std::vector<std::unique_ptr<Plan>>& plans, std::string* reasons);
  TensorRef make_tensor(int64_t uid, cudnnDataType_t type, Dims dims, Dims strides, bool is_virtual, bool by_value,
                        bool reorder);

  std::shared_ptr<Descriptors> owned_;  // shared with the plans built from this graph
  std::vector<cudnnBackendDescriptor_t> ops_;
  int64_t next_virtual_uid_ = 1 << 20;
};

// A finalized execution plan (shares the descriptors of the graph it came from).
class Plan {
 public:
  ~Plan();
  Plan(const Plan&) = delete;
  Plan& operator=(const Plan&) = delete;
  int64_t workspace_bytes() const { return workspace_; }
  // cuDNN's global index of the engine this plan runs, and the plan's position in the heuristics' list.
  int64_t engine() const { return engine_; }
  int64_t heuristic_rank() const { return rank_; }
  // The engine's kernel-configuration knob (CUDNN_KNOB_TYPE_KERNEL_CFG) in this plan, -1 when it has none.
  int64_t kernel_cfg() const { return kernel_cfg_; }
  // Runs on h's stream. uids[i] <-> pointers[i] (device memory, or host memory for by-value scalars).
  void execute(cudnnHandle_t h, const std::vector<int64_t>& uids, const std::vector<void*>& pointers,
               void* workspace) const;

 private:
  Plan() = default;
  std::shared_ptr<const Descriptors> graph_;  // the operation graph's descriptors, kept alive for execution
  cudnnBackendDescriptor_t plan_ = nullptr;
  int64_t workspace_ = 0, engine_ = -1, rank_ = 0, kernel_cfg_ = -1;
  friend class Graph;
};

}  // namespace latte::cuda::cudnn
#endif  // LATTE_WITH_CUDNN
