/* The weight and forward flow through the public API: create (copy, in
 * place, from an already-preshuffled buffer), export, fp8gemm_linear in
 * every dtype, the pre-quantized path in both scale layouts, workspaces,
 * bias, special values, and concurrent forwards on one weight. */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "testutil.h"

static fp8gemm_context *ctx;
static tu_rng rng;

static int setup(void **state) {
  (void)state;
  rng = tu_rng_make(tu_seed());
  return fp8gemm_context_create(NULL, &ctx) == FP8GEMM_OK ? 0 : -1;
}

static int teardown(void **state) {
  (void)state;
  fp8gemm_context_destroy(ctx);
  return 0;
}

static fp8gemm_weight *make_weight(const tu_problem *p, int target) {
  fp8gemm_weight_desc desc;
  fp8gemm_weight_desc_init(&desc);
  desc.N = p->N;
  desc.K = p->K;
  desc.data = p->wq;
  desc.scale_inv = p->w_scale;
  desc.bias = p->bias;
  desc.target_layout = target;
  fp8gemm_weight *w;
  TU_OK(fp8gemm_weight_create(ctx, &desc, &w));
  return w;
}

static void test_create_export_roundtrip(void **state) {
  (void)state;
  tu_problem p;
  tu_problem_make(ctx, &rng, 2, 272, 384, 0, &p);
  uint8_t *out = tu_malloc(272 * 384), *expected = tu_malloc(272 * 384);
  const int targets[] = {FP8GEMM_LAYOUT_AUTO, FP8GEMM_LAYOUT_PLAIN, FP8GEMM_LAYOUT_PRESHUFFLED_CPU};
  for (size_t t = 0; t < 3; t++) {
    fp8gemm_weight *w = make_weight(&p, targets[t]);
    if (targets[t] == FP8GEMM_LAYOUT_AUTO)
      assert_int_equal(fp8gemm_weight_layout(w), FP8GEMM_LAYOUT_PRESHUFFLED_CPU);
    TU_OK(fp8gemm_weight_export(w, FP8GEMM_LAYOUT_PLAIN, out));
    assert_memory_equal(out, p.wq, 272 * 384);
    TU_OK(fp8gemm_weight_export(w, FP8GEMM_LAYOUT_AITER16X16, out));
    TU_OK(fp8gemm_shuffle_host_generic(272, 384, FP8GEMM_LAYOUT_PLAIN, p.wq, FP8GEMM_LAYOUT_AITER16X16, expected));
    assert_memory_equal(out, expected, 272 * 384);
    fp8gemm_weight_destroy(w);
  }
  free(out);
  free(expected);
  tu_problem_free(&p);
}

static void test_in_place_and_preshuffled_input(void **state) {
  (void)state;
  tu_problem p;
  tu_problem_make(ctx, &rng, 7, 160, 256, 1, &p);
  double *ref = tu_reference(&p);
  uint8_t *buffer = tu_malloc(160 * 256);
  memcpy(buffer, p.wq, 160 * 256);
  fp8gemm_weight_desc desc;
  fp8gemm_weight_desc_init(&desc);
  desc.N = 160;
  desc.K = 256;
  desc.scale_inv = p.w_scale;
  desc.bias = p.bias;
  desc.target_layout = FP8GEMM_LAYOUT_PRESHUFFLED_CPU;
  fp8gemm_weight *w;
  TU_OK(fp8gemm_weight_create_in_place(ctx, &desc, buffer, &w));
  assert_ptr_equal(fp8gemm_weight_data(w), buffer);
  uint8_t *expected = tu_malloc(160 * 256);
  TU_OK(fp8gemm_shuffle_host_generic(160, 256, FP8GEMM_LAYOUT_PLAIN, p.wq, FP8GEMM_LAYOUT_PRESHUFFLED_CPU, expected));
  assert_memory_equal(buffer, expected, 160 * 256); /* shuffled there, once */
  float y[7 * 160];
  TU_OK(fp8gemm_linear(ctx, w, 7, FP8GEMM_DTYPE_F32, p.x, 256, FP8GEMM_DTYPE_F32, y, 160, NULL, 0));
  assert_true(tu_rel_err(y, 160, ref, 160, 7, 160) <= 1e-5);
  fp8gemm_weight_destroy(w);

  /* Already preshuffled: used as is, never shuffled twice. */
  desc.layout = FP8GEMM_LAYOUT_PRESHUFFLED_CPU;
  TU_OK(fp8gemm_weight_create_in_place(ctx, &desc, buffer, &w));
  assert_memory_equal(buffer, expected, 160 * 256);
  float y2[7 * 160];
  TU_OK(fp8gemm_linear(ctx, w, 7, FP8GEMM_DTYPE_F32, p.x, 256, FP8GEMM_DTYPE_F32, y2, 160, NULL, 0));
  assert_memory_equal(y, y2, sizeof y);
  fp8gemm_weight_destroy(w);

  /* An AMD-preshuffled checkpoint converts into ours at creation. */
  uint8_t *aiter = tu_malloc(160 * 256);
  TU_OK(fp8gemm_shuffle_host_generic(160, 256, FP8GEMM_LAYOUT_PLAIN, p.wq, FP8GEMM_LAYOUT_AITER16X16, aiter));
  desc.layout = FP8GEMM_LAYOUT_AITER16X16;
  desc.data = aiter;
  desc.target_layout = FP8GEMM_LAYOUT_AUTO;
  TU_OK(fp8gemm_weight_create(ctx, &desc, &w));
  TU_OK(fp8gemm_linear(ctx, w, 7, FP8GEMM_DTYPE_F32, p.x, 256, FP8GEMM_DTYPE_F32, y2, 160, NULL, 0));
  assert_memory_equal(y, y2, sizeof y);
  fp8gemm_weight_destroy(w);
  free(aiter);
  free(expected);
  free(buffer);
  free(ref);
  tu_problem_free(&p);
}

