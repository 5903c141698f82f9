// cuDNN SDPA backend: placeholder (see kernels/cuda/cudnn_attention.h for why it is not implemented yet).
// Every entry point is defined in every build so callers need no #ifdef: supported() says false and the
// forward/backward throw a clear error if called anyway.
#include "kernels/cuda/cudnn_attention.h"

#include "core/error.h"

namespace latte::cuda {

bool cudnn_attention_supported(const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t) { return false; }

void cudnn_attention_forward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, int64_t, double,
                             bool) {
  LATTE_FAIL("cudnn_attention_forward: the cuDNN attention backend is not implemented; use the flash kernels "
             "(kernels/cuda/flash_attention.h) or cuda::attention_forward");
}

void cudnn_attention_backward(const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&, const Tensor&,
                              const Tensor&, const Tensor&, const Tensor&, int64_t, double, bool) {
  LATTE_FAIL("cudnn_attention_backward: the cuDNN attention backend is not implemented; use the flash kernels "
             "(kernels/cuda/flash_attention.h) or cuda::attention_backward");
}

}  // namespace latte::cuda
