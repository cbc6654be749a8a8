/* The correctness sweep of issue 2 on the CPU backend, for the ISA in the
 * environment (ctest runs it detected and with FP8GEMM_ISA=generic):
 *
 *   every M in 1..300 and M in {511, 512, 513, 1024, 4097},
 *   N in {16, 128, 200, 2112}, K in {128, 384, 7168} and K = 336 (a
 *   multiple of 16 whose last group is 80 wide),
 *
 * both weight layouts (plain, preshuffled_cpu), fp32 out: relative error
 * <= 1e-5 against the fp64 reference, plain and preshuffled within 1e-6 of
 * each other, every output written and nothing outside it.
 *
 * The grid is not the full product (4097 x 2112 x 7168 alone is 124 GFLOP
 * and its fp64 reference far more): each M in 1..300 takes one of the 16
 * (N, K) pairs, rotating so every pair meets M values of every residue the
 * tiles care about (5 is coprime with 16), and the large M values take
 * several pairs; the heaviest pair stops at M = 64. The reference runs on
 * all rows when the problem is small, else on sampled rows that include
 * both ends, tile edges and the middle. */
#include "cpu_testing.h"

static const size_t sweep_n[4] = {16, 128, 200, 2112};
static const size_t sweep_k[4] = {128, 384, 7168, 336};

typedef struct sweep_case {
  size_t M, N, K;
} sweep_case;

static size_t build_cases(sweep_case *cases) {
  size_t count = 0;
  for (size_t M = 1; M <= 300; M++) {
    size_t pair = (M * 5) % 16;
    /* The heaviest pair (2112 x 7168) only up to M = 64: beyond, the large-M
     * kernel is the same code on more row tiles, and its cost (and that of
     * the reference) would dominate the run under the sanitizers. */
    if (sweep_n[pair % 4] == 2112 && sweep_k[pair / 4] == 7168 && M > 64) pair = (pair + 1) % 16;
    cases[count++] = (sweep_case){M, sweep_n[pair % 4], sweep_k[pair / 4]};
  }
  /* Large M: each value with more than one pair, every N and K met. */
  static const sweep_case large[] = {
      {511, 2112, 384}, {511, 16, 7168},  {512, 200, 7168}, {512, 128, 128},  {513, 128, 336},
      {513, 2112, 128}, {1024, 16, 7168}, {1024, 200, 384}, {1024, 2112, 336}, {4097, 200, 336},
      {4097, 16, 128},  {4097, 2112, 128}, {4097, 128, 384},
  };
  for (size_t i = 0; i < sizeof large / sizeof large[0]; i++) cases[count++] = large[i];
  return count;
}

/* Rows checked against the reference: all of them for small problems. */
static size_t pick_rows(size_t M, size_t N, size_t K, size_t *rows) {
  if (M <= 12 || M * N * K <= ((size_t)1 << 22)) {
    for (size_t m = 0; m < M; m++) rows[m] = m;
    return M;
  }
  const size_t candidates[] = {0, 1, 5, 6, 7, 143, 144, M / 2, M - 7, M - 6, M - 2, M - 1};
  size_t count = 0;
  for (size_t i = 0; i < sizeof candidates / sizeof candidates[0]; i++) {
    const size_t m = candidates[i];
    if (m >= M) continue;
    int seen = 0;
    for (size_t j = 0; j < count; j++) seen |= rows[j] == m;
    if (!seen) rows[count++] = m;
  }
  return count;
}

