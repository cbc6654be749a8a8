/* Portable C kernels (FP8GEMM_ISA=generic, and any CPU without AVX2): the
 * same contracts as the AVX2 ones (cpu_internal.h), written plainly. FP8
 * bytes decode through the context's 256-entry table; the compiler may
 * vectorize the loops for the baseline ISA. */
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

#define GROUP FP8GEMM_BLOCK

void f8f32_gemm_6x16__scalar(size_t kc, const float *a, const float *a_scale, const float *b,
                             const float *b_scale, float *c, size_t ldc, int accumulate) {
  for (size_t k0 = 0; k0 < kc; k0 += GROUP) {
    const size_t kg = kc - k0 < GROUP ? kc - k0 : GROUP;
    float acc[CPU_GEMM_MR][CPU_GEMM_NR];
    /* Two 6x8 halves: 6x8 floats fit the 16 registers of baseline SSE2,
     * so the compiler keeps them there; the sums are the same. */
    for (int h = 0; h < CPU_GEMM_NR; h += 8) {
      float p0[8] = {0}, p1[8] = {0}, p2[8] = {0}, p3[8] = {0}, p4[8] = {0}, p5[8] = {0};
      for (size_t k = 0; k < kg; k++) {
        const float *ak = a + k0 + k; /* a is [6][kc] */
        const float *bk = b + (k0 + k) * CPU_GEMM_NR + h;
        const float a0 = ak[0], a1 = ak[kc], a2 = ak[2 * kc], a3 = ak[3 * kc], a4 = ak[4 * kc],
                    a5 = ak[5 * kc];
        for (int j = 0; j < 8; j++) {
          const float bj = bk[j];
          p0[j] += a0 * bj;
          p1[j] += a1 * bj;
          p2[j] += a2 * bj;
          p3[j] += a3 * bj;
          p4[j] += a4 * bj;
          p5[j] += a5 * bj;
        }
      }
      memcpy(&acc[0][h], p0, sizeof p0);
      memcpy(&acc[1][h], p1, sizeof p1);
      memcpy(&acc[2][h], p2, sizeof p2);
      memcpy(&acc[3][h], p3, sizeof p3);
      memcpy(&acc[4][h], p4, sizeof p4);
      memcpy(&acc[5][h], p5, sizeof p5);
    }
    const float sb = *b_scale++;
    for (int i = 0; i < CPU_GEMM_MR; i++) {
      const float s = a_scale[i] * sb;
      float *ci = c + (size_t)i * ldc;
      for (int j = 0; j < CPU_GEMM_NR; j++) ci[j] = accumulate ? ci[j] + s * acc[i][j] : s * acc[i][j];
    }
    a_scale += CPU_GEMM_MR;
    accumulate = 1;
  }
}

void f8_pack_b_16_preshuffled__scalar(size_t kc, size_t rows, const uint8_t *src, float *b,
                                      const float *lut) {
  for (size_t k = 0; k < kc; k++) {
    size_t r = 0;
    for (; r < rows; r++) b[k * CPU_GEMM_NR + r] = lut[src[k * rows + r]];
    for (; r < CPU_GEMM_NR; r++) b[k * CPU_GEMM_NR + r] = 0.0f;
  }
}

void f8_pack_b_16_plain__scalar(size_t kc, size_t rows, const uint8_t *src, size_t ld, float *b,
                                const float *lut) {
  for (size_t k = 0; k < kc; k++) {
    size_t r = 0;
    for (; r < rows; r++) b[k * CPU_GEMM_NR + r] = lut[src[r * ld + k]];
    for (; r < CPU_GEMM_NR; r++) b[k * CPU_GEMM_NR + r] = 0.0f;
  }
}

void f8f32_gemv_6x16_preshuffled__scalar(size_t rows, size_t K, const uint8_t *panel,
                                         const float *xd, size_t ldxd, const float *xs,
                                         size_t ldxs, const float *ws, float *out,
                                         const float *lut) {
  float y[CPU_GEMV_MAX_ROWS][16];
  memset(y, 0, sizeof y);
  for (size_t k0 = 0, g = 0; k0 < K; k0 += GROUP, g++) {
    const size_t kg = K - k0 < GROUP ? K - k0 : GROUP;
    float acc[CPU_GEMV_MAX_ROWS][16];
    memset(acc, 0, sizeof acc);
    for (size_t k = k0; k < k0 + kg; k++) {
      float wk[16];
      for (int j = 0; j < 16; j++) wk[j] = lut[panel[k * 16 + j]];
      for (size_t r = 0; r < rows; r++) {
        const float xv = xd[r * ldxd + k];
        for (int j = 0; j < 16; j++) acc[r][j] += xv * wk[j];
      }
    }
    for (size_t r = 0; r < rows; r++) {
      const float s = xs[r * ldxs + g] * ws[g];
      for (int j = 0; j < 16; j++) y[r][j] += s * acc[r][j];
    }
  }
  for (size_t r = 0; r < rows; r++) memcpy(out + r * 16, y[r], sizeof y[r]);
}

