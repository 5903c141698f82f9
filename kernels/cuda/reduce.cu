// Reductions with fp32 accumulation and a fixed reduction order (bitwise run-to-run reproducible on
// one GPU model): sum, sum_squares (one scalar) and sum_to (the backward of broadcasting).
// Floor: bytes of the input read once over copy bandwidth.
//  - sum / sum_squares: pass 1 runs a fixed grid (at most 1024 blocks); each thread accumulates its
//    8-element chunks, each block reduces by a fixed tree into one partial; pass 2, one block, sums the
//    partials in order. No float atomics.
//  - sum_to: the output's size-1 dims are reduced. The common case, a contiguous input whose leading dims
//    are reduced and trailing dims kept (a bias gradient: (N, D) -> (1, D)), is a column sum of an (R, K)
//    matrix: each thread adds 8 consecutive columns with 16-byte loads down a slice of rows, 8 slices per
//    block and `chunks` blocks along R, into fp32 partials (chunks, K) that column_sum adds in order.
//    A reduced middle dim with a unit-stride kept inner run ((A, R, K) strided, e.g. a slice of a key gradient):
//    a thread adds the R rows of 8 consecutive columns, reading the input in place (no permuted copy).
//    Other layouts: when the input's innermost dim is kept, the same scheme with one column per thread and
//    index arithmetic per element (v1's only path: 10% of copy bandwidth on the bias case); when it is
//    reduced (row sums), one warp per output reduces its contiguous run.
#include <algorithm>

#include "kernels/cuda/cuda_common.h"
#include "kernels/cuda/cuda_ops.h"

namespace latte::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int kMaxPartials = 1024;

// ---- sum / sum_squares --------------------------------------------------------------------------------

__global__ void sum_partials_kernel(float* partials, const void* in, int dt, int64_t n, bool squares, bool vec) {
  __shared__ float scratch[32];
  const int64_t nchunks = (n + 7) / 8;
  float acc = 0.f;
  for (int64_t c = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; c < nchunks;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    float v[8];
    load8_any(in, dt, c * 8, n, vec, v);
#pragma unroll
    for (int k = 0; k < 8; ++k) acc += squares ? v[k] * v[k] : v[k];
  }
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) partials[blockIdx.x] = acc;
}

// One block: sums `count` partials in a fixed order, writes out[0] (dtype dto).
__global__ void sum_final_kernel(void* out, int dto, const float* partials, int count) {
  __shared__ float scratch[32];
  float acc = 0.f;
  for (int i = threadIdx.x; i < count; i += blockDim.x) acc += partials[i];
  acc = block_sum(acc, scratch);
  if (threadIdx.x == 0) store1(out, dto, 0, acc);
}

void sum_impl(const Tensor& out, const Tensor& in, bool squares, const char* op) {
  LATTE_CHECK(out.numel() == 1, op, ": out must have one element, got ", out.shape().str());
  require_contiguous(in, op, "in");
  const int dto = float_code(out, op), dti = float_code(in, op);
  cudaStream_t stream = current_stream();
  const int64_t n = in.numel();
  if (n == 0) {
    fill(out, 0.0);
    return;
  }
  const int grid = static_cast<int>(blocks_for((n + 7) / 8, kThreads, kMaxPartials));
  Tensor partials = Tensor::empty({grid}, DType::F32, in.device());
  sum_partials_kernel<<<grid, kThreads, 0, stream>>>(partials.data<float>(), in.data_ptr(), dti, n, squares,
                                                     aligned16(in.data_ptr()));
  CUDA_CHECK_LAUNCH("sum_partials_kernel");
  sum_final_kernel<<<1, 1024, 0, stream>>>(out.data_ptr(), dto, partials.data<float>(), grid);
  CUDA_CHECK_LAUNCH("sum_final_kernel");
}

// ---- sum_to -----------------------------------------------------------------------------------------

// Index space of up to kMaxDims dims (row-major) with the input's strides.
struct Dims {
  int nd = 0;
  int64_t size[kMaxDims] = {};
  int64_t stride[kMaxDims] = {};
};

