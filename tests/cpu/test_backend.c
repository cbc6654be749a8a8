/* The CPU backend around the kernels: ISA and thread selection, the
 * layout-mismatch refusal, outputs in bf16/f16 with bias and M-major
 * scales, the small-M/large-M crossover from the weight, odd thread counts
 * (uneven grids), caller workspaces, and concurrent forwards on one context
 * (the pool is busy: the second caller runs alone and must still be
 * right). */
#include <pthread.h>
#include <stdlib.h>

#include "cpu_testing.h"

static void test_isa_and_threads(void **state) {
  (void)state;
  fp8gemm_context_options o;
  fp8gemm_context_options_init(&o);
  fp8gemm_context *ctx = NULL;
  o.isa = "generic";
  o.num_threads = 3;
  TU_OK(fp8gemm_context_create(&o, &ctx));
  assert_string_equal(fp8gemm_context_device(ctx), "generic");
  assert_int_equal(fp8gemm_context_num_threads(ctx), 3);
  assert_int_equal(fp8gemm_context_preshuffled_layout(ctx), FP8GEMM_LAYOUT_PRESHUFFLED_CPU);
  fp8gemm_context_destroy(ctx);

  o.isa = "avx512";
  TU_EXPECT_ERROR(fp8gemm_context_create(&o, &ctx), FP8GEMM_ERROR_INVALID_ARGUMENT, "'avx512'");
  o.isa = "avx2";
  if (cpu_detect_avx2()) {
    TU_OK(fp8gemm_context_create(&o, &ctx));
    assert_string_equal(fp8gemm_context_device(ctx), "avx2");
    fp8gemm_context_destroy(ctx);
  } else {
    TU_EXPECT_ERROR(fp8gemm_context_create(&o, &ctx), FP8GEMM_ERROR_UNSUPPORTED, "avx2");
  }

  /* Environment, when options leave it open. */
  char *saved_isa = getenv("FP8GEMM_ISA") ? strdup(getenv("FP8GEMM_ISA")) : NULL;
  o.isa = NULL;
  o.num_threads = 0;
  setenv("FP8GEMM_ISA", "sse9", 1);
  TU_EXPECT_ERROR(fp8gemm_context_create(&o, &ctx), FP8GEMM_ERROR_INVALID_ARGUMENT, "FP8GEMM_ISA='sse9'");
  setenv("FP8GEMM_ISA", "generic", 1);
  setenv("FP8GEMM_NUM_THREADS", "two", 1);
  TU_EXPECT_ERROR(fp8gemm_context_create(&o, &ctx), FP8GEMM_ERROR_INVALID_ARGUMENT,
                  "FP8GEMM_NUM_THREADS='two'");
  setenv("FP8GEMM_NUM_THREADS", "5", 1);
  TU_OK(fp8gemm_context_create(&o, &ctx));
  assert_int_equal(fp8gemm_context_num_threads(ctx), 5);
  assert_string_equal(fp8gemm_context_device(ctx), "generic");
  fp8gemm_context_destroy(ctx);
  unsetenv("FP8GEMM_NUM_THREADS");
  if (saved_isa) {
    setenv("FP8GEMM_ISA", saved_isa, 1);
    free(saved_isa);
  } else {
    unsetenv("FP8GEMM_ISA");
  }
}

typedef struct problem {
  size_t M, N, K, groups;
  uint8_t *xq, *wq;
  float *xs, *xs_mmajor, *ws, *bias;
} problem;

static void problem_make(fp8gemm_context *ctx, tu_rng *rng, size_t M, size_t N, size_t K, problem *p) {
  p->M = M;
  p->N = N;
  p->K = K;
  p->groups = (K + 127) / 128;
  float *x = tu_malloc(M * K * sizeof(float));
  tu_fill_normal(rng, x, M * K, 2.0f);
  p->xq = tu_malloc(M * K);
  p->xs = tu_malloc(M * p->groups * sizeof(float));
  p->xs_mmajor = tu_malloc(M * p->groups * sizeof(float));
  TU_OK(fp8gemm_quantize_activations(ctx, M, K, FP8GEMM_DTYPE_F32, x, K, p->xq, K, p->xs,
                                     FP8GEMM_SCALE_ROW_MAJOR, p->groups));
  for (size_t m = 0; m < M; m++)
    for (size_t g = 0; g < p->groups; g++) p->xs_mmajor[g * M + m] = p->xs[m * p->groups + g];
  p->wq = tu_malloc(N * K);
  ct_fill_codes(rng, p->wq, N * K);
  p->ws = tu_malloc((N + 127) / 128 * p->groups * sizeof(float));
  ct_fill_scales(rng, p->ws, (N + 127) / 128 * p->groups);
  p->bias = tu_malloc(N * sizeof(float));
  tu_fill_normal(rng, p->bias, N, 3.0f);
  free(x);
}

