/* Quantization on the CPU backend (public API, the ISA of the environment):
 * bit-identical to a plain scalar reading of the definition, in both scale
 * layouts, from f32, bf16 and f16, with the special inputs of issue 2:
 * NaN, +-Inf, values beyond +-448, all-zero groups, fp32 denormals, exact
 * rounding ties; weights with partial blocks, and refusal of non-finite
 * weights with a message naming the element. */
#include "cpu_testing.h"

/* The definition, read straight: s = max(amax, 1e-10) / 448 over each
 * group, q = e4m3fn(x / s); a group holding NaN or Inf: scale NaN and NaN
 * codes (0x7F). */
static void quantize_row_definition(size_t K, const float *x, uint8_t *q, float *s) {
  for (size_t g = 0; g * 128 < K; g++) {
    const size_t end = (g + 1) * 128 < K ? (g + 1) * 128 : K;
    float amax = 0.0f;
    int finite = 1;
    for (size_t k = g * 128; k < end; k++) {
      if (!isfinite(x[k])) finite = 0;
      else if (fabsf(x[k]) > amax) amax = fabsf(x[k]);
    }
    if (!finite) {
      s[g] = NAN;
      for (size_t k = g * 128; k < end; k++) q[k] = 0x7F;
      continue;
    }
    s[g] = (amax > 1e-10f ? amax : 1e-10f) / 448.0f;
    for (size_t k = g * 128; k < end; k++) q[k] = fp8gemm_e4m3fn_from_float(x[k] / s[g]);
  }
}

/* A row mixing the special cases, group by group. */
static void fill_special_row(tu_rng *rng, float *x, size_t K, size_t row) {
  for (size_t k = 0; k < K; k++) x[k] = tu_normal(rng) * (row % 3 == 0 ? 1e3f : 1.0f);
  for (size_t g = 0; g * 128 < K; g++) {
    const size_t k0 = g * 128, end = (g + 1) * 128 < K ? (g + 1) * 128 : K;
    switch ((row + g) % 8) {
      case 0: x[k0 + (row * 7) % (end - k0)] = NAN; break;
      case 1: x[end - 1] = (row & 1) ? INFINITY : -INFINITY; break;
      case 2: for (size_t k = k0; k < end; k++) x[k] = 0.0f; break;
      case 3: /* fp32 denormals only */
        for (size_t k = k0; k < end; k++) x[k] = tu_uniform(rng) * 1e-39f;
        break;
      case 4: /* denormals next to normal values */
        for (size_t k = k0; k < end; k += 2) x[k] = tu_uniform(rng) * 1e-40f;
        break;
      case 5: /* huge values: x / s may round past 448 */
        for (size_t k = k0; k < end; k++) x[k] = tu_normal(rng) * 3e38f;
        break;
      case 6: /* exact ties of the e4m3 grid once scaled: amax 448 -> s = 1 */
        x[k0] = 448.0f;
        for (size_t k = k0 + 1; k < end; k++) x[k] = (float)((int)(k % 64) - 32) * 0.5f + 0.25f;
        break;
      default: break;
    }
  }
}

