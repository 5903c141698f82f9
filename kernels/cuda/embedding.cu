// Token embedding: forward gathers rows of the table, backward scatters dout rows back into the table
// gradient, deterministically. Floor: forward N*D elements read + written; backward N*D read plus one
// read-modify-write of each touched table row.
//
// Backward without float atomics (whose summation order, and so the result, would change from run to
// run): the ids are sorted with their positions (CUB's stable radix sort, over just the bits the
// vocabulary needs), and the sorted list is cut into fixed windows of kWindow positions, one block each.
// A block walks its window in order and sums each run of equal ids in fp32: a run that starts and ends in
// the window is added into dtable[id] at once (no other block sees that id); a run that crosses a window
// edge leaves partial sums instead (the window holding its start: the "tail" slot, each later window it
// covers: the "head" slot), and a second pass, one block per window holding such a start, adds tail +
// heads in window order into dtable[id]. So the serial chain of any block is at most kWindow rows plus one
// partial per window a frequent token covers (the first version gave a whole run to one block: ~1 ms per
// call on natural text, where "the" or "\n" fill hundreds of the 16k positions of a batch).
// Out-of-range ids: the forward writes NaN rows (so a bad token shows up in the loss instead of
// reading foreign memory); the backward sorts them last (key V) and skips them.
#include <cub/device/device_radix_sort.cuh>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"

namespace latte::cuda {

namespace {

// out (N, D) = table (V, D) [ids (N)]; one item = 8 consecutive channels of one row.
__global__ void embedding_forward_kernel(void* out, int dto, const void* table, int dtt, const int32_t* ids, int64_t N,
                                         int64_t V, int64_t D, bool vec) {
  const int64_t per_row = (D + 7) / 8;
  for (int64_t item = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; item < N * per_row;
       item += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t row = item / per_row, c = (item - row * per_row) * 8;
    const int64_t id = ids[row];
    float v[8];
    if (id >= 0 && id < V) {
      load8_any(static_cast<const char*>(table) + id * D * (dtt == kBF16 ? 2 : 4), dtt, c, D, vec, v);
    } else {
#pragma unroll
      for (int k = 0; k < 8; ++k) v[k] = __int_as_float(0x7fc00000);
    }
    store8_any(static_cast<char*>(out) + row * D * (dto == kBF16 ? 2 : 4), dto, c, D, vec, v);
  }
}

// Sort keys (invalid ids become V, which sorts last and is skipped) and positions 0..N-1.
__global__ void sort_input_kernel(int32_t* keys, int32_t* positions, const int32_t* ids, int64_t n, int64_t V) {
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int32_t id = ids[i];
    keys[i] = id >= 0 && id < V ? id : static_cast<int32_t>(V);
    positions[i] = static_cast<int32_t>(i);
  }
}

constexpr int kWindow = 32;  // sorted positions per block of the first pass

__device__ __forceinline__ void add_row(void* dtable, int dtt, int64_t id, int64_t D, int64_t c, bool vec,
                                        const float (&acc)[8]) {
  char* trow = static_cast<char*>(dtable) + id * D * (dtt == kBF16 ? 2 : 4);
  float t[8];
  load8_any(trow, dtt, c, D, vec, t);
#pragma unroll
  for (int k = 0; k < 8; ++k) t[k] += acc[k];
  store8_any(trow, dtt, c, D, vec, t);
}

// First pass: block w sums the runs of its window [w kWindow, (w+1) kWindow) of the sorted ids. partial is
// (windows, 2, D) fp32: slot 0 = the head (a run that began in an earlier window), slot 1 = the tail (a run
// that begins here and goes on past the window).
__global__ void embedding_backward_window_kernel(void* dtable, int dtt, const void* dout, int dto,
                                                 const int32_t* sorted_ids, const int32_t* sorted_pos, float* partial,
                                                 int64_t N, int64_t V, int64_t D, bool vec) {
  const int64_t w = blockIdx.x, begin = w * kWindow, end = min(N, begin + kWindow);
  const int es_o = dto == kBF16 ? 2 : 4;
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * 8; c < D; c += static_cast<int64_t>(blockDim.x) * 8) {
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
    int64_t run_begin = begin;
    for (int64_t j = begin; j < end; ++j) {
      const int32_t id = sorted_ids[j];
      float v[8];
      load8_any(static_cast<const char*>(dout) + sorted_pos[j] * D * es_o, dto, c, D, vec, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[k] += v[k];
      if (j + 1 < end && sorted_ids[j + 1] == id) continue;  // the run goes on inside the window
      const bool starts_here = run_begin == 0 || sorted_ids[run_begin - 1] != id;
      const bool ends_here = j + 1 == N || sorted_ids[j + 1] != id;
      if (id >= 0 && id < V) {
        if (starts_here && ends_here) {
          add_row(dtable, dtt, id, D, c, vec, acc);
        } else {
          float* slot = partial + (w * 2 + (starts_here ? 1 : 0)) * D;
#pragma unroll
          for (int k = 0; k < 8; ++k)
            if (c + k < D) slot[c + k] = acc[k];
        }
      }
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[k] = 0.f;
      run_begin = j + 1;
    }
  }
}

// Second pass: block w finishes the run that starts in window w and crosses its end, if there is one:
// its tail plus the heads of the following windows the run covers, in window order.
__global__ void embedding_backward_cross_kernel(void* dtable, int dtt, const int32_t* sorted_ids, const float* partial,
                                                int64_t N, int64_t V, int64_t D, bool vec) {
  const int64_t w = blockIdx.x, begin = w * kWindow, last = min(N, begin + kWindow) - 1;
  const int32_t id = sorted_ids[last];
  if (last + 1 >= N || sorted_ids[last + 1] != id || id < 0 || id >= V) return;  // no run crosses the end
  if (begin > 0 && sorted_ids[begin] == id && sorted_ids[begin - 1] == id) return;  // it started earlier
  const int64_t windows = (N + kWindow - 1) / kWindow;
  for (int64_t c = static_cast<int64_t>(threadIdx.x) * 8; c < D; c += static_cast<int64_t>(blockDim.x) * 8) {
    float acc[8];
    const float* tail = partial + (w * 2 + 1) * D;
#pragma unroll
    for (int k = 0; k < 8; ++k) acc[k] = c + k < D ? tail[c + k] : 0.f;
    for (int64_t u = w + 1; u < windows && sorted_ids[u * kWindow] == id; ++u) {
      const float* head = partial + u * 2 * D;
#pragma unroll
      for (int k = 0; k < 8; ++k)
        if (c + k < D) acc[k] += head[c + k];
    }
    add_row(dtable, dtt, id, D, c, vec, acc);
  }
}

}  // namespace