static void problem_free(problem *p) {
  free(p->xq);
  free(p->xs);
  free(p->xs_mmajor);
  free(p->wq);
  free(p->ws);
  free(p->bias);
}

static void test_layout_mismatch(void **state) {
  (void)state;
  fp8gemm_context *ctx = ct_context(0);
  tu_rng rng = tu_rng_make(tu_seed());
  problem p;
  problem_make(ctx, &rng, 4, 32, 64, &p);
  fp8gemm_weight *w = tu_weight(ctx, 32, 64, p.wq, p.ws, NULL, FP8GEMM_LAYOUT_PRESHUFFLED_CPU);
  /* A weight whose bytes are in a layout no CPU kernel reads: the backend
   * refuses instead of reading them in the wrong order. */
  const fp8gemm_layout real = w->layout;
  ct_output y;
  ct_output_make(&y, 4, 32, 1, FP8GEMM_DTYPE_F32);
  static const fp8gemm_layout foreign[] = {FP8GEMM_LAYOUT_AITER16X16, FP8GEMM_LAYOUT_PRESHUFFLED_SM90};
  for (int i = 0; i < 2; i++) {
    w->layout = foreign[i];
    TU_EXPECT_ERROR(fp8gemm_gemm(ctx, w, 4, p.xq, 64, p.xs, FP8GEMM_SCALE_ROW_MAJOR, 1,
                                 FP8GEMM_DTYPE_F32, ct_output_ptr(&y), y.ld, NULL, 0),
                    FP8GEMM_ERROR_LAYOUT_MISMATCH, fp8gemm_layout_name(foreign[i]));
  }
  w->layout = real;
  /* Nothing was written. */
  for (size_t i = 0; i < (y.M + 2) * y.ld; i++) assert_true(ct_is_poison(&y, i));
  ct_output_free(&y);
  fp8gemm_weight_destroy(w);
  problem_free(&p);
  fp8gemm_context_destroy(ctx);
}

/* bf16 and f16 outputs are the fp32 result (bias included) rounded by the
 * core's converters, bit for bit; M-major scales give the same fp32. */
