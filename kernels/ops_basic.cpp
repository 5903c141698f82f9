// Dispatchers for the basic ops (elementwise, reductions, matmul, embedding, cross-entropy): each checks
// that its tensors share one device and calls the CPU reference or the CUDA kernel (kernels/op_decls.inc
// is the contract both follow). Undefined tensors (an absent dlogits) are skipped by the device check.
#include "kernels/dispatch.h"

namespace latte::ops {

void add(const Tensor& out, const Tensor& a, const Tensor& b, double alpha, double beta) {
  LATTE_DISPATCH(add, &out, &a, &b)(out, a, b, alpha, beta);
}
void mul(const Tensor& out, const Tensor& a, const Tensor& b) { LATTE_DISPATCH(mul, &out, &a, &b)(out, a, b); }
void scale(const Tensor& out, const Tensor& in, double alpha) { LATTE_DISPATCH(scale, &out, &in)(out, in, alpha); }

void sum(const Tensor& out, const Tensor& in) { LATTE_DISPATCH(sum, &out, &in)(out, in); }
void sum_squares(const Tensor& out, const Tensor& in) { LATTE_DISPATCH(sum_squares, &out, &in)(out, in); }
void sum_to(const Tensor& out, const Tensor& in) { LATTE_DISPATCH(sum_to, &out, &in)(out, in); }

void matmul_add(const Tensor& out, const Tensor& a, const Tensor& b, const Tensor& addend, bool trans_a, bool trans_b) {
  LATTE_REQUIRE(addend.defined() && addend.shape() == out.shape() && addend.strides() == out.strides() &&
                    addend.dtype() == out.dtype(),
                "matmul_add: the addend ", addend.str(), " must have out's shape, strides and dtype ", out.str());
  LATTE_DISPATCH(matmul_add, &out, &a, &b, &addend)(out, a, b, addend, trans_a, trans_b);
}

void matmul(const Tensor& out, const Tensor& a, const Tensor& b, bool trans_a, bool trans_b, double alpha, double beta) {
  LATTE_DISPATCH(matmul, &out, &a, &b)(out, a, b, trans_a, trans_b, alpha, beta);
}

void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& ids) {
  LATTE_DISPATCH(embedding_forward, &out, &table, &ids)(out, table, ids);
}
void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) {
  LATTE_DISPATCH(embedding_backward, &dtable, &dout, &ids)(dtable, dout, ids);
}

void cross_entropy_forward_backward(const Tensor& losses, const Tensor& dlogits, const Tensor& logits,
                                    const Tensor& targets, int64_t ignore_index, double grad_scale) {
  LATTE_DISPATCH(cross_entropy_forward_backward, &losses, &dlogits, &logits, &targets)(losses, dlogits, logits, targets,
                                                                                       ignore_index, grad_scale);
}

}  // namespace latte::ops
