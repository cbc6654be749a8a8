/* CUDA backend operations other than the GEMM, each against the CPU
 * backend or the core's layout index functions: 1x128 activation
 * quantization (bf16/f16/f32 in, both scale layouts, partial last group,
 * NaN/Inf groups) bit for bit, 128x128 weight quantization bit for bit,
 * layout reorders (out of place and in place) byte for byte, the NaN-code
 * check, memory round trips. */
#include "cuda_test_util.h"

static fp8gemm_context *g_gpu;
static fp8gemm_context *g_cpu;
static tu_rng g_rng;

static void fill_x(fp8gemm_dtype dtype, void *dst, const float *src, size_t count) {
  for (size_t i = 0; i < count; i++) {
    if (dtype == FP8GEMM_DTYPE_BF16) ((uint16_t *)dst)[i] = fp8gemm_bf16_from_float(src[i]);
    else if (dtype == FP8GEMM_DTYPE_F16) ((uint16_t *)dst)[i] = fp8gemm_f16_from_float(src[i]);
    else ((float *)dst)[i] = src[i];
  }
}

/* Quantizes M x K of x (dtype, ldx) with the CPU and the GPU backends into
 * q_* (ldq) and s_* (scale layout sl, leading dimension sld, scale_count
 * floats). The GPU outputs start as q_gpu / s_gpu hold them, so what the
 * GPU leaves unwritten compares as it was. */
static void quantize_on_both(size_t M, size_t K, fp8gemm_dtype dtype, const void *xh, size_t ldx,
                             uint8_t *q_cpu, uint8_t *q_gpu, size_t ldq, float *s_cpu,
                             float *s_gpu, fp8gemm_scale_layout sl, size_t sld,
                             size_t scale_count) {
  TU_OK(fp8gemm_quantize_activations(g_cpu, M, K, dtype, xh, ldx, q_cpu, ldq, s_cpu, sl, sld));
  void *d_x = ct_upload(g_gpu, xh, M * ldx * fp8gemm_dtype_size(dtype));
  uint8_t *d_q = ct_upload(g_gpu, q_gpu, M * ldq);
  float *d_s = ct_upload(g_gpu, s_gpu, scale_count * sizeof(float));
  TU_OK(fp8gemm_quantize_activations(g_gpu, M, K, dtype, d_x, ldx, d_q, ldq, d_s, sl, sld));
  ct_download(g_gpu, q_gpu, d_q, M * ldq);
  ct_download(g_gpu, s_gpu, d_s, scale_count * sizeof(float));
  fp8gemm_memory_free(g_gpu, d_s);
  fp8gemm_memory_free(g_gpu, d_q);
  fp8gemm_memory_free(g_gpu, d_x);
}