__device__ __forceinline__ int64_t dims_offset(const Dims& d, int64_t i) {
  int64_t off = 0;
#pragma unroll
  for (int k = kMaxDims - 1; k >= 0; --k) {  // constant indices: d stays in the parameter bank
    if (k >= d.nd) continue;
    int64_t q = i / d.size[k];
    off += (i - q * d.size[k]) * d.stride[k];
    i = q;
  }
  return off;
}

// Kept innermost: block (32, 8). partials[chunk * K + k] = sum over r in this chunk's range.
__global__ void sum_to_columns_kernel(float* partials, const void* in, int dt, Dims kept, Dims red, int64_t K,
                                      int64_t R, int64_t rows_per_chunk) {
  __shared__ float tile[8][33];
  const int64_t k = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk;
  const int64_t r1 = min(R, r0 + rows_per_chunk);
  float acc = 0.f;
  if (k < K) {
    const int64_t base = dims_offset(kept, k);
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) acc += load1(in, dt, base + dims_offset(red, r));
  }
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && k < K) {
    float s = 0.f;
#pragma unroll
    for (int y = 0; y < 8; ++y) s += tile[y][threadIdx.x];
    partials[static_cast<int64_t>(blockIdx.y) * K + k] = s;
  }
}

// Contiguous (R, K) -> partials (chunks, K): block (32, 8), thread x owns columns [8c, 8c + 8) of its
// block's 256, thread y takes rows r0 + y, r0 + y + 8, ... of the chunk [r0, r0 + rows_per_chunk).
__global__ void column_partials_kernel(float* partials, const void* in, int dt, int64_t R, int64_t K,
                                       int64_t rows_per_chunk, bool vec) {
  __shared__ float tile[8][32][9];
  const int64_t c = (static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x) * 8;
  const int64_t r0 = static_cast<int64_t>(blockIdx.y) * rows_per_chunk, r1 = min(R, r0 + rows_per_chunk);
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  if (c < K) {
    const int es = dt == kBF16 ? 2 : 4;
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      float v[8];
      load8_any(static_cast<const char*>(in) + r * K * es, dt, c, K, vec, v);
#pragma unroll
      for (int k = 0; k < 8; ++k) acc[k] += v[k];
    }
  }
#pragma unroll
  for (int k = 0; k < 8; ++k) tile[threadIdx.y][threadIdx.x][k] = acc[k];
  __syncthreads();
  if (threadIdx.y == 0 && c < K) {
#pragma unroll
    for (int k = 0; k < 8; ++k) {
      float s = 0.f;
#pragma unroll
      for (int y = 0; y < 8; ++y) s += tile[y][threadIdx.x][k];
      if (c + k < K) partials[static_cast<int64_t>(blockIdx.y) * K + c + k] = s;
    }
  }
}

// (A, R, K) with strides (sa, sr, 1) -> out (A, K): a reduced middle dim, e.g. the gradient of a rope key shared
// by the heads, read in place from the key gradient it is a slice of. A thread adds the R rows of 8 consecutive
// k of one a, in order (16-byte loads when `vec`).
__global__ void sum_middle_kernel(void* out, int dto, bool vec_out, const void* in, int dt, bool vec, int64_t A,
                                  int64_t sa, int64_t R, int64_t sr, int64_t K) {
  const int64_t per_row = (K + 7) / 8;
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= A * per_row) return;
  const int64_t a = t / per_row, k = (t - a * per_row) * 8;
  const int es = dt == kBF16 ? 2 : 4, eso = dto == kBF16 ? 2 : 4;
  const char* base = static_cast<const char*>(in) + a * sa * es;
  float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};
  for (int64_t r = 0; r < R; ++r) {
    float v[8];
    load8_any(base + r * sr * es, dt, k, K, vec, v);
#pragma unroll
    for (int e = 0; e < 8; ++e) acc[e] += v[e];
  }
  store8_any(static_cast<char*>(out) + a * K * eso, dto, k, K, vec_out, acc);
}