static void test_output_types_bias_scale_layout(void **state) {
  (void)state;
  fp8gemm_context *ctx = ct_context(0);
  tu_rng rng = tu_rng_make(tu_seed());
  static const size_t shapes[][3] = {{1, 200, 336}, {5, 2112, 128}, {6, 17, 384}, {7, 200, 336},
                                     {40, 2112, 272}, {150, 1040, 256}, {577, 48, 160}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
    problem p;
    problem_make(ctx, &rng, M, N, K, &p);
    for (int lay = 0; lay < 2; lay++) {
      const fp8gemm_layout layout = lay ? FP8GEMM_LAYOUT_PRESHUFFLED_CPU : FP8GEMM_LAYOUT_PLAIN;
      fp8gemm_weight *w = tu_weight(ctx, N, K, p.wq, p.ws, p.bias, layout);
      ct_output y32, y32m, y16[2];
      ct_output_make(&y32, M, N, 2, FP8GEMM_DTYPE_F32);
      ct_output_make(&y32m, M, N, 2, FP8GEMM_DTYPE_F32);
      TU_OK(fp8gemm_gemm(ctx, w, M, p.xq, K, p.xs, FP8GEMM_SCALE_ROW_MAJOR, p.groups,
                         FP8GEMM_DTYPE_F32, ct_output_ptr(&y32), y32.ld, NULL, 0));
      TU_OK(fp8gemm_gemm(ctx, w, M, p.xq, K, p.xs_mmajor, FP8GEMM_SCALE_M_MAJOR, M,
                         FP8GEMM_DTYPE_F32, ct_output_ptr(&y32m), y32m.ld, NULL, 0));
      ct_output_check_frame(&y32, "f32");
      ct_output_check_frame(&y32m, "f32 M-major");
      assert_memory_equal(y32.base, y32m.base, (M + 2) * y32.ld * 4);
      /* xq with a row stride beyond K reads the same rows. */
      {
        const size_t ldq = K + 48;
        uint8_t *xq_wide = tu_malloc(M * ldq);
        memset(xq_wide, 0x7F, M * ldq); /* NaN codes in the gaps would show */
        for (size_t m = 0; m < M; m++) memcpy(xq_wide + m * ldq, p.xq + m * K, K);
        ct_output yw;
        ct_output_make(&yw, M, N, 2, FP8GEMM_DTYPE_F32);
        TU_OK(fp8gemm_gemm(ctx, w, M, xq_wide, ldq, p.xs, FP8GEMM_SCALE_ROW_MAJOR, p.groups,
                           FP8GEMM_DTYPE_F32, ct_output_ptr(&yw), yw.ld, NULL, 0));
        assert_memory_equal(y32.base, yw.base, (M + 2) * y32.ld * 4);
        ct_output_free(&yw);
        free(xq_wide);
      }
      /* Against the reference, bias included. */
      size_t rows[3] = {0, M / 2, M - 1};
      const size_t nrows = M >= 3 ? 3 : M;
      double *ref = ct_reference_rows(N, K, p.xq, p.xs, rows, nrows, p.wq, p.ws, p.bias);
      const double err = ct_rel_err_rows(&y32, rows, nrows, ref);
      if (!(err <= 1e-5)) fail_msg("M=%zu N=%zu K=%zu %s with bias: rel err %.3g", M, N, K, fp8gemm_layout_name(layout), err);
      free(ref);
      for (int d = 0; d < 2; d++) {
        const fp8gemm_dtype dtype = d ? FP8GEMM_DTYPE_F16 : FP8GEMM_DTYPE_BF16;
        ct_output_make(&y16[d], M, N, 3, dtype);
        TU_OK(fp8gemm_gemm(ctx, w, M, p.xq, K, p.xs, FP8GEMM_SCALE_ROW_MAJOR, p.groups, dtype,
                           ct_output_ptr(&y16[d]), y16[d].ld, NULL, 0));
        ct_output_check_frame(&y16[d], fp8gemm_dtype_name(dtype));
        for (size_t m = 0; m < M; m++)
          for (size_t n = 0; n < N; n++) {
            uint16_t want, got;
            fp8gemm_store_from_float(dtype, &want, 0, ct_output_get(&y32, m, n));
            memcpy(&got, (unsigned char *)ct_output_ptr(&y16[d]) + (m * y16[d].ld + n) * 2, 2);
            if (got != want)
              fail_msg("M=%zu N=%zu K=%zu %s %s: y[%zu, %zu] = 0x%04X, fp32 result rounds to 0x%04X",
                       M, N, K, fp8gemm_layout_name(layout), fp8gemm_dtype_name(dtype), m, n, got, want);
          }
        ct_output_free(&y16[d]);
      }
      ct_output_free(&y32);
      ct_output_free(&y32m);
      fp8gemm_weight_destroy(w);
    }
    problem_free(&p);
  }
  fp8gemm_context_destroy(ctx);
}

/* The same product through the small-M and the large-M kernels (the
 * weight's crossover decides), with 1, 2 and 3 threads, with a caller
 * workspace and without: all within 1e-6 of each other and 1e-5 of the
 * reference. */
