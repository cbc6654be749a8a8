/* The oracle: a scalar GEMM with fp64 accumulation that reads any weight
 * layout through its index function, and the scalar definition of the
 * activation quantizer that the backends must match bit for bit. */
#include <math.h>
#include <stdlib.h>

#include "internal.h"

void fp8gemm_quantize_activation_row_host(size_t K, fp8gemm_dtype x_dtype, const void *x_row,
                                          uint8_t *xq_row, float *scales, size_t scale_stride) {
  const size_t groups = fp8gemm_ceil_div(K, FP8GEMM_BLOCK);
  for (size_t g = 0; g < groups; g++) {
    const size_t begin = g * FP8GEMM_BLOCK;
    const size_t end = begin + FP8GEMM_BLOCK < K ? begin + FP8GEMM_BLOCK : K;
    float amax = 0.0f;
    bool finite = true;
    for (size_t k = begin; k < end; k++) {
      const float v = fp8gemm_load_as_float(x_dtype, x_row, k);
      if (!isfinite(v)) finite = false;
      else if (fabsf(v) > amax) amax = fabsf(v);
    }
    if (!finite) {
      scales[g * scale_stride] = NAN;
      for (size_t k = begin; k < end; k++) xq_row[k] = 0x7F;
      continue;
    }
    const float scale = fmaxf(amax, 1e-10f) / 448.0f;
    scales[g * scale_stride] = scale;
    for (size_t k = begin; k < end; k++)
      xq_row[k] = fp8gemm_e4m3fn_from_float(fp8gemm_load_as_float(x_dtype, x_row, k) / scale);
  }
}

fp8gemm_status fp8gemm_gemm_reference(size_t M, size_t N, size_t K, const uint8_t *xq, size_t ldq,
                                      const float *x_scale, fp8gemm_scale_layout scale_layout,
                                      size_t scale_ld, const uint8_t *w, fp8gemm_layout w_layout,
                                      const float *weight_scale_inv, const float *bias, double *y,
                                      size_t ldy) {
  FP8GEMM_CHECK_NOT_NULL(xq);
  FP8GEMM_CHECK_NOT_NULL(x_scale);
  FP8GEMM_CHECK_NOT_NULL(w);
  FP8GEMM_CHECK_NOT_NULL(weight_scale_inv);
  FP8GEMM_CHECK_NOT_NULL(y);
  if (M == 0 || M > FP8GEMM_MAX_DIM)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: M=%zu must be in [1, 2^31]",
                             __func__, M);
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_layout_check(w_layout, N, K));
  if (K % 16 != 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "%s: K=%zu must be a multiple of 16", __func__, K);
  if (ldq < K)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: ldq=%zu < K=%zu", __func__,
                             ldq, K);
  if (ldy < N)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: ldy=%zu < N=%zu", __func__,
                             ldy, N);
  const size_t groups = fp8gemm_ceil_div(K, FP8GEMM_BLOCK);
  if (scale_layout == FP8GEMM_SCALE_ROW_MAJOR) {
    if (scale_ld < groups)
      return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                               "%s: row-major scale_ld=%zu < ceil(K/128)=%zu", __func__,
                               scale_ld, groups);
  } else if (scale_layout == FP8GEMM_SCALE_M_MAJOR) {
    if (scale_ld < M)
      return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                               "%s: M-major scale_ld=%zu < M=%zu", __func__, scale_ld, M);
  } else {
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: scale_layout=%d is unknown",
                             __func__, (int)scale_layout);
  }

  double decode[256];
  for (int c = 0; c < 256; c++) decode[c] = (double)fp8gemm_e4m3fn_to_float((uint8_t)c);
  double *w_row = malloc(K * sizeof *w_row);
  if (!w_row) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "%s: %zu bytes", __func__, K * sizeof *w_row);
  const size_t scale_cols = groups;
  for (size_t n = 0; n < N; n++) {
    for (size_t k = 0; k < K; k++)
      w_row[k] = decode[w[fp8gemm_layout_offset_unchecked(w_layout, N, K, n, k)]];
    for (size_t m = 0; m < M; m++) {
      const uint8_t *x_row = xq + m * ldq;
      double acc = 0.0;
      for (size_t g = 0; g < groups; g++) {
        const size_t end = (g + 1) * FP8GEMM_BLOCK < K ? (g + 1) * FP8GEMM_BLOCK : K;
        double part = 0.0;
        for (size_t k = g * FP8GEMM_BLOCK; k < end; k++) part += decode[x_row[k]] * w_row[k];
        const float sx = scale_layout == FP8GEMM_SCALE_ROW_MAJOR ? x_scale[m * scale_ld + g]
                                                                  : x_scale[g * scale_ld + m];
        acc += part * (double)sx * (double)weight_scale_inv[(n / FP8GEMM_BLOCK) * scale_cols + g];
      }
      if (bias) acc += (double)bias[n];
      y[m * ldy + n] = acc;
    }
  }
  free(w_row);
  return FP8GEMM_OK;
}