// Reduced innermost: one warp per output k.
__global__ void sum_to_rows_kernel(void* out, int dto, const void* in, int dt, Dims kept, Dims red, int64_t K,
                                   int64_t R) {
  const int64_t k = (static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  if (k >= K) return;
  const int64_t base = dims_offset(kept, k);
  float acc = 0.f;
  for (int64_t r = lane; r < R; r += 32) acc += load1(in, dt, base + dims_offset(red, r));
  acc = warp_sum(acc);
  if (lane == 0) store1(out, dto, k, acc);
}

// dst[c] (+)= sum_r partials[r, c]. Block (32, Y), Y = min(rows, 32): x over 32 columns, y splits the rows;
// the Y partial sums of a column are then added in y order. (Y = 32 for a handful of rows left most of each
// block idle: a one-row column sum of 0.5M columns took ~40 us of a 65 us sum_to.)
__global__ void column_sum_kernel(void* dst, int dt, const float* partials, int64_t rows, int64_t cols,
                                  bool accumulate) {
  __shared__ float tile[32][33];
  const int64_t c = static_cast<int64_t>(blockIdx.x) * 32 + threadIdx.x;
  float acc = 0.f;
  if (c < cols)
    for (int64_t r = threadIdx.y; r < rows; r += blockDim.y) acc += partials[r * cols + c];
  tile[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    float s = 0.f;
    for (int y = 0; y < static_cast<int>(blockDim.y); ++y) s += tile[y][threadIdx.x];
    if (accumulate) s += load1(dst, dt, c);
    store1(dst, dt, c, s);
  }
}

}  // namespace

void column_sum(void* dst, int dt, const float* partials, int64_t rows, int64_t cols, bool accumulate,
                cudaStream_t stream) {
  if (cols == 0) return;
  const unsigned y = static_cast<unsigned>(std::clamp<int64_t>(rows, 1, 32));
  column_sum_kernel<<<blocks_for(cols, 32), dim3(32, y), 0, stream>>>(dst, dt, partials, rows, cols, accumulate);
  CUDA_CHECK_LAUNCH("column_sum_kernel");
}

void sum(const Tensor& out, const Tensor& in) { sum_impl(out, in, false, "sum"); }

void sum_squares(const Tensor& out, const Tensor& in) { sum_impl(out, in, true, "sum_squares"); }