static void test_crossover_threads_workspace(void **state) {
  (void)state;
  tu_rng rng = tu_rng_make(tu_seed());
  static const size_t shapes[][3] = {{3, 2112, 384}, {9, 200, 7168}, {31, 130, 336}, {64, 16, 128}};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
    fp8gemm_context *ctx1 = ct_context(1);
    problem p;
    problem_make(ctx1, &rng, M, N, K, &p);
    size_t rows[2] = {0, M - 1};
    double *ref = ct_reference_rows(N, K, p.xq, p.xs, rows, 2, p.wq, p.ws, NULL);
    ct_output base = {0};
    int have_base = 0;
    for (int threads = 1; threads <= 3; threads++) {
      fp8gemm_context *ctx = ct_context(threads);
      for (int lay = 0; lay < 2; lay++) {
        fp8gemm_weight *w = tu_weight(ctx, N, K, p.wq, p.ws, NULL,
                                      lay ? FP8GEMM_LAYOUT_PRESHUFFLED_CPU : FP8GEMM_LAYOUT_PLAIN);
        static const size_t crossovers[] = {1, 64}; /* large-M kernel, small-M kernel */
        for (int c = 0; c < 2; c++) {
          w->crossover_m = crossovers[c];
          size_t ws_bytes;
          TU_OK(fp8gemm_linear_workspace_size(ctx, w, M, &ws_bytes));
          void *ws = NULL;
          TU_OK(fp8gemm_memory_alloc(ctx, ws_bytes, &ws));
          ct_output y;
          ct_output_make(&y, M, N, 1, FP8GEMM_DTYPE_F32);
          TU_OK(fp8gemm_gemm(ctx, w, M, p.xq, K, p.xs, FP8GEMM_SCALE_ROW_MAJOR, p.groups,
                             FP8GEMM_DTYPE_F32, ct_output_ptr(&y), y.ld, c ? ws : NULL,
                             c ? ws_bytes : 0));
          fp8gemm_memory_free(ctx, ws);
          ct_output_check_frame(&y, "crossover");
          const double err = ct_rel_err_rows(&y, rows, 2, ref);
          if (!(err <= 1e-5)) fail_msg("M=%zu N=%zu K=%zu threads=%d crossover=%zu: rel err %.3g", M, N, K, threads, crossovers[c], err);
          if (!have_base) {
            base = y;
            have_base = 1;
            continue;
          }
          const double diff = ct_rel_diff(&y, &base);
          if (!(diff <= 1e-6))
            fail_msg("M=%zu N=%zu K=%zu threads=%d crossover=%zu %s: %.3g from the first run", M, N,
                     K, threads, crossovers[c], fp8gemm_layout_name(w->layout), diff);
          ct_output_free(&y);
        }
        fp8gemm_weight_destroy(w);
      }
      fp8gemm_context_destroy(ctx);
    }
    ct_output_free(&base);
    free(ref);
    problem_free(&p);
    fp8gemm_context_destroy(ctx1);
  }
}

/* A row of x with a NaN or Inf quantizes to scale NaN: that row's outputs
 * are NaN in every kernel (never a silently finite value); other rows stay
 * right. Huge finite rows (scale ~1e34) match the fp64 reference. */