static void test_quantize_activations_matches_cpu(void **state) {
  (void)state;
  const size_t M = 37, K = 400, ldx = 416, ldq = 432, groups = (K + 127) / 128;
  const fp8gemm_dtype dtypes[] = {FP8GEMM_DTYPE_BF16, FP8GEMM_DTYPE_F16, FP8GEMM_DTYPE_F32};
  float *x = tu_malloc(M * ldx * sizeof(float));
  for (size_t m = 0; m < M; m++)
    for (size_t k = 0; k < ldx; k++)
      x[m * ldx + k] = tu_normal(&g_rng) * (m % 5 == 0 ? 1e-3f : (float)(1 + m % 9) * 3.0f);
  /* Row 3 holds a NaN (group 1), row 4 an Inf (the partial group 3), row 6
   * is all zeros (the eps floor). */
  x[3 * ldx + 200] = NAN;
  x[4 * ldx + 390] = INFINITY;
  for (size_t k = 0; k < ldx; k++) x[6 * ldx + k] = 0.0f;
  for (int di = 0; di < 3; di++) {
    const fp8gemm_dtype dtype = dtypes[di];
    const size_t elem = fp8gemm_dtype_size(dtype);
    void *xh = tu_malloc(M * ldx * elem);
    fill_x(dtype, xh, x, M * ldx);
    for (int layout = 0; layout < 2; layout++) {
      const fp8gemm_scale_layout sl = layout ? FP8GEMM_SCALE_M_MAJOR : FP8GEMM_SCALE_ROW_MAJOR;
      const size_t sld = layout ? M + 3 : groups + 1;
      const size_t scale_count = layout ? groups * sld : M * sld;
      uint8_t *q_cpu = tu_malloc(M * ldq), *q_gpu = tu_malloc(M * ldq);
      float *s_cpu = tu_malloc(scale_count * sizeof(float)), *s_gpu = tu_malloc(scale_count * sizeof(float));
      memset(q_cpu, 0, M * ldq);
      memset(q_gpu, 0, M * ldq);
      memset(s_cpu, 0, scale_count * sizeof(float));
      memset(s_gpu, 0, scale_count * sizeof(float));
      quantize_on_both(M, K, dtype, xh, ldx, q_cpu, q_gpu, ldq, s_cpu, s_gpu, sl, sld,
                       scale_count);
      for (size_t m = 0; m < M; m++)
        for (size_t k = 0; k < K; k++)
          if (q_cpu[m * ldq + k] != q_gpu[m * ldq + k])
            fail_msg("x=%s scale layout %d: code (%zu, %zu) gpu 0x%02x cpu 0x%02x",
                     fp8gemm_dtype_name(dtype), layout, m, k, q_gpu[m * ldq + k], q_cpu[m * ldq + k]);
      for (size_t i = 0; i < scale_count; i++) {
        const int both_nan = isnan(s_cpu[i]) && isnan(s_gpu[i]);
        if (!both_nan && memcmp(&s_cpu[i], &s_gpu[i], sizeof(float)) != 0)
          fail_msg("x=%s scale layout %d: scale[%zu] gpu %a cpu %a", fp8gemm_dtype_name(dtype),
                   layout, i, s_gpu[i], s_cpu[i]);
      }
      /* The NaN and Inf groups are marked. */
      const size_t nan_at = layout ? 1 * sld + 3 : 3 * sld + 1;
      const size_t inf_at = layout ? 3 * sld + 4 : 4 * sld + 3;
      assert_true(isnan(s_gpu[nan_at]));
      assert_true(isnan(s_gpu[inf_at]));
      free(s_gpu);
      free(s_cpu);
      free(q_gpu);
      free(q_cpu);
    }
    free(xh);
  }
  free(x);
}

/* Where x / s lands on or next to an e4m3 rounding midpoint, only the
 * exact division rounds as the CPU does (a multiply by the reciprocal of s
 * is off by up to 2.5 fp32 ulps, which flips such codes). f32 values
 * crafted so that x / s lands on and within +-12 ulps of every midpoint,
 * normal and subnormal, both signs, in groups of scales over 2^-20 ..
 * 2^20: codes and scales bit for bit as the CPU's. */