void embedding_forward(const Tensor& out, const Tensor& table, const Tensor& ids) {
  LATTE_CHECK(table.dim() == 2 && out.dim() == 2 && ids.dim() == 1 && out.size(0) == ids.size(0) &&
                  out.size(1) == table.size(1),
              "embedding_forward: out ", out.shape().str(), " table ", table.shape().str(), " ids ", ids.shape().str());
  LATTE_CHECK(ids.dtype() == DType::I32, "embedding_forward: ids must be i32, got ", dtype_name(ids.dtype()));
  require_contiguous(out, "embedding_forward", "out");
  require_contiguous(table, "embedding_forward", "table");
  require_contiguous(ids, "embedding_forward", "ids");
  const int64_t N = out.size(0), V = table.size(0), D = table.size(1);
  if (N == 0 || D == 0) return;
  const bool vec = D % 8 == 0 && aligned16(out.data_ptr()) && aligned16(table.data_ptr());
  const int threads = 256;
  embedding_forward_kernel<<<blocks_for(N * ((D + 7) / 8), threads, static_cast<int64_t>(sm_count()) * 16), threads, 0,
                             current_stream()>>>(out.data_ptr(), float_code(out, "embedding_forward"), table.data_ptr(),
                                                 float_code(table, "embedding_forward"), ids.data<int32_t>(), N, V, D,
                                                 vec);
  CUDA_CHECK_LAUNCH("embedding_forward_kernel");
}

