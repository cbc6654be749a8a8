#include "cli_util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

double cli_now(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int cli_same_file(const char *a, const char *b) {
  struct stat sa, sb;
  return stat(a, &sa) == 0 && stat(b, &sb) == 0 && sa.st_dev == sb.st_dev &&
         sa.st_ino == sb.st_ino;
}

void cli_rng_seed(cli_rng *rng, uint64_t seed) { rng->state = seed * 0x9E3779B97F4A7C15ull + 1; }

static uint64_t cli_next(cli_rng *rng) {
  uint64_t z = (rng->state += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

float cli_normal(cli_rng *rng) {
  const double u1 = ((double)(cli_next(rng) >> 11) + 1.0) * 0x1.0p-53;
  const double u2 = (double)(cli_next(rng) >> 11) * 0x1.0p-53;
  return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

int cli_parse_backend(const char *name) {
  if (!strcmp(name, "cpu")) return FP8GEMM_BACKEND_CPU;
  if (!strcmp(name, "cuda")) return FP8GEMM_BACKEND_CUDA;
  if (!strcmp(name, "auto")) return FP8GEMM_BACKEND_AUTO;
  return -1;
}

int cli_parse_dtype(const char *name) {
  if (!strcmp(name, "f32")) return FP8GEMM_DTYPE_F32;
  if (!strcmp(name, "bf16")) return FP8GEMM_DTYPE_BF16;
  if (!strcmp(name, "f16")) return FP8GEMM_DTYPE_F16;
  return -1;
}

int cli_fail(const char *cmd, const char *what, fp8gemm_status status) {
  fprintf(stderr, "fp8gemm %s: %s: %s (%s)\n", cmd, what, fp8gemm_status_string(status),
          fp8gemm_last_error());
  return 1;
}

static int parse_size_token(const char *text, size_t *value) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(text, &end, 10);
  if (errno || end == text || v == 0) return -1;
  while (isspace((unsigned char)*end)) end++;
  if (*end) return -1;
  *value = (size_t)v;
  return 0;
}

static int append_shape(cli_shape **shapes, int *count, int *capacity, const cli_shape *s) {
  if (*count == *capacity) {
    *capacity = *capacity ? 2 * *capacity : 16;
    cli_shape *grown = realloc(*shapes, (size_t)*capacity * sizeof *grown);
    if (!grown) return -1;
    *shapes = grown;
  }
  (*shapes)[(*count)++] = *s;
  return 0;
}

/* Inline "M,N,K;M,N,K": each triple becomes one shape with one M. */
static int parse_inline(const char *spec, cli_shape **shapes) {
  int count = 0, capacity = 0;
  char *copy = strdup(spec), *save = NULL;
  for (char *item = strtok_r(copy, ";", &save); item; item = strtok_r(NULL, ";", &save)) {
    cli_shape s;
    memset(&s, 0, sizeof s);
    snprintf(s.set, sizeof s.set, "inline");
    char *fields[3], *save2 = NULL;
    int n = 0;
    for (char *f = strtok_r(item, ",", &save2); f && n < 4; f = strtok_r(NULL, ",", &save2)) {
      if (n < 3) fields[n] = f;
      n++;
    }
    if (n != 3 || parse_size_token(fields[0], &s.m_values[0]) || parse_size_token(fields[1], &s.N) ||
        parse_size_token(fields[2], &s.K)) {
      fprintf(stderr, "fp8gemm: shape '%s' is not M,N,K with positive integers\n", item);
      free(copy);
      free(*shapes);
      *shapes = NULL;
      return -1;
    }
    s.m_count = 1;
    if (append_shape(shapes, &count, &capacity, &s)) break;
  }
  free(copy);
  return count;
}

int cli_load_shapes(const char *spec, cli_shape **shapes) {
  *shapes = NULL;
  FILE *f = fopen(spec, "r");
  if (!f) {
    if (strchr(spec, ',')) return parse_inline(spec, shapes);
    fprintf(stderr, "fp8gemm: shapes '%s': %s\n", spec, strerror(errno));
    return -1;
  }
  int count = 0, capacity = 0, line_number = 0;
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    line_number++;
    char *p = line;
    while (isspace((unsigned char)*p)) p++;
    if (!*p || *p == '#') continue;
    p[strcspn(p, "\r\n")] = '\0';
    cli_shape s;
    memset(&s, 0, sizeof s);
    char *fields[4], *save = NULL;
    int n = 0;
    for (char *t = strtok_r(p, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
      if (n < 4) fields[n] = t;
      n++;
    }
    int bad = n != 4 || parse_size_token(fields[1], &s.N) || parse_size_token(fields[2], &s.K);
    if (!bad) {
      snprintf(s.set, sizeof s.set, "%s", fields[0]);
      char *save2 = NULL;
      for (char *t = strtok_r(fields[3], " ", &save2); t && !bad; t = strtok_r(NULL, " ", &save2)) {
        if (s.m_count == sizeof s.m_values / sizeof s.m_values[0] ||
            parse_size_token(t, &s.m_values[s.m_count]))
          bad = 1;
        else
          s.m_count++;
      }
      bad = bad || s.m_count == 0;
    }
    if (bad) {
      fprintf(stderr, "fp8gemm: %s:%d: expected set,N,K,\"M values\" with positive integers\n",
              spec, line_number);
      fclose(f);
      free(*shapes);
      *shapes = NULL;
      return -1;
    }
    if (append_shape(shapes, &count, &capacity, &s)) break;
  }
  fclose(f);
  return count;
}

/* Relative error of y (host, fp32) on up to 8 sampled rows against the
 * reference computed on the same quantized rows. */
double cli_check_rows(fp8gemm_context *host_ctx, const cli_layer *L, size_t M,
                         const float *x, const float *y) {
  size_t rows[8] = {0}, count = 0;
  const size_t picks[8] = {0, 1, M / 3, M / 2, (2 * M) / 3, M > 2 ? M - 2 : 0, M - 1, M / 7};
  for (size_t i = 0; i < 8; i++) {
    int dup = 0;
    for (size_t j = 0; j < count; j++) dup |= rows[j] == picks[i];
    if (!dup && picks[i] < M) rows[count++] = picks[i];
  }
  uint8_t *xq = malloc(count * L->K);
  float *xs = malloc(count * L->groups * sizeof(float));
  double *ref = malloc(count * L->N * sizeof(double));
  float *ys = malloc(count * L->N * sizeof(float));
  double err = INFINITY;
  if (xq && xs && ref && ys) {
    int ok = 1;
    for (size_t i = 0; i < count && ok; i++) {
      ok = fp8gemm_quantize_activations(host_ctx, 1, L->K, FP8GEMM_DTYPE_F32, x + rows[i] * L->K,
                                        L->K, xq + i * L->K, L->K, xs + i * L->groups,
                                        FP8GEMM_SCALE_ROW_MAJOR, L->groups) == FP8GEMM_OK;
      memcpy(ys + i * L->N, y + rows[i] * L->N, L->N * sizeof(float));
    }
    if (ok && fp8gemm_gemm_reference(count, L->N, L->K, xq, L->K, xs, FP8GEMM_SCALE_ROW_MAJOR,
                                     L->groups, L->wq, FP8GEMM_LAYOUT_PLAIN, L->w_scale, NULL, ref,
                                     L->N) == FP8GEMM_OK) {
      double num = 0, den = 0;
      for (size_t i = 0; i < count * L->N; i++) {
        const double d = (double)ys[i] - ref[i];
        num += d * d;
        den += ref[i] * ref[i];
      }
      err = isnan(num) ? INFINITY : sqrt(num / (den > 0 ? den : 1));
    }
  }
  free(xq);
  free(xs);
  free(ref);
  free(ys);
  return err;
}


const fp8gemm_weight *cli_next_weight(const cli_weights *weights, int *next) {
  const fp8gemm_weight *w = weights->w[*next];
  *next = (*next + 1) % weights->count;
  return w;
}

/* Median seconds of one forward over batches of back-to-back calls (one
 * synchronization per batch of about 1 ms, so a GPU's host round trip and
 * launch gaps do not count where calls are short), for about `budget` s. */
fp8gemm_status cli_time_linear(fp8gemm_context *ctx, const cli_weights *weights, size_t M,
                               fp8gemm_dtype x_dtype, const void *x, void *y, void *ws,
                               size_t ws_bytes, double budget, double *seconds) {
  double samples[64];
  int count = 0, next = 0;
  const size_t N = fp8gemm_weight_n(weights->w[0]), K = fp8gemm_weight_k(weights->w[0]);
  const double start = cli_now();
  fp8gemm_status status = FP8GEMM_OK;
  double single = 0;
  for (int warm = 0; warm < 2 && status == FP8GEMM_OK; warm++) { /* the second one sizes a batch */
    const double t0 = cli_now();
    status = fp8gemm_linear(ctx, cli_next_weight(weights, &next), M, x_dtype, x, K, -1, y, N, ws,
                            ws_bytes);
    if (status == FP8GEMM_OK) status = fp8gemm_context_synchronize(ctx);
    single = cli_now() - t0;
  }
  const int batch = single >= 1e-3 ? 1 : single <= 1e-3 / 64 ? 64 : (int)(1e-3 / single);
  while (status == FP8GEMM_OK && count < 64 && (count < 3 || cli_now() - start < budget)) {
    const double t0 = cli_now();
    for (int b = 0; b < batch && status == FP8GEMM_OK; b++)
      status = fp8gemm_linear(ctx, cli_next_weight(weights, &next), M, x_dtype, x, K, -1, y, N, ws,
                            ws_bytes);
    if (status == FP8GEMM_OK) status = fp8gemm_context_synchronize(ctx);
    samples[count++] = (cli_now() - t0) / batch;
    if (cli_now() - start > 4 * budget && count >= 1) break;
  }
  for (int i = 1; i < count; i++)
    for (int j = i; j > 0 && samples[j] < samples[j - 1]; j--) {
      double t = samples[j];
      samples[j] = samples[j - 1];
      samples[j - 1] = t;
    }
  *seconds = count ? samples[count / 2] : 0;
  return status;
}


fp8gemm_status cli_layer_make(fp8gemm_context *host_ctx, cli_rng *rng, size_t N, size_t K,
                              cli_layer *L) {
  L->N = N;
  L->K = K;
  L->groups = (K + 127) / 128;
  L->wq = malloc(N * K);
  L->w_scale = malloc(((N + 127) / 128) * L->groups * sizeof(float));
  float *w = malloc(N * K * sizeof(float));
  fp8gemm_status status = FP8GEMM_ERROR_OUT_OF_MEMORY;
  if (w && L->wq && L->w_scale) {
    for (size_t i = 0; i < N * K; i++) w[i] = 0.02f * cli_normal(rng);
    status = fp8gemm_quantize_weight(host_ctx, N, K, FP8GEMM_DTYPE_F32, w, K, L->wq, L->w_scale);
  }
  free(w);
  if (status != FP8GEMM_OK) cli_layer_free(L);
  return status;
}

void cli_layer_free(cli_layer *L) {
  free(L->wq);
  free(L->w_scale);
  L->wq = NULL;
  L->w_scale = NULL;
}

fp8gemm_status cli_weight_create(fp8gemm_context *ctx, const cli_layer *L, fp8gemm_layout layout,
                                 fp8gemm_weight **weight) {
  fp8gemm_weight_desc d;
  fp8gemm_weight_desc_init(&d);
  d.N = L->N;
  d.K = L->K;
  d.data = L->wq;
  d.scale_inv = L->w_scale;
  d.target_layout = (int)layout;
  return fp8gemm_weight_create(ctx, &d, weight);
}

int cli_copies_for(size_t weight_bytes) {
  const size_t n = CLI_ROTATION_BYTES / (weight_bytes ? weight_bytes : 1) + 1;
  return n > CLI_MAX_COPIES ? CLI_MAX_COPIES : (int)n;
}

fp8gemm_status cli_weights_create(fp8gemm_context *ctx, const cli_layer *L, fp8gemm_layout layout,
                                  cli_weights *weights) {
  weights->count = 0;
  const int want = cli_copies_for(L->N * L->K);
  while (weights->count < want) {
    const fp8gemm_status st = cli_weight_create(ctx, L, layout, &weights->w[weights->count]);
    if (st != FP8GEMM_OK) {
      cli_weights_destroy(weights);
      return st;
    }
    weights->count++;
  }
  return FP8GEMM_OK;
}

void cli_weights_destroy(cli_weights *weights) {
  for (int i = 0; i < weights->count; i++) fp8gemm_weight_destroy(weights->w[i]);
  weights->count = 0;
}
