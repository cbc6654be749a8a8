/* Every exported function refuses bad arguments with a status and a message
 * naming the argument and value, and writes nothing outside its output. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "testutil.h"

static void test_context_arguments(void **state) {
  (void)state;
  TU_EXPECT_ERROR(fp8gemm_context_create(NULL, NULL), FP8GEMM_ERROR_INVALID_ARGUMENT, "context");
  fp8gemm_context_options o;
  fp8gemm_context_options_init(&o);
  fp8gemm_context *ctx = (fp8gemm_context *)0x1;
  o.num_threads = -3;
  TU_EXPECT_ERROR(fp8gemm_context_create(&o, &ctx), FP8GEMM_ERROR_INVALID_ARGUMENT, "num_threads=-3");
  assert_null(ctx);
  fp8gemm_context_options_init(&o);
  o.backend = (fp8gemm_backend)42;
  TU_EXPECT_ERROR(fp8gemm_context_create(&o, &ctx), FP8GEMM_ERROR_INVALID_ARGUMENT, "backend=42");
  fp8gemm_context_options_init(&o);
  o.isa = "sse1";
  TU_EXPECT_ERROR(fp8gemm_context_create(&o, &ctx), FP8GEMM_ERROR_INVALID_ARGUMENT, "sse1");
#ifndef FP8GEMM_HAVE_CUDA
  fp8gemm_context_options_init(&o);
  o.backend = FP8GEMM_BACKEND_CUDA;
  TU_EXPECT_ERROR(fp8gemm_context_create(&o, &ctx), FP8GEMM_ERROR_NO_DEVICE, "cuda");
#endif
  fp8gemm_context_options_init(&o);
  o.backend = FP8GEMM_BACKEND_AUTO;
  TU_OK(fp8gemm_context_create(&o, &ctx));
  assert_true(fp8gemm_context_backend(ctx) == FP8GEMM_BACKEND_CPU ||
              fp8gemm_backend_available(FP8GEMM_BACKEND_CUDA));
  fp8gemm_context_destroy(ctx);
  fp8gemm_context_destroy(NULL);
  TU_EXPECT_ERROR(fp8gemm_context_synchronize(NULL), FP8GEMM_ERROR_INVALID_ARGUMENT, "context");
}

static void test_quantize_arguments(void **state) {
  (void)state;
  fp8gemm_context *ctx;
  TU_OK(fp8gemm_context_create(NULL, &ctx));
  float x[4 * 128] = {1.0f}, s[8];
  uint8_t q[4 * 128 + 16];
  memset(q, 0xEE, sizeof q);
  TU_EXPECT_ERROR(fp8gemm_quantize_activations(ctx, 0, 128, FP8GEMM_DTYPE_F32, x, 128, q, 128, s, FP8GEMM_SCALE_ROW_MAJOR, 1),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "M=0");
  TU_EXPECT_ERROR(fp8gemm_quantize_activations(ctx, 4, 120, FP8GEMM_DTYPE_F32, x, 128, q, 128, s, FP8GEMM_SCALE_ROW_MAJOR, 1),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "K=120");
  TU_EXPECT_ERROR(fp8gemm_quantize_activations(ctx, (size_t)1 << 40, 128, FP8GEMM_DTYPE_F32, x, 128, q, 128, s, FP8GEMM_SCALE_ROW_MAJOR, 1),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "M=1099511627776");
  TU_EXPECT_ERROR(fp8gemm_quantize_activations(ctx, 4, 128, FP8GEMM_DTYPE_E4M3FN, x, 128, q, 128, s, FP8GEMM_SCALE_ROW_MAJOR, 1),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "x_dtype e4m3fn");
  TU_EXPECT_ERROR(fp8gemm_quantize_activations(ctx, 4, 128, FP8GEMM_DTYPE_F32, NULL, 128, q, 128, s, FP8GEMM_SCALE_ROW_MAJOR, 1),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "'x'");
  TU_EXPECT_ERROR(fp8gemm_quantize_activations(ctx, 4, 128, FP8GEMM_DTYPE_F32, x, 64, q, 128, s, FP8GEMM_SCALE_ROW_MAJOR, 1),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "ldx=64");
  TU_EXPECT_ERROR(fp8gemm_quantize_activations(ctx, 4, 128, FP8GEMM_DTYPE_F32, x, 128, q, 128, s, FP8GEMM_SCALE_M_MAJOR, 3),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "scale_ld=3 < M=4");
  for (size_t i = 0; i < sizeof q; i++) assert_int_equal(q[i], 0xEE); /* nothing written */
  float w[32 * 128];
  for (int i = 0; i < 32 * 128; i++) w[i] = 0.01f * (float)(i % 50);
  w[77] = INFINITY;
  uint8_t wq[32 * 128];
  float ws[1];
  TU_EXPECT_ERROR(fp8gemm_quantize_weight(ctx, 32, 128, FP8GEMM_DTYPE_F32, w, 128, wq, ws),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "inf");
  TU_EXPECT_ERROR(fp8gemm_quantize_weight(ctx, 32, 100, FP8GEMM_DTYPE_F32, w, 128, wq, ws),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "K=100");
  TU_EXPECT_ERROR(fp8gemm_quantize_weight(ctx, 0, 128, FP8GEMM_DTYPE_F32, w, 128, wq, ws),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "N=0");
  TU_EXPECT_ERROR(fp8gemm_quantize_weight(ctx, 32, 128, FP8GEMM_DTYPE_F32, w, 100, wq, ws),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "ldw=100");
  fp8gemm_context_destroy(ctx);
}