void embedding_backward(const Tensor& dtable, const Tensor& dout, const Tensor& ids) {
  LATTE_CHECK(dtable.dim() == 2 && dout.dim() == 2 && ids.dim() == 1 && dout.size(0) == ids.size(0) &&
                  dout.size(1) == dtable.size(1),
              "embedding_backward: dtable ", dtable.shape().str(), " dout ", dout.shape().str(), " ids ",
              ids.shape().str());
  LATTE_CHECK(ids.dtype() == DType::I32, "embedding_backward: ids must be i32, got ", dtype_name(ids.dtype()));
  require_contiguous(dtable, "embedding_backward", "dtable");
  require_contiguous(dout, "embedding_backward", "dout");
  require_contiguous(ids, "embedding_backward", "ids");
  const int64_t N = dout.size(0), V = dtable.size(0), D = dtable.size(1);
  if (N == 0 || D == 0) return;
  LATTE_CHECK(N < (int64_t(1) << 31), "embedding_backward: too many rows (", N, ")");
  cudaStream_t stream = current_stream();
  const Device dev = dout.device();

  LATTE_CHECK(V < (int64_t(1) << 30), "embedding_backward: vocabulary too large (", V, ")");
  Tensor keys = Tensor::empty({N}, DType::I32, dev);
  Tensor positions = Tensor::empty({N}, DType::I32, dev);
  Tensor sorted_ids = Tensor::empty({N}, DType::I32, dev);
  Tensor sorted_pos = Tensor::empty({N}, DType::I32, dev);
  sort_input_kernel<<<blocks_for(N, 256, 1024), 256, 0, stream>>>(keys.data<int32_t>(), positions.data<int32_t>(),
                                                                  ids.data<int32_t>(), N, V);
  CUDA_CHECK_LAUNCH("sort_input_kernel");
  int end_bit = 1;  // keys are in [0, V]
  while ((int64_t(1) << end_bit) <= V) ++end_bit;
  size_t temp_bytes = 0;
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(nullptr, temp_bytes, keys.data<int32_t>(), sorted_ids.data<int32_t>(),
                                             positions.data<int32_t>(), sorted_pos.data<int32_t>(), static_cast<int>(N), 0,
                                             end_bit, stream));
  Tensor temp = Tensor::empty({static_cast<int64_t>(temp_bytes) + 1}, DType::U8, dev);
  CUDA_CHECK(cub::DeviceRadixSort::SortPairs(temp.data_ptr(), temp_bytes, keys.data<int32_t>(),
                                             sorted_ids.data<int32_t>(), positions.data<int32_t>(),
                                             sorted_pos.data<int32_t>(), static_cast<int>(N), 0, end_bit, stream));
  const bool vec = D % 8 == 0 && aligned16(dtable.data_ptr()) && aligned16(dout.data_ptr());
  const int64_t chunks = (D + 7) / 8, windows = (N + kWindow - 1) / kWindow;
  const int threads = chunks >= 256 ? 256 : static_cast<int>((chunks + 31) / 32 * 32);
  Tensor partial = Tensor::empty({windows, 2, D}, DType::F32, dev);
  const int dtt = float_code(dtable, "embedding_backward"), dto = float_code(dout, "embedding_backward");
  embedding_backward_window_kernel<<<static_cast<unsigned>(windows), threads, 0, stream>>>(
      dtable.data_ptr(), dtt, dout.data_ptr(), dto, sorted_ids.data<int32_t>(), sorted_pos.data<int32_t>(),
      partial.data<float>(), N, V, D, vec);
  CUDA_CHECK_LAUNCH("embedding_backward_window_kernel");
  embedding_backward_cross_kernel<<<static_cast<unsigned>(windows), threads, 0, stream>>>(
      dtable.data_ptr(), dtt, sorted_ids.data<int32_t>(), partial.data<float>(), N, V, D, vec);
  CUDA_CHECK_LAUNCH("embedding_backward_cross_kernel");
}

}  // namespace latte::cuda
