/* The CPU backend's shuffles: every ordered pair of layouts, out of place
 * and in place, on shapes with partial 16-row panels and partial 128-wide
 * tiles, with 1, 2 and 3 threads (uneven splits), against the core's index
 * functions; and the NaN-code check with the offending byte named, standalone
 * and riding along weight creation's reordering pass. */
#include "cpu_testing.h"

static const fp8gemm_layout all_layouts[] = {FP8GEMM_LAYOUT_PLAIN, FP8GEMM_LAYOUT_PRESHUFFLED_CPU,
                                             FP8GEMM_LAYOUT_PRESHUFFLED_SM90,
                                             FP8GEMM_LAYOUT_AITER16X16};

static void check_pair(fp8gemm_context *ctx, tu_rng *rng, size_t N, size_t K, fp8gemm_layout from,
                       fp8gemm_layout to) {
  const size_t bytes = N * K;
  uint8_t *plain = tu_malloc(bytes), *src = tu_malloc(bytes), *dst = tu_malloc(bytes + 64);
  for (size_t i = 0; i < bytes; i++) plain[i] = (uint8_t)tu_next(rng);
  for (size_t n = 0; n < N; n++)
    for (size_t k = 0; k < K; k++)
      src[fp8gemm_layout_offset(from, N, K, n, k)] = plain[n * K + k];
  /* Out of place, with a guard after dst. */
  memset(dst, 0xA5, bytes + 64);
  TU_OK(fp8gemm_shuffle(ctx, N, K, from, src, to, dst));
  for (size_t i = bytes; i < bytes + 64; i++)
    if (dst[i] != 0xA5) fail_msg("%s -> %s N=%zu K=%zu wrote past dst", fp8gemm_layout_name(from), fp8gemm_layout_name(to), N, K);
  for (size_t n = 0; n < N; n++)
    for (size_t k = 0; k < K; k++)
      if (dst[fp8gemm_layout_offset(to, N, K, n, k)] != plain[n * K + k])
        fail_msg("%s -> %s N=%zu K=%zu (%d threads): element (%zu, %zu) misplaced",
                 fp8gemm_layout_name(from), fp8gemm_layout_name(to), N, K,
                 fp8gemm_context_num_threads(ctx), n, k);
  /* In place gives the same bytes. */
  TU_OK(fp8gemm_shuffle(ctx, N, K, from, src, to, src));
  if (memcmp(src, dst, bytes))
    fail_msg("%s -> %s N=%zu K=%zu: in place differs from out of place", fp8gemm_layout_name(from),
             fp8gemm_layout_name(to), N, K);
  free(plain);
  free(src);
  free(dst);
}

static void test_all_pairs(void **state) {
  (void)state;
  tu_rng rng = tu_rng_make(tu_seed());
  static const size_t shapes[][2] = {{16, 32},  {17, 16},   {1, 48},    {48, 96},   {200, 144},
                                     {130, 272}, {256, 384}, {2112, 160}, {300, 1024}};
  for (int threads = 1; threads <= 3; threads++) {
    fp8gemm_context *ctx = ct_context(threads);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
      for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 4; b++) {
          const size_t N = shapes[s][0], K = shapes[s][1];
          if (fp8gemm_layout_check(all_layouts[a], N, K) != FP8GEMM_OK ||
              fp8gemm_layout_check(all_layouts[b], N, K) != FP8GEMM_OK)
            continue;
          check_pair(ctx, &rng, N, K, all_layouts[a], all_layouts[b]);
        }
    fp8gemm_context_destroy(ctx);
  }
}

