// CPU embedding lookup and its backward. The forward gathers table rows by id; the backward scatter-adds
// dout rows into dtable in row order (n = 0, 1, ...), so duplicate ids always sum in the same order and
// the result is bitwise deterministic. Every id is range-checked: a bad token id (a tokenizer/vocab
// mismatch) must fail with the id and its position, not read out of bounds.
#include <cstring>

#include "kernels/cpu/cpu_ops.h"
#include "kernels/cpu/strided.h"

namespace latte::cpu {

namespace {
void check_embedding(const char* op, const Tensor& rows, const Tensor& table, const Tensor& ids) {
  LATTE_REQUIRE(table.dim() == 2 && rows.dim() == 2 && ids.dim() == 1 && rows.size(0) == ids.size(0) &&
                    rows.size(1) == table.size(1),
                op, ": expected table (V, D), ids (N), rows (N, D); got table ", table.shape().str(), ", ids ",
                ids.shape().str(), ", rows ", rows.shape().str());
  LATTE_REQUIRE(ids.dtype() == DType::I32, op, ": ids must be i32, got ", dtype_name(ids.dtype()));
  LATTE_REQUIRE(rows.dtype() == table.dtype(), op, ": dtypes differ, table ", dtype_name(table.dtype()), ", rows ",
                dtype_name(rows.dtype()));
  LATTE_CHECK(rows.is_contiguous() && table.is_contiguous() && ids.is_contiguous(), op, " needs contiguous tensors");
  const int32_t* id = ids.data<int32_t>();
  const int64_t V = table.size(0);
  for (int64_t n = 0; n < ids.size(0); ++n)
    LATTE_REQUIRE(id[n] >= 0 && id[n] < V, op, ": token id ", id[n], " at position ", n, " is out of range [0, ", V,
                  "); is the model's vocab_size smaller than the tokenizer's?");
}
}  // namespace

void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& ids) {
  check_embedding("embedding_forward", out, table, ids);
  const int32_t* id = ids.data<int32_t>();
  const int64_t D = table.size(1);
  const size_t row_bytes = static_cast<size_t>(D) * table.element_size();
  const char* src = static_cast<const char*>(table.data_ptr());
  char* dst = static_cast<char*>(out.data_ptr());
  for (int64_t n = 0; n < ids.size(0); ++n)  // (N, D) <- (V, D)[ids]
    std::memcpy(dst + static_cast<size_t>(n) * row_bytes, src + static_cast<size_t>(id[n]) * row_bytes, row_bytes);
}

void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) {
  check_embedding("embedding_backward", dout, dtable, ids);
  const int32_t* id = ids.data<int32_t>();
  const int64_t D = dtable.size(1);
  dispatch_float(dtable.dtype(), "embedding_backward", [&]<typename T>() {
    T* dt = dtable.data<T>();       // (V, D) accumulate
    const T* dy = dout.data<T>();   // (N, D)
    for (int64_t n = 0; n < ids.size(0); ++n) {
      T* row = dt + static_cast<int64_t>(id[n]) * D;
      const T* g = dy + n * D;
      for (int64_t d = 0; d < D; ++d) row[d] += g[d];
    }
  });
}

}  // namespace latte::cpu