static void check_activations(fp8gemm_context *ctx, tu_rng *rng, size_t M, size_t K,
                              fp8gemm_dtype dtype) {
  const size_t groups = (K + 127) / 128, ldx = K + 5, ldq = K + 3;
  float *xf = tu_malloc(M * ldx * sizeof(float));
  uint16_t *xh = tu_malloc(M * ldx * sizeof(uint16_t));
  for (size_t m = 0; m < M; m++) fill_special_row(rng, xf + m * ldx, K, m);
  /* The 16-bit inputs are the rounded fp32 values; the definition reads
   * them back as floats. */
  for (size_t i = 0; i < M * ldx; i++) {
    if (dtype == FP8GEMM_DTYPE_BF16) {
      xh[i] = fp8gemm_bf16_from_float(xf[i]);
      xf[i] = fp8gemm_bf16_to_float(xh[i]);
    } else if (dtype == FP8GEMM_DTYPE_F16) {
      xh[i] = fp8gemm_f16_from_float(xf[i]);
      xf[i] = fp8gemm_f16_to_float(xh[i]);
    }
  }
  const void *x = dtype == FP8GEMM_DTYPE_F32 ? (const void *)xf : (const void *)xh;
  uint8_t *want_q = tu_malloc(K), *q = tu_malloc(M * ldq + 16);
  float *want_s = tu_malloc(groups * sizeof(float));
  for (int layout = 0; layout < 2; layout++) {
    const size_t sld = layout == FP8GEMM_SCALE_ROW_MAJOR ? groups + 2 : M + 2;
    const size_t scale_count = layout == FP8GEMM_SCALE_ROW_MAJOR ? M * sld : groups * sld;
    float *s = tu_malloc((scale_count + 4) * sizeof(float));
    memset(q, 0xA5, M * ldq + 16);
    for (size_t i = 0; i < scale_count + 4; i++) s[i] = -7.0f;
    TU_OK(fp8gemm_quantize_activations(ctx, M, K, dtype, x, ldx, q, ldq, s,
                                       (fp8gemm_scale_layout)layout, sld));
    for (size_t m = 0; m < M; m++) {
      quantize_row_definition(K, xf + m * ldx, want_q, want_s);
      for (size_t k = 0; k < K; k++)
        if (q[m * ldq + k] != want_q[k])
          fail_msg("%s M=%zu K=%zu %s: xq[%zu, %zu] = 0x%02X, want 0x%02X (x = %g)",
                   fp8gemm_dtype_name(dtype), M, K, layout ? "M-major" : "row-major", m, k,
                   q[m * ldq + k], want_q[k], (double)xf[m * ldx + k]);
      for (size_t k = K; k < ldq; k++) assert_int_equal(q[m * ldq + k], 0xA5);
      for (size_t g = 0; g < groups; g++) {
        const float got = layout == FP8GEMM_SCALE_ROW_MAJOR ? s[m * sld + g] : s[g * sld + m];
        if (memcmp(&got, &want_s[g], 4) && !(isnan(got) && isnan(want_s[g])))
          fail_msg("%s M=%zu K=%zu: scale(%zu, %zu) = %g, want %g", fp8gemm_dtype_name(dtype), M, K,
                   m, g, (double)got, (double)want_s[g]);
      }
    }
    /* Nothing written between rows or past the scales. */
    for (size_t i = 0; i < scale_count + 4; i++) {
      const size_t a = layout == FP8GEMM_SCALE_ROW_MAJOR ? i / sld : i % sld;
      const size_t b = layout == FP8GEMM_SCALE_ROW_MAJOR ? i % sld : i / sld;
      const int inside = layout == FP8GEMM_SCALE_ROW_MAJOR ? (a < M && b < groups)
                                                           : (b < groups && a < M);
      if (!inside && s[i] != -7.0f) fail_msg("scale written outside at %zu", i);
    }
    free(s);
  }
  free(xf);
  free(xh);
  free(want_q);
  free(q);
  free(want_s);
}

static void test_activations(void **state) {
  (void)state;
  fp8gemm_context *ctx = ct_context(0);
  tu_rng rng = tu_rng_make(tu_seed());
  static const size_t shapes[][2] = {{1, 16}, {3, 128}, {5, 336}, {17, 7168}, {64, 400}, {200, 2048}};
  static const fp8gemm_dtype dtypes[] = {FP8GEMM_DTYPE_F32, FP8GEMM_DTYPE_BF16, FP8GEMM_DTYPE_F16};
  for (size_t s = 0; s < sizeof shapes / sizeof shapes[0]; s++)
    for (size_t d = 0; d < 3; d++) check_activations(ctx, &rng, shapes[s][0], shapes[s][1], dtypes[d]);
  fp8gemm_context_destroy(ctx);
}

/* The special results, spelled out once. */
static void test_activation_special_values(void **state) {
  (void)state;
  fp8gemm_context *ctx = ct_context(0);
  float x[3 * 128];
  uint8_t q[3 * 128];
  float s[3];
  for (size_t k = 0; k < 128; k++) {
    x[k] = 0.0f;                          /* group 0: all zero */
    x[128 + k] = k == 5 ? -INFINITY : 1.0f; /* group 1: an Inf */
    x[256 + k] = k == 0 ? 896.0f : (k == 1 ? -1e-42f : 1.0f); /* group 2 */
  }
  TU_OK(fp8gemm_quantize_activations(ctx, 1, 384, FP8GEMM_DTYPE_F32, x, 384, q, 384, s,
                                     FP8GEMM_SCALE_ROW_MAJOR, 3));
  assert_true(s[0] == 1e-10f / 448.0f);
  for (size_t k = 0; k < 128; k++) assert_int_equal(q[k], 0x00);
  assert_true(isnan(s[1]));
  for (size_t k = 128; k < 256; k++) assert_int_equal(q[k], 0x7F);
  assert_true(s[2] == 2.0f);
  assert_int_equal(q[256], 0x7E);         /* 448 */
  assert_int_equal(q[257], 0x80);         /* a negative denormal rounds to -0 */
  assert_int_equal(q[258], fp8gemm_e4m3fn_from_float(0.5f));
  fp8gemm_context_destroy(ctx);
}