static void test_quantize_activations_near_midpoints(void **state) {
  (void)state;
  const size_t M = 48, K = 128 * 16, groups = K / 128;
  float *x = tu_malloc(M * K * sizeof(float));
  /* The midpoints of x / s: between normal e4m3 values (1 + j/8) 2^E and
   * (1 + (j+1)/8) 2^E, E = -6..8, below 448; between subnormals k 2^-9. */
  double mids[15 * 8 + 8];
  int n_mids = 0;
  for (int E = -6; E <= 8; E++)
    for (int j = 0; j < 8; j++) {
      const double mid = (1.0 + (2 * j + 1) / 16.0) * ldexp(1.0, E);
      if (mid < 448.0) mids[n_mids++] = mid;
    }
  for (int k = 0; k < 8; k++) mids[n_mids++] = (k + 0.5) * ldexp(1.0, -9);
  size_t crafted = 0;
  for (size_t m = 0; m < M; m++)
    for (size_t g = 0; g < groups; g++) {
      float *grp = x + m * K + g * 128;
      const int e = (int)(tu_next(&g_rng) % 41) - 20;
      const float amax = ldexpf(1.0f + 0.5f * (tu_uniform(&g_rng) + 1.0f), e);
      const float scale = amax / 448.0f; /* what both quantizers compute */
      grp[0] = (m + g) % 2 ? -amax : amax;
      for (int i = 1; i < 128; i++) {
        const double mid = mids[tu_next(&g_rng) % (uint64_t)n_mids];
        float v = (float)(mid * (double)scale);
        const int steps = (int)(tu_next(&g_rng) % 25) - 12;
        for (int t = 0; t < (steps < 0 ? -steps : steps); t++)
          v = nextafterf(v, steps < 0 ? 0.0f : INFINITY);
        if (fabsf(v) > amax) v = amax;
        grp[i] = tu_next(&g_rng) % 2 ? -v : v;
        crafted++;
      }
    }
  uint8_t *q_cpu = tu_malloc(M * K), *q_gpu = tu_malloc(M * K);
  float *s_cpu = tu_malloc(M * groups * sizeof(float)), *s_gpu = tu_malloc(M * groups * sizeof(float));
  memset(q_gpu, 0, M * K);
  memset(s_gpu, 0, M * groups * sizeof(float));
  quantize_on_both(M, K, FP8GEMM_DTYPE_F32, x, K, q_cpu, q_gpu, K, s_cpu, s_gpu,
                   FP8GEMM_SCALE_ROW_MAJOR, groups, M * groups);
  size_t bad = 0;
  for (size_t i = 0; i < M * K; i++)
    if (q_cpu[i] != q_gpu[i] && bad++ < 5)
      printf("# code %zu: x %a (x / s = %.9g) gpu 0x%02x cpu 0x%02x\n", i, x[i],
             (double)x[i] / (double)s_cpu[i / 128], q_gpu[i], q_cpu[i]);
  assert_int_equal(bad, 0);
  assert_memory_equal(s_cpu, s_gpu, M * groups * sizeof(float));
  printf("# %zu values near e4m3 midpoints: codes match the CPU's exact division\n", crafted);
  free(s_gpu);
  free(s_cpu);
  free(q_gpu);
  free(q_cpu);
  free(x);
}

static void test_quantize_weight_matches_cpu(void **state) {
  (void)state;
  const size_t N = 200, K = 400, ldw = 408, blocks = 2 * 4;
  float *w = tu_malloc(N * ldw * sizeof(float));
  for (size_t n = 0; n < N; n++)
    for (size_t k = 0; k < ldw; k++)
      w[n * ldw + k] = tu_normal(&g_rng) * (float)(1 + (n / 128) * 3 + (k / 128)) * 0.01f;
  const fp8gemm_dtype dtypes[] = {FP8GEMM_DTYPE_BF16, FP8GEMM_DTYPE_F16, FP8GEMM_DTYPE_F32};
  for (int di = 0; di < 3; di++) {
    const fp8gemm_dtype dtype = dtypes[di];
    const size_t elem = fp8gemm_dtype_size(dtype);
    void *wh = tu_malloc(N * ldw * elem);
    fill_x(dtype, wh, w, N * ldw);
    uint8_t *q_cpu = tu_malloc(N * K), *q_gpu = tu_malloc(N * K);
    float s_cpu[8], s_gpu[8];
    TU_OK(fp8gemm_quantize_weight(g_cpu, N, K, dtype, wh, ldw, q_cpu, s_cpu));
    void *d_w = ct_upload(g_gpu, wh, N * ldw * elem);
    uint8_t *d_q = ct_alloc(g_gpu, N * K);
    float *d_s = ct_alloc(g_gpu, sizeof s_gpu);
    TU_OK(fp8gemm_quantize_weight(g_gpu, N, K, dtype, d_w, ldw, d_q, d_s));
    ct_download(g_gpu, q_gpu, d_q, N * K);
    ct_download(g_gpu, s_gpu, d_s, sizeof s_gpu);
    assert_memory_equal(s_cpu, s_gpu, blocks * sizeof(float));
    assert_memory_equal(q_cpu, q_gpu, N * K);
    /* Non-finite input is refused. */
    if (dtype == FP8GEMM_DTYPE_F32) {
      ((float *)wh)[150 * ldw + 333] = INFINITY;
      TU_OK(fp8gemm_memory_copy(g_gpu, d_w, wh, N * ldw * elem, FP8GEMM_COPY_HOST_TO_BACKEND));
      TU_EXPECT_ERROR(fp8gemm_quantize_weight(g_gpu, N, K, dtype, d_w, ldw, d_q, d_s),
                      FP8GEMM_ERROR_INVALID_ARGUMENT, "NaN or Inf");
    }
    fp8gemm_memory_free(g_gpu, d_s);
    fp8gemm_memory_free(g_gpu, d_q);
    fp8gemm_memory_free(g_gpu, d_w);
    free(q_gpu);
    free(q_cpu);
    free(wh);
  }
  free(w);
}