static void test_non_finite_rows(void **state) {
  (void)state;
  fp8gemm_context *ctx = ct_context(0);
  tu_rng rng = tu_rng_make(tu_seed());
  static const size_t Ms[] = {4, 7, 13, 40}; /* rows 1, 2 and M-1 are special */
  const size_t N = 200, K = 336, groups = 3;
  for (size_t mi = 0; mi < 4; mi++) {
    const size_t M = Ms[mi];
    float *x = tu_malloc(M * K * sizeof(float));
    tu_fill_normal(&rng, x, M * K, 1.0f);
    x[1 * K + 200] = NAN;                  /* row 1, group 1 */
    x[(M - 1) * K + 335] = -INFINITY;      /* last row, last (partial) group */
    /* Row 2: huge but finite (scales ~1e34): no intermediate may overflow. */
    for (size_t k = 0; k < K; k++) x[2 * K + k] *= 1e36f;
    uint8_t *xq = tu_malloc(M * K), *wq = tu_malloc(N * K);
    float *xs = tu_malloc(M * groups * sizeof(float)), ws[2 * 3];
    TU_OK(fp8gemm_quantize_activations(ctx, M, K, FP8GEMM_DTYPE_F32, x, K, xq, K, xs,
                                       FP8GEMM_SCALE_ROW_MAJOR, groups));
    ct_fill_codes(&rng, wq, N * K);
    ct_fill_scales(&rng, ws, 6);
    for (int i = 0; i < 6; i++) ws[i] *= 448e-6f; /* |w| <= 8e-4: y stays far below FLT_MAX */
    const size_t finite_rows[2] = {0, 2};
    double *ref = ct_reference_rows(N, K, xq, xs, finite_rows, 2, wq, ws, NULL);
    for (int lay = 0; lay < 2; lay++) {
      fp8gemm_weight *w = tu_weight(ctx, N, K, wq, ws, NULL,
                                    lay ? FP8GEMM_LAYOUT_PRESHUFFLED_CPU : FP8GEMM_LAYOUT_PLAIN);
      for (int path = 0; path < 2; path++) {
        w->crossover_m = path ? 64 : 1; /* small-M kernel, large-M kernel */
        ct_output y;
        ct_output_make(&y, M, N, 1, FP8GEMM_DTYPE_F32);
        TU_OK(fp8gemm_gemm(ctx, w, M, xq, K, xs, FP8GEMM_SCALE_ROW_MAJOR, groups, FP8GEMM_DTYPE_F32,
                           ct_output_ptr(&y), y.ld, NULL, 0));
        for (size_t m = 0; m < M; m++)
          for (size_t n = 0; n < N; n++) {
            const float v = ct_output_get(&y, m, n);
            const int want_nan = m == 1 || m == M - 1;
            if (want_nan != (isnan(v) != 0))
              fail_msg("M=%zu %s %s-M kernel: y[%zu, %zu] = %g, expected %s", M,
                       fp8gemm_layout_name(w->layout), path ? "small" : "large", m, n, (double)v,
                       want_nan ? "NaN" : "a number");
          }
        const double err = ct_rel_err_rows(&y, finite_rows, 2, ref);
        if (!(err <= 1e-5))
          fail_msg("M=%zu %s: rows 0 and 2 (huge) rel err %.3g", M, fp8gemm_layout_name(w->layout), err);
        ct_output_free(&y);
      }
      fp8gemm_weight_destroy(w);
    }
    free(ref);
    free(x);
    free(xq);
    free(wq);
    free(xs);
  }
  fp8gemm_context_destroy(ctx);
}

typedef struct forward_thread {
  fp8gemm_context *ctx;
  fp8gemm_weight *w;
  const problem *p;
  const float *x;
  float *y;
  int repeats;
  fp8gemm_status status;
} forward_thread;

static void *forward_main(void *opaque) {
  forward_thread *t = opaque;
  t->status = FP8GEMM_OK;
  for (int r = 0; r < t->repeats && t->status == FP8GEMM_OK; r++)
    t->status = fp8gemm_linear(t->ctx, t->w, t->p->M, FP8GEMM_DTYPE_F32, t->x, t->p->K,
                               FP8GEMM_DTYPE_F32, t->y + (size_t)r % 2 * t->p->M * t->p->N,
                               t->p->N, NULL, 0);
  return NULL;
}

static void test_concurrent_forwards(void **state) {
  (void)state;
  fp8gemm_context *ctx = ct_context(2);
  tu_rng rng = tu_rng_make(tu_seed());
  const size_t shapes[2][3] = {{3, 512, 1024}, {48, 512, 1024}}; /* small-M and large-M */
  for (int s = 0; s < 2; s++) {
    const size_t M = shapes[s][0], N = shapes[s][1], K = shapes[s][2];
    problem p;
    problem_make(ctx, &rng, M, N, K, &p);
    fp8gemm_weight *w = tu_weight(ctx, N, K, p.wq, p.ws, NULL, FP8GEMM_LAYOUT_PRESHUFFLED_CPU);
    enum { THREADS = 4 };
    float *x[THREADS], *y[THREADS], *want[THREADS];
    forward_thread t[THREADS];
    pthread_t handle[THREADS];
    for (int i = 0; i < THREADS; i++) {
      x[i] = tu_malloc(M * K * sizeof(float));
      tu_fill_normal(&rng, x[i], M * K, 1.0f);
      y[i] = tu_malloc(2 * M * N * sizeof(float));
      want[i] = tu_malloc(M * N * sizeof(float));
      TU_OK(fp8gemm_linear(ctx, w, M, FP8GEMM_DTYPE_F32, x[i], K, FP8GEMM_DTYPE_F32, want[i], N, NULL, 0));
      t[i] = (forward_thread){ctx, w, &p, x[i], y[i], 20, FP8GEMM_OK};
    }
    for (int i = 0; i < THREADS; i++) assert_int_equal(pthread_create(&handle[i], NULL, forward_main, &t[i]), 0);
    for (int i = 0; i < THREADS; i++) pthread_join(handle[i], NULL);
    for (int i = 0; i < THREADS; i++) {
      TU_OK(t[i].status);
      /* Single-threaded or pooled, the same sums in the same order. */
      for (int r = 0; r < 2; r++)
        if (memcmp(y[i] + (size_t)r * M * N, want[i], M * N * sizeof(float)))
          fail_msg("M=%zu: concurrent forward %d differs from the sequential one", M, i);
      free(x[i]);
      free(y[i]);
      free(want[i]);
    }
    fp8gemm_weight_destroy(w);
    problem_free(&p);
  }
  fp8gemm_context_destroy(ctx);
}