/* bf16/f16 in and out; error measured against the reference on the data
 * the library quantized from the rounded input. */
static void test_linear_dtypes(void **state) {
  (void)state;
  const size_t M = 19, N = 144, K = 400;
  tu_problem p;
  tu_problem_make(ctx, &rng, M, N, K, 1, &p);
  fp8gemm_weight *w = make_weight(&p, FP8GEMM_LAYOUT_AUTO);
  const fp8gemm_dtype dtypes[] = {FP8GEMM_DTYPE_F32, FP8GEMM_DTYPE_BF16, FP8GEMM_DTYPE_F16};
  for (int xi = 0; xi < 3; xi++) {
    const fp8gemm_dtype xt = dtypes[xi];
    const size_t ldx = K + 16; /* a row stride wider than K */
    uint8_t *x = tu_malloc(M * ldx * 4);
    float *xf = tu_malloc(M * K * sizeof(float));
    for (size_t m = 0; m < M; m++)
      for (size_t k = 0; k < K; k++) {
        fp8gemm_store_from_float(xt, x, m * ldx + k, p.x[m * K + k]);
        xf[m * K + k] = fp8gemm_load_as_float(xt, x, m * ldx + k);
      }
    uint8_t *xq = tu_malloc(M * K);
    float *xs = tu_malloc(M * p.groups * sizeof(float));
    TU_OK(fp8gemm_quantize_activations(ctx, M, K, xt, x, ldx, xq, K, xs, FP8GEMM_SCALE_ROW_MAJOR, p.groups));
    double *ref = tu_malloc(M * N * sizeof(double));
    TU_OK(fp8gemm_gemm_reference(M, N, K, xq, K, xs, FP8GEMM_SCALE_ROW_MAJOR, p.groups, p.wq,
                                 FP8GEMM_LAYOUT_PLAIN, p.w_scale, p.bias, ref, N));
    for (int yi = -1; yi < 3; yi++) {
      const fp8gemm_dtype yt = yi < 0 ? xt : dtypes[yi];
      const size_t ldy = N + 8;
      uint8_t *y = tu_malloc(M * ldy * 4 + 64);
      memset(y, 0x7F, M * ldy * 4 + 64);
      TU_OK(fp8gemm_linear(ctx, w, M, xt, x, ldx, yi < 0 ? -1 : (int)yt, y, ldy, NULL, 0));
      float *yf = tu_malloc(M * N * sizeof(float));
      for (size_t m = 0; m < M; m++)
        for (size_t n = 0; n < N; n++) yf[m * N + n] = fp8gemm_load_as_float(yt, y, m * ldy + n);
      const double err = tu_rel_err(yf, N, ref, N, M, N);
      const double bound = yt == FP8GEMM_DTYPE_F32 ? 1e-5 : yt == FP8GEMM_DTYPE_F16 ? 1e-3 : 4e-3;
      if (!(err <= bound))
        fail_msg("x %s y %s: rel err %g > %g", fp8gemm_dtype_name(xt), fp8gemm_dtype_name(yt), err, bound);
      /* Padding between rows is untouched. */
      const size_t es = fp8gemm_dtype_size(yt);
      for (size_t m = 0; m + 1 < M; m++)
        for (size_t b = N * es; b < ldy * es; b++) assert_int_equal(y[m * ldy * es + b], 0x7F);
      free(yf);
      free(y);
    }
    free(ref);
    free(xs);
    free(xq);
    free(xf);
    free(x);
  }
  fp8gemm_weight_destroy(w);
  tu_problem_free(&p);
}