/* Every reorder the GPU does, against the core's index functions. */
static void check_reorder(size_t N, size_t K, fp8gemm_layout from, fp8gemm_layout to, int in_place) {
  uint8_t *plain = tu_malloc(N * K), *src = tu_malloc(N * K), *want = tu_malloc(N * K),
          *got = tu_malloc(N * K);
  for (size_t i = 0; i < N * K; i++) plain[i] = (uint8_t)(tu_next(&g_rng) >> 56);
  for (size_t n = 0; n < N; n++)
    for (size_t k = 0; k < K; k++) {
      src[fp8gemm_layout_offset(from, N, K, n, k)] = plain[n * K + k];
      want[fp8gemm_layout_offset(to, N, K, n, k)] = plain[n * K + k];
    }
  uint8_t *d_src = ct_upload(g_gpu, src, N * K);
  uint8_t *d_dst = in_place ? d_src : ct_alloc(g_gpu, N * K);
  TU_OK(fp8gemm_shuffle(g_gpu, N, K, from, d_src, to, d_dst));
  ct_download(g_gpu, got, d_dst, N * K);
  for (size_t i = 0; i < N * K; i++)
    if (got[i] != want[i])
      fail_msg("reorder %s -> %s N=%zu K=%zu%s: byte %zu is 0x%02x, want 0x%02x",
               fp8gemm_layout_name(from), fp8gemm_layout_name(to), N, K,
               in_place ? " in place" : "", i, got[i], want[i]);
  if (!in_place) fp8gemm_memory_free(g_gpu, d_dst);
  fp8gemm_memory_free(g_gpu, d_src);
  free(got);
  free(want);
  free(src);
  free(plain);
}

static void test_reorders(void **state) {
  (void)state;
  const size_t shapes[][2] = {{200, 400}, {2112, 1024}, {16, 128}, {130, 144}};
  for (size_t i = 0; i < 4; i++) {
    const size_t N = shapes[i][0], K = shapes[i][1];
    for (int in_place = 0; in_place < 2; in_place++) {
      check_reorder(N, K, FP8GEMM_LAYOUT_PLAIN, FP8GEMM_LAYOUT_PRESHUFFLED_SM90, in_place);
      check_reorder(N, K, FP8GEMM_LAYOUT_PRESHUFFLED_SM90, FP8GEMM_LAYOUT_PLAIN, in_place);
      check_reorder(N, K, FP8GEMM_LAYOUT_PRESHUFFLED_CPU, FP8GEMM_LAYOUT_PRESHUFFLED_SM90, in_place);
      if (fp8gemm_layout_check(FP8GEMM_LAYOUT_AITER16X16, N, K) == FP8GEMM_OK)
        check_reorder(N, K, FP8GEMM_LAYOUT_AITER16X16, FP8GEMM_LAYOUT_PRESHUFFLED_SM90, in_place);
    }
  }
}

