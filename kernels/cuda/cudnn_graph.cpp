// cuDNN backend-API graph builder (see cudnn_graph.h).
#ifdef LATTE_WITH_CUDNN
#include "kernels/cuda/cudnn_graph.h"

#include <mutex>

#include "core/cuda_context.h"
#include "core/error.h"

namespace latte::cuda::cudnn {

namespace {

std::string last_error() {
  char msg[1024] = {0};
  cudnnGetLastErrorString(msg, sizeof msg);
  return msg;
}

// Throws with the call's name, the status and cuDNN's own last message.
void check(cudnnStatus_t status, const char* what) {
  if (status != CUDNN_STATUS_SUCCESS)
    LATTE_FAIL("cuDNN ", what, ": ", cudnnGetErrorString(status), " (", last_error(), ")");
}

void set(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendAttributeType_t type, int64_t n,
         const void* values, const char* what) {
  check(cudnnBackendSetAttribute(d, name, type, n, values), what);
}

void set_desc(cudnnBackendDescriptor_t d, cudnnBackendAttributeName_t name, cudnnBackendDescriptor_t value,
              const char* what) {
  set(d, name, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &value, what);
}

constexpr int kMaxDevices = 64;

}  // namespace

cudnnHandle_t handle() {
  static cudnnHandle_t handles[kMaxDevices] = {};
  static std::mutex mu;
  const int dev = current_device();
  std::lock_guard<std::mutex> lock(mu);
  if (!handles[dev]) check(cudnnCreate(&handles[dev]), "cudnnCreate");  // never destroyed (context may be gone)
  check(cudnnSetStream(handles[dev], current_stream()), "cudnnSetStream");
  return handles[dev];
}

Descriptors::~Descriptors() {
  for (auto it = list.rbegin(); it != list.rend(); ++it) cudnnBackendDestroyDescriptor(*it);
}

Graph::Graph() : owned_(std::make_shared<Descriptors>()) {}
Graph::~Graph() = default;

cudnnBackendDescriptor_t Graph::make(cudnnBackendDescriptorType_t type) {
  cudnnBackendDescriptor_t d = nullptr;
  check(cudnnBackendCreateDescriptor(type, &d), "cudnnBackendCreateDescriptor");
  owned_->list.push_back(d);
  return d;
}

TensorRef Graph::make_tensor(int64_t uid, cudnnDataType_t type, Dims dims, Dims strides, bool is_virtual,
                             bool by_value, bool reorder) {
  LATTE_CHECK(dims.size() == strides.size(), "cudnn::Graph: ", dims.size(), " dims, ", strides.size(), " strides");
  cudnnBackendDescriptor_t t = make(CUDNN_BACKEND_TENSOR_DESCRIPTOR);
  const int64_t alignment = 16;
  set(t, CUDNN_ATTR_TENSOR_DATA_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &type, "tensor data type");
  set(t, CUDNN_ATTR_TENSOR_DIMENSIONS, CUDNN_TYPE_INT64, static_cast<int64_t>(dims.size()), dims.data(),
      "tensor dims");
  set(t, CUDNN_ATTR_TENSOR_STRIDES, CUDNN_TYPE_INT64, static_cast<int64_t>(strides.size()), strides.data(),
      "tensor strides");
  set(t, CUDNN_ATTR_TENSOR_UNIQUE_ID, CUDNN_TYPE_INT64, 1, &uid, "tensor uid");
  set(t, CUDNN_ATTR_TENSOR_BYTE_ALIGNMENT, CUDNN_TYPE_INT64, 1, &alignment, "tensor alignment");
  if (is_virtual) {
    const bool yes = true;
    set(t, CUDNN_ATTR_TENSOR_IS_VIRTUAL, CUDNN_TYPE_BOOLEAN, 1, &yes, "tensor virtual");
  }
  if (by_value) {
    const bool yes = true;
    set(t, CUDNN_ATTR_TENSOR_IS_BY_VALUE, CUDNN_TYPE_BOOLEAN, 1, &yes, "tensor by value");
  }
  if (reorder) {
    const cudnnBackendTensorReordering_t mode = CUDNN_TENSOR_REORDERING_F16x16;
    set(t, CUDNN_ATTR_TENSOR_REORDERING_MODE, CUDNN_TYPE_TENSOR_REORDERING_MODE, 1, &mode, "tensor reordering");
  }
  check(cudnnBackendFinalize(t), "tensor finalize");
  return TensorRef{t, std::move(dims), std::move(strides), type};
}

TensorRef Graph::tensor(int64_t uid, cudnnDataType_t type, Dims dims, Dims strides, bool reorder_f16x16) {
  return make_tensor(uid, type, std::move(dims), std::move(strides), false, false, reorder_f16x16);
}

TensorRef Graph::scalar(int64_t uid, cudnnDataType_t type) {
  return make_tensor(uid, type, {1, 1, 1, 1}, {1, 1, 1, 1}, false, true, false);
}

TensorRef Graph::virt(cudnnDataType_t type, Dims dims, Dims strides) {
  return make_tensor(next_virtual_uid_++, type, std::move(dims), std::move(strides), true, false, false);
}

void Graph::pointwise(cudnnPointwiseMode_t mode, const TensorRef& y, const TensorRef& x, const TensorRef* b,
                      const TensorRef* t, cudnnDataType_t math, int64_t axis) {
  cudnnBackendDescriptor_t pw = make(CUDNN_BACKEND_POINTWISE_DESCRIPTOR);
  set(pw, CUDNN_ATTR_POINTWISE_MODE, CUDNN_TYPE_POINTWISE_MODE, 1, &mode, "pointwise mode");
  set(pw, CUDNN_ATTR_POINTWISE_MATH_PREC, CUDNN_TYPE_DATA_TYPE, 1, &math, "pointwise precision");
  if (axis >= 0) set(pw, CUDNN_ATTR_POINTWISE_AXIS, CUDNN_TYPE_INT64, 1, &axis, "pointwise axis");
  check(cudnnBackendFinalize(pw), "pointwise finalize");
  cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_POINTWISE_DESCRIPTOR);
  set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_PW_DESCRIPTOR, pw, "pointwise op descriptor");
  set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_XDESC, x.desc, "pointwise x");
  if (b) set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_BDESC, b->desc, "pointwise b");
  if (t) set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_TDESC, t->desc, "pointwise t");
  set_desc(op, CUDNN_ATTR_OPERATION_POINTWISE_YDESC, y.desc, "pointwise y");
  check(cudnnBackendFinalize(op), "pointwise op finalize");
  ops_.push_back(op);
}

