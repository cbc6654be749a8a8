/* fp8gemm_weight_create_from_safetensors: a weight handle straight from an
 * FP8 block checkpoint, in every recorded layout, and the errors that name
 * the tensor at fault. */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

typedef struct fixture {
  fp8gemm_context *ctx;
  char dir[64];
  char path[128];
  size_t N, K;
  float *w;
  uint8_t *wq;
  float *scales;
  float *bias;
} fixture;

static int setup(void **state) {
  fixture *f = calloc(1, sizeof *f);
  if (!f) return -1;
  fp8gemm_context_options options;
  fp8gemm_context_options_init(&options);
  options.backend = FP8GEMM_BACKEND_CPU;
  if (fp8gemm_context_create(&options, &f->ctx) != FP8GEMM_OK) return -1;
  snprintf(f->dir, sizeof f->dir, "/tmp/fp8gemm-ckpt-XXXXXX");
  if (!mkdtemp(f->dir)) return -1;
  snprintf(f->path, sizeof f->path, "%s/ckpt.safetensors", f->dir);
  /* Partial blocks on both axes; N % 16 == 0 and K % 32 == 0 so that every
   * layout can hold it. */
  f->N = 144;
  f->K = 288;
  tu_rng rng = tu_rng_make(tu_seed());
  f->w = tu_malloc(f->N * f->K * sizeof(float));
  tu_fill_normal(&rng, f->w, f->N * f->K, 0.05f);
  f->wq = tu_malloc(f->N * f->K);
  f->scales = tu_malloc(2 * 3 * sizeof(float));
  if (fp8gemm_quantize_weight(f->ctx, f->N, f->K, FP8GEMM_DTYPE_F32, f->w, f->K, f->wq,
                              f->scales) != FP8GEMM_OK)
    return -1;
  f->bias = tu_malloc(f->N * sizeof(float));
  tu_fill_normal(&rng, f->bias, f->N, 1.0f);
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture *f = *state;
  unlink(f->path);
  rmdir(f->dir);
  fp8gemm_context_destroy(f->ctx);
  free(f->w);
  free(f->wq);
  free(f->scales);
  free(f->bias);
  free(f);
  return 0;
}

/* Writes "layer.weight" in `layout` (+ scales, + bias) with extra metadata. */
static void write_checkpoint(fixture *f, fp8gemm_layout layout, int with_bias,
                             const char *meta_key, const char *meta_value) {
  uint8_t *stored = tu_malloc(f->N * f->K);
  TU_OK(fp8gemm_shuffle(f->ctx, f->N, f->K, FP8GEMM_LAYOUT_PLAIN, f->wq, layout, stored));
  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, FP8GEMM_ST_META_FORMAT,
                                                FP8GEMM_ST_FORMAT_BLOCK128));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, FP8GEMM_ST_META_BLOCK, FP8GEMM_ST_BLOCK128));
  if (layout != FP8GEMM_LAYOUT_PLAIN)
    TU_OK(fp8gemm_safetensors_writer_set_metadata(w, "fp8gemm.layout.layer.weight",
                                                  fp8gemm_layout_name(layout)));
  if (meta_key) TU_OK(fp8gemm_safetensors_writer_set_metadata(w, meta_key, meta_value));
  /* A 1-byte tensor first puts the F32 tensors off their alignment, as
   * files from other writers may. */
  uint8_t odd = 7;
  TU_OK(fp8gemm_safetensors_writer_add(w, "odd", FP8GEMM_ST_U8, 1, (size_t[]){1}, &odd));
  TU_OK(fp8gemm_safetensors_writer_add(w, "layer.weight", FP8GEMM_ST_F8_E4M3, 2,
                                       (size_t[]){f->N, f->K}, stored));
  TU_OK(fp8gemm_safetensors_writer_add(w, "layer.weight_scale_inv", FP8GEMM_ST_F32, 2,
                                       (size_t[]){2, 3}, f->scales));
  if (with_bias)
    TU_OK(fp8gemm_safetensors_writer_add(w, "layer.bias", FP8GEMM_ST_F32, 1, (size_t[]){f->N},
                                         f->bias));
  TU_OK(fp8gemm_safetensors_writer_write(w, f->path));
  fp8gemm_safetensors_writer_destroy(w);
  free(stored);
}