void f8f32_gemv_6x4_plain__scalar(size_t rows, size_t wrows, size_t K, const uint8_t *w,
                                  size_t ldw, const float *xd, size_t ldxd, const float *xs,
                                  size_t ldxs, const float *ws, float *out, const float *lut) {
  float y[CPU_GEMV_MAX_ROWS][CPU_GEMV_PLAIN_WROWS];
  memset(y, 0, sizeof y);
  for (size_t k0 = 0, g = 0; k0 < K; k0 += GROUP, g++) {
    const size_t kg = K - k0 < GROUP ? K - k0 : GROUP;
    for (size_t j = 0; j < wrows; j++) {
      const uint8_t *wj = w + j * ldw;
      for (size_t r = 0; r < rows; r++) {
        const float *xr = xd + r * ldxd;
        float acc = 0.0f;
        for (size_t k = k0; k < k0 + kg; k++) acc += xr[k] * lut[wj[k]];
        y[r][j] += (xs[r * ldxs + g] * ws[g]) * acc;
      }
    }
  }
  for (size_t r = 0; r < rows; r++)
    for (size_t j = 0; j < CPU_GEMV_PLAIN_WROWS; j++) out[r * CPU_GEMV_PLAIN_WROWS + j] = y[r][j];
}

static void decode_row_scalar(size_t count, const uint8_t *src, float *dst, const float *lut) {
  for (size_t i = 0; i < count; i++) dst[i] = lut[src[i]] * 65536.0f; /* value * 256, exact */
}

void f32_store_tile__scalar(size_t rows, size_t cols, const float *c, size_t ldc,
                            const float *bias, fp8gemm_dtype y_dtype, void *y, size_t ldy) {
  const size_t elem = fp8gemm_dtype_size(y_dtype);
  for (size_t i = 0; i < rows; i++) {
    void *yrow = (char *)y + i * ldy * elem;
    for (size_t j = 0; j < cols; j++) {
      const float v = bias ? c[i * ldc + j] + bias[j] : c[i * ldc + j];
      fp8gemm_store_from_float(y_dtype, yrow, j, v);
    }
  }
}

static void transpose_16x16_scalar(size_t blocks, const uint8_t *src, size_t src_ld,
                                   size_t src_step, uint8_t *dst, size_t dst_ld, size_t dst_step) {
  for (size_t b = 0; b < blocks; b++) {
    const uint8_t *s = src + b * src_step;
    uint8_t *d = dst + b * dst_step;
    for (size_t i = 0; i < 16; i++)
      for (size_t j = 0; j < 16; j++) d[j * dst_ld + i] = s[i * src_ld + j];
  }
}

static size_t find_nan_code_scalar(size_t count, const uint8_t *data) {
  const uint64_t low7 = 0x7F7F7F7F7F7F7F7Full, ones = 0x0101010101010101ull,
                 high = 0x8080808080808080ull;
  size_t i = 0;
  for (; i + 8 <= count; i += 8) {
    uint64_t word;
    memcpy(&word, data + i, sizeof word);
    /* A byte whose low 7 bits are all ones carries into its bit 7. */
    if (((word & low7) + ones) & high) break;
  }
  for (; i < count; i++)
    if ((data[i] & 0x7F) == 0x7F) return i;
  return SIZE_MAX;
}

static void quantize_row_scalar(size_t K, fp8gemm_dtype x_dtype, const void *x_row,
                                uint8_t *xq_row, float *scales, size_t scale_stride) {
  fp8gemm_quantize_activation_row_host(K, x_dtype, x_row, xq_row, scales, scale_stride);
}

static bool block_amax_scalar(size_t rows, size_t cols, fp8gemm_dtype w_dtype, const void *w,
                              size_t ldw, float *amax_out) {
  float amax = 0.0f;
  for (size_t r = 0; r < rows; r++)
    for (size_t j = 0; j < cols; j++) {
      const float v = fp8gemm_load_as_float(w_dtype, w, r * ldw + j);
      if (!isfinite(v)) return false;
      if (fabsf(v) > amax) amax = fabsf(v);
    }
  *amax_out = amax;
  return true;
}

static void quantize_span_scalar(size_t cols, fp8gemm_dtype w_dtype, const void *w, float scale,
                                 uint8_t *q) {
  for (size_t j = 0; j < cols; j++)
    q[j] = fp8gemm_e4m3fn_from_float(fp8gemm_load_as_float(w_dtype, w, j) / scale);
}

const cpu_kernels cpu_kernels_scalar = {
    .isa_name = "generic",
    .gemm_6x16 = f8f32_gemm_6x16__scalar,
    .pack_b_preshuffled = f8_pack_b_16_preshuffled__scalar,
    .pack_b_plain = f8_pack_b_16_plain__scalar,
    .gemv_preshuffled = f8f32_gemv_6x16_preshuffled__scalar,
    .gemv_plain = f8f32_gemv_6x4_plain__scalar,
    .decode_row = decode_row_scalar,
    .store_tile = f32_store_tile__scalar,
    .transpose_16x16 = transpose_16x16_scalar,
    .transpose_16x16_stream = transpose_16x16_scalar,
    .find_nan_code = find_nan_code_scalar,
    .quantize_row = quantize_row_scalar,
    .block_amax = block_amax_scalar,
    .quantize_span = quantize_span_scalar,
};