TensorRef Graph::pointwise(cudnnPointwiseMode_t mode, const TensorRef& x, const TensorRef* b, const TensorRef* t) {
  TensorRef y = like(x, CUDNN_DATA_FLOAT);
  pointwise(mode, y, x, b, t);
  return y;
}

void Graph::reduction(cudnnReduceTensorOp_t op_kind, const TensorRef& y, const TensorRef& x) {
  cudnnBackendDescriptor_t red = make(CUDNN_BACKEND_REDUCTION_DESCRIPTOR);
  const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  set(red, CUDNN_ATTR_REDUCTION_OPERATOR, CUDNN_TYPE_REDUCTION_OPERATOR_TYPE, 1, &op_kind, "reduction operator");
  set(red, CUDNN_ATTR_REDUCTION_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "reduction precision");
  check(cudnnBackendFinalize(red), "reduction finalize");
  cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_REDUCTION_DESCRIPTOR);
  set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_XDESC, x.desc, "reduction x");
  set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_YDESC, y.desc, "reduction y");
  set_desc(op, CUDNN_ATTR_OPERATION_REDUCTION_DESC, red, "reduction op descriptor");
  check(cudnnBackendFinalize(op), "reduction op finalize");
  ops_.push_back(op);
}

void Graph::matmul(const TensorRef& c, const TensorRef& a, const TensorRef& b) {
  cudnnBackendDescriptor_t mm = make(CUDNN_BACKEND_MATMUL_DESCRIPTOR);
  const cudnnDataType_t comp = CUDNN_DATA_FLOAT;
  set(mm, CUDNN_ATTR_MATMUL_COMP_TYPE, CUDNN_TYPE_DATA_TYPE, 1, &comp, "matmul precision");
  check(cudnnBackendFinalize(mm), "matmul finalize");
  cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_MATMUL_DESCRIPTOR);
  set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_ADESC, a.desc, "matmul a");
  set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_BDESC, b.desc, "matmul b");
  set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_CDESC, c.desc, "matmul c");
  set_desc(op, CUDNN_ATTR_OPERATION_MATMUL_DESC, mm, "matmul op descriptor");
  check(cudnnBackendFinalize(op), "matmul op finalize");
  ops_.push_back(op);
}

