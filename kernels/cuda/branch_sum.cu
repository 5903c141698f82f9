// MLRA branch sum: out (B, T, H, D) = scale * sum_r in (B, T, R*H, D)[:, :, r*H:(r+1)*H], and its backward
// din[:, :, r*H + h] = scale * dout[:, :, h] (a broadcast). Both contiguous. Per (b, t) row the H*D
// output elements are the sum of R slabs of H*D input elements, so one thread handles 8 consecutive
// elements of a slab position. Floor: (R + 1) B T H D elements either way.
#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"

namespace latte::cuda {

namespace {

// rows = B*T, slab = H*D. Forward: out[row, e] = scale sum_r in[row, r, e]. Backward: in[row, r, e] = scale out[row, e].
__global__ void branch_sum_kernel(void* out, int dto, void* in, int dti, int64_t rows, int64_t slab, int64_t R,
                                  float scale, bool backward, bool vec) {
  const int64_t per_row = (slab + 7) / 8;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; item < rows * per_row;
       item += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = item / per_row, e = (item - row * per_row) * 8;
    const int eso = dto == kBF16 ? 2 : 4, esi = dti == kBF16 ? 2 : 4;
    char* o = static_cast<char*>(out) + row * slab * eso;
    char* base = static_cast<char*>(in) + row * R * slab * esi;
    float v[8];
    if (!backward) {
      float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
      for (int64_t r = 0; r < R; ++r) {
        load8_any(base + r * slab * esi, dti, e, slab, vec, v);
#pragma unroll
        for (int k = 0; k < 8; ++k) acc[k] += v[k];
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[k] *= scale;
      store8_any(o, dto, e, slab, vec, acc);
    } else {
      load8_any(o, dto, e, slab, vec, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] *= scale;
      for (int64_t r = 0; r < R; ++r) store8_any(base + r * slab * esi, dti, e, slab, vec, v);
    }
  }
}

void launch(const Tensor& out, const Tensor& in, int64_t branches, double scale, bool backward, const char* op) {
  LATTE_CHECK(out.dim() == 4 && in.dim() == 4 && branches >= 1 && in.size(0) == out.size(0) &&
                  in.size(1) == out.size(1) && in.size(2) == branches * out.size(2) && in.size(3) == out.size(3),
              op, ": out ", out.shape().str(), " in ", in.shape().str(), " branches ", branches);
  require_contiguous(out, op, "out");
  require_contiguous(in, op, "in");
  const int64_t rows = out.size(0) * out.size(1), slab = out.size(2) * out.size(3);
  if (rows == 0 || slab == 0) return;
  const bool vec = slab % 8 == 0 && aligned16(out.data_ptr()) && aligned16(in.data_ptr());
  const int threads = 256;
  branch_sum_kernel<<<blocks_for(rows * ((slab + 7) / 8), threads, static_cast<int64_t>(sm_count()) * 16), threads, 0,
                      current_stream()>>>(out.data_ptr(), float_code(out, op), in.data_ptr(), float_code(in, op), rows,
                                          slab, branches, static_cast<float>(scale), backward, vec);
  CUDA_CHECK_LAUNCH("branch_sum_kernel");
}

}  // namespace

void branch_sum_forward(const Tensor& out, const Tensor& in, int64_t branches, double scale) {
  launch(out, in, branches, scale, false, "branch_sum_forward");
}

void branch_sum_backward(const Tensor& din, const Tensor& dout, int64_t branches, double scale) {
  launch(dout, din, branches, scale, true, "branch_sum_backward");
}

}  // namespace latte::cuda
