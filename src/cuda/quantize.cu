/* CUDA kernels around the GEMMs: 1x128 activation quantization (one pass,
 * either scale layout), 128x128 weight quantization, the NaN-code check of
 * a weight, layout reorders (in place through scratch), scale-layout
 * conversion. */
#include <stdint.h>

#include "cuda_internal.h"
#include "device_common.cuh"
#include "hopper_ptx.cuh"

namespace {

constexpr int kWarpsPerBlock = 8;

__global__ void quantize_activations_kernel(size_t M, size_t K, fp8gemm_dtype x_dtype,
                                            const void *x, size_t ldx, uint8_t *xq, size_t ldq,
                                            float *x_scale, size_t stride_m, size_t stride_g) {
  /* A GEMM launched after this kernel with programmatic dependent launch may
   * start streaming its weight now; it waits for this grid before reading
   * xq. This kernel may itself start early (launched the same way): it
   * reads x and writes xq only after the kernel ahead of it has ended. */
  griddep_launch_dependents();
  griddep_wait();
  const size_t groups = (K + 127) / 128;
  const int lane = threadIdx.x % 32;
  const size_t elem = fp8gemm_dtype_size_device(x_dtype);
  for (size_t item = (size_t)blockIdx.x * kWarpsPerBlock + threadIdx.x / 32; item < M * groups;
       item += (size_t)gridDim.x * kWarpsPerBlock) {
    const size_t m = item / groups, g = item % groups;
    const int width = (int)min((size_t)128, K - g * 128);
    const char *src = static_cast<const char *>(x) + (m * ldx + g * 128) * elem;
    uint8_t *dst = xq + m * ldq + g * 128;
    const float scale = quantize_group_warp(x_dtype, src, width, lane,
                                            [&](int i, uint8_t code) { dst[i] = code; });
    if (lane == 0) x_scale[m * stride_m + g * stride_g] = scale;
  }
}

/* One CTA per 128x128 block: amax (refusing non-finite input), scale, codes. */
__global__ void quantize_weight_kernel(size_t N, size_t K, fp8gemm_dtype w_dtype, const void *w,
                                       size_t ldw, uint8_t *wq, float *scale_inv,
                                       int *nonfinite_flag) {
  __shared__ float warp_amax[kWarpsPerBlock];
  __shared__ int warp_bad[kWarpsPerBlock];
  const size_t groups_k = (K + 127) / 128;
  const size_t nb = blockIdx.x / groups_k, kb = blockIdx.x % groups_k;
  const size_t n0 = nb * 128, k0 = kb * 128;
  const int rows = (int)min((size_t)128, N - n0), cols = (int)min((size_t)128, K - k0);
  float amax = 0.0f;
  int bad = 0;
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x) {
    const float v = load_element(w_dtype, w, (n0 + i / cols) * ldw + k0 + i % cols);
    if (!isfinite(v)) bad = 1;
    else amax = fmaxf(amax, fabsf(v));
  }
  amax = warp_max(amax);
  bad = __any_sync(0xffffffffu, bad);
  if (threadIdx.x % 32 == 0) {
    warp_amax[threadIdx.x / 32] = amax;
    warp_bad[threadIdx.x / 32] = bad;
  }
  __syncthreads();
  amax = 0.0f;
  bad = 0;
  for (int i = 0; i < kWarpsPerBlock; i++) {
    amax = fmaxf(amax, warp_amax[i]);
    bad |= warp_bad[i];
  }
  if (bad) {
    if (threadIdx.x == 0) atomicExch(nonfinite_flag, 1);
    return;
  }
  const float scale = fmaxf(amax, FP8GEMM_SCALE_EPS) / FP8GEMM_E4M3_MAX;
  if (threadIdx.x == 0) scale_inv[blockIdx.x] = scale;
  for (int i = threadIdx.x; i < rows * cols; i += blockDim.x) {
    const size_t n = n0 + i / cols, k = k0 + i % cols;
    wq[n * K + k] = e4m3_from_float(__fdiv_rn(load_element(w_dtype, w, n * ldw + k), scale));
  }
}

__global__ void find_nan_codes_kernel(const uint8_t *data, size_t bytes,
                                      unsigned long long *first_bad) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < bytes; i += stride) {
    const uint8_t code = data[i];
    if ((code & 0x7F) == 0x7F) atomicMin(first_bad, (unsigned long long)i);
  }
}

/* The byte offset of (n, k) in each layout; the single definitions are in
 * src/core/layout*.c, and the tests check these agree with them. */