void Graph::reshape(const TensorRef& y, const TensorRef& x) {
  cudnnBackendDescriptor_t op = make(CUDNN_BACKEND_OPERATION_RESHAPE_DESCRIPTOR);
  set_desc(op, CUDNN_ATTR_OPERATION_RESHAPE_XDESC, x.desc, "reshape x");
  set_desc(op, CUDNN_ATTR_OPERATION_RESHAPE_YDESC, y.desc, "reshape y");
  check(cudnnBackendFinalize(op), "reshape op finalize");
  ops_.push_back(op);
}

void Graph::add_plan(cudnnHandle_t h, cudnnBackendDescriptor_t config, int64_t rank,
                     std::vector<std::unique_ptr<Plan>>& plans, std::string* reasons) {
  cudnnBackendDescriptor_t plan = make(CUDNN_BACKEND_EXECUTION_PLAN_DESCRIPTOR);
  set(plan, CUDNN_ATTR_EXECUTION_PLAN_HANDLE, CUDNN_TYPE_HANDLE, 1, &h, "plan handle");
  set_desc(plan, CUDNN_ATTR_EXECUTION_PLAN_ENGINE_CONFIG, config, "plan engine config");
  if (cudnnBackendFinalize(plan) != CUDNN_STATUS_SUCCESS) {
    *reasons += " engine config " + std::to_string(rank) + ": " + last_error() + ";";
    return;
  }
  std::unique_ptr<Plan> p(new Plan());
  int64_t n = 0;
  check(cudnnBackendGetAttribute(plan, CUDNN_ATTR_EXECUTION_PLAN_WORKSPACE_SIZE, CUDNN_TYPE_INT64, 1, &n,
                                 &p->workspace_),
        "plan workspace size");
  cudnnBackendDescriptor_t engine = make(CUDNN_BACKEND_ENGINE_DESCRIPTOR);
  if (cudnnBackendGetAttribute(config, CUDNN_ATTR_ENGINECFG_ENGINE, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n, &engine) ==
      CUDNN_STATUS_SUCCESS)
    cudnnBackendGetAttribute(engine, CUDNN_ATTR_ENGINE_GLOBAL_INDEX, CUDNN_TYPE_INT64, 1, &n, &p->engine_);
  cudnnBackendDescriptor_t knob = make(CUDNN_BACKEND_KNOB_CHOICE_DESCRIPTOR);
  cudnnBackendKnobType_t type{};
  if (cudnnBackendGetAttribute(config, CUDNN_ATTR_ENGINECFG_KNOB_CHOICES, CUDNN_TYPE_BACKEND_DESCRIPTOR, 1, &n,
                               &knob) == CUDNN_STATUS_SUCCESS && n == 1 &&
      cudnnBackendGetAttribute(knob, CUDNN_ATTR_KNOB_CHOICE_KNOB_TYPE, CUDNN_TYPE_KNOB_TYPE, 1, &n, &type) ==
          CUDNN_STATUS_SUCCESS && type == CUDNN_KNOB_TYPE_KERNEL_CFG)
    cudnnBackendGetAttribute(knob, CUDNN_ATTR_KNOB_CHOICE_KNOB_VALUE, CUDNN_TYPE_INT64, 1, &n, &p->kernel_cfg_);
  p->plan_ = plan;
  p->rank_ = rank;
  p->graph_ = owned_;
  plans.push_back(std::move(p));
}

