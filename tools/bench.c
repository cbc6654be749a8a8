/* fp8gemm bench: times the GEMM (pre-quantized x, fp8gemm_gemm) per shape
 * and weight layout, checks it against the fp64 reference on sampled rows,
 * and, when built with OpenBLAS, times cblas_sgemm on the same shape with
 * fp32 weights (the dequantized ones) on as many threads as the context.
 * Writes one JSON object per (shape, M, layout) and prints a table.
 *
 * Only the public API is used; x, y and the workspace live in backend
 * memory (fp8gemm_memory_alloc / copy), so the same code times CUDA. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

#include "cli_util.h"
#include "commands.h"

#ifdef FP8GEMM_HAVE_OPENBLAS
#include <cblas.h>
#endif

#define MAX_CHECK_ROWS 4

static void usage(FILE *out) {
  fprintf(out,
          "usage: fp8gemm bench [--backend cpu|cuda] --shapes FILE|\"M,N,K;M,N,K\"\n"
          "                     [--layout plain|preshuffled|both] [--iters N] [--budget SECONDS]\n"
          "                     [--threads N] [--out-dtype f32|bf16|f16] [--no-openblas]\n"
          "                     [--cold] [--seed N] [--json OUT]\n"
          "  Times fp8gemm_gemm (x already quantized 1x128) for every (N, K) and M of the\n"
          "  shapes (file format: set,N,K,\"M values\"), once per weight layout, and, with\n"
          "  OpenBLAS built in, cblas_sgemm on the same shape (fp32 weights, the dequantized\n"
          "  ones; same thread count). They are timed round-robin, one sample of each per\n"
          "  round, so load on the machine hits them alike. Each weight exists in enough\n"
          "  copies (up to 8) to exceed 96 MB together, used in turn, so a call finds its\n"
          "  weight in memory, not in the caches, as in a model's forward. A sample is a\n"
          "  call right after 2 ms of untimed calls of the same thing (threads awake,\n"
          "  clocks up);\n"
          "  with --cold, right after evicting the caches instead (thread wake-up\n"
          "  included). After each sgemm sample the bench sleeps 0.15 s so OpenBLAS's\n"
          "  spinning threads are idle when the next one starts. Each time is the median of\n"
          "  --iters rounds (default: as many as fit in --budget seconds, 0.5; at least 3,\n"
          "  at most 15 with sgemm). rel_err is ||y - ref|| / ||ref|| against the fp64\n"
          "  reference on up to %d sampled rows.\n",
          MAX_CHECK_ROWS);
}

typedef struct bench_options {
  int backend;
  const char *shapes;
  int layouts; /* bit 0 plain, bit 1 preshuffled */
  int iters;   /* 0 = by budget */
  double budget;
  int threads;
  fp8gemm_dtype out_dtype;
  int openblas;
  int cold;
  unsigned long long seed;
  const char *json;
} bench_options;

static int compare_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef fp8gemm_status (*timed_fn)(void *arg);

/* One thing to time. */
typedef struct candidate {
  timed_fn fn;
  void *arg;
  double settle; /* seconds to sleep after each run, untimed */
  double median; /* seconds */
  int runs;
} candidate;

/* OpenBLAS's worker threads keep spinning on their cores for about 0.1 s
 * after a call returns; whatever runs next would find one core taken.
 * Sleeping this long after each sgemm sample lets them go idle. */
#define SGEMM_SETTLE_SECONDS 0.15
#define MAX_ROUNDS_WITH_SETTLE 15

static void sleep_seconds(double s) {
  struct timespec ts;
  ts.tv_sec = (time_t)s;
  ts.tv_nsec = (long)((s - (double)ts.tv_sec) * 1e9);
  nanosleep(&ts, NULL);
}

/* Reads a buffer twice the size of a large L3 so the next call finds none
 * of its data in cache (--cold). */
#define EVICT_BYTES ((size_t)96 << 20)
static unsigned char *evict_buffer;
static volatile unsigned evict_sink;

