/* The tuned table: the format, each kind of error (naming the line), the
 * lookup rules, loading from a path or FP8GEMM_TUNED, and that a weight
 * keeps the layout it was created with when the table changes. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "internal.h"
#include "testutil.h"

#define HEADER "backend,device,N,K,layout,kernel,crossover_m,m_values,plain_us,preshuffled_us\n"

static void expect_parse_error(const char *text, const char *needle) {
  fp8gemm_tuned_table table;
  TU_EXPECT_ERROR(fp8gemm_tuned_table_parse(text, "t.csv", &table), FP8GEMM_ERROR_PARSE, needle);
  assert_null(table.entries);
}

static void test_parse_ok_and_find(void **state) {
  (void)state;
  fp8gemm_tuned_table table;
  TU_OK(fp8gemm_tuned_table_parse("# comment\n\n" HEADER
                                  "cpu,*,2112,7168,plain,f8f32_gemm,8,1 16 128,10 20 30,11 21 31\n"
                                  "cpu,avx2,2112,7168,preshuffled,f8f32_gemm,default,,,\n"
                                  "cpu,avx2,4096,7168,preshuffled,f8f32_gemm,0,,,\n"
                                  "cuda,*,4096,7168,preshuffled,sm90_gemm,64,1,5.5,4.5\n",
                                  "t.csv", &table));
  assert_int_equal(table.count, 4);
  const fp8gemm_tuned_entry *e = fp8gemm_tuned_table_find(&table, "cpu", "avx2", 2112, 7168);
  assert_non_null(e);
  assert_int_equal(e->layout, FP8GEMM_LAYOUT_PRESHUFFLED_CPU); /* exact device beats '*' */
  assert_true(e->crossover_m == FP8GEMM_CROSSOVER_DEFAULT);
  e = fp8gemm_tuned_table_find(&table, "cpu", "avx2", 4096, 7168);
  assert_non_null(e);
  assert_int_equal(e->crossover_m, 0); /* 0: never the small-M kernel */
  e = fp8gemm_tuned_table_find(&table, "cpu", "generic", 2112, 7168);
  assert_non_null(e);
  assert_int_equal(e->layout, FP8GEMM_LAYOUT_PLAIN);
  assert_int_equal(e->crossover_m, 8);
  e = fp8gemm_tuned_table_find(&table, "cuda", "NVIDIA H100", 4096, 7168);
  assert_non_null(e);
  assert_int_equal(e->layout, FP8GEMM_LAYOUT_PRESHUFFLED_SM90);
  assert_null(fp8gemm_tuned_table_find(&table, "cpu", "avx2", 4096, 2048));
  fp8gemm_tuned_table_free(&table);
}

static void test_parse_errors(void **state) {
  (void)state;
  expect_parse_error("backend,device,N,K\ncpu,*,1,2\n", "t.csv:1: bad header");
  expect_parse_error("", "no header");
  expect_parse_error(HEADER "cpu,*,abc,128,plain,k,0,,,\n", "t.csv:2: N 'abc'");
  expect_parse_error(HEADER "cpu,*,128,-5,plain,k,0,,,\n", "t.csv:2: K '-5'");
  expect_parse_error(HEADER "\n\ncpu,*,128,128,plain,k,x,,,\n", "t.csv:4: crossover_m 'x'");
  expect_parse_error(HEADER "cpu,*,128,128,plain,k,0,1 2,1.5,2\n", "t.csv:2: 2 m_values but 1 plain_us");
  expect_parse_error(HEADER "cpu,*,128,128,plain,k,0,1,nan,2\n", "t.csv:2: plain_us/preshuffled_us");
  expect_parse_error(HEADER "cpu,*,128,128,plain,k,0,1 a,1 2,1 2\n", "t.csv:2: m_values '1 a'");
  expect_parse_error(HEADER "cpu,*,128,128,plain\n", "t.csv:2: 5 fields");
  expect_parse_error(HEADER "tpu,*,128,128,plain,k,0,,,\n", "backend 'tpu'");
  expect_parse_error(HEADER "cpu,*,128,128,aiter16x16,k,0,,,\n", "layout 'aiter16x16'");
  expect_parse_error(HEADER "cpu,*,128,128,preshuffled_sm90,k,0,,,\n", "layout 'preshuffled_sm90'");
  expect_parse_error(HEADER "cpu,*,128,128,plain,k,0,,,\ncpu,*,128,128,preshuffled,k,0,,,\n",
                     "t.csv:3: duplicate row");
}

static char *write_temp(const char *text) {
  char *path = strdup("/tmp/fp8gemm_tuned_XXXXXX");
  int fd = mkstemp(path);
  assert_true(fd >= 0);
  assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
  close(fd);
  return path;
}