static void test_nan_codes(void **state) {
  (void)state;
  fp8gemm_context *ctx = ct_context(0);
  tu_rng rng = tu_rng_make(tu_seed());
  const size_t N = 1000, K = 2064; /* ~2 MB: the scan is split over threads */
  uint8_t *w = tu_malloc(N * K);
  ct_fill_codes(&rng, w, N * K);
  fp8gemm_weight_desc d;
  fp8gemm_weight_desc_init(&d);
  d.N = N;
  d.K = K;
  d.dtype = FP8GEMM_DTYPE_E4M3FN;
  d.data = w;
  float scales[8 * 17];
  for (size_t i = 0; i < 8 * 17; i++) scales[i] = 1.0f;
  d.scale_inv = scales;
  fp8gemm_weight *weight = NULL;
  TU_OK(fp8gemm_weight_create(ctx, &d, &weight));
  fp8gemm_weight_destroy(weight);
  /* Two NaN codes, the later one in the first thread's half: the first in
   * memory order is named. */
  w[700 * K + 5] = 0xFF;
  w[999 * K + 2063] = 0x7F;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &weight), FP8GEMM_ERROR_INVALID_ARGUMENT,
                  "(700, 5)");
  w[3 * K + 2000] = 0x7F;
  TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &weight), FP8GEMM_ERROR_INVALID_ARGUMENT,
                  "(3, 2000)");
  free(w);
  fp8gemm_context_destroy(ctx);
}

/* weight_create checks the codes during its reordering pass: every source
 * and target layout (equal ones too: a checked copy), 1-3 threads. The
 * first NaN code in source byte order is named; a clean weight exports the
 * bytes it was given; in place, a refused buffer is left as it was. */
static void test_nan_codes_every_layout(void **state) {
  (void)state;
  tu_rng rng = tu_rng_make(tu_seed());
  static const size_t shapes[][2] = {{1000, 2064}, {1024, 2048}, {130, 272}};
  float scales[8 * 17];
  for (size_t i = 0; i < 8 * 17; i++) scales[i] = 1.0f;
  /* The layouts a CPU weight can be kept in. */
  static const fp8gemm_layout targets[] = {FP8GEMM_LAYOUT_PLAIN, FP8GEMM_LAYOUT_PRESHUFFLED_CPU};
  for (int threads = 1; threads <= 3; threads++) {
    fp8gemm_context *ctx = ct_context(threads);
    for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++) {
      const size_t N = shapes[s][0], K = shapes[s][1], bytes = N * K;
      uint8_t *src = tu_malloc(bytes), *back = tu_malloc(bytes);
      for (size_t a = 0; a < 4; a++)
        for (size_t b = 0; b < 2; b++) {
          const fp8gemm_layout from = all_layouts[a], to = targets[b];
          if (fp8gemm_layout_check(from, N, K) != FP8GEMM_OK ||
              fp8gemm_layout_check(to, N, K) != FP8GEMM_OK)
            continue;
          ct_fill_codes(&rng, src, bytes);
          fp8gemm_weight_desc d;
          tu_weight_desc(&d, N, K, src, from, scales, NULL, to);
          fp8gemm_weight *weight = NULL;
          TU_OK(fp8gemm_weight_create(ctx, &d, &weight));
          assert_int_equal(fp8gemm_weight_layout(weight), to);
          TU_OK(fp8gemm_weight_export(weight, from, back));
          if (memcmp(back, src, bytes))
            fail_msg("%s -> %s N=%zu K=%zu (%d threads): exported bytes differ",
                     fp8gemm_layout_name(from), fp8gemm_layout_name(to), N, K, threads);
          fp8gemm_weight_destroy(weight);
          /* Two NaN codes in separate halves of the buffer; the earlier one is named. */
          const size_t late = bytes - 1 - (size_t)(tu_next(&rng) % (bytes / 3));
          const size_t early = (size_t)(tu_next(&rng) % (bytes / 2));
          src[late] = 0x7F;
          src[early] = 0xFF;
          char needle[64];
          snprintf(needle, sizeof needle, "byte %zu ", early);
          weight = NULL;
          TU_EXPECT_ERROR(fp8gemm_weight_create(ctx, &d, &weight), FP8GEMM_ERROR_INVALID_ARGUMENT,
                          needle);
          assert_null(weight);
          memcpy(back, src, bytes);
          TU_EXPECT_ERROR(fp8gemm_weight_create_in_place(ctx, &d, src, &weight),
                          FP8GEMM_ERROR_INVALID_ARGUMENT, needle);
          assert_memory_equal(back, src, bytes);
        }
      free(src);
      free(back);
    }
    fp8gemm_context_destroy(ctx);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_all_pairs), cmocka_unit_test(test_nan_codes),
                                     cmocka_unit_test(test_nan_codes_every_layout)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