static void test_weight_arguments(void **state) {
  (void)state;
  fp8gemm_context *ctx;
  TU_OK(fp8gemm_context_create(NULL, &ctx));
  uint8_t wq[64 * 256];
  for (size_t i = 0; i < sizeof wq; i++) wq[i] = (uint8_t)(i * 7 % 0x7E);
  float scales[2] = {0.01f, 0.02f};
  fp8gemm_weight_desc d;
  fp8gemm_weight *w = (fp8gemm_weight *)0x1;
#define RESET()                     \
  fp8gemm_weight_desc_init(&d);     \
  d.N = 64;                         \
  d.K = 256;                        \
  d.data = wq;                      \
  d.scale_inv = scales
  RESET();
  TU_EXPECT_ERROR(fp8gemm_weight_create(NULL, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "context");
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, NULL, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "desc");
  d.data = NULL;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "data is NULL");
  assert_null(w);
  RESET();
  d.scale_inv = NULL;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "scale_inv is NULL");
  RESET();
  d.K = 200;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "K=200");
  RESET();
  d.N = 0;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "N=0");
  RESET();
  d.N = (size_t)1 << 40;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "N=1099511627776");
  RESET();
  d.dtype = FP8GEMM_DTYPE_E4M3FNUZ;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_UNSUPPORTED, "e4m3fnuz");
  RESET();
  scales[1] = NAN;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "scale_inv[0][1] = nan");
  scales[1] = -0.5f;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "scale_inv[0][1] = -0.5");
  scales[1] = 0.0f;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "scale_inv[0][1] = 0");
  scales[1] = INFINITY;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "scale_inv[0][1] = inf");
  scales[1] = 0.02f;
  RESET();
  d.target_layout = FP8GEMM_LAYOUT_AITER16X16;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_UNSUPPORTED, "aiter16x16");
  RESET();
  d.layout = FP8GEMM_LAYOUT_AITER16X16;
  d.K = 240;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "K=240");
  RESET();
  d.memory = FP8GEMM_MEMORY_DEVICE;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "memory=device");
  RESET();
  d.bias = scales;
  d.bias_dtype = FP8GEMM_DTYPE_E4M3FN;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "bias_dtype");
  /* A NaN code in the weight is refused, and an in-place buffer is left as it was. */
  RESET();
  uint8_t copy[sizeof wq];
  wq[3 * 256 + 17] = 0xFF;
  memcpy(copy, wq, sizeof wq);
  TU_EXPECT_ERROR(fp8gemm_weight_create_in_place(ctx, &d, wq, &w), FP8GEMM_ERROR_INVALID_ARGUMENT, "NaN");
  assert_memory_equal(copy, wq, sizeof wq);
  wq[3 * 256 + 17] = 0x11;