static void test_weights(void **state) {
  (void)state;
  fp8gemm_context *ctx = ct_context(0);
  tu_rng rng = tu_rng_make(tu_seed());
  static const size_t shapes[][2] = {{1, 16}, {130, 272}, {256, 128}, {200, 7168}, {2112, 384}};
  static const fp8gemm_dtype dtypes[] = {FP8GEMM_DTYPE_F32, FP8GEMM_DTYPE_BF16, FP8GEMM_DTYPE_F16};
  for (size_t si = 0; si < sizeof shapes / sizeof shapes[0]; si++)
    for (size_t d = 0; d < 3; d++) {
      const size_t N = shapes[si][0], K = shapes[si][1], ldw = K + 16;
      const size_t groups = (K + 127) / 128, blocks = (N + 127) / 128 * groups;
      const size_t elem = fp8gemm_dtype_size(dtypes[d]);
      float *wf = tu_malloc(N * ldw * sizeof(float));
      unsigned char *w = tu_malloc(N * ldw * elem);
      for (size_t n = 0; n < N; n++)
        for (size_t k = 0; k < ldw; k++) {
          /* Block-varying magnitudes, an all-zero block, and denormals. */
          const size_t block = (n / 128) * groups + k / 128;
          float v = tu_normal(&rng) * (block % 5 == 1 ? 1e-3f : 20.0f);
          if (block % 7 == 3) v = 0.0f;
          if (block % 11 == 4 && k % 3 == 0) v = 1e-41f;
          fp8gemm_store_from_float(dtypes[d], w, n * ldw + k, v);
          wf[n * ldw + k] = fp8gemm_load_as_float(dtypes[d], w, n * ldw + k);
        }
      uint8_t *q = tu_malloc(N * K);
      float *s = tu_malloc(blocks * sizeof(float));
      TU_OK(fp8gemm_quantize_weight(ctx, N, K, dtypes[d], w, ldw, q, s));
      for (size_t b = 0; b < blocks; b++) {
        const size_t n0 = b / groups * 128, k0 = b % groups * 128;
        float amax = 0.0f;
        for (size_t n = n0; n < N && n < n0 + 128; n++)
          for (size_t k = k0; k < K && k < k0 + 128; k++)
            if (fabsf(wf[n * ldw + k]) > amax) amax = fabsf(wf[n * ldw + k]);
        const float want_s = (amax > 1e-10f ? amax : 1e-10f) / 448.0f;
        if (s[b] != want_s) fail_msg("N=%zu K=%zu block %zu: scale %g, want %g", N, K, b, (double)s[b], (double)want_s);
        for (size_t n = n0; n < N && n < n0 + 128; n++)
          for (size_t k = k0; k < K && k < k0 + 128; k++) {
            const uint8_t want = fp8gemm_e4m3fn_from_float(wf[n * ldw + k] / want_s);
            if (q[n * K + k] != want)
              fail_msg("%s N=%zu K=%zu: wq[%zu, %zu] = 0x%02X, want 0x%02X", fp8gemm_dtype_name(dtypes[d]),
                       N, K, n, k, q[n * K + k], want);
          }
      }
      free(wf);
      free(w);
      free(q);
      free(s);
    }
  fp8gemm_context_destroy(ctx);
}

static void test_weight_refuses_non_finite(void **state) {
  (void)state;
  fp8gemm_context *ctx = ct_context(0);
  const size_t N = 300, K = 400;
  float *w = tu_malloc(N * K * sizeof(float));
  uint8_t *q = tu_malloc(N * K);
  float s[3 * 4];
  for (size_t i = 0; i < N * K; i++) w[i] = 1.0f;
  w[257 * K + 390] = INFINITY;
  w[290 * K + 3] = NAN; /* later block row: the first one is reported */
  TU_EXPECT_ERROR(fp8gemm_quantize_weight(ctx, N, K, FP8GEMM_DTYPE_F32, w, K, q, s),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "w[257, 390]");
  w[257 * K + 390] = 1.0f;
  TU_EXPECT_ERROR(fp8gemm_quantize_weight(ctx, N, K, FP8GEMM_DTYPE_F32, w, K, q, s),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "w[290, 3]");
  free(w);
  free(q);
  fp8gemm_context_destroy(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_activations),
      cmocka_unit_test(test_activation_special_values),
      cmocka_unit_test(test_weights),
      cmocka_unit_test(test_weight_refuses_non_finite),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
