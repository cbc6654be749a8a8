/* Helpers shared by the CPU backend tests (header-only: each test is one
 * executable). Outputs are checked through poisoned, guarded buffers: every
 * element the call must write starts as a NaN with a recognizable payload,
 * and a frame of the same pattern around it must survive untouched. */
#ifndef FP8GEMM_CPU_TESTING_H
#define FP8GEMM_CPU_TESTING_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/cpu_internal.h"
#include "testutil.h"

#define CT_POISON32 0x7FBADBADu /* a NaN no kernel produces from finite data */
#define CT_POISON16 0x7DBDu     /* NaN in both bf16 and f16 */

/* A context with the ISA from the environment (ctest runs each test with
 * the detected ISA and with FP8GEMM_ISA=generic) and `threads` threads
 * (0 = default). */
static inline fp8gemm_context *ct_context(int threads) {
  fp8gemm_context_options o;
  fp8gemm_context_options_init(&o);
  o.num_threads = threads;
  fp8gemm_context *ctx = NULL;
  TU_OK(fp8gemm_context_create(&o, &ctx));
  return ctx;
}

/* Random e4m3fn codes over the whole finite range (never NaN). */
static inline void ct_fill_codes(tu_rng *rng, uint8_t *dst, size_t count) {
  for (size_t i = 0; i < count; i++) {
    uint8_t c = (uint8_t)tu_next(rng);
    if ((c & 0x7F) == 0x7F) c ^= 0x01;
    dst[i] = c;
  }
}

/* A guarded output: rows [M + 2] x ld elements, the output at row 1,
 * columns [0, N); ld > N leaves guard columns. */
typedef struct ct_output {
  size_t M, N, ld, elem;
  fp8gemm_dtype dtype;
  unsigned char *base;
} ct_output;

static inline void ct_output_make(ct_output *o, size_t M, size_t N, size_t pad, fp8gemm_dtype dtype) {
  o->M = M;
  o->N = N;
  o->ld = N + pad;
  o->dtype = dtype;
  o->elem = fp8gemm_dtype_size(dtype);
  o->base = tu_malloc((M + 2) * o->ld * o->elem);
  const size_t count = (M + 2) * o->ld;
  for (size_t i = 0; i < count; i++) {
    if (o->elem == 4) {
      const uint32_t p = CT_POISON32;
      memcpy(o->base + i * 4, &p, 4);
    } else {
      const uint16_t p = CT_POISON16;
      memcpy(o->base + i * 2, &p, 2);
    }
  }
}

static inline void *ct_output_ptr(const ct_output *o) { return o->base + o->ld * o->elem; }

static inline int ct_is_poison(const ct_output *o, size_t index) {
  if (o->elem == 4) {
    uint32_t v;
    memcpy(&v, o->base + index * 4, 4);
    return v == CT_POISON32;
  }
  uint16_t v;
  memcpy(&v, o->base + index * 2, 2);
  return v == CT_POISON16;
}

/* Fails unless every output element was written and nothing else was. */
static inline void ct_output_check_frame(const ct_output *o, const char *what) {
  for (size_t r = 0; r < o->M + 2; r++)
    for (size_t c = 0; c < o->ld; c++) {
      const int inside = r >= 1 && r <= o->M && c < o->N;
      const int poison = ct_is_poison(o, r * o->ld + c);
      if (inside && poison) fail_msg("%s: y[%zu, %zu] was not written", what, r - 1, c);
      if (!inside && poison == 0)
        fail_msg("%s: wrote outside y at row %zd, column %zu", what, (ptrdiff_t)r - 1, c);
    }
}

static inline float ct_output_get(const ct_output *o, size_t m, size_t n) {
  const size_t index = (m + 1) * o->ld + n;
  switch (o->dtype) {
    case FP8GEMM_DTYPE_F32: {
      float v;
      memcpy(&v, o->base + index * 4, 4);
      return v;
    }
    case FP8GEMM_DTYPE_BF16: {
      uint16_t v;
      memcpy(&v, o->base + index * 2, 2);
      return fp8gemm_bf16_to_float(v);
    }
    default: {
      uint16_t v;
      memcpy(&v, o->base + index * 2, 2);
      return fp8gemm_f16_to_float(v);
    }
  }
}

static inline void ct_output_free(ct_output *o) {
  free(o->base);
  o->base = NULL;
}

/* ||y - ref|| / ||ref|| over the given rows of y (ref rows in order). */
static inline double ct_rel_err_rows(const ct_output *y, const size_t *rows, size_t nrows,
                                     const double *ref) {
  double num = 0, den = 0;
  for (size_t i = 0; i < nrows; i++)
    for (size_t n = 0; n < y->N; n++) {
      const double d = (double)ct_output_get(y, rows[i], n) - ref[i * y->N + n];
      num += d * d;
      den += ref[i * y->N + n] * ref[i * y->N + n];
    }
  if (isnan(num)) return INFINITY;
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* ||a - b|| / ||b|| over two whole fp32 outputs. */
static inline double ct_rel_diff(const ct_output *a, const ct_output *b) {
  double num = 0, den = 0;
  for (size_t m = 0; m < a->M; m++)
    for (size_t n = 0; n < a->N; n++) {
      const double x = ct_output_get(a, m, n), y = ct_output_get(b, m, n);
      num += (x - y) * (x - y);
      den += y * y;
    }
  if (isnan(num)) return INFINITY;
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

/* The fp64 reference on a subset of rows of xq (row-major scales). */
static inline double *ct_reference_rows(size_t N, size_t K, const uint8_t *xq, const float *xs,
                                        const size_t *rows, size_t nrows, const uint8_t *wq_plain,
                                        const float *w_scale, const float *bias) {
  const size_t groups = (K + 127) / 128;
  uint8_t *xq_rows = tu_malloc(nrows * K);
  float *xs_rows = tu_malloc(nrows * groups * sizeof(float));
  for (size_t i = 0; i < nrows; i++) {
    memcpy(xq_rows + i * K, xq + rows[i] * K, K);
    memcpy(xs_rows + i * groups, xs + rows[i] * groups, groups * sizeof(float));
  }
  double *ref = tu_malloc(nrows * N * sizeof(double));
  TU_OK(fp8gemm_gemm_reference(nrows, N, K, xq_rows, K, xs_rows, FP8GEMM_SCALE_ROW_MAJOR, groups,
                               wq_plain, FP8GEMM_LAYOUT_PLAIN, w_scale, bias, ref, N));
  free(xq_rows);
  free(xs_rows);
  return ref;
}

/* Random block scales around 1/448 with a spread, so a wrong block index
 * changes the result. */
static inline void ct_fill_scales(tu_rng *rng, float *dst, size_t count) {
  for (size_t i = 0; i < count; i++) dst[i] = (0.25f + 1.5f * fabsf(tu_uniform(rng))) / 448.0f;
}

#endif