__device__ __forceinline__ size_t layout_offset(fp8gemm_layout layout, size_t N, size_t K,
                                                size_t n, size_t k) {
  switch (layout) {
    case FP8GEMM_LAYOUT_PRESHUFFLED_CPU: {
      const size_t panel = n / 16;
      const size_t rows = min((size_t)16, N - panel * 16);
      return panel * 16 * K + k * rows + n % 16;
    }
    case FP8GEMM_LAYOUT_PRESHUFFLED_SM90: {
      const size_t block_row = n / 128, row = n % 128;
      const size_t rows = min((size_t)128, N - block_row * 128);
      const size_t tile = k / 128, col = k % 128;
      const size_t width = min((size_t)128, K - tile * 128);
      const size_t base = block_row * 128 * K + tile * 128 * rows;
      if (width < 128) return base + row * width + col;
      return base + row * 128 + (((col / 16) ^ (row % 8)) * 16) + col % 16;
    }
    case FP8GEMM_LAYOUT_AITER16X16:
      return (n / 16) * 16 * K + (k / 32) * 512 + ((k / 16) % 2) * 256 + (n % 16) * 16 + (k % 16);
    case FP8GEMM_LAYOUT_PLAIN:
    default: return n * K + k;
  }
}

/* Reads in source order (coalesced), writes wherever the target puts it. */
__global__ void reorder_kernel(size_t N, size_t K, fp8gemm_layout from, const uint8_t *src,
                               fp8gemm_layout to, uint8_t *dst) {
  const size_t total = N * K;
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += stride) {
    const size_t n = i / K, k = i % K;
    dst[layout_offset(to, N, K, n, k)] = src[layout_offset(from, N, K, n, k)];
  }
}

__global__ void convert_scales_kernel(size_t M, size_t groups, const float *src, size_t src_sm,
                                      size_t src_sg, float *dst, size_t dst_sm, size_t dst_sg) {
  const size_t stride = (size_t)gridDim.x * blockDim.x;
  for (size_t i = (size_t)blockIdx.x * blockDim.x + threadIdx.x; i < M * groups; i += stride) {
    const size_t m = i / groups, g = i % groups;
    dst[m * dst_sm + g * dst_sg] = src[m * src_sm + g * src_sg];
  }
}

unsigned int grid_for(size_t items, unsigned int per_block, unsigned int cap) {
  const size_t blocks = (items + per_block - 1) / per_block;
  return (unsigned int)(blocks < cap ? (blocks ? blocks : 1) : cap);
}

void scale_strides(fp8gemm_scale_layout layout, size_t ld, size_t *stride_m, size_t *stride_g) {
  *stride_m = layout == FP8GEMM_SCALE_ROW_MAJOR ? ld : 1;
  *stride_g = layout == FP8GEMM_SCALE_ROW_MAJOR ? 1 : ld;
}

}  // namespace

extern "C" fp8gemm_status fp8gemm_cuda_quantize_activations(
    fp8gemm_cuda_state *s, size_t M, size_t K, fp8gemm_dtype x_dtype, const void *x, size_t ldx,
    uint8_t *xq, size_t ldq, float *x_scale, fp8gemm_scale_layout scale_layout, size_t scale_ld) {
  size_t stride_m, stride_g;
  scale_strides(scale_layout, scale_ld, &stride_m, &stride_g);
  const size_t items = M * ((K + 127) / 128);
  fp8gemm_cuda_launch launch;
  fp8gemm_cuda_launch_init(&launch, s, grid_for(items, kWarpsPerBlock, 1u << 20), kWarpsPerBlock * 32,
                           0, 1, 0);
  FP8GEMM_CUDA_TRY(cudaLaunchKernelEx(&launch.config, quantize_activations_kernel, M, K, x_dtype, x, ldx,
                                      xq, ldq, x_scale, stride_m, stride_g),
                   "quantize_activations kernel launch");
  return fp8gemm_cuda_check(cudaGetLastError(), "quantize_activations kernel launch");
}