static void evict_caches(void) {
  unsigned sum = 0;
  for (size_t i = 0; i < EVICT_BYTES; i += 64) {
    evict_buffer[i]++;
    sum += evict_buffer[i];
  }
  evict_sink = sum;
}

/* Times the candidates round-robin, one sample of each per round, so a
 * load change on the machine hits them alike; keeps each one's median.
 * A sample is one call, timed, right after untimed calls of the same
 * candidate for 2 ms: the steady state of back-to-back calls (threads
 * awake, clocks up). With `cold`, the untimed calls are replaced by
 * evicting the caches: one call with its data in memory, thread wake-up
 * included. Rounds: `iters`, or as many as
 * fit in `budget` seconds per candidate, at least 3 (at most 15 when a
 * candidate needs a settling pause). */
static fp8gemm_status time_interleaved(candidate *c, int count, int iters, double budget,
                                       bool cold) {
  double slowest = 0;
  bool settling = false;
  for (int i = 0; i < count; i++) {
    const double t0 = cli_now();
    fp8gemm_status st = c[i].fn(c[i].arg);
    if (st != FP8GEMM_OK) return st;
    const double t = cli_now() - t0;
    if (t > slowest) slowest = t;
    if (c[i].settle > 0) sleep_seconds(c[i].settle);
    settling |= c[i].settle > 0;
  }
  int rounds = iters;
  if (rounds <= 0) {
    rounds = slowest > 0 ? (int)(budget / (2 * slowest)) : 1000;
    if (rounds < 3) rounds = 3;
    if (rounds > (settling ? MAX_ROUNDS_WITH_SETTLE : 1000))
      rounds = settling ? MAX_ROUNDS_WITH_SETTLE : 1000;
  }
  double *times = malloc((size_t)rounds * (size_t)count * sizeof *times);
  if (!times) return FP8GEMM_ERROR_OUT_OF_MEMORY;
  for (int r = 0; r < rounds; r++)
    for (int i = 0; i < count; i++) {
      fp8gemm_status st = FP8GEMM_OK;
      if (cold) {
        evict_caches();
      } else {
        /* Untimed calls for at least 2 ms: after a pause the cores need
         * that long to be back at full clock with the threads awake. */
        const double until = cli_now() + 0.002;
        do st = c[i].fn(c[i].arg);
        while (st == FP8GEMM_OK && cli_now() < until);
      }
      const double t0 = cli_now();
      if (st == FP8GEMM_OK) st = c[i].fn(c[i].arg);
      times[(size_t)i * (size_t)rounds + (size_t)r] = cli_now() - t0;
      if (st != FP8GEMM_OK) {
        free(times);
        return st;
      }
      if (c[i].settle > 0) sleep_seconds(c[i].settle);
    }
  for (int i = 0; i < count; i++) {
    double *t = times + (size_t)i * (size_t)rounds;
    qsort(t, (size_t)rounds, sizeof *t, compare_double);
    c[i].median = rounds % 2 ? t[rounds / 2] : 0.5 * (t[rounds / 2 - 1] + t[rounds / 2]);
    c[i].runs = rounds;
  }
  free(times);
  return FP8GEMM_OK;
}

typedef struct gemm_call {
  fp8gemm_context *ctx;
  const cli_weights *w; /* copies of the weight, cycled call after call (cli_next_weight) */
  int next;
  size_t M, groups;
  const uint8_t *xq;
  const float *xs;
  void *y;
  fp8gemm_dtype out_dtype;
  void *ws;
  size_t ws_bytes;
} gemm_call;

static fp8gemm_status run_gemm(void *arg) {
  gemm_call *c = arg;
  const fp8gemm_weight *w = cli_next_weight(c->w, &c->next);
  fp8gemm_status st = fp8gemm_gemm(c->ctx, w, c->M, c->xq, fp8gemm_weight_k(w), c->xs,
                                   FP8GEMM_SCALE_ROW_MAJOR, c->groups, c->out_dtype, c->y,
                                   fp8gemm_weight_n(w), c->ws, c->ws_bytes);
  if (st == FP8GEMM_OK) st = fp8gemm_context_synchronize(c->ctx);
  return st;
}