/* The pool: every unit of every task done exactly once, thread indices
 * distinct within a task, callers from several threads at once, tasks back
 * to back (workers joining late or not at all). */
typedef struct pool_job {
  atomic_size_t next;
  size_t units;
  atomic_int *done; /* per unit */
  atomic_int index_seen[8];
  atomic_int bad_index; /* set from worker threads, checked by the caller */
} pool_job;

static void pool_task(void *opaque, int thread, int threads) {
  pool_job *job = opaque;
  if (thread < 0 || thread >= threads || threads > 8 ||
      atomic_fetch_add(&job->index_seen[thread], 1) != 0) {
    atomic_store(&job->bad_index, 1);
    return;
  }
  size_t begin, end;
  while (cpu_claim(&job->next, 3, job->units, &begin, &end))
    for (size_t u = begin; u < end; u++) atomic_fetch_add(&job->done[u], 1);
}

typedef struct pool_caller {
  cpu_pool *pool;
  int tasks;
  int failed_task; /* -1 when every task was right */
} pool_caller;

static void *pool_caller_main(void *opaque) {
  pool_caller *c = opaque;
  enum { UNITS = 257 };
  atomic_int done[UNITS];
  c->failed_task = -1;
  for (int t = 0; t < c->tasks && c->failed_task < 0; t++) {
    pool_job job;
    atomic_init(&job.next, 0);
    atomic_init(&job.bad_index, 0);
    job.units = UNITS;
    job.done = done;
    for (int i = 0; i < UNITS; i++) atomic_init(&done[i], 0);
    for (int i = 0; i < 8; i++) atomic_init(&job.index_seen[i], 0);
    cpu_pool_run(c->pool, 8, pool_task, &job);
    if (atomic_load(&job.bad_index)) c->failed_task = t;
    for (int i = 0; i < UNITS; i++)
      if (atomic_load(&done[i]) != 1) c->failed_task = t;
  }
  return NULL;
}

static void test_pool(void **state) {
  (void)state;
  for (int size = 1; size <= 4; size++) {
    cpu_pool *pool;
    TU_OK(cpu_pool_create(size, &pool));
    assert_int_equal(cpu_pool_size(pool), size);
    enum { CALLERS = 3 };
    pool_caller callers[CALLERS];
    pthread_t handles[CALLERS];
    for (int i = 0; i < CALLERS; i++) {
      callers[i] = (pool_caller){pool, 2000, -1};
      assert_int_equal(pthread_create(&handles[i], NULL, pool_caller_main, &callers[i]), 0);
    }
    for (int i = 0; i < CALLERS; i++) pthread_join(handles[i], NULL);
    for (int i = 0; i < CALLERS; i++)
      if (callers[i].failed_task >= 0)
        fail_msg("pool of %d: caller %d, task %d: a unit not done exactly once or a thread index "
                 "reused", size, i, callers[i].failed_task);
    cpu_pool_destroy(pool);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_isa_and_threads),
      cmocka_unit_test(test_layout_mismatch),
      cmocka_unit_test(test_output_types_bias_scale_layout),
      cmocka_unit_test(test_crossover_threads_workspace),
      cmocka_unit_test(test_non_finite_rows),
      cmocka_unit_test(test_concurrent_forwards),
      cmocka_unit_test(test_pool),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
