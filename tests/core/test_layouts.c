/* Layouts: every index function is a bijection onto [0, N*K); the backend's
 * shuffles agree with the index functions for every pair of layouts, in
 * place and out of place, and round-trip bit-exactly; AITER's formula holds
 * at hand-computed points; shapes a layout cannot take are refused. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "testutil.h"

static const size_t shapes[][2] = {{16, 32}, {32, 64}, {48, 96}, {128, 128}, {200, 144},
                                   {256, 384}, {2112, 256}, {17, 16}, {1, 16}, {130, 272}};

static void test_bijection(void **state) {
  (void)state;
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const size_t N = shapes[s][0], K = shapes[s][1];
    uint8_t *seen = tu_malloc(N * K);
    for (int l = 0; l < FP8GEMM_LAYOUT_COUNT; l++) {
      if (fp8gemm_layout_check((fp8gemm_layout)l, N, K) != FP8GEMM_OK) continue;
      memset(seen, 0, N * K);
      for (size_t n = 0; n < N; n++)
        for (size_t k = 0; k < K; k++) {
          size_t off = fp8gemm_layout_offset((fp8gemm_layout)l, N, K, n, k);
          if (off >= N * K) fail_msg("%s N=%zu K=%zu (%zu,%zu) -> %zu out of range", fp8gemm_layout_name(l), N, K, n, k, off);
          if (seen[off]++) fail_msg("%s N=%zu K=%zu: offset %zu hit twice", fp8gemm_layout_name(l), N, K, off);
        }
      assert_int_equal(fp8gemm_layout_offset((fp8gemm_layout)l, N, K, N, 0), SIZE_MAX);
      assert_int_equal(fp8gemm_layout_offset((fp8gemm_layout)l, N, K, 0, K), SIZE_MAX);
    }
    free(seen);
  }
}

static void test_aiter_formula_points(void **state) {
  (void)state;
  /* (n/16)*16*K + (k/32)*512 + ((k/16)%2)*256 + (n%16)*16 + (k%16) */
  assert_int_equal(fp8gemm_layout_offset(FP8GEMM_LAYOUT_AITER16X16, 32, 64, 17, 40), 1024 + 512 + 16 + 8);
  assert_int_equal(fp8gemm_layout_offset(FP8GEMM_LAYOUT_AITER16X16, 32, 64, 0, 16), 256);
  assert_int_equal(fp8gemm_layout_offset(FP8GEMM_LAYOUT_AITER16X16, 32, 64, 15, 31), 15 * 16 + 256 + 15);
  assert_int_equal(fp8gemm_layout_offset(FP8GEMM_LAYOUT_AITER16X16, 32, 64, 1, 0), 16);
  /* The CPU panel order: 16-row panels, k-major; a 4-row last panel. */
  assert_int_equal(fp8gemm_layout_offset(FP8GEMM_LAYOUT_PRESHUFFLED_CPU, 20, 32, 3, 2), 2 * 16 + 3);
  assert_int_equal(fp8gemm_layout_offset(FP8GEMM_LAYOUT_PRESHUFFLED_CPU, 20, 32, 17, 2), 16 * 32 + 2 * 4 + 1);
  TU_EXPECT_ERROR(fp8gemm_layout_check(FP8GEMM_LAYOUT_AITER16X16, 200, 64), FP8GEMM_ERROR_INVALID_ARGUMENT, "N=200");
  TU_EXPECT_ERROR(fp8gemm_layout_check(FP8GEMM_LAYOUT_AITER16X16, 32, 48), FP8GEMM_ERROR_INVALID_ARGUMENT, "K=48");
  TU_EXPECT_ERROR(fp8gemm_layout_check((fp8gemm_layout)9, 32, 64), FP8GEMM_ERROR_INVALID_ARGUMENT, "layout 9");
  fp8gemm_layout layout;
  TU_OK(fp8gemm_layout_from_name("aiter16x16", &layout));
  assert_int_equal(layout, FP8GEMM_LAYOUT_AITER16X16);
  TU_EXPECT_ERROR(fp8gemm_layout_from_name("preshuffled", &layout), FP8GEMM_ERROR_INVALID_ARGUMENT, "'preshuffled'");
}