#ifdef FP8GEMM_HAVE_OPENBLAS
typedef struct sgemm_call {
  size_t M, N, K;
  const float *x;
  float **w; /* `copies` copies of the fp32 weight */
  int copies, next;
  float *y;
} sgemm_call;

static fp8gemm_status run_sgemm(void *arg) {
  sgemm_call *c = arg;
  const float *w = c->w[c->next];
  c->next = (c->next + 1) % c->copies;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)c->M, (int)c->N, (int)c->K, 1.0f, c->x,
              (int)c->K, w, (int)c->K, 0.0f, c->y, (int)c->N);
  return FP8GEMM_OK;
}
#endif

/* A shape's data on the host: random e4m3fn codes (never NaN) and scales
 * for the weight, random x quantized by the host context. */
typedef struct host_data {
  size_t M, N, K, groups;
  uint8_t *wq;
  float *ws;
  float *x;
  uint8_t *xq;
  float *xs;
} host_data;

static uint64_t next_bits(cli_rng *rng) {
  /* cli_normal consumes the generator; reuse it for bytes too. */
  const float v = cli_normal(rng);
  uint32_t u;
  memcpy(&u, &v, sizeof u);
  return u ^ (rng->state >> 17);
}

static int make_weight(cli_rng *rng, size_t N, size_t K, host_data *h) {
  const size_t groups = (K + 127) / 128, blocks = (N + 127) / 128 * groups;
  h->wq = malloc(N * K);
  h->ws = malloc(blocks * sizeof(float));
  if (!h->wq || !h->ws) return -1;
  uint64_t bits = 0;
  for (size_t i = 0; i < N * K; i++) {
    if (i % 4 == 0) bits = next_bits(rng);
    uint8_t code = (uint8_t)(bits >> (8 * (i % 4)));
    if ((code & 0x7F) == 0x7F) code ^= 0x01; /* no NaN codes */
    h->wq[i] = code;
  }
  for (size_t b = 0; b < blocks; b++) h->ws[b] = (0.5f + 0.25f * fabsf(cli_normal(rng))) / 448.0f;
  return 0;
}

static int make_x(fp8gemm_context *host, cli_rng *rng, size_t M, size_t K, host_data *h) {
  h->groups = (K + 127) / 128;
  h->x = malloc(M * K * sizeof(float));
  h->xq = malloc(M * K);
  h->xs = malloc(M * h->groups * sizeof(float));
  if (!h->x || !h->xq || !h->xs) return -1;
  for (size_t i = 0; i < M * K; i++) h->x[i] = cli_normal(rng);
  return fp8gemm_quantize_activations(host, M, K, FP8GEMM_DTYPE_F32, h->x, K, h->xq, K, h->xs,
                                      FP8GEMM_SCALE_ROW_MAJOR, h->groups) == FP8GEMM_OK
             ? 0
             : -1;
}

static void free_x(host_data *h) {
  free(h->x);
  free(h->xq);
  free(h->xs);
  h->x = NULL;
  h->xq = NULL;
  h->xs = NULL;
}

/* Sampled rows: first, last, and evenly spread ones. */
static size_t check_rows(size_t M, size_t rows[MAX_CHECK_ROWS]) {
  if (M <= MAX_CHECK_ROWS) {
    for (size_t i = 0; i < M; i++) rows[i] = i;
    return M;
  }
  for (size_t i = 0; i < MAX_CHECK_ROWS; i++) rows[i] = i * (M - 1) / (MAX_CHECK_ROWS - 1);
  return MAX_CHECK_ROWS;
}

static float to_float(fp8gemm_dtype dtype, const void *base, size_t index) {
  switch (dtype) {
    case FP8GEMM_DTYPE_BF16: return fp8gemm_bf16_to_float(((const uint16_t *)base)[index]);
    case FP8GEMM_DTYPE_F16: return fp8gemm_f16_to_float(((const uint16_t *)base)[index]);
    default: return ((const float *)base)[index];
  }
}