static void test_prequantized_scale_layouts(void **state) {
  (void)state;
  const size_t M = 33, N = 128, K = 272;
  tu_problem p;
  tu_problem_make(ctx, &rng, M, N, K, 0, &p);
  double *ref = tu_reference(&p);
  fp8gemm_weight *w = make_weight(&p, FP8GEMM_LAYOUT_AUTO);
  size_t ws_bytes;
  TU_OK(fp8gemm_linear_workspace_size(ctx, w, M, &ws_bytes));
  void *ws = tu_malloc(ws_bytes);
  float y_row[33 * 128], y_m[33 * 128], y_lin[33 * 128];
  TU_OK(fp8gemm_gemm(ctx, w, M, p.xq, K, p.x_scale, FP8GEMM_SCALE_ROW_MAJOR, p.groups,
                     FP8GEMM_DTYPE_F32, y_row, N, ws, ws_bytes));
  assert_true(tu_rel_err(y_row, N, ref, N, M, N) <= 1e-5);
  /* M-major with a padded leading dimension. */
  const size_t ld = M + 3;
  float *sm = tu_malloc(ld * p.groups * sizeof(float));
  for (size_t m = 0; m < M; m++)
    for (size_t g = 0; g < p.groups; g++) sm[g * ld + m] = p.x_scale[m * p.groups + g];
  TU_OK(fp8gemm_gemm(ctx, w, M, p.xq, K, sm, FP8GEMM_SCALE_M_MAJOR, ld, FP8GEMM_DTYPE_F32, y_m, N, ws, ws_bytes));
  assert_memory_equal(y_row, y_m, sizeof y_row);
  /* The quantizer writes either layout directly, with the same values. */
  float *sm2 = tu_malloc(ld * p.groups * sizeof(float));
  uint8_t *xq2 = tu_malloc(M * K);
  TU_OK(fp8gemm_quantize_activations(ctx, M, K, FP8GEMM_DTYPE_F32, p.x, K, xq2, K, sm2, FP8GEMM_SCALE_M_MAJOR, ld));
  assert_memory_equal(xq2, p.xq, M * K);
  for (size_t g = 0; g < p.groups; g++) assert_memory_equal(sm2 + g * ld, sm + g * ld, M * sizeof(float));
  /* linear = quantize + gemm, bit for bit. */
  TU_OK(fp8gemm_linear(ctx, w, M, FP8GEMM_DTYPE_F32, p.x, K, -1, y_lin, N, ws, ws_bytes));
  assert_memory_equal(y_row, y_lin, sizeof y_row);
  /* A wrong description is an error, never a misread. */
  TU_EXPECT_ERROR(fp8gemm_gemm(ctx, w, M, p.xq, K, sm, FP8GEMM_SCALE_M_MAJOR, M - 1, FP8GEMM_DTYPE_F32, y_m, N, ws, ws_bytes),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "scale_ld=32 < M=33");
  TU_EXPECT_ERROR(fp8gemm_gemm(ctx, w, M, p.xq, K, p.x_scale, FP8GEMM_SCALE_ROW_MAJOR, 2, FP8GEMM_DTYPE_F32, y_m, N, ws, ws_bytes),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "scale_ld=2 < ceil(K/128)=3");
  TU_EXPECT_ERROR(fp8gemm_gemm(ctx, w, M, p.xq, K, p.x_scale, (fp8gemm_scale_layout)7, 3, FP8GEMM_DTYPE_F32, y_m, N, ws, ws_bytes),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "scale_layout=7");
  TU_EXPECT_ERROR(fp8gemm_linear(ctx, w, M, FP8GEMM_DTYPE_F32, p.x, K, -1, y_lin, N, ws, ws_bytes - 1),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "workspace_bytes");
  free(xq2);
  free(sm2);
  free(sm);
  free(ws);
  fp8gemm_weight_destroy(w);
  free(ref);
  tu_problem_free(&p);
}

/* NaN/Inf poison only their own row; huge values saturate through the
 * scale; all-zero groups give exact zeros; fp32 denormals are handled. */