extern "C" fp8gemm_status fp8gemm_cuda_quantize_weight(fp8gemm_cuda_state *s, size_t N, size_t K,
                                                       fp8gemm_dtype w_dtype, const void *w,
                                                       size_t ldw, uint8_t *wq,
                                                       float *weight_scale_inv) {
  const size_t blocks = ((N + 127) / 128) * ((K + 127) / 128);
  if (blocks > 0x7fffffffu)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "quantize_weight: %zu blocks of 128x128 exceed one launch", blocks);
  FP8GEMM_CUDA_TRY(cudaMemsetAsync(s->error_flag, 0, sizeof(int), s->stream),
                   "quantize_weight: clearing the error flag");
  quantize_weight_kernel<<<(unsigned int)blocks, kWarpsPerBlock * 32, 0, s->stream>>>(
      N, K, w_dtype, w, ldw, wq, weight_scale_inv, s->error_flag);
  FP8GEMM_CUDA_TRY(cudaGetLastError(), "quantize_weight kernel launch");
  int flag = 0;
  FP8GEMM_CUDA_TRY(cudaMemcpyAsync(&flag, s->error_flag, sizeof(int), cudaMemcpyDeviceToHost,
                                   s->stream),
                   "quantize_weight: reading the error flag");
  FP8GEMM_CUDA_TRY(cudaStreamSynchronize(s->stream), "quantize_weight: synchronize");
  if (flag)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "quantize_weight: w [N=%zu, K=%zu] holds NaN or Inf", N, K);
  return FP8GEMM_OK;
}

extern "C" fp8gemm_status fp8gemm_cuda_check_weight_codes(fp8gemm_cuda_state *s,
                                                          const uint8_t *data, size_t N, size_t K) {
  const unsigned long long none = ~0ull;
  FP8GEMM_CUDA_TRY(cudaMemcpyAsync(s->first_bad_index, &none, sizeof none, cudaMemcpyHostToDevice,
                                   s->stream),
                   "check_weight_codes: init");
  find_nan_codes_kernel<<<grid_for(N * K, 256, (unsigned)s->sm_count * 8), 256, 0, s->stream>>>(
      data, N * K, s->first_bad_index);
  FP8GEMM_CUDA_TRY(cudaGetLastError(), "check_weight_codes kernel launch");
  unsigned long long first = none;
  FP8GEMM_CUDA_TRY(cudaMemcpyAsync(&first, s->first_bad_index, sizeof first,
                                   cudaMemcpyDeviceToHost, s->stream),
                   "check_weight_codes: read back");
  FP8GEMM_CUDA_TRY(cudaStreamSynchronize(s->stream), "check_weight_codes: synchronize");
  if (first != none)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "weight [N=%zu, K=%zu] holds a NaN code at byte offset %llu "
                             "(row %llu, column %llu in row-major order)",
                             N, K, first, first / K, first % K);
  return FP8GEMM_OK;
}

extern "C" fp8gemm_status fp8gemm_cuda_shuffle(fp8gemm_cuda_state *s, size_t N, size_t K,
                                               fp8gemm_layout from, const uint8_t *src,
                                               fp8gemm_layout to, uint8_t *dst) {
  const size_t bytes = N * K;
  if (from == to) {
    if (src != dst)
      FP8GEMM_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, s->stream),
                       "shuffle: copy");
    return FP8GEMM_OK;
  }
  /* In place goes through a scratch copy (a load-time step, so allocating
   * here is fine). */
  uint8_t *scratch = NULL;
  const uint8_t *source = src;
  if (src == dst) {
    FP8GEMM_CUDA_TRY(cudaMalloc((void **)&scratch, bytes), "shuffle: scratch allocation");
    cudaError_t err = cudaMemcpyAsync(scratch, src, bytes, cudaMemcpyDeviceToDevice, s->stream);
    if (err != cudaSuccess) {
      cudaFree(scratch);
      return fp8gemm_cuda_check(err, "shuffle: copy to scratch");
    }
    source = scratch;
  }
  reorder_kernel<<<grid_for(bytes, 256, (unsigned)s->sm_count * 16), 256, 0, s->stream>>>(
      N, K, from, source, to, dst);
  cudaError_t err = cudaGetLastError();
  if (scratch) {
    /* The scratch must outlive the kernel. */
    if (err == cudaSuccess) err = cudaStreamSynchronize(s->stream);
    cudaFree(scratch);
  }
  return fp8gemm_cuda_check(err, "shuffle kernel");
}

extern "C" fp8gemm_status fp8gemm_cuda_convert_scales(fp8gemm_cuda_state *s, size_t M,
                                                      size_t groups, const float *src,
                                                      fp8gemm_scale_layout src_layout,
                                                      size_t src_ld, float *dst,
                                                      fp8gemm_scale_layout dst_layout,
                                                      size_t dst_ld) {
  size_t src_sm, src_sg, dst_sm, dst_sg;
  scale_strides(src_layout, src_ld, &src_sm, &src_sg);
  scale_strides(dst_layout, dst_ld, &dst_sm, &dst_sg);
  convert_scales_kernel<<<grid_for(M * groups, 256, 4096), 256, 0, s->stream>>>(
      M, groups, src, src_sm, src_sg, dst, dst_sm, dst_sg);
  return fp8gemm_cuda_check(cudaGetLastError(), "convert_scales kernel launch");
}