static void test_context_uses_table(void **state) {
  (void)state;
  char *path = write_temp(HEADER "cpu,*,256,512,plain,k,0,,,\n");
  fp8gemm_context_options options;
  fp8gemm_context_options_init(&options);
  options.tuned_table_path = path;
  fp8gemm_context *ctx;
  TU_OK(fp8gemm_context_create(&options, &ctx));
  fp8gemm_layout layout;
  TU_OK(fp8gemm_context_choose_layout(ctx, 256, 512, &layout));
  assert_int_equal(layout, FP8GEMM_LAYOUT_PLAIN);
  TU_OK(fp8gemm_context_choose_layout(ctx, 512, 256, &layout)); /* not listed: preshuffled */
  assert_int_equal(layout, FP8GEMM_LAYOUT_PRESHUFFLED_CPU);

  /* A weight keeps its layout whatever table a later context reads. */
  tu_rng rng = tu_rng_make(tu_seed());
  tu_problem p;
  tu_problem_make(ctx, &rng, 3, 256, 512, 0, &p);
  fp8gemm_weight_desc desc;
  fp8gemm_weight_desc_init(&desc);
  desc.N = 256;
  desc.K = 512;
  desc.data = p.wq;
  desc.scale_inv = p.w_scale;
  fp8gemm_weight *w;
  TU_OK(fp8gemm_weight_create(ctx, &desc, &w));
  assert_int_equal(fp8gemm_weight_layout(w), FP8GEMM_LAYOUT_PLAIN);
  fp8gemm_context *ctx2;
  TU_OK(fp8gemm_context_create(NULL, &ctx2)); /* shipped table: preshuffles 256x512 */
  TU_OK(fp8gemm_context_choose_layout(ctx2, 256, 512, &layout));
  assert_int_equal(layout, FP8GEMM_LAYOUT_PRESHUFFLED_CPU);
  float y1[3 * 256], y2[3 * 256];
  TU_OK(fp8gemm_linear(ctx2, w, 3, FP8GEMM_DTYPE_F32, p.x, 512, -1, y2, 256, NULL, 0));
  TU_OK(fp8gemm_linear(ctx, w, 3, FP8GEMM_DTYPE_F32, p.x, 512, -1, y1, 256, NULL, 0));
  assert_memory_equal(y1, y2, sizeof y1);
  assert_int_equal(fp8gemm_weight_layout(w), FP8GEMM_LAYOUT_PLAIN);
  fp8gemm_weight_destroy(w);
  fp8gemm_context_destroy(ctx2);
  fp8gemm_context_destroy(ctx);
  tu_problem_free(&p);

  /* FP8GEMM_TUNED is read when no path is given; a broken file is an error
   * that names it. */
  char *bad = write_temp(HEADER "cpu,*,256,512,plain,k,0,,,\ncpu,*,256,512,plain,k,0,,,\n");
  setenv("FP8GEMM_TUNED", bad, 1);
  TU_EXPECT_ERROR(fp8gemm_context_create(NULL, &ctx), FP8GEMM_ERROR_PARSE, bad);
  setenv("FP8GEMM_TUNED", "/nonexistent/table.csv", 1);
  TU_EXPECT_ERROR(fp8gemm_context_create(NULL, &ctx), FP8GEMM_ERROR_IO, "/nonexistent/table.csv");
  setenv("FP8GEMM_TUNED", path, 1);
  TU_OK(fp8gemm_context_create(NULL, &ctx));
  TU_OK(fp8gemm_context_choose_layout(ctx, 256, 512, &layout));
  assert_int_equal(layout, FP8GEMM_LAYOUT_PLAIN);
  fp8gemm_context_destroy(ctx);
  unsetenv("FP8GEMM_TUNED");
  unlink(bad);
  unlink(path);
  free(bad);
  free(path);
}

static void test_shipped_tables_parse(void **state) {
  (void)state;
  for (int b = FP8GEMM_BACKEND_CPU; b <= FP8GEMM_BACKEND_CUDA; b++) {
    fp8gemm_tuned_table table;
    const char *text = fp8gemm_shipped_table((fp8gemm_backend)b);
    assert_true(strlen(text) > 0);
    TU_OK(fp8gemm_tuned_table_parse(text, "shipped", &table));
    for (size_t i = 0; i < table.count; i++)
      assert_string_equal(table.entries[i].backend, fp8gemm_backend_name((fp8gemm_backend)b));
    fp8gemm_tuned_table_free(&table);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parse_ok_and_find),
      cmocka_unit_test(test_parse_errors),
      cmocka_unit_test(test_context_uses_table),
      cmocka_unit_test(test_shipped_tables_parse),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