static void test_special_values(void **state) {
  (void)state;
  const size_t M = 6, N = 32, K = 256;
  tu_problem p;
  tu_problem_make(ctx, &rng, M, N, K, 0, &p);
  fp8gemm_weight *w = make_weight(&p, FP8GEMM_LAYOUT_AUTO);
  float *x = tu_malloc(M * K * sizeof(float));
  memcpy(x, p.x, M * K * sizeof(float));
  x[0 * K + 5] = NAN;
  x[1 * K + 200] = INFINITY;
  x[2 * K + 7] = -INFINITY;
  for (size_t k = 0; k < K; k++) x[3 * K + k] *= 1e6f;             /* far beyond 448 */
  for (size_t k = 0; k < 128; k++) x[4 * K + k] = 0.0f;             /* an all-zero group */
  for (size_t k = 0; k < K; k++) x[5 * K + k] = 1e-40f * (float)(k % 7); /* denormals */
  float y[6 * 32];
  TU_OK(fp8gemm_linear(ctx, w, M, FP8GEMM_DTYPE_F32, x, K, -1, y, N, NULL, 0));
  uint8_t xq[6 * 256];
  float xs[6 * 2];
  TU_OK(fp8gemm_quantize_activations(ctx, M, K, FP8GEMM_DTYPE_F32, x, K, xq, K, xs, FP8GEMM_SCALE_ROW_MAJOR, 2));
  assert_true(isnan(xs[0]) && !isnan(xs[1]));
  assert_true(isnan(xs[3]) && isnan(xs[4]) && !isnan(xs[5]));
  for (size_t n = 0; n < N; n++) {
    assert_true(isnan(y[0 * N + n]) && isnan(y[1 * N + n]) && isnan(y[2 * N + n]));
    assert_true(isfinite(y[3 * N + n]) && isfinite(y[4 * N + n]) && isfinite(y[5 * N + n]));
  }
  assert_true(xs[8] == 1e-10f / 448.0f); /* eps clamp on the zero group */
  for (size_t k = 0; k < 128; k++) assert_int_equal(xq[4 * K + k], 0);
  /* Row 3 equals 1e6 x the unscaled row's result, to rounding. */
  float y_plain[6 * 32];
  TU_OK(fp8gemm_linear(ctx, w, M, FP8GEMM_DTYPE_F32, p.x, K, -1, y_plain, N, NULL, 0));
  for (size_t n = 0; n < N; n++)
    assert_true(fabs(y[3 * N + n] - 1e6 * y_plain[3 * N + n]) <= 1e-4 * 1e6 * (fabs(y_plain[3 * N + n]) + 1e-3));
  double ref[6 * 32];
  TU_OK(fp8gemm_gemm_reference(M, N, K, xq, K, xs, FP8GEMM_SCALE_ROW_MAJOR, 2, p.wq, FP8GEMM_LAYOUT_PLAIN, p.w_scale, NULL, ref, N));
  assert_true(tu_rel_err(y + 3 * N, N, ref + 3 * N, N, 3, N) <= 1e-5);
  free(x);
  fp8gemm_weight_destroy(w);
  tu_problem_free(&p);
}

typedef struct worker_args {
  const fp8gemm_weight *w;
  const tu_problem *p;
  const float *expected;
  int failures;
} worker_args;

static void *forward_worker(void *arg) {
  worker_args *a = arg;
  size_t ws_bytes;
  if (fp8gemm_linear_workspace_size(ctx, a->w, a->p->M, &ws_bytes) != FP8GEMM_OK) {
    a->failures++;
    return NULL;
  }
  void *ws = malloc(ws_bytes);
  float *y = malloc(a->p->M * a->p->N * sizeof(float));
  for (int it = 0; it < 20; it++) {
    if (fp8gemm_linear(ctx, a->w, a->p->M, FP8GEMM_DTYPE_F32, a->p->x, a->p->K, -1, y, a->p->N, ws, ws_bytes) != FP8GEMM_OK ||
        memcmp(y, a->expected, a->p->M * a->p->N * sizeof(float)))
      a->failures++;
  }
  free(y);
  free(ws);
  return NULL;
}

static void test_concurrent_forwards(void **state) {
  (void)state;
  tu_problem p;
  tu_problem_make(ctx, &rng, 37, 256, 512, 1, &p);
  fp8gemm_weight *w = make_weight(&p, FP8GEMM_LAYOUT_AUTO);
  float *expected = tu_malloc(37 * 256 * sizeof(float));
  TU_OK(fp8gemm_linear(ctx, w, 37, FP8GEMM_DTYPE_F32, p.x, 512, -1, expected, 256, NULL, 0));
  pthread_t threads[4];
  worker_args args[4];
  for (int t = 0; t < 4; t++) {
    args[t] = (worker_args){w, &p, expected, 0};
    assert_int_equal(pthread_create(&threads[t], NULL, forward_worker, &args[t]), 0);
  }
  for (int t = 0; t < 4; t++) {
    pthread_join(threads[t], NULL);
    assert_int_equal(args[t].failures, 0);
  }
  free(expected);
  fp8gemm_weight_destroy(w);
  tu_problem_free(&p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_create_export_roundtrip),
      cmocka_unit_test(test_in_place_and_preshuffled_input),
      cmocka_unit_test(test_linear_dtypes),
      cmocka_unit_test(test_prequantized_scale_layouts),
      cmocka_unit_test(test_special_values),
      cmocka_unit_test(test_concurrent_forwards),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