void sum_to(const Tensor& out, const Tensor& in) {
  LATTE_CHECK(out.dim() == in.dim(), "sum_to: out ", out.shape().str(), " must have the rank of in ", in.shape().str());
  require_contiguous(out, "sum_to", "out");
  const int dto = float_code(out, "sum_to"), dti = float_code(in, "sum_to");
  Dims kept, red;
  int innermost = -1;  // the input's last dim of size > 1
  for (int d = 0; d < in.dim(); ++d) {
    LATTE_CHECK(out.size(d) == in.size(d) || out.size(d) == 1, "sum_to: out ", out.shape().str(),
                " is not a reduction of ", in.shape().str());
    if (in.size(d) == 1) continue;
    innermost = d;
    Dims& target = out.size(d) == 1 ? red : kept;
    target.size[target.nd] = in.size(d);
    target.stride[target.nd] = in.stride(d);
    target.nd++;
  }
  const int64_t K = out.numel();
  if (K == 0) return;
  if (in.numel() == 0) {
    fill(out, 0.0);
    return;
  }
  if (red.nd == 0) {  // nothing to reduce
    copy(out, in.reshape(out.shape()));
    return;
  }
  if (kept.nd == 0 && in.is_contiguous()) {  // everything: the scalar sum
    sum(out, in);
    return;
  }
  const int64_t R = in.numel() / K;
  cudaStream_t stream = current_stream();
  // The input's dims of size > 1 as runs of one kind (kept / reduced) that are contiguous with each other.
  struct Run {
    int64_t size, stride;
    bool reduced;
  };
  std::vector<Run> runs;
  for (int d = 0; d < in.dim(); ++d) {
    if (in.size(d) == 1) continue;
    const bool reduced = out.size(d) == 1;
    if (!runs.empty() && runs.back().reduced == reduced && runs.back().stride == in.size(d) * in.stride(d)) {
      runs.back().size *= in.size(d);
      runs.back().stride = in.stride(d);
    } else {
      runs.push_back({in.size(d), in.stride(d), reduced});
    }
  }
  // Kept / reduced / kept with a unit-stride inner run (or a strided reduced / kept): the middle-dim kernel, with
  // enough threads to fill the GPU.
  const bool middle3 = runs.size() == 3 && !runs[0].reduced && runs[1].reduced && !runs[2].reduced;
  const bool middle2 = runs.size() == 2 && runs[0].reduced && !runs[1].reduced && !in.is_contiguous();
  if ((middle3 || middle2) && runs.back().stride == 1) {
    const Run outer = middle3 ? runs[0] : Run{1, 0, false}, red_run = runs[runs.size() - 2], inner = runs.back();
    const int64_t threads = outer.size * ((inner.size + 7) / 8);
    if (threads >= 16 * static_cast<int64_t>(sm_count())) {
      const bool vec = inner.size % 8 == 0 && outer.stride % 8 == 0 && red_run.stride % 8 == 0 && aligned16(in.data_ptr());
      const bool vec_out = inner.size % 8 == 0 && aligned16(out.data_ptr());
      sum_middle_kernel<<<blocks_for(threads, kThreads), kThreads, 0, stream>>>(
          out.data_ptr(), dto, vec_out, in.data_ptr(), dti, vec, outer.size, outer.stride, red_run.size, red_run.stride,
          inner.size);
      CUDA_CHECK_LAUNCH("sum_middle_kernel");
      return;
    }
  }
  // Leading dims reduced, trailing dims kept, input contiguous: an (R, K) column sum.
  bool leading = in.is_contiguous();
  for (int d = 0, seen_kept = 0; leading && d < in.dim(); ++d) {
    if (in.size(d) == 1) continue;
    if (out.size(d) != 1) seen_kept = 1;
    else if (seen_kept) leading = false;
  }
  if (leading) {
    const int64_t col_blocks = (K + 255) / 256;
    int64_t chunks = (4 * static_cast<int64_t>(sm_count()) + col_blocks - 1) / col_blocks;
    chunks = std::max<int64_t>(1, std::min<int64_t>({chunks, (R + 7) / 8, 1024}));
    const int64_t rows_per_chunk = (R + chunks - 1) / chunks;
    chunks = (R + rows_per_chunk - 1) / rows_per_chunk;
    Tensor partials = Tensor::empty({chunks, K}, DType::F32, in.device());
    const bool vec = K % 8 == 0 && aligned16(in.data_ptr());
    column_partials_kernel<<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)), dim3(32, 8), 0,
                             stream>>>(partials.data<float>(), in.data_ptr(), dti, R, K, rows_per_chunk, vec);
    CUDA_CHECK_LAUNCH("column_partials_kernel");
    column_sum(out.data_ptr(), dto, partials.data<float>(), chunks, K, false, stream);
    return;
  }
  const bool inner_kept = innermost >= 0 && out.size(innermost) != 1;
  if (!inner_kept) {
    sum_to_rows_kernel<<<blocks_for(K * 32, kThreads), kThreads, 0, stream>>>(out.data_ptr(), dto, in.data_ptr(), dti,
                                                                              kept, red, K, R);
    CUDA_CHECK_LAUNCH("sum_to_rows_kernel");
    return;
  }
  // Enough blocks to fill the GPU: split the reduction into `chunks` slices when K alone is too narrow.
  const int64_t col_blocks = (K + 31) / 32;
  int64_t chunks = (2 * static_cast<int64_t>(sm_count()) + col_blocks - 1) / col_blocks;
  chunks = std::max<int64_t>(1, std::min<int64_t>({chunks, (R + 7) / 8, 256}));
  const int64_t rows_per_chunk = (R + chunks - 1) / chunks;
  chunks = (R + rows_per_chunk - 1) / rows_per_chunk;
  Tensor partials = Tensor::empty({chunks, K}, DType::F32, in.device());
  sum_to_columns_kernel<<<dim3(static_cast<unsigned>(col_blocks), static_cast<unsigned>(chunks)), dim3(32, 8), 0,
                          stream>>>(partials.data<float>(), in.data_ptr(), dti, kept, red, K, R, rows_per_chunk);
  CUDA_CHECK_LAUNCH("sum_to_columns_kernel");
  column_sum(out.data_ptr(), dto, partials.data<float>(), chunks, K, false, stream);
}

}  // namespace latte::cuda