/* y of the loaded weight equals y of a weight created from memory. */
static void check_same_forward(fixture *f, const fp8gemm_weight *loaded, int with_bias) {
  fp8gemm_weight_desc desc;
  fp8gemm_weight_desc_init(&desc);
  desc.N = f->N;
  desc.K = f->K;
  desc.dtype = FP8GEMM_DTYPE_E4M3FN;
  desc.data = f->wq;
  desc.scale_inv = f->scales;
  desc.bias = with_bias ? f->bias : NULL;
  desc.bias_dtype = FP8GEMM_DTYPE_F32;
  fp8gemm_weight *direct;
  TU_OK(fp8gemm_weight_create(f->ctx, &desc, &direct));
  const size_t M = 5;
  tu_rng rng = tu_rng_make(99);
  float *x = tu_malloc(M * f->K * sizeof(float));
  tu_fill_normal(&rng, x, M * f->K, 1.0f);
  float *y1 = tu_malloc(M * f->N * sizeof(float)), *y2 = tu_malloc(M * f->N * sizeof(float));
  TU_OK(fp8gemm_linear(f->ctx, loaded, M, FP8GEMM_DTYPE_F32, x, f->K, FP8GEMM_DTYPE_F32, y1,
                       f->N, NULL, 0));
  TU_OK(fp8gemm_linear(f->ctx, direct, M, FP8GEMM_DTYPE_F32, x, f->K, FP8GEMM_DTYPE_F32, y2,
                       f->N, NULL, 0));
  assert_memory_equal(y1, y2, M * f->N * sizeof(float));
  fp8gemm_weight_destroy(direct);
  free(x);
  free(y1);
  free(y2);
}

static void test_loads_every_layout(void **state) {
  fixture *f = *state;
  for (int l = 0; l < FP8GEMM_LAYOUT_COUNT; l++) {
    fp8gemm_layout layout = (fp8gemm_layout)l;
    if (fp8gemm_layout_check(layout, f->N, f->K) != FP8GEMM_OK) continue;
    for (int with_bias = 0; with_bias < 2; with_bias++) {
      write_checkpoint(f, layout, with_bias, NULL, NULL);
      fp8gemm_safetensors *file;
      TU_OK(fp8gemm_safetensors_open(f->path, &file));
      fp8gemm_weight *weight;
      TU_OK(fp8gemm_weight_create_from_safetensors(f->ctx, file, "layer", &weight));
      fp8gemm_safetensors_close(file); /* the handle owns its bytes */
      assert_int_equal(fp8gemm_weight_n(weight), f->N);
      assert_int_equal(fp8gemm_weight_k(weight), f->K);
      uint8_t *plain = tu_malloc(f->N * f->K);
      TU_OK(fp8gemm_weight_export(weight, FP8GEMM_LAYOUT_PLAIN, plain));
      if (memcmp(plain, f->wq, f->N * f->K))
        fail_msg("stored as %s: the loaded weight differs", fp8gemm_layout_name(layout));
      check_same_forward(f, weight, with_bias);
      free(plain);
      fp8gemm_weight_destroy(weight);
    }
  }
}

static void expect_load_error(fixture *f, const char *name, fp8gemm_status want,
                              const char *needle) {
  fp8gemm_safetensors *file;
  TU_OK(fp8gemm_safetensors_open(f->path, &file));
  fp8gemm_weight *weight = (fp8gemm_weight *)f; /* must be reset to NULL */
  TU_EXPECT_ERROR(fp8gemm_weight_create_from_safetensors(f->ctx, file, name, &weight), want,
                  needle);
  assert_null(weight);
  fp8gemm_safetensors_close(file);
}

