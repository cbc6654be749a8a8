#include "testutil.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

uint64_t tu_seed(void) {
  const char *env = getenv("FP8GEMM_TEST_SEED");
  uint64_t seed = env && *env ? strtoull(env, NULL, 0) : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);
  printf("# FP8GEMM_TEST_SEED=%llu\n", (unsigned long long)seed);
  return seed;
}

tu_rng tu_rng_make(uint64_t seed) {
  tu_rng rng = {seed * 0x9E3779B97F4A7C15ull + 0x632BE59BD9B4E019ull};
  return rng;
}

uint64_t tu_next(tu_rng *rng) { /* splitmix64 */
  uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float tu_uniform(tu_rng *rng) { return (float)((double)(tu_next(rng) >> 11) * 0x1.0p-52 - 1.0); }

float tu_normal(tu_rng *rng) {
  double u1 = ((double)(tu_next(rng) >> 11) + 1.0) * 0x1.0p-53;
  double u2 = (double)(tu_next(rng) >> 11) * 0x1.0p-53;
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

void tu_fill_normal(tu_rng *rng, float *dst, size_t count, float scale) {
  for (size_t i = 0; i < count; i++) dst[i] = scale * tu_normal(rng);
}

void *tu_malloc(size_t bytes) {
  void *p = malloc(bytes ? bytes : 1);
  if (!p) fail_msg("out of memory (%zu bytes)", bytes);
  return p;
}

void tu_weight_desc(fp8gemm_weight_desc *d, size_t N, size_t K, const uint8_t *codes,
                    fp8gemm_layout layout, const float *scale_inv, const float *bias,
                    fp8gemm_layout target) {
  fp8gemm_weight_desc_init(d);
  d->N = N;
  d->K = K;
  d->dtype = FP8GEMM_DTYPE_E4M3FN;
  d->data = codes;
  d->layout = layout;
  d->memory = FP8GEMM_MEMORY_HOST;
  d->scale_inv = scale_inv;
  d->bias = bias;
  d->bias_dtype = FP8GEMM_DTYPE_F32;
  d->target_layout = (int)target;
}

fp8gemm_weight *tu_weight(fp8gemm_context *ctx, size_t N, size_t K, const uint8_t *plain_codes,
                          const float *scale_inv, const float *bias, fp8gemm_layout target) {
  fp8gemm_weight_desc d;
  tu_weight_desc(&d, N, K, plain_codes, FP8GEMM_LAYOUT_PLAIN, scale_inv, bias, target);
  fp8gemm_weight *w = NULL;
  TU_OK(fp8gemm_weight_create(ctx, &d, &w));
  assert_int_equal(fp8gemm_weight_layout(w), target);
  return w;
}

void *tu_read_file(const char *path, size_t *size) {
  FILE *f = fopen(path, "rb");
  if (!f) fail_msg("fopen %s: %s", path, strerror(errno));
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  void *bytes = tu_malloc((size_t)n + 1);
  assert_int_equal(fread(bytes, 1, (size_t)n, f), (size_t)n);
  fclose(f);
  *size = (size_t)n;
  return bytes;
}

double tu_rel_err(const float *y, size_t ldy, const double *ref, size_t ldr, size_t M, size_t N) {
  double num = 0, den = 0;
  for (size_t m = 0; m < M; m++)
    for (size_t n = 0; n < N; n++) {
      double d = (double)y[m * ldy + n] - ref[m * ldr + n];
      num += d * d;
      den += ref[m * ldr + n] * ref[m * ldr + n];
    }
  if (isnan(num)) return INFINITY;
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

double tu_rel_err_f32(const float *a, size_t lda, const float *b, size_t ldb, size_t M, size_t N) {
  double num = 0, den = 0;
  for (size_t m = 0; m < M; m++)
    for (size_t n = 0; n < N; n++) {
      double d = (double)a[m * lda + n] - (double)b[m * ldb + n];
      num += d * d;
      den += (double)b[m * ldb + n] * (double)b[m * ldb + n];
    }
  if (isnan(num)) return INFINITY;
  return den > 0 ? sqrt(num / den) : sqrt(num);
}

void tu_problem_make(fp8gemm_context *ctx, tu_rng *rng, size_t M, size_t N, size_t K,
                     int with_bias, tu_problem *p) {
  memset(p, 0, sizeof *p);
  p->M = M;
  p->N = N;
  p->K = K;
  p->groups = (K + 127) / 128;
  p->x = tu_malloc(M * K * sizeof(float));
  p->xq = tu_malloc(M * K);
  p->x_scale = tu_malloc(M * p->groups * sizeof(float));
  p->w = tu_malloc(N * K * sizeof(float));
  p->wq = tu_malloc(N * K);
  p->w_scale = tu_malloc(((N + 127) / 128) * p->groups * sizeof(float));
  tu_fill_normal(rng, p->x, M * K, 1.0f);
  /* Magnitudes that vary per 128x128 block, so a wrong scale index shows. */
  for (size_t n = 0; n < N; n++)
    for (size_t k = 0; k < K; k++) {
      const float block_gain = 0.25f + (float)(((n / 128) * 7 + (k / 128) * 3) % 11) * 0.2f;
      p->w[n * K + k] = block_gain * 0.05f * tu_normal(rng);
    }
  TU_OK(fp8gemm_quantize_activations(ctx, M, K, FP8GEMM_DTYPE_F32, p->x, K, p->xq, K, p->x_scale,
                                     FP8GEMM_SCALE_ROW_MAJOR, p->groups));
  TU_OK(fp8gemm_quantize_weight(ctx, N, K, FP8GEMM_DTYPE_F32, p->w, K, p->wq, p->w_scale));
  if (with_bias) {
    p->bias = tu_malloc(N * sizeof(float));
    tu_fill_normal(rng, p->bias, N, 0.5f);
  }
}

void tu_problem_free(tu_problem *p) {
  free(p->x);
  free(p->xq);
  free(p->x_scale);
  free(p->w);
  free(p->wq);
  free(p->w_scale);
  free(p->bias);
  memset(p, 0, sizeof *p);
}

double *tu_reference(const tu_problem *p) {
  double *ref = tu_malloc(p->M * p->N * sizeof(double));
  TU_OK(fp8gemm_gemm_reference(p->M, p->N, p->K, p->xq, p->K, p->x_scale, FP8GEMM_SCALE_ROW_MAJOR,
                               p->groups, p->wq, FP8GEMM_LAYOUT_PLAIN, p->w_scale, p->bias, ref,
                               p->N));
  return ref;
}

int tu_run_program(const char *program, const char *log, char *output, size_t output_cap,
                   const char *first, va_list args) {
  const char *argv[32] = {program};
  int argc = 1;
  for (const char *a = first; a; a = va_arg(args, const char *)) {
    if (argc == 31) fail_msg("%s: more than 30 arguments", program);
    argv[argc++] = a;
  }
  argv[argc] = NULL;
  fflush(NULL); /* the child must not repeat buffered output */
  const pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    const int fd = log ? open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644) : open("/dev/null", O_WRONLY);
    if (fd < 0) _exit(126);
    dup2(fd, 1);
    dup2(fd, 2);
    execv(program, (char *const *)argv);
    _exit(127);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  if (log && output && output_cap > 0) {
    FILE *f = fopen(log, "rb");
    const size_t n = f ? fread(output, 1, output_cap - 1, f) : 0;
    output[n] = '\0';
    if (f) fclose(f);
    unlink(log);
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}