static void test_nan_codes_refused(void **state) {
  (void)state;
  const size_t N = 256, K = 384;
  uint8_t *w = tu_malloc(N * K);
  float sw[2 * 3];
  ct_random_codes(&g_rng, w, N * K);
  for (int i = 0; i < 6; i++) sw[i] = 0.01f;
  w[130 * K + 77] = 0xFF;
  fp8gemm_weight_desc desc;
  tu_weight_desc(&desc, N, K, w, FP8GEMM_LAYOUT_PLAIN, sw, NULL,
                 FP8GEMM_LAYOUT_PRESHUFFLED_SM90);
  fp8gemm_weight *weight = NULL;
  TU_EXPECT_ERROR(fp8gemm_weight_create(g_gpu, &desc, &weight), FP8GEMM_ERROR_INVALID_ARGUMENT,
                  "NaN");
  /* From device memory the GPU check runs; it names the position. */
  uint8_t *d_w = ct_upload(g_gpu, w, N * K);
  desc.data = d_w;
  desc.memory = FP8GEMM_MEMORY_DEVICE;
  float *d_sw = ct_upload(g_gpu, sw, sizeof sw);
  desc.scale_inv = d_sw;
  char where[64];
  snprintf(where, sizeof where, "byte offset %zu", (size_t)(130 * K + 77));
  TU_EXPECT_ERROR(fp8gemm_weight_create(g_gpu, &desc, &weight), FP8GEMM_ERROR_INVALID_ARGUMENT,
                  where);
  fp8gemm_memory_free(g_gpu, d_sw);
  fp8gemm_memory_free(g_gpu, d_w);
  desc.data = w;
  desc.memory = FP8GEMM_MEMORY_HOST;
  desc.scale_inv = sw;
  w[130 * K + 77] = 0x7E;
  TU_OK(fp8gemm_weight_create(g_gpu, &desc, &weight));
  /* Export round trip: the stored preshuffled bytes come back plain. */
  uint8_t *back = tu_malloc(N * K);
  TU_OK(fp8gemm_weight_export(weight, FP8GEMM_LAYOUT_PLAIN, back));
  assert_memory_equal(back, w, N * K);
  fp8gemm_weight_destroy(weight);
  free(back);
  free(w);
}

static void test_memory_round_trip(void **state) {
  (void)state;
  const size_t bytes = 3 * 1024 * 1024 + 5;
  uint8_t *a = tu_malloc(bytes), *b = tu_malloc(bytes);
  for (size_t i = 0; i < bytes; i++) a[i] = (uint8_t)(tu_next(&g_rng) >> 56);
  void *d1 = ct_upload(g_gpu, a, bytes);
  void *d2 = ct_alloc(g_gpu, bytes);
  assert_int_equal((uintptr_t)d1 % 64, 0);
  TU_OK(fp8gemm_memory_copy(g_gpu, d2, d1, bytes, FP8GEMM_COPY_BACKEND_TO_BACKEND));
  ct_download(g_gpu, b, d2, bytes);
  assert_memory_equal(a, b, bytes);
  fp8gemm_memory_free(g_gpu, d2);
  fp8gemm_memory_free(g_gpu, d1);
  free(b);
  free(a);
  printf("# device: %s\n", fp8gemm_context_device(g_gpu));
  assert_int_equal(fp8gemm_context_preshuffled_layout(g_gpu), FP8GEMM_LAYOUT_PRESHUFFLED_SM90);
}

static int setup(void **state) {
  (void)state;
  g_gpu = ct_context(NULL);
  g_cpu = ct_cpu_context();
  g_rng = tu_rng_make(tu_seed());
  return 0;
}

static int teardown(void **state) {
  (void)state;
  fp8gemm_context_destroy(g_gpu);
  fp8gemm_context_destroy(g_cpu);
  return 0;
}

int main(void) {
  ct_require_gpu();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_memory_round_trip),
      cmocka_unit_test(test_quantize_activations_matches_cpu),
      cmocka_unit_test(test_quantize_activations_near_midpoints),
      cmocka_unit_test(test_quantize_weight_matches_cpu),
      cmocka_unit_test(test_reorders),
      cmocka_unit_test(test_nan_codes_refused),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
