/* The standalone CUDA benchmarks' error check (read_roof.cu, tma_roof.cu):
 * a failed runtime call prints where and why, and exits. */
#ifndef FP8GEMM_BENCH_CUDA_CHECK_H
#define FP8GEMM_BENCH_CUDA_CHECK_H

#include <cuda_runtime.h>
#include <stdio.h>
#include <stdlib.h>

#define CHECK(call)                                                                           \
  do {                                                                                        \
    cudaError_t err_ = (call);                                                                \
    if (err_ != cudaSuccess) {                                                                \
      fprintf(stderr, "%s:%d %s: %s\n", __FILE__, __LINE__, #call, cudaGetErrorString(err_)); \
      exit(1);                                                                                \
    }                                                                                         \
  } while (0)

#endif
