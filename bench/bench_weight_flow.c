/* Measures the two costs of the weight flow (issue 3) on the CPU:
 *  1. creating a weight of N x K (preshuffle included; copy and in-place
 *     variants) against one memcpy of its bytes;
 *  2. fp8gemm_linear (quantization included) against the bare GEMM on
 *     pre-quantized input (fp8gemm_gemm), at several M.
 * Prints a table and writes JSON (--json OUT). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "fp8gemm.h"

static double now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return (x > y) - (x < y);
}

#define CHECK(expr)                                                                     \
  do {                                                                                  \
    fp8gemm_status s_ = (expr);                                                         \
    if (s_ != FP8GEMM_OK) {                                                             \
      fprintf(stderr, "%s: %s (%s)\n", #expr, fp8gemm_status_string(s_), fp8gemm_last_error()); \
      exit(1);                                                                          \
    }                                                                                   \
  } while (0)

int main(int argc, char **argv) {
  const char *json_path = NULL;
  size_t N = 7168, K = 16384;
  int reps = 7;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--json") && i + 1 < argc) json_path = argv[++i];
    else if (!strcmp(argv[i], "--shape") && i + 1 < argc && sscanf(argv[i + 1], "%zux%zu", &N, &K) == 2) i++;
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else {
      fprintf(stderr, "usage: %s [--shape NxK] [--reps R] [--json OUT]\n", argv[0]);
      return 2;
    }
  }
  fp8gemm_context *ctx;
  CHECK(fp8gemm_context_create(NULL, &ctx));
  const size_t bytes = N * K, groups = (K + 127) / 128;
  uint8_t *plain = malloc(bytes), *buffer = malloc(bytes), *copy_dst = malloc(bytes);
  float *scales = malloc(((N + 127) / 128) * groups * sizeof(float));
  uint64_t state = 12345;
  for (size_t i = 0; i < bytes; i++) {
    state = state * 6364136223846793005ull + 1442695040888963407ull;
    uint8_t code = (uint8_t)(state >> 56);
    plain[i] = (code & 0x7F) == 0x7F ? 0x3F : code; /* no NaN codes */
  }
  for (size_t i = 0; i < ((N + 127) / 128) * groups; i++) scales[i] = 1e-3f;
  memset(copy_dst, 1, bytes);
  memcpy(buffer, plain, bytes); /* fault every page in before timing */

  double t_memcpy[32], t_create[32], t_inplace[32];
  for (int r = 0; r < reps; r++) {
    double t0 = now();
    memcpy(copy_dst, plain, bytes);
    t_memcpy[r] = now() - t0;

    fp8gemm_weight_desc d;
    fp8gemm_weight_desc_init(&d);
    d.N = N;
    d.K = K;
    d.data = plain;
    d.scale_inv = scales;
    d.target_layout = FP8GEMM_LAYOUT_PRESHUFFLED_CPU;
    fp8gemm_weight *w;
    t0 = now();
    CHECK(fp8gemm_weight_create(ctx, &d, &w));
    t_create[r] = now() - t0;
    fp8gemm_weight_destroy(w);

    memcpy(buffer, plain, bytes);
    t0 = now();
    CHECK(fp8gemm_weight_create_in_place(ctx, &d, buffer, &w));
    t_inplace[r] = now() - t0;
    fp8gemm_weight_destroy(w);
  }
  qsort(t_memcpy, (size_t)reps, sizeof(double), cmp_double);
  qsort(t_create, (size_t)reps, sizeof(double), cmp_double);
  qsort(t_inplace, (size_t)reps, sizeof(double), cmp_double);
  const double mc = t_memcpy[reps / 2], cr = t_create[reps / 2], ip = t_inplace[reps / 2];
  printf("weight %zu x %zu (%.1f MB), %d thread(s), median of %d\n", N, K, (double)bytes / 1e6,
         fp8gemm_context_num_threads(ctx), reps);
  printf("  memcpy                         %8.2f ms\n", mc * 1e3);
  printf("  weight_create (copy+preshuffle) %8.2f ms  = %.2fx memcpy\n", cr * 1e3, cr / mc);
  printf("  weight_create_in_place          %8.2f ms  = %.2fx memcpy\n", ip * 1e3, ip / mc);

  /* Quantization overhead of fp8gemm_linear over fp8gemm_gemm. */
  const size_t Nl = 7168, Kl = 2048, gl = Kl / 128;
  fp8gemm_weight_desc d;
  fp8gemm_weight_desc_init(&d);
  d.N = Nl;
  d.K = Kl;
  d.data = plain;
  d.scale_inv = scales;
  fp8gemm_weight *w;
  CHECK(fp8gemm_weight_create(ctx, &d, &w));
  const size_t m_values[] = {64, 256, 1024};
  double overhead[3];
  printf("linear vs bare gemm on %zu x %zu (%s layout)\n", Nl, Kl, fp8gemm_layout_name(fp8gemm_weight_layout(w)));
  for (int mi = 0; mi < 3; mi++) {
    const size_t M = m_values[mi];
    float *x = malloc(M * Kl * sizeof(float)), *y = malloc(M * Nl * sizeof(float)), *xs = malloc(M * gl * sizeof(float));
    uint8_t *xq = malloc(M * Kl);
    for (size_t i = 0; i < M * Kl; i++) {
      state = state * 6364136223846793005ull + 1442695040888963407ull;
      x[i] = (float)((int64_t)(state >> 40) - (1 << 23)) / (float)(1 << 23);
    }
    size_t ws_bytes;
    CHECK(fp8gemm_linear_workspace_size(ctx, w, M, &ws_bytes));
    void *ws = malloc(ws_bytes);
    CHECK(fp8gemm_quantize_activations(ctx, M, Kl, FP8GEMM_DTYPE_F32, x, Kl, xq, Kl, xs, FP8GEMM_SCALE_ROW_MAJOR, gl));
    double t_lin[32], t_gemm[32];
    CHECK(fp8gemm_linear(ctx, w, M, FP8GEMM_DTYPE_F32, x, Kl, -1, y, Nl, ws, ws_bytes));
    for (int r = 0; r < reps; r++) {
      double t0 = now();
      CHECK(fp8gemm_gemm(ctx, w, M, xq, Kl, xs, FP8GEMM_SCALE_ROW_MAJOR, gl, FP8GEMM_DTYPE_F32, y, Nl, ws, ws_bytes));
      t_gemm[r] = now() - t0;
      t0 = now();
      CHECK(fp8gemm_linear(ctx, w, M, FP8GEMM_DTYPE_F32, x, Kl, -1, y, Nl, ws, ws_bytes));
      t_lin[r] = now() - t0;
    }
    qsort(t_lin, (size_t)reps, sizeof(double), cmp_double);
    qsort(t_gemm, (size_t)reps, sizeof(double), cmp_double);
    overhead[mi] = t_lin[reps / 2] / t_gemm[reps / 2] - 1.0;
    printf("  M=%5zu  gemm %9.1f us  linear %9.1f us  overhead %+.1f%%\n", M, t_gemm[reps / 2] * 1e6,
           t_lin[reps / 2] * 1e6, overhead[mi] * 100);
    free(x);
    free(y);
    free(xs);
    free(xq);
    free(ws);
  }
  if (json_path) {
    FILE *f = fopen(json_path, "w");
    if (f) {
      fprintf(f,
              "{\"N\": %zu, \"K\": %zu, \"threads\": %d, \"memcpy_ms\": %.3f, \"create_ms\": %.3f, "
              "\"create_in_place_ms\": %.3f, \"create_over_memcpy\": %.3f, "
              "\"in_place_over_memcpy\": %.3f, \"linear_overhead\": {\"64\": %.4f, \"256\": %.4f, "
              "\"1024\": %.4f}}\n",
              N, K, fp8gemm_context_num_threads(ctx), mc * 1e3, cr * 1e3, ip * 1e3, cr / mc, ip / mc,
              overhead[0], overhead[1], overhead[2]);
      fclose(f);
    }
  }
  fp8gemm_weight_destroy(w);
  fp8gemm_context_destroy(ctx);
  free(plain);
  free(buffer);
  free(copy_dst);
  free(scales);
  return 0;
}
