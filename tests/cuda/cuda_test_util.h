/* Helpers for the GPU tests: the skip rule, device buffers through the
 * public API, the fp64 reference spread over host threads (rows are
 * independent), and output decoding. Header-only (static inline) so each
 * test_*.c stays one executable. */
#ifndef FP8GEMM_CUDA_TEST_UTIL_H
#define FP8GEMM_CUDA_TEST_UTIL_H

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cuda_runtime_api.h>

#include "testutil.h"

#define CT_SKIP_MESSAGE "SKIP: no CUDA device of compute capability 9.0"

/* Exits with 77 (ctest: skipped) when no Hopper GPU is usable. */
static inline void ct_require_gpu(void) {
  if (!fp8gemm_backend_available(FP8GEMM_BACKEND_CUDA)) {
    printf("%s\n", CT_SKIP_MESSAGE);
    fflush(stdout);
    exit(77);
  }
}

/* A copy of environment variable `name` (NULL when unset), for ct_restore_env. */
static inline char *ct_save_env(const char *name) {
  const char *value = getenv(name);
  return value ? strdup(value) : NULL;
}

/* Puts `name` back as ct_save_env found it; frees the copy. */
static inline void ct_restore_env(const char *name, char *saved) {
  if (saved) setenv(name, saved, 1);
  else unsetenv(name);
  free(saved);
}

/* FP8GEMM_TEST_QUICK=1: the small representative set (for the sanitizers). */
static inline int ct_quick(void) {
  const char *env = getenv("FP8GEMM_TEST_QUICK");
  return env && *env && strcmp(env, "0") != 0;
}

#define CT_CUDA(expr)                                                          \
  do {                                                                         \
    cudaError_t ct_err_ = (expr);                                              \
    if (ct_err_ != cudaSuccess) fail_msg("%s -> %s", #expr, cudaGetErrorString(ct_err_)); \
  } while (0)

static inline fp8gemm_context *ct_context(void *stream) {
  fp8gemm_context_options options;
  fp8gemm_context_options_init(&options);
  options.backend = FP8GEMM_BACKEND_CUDA;
  options.cuda_stream = stream;
  fp8gemm_context *ctx = NULL;
  TU_OK(fp8gemm_context_create(&options, &ctx));
  assert_int_equal(fp8gemm_context_backend(ctx), FP8GEMM_BACKEND_CUDA);
  return ctx;
}

static inline fp8gemm_context *ct_cpu_context(void) {
  fp8gemm_context_options options;
  fp8gemm_context_options_init(&options);
  options.backend = FP8GEMM_BACKEND_CPU;
  fp8gemm_context *ctx = NULL;
  TU_OK(fp8gemm_context_create(&options, &ctx));
  return ctx;
}

static inline void *ct_upload(fp8gemm_context *ctx, const void *host, size_t bytes) {
  void *dev = NULL;
  TU_OK(fp8gemm_memory_alloc(ctx, bytes, &dev));
  TU_OK(fp8gemm_memory_copy(ctx, dev, host, bytes, FP8GEMM_COPY_HOST_TO_BACKEND));
  return dev;
}

static inline void *ct_alloc(fp8gemm_context *ctx, size_t bytes) {
  void *dev = NULL;
  TU_OK(fp8gemm_memory_alloc(ctx, bytes, &dev));
  return dev;
}

static inline void ct_download(fp8gemm_context *ctx, void *host, const void *dev, size_t bytes) {
  TU_OK(fp8gemm_memory_copy(ctx, host, dev, bytes, FP8GEMM_COPY_BACKEND_TO_HOST));
}

/* Output element i of a y buffer of `dtype`, as float. */
static inline float ct_output(fp8gemm_dtype dtype, const void *y, size_t i) {
  if (dtype == FP8GEMM_DTYPE_BF16) return fp8gemm_bf16_to_float(((const uint16_t *)y)[i]);
  if (dtype == FP8GEMM_DTYPE_F16) return fp8gemm_f16_to_float(((const uint16_t *)y)[i]);
  return ((const float *)y)[i];
}

/* Random e4m3fn codes, never NaN (0x7F / 0xFF). */
static inline void ct_random_codes(tu_rng *rng, uint8_t *dst, size_t count) {
  for (size_t i = 0; i < count; i++) {
    uint8_t code = (uint8_t)(tu_next(rng) >> 56);
    if ((code & 0x7F) == 0x7F) code ^= 0x01;
    dst[i] = code;
  }
}

typedef struct ct_reference_job {
  size_t m_begin, m_end, N, K, groups;
  const uint8_t *xq;
  const float *x_scale;
  const uint8_t *w;
  const float *w_scale;
  const float *bias;
  double *y;
  fp8gemm_status status;
} ct_reference_job;

static inline void *ct_reference_worker(void *arg) {
  ct_reference_job *job = (ct_reference_job *)arg;
  job->status = FP8GEMM_OK;
  if (job->m_end > job->m_begin)
    job->status = fp8gemm_gemm_reference(
        job->m_end - job->m_begin, job->N, job->K, job->xq + job->m_begin * job->K, job->K,
        job->x_scale + job->m_begin * job->groups, FP8GEMM_SCALE_ROW_MAJOR, job->groups, job->w,
        FP8GEMM_LAYOUT_PLAIN, job->w_scale, job->bias, job->y + job->m_begin * job->N, job->N);
  return NULL;
}

/* fp8gemm_gemm_reference (fp64) on row-major xq/scales and a plain weight,
 * rows split over the host's cores. */
static inline double *ct_reference(size_t M, size_t N, size_t K, const uint8_t *xq,
                                   const float *x_scale, const uint8_t *w, const float *w_scale,
                                   const float *bias) {
  enum { kMaxThreads = 64 };
  long cores = sysconf(_SC_NPROCESSORS_ONLN);
  size_t threads = cores < 1 ? 1 : (cores > kMaxThreads ? kMaxThreads : (size_t)cores);
  if (threads > M) threads = M;
  double *y = tu_malloc(M * N * sizeof(double));
  pthread_t tids[kMaxThreads];
  ct_reference_job jobs[kMaxThreads];
  const size_t groups = (K + 127) / 128;
  for (size_t t = 0; t < threads; t++) {
    ct_reference_job job = {M * t / threads, M * (t + 1) / threads, N, K, groups, xq, x_scale,
                            w, w_scale, bias, y, FP8GEMM_OK};
    jobs[t] = job;
    if (pthread_create(&tids[t], NULL, ct_reference_worker, &jobs[t]) != 0)
      fail_msg("pthread_create failed");
  }
  for (size_t t = 0; t < threads; t++) {
    pthread_join(tids[t], NULL);
    if (jobs[t].status != FP8GEMM_OK) fail_msg("reference: %s", fp8gemm_last_error());
  }
  return y;
}

/* ||y - ref|| / ||ref|| over the first M rows; +Inf if any output is not
 * finite (an unwritten output keeps the NaN poison). */
static inline double ct_rel_err(fp8gemm_dtype dtype, const void *y, size_t ldy, const double *ref,
                                size_t M, size_t N, size_t *first_bad) {
  double num = 0, den = 0;
  for (size_t m = 0; m < M; m++)
    for (size_t n = 0; n < N; n++) {
      const float v = ct_output(dtype, y, m * ldy + n);
      if (!isfinite(v)) {
        if (first_bad) *first_bad = m * N + n;
        return INFINITY;
      }
      const double d = (double)v - ref[m * N + n];
      num += d * d;
      den += ref[m * N + n] * ref[m * N + n];
    }
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

#endif