#undef RESET
  fp8gemm_weight_destroy(NULL);
  TU_EXPECT_ERROR(fp8gemm_weight_export(NULL, FP8GEMM_LAYOUT_PLAIN, wq), FP8GEMM_ERROR_INVALID_ARGUMENT, "weight");
  fp8gemm_context_destroy(ctx);
}

static void test_forward_arguments(void **state) {
  (void)state;
  fp8gemm_context *ctx;
  TU_OK(fp8gemm_context_create(NULL, &ctx));
  tu_rng rng = tu_rng_make(tu_seed());
  tu_problem p;
  tu_problem_make(ctx, &rng, 4, 48, 128, 0, &p);
  fp8gemm_weight_desc d;
  fp8gemm_weight_desc_init(&d);
  d.N = 48;
  d.K = 128;
  d.data = p.wq;
  d.scale_inv = p.w_scale;
  fp8gemm_weight *w;
  TU_OK(fp8gemm_weight_create(ctx, &d, &w));
  float y[4 * 48 + 8];
  for (size_t i = 0; i < 4 * 48 + 8; i++) y[i] = -7.0f;
  TU_EXPECT_ERROR(fp8gemm_linear(ctx, w, 0, FP8GEMM_DTYPE_F32, p.x, 128, -1, y, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "M=0");
  TU_EXPECT_ERROR(fp8gemm_linear(ctx, w, 4, FP8GEMM_DTYPE_F32, p.x, 100, -1, y, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "ldx=100");
  TU_EXPECT_ERROR(fp8gemm_linear(ctx, w, 4, FP8GEMM_DTYPE_F32, p.x, 128, -1, y, 40, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "ldy=40");
  TU_EXPECT_ERROR(fp8gemm_linear(ctx, w, 4, FP8GEMM_DTYPE_F32, p.x, 128, 17, y, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "y_dtype 17");
  TU_EXPECT_ERROR(fp8gemm_linear(ctx, w, 4, FP8GEMM_DTYPE_E4M3FN, p.x, 128, -1, y, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "x_dtype");
  TU_EXPECT_ERROR(fp8gemm_linear(ctx, w, 4, FP8GEMM_DTYPE_F32, NULL, 128, -1, y, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "'x'");
  TU_EXPECT_ERROR(fp8gemm_linear(ctx, NULL, 4, FP8GEMM_DTYPE_F32, p.x, 128, -1, y, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "'weight'");
  TU_EXPECT_ERROR(fp8gemm_linear(ctx, w, 4, FP8GEMM_DTYPE_F32, p.x, 128, -1, NULL, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "'y'");
  TU_EXPECT_ERROR(fp8gemm_linear(ctx, w, (size_t)1 << 33, FP8GEMM_DTYPE_F32, p.x, 128, -1, y, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "M=8589934592");
  TU_EXPECT_ERROR(fp8gemm_gemm(ctx, w, 4, NULL, 128, p.x_scale, FP8GEMM_SCALE_ROW_MAJOR, 1, FP8GEMM_DTYPE_F32, y, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "'xq'");
  TU_EXPECT_ERROR(fp8gemm_gemm(ctx, w, 4, p.xq, 128, NULL, FP8GEMM_SCALE_ROW_MAJOR, 1, FP8GEMM_DTYPE_F32, y, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "'x_scale'");
  TU_EXPECT_ERROR(fp8gemm_gemm(ctx, w, 4, p.xq, 64, p.x_scale, FP8GEMM_SCALE_ROW_MAJOR, 1, FP8GEMM_DTYPE_F32, y, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "ldq=64");
  TU_EXPECT_ERROR(fp8gemm_gemm(ctx, w, 4, p.xq, 128, p.x_scale, FP8GEMM_SCALE_ROW_MAJOR, 1, FP8GEMM_DTYPE_E4M3FN, y, 48, NULL, 0), FP8GEMM_ERROR_INVALID_ARGUMENT, "y_dtype");
  size_t bytes;
  TU_EXPECT_ERROR(fp8gemm_linear_workspace_size(ctx, w, 0, &bytes), FP8GEMM_ERROR_INVALID_ARGUMENT, "M=0");
  for (size_t i = 0; i < 4 * 48 + 8; i++) assert_true(y[i] == -7.0f); /* nothing written */
  /* Exactly M x N written: the guard past the end stays. */
  TU_OK(fp8gemm_linear(ctx, w, 4, FP8GEMM_DTYPE_F32, p.x, 128, -1, y, 48, NULL, 0));
  for (size_t i = 4 * 48; i < 4 * 48 + 8; i++) assert_true(y[i] == -7.0f);
  for (size_t i = 0; i < 4 * 48; i++) assert_true(isfinite(y[i]) && y[i] != -7.0f);
  fp8gemm_weight_destroy(w);

  /* A kernel handed a weight in a layout it does not read stops with an
   * error (white box: a handle forged with AMD's layout). */
  fp8gemm_weight forged = {0};
  forged.backend = FP8GEMM_BACKEND_CPU;
  forged.ops = &fp8gemm_cpu_backend;
  forged.context = ctx;
  forged.N = 48;
  forged.K = 128;
  forged.layout = FP8GEMM_LAYOUT_AITER16X16;
  forged.data = p.wq;
  forged.scale_inv = forged.host_scale_inv = p.w_scale;
  TU_EXPECT_ERROR(fp8gemm_linear(ctx, &forged, 4, FP8GEMM_DTYPE_F32, p.x, 128, -1, y, 48, NULL, 0),
                  FP8GEMM_ERROR_LAYOUT_MISMATCH, "aiter16x16");
  forged.layout = FP8GEMM_LAYOUT_PRESHUFFLED_SM90;
  TU_EXPECT_ERROR(fp8gemm_gemm(ctx, &forged, 4, p.xq, 128, p.x_scale, FP8GEMM_SCALE_ROW_MAJOR, 1, FP8GEMM_DTYPE_F32, y, 48, NULL, 0),
                  FP8GEMM_ERROR_LAYOUT_MISMATCH, "preshuffled_sm90");
  tu_problem_free(&p);
  fp8gemm_context_destroy(ctx);
}

static void test_memory_arguments(void **state) {
  (void)state;
  fp8gemm_context *ctx;
  TU_OK(fp8gemm_context_create(NULL, &ctx));
  void *ptr;
  TU_EXPECT_ERROR(fp8gemm_memory_alloc(ctx, 0, &ptr), FP8GEMM_ERROR_INVALID_ARGUMENT, "bytes=0");
  TU_OK(fp8gemm_memory_alloc(ctx, 1000, &ptr));
  assert_int_equal((uintptr_t)ptr % 64, 0);
  char src[1000];
  memset(src, 3, sizeof src);
  TU_OK(fp8gemm_memory_copy(ctx, ptr, src, 1000, FP8GEMM_COPY_HOST_TO_BACKEND));
  assert_memory_equal(ptr, src, 1000);
  TU_EXPECT_ERROR(fp8gemm_memory_copy(ctx, ptr, src, 10, (fp8gemm_copy_kind)9), FP8GEMM_ERROR_INVALID_ARGUMENT, "kind=9");
  TU_EXPECT_ERROR(fp8gemm_memory_copy(ctx, NULL, src, 10, FP8GEMM_COPY_HOST_TO_BACKEND), FP8GEMM_ERROR_INVALID_ARGUMENT, "dst");
  fp8gemm_memory_free(ctx, ptr);
  fp8gemm_context_destroy(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_context_arguments), cmocka_unit_test(test_quantize_arguments),
      cmocka_unit_test(test_weight_arguments),  cmocka_unit_test(test_forward_arguments),
      cmocka_unit_test(test_memory_arguments),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