static void run_case(fp8gemm_context *ctx, tu_rng *rng, const sweep_case *c) {
  const size_t M = c->M, N = c->N, K = c->K, groups = (K + 127) / 128;
  float *x = tu_malloc(M * K * sizeof(float));
  uint8_t *xq = tu_malloc(M * K), *wq = tu_malloc(N * K);
  float *xs = tu_malloc(M * groups * sizeof(float));
  float *ws = tu_malloc(((N + 127) / 128) * groups * sizeof(float));
  tu_fill_normal(rng, x, M * K, 1.0f);
  TU_OK(fp8gemm_quantize_activations(ctx, M, K, FP8GEMM_DTYPE_F32, x, K, xq, K, xs,
                                     FP8GEMM_SCALE_ROW_MAJOR, groups));
  ct_fill_codes(rng, wq, N * K);
  ct_fill_scales(rng, ws, ((N + 127) / 128) * groups);

  fp8gemm_weight *w_plain = tu_weight(ctx, N, K, wq, ws, NULL, FP8GEMM_LAYOUT_PLAIN);
  fp8gemm_weight *w_pre = tu_weight(ctx, N, K, wq, ws, NULL, FP8GEMM_LAYOUT_PRESHUFFLED_CPU);
  ct_output y_plain, y_pre;
  ct_output_make(&y_plain, M, N, 3, FP8GEMM_DTYPE_F32);
  ct_output_make(&y_pre, M, N, 3, FP8GEMM_DTYPE_F32);
  TU_OK(fp8gemm_gemm(ctx, w_plain, M, xq, K, xs, FP8GEMM_SCALE_ROW_MAJOR, groups,
                     FP8GEMM_DTYPE_F32, ct_output_ptr(&y_plain), y_plain.ld, NULL, 0));
  TU_OK(fp8gemm_gemm(ctx, w_pre, M, xq, K, xs, FP8GEMM_SCALE_ROW_MAJOR, groups, FP8GEMM_DTYPE_F32,
                     ct_output_ptr(&y_pre), y_pre.ld, NULL, 0));
  char what[96];
  snprintf(what, sizeof what, "M=%zu N=%zu K=%zu plain", M, N, K);
  ct_output_check_frame(&y_plain, what);
  snprintf(what, sizeof what, "M=%zu N=%zu K=%zu preshuffled", M, N, K);
  ct_output_check_frame(&y_pre, what);

  size_t *rows = tu_malloc(M * sizeof(size_t));
  const size_t nrows = pick_rows(M, N, K, rows);
  double *ref = ct_reference_rows(N, K, xq, xs, rows, nrows, wq, ws, NULL);
  const double err_plain = ct_rel_err_rows(&y_plain, rows, nrows, ref);
  const double err_pre = ct_rel_err_rows(&y_pre, rows, nrows, ref);
  const double diff = ct_rel_diff(&y_plain, &y_pre);
  if (!(err_plain <= 1e-5) || !(err_pre <= 1e-5) || !(diff <= 1e-6))
    fail_msg("M=%zu N=%zu K=%zu (%s): rel err plain %.3g, preshuffled %.3g (<= 1e-5); "
             "plain vs preshuffled %.3g (<= 1e-6)",
             M, N, K, fp8gemm_context_device(ctx), err_plain, err_pre, diff);

  free(ref);
  free(rows);
  ct_output_free(&y_plain);
  ct_output_free(&y_pre);
  fp8gemm_weight_destroy(w_plain);
  fp8gemm_weight_destroy(w_pre);
  free(x);
  free(xq);
  free(wq);
  free(xs);
  free(ws);
}

static void test_sweep(void **state) {
  (void)state;
  fp8gemm_context *ctx = ct_context(0);
  tu_rng rng = tu_rng_make(tu_seed());
  sweep_case cases[400];
  const size_t count = build_cases(cases);
  /* Every listed value occurs. */
  for (size_t i = 0; i < 4; i++) {
    int n_seen = 0, k_seen = 0;
    for (size_t j = 0; j < count; j++) {
      n_seen |= cases[j].N == sweep_n[i];
      k_seen |= cases[j].K == sweep_k[i];
    }
    assert_true(n_seen && k_seen);
  }
  printf("# %zu cases on %s, %d threads\n", count, fp8gemm_context_device(ctx),
         fp8gemm_context_num_threads(ctx));
  for (size_t i = 0; i < count; i++) run_case(ctx, &rng, &cases[i]);
  fp8gemm_context_destroy(ctx);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_sweep)};
  return cmocka_run_group_tests(tests, NULL, NULL);
}