/* The 1-minute load average (Linux), NAN elsewhere: recorded with each row
 * because other users of a shared machine change the numbers. */
static double load_average(void) {
  double load = NAN;
  FILE *f = fopen("/proc/loadavg", "r");
  if (f) {
    if (fscanf(f, "%lf", &load) != 1) load = NAN;
    fclose(f);
  }
  return load;
}

static void json_number(FILE *f, const char *key, double v, int last) {
  if (isfinite(v))
    fprintf(f, "\"%s\": %.6g%s", key, v, last ? "" : ", ");
  else
    fprintf(f, "\"%s\": null%s", key, last ? "" : ", ");
}

static int parse_options(int argc, char **argv, bench_options *o) {
  memset(o, 0, sizeof *o);
  o->backend = FP8GEMM_BACKEND_CPU;
  o->layouts = 3;
  o->budget = 0.5;
  o->out_dtype = FP8GEMM_DTYPE_F32;
  o->openblas = 1;
  o->seed = 2024;
  static const struct option long_options[] = {{"backend", required_argument, 0, 'b'},
                                               {"shapes", required_argument, 0, 's'},
                                               {"layout", required_argument, 0, 'l'},
                                               {"iters", required_argument, 0, 'i'},
                                               {"budget", required_argument, 0, 't'},
                                               {"threads", required_argument, 0, 'p'},
                                               {"out-dtype", required_argument, 0, 'd'},
                                               {"no-openblas", no_argument, 0, 'n'},
                                               {"cold", no_argument, 0, 'c'},
                                               {"seed", required_argument, 0, 'r'},
                                               {"json", required_argument, 0, 'j'},
                                               {"help", no_argument, 0, 'h'},
                                               {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "b:s:l:i:t:p:d:ncr:j:h", long_options, NULL)) != -1) {
    switch (c) {
      case 'b':
        o->backend = cli_parse_backend(optarg);
        if (o->backend < 0) {
          fprintf(stderr, "fp8gemm bench: --backend '%s' is not cpu, cuda or auto\n", optarg);
          return 2;
        }
        break;
      case 's': o->shapes = optarg; break;
      case 'l':
        if (!strcmp(optarg, "plain"))
          o->layouts = 1;
        else if (!strcmp(optarg, "preshuffled"))
          o->layouts = 2;
        else if (!strcmp(optarg, "both"))
          o->layouts = 3;
        else {
          fprintf(stderr, "fp8gemm bench: --layout '%s' is not plain, preshuffled or both\n", optarg);
          return 2;
        }
        break;
      case 'i': o->iters = atoi(optarg); break;
      case 't': o->budget = atof(optarg); break;
      case 'p': o->threads = atoi(optarg); break;
      case 'd': {
        const int dtype = cli_parse_dtype(optarg);
        if (dtype < 0) {
          fprintf(stderr, "fp8gemm bench: --out-dtype '%s' is not f32, bf16 or f16\n", optarg);
          return 2;
        }
        o->out_dtype = (fp8gemm_dtype)dtype;
        break;
      }
      case 'n': o->openblas = 0; break;
      case 'c': o->cold = 1; break;
      case 'r': o->seed = strtoull(optarg, NULL, 0); break;
      case 'j': o->json = optarg; break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (!o->shapes || optind != argc || o->iters < 0 || !(o->budget > 0) || o->threads < 0) {
    usage(stderr);
    return 2;
  }
  return -1; /* go on */
}

int fp8gemm_cmd_bench(int argc, char **argv) {
  bench_options o;
  const int early = parse_options(argc, argv, &o);
  if (early >= 0) return early;
  cli_shape *shapes;
  const int shape_count = cli_load_shapes(o.shapes, &shapes);
  if (shape_count < 0) return 1;
  if (o.cold) {
    evict_buffer = calloc(EVICT_BYTES, 1);
    if (!evict_buffer) return 1;
  }

  fp8gemm_context_options co;
  fp8gemm_context_options_init(&co);
  co.backend = (fp8gemm_backend)o.backend;
  co.num_threads = o.threads;
  fp8gemm_context *ctx, *host;
  fp8gemm_status st = fp8gemm_context_create(&co, &ctx);
  if (st != FP8GEMM_OK) return cli_fail("bench", "context", st);
  if ((st = fp8gemm_context_create(NULL, &host)) != FP8GEMM_OK) return cli_fail("bench", "host context", st);
  const int threads = fp8gemm_context_num_threads(ctx);
  const char *backend_name = fp8gemm_backend_name(fp8gemm_context_backend(ctx));
  const char *device = fp8gemm_context_device(ctx);
#ifdef FP8GEMM_HAVE_OPENBLAS
  openblas_set_num_threads(threads);
#else
  o.openblas = 0;
#endif

  FILE *json = NULL;
  if (o.json) {
    json = fopen(o.json, "w");
    if (!json) {
      perror(o.json);
      return 1;
    }
    fprintf(json, "[\n");
  }
  printf("fp8gemm bench: backend %s, device %s, %d threads, out %s\n", backend_name, device, threads,
         fp8gemm_dtype_name(o.out_dtype));
  printf("%-16s %6s %6s %6s %-16s %11s %8s %7s %9s %11s %8s\n", "set", "M", "N", "K", "layout", "us",
         "GFLOP/s", "GB/s", "rel_err", "sgemm_us", "vs_sgemm");

  cli_rng rng;
  cli_rng_seed(&rng, o.seed);
  int failures = 0, first_row = 1;
  const size_t y_elem = fp8gemm_dtype_size(o.out_dtype);
  for (int s = 0; s < shape_count; s++) {
    const size_t N = shapes[s].N, K = shapes[s].K;
    host_data h;
    memset(&h, 0, sizeof h);
    h.N = N;
    h.K = K;
    if (make_weight(&rng, N, K, &h)) {
      fprintf(stderr, "fp8gemm bench: out of memory for N=%zu K=%zu\n", N, K);
      return 1;
    }
    /* Copies of each weight, cycled call after call: the next call finds its weight in memory. */
    cli_weights copies[2] = {{{NULL}, 0}, {{NULL}, 0}};
    const fp8gemm_weight *weights[2] = {NULL, NULL}; /* the first copy of each */
    const cli_layer layer = {N, K, (K + 127) / 128, h.wq, h.ws};
    for (int l = 0; l < 2; l++) {
      if (!(o.layouts & (1 << l))) continue;
      const fp8gemm_layout layout =
          l == 0 ? FP8GEMM_LAYOUT_PLAIN : fp8gemm_context_preshuffled_layout(ctx);
      if ((st = cli_weights_create(ctx, &layer, layout, &copies[l])) != FP8GEMM_OK)
        return cli_fail("bench", "weight", st);
      weights[l] = copies[l].w[0];
    }
    float *wf[CLI_MAX_COPIES] = {NULL}; /* dequantized weights for sgemm, built on first use */
    const int fcopies = cli_copies_for(N * K * sizeof(float));
    (void)fcopies; /* read only by the OpenBLAS baseline */
    for (size_t mi = 0; mi < shapes[s].m_count; mi++) {
      const size_t M = shapes[s].m_values[mi];
      if (make_x(host, &rng, M, K, &h)) {
        fprintf(stderr, "fp8gemm bench: x of M=%zu K=%zu failed: %s\n", M, K, fp8gemm_last_error());
        return 1;
      }
      /* Reference on sampled rows. */
      size_t rows[MAX_CHECK_ROWS];
      const size_t nrows = check_rows(M, rows);
      double *ref = malloc(nrows * N * sizeof(double));
      if (!ref) return 1;
      for (size_t r = 0; r < nrows; r++)
        if ((st = fp8gemm_gemm_reference(1, N, K, h.xq + rows[r] * K, K, h.xs + rows[r] * h.groups,
                                         FP8GEMM_SCALE_ROW_MAJOR, h.groups, h.wq,
                                         FP8GEMM_LAYOUT_PLAIN, h.ws, NULL, ref + r * N, N)) != FP8GEMM_OK)
          return cli_fail("bench", "reference", st);

      /* Everything timed for this M, run round-robin: [sgemm,] layouts. */
      candidate cands[3];
      int ncand = 0, sgemm_index = -1, layout_index[2] = {-1, -1};
      float *ys = NULL;
#ifdef FP8GEMM_HAVE_OPENBLAS
      sgemm_call sc;
      if (o.openblas) {
        if (!wf[0]) {
          const size_t groups = (K + 127) / 128;
          for (int c = 0; c < fcopies; c++) {
            wf[c] = malloc(N * K * sizeof(float));
            if (!wf[c]) return 1;
            for (size_t n = 0; n < N; n++)
              for (size_t k = 0; k < K; k++)
                wf[c][n * K + k] =
                    fp8gemm_e4m3fn_to_float(h.wq[n * K + k]) * h.ws[(n / 128) * groups + k / 128];
          }
        }
        ys = malloc(M * N * sizeof(float));
        if (!ys) return 1;
        sc = (sgemm_call){M, N, K, h.x, wf, fcopies, 0, ys};
        sgemm_index = ncand;
        cands[ncand++] = (candidate){run_sgemm, &sc, SGEMM_SETTLE_SECONDS, NAN, 0};
      }
#endif

      /* Backend buffers: one output per layout, one workspace for all. */
      void *xq_b, *xs_b, *y_b[2] = {NULL, NULL}, *ws_b = NULL;
      size_t ws_bytes = 0;
      if ((st = fp8gemm_memory_alloc(ctx, M * K, &xq_b)) != FP8GEMM_OK ||
          (st = fp8gemm_memory_alloc(ctx, M * h.groups * sizeof(float), &xs_b)) != FP8GEMM_OK)
        return cli_fail("bench", "memory", st);
      fp8gemm_memory_copy(ctx, xq_b, h.xq, M * K, FP8GEMM_COPY_HOST_TO_BACKEND);
      fp8gemm_memory_copy(ctx, xs_b, h.xs, M * h.groups * sizeof(float), FP8GEMM_COPY_HOST_TO_BACKEND);
      gemm_call gc[2];
      for (int l = 0; l < 2; l++) {
        if (!weights[l]) continue;
        size_t need;
        if ((st = fp8gemm_linear_workspace_size(ctx, weights[l], M, &need)) != FP8GEMM_OK)
          return cli_fail("bench", "workspace size", st);
        if (need > ws_bytes) ws_bytes = need;
        if ((st = fp8gemm_memory_alloc(ctx, M * N * y_elem, &y_b[l])) != FP8GEMM_OK)
          return cli_fail("bench", "memory", st);
      }
      if ((st = fp8gemm_memory_alloc(ctx, ws_bytes, &ws_b)) != FP8GEMM_OK)
        return cli_fail("bench", "workspace", st);
      for (int l = 0; l < 2; l++) {
        if (!weights[l]) continue;
        gc[l] = (gemm_call){ctx, &copies[l], 0, M, h.groups, xq_b, xs_b, y_b[l],
                            o.out_dtype, ws_b, ws_bytes};
        layout_index[l] = ncand;
        cands[ncand++] = (candidate){run_gemm, &gc[l], 0.0, NAN, 0};
      }
      if ((st = time_interleaved(cands, ncand, o.iters, o.budget, o.cold != 0)) != FP8GEMM_OK)
        return cli_fail("bench", "timing", st);
      const double sgemm_s = sgemm_index >= 0 ? cands[sgemm_index].median : NAN;
      free(ys);
      void *y_host = malloc(M * N * y_elem);
      if (!y_host) return 1;

      double layout_us[2] = {NAN, NAN};
      for (int l = 0; l < 2; l++) {
        if (!weights[l]) continue;
        const double seconds = cands[layout_index[l]].median;
        const int runs = cands[layout_index[l]].runs;
        layout_us[l] = seconds * 1e6;
        fp8gemm_memory_copy(ctx, y_host, y_b[l], M * N * y_elem, FP8GEMM_COPY_BACKEND_TO_HOST);
        double num = 0, den = 0;
        for (size_t r = 0; r < nrows; r++)
          for (size_t n = 0; n < N; n++) {
            const double d = (double)to_float(o.out_dtype, y_host, rows[r] * N + n) - ref[r * N + n];
            num += d * d;
            den += ref[r * N + n] * ref[r * N + n];
          }
        const double rel_err = isnan(num) ? INFINITY : den > 0 ? sqrt(num / den) : sqrt(num);
        /* The bound for fp32 output; 16-bit outputs carry their own rounding. */
        const double tolerance = o.out_dtype == FP8GEMM_DTYPE_F32 ? 1e-5 : 1e-2;
        if (!(rel_err <= tolerance)) failures++;
        const double flops = 2.0 * (double)M * (double)N * (double)K;
        const char *layout = fp8gemm_layout_name(fp8gemm_weight_layout(weights[l]));
        char kernel[96];
        snprintf(kernel, sizeof kernel, "%s/%s/%s", backend_name, device, layout);
        printf("%-16s %6zu %6zu %6zu %-16s %11.1f %8.1f %7.2f %9.2e %11.1f %8.2f\n", shapes[s].set, M,
               N, K, layout, seconds * 1e6, flops / seconds * 1e-9, (double)(N * K) / seconds * 1e-9,
               rel_err, sgemm_s * 1e6, sgemm_s / seconds);
        if (json) {
          fprintf(json, "%s  {\"backend\": \"%s\", \"device\": \"%s\", \"kernel\": \"%s\", ",
                  first_row ? "" : ",\n", backend_name, device, kernel);
          fprintf(json, "\"layout\": \"%s\", \"set\": \"%s\", \"M\": %zu, \"N\": %zu, \"K\": %zu, ",
                  layout, shapes[s].set, M, N, K);
          fprintf(json, "\"out_dtype\": \"%s\", \"threads\": %d, \"iters\": %d, \"cache\": \"%s\", ",
                  fp8gemm_dtype_name(o.out_dtype), threads, runs, o.cold ? "cold" : "warm");
          json_number(json, "us", seconds * 1e6, 0);
          json_number(json, "gflops", flops / seconds * 1e-9, 0);
          json_number(json, "gbps", (double)(N * K) / seconds * 1e-9, 0);
          json_number(json, "rel_err", rel_err, 0);
          json_number(json, "openblas_sgemm_us", sgemm_s * 1e6, 0);
          json_number(json, "openblas_sgemm_gflops", flops / sgemm_s * 1e-9, 0);
          json_number(json, "speedup_vs_openblas", sgemm_s / seconds, 0);
          json_number(json, "loadavg_1min", load_average(), 1);
          fprintf(json, "}");
          first_row = 0;
        }
      }
      if (weights[0] && weights[1])
        printf("%-16s %6zu %6zu %6zu %-16s plain/preshuffled time = %.2f\n", shapes[s].set, M, N, K,
               "", layout_us[0] / layout_us[1]);
      free(y_host);
      free(ref);
      fp8gemm_memory_free(ctx, xq_b);
      fp8gemm_memory_free(ctx, xs_b);
      fp8gemm_memory_free(ctx, y_b[0]);
      fp8gemm_memory_free(ctx, y_b[1]);
      fp8gemm_memory_free(ctx, ws_b);
      free_x(&h);
    }
    for (int c = 0; c < CLI_MAX_COPIES; c++) free(wf[c]);
    cli_weights_destroy(&copies[0]);
    cli_weights_destroy(&copies[1]);
    free(h.wq);
    free(h.ws);
    fflush(stdout);
  }
  if (json) {
    fprintf(json, "\n]\n");
    fclose(json);
  }
  free(shapes);
  free(evict_buffer);
  fp8gemm_context_destroy(host);
  fp8gemm_context_destroy(ctx);
  if (failures) fprintf(stderr, "fp8gemm bench: %d row(s) above the error bound\n", failures);
  return failures ? 1 : 0;
}
