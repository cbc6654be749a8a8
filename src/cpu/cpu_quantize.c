/* Quantization on the CPU backend, parallel over rows (activations) or over
 * 128-row block rows (weights). The per-row and per-block work is the ISA
 * kernel's; results are bit-identical to the core's scalar definition
 * (tests/cpu/test_quantize.c checks it). Errors found by worker threads are
 * reported on the calling thread (the message is thread-local). */
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "cpu_internal.h"

#define GROUP FP8GEMM_BLOCK

typedef struct act_job {
  const cpu_kernels *kern;
  size_t M, K;
  fp8gemm_dtype dtype;
  const char *x;
  size_t x_row_bytes;
  uint8_t *xq;
  size_t ldq;
  float *scale;
  fp8gemm_scale_layout layout;
  size_t scale_ld;
  atomic_size_t next_row;
} act_job;

static void act_task(void *opaque, int thread, int threads) {
  act_job *job = opaque;
  (void)thread;
  const size_t chunk = job->M / ((size_t)threads * 4) + 1;
  size_t begin, end;
  while (cpu_claim(&job->next_row, chunk, job->M, &begin, &end)) {
    for (size_t m = begin; m < end; m++) {
      const bool row_major = job->layout == FP8GEMM_SCALE_ROW_MAJOR;
      float *scales = row_major ? job->scale + m * job->scale_ld : job->scale + m;
      job->kern->quantize_row(job->K, job->dtype, job->x + m * job->x_row_bytes,
                              job->xq + m * job->ldq, scales, row_major ? 1 : job->scale_ld);
    }
  }
}

fp8gemm_status cpu_quantize_activations(fp8gemm_context *ctx, size_t M, size_t K,
                                        fp8gemm_dtype x_dtype, const void *x, size_t ldx,
                                        uint8_t *xq, size_t ldq, float *x_scale,
                                        fp8gemm_scale_layout scale_layout, size_t scale_ld) {
  cpu_state *st = cpu_state_of(ctx);
  act_job job = {st->kernels, M,   K,       x_dtype,      (const char *)x,
                 ldx * fp8gemm_dtype_size(x_dtype), xq, ldq, x_scale, scale_layout, scale_ld, 0};
  atomic_init(&job.next_row, 0);
  /* ~64K elements per thread before threads pay off. */
  const size_t elements = M * K;
  int want = (int)(elements / 65536 + 1);
  if (want > st->num_threads) want = st->num_threads;
  if ((size_t)want > M) want = (int)M;
  cpu_pool_run(st->pool, want, act_task, &job);
  return FP8GEMM_OK;
}

typedef struct weight_job {
  const cpu_kernels *kern;
  size_t N, K;
  fp8gemm_dtype dtype;
  const char *w;
  size_t ldw, elem;
  uint8_t *wq;
  float *scale_inv;
  atomic_size_t first_bad_block; /* SIZE_MAX when all blocks are finite */
  atomic_size_t next_block_row;
} weight_job;

static void weight_task(void *opaque, int thread, int threads) {
  weight_job *job = opaque;
  (void)thread;
  (void)threads;
  const size_t block_rows = fp8gemm_ceil_div(job->N, GROUP), groups = fp8gemm_ceil_div(job->K, GROUP);
  size_t nb, end;
  while (cpu_claim(&job->next_block_row, 1, block_rows, &nb, &end)) {
    const size_t n0 = nb * GROUP, rows = job->N - n0 < GROUP ? job->N - n0 : GROUP;
    for (size_t g = 0; g < groups; g++) {
      const size_t k0 = g * GROUP, cols = job->K - k0 < GROUP ? job->K - k0 : GROUP;
      const char *block = job->w + (n0 * job->ldw + k0) * job->elem;
      float amax;
      if (!job->kern->block_amax(rows, cols, job->dtype, block, job->ldw, &amax)) {
        size_t index = nb * groups + g, seen = atomic_load(&job->first_bad_block);
        while (index < seen && !atomic_compare_exchange_weak(&job->first_bad_block, &seen, index)) {
        }
        break; /* the call fails; the other block rows are still checked */
      }
      const float scale = fmaxf(amax, 1e-10f) / 448.0f;
      job->scale_inv[nb * groups + g] = scale;
      for (size_t r = 0; r < rows; r++)
        job->kern->quantize_span(cols, job->dtype, block + r * job->ldw * job->elem, scale,
                                 job->wq + (n0 + r) * job->K + k0);
    }
  }
}

fp8gemm_status cpu_quantize_weight(fp8gemm_context *ctx, size_t N, size_t K,
                                   fp8gemm_dtype w_dtype, const void *w, size_t ldw, uint8_t *wq,
                                   float *weight_scale_inv) {
  cpu_state *st = cpu_state_of(ctx);
  weight_job job;
  job.kern = st->kernels;
  job.N = N;
  job.K = K;
  job.dtype = w_dtype;
  job.w = w;
  job.ldw = ldw;
  job.elem = fp8gemm_dtype_size(w_dtype);
  job.wq = wq;
  job.scale_inv = weight_scale_inv;
  atomic_init(&job.first_bad_block, SIZE_MAX);
  atomic_init(&job.next_block_row, 0);
  const size_t block_rows = fp8gemm_ceil_div(N, GROUP);
  int want = st->num_threads;
  if ((size_t)want > block_rows) want = (int)block_rows;
  cpu_pool_run(st->pool, want, weight_task, &job);
  const size_t bad = atomic_load(&job.first_bad_block);
  if (bad == SIZE_MAX) return FP8GEMM_OK;
  /* Name the first non-finite element, in row-major order, of the first
   * block row that holds one. */
  const size_t groups = fp8gemm_ceil_div(K, GROUP);
  const size_t n0 = bad / groups * GROUP;
  for (size_t n = n0; n < N && n < n0 + GROUP; n++)
    for (size_t k = 0; k < K; k++) {
      const float v = fp8gemm_load_as_float(w_dtype, w, n * ldw + k);
      if (!isfinite(v))
        return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                                 "quantize_weight: w[%zu, %zu] = %g is not finite", n, k, (double)v);
    }
  return fp8gemm_set_error(FP8GEMM_ERROR_INTERNAL, "quantize_weight: block %zu flagged non-finite",
                           bad);
}
