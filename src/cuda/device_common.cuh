/* Device helpers shared by the CUDA kernels: element loads and stores by
 * dtype, the 1x128 group quantizer (one warp per group, the single
 * definition the standalone quantizer and the fused linear both use), and
 * the e4m3 encoder. */
#ifndef FP8GEMM_CUDA_DEVICE_COMMON_CUH
#define FP8GEMM_CUDA_DEVICE_COMMON_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <stdint.h>

#include "fp8gemm.h"

#define FP8GEMM_E4M3_MAX 448.0f
#define FP8GEMM_SCALE_EPS 1e-10f
#define FP8GEMM_E4M3_NAN_CODE 0x7F

static __device__ __forceinline__ size_t fp8gemm_dtype_size_device(fp8gemm_dtype dtype) {
  return dtype == FP8GEMM_DTYPE_F32 ? 4 : 2;
}

static __device__ __forceinline__ float load_element(fp8gemm_dtype dtype, const void *base,
                                                     size_t index) {
  if (dtype == FP8GEMM_DTYPE_BF16)
    return __bfloat162float(static_cast<const __nv_bfloat16 *>(base)[index]);
  if (dtype == FP8GEMM_DTYPE_F16) return __half2float(static_cast<const __half *>(base)[index]);
  return static_cast<const float *>(base)[index];
}

static __device__ __forceinline__ void store_element(fp8gemm_dtype dtype, void *base,
                                                     size_t index, float value) {
  if (dtype == FP8GEMM_DTYPE_BF16)
    static_cast<__nv_bfloat16 *>(base)[index] = __float2bfloat16_rn(value);
  else if (dtype == FP8GEMM_DTYPE_F16)
    static_cast<__half *>(base)[index] = __float2half_rn(value);
  else
    static_cast<float *>(base)[index] = value;
}

/* Two adjacent outputs (index even when `paired`): one 4- or 8-byte store. */
static __device__ __forceinline__ void store_pair(fp8gemm_dtype dtype, void *base, size_t index,
                                                  float v0, float v1, bool second_valid,
                                                  bool paired) {
  if (paired && second_valid) {
    if (dtype == FP8GEMM_DTYPE_BF16) {
      *reinterpret_cast<__nv_bfloat162 *>(static_cast<__nv_bfloat16 *>(base) + index) =
          __floats2bfloat162_rn(v0, v1);
    } else if (dtype == FP8GEMM_DTYPE_F16) {
      *reinterpret_cast<__half2 *>(static_cast<__half *>(base) + index) = __floats2half2_rn(v0, v1);
    } else {
      *reinterpret_cast<float2 *>(static_cast<float *>(base) + index) = make_float2(v0, v1);
    }
    return;
  }
  store_element(dtype, base, index, v0);
  if (second_valid) store_element(dtype, base, index + 1, v1);
}

/* Stores y(m, n .. n + 7) = v + bias (rows ldy apart, columns below N):
 * one 16-byte store where the run is whole and aligned (two for fp32),
 * else element by element. */
static __device__ __forceinline__ void store_run8(fp8gemm_dtype y_dtype, void *y, size_t ldy, int N,
                                                  const float *bias, int m, int n, const float v[8]) {
  float o[8];
#pragma unroll
  for (int i = 0; i < 8; i++) o[i] = v[i] + (bias && n + i < N ? __ldg(bias + n + i) : 0.0f);
  const size_t at = (size_t)m * ldy + n;
  if (y_dtype == FP8GEMM_DTYPE_F32 && n + 8 <= N &&
      ((uintptr_t)(static_cast<float *>(y) + at) & 15) == 0) {
    float4 *dst = reinterpret_cast<float4 *>(static_cast<float *>(y) + at);
    dst[0] = make_float4(o[0], o[1], o[2], o[3]);
    dst[1] = make_float4(o[4], o[5], o[6], o[7]);
    return;
  }
  if (y_dtype != FP8GEMM_DTYPE_F32 && n + 8 <= N &&
      ((uintptr_t)(static_cast<uint16_t *>(y) + at) & 15) == 0) {
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; i++) {
      if (y_dtype == FP8GEMM_DTYPE_BF16) {
        const __nv_bfloat162 h = __floats2bfloat162_rn(o[2 * i], o[2 * i + 1]);
        w[i] = *reinterpret_cast<const uint32_t *>(&h);
      } else {
        const __half2 h = __floats2half2_rn(o[2 * i], o[2 * i + 1]);
        w[i] = *reinterpret_cast<const uint32_t *>(&h);
      }
    }
    *reinterpret_cast<uint4 *>(static_cast<uint16_t *>(y) + at) = make_uint4(w[0], w[1], w[2], w[3]);
    return;
  }
#pragma unroll
  for (int i = 0; i < 8; i++)
    if (n + i < N) store_element(y_dtype, y, at + i, o[i]);
}

/* Round to nearest even, saturate to +-448, NaN -> NaN (the CPU codec). */
static __device__ __forceinline__ uint8_t e4m3_from_float(float value) {
  return static_cast<uint8_t>(__nv_cvt_float_to_fp8(value, __NV_SATFINITE, __NV_E4M3));
}

static __device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = 16; offset > 0; offset >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, offset));
  return v;
}

/* Quantizes one 1x128 group (width <= 128 values starting at `src`) with a
 * whole warp: lane l owns values l, l+32, l+64, l+96 (coalesced loads and
 * byte stores). Writes codes through `put(i, code)` and returns the scale:
 * s = max(amax, 1e-10) / 448, q = e4m3(x / s); a group holding NaN or Inf
 * gets scale NaN and NaN codes (the definition in fp8gemm.h). */
template <typename Put>
static __device__ __forceinline__ float quantize_group_warp(fp8gemm_dtype dtype, const void *src,
                                                            int width, int lane, Put put) {
  float v[4];
  float amax = 0.0f;
  bool finite = true;
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int idx = lane + 32 * i;
    v[i] = idx < width ? load_element(dtype, src, idx) : 0.0f;
    if (!isfinite(v[i])) finite = false;
    else amax = fmaxf(amax, fabsf(v[i]));
  }
  amax = warp_max(amax);
  const bool group_finite = __all_sync(0xffffffffu, finite);
  const float scale = group_finite ? fmaxf(amax, FP8GEMM_SCALE_EPS) / FP8GEMM_E4M3_MAX : __int_as_float(0x7fc00000);
#pragma unroll
  for (int i = 0; i < 4; i++) {
    const int idx = lane + 32 * i;
    if (idx < width)
      put(idx, group_finite ? e4m3_from_float(__fdiv_rn(v[i], scale)) : (uint8_t)FP8GEMM_E4M3_NAN_CODE);
  }
  return scale;
}

#endif
