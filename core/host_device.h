// LATTE_HD marks a function that host code and CUDA kernels both call: forced inline on the device, plain inline
// on the host, so a header that uses it also compiles in C++-only translation units (and their tests run in CI,
// where no GPU is).
#pragma once

#if defined(__CUDACC__)
#define LATTE_HD __host__ __device__ __forceinline__
#else
#define LATTE_HD inline
#endif