static void test_errors_name_the_tensor(void **state) {
  fixture *f = *state;
  write_checkpoint(f, FP8GEMM_LAYOUT_PLAIN, 0, NULL, NULL);
  expect_load_error(f, "other", FP8GEMM_ERROR_INVALID_ARGUMENT, "no tensor named 'other.weight'");
  expect_load_error(f, "odd", FP8GEMM_ERROR_INVALID_ARGUMENT, "no tensor named 'odd.weight'");

  write_checkpoint(f, FP8GEMM_LAYOUT_PLAIN, 0, FP8GEMM_ST_META_FORMAT, "mxfp4");
  expect_load_error(f, "layer", FP8GEMM_ERROR_UNSUPPORTED, "'fp8gemm.format' is 'mxfp4'");
  write_checkpoint(f, FP8GEMM_LAYOUT_PLAIN, 0, FP8GEMM_ST_META_BLOCK, "1,128");
  expect_load_error(f, "layer", FP8GEMM_ERROR_UNSUPPORTED, "'fp8gemm.block' is '1,128'");
  write_checkpoint(f, FP8GEMM_LAYOUT_PLAIN, 0, "fp8gemm.layout.layer.weight", "spiral");
  expect_load_error(f, "layer", FP8GEMM_ERROR_PARSE, "unknown layout 'spiral'");

  /* Hand-made files with one tensor wrong each. */
  struct {
    const char *scale_dtype;
    size_t scale_rows;
    const char *bias_dtype;
    size_t bias_len;
    const char *needle;
  } cases[] = {
      {"F16", 2, NULL, 0, "tensor 'layer.weight_scale_inv': field 'dtype' is F16, expected F32"},
      {"F32", 1, NULL, 0, "tensor 'layer.weight_scale_inv': field 'shape' is [1, 3], expected [2, 3]"},
      {"F32", 2, "I32", f->N, "tensor 'layer.bias': field 'dtype' is I32"},
      {"F32", 2, "F32", f->N - 1, "tensor 'layer.bias': field 'shape' is [143], expected [144]"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    fp8gemm_safetensors_writer *w;
    TU_OK(fp8gemm_safetensors_writer_create(&w));
    TU_OK(fp8gemm_safetensors_writer_add(w, "layer.weight", FP8GEMM_ST_F8_E4M3, 2,
                                         (size_t[]){f->N, f->K}, f->wq));
    fp8gemm_st_dtype sd;
    TU_OK(fp8gemm_st_dtype_from_name(cases[i].scale_dtype, &sd));
    TU_OK(fp8gemm_safetensors_writer_add(w, "layer.weight_scale_inv", sd, 2,
                                         (size_t[]){cases[i].scale_rows, 3}, f->scales));
    if (cases[i].bias_dtype) {
      fp8gemm_st_dtype bd;
      TU_OK(fp8gemm_st_dtype_from_name(cases[i].bias_dtype, &bd));
      TU_OK(fp8gemm_safetensors_writer_add(w, "layer.bias", bd, 1, (size_t[]){cases[i].bias_len},
                                           f->bias));
    }
    TU_OK(fp8gemm_safetensors_writer_write(w, f->path));
    fp8gemm_safetensors_writer_destroy(w);
    expect_load_error(f, "layer", FP8GEMM_ERROR_INVALID_ARGUMENT, cases[i].needle);
  }

  /* A BF16 weight is not an FP8 block weight. */
  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_OK(fp8gemm_safetensors_writer_add(w, "layer.weight", FP8GEMM_ST_BF16, 2,
                                       (size_t[]){f->N, f->K / 2}, f->wq));
  TU_OK(fp8gemm_safetensors_writer_write(w, f->path));
  fp8gemm_safetensors_writer_destroy(w);
  expect_load_error(f, "layer", FP8GEMM_ERROR_INVALID_ARGUMENT,
                    "tensor 'layer.weight': is BF16 of rank 2, expected F8_E4M3");

  fp8gemm_safetensors *file;
  TU_OK(fp8gemm_safetensors_open(f->path, &file));
  fp8gemm_weight *weight;
  TU_EXPECT_ERROR(fp8gemm_weight_create_from_safetensors(NULL, file, "layer", &weight),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "context");
  TU_EXPECT_ERROR(fp8gemm_weight_create_from_safetensors(f->ctx, NULL, "layer", &weight),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "file");
  TU_EXPECT_ERROR(fp8gemm_weight_create_from_safetensors(f->ctx, file, NULL, &weight),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "name");
  TU_EXPECT_ERROR(fp8gemm_weight_create_from_safetensors(f->ctx, file, "layer", NULL),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "weight");
  fp8gemm_safetensors_close(file);
}

/* A layout whose shape rule the weight breaks is refused, naming it. */
static void test_layout_that_does_not_fit(void **state) {
  fixture *f = *state;
  const size_t N = 136, K = 128; /* N % 16 != 0: aiter16x16 cannot hold it */
  uint8_t *wq = tu_malloc(N * K);
  memset(wq, 0x38, N * K);
  float scales[2] = {1.0f, 1.0f};
  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, "fp8gemm.layout.layer.weight", "aiter16x16"));
  TU_OK(fp8gemm_safetensors_writer_add(w, "layer.weight", FP8GEMM_ST_F8_E4M3, 2,
                                       (size_t[]){N, K}, wq));
  TU_OK(fp8gemm_safetensors_writer_add(w, "layer.weight_scale_inv", FP8GEMM_ST_F32, 2,
                                       (size_t[]){2, 1}, scales));
  TU_OK(fp8gemm_safetensors_writer_write(w, f->path));
  fp8gemm_safetensors_writer_destroy(w);
  fp8gemm_safetensors *file;
  TU_OK(fp8gemm_safetensors_open(f->path, &file));
  fp8gemm_weight *weight;
  fp8gemm_status status = fp8gemm_weight_create_from_safetensors(f->ctx, file, "layer", &weight);
  assert_int_not_equal(status, FP8GEMM_OK);
  assert_non_null(strstr(fp8gemm_last_error(), "tensor 'layer.weight' (layout aiter16x16)"));
  fp8gemm_safetensors_close(file);
  free(wq);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_loads_every_layout, setup, teardown),
      cmocka_unit_test_setup_teardown(test_errors_name_the_tensor, setup, teardown),
      cmocka_unit_test_setup_teardown(test_layout_that_does_not_fit, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