std::vector<std::unique_ptr<Plan>> Graph::build(cudnnHandle_t h, size_t max_plans, std::string* why) {
  std::vector<std::unique_ptr<Plan>> plans;
  cudnnBackendDescriptor_t graph = make(CUDNN_BACKEND_OPERATIONGRAPH_DESCRIPTOR);
  set(graph, CUDNN_ATTR_OPERATIONGRAPH_HANDLE, CUDNN_TYPE_HANDLE, 1, &h, "graph handle");
  set(graph, CUDNN_ATTR_OPERATIONGRAPH_OPS, CUDNN_TYPE_BACKEND_DESCRIPTOR, static_cast<int64_t>(ops_.size()),
      ops_.data(), "graph ops");
  if (cudnnStatus_t s = cudnnBackendFinalize(graph); s != CUDNN_STATUS_SUCCESS) {
    if (why) *why = std::string("operation graph refused: ") + cudnnGetErrorString(s) + " (" + last_error() + ")";
    return plans;
  }
  std::string reasons;
  for (cudnnBackendHeurMode_t mode : {CUDNN_HEUR_MODE_A, CUDNN_HEUR_MODE_FALLBACK}) {
    cudnnBackendDescriptor_t heur = make(CUDNN_BACKEND_ENGINEHEUR_DESCRIPTOR);
    set_desc(heur, CUDNN_ATTR_ENGINEHEUR_OPERATION_GRAPH, graph, "heuristics graph");
    set(heur, CUDNN_ATTR_ENGINEHEUR_MODE, CUDNN_TYPE_HEUR_MODE, 1, &mode, "heuristics mode");
    if (cudnnBackendFinalize(heur) != CUDNN_STATUS_SUCCESS) {
      reasons += " heuristics mode " + std::to_string(mode) + ": " + last_error() + ";";
      continue;
    }
    int64_t count = 0;
    if (cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, 0, &count,
                                 nullptr) != CUDNN_STATUS_SUCCESS ||
        count <= 0) {
      reasons += " heuristics mode " + std::to_string(mode) + ": no engine;";
      continue;
    }
    std::vector<cudnnBackendDescriptor_t> configs;
    for (int64_t i = 0; i < count; ++i) configs.push_back(make(CUDNN_BACKEND_ENGINECFG_DESCRIPTOR));
    int64_t returned = 0;
    check(cudnnBackendGetAttribute(heur, CUDNN_ATTR_ENGINEHEUR_RESULTS, CUDNN_TYPE_BACKEND_DESCRIPTOR, count,
                                   &returned, configs.data()),
          "heuristics results");
    for (int64_t i = 0; i < returned && plans.size() < max_plans; ++i)
      add_plan(h, configs[static_cast<size_t>(i)], i, plans, &reasons);
    if (!plans.empty()) break;  // the fallback list only when mode A has nothing that runs
  }
  ops_.clear();
  if (plans.empty() && why) *why = "no cuDNN engine runs this graph:" + reasons;
  return plans;
}

Plan::~Plan() = default;

void Plan::execute(cudnnHandle_t h, const std::vector<int64_t>& uids, const std::vector<void*>& pointers,
                   void* workspace) const {
  LATTE_CHECK(uids.size() == pointers.size(), "cudnn::Plan::execute: ", uids.size(), " uids, ", pointers.size(),
              " pointers");
  cudnnBackendDescriptor_t pack = nullptr;
  check(cudnnBackendCreateDescriptor(CUDNN_BACKEND_VARIANT_PACK_DESCRIPTOR, &pack), "variant pack");
  try {
    set(pack, CUDNN_ATTR_VARIANT_PACK_UNIQUE_IDS, CUDNN_TYPE_INT64, static_cast<int64_t>(uids.size()), uids.data(),
        "variant pack uids");
    set(pack, CUDNN_ATTR_VARIANT_PACK_DATA_POINTERS, CUDNN_TYPE_VOID_PTR, static_cast<int64_t>(pointers.size()),
        pointers.data(), "variant pack pointers");
    set(pack, CUDNN_ATTR_VARIANT_PACK_WORKSPACE, CUDNN_TYPE_VOID_PTR, 1, &workspace, "variant pack workspace");
    check(cudnnBackendFinalize(pack), "variant pack finalize");
    check(cudnnBackendExecute(h, plan_, pack), "cudnnBackendExecute");
  } catch (...) {
    cudnnBackendDestroyDescriptor(pack);
    throw;
  }
  cudnnBackendDestroyDescriptor(pack);
}

}  // namespace latte::cuda::cudnn
#endif  // LATTE_WITH_CUDNN