static void test_backend_shuffles(void **state) {
  (void)state;
  fp8gemm_context *ctx;
  TU_OK(fp8gemm_context_create(NULL, &ctx));
  tu_rng rng = tu_rng_make(tu_seed());
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
    const size_t N = shapes[s][0], K = shapes[s][1];
    uint8_t *plain = tu_malloc(N * K), *a = tu_malloc(N * K), *b = tu_malloc(N * K),
            *want = tu_malloc(N * K);
    for (size_t i = 0; i < N * K; i++) plain[i] = (uint8_t)tu_next(&rng);
    for (int from = 0; from < FP8GEMM_LAYOUT_COUNT; from++) {
      if (fp8gemm_layout_check((fp8gemm_layout)from, N, K) != FP8GEMM_OK) continue;
      TU_OK(fp8gemm_shuffle_host_generic(N, K, FP8GEMM_LAYOUT_PLAIN, plain, (fp8gemm_layout)from, a));
      for (int to = 0; to < FP8GEMM_LAYOUT_COUNT; to++) {
        if (fp8gemm_layout_check((fp8gemm_layout)to, N, K) != FP8GEMM_OK) continue;
        TU_OK(fp8gemm_shuffle_host_generic(N, K, FP8GEMM_LAYOUT_PLAIN, plain, (fp8gemm_layout)to, want));
        memset(b, 0xA5, N * K);
        TU_OK(fp8gemm_shuffle(ctx, N, K, (fp8gemm_layout)from, a, (fp8gemm_layout)to, b));
        if (memcmp(b, want, N * K))
          fail_msg("shuffle %s -> %s N=%zu K=%zu differs from the index functions",
                   fp8gemm_layout_name(from), fp8gemm_layout_name(to), N, K);
        memcpy(b, a, N * K);
        TU_OK(fp8gemm_shuffle(ctx, N, K, (fp8gemm_layout)from, b, (fp8gemm_layout)to, b));
        if (memcmp(b, want, N * K))
          fail_msg("in-place shuffle %s -> %s N=%zu K=%zu differs", fp8gemm_layout_name(from),
                   fp8gemm_layout_name(to), N, K);
        TU_OK(fp8gemm_shuffle(ctx, N, K, (fp8gemm_layout)to, b, FP8GEMM_LAYOUT_PLAIN, b));
        if (memcmp(b, plain, N * K))
          fail_msg("round trip via %s N=%zu K=%zu is not bit-exact", fp8gemm_layout_name(to), N, K);
      }
    }
    free(plain);
    free(a);
    free(b);
    free(want);
  }
  uint8_t buf[64 * 64];
  TU_EXPECT_ERROR(fp8gemm_shuffle(ctx, 20, 64, FP8GEMM_LAYOUT_PLAIN, buf, FP8GEMM_LAYOUT_AITER16X16, buf),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "N=20");
  TU_EXPECT_ERROR(fp8gemm_shuffle(ctx, 32, 64, FP8GEMM_LAYOUT_PLAIN, buf, FP8GEMM_LAYOUT_PLAIN, buf + 1),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "overlap");
  TU_EXPECT_ERROR(fp8gemm_shuffle(ctx, 32, 64, FP8GEMM_LAYOUT_PLAIN, NULL, FP8GEMM_LAYOUT_PLAIN, buf),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "src");
  fp8gemm_context_destroy(ctx);
}

/* The reference GEMM reads every layout through its index function: the
 * same weight in any layout gives bit-identical results. */
static void test_reference_any_layout(void **state) {
  (void)state;
  fp8gemm_context *ctx;
  TU_OK(fp8gemm_context_create(NULL, &ctx));
  tu_rng rng = tu_rng_make(tu_seed());
  tu_problem p;
  tu_problem_make(ctx, &rng, 5, 160, 384, 1, &p);
  double *want = tu_reference(&p), *got = tu_malloc(5 * 160 * sizeof(double));
  uint8_t *shuffled = tu_malloc(160 * 384);
  /* M-major scales must give the same numbers as row-major. */
  float *m_major = tu_malloc(5 * p.groups * sizeof(float));
  for (size_t m = 0; m < 5; m++)
    for (size_t g = 0; g < p.groups; g++) m_major[g * 5 + m] = p.x_scale[m * p.groups + g];
  for (int l = 0; l < FP8GEMM_LAYOUT_COUNT; l++) {
    TU_OK(fp8gemm_shuffle_host_generic(160, 384, FP8GEMM_LAYOUT_PLAIN, p.wq, (fp8gemm_layout)l, shuffled));
    TU_OK(fp8gemm_gemm_reference(5, 160, 384, p.xq, 384, m_major, FP8GEMM_SCALE_M_MAJOR, 5, shuffled,
                                 (fp8gemm_layout)l, p.w_scale, p.bias, got, 160));
    assert_memory_equal(got, want, 5 * 160 * sizeof(double));
  }
  TU_EXPECT_ERROR(fp8gemm_gemm_reference(5, 160, 384, p.xq, 384, m_major, FP8GEMM_SCALE_M_MAJOR, 4,
                                         p.wq, FP8GEMM_LAYOUT_PLAIN, p.w_scale, NULL, got, 160),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "scale_ld=4");
  free(m_major);
  free(shuffled);
  free(got);
  free(want);
  tu_problem_free(&p);
  fp8gemm_context_destroy(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_bijection),
      cmocka_unit_test(test_aiter_formula_points),
      cmocka_unit_test(test_backend_shuffles),
      cmocka_unit_test(test_reference_any_layout),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
