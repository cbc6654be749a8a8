/* fp8gemm tune: measures plain vs preshuffled weights per (N, K) over the M
 * values of a shapes file and writes the tuned table (README "Tuned
 * table"): the layout whose times have the smaller geometric mean wins.
 * Then, with the winning layout, the small-M kernel against the large-M
 * kernel (each forced through a table of its own) at a ladder of M values:
 * crossover_m is the largest rung up to which the small-M kernel won at
 * every rung. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli_util.h"
#include "commands.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: fp8gemm tune [--backend cpu|cuda] --shapes FILE|\"M,N,K;...\" -o TABLE.csv\n"
          "                    [--device NAME|*] [--budget SECONDS] [--crossover-m LIST|none]\n"
          "                    [--dtype f32|bf16|f16]\n"
          "  Times fp8gemm_linear with plain and preshuffled weights for each (N, K) over\n"
          "  its M values and writes one table row per shape. --device defaults to the\n"
          "  context's device (the CPU ISA or the GPU name); '*' makes the rows apply to\n"
          "  any device of the backend. With the winning layout it then times the\n"
          "  small-M kernel against the large-M kernel at each M of --crossover-m\n"
          "  (default cpu 1,2,4,8,12,16,24,32,48,64; cuda the same, then 96,128,192):\n"
          "  crossover_m is the largest of them up to which the small-M kernel won at\n"
          "  each (0: it lost at the first);\n"
          "  'none' leaves crossover_m to the backend (default). --dtype: x and y of the\n"
          "  timed calls (default bf16 on cuda, as engines call it; f32 on cpu). The calls\n"
          "  cycle through copies of each weight (up to 8, over 96 MB together), so each\n"
          "  finds its weight in memory, not in the caches, as in a model's forward.\n");
}

#define MAX_RUNGS 16

/* "16,32,64" (commas or spaces, ascending, positive) -> rungs; -1 if bad. */
static int parse_rungs(const char *text, size_t *rungs) {
  int count = 0;
  const char *p = text;
  while (*p) {
    while (*p == ',' || *p == ' ') p++;
    if (!*p) break;
    char *end;
    const unsigned long long v = strtoull(p, &end, 10);
    if (end == p || v == 0 || v > ((size_t)1 << 31) || count == MAX_RUNGS ||
        (count && v <= rungs[count - 1]))
      return -1;
    rungs[count++] = (size_t)v;
    p = end;
    if (*p && *p != ',' && *p != ' ') return -1;
  }
  return count ? count : -1;
}

static const char table_header[] =
    "backend,device,N,K,layout,kernel,crossover_m,m_values,plain_us,preshuffled_us\n";

/* The table's first lines: how it was made, so that a table copied into
 * data/tuned/ carries its provenance. argv[0] is the subcommand; arguments
 * with characters a shell would treat specially are single-quoted. */
static void write_provenance(FILE *out, int argc, char **argv, const char *measured_on,
                             const char *dtype, int crossover_measured) {
  char date[32] = "unknown date";
  const time_t now = time(NULL);
  struct tm utc;
  if (gmtime_r(&now, &utc)) strftime(date, sizeof date, "%Y-%m-%d %H:%M UTC", &utc);
  fprintf(out, "# Written by `fp8gemm");
  for (int i = 0; i < argc; i++) {
    const char *a = argv[i];
    const int plain = *a && strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                                      "0123456789_./,:=+-") == strlen(a);
    fprintf(out, plain ? " %s" : " '%s'", a);
  }
  fprintf(out, "` on %s (fp8gemm %s, %s; x and y %s).\n", measured_on, fp8gemm_version_string(),
          date, dtype);
  fputs("# layout: the one with the smaller geometric mean of per-M time ratios (plain_us and\n"
        "# preshuffled_us: fp8gemm_linear per call, medians, in us; the calls cycle through copies\n"
        "# of each weight).\n",
        out);
  fputs(crossover_measured
            ? "# crossover_m: the largest rung up to which the small-M (decode) path, forced, beat\n"
              "# the large-M kernel, forced, at every rung, with the winning layout.\n"
            : "# crossover_m: default (the backend's own rule; --crossover-m none).\n",
        out);
}

/* 1 if shapes[s] is the first of the list with its (N, K). */
static int first_of_its_shape(const cli_shape *shapes, int s) {
  for (int t = 0; t < s; t++)
    if (shapes[t].N == shapes[s].N && shapes[t].K == shapes[s].K) return 0;
  return 1;
}

/* A context on a table of its own, read from a temporary file. With
 * `crossover` NULL the table is empty, so only the layouts a weight is
 * created with count. Else every (N, K) of `shapes` gets that crossover_m
 * ("0" forces the large-M kernel, a huge value the small-M kernel), so a
 * weight made on it runs one kernel family. */
static fp8gemm_status table_context(fp8gemm_backend backend, const cli_shape *shapes, int count,
                                    const char *crossover, fp8gemm_context **ctx) {
  char path[] = "/tmp/fp8gemm_tune_table_XXXXXX";
  const int fd = mkstemp(path);
  FILE *f = fd >= 0 ? fdopen(fd, "w") : NULL;
  if (!f) {
    perror("fp8gemm tune: temporary table");
    if (fd >= 0) {
      close(fd);
      unlink(path);
    }
    return FP8GEMM_ERROR_IO;
  }
  fputs(table_header, f);
  for (int s = 0; crossover && s < count; s++)
    if (first_of_its_shape(shapes, s))
      fprintf(f, "%s,*,%zu,%zu,plain,tune,%s,,,\n", fp8gemm_backend_name(backend), shapes[s].N,
              shapes[s].K, crossover);
  if (fclose(f) != 0) {
    perror("fp8gemm tune: temporary table");
    unlink(path);
    return FP8GEMM_ERROR_IO;
  }
  fp8gemm_context_options o;
  fp8gemm_context_options_init(&o);
  o.backend = backend;
  o.tuned_table_path = path;
  const fp8gemm_status st = fp8gemm_context_create(&o, ctx);
  unlink(path);
  return st;
}

/* Median seconds of fp8gemm_linear at M on x (host, M x K floats, handed
 * over as x_dtype; y in the same), with buffers in the context's memory
 * for this call. */
static fp8gemm_status time_at(fp8gemm_context *ctx, const cli_weights *w, size_t M,
                              fp8gemm_dtype x_dtype, const float *x, double budget,
                              double *seconds) {
  const size_t N = fp8gemm_weight_n(w->w[0]), K = fp8gemm_weight_k(w->w[0]);
  const size_t elem = x_dtype == FP8GEMM_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t);
  void *dx = NULL, *dy = NULL, *ws = NULL;
  size_t ws_bytes = 0;
  void *staged = malloc(M * K * elem);
  fp8gemm_status st = staged ? fp8gemm_linear_workspace_size(ctx, w->w[0], M, &ws_bytes)
                             : FP8GEMM_ERROR_OUT_OF_MEMORY;
  for (size_t i = 0; st == FP8GEMM_OK && i < M * K; i++) {
    if (x_dtype == FP8GEMM_DTYPE_F32) ((float *)staged)[i] = x[i];
    else if (x_dtype == FP8GEMM_DTYPE_BF16) ((uint16_t *)staged)[i] = fp8gemm_bf16_from_float(x[i]);
    else ((uint16_t *)staged)[i] = fp8gemm_f16_from_float(x[i]);
  }
  if (st == FP8GEMM_OK) st = fp8gemm_memory_alloc(ctx, ws_bytes ? ws_bytes : 1, &ws);
  if (st == FP8GEMM_OK) st = fp8gemm_memory_alloc(ctx, M * N * elem, &dy);
  if (st == FP8GEMM_OK) st = fp8gemm_memory_alloc(ctx, M * K * elem, &dx);
  if (st == FP8GEMM_OK)
    st = fp8gemm_memory_copy(ctx, dx, staged, M * K * elem, FP8GEMM_COPY_HOST_TO_BACKEND);
  if (st == FP8GEMM_OK)
    st = cli_time_linear(ctx, w, M, x_dtype, dx, dy, ws, ws_bytes, budget, seconds);
  free(staged);
  if (dx) fp8gemm_memory_free(ctx, dx);
  if (dy) fp8gemm_memory_free(ctx, dy);
  if (ws) fp8gemm_memory_free(ctx, ws);
  return st;
}

int fp8gemm_cmd_tune(int argc, char **argv) {
  int backend = FP8GEMM_BACKEND_CPU;
  const char *shapes_spec = NULL, *out_path = NULL, *device = NULL;
  const char *rungs_spec = NULL, *dtype_spec = NULL;
  double budget = 0.2;
  static const struct option long_options[] = {{"backend", required_argument, 0, 'b'},
                                               {"shapes", required_argument, 0, 's'},
                                               {"output", required_argument, 0, 'o'},
                                               {"device", required_argument, 0, 'd'},
                                               {"budget", required_argument, 0, 't'},
                                               {"crossover-m", required_argument, 0, 'c'},
                                               {"dtype", required_argument, 0, 'x'},
                                               {"help", no_argument, 0, 'h'},
                                               {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "b:s:o:d:t:c:x:h", long_options, NULL)) != -1) {
    switch (c) {
      case 'b':
        backend = cli_parse_backend(optarg);
        if (backend < 0 || backend == FP8GEMM_BACKEND_AUTO) {
          fprintf(stderr, "fp8gemm tune: --backend '%s' is not cpu or cuda\n", optarg);
          return 2;
        }
        break;
      case 's': shapes_spec = optarg; break;
      case 'o': out_path = optarg; break;
      case 'd': device = optarg; break;
      case 't': budget = atof(optarg); break;
      case 'c': rungs_spec = optarg; break;
      case 'x': dtype_spec = optarg; break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (!shapes_spec || !out_path || optind != argc || !(budget > 0)) {
    usage(stderr);
    return 2;
  }
  const int cuda = backend == FP8GEMM_BACKEND_CUDA;
  size_t rungs[MAX_RUNGS];
  /* Fine below 16: an M between two rungs goes with the upper one's winner, and on the H100
   * the crossover fell between 1 and 16 (32768 x 512: 8; the ladder 1,16,.. wrote 1). */
  if (!rungs_spec)
    rungs_spec = cuda ? "1,2,4,8,12,16,24,32,48,64,96,128,192" : "1,2,4,8,12,16,24,32,48,64";
  const int measure_crossover = strcmp(rungs_spec, "none") != 0;
  const int rung_count = measure_crossover ? parse_rungs(rungs_spec, rungs) : 0;
  if (rung_count < 0) {
    fprintf(stderr,
            "fp8gemm tune: --crossover-m '%s' is not 'none' or up to %d ascending positive M "
            "values\n",
            rungs_spec, MAX_RUNGS);
    return 2;
  }
  /* What engines hand a linear layer: bf16 activations on the GPU (which
   * is also what the single-launch linear takes); f32 on the CPU, as the
   * shipped CPU table was measured. */
  if (!dtype_spec) dtype_spec = cuda ? "bf16" : "f32";
  const int parsed_dtype = cli_parse_dtype(dtype_spec);
  if (parsed_dtype < 0) {
    fprintf(stderr, "fp8gemm tune: --dtype '%s' is not f32, bf16 or f16\n", dtype_spec);
    return 2;
  }
  const fp8gemm_dtype x_dtype = (fp8gemm_dtype)parsed_dtype;
  cli_shape *shapes;
  const int shape_count = cli_load_shapes(shapes_spec, &shapes);
  if (shape_count < 0) return 1;

  /* Measure with an empty table, so nothing but the forced layouts counts. */
  fp8gemm_context *ctx, *host_ctx;
  fp8gemm_status st = table_context((fp8gemm_backend)backend, shapes, shape_count, NULL, &ctx);
  if (st == FP8GEMM_ERROR_IO) return 1;
  if (st != FP8GEMM_OK) return cli_fail("tune", "context", st);
  if ((st = fp8gemm_context_create(NULL, &host_ctx)) != FP8GEMM_OK) return cli_fail("tune", "host context", st);
  /* The kernel families, each forced for every shape. */
  fp8gemm_context *family_ctx[2] = {NULL, NULL}; /* small-M, large-M */
  if (measure_crossover) {
    if ((st = table_context((fp8gemm_backend)backend, shapes, shape_count, "2147483648",
                            &family_ctx[0])) != FP8GEMM_OK ||
        (st = table_context((fp8gemm_backend)backend, shapes, shape_count, "0",
                            &family_ctx[1])) != FP8GEMM_OK)
      return cli_fail("tune", "context with a forced kernel", st);
  }
  if (!device) device = fp8gemm_context_device(ctx);

  /* Merge rows per (N, K): a shape may appear in several sets. */
  char *out_tmp = malloc(strlen(out_path) + 8);
  sprintf(out_tmp, "%s.tmp", out_path);
  FILE *out = fopen(out_tmp, "w");
  if (!out) {
    perror(out_tmp);
    return 1;
  }
  write_provenance(out, argc, argv, fp8gemm_context_device(ctx), dtype_spec, measure_crossover);
  fputs(table_header, out);
  printf("fp8gemm tune: backend %s, device %s, x and y %s\n",
         fp8gemm_backend_name((fp8gemm_backend)backend), device, dtype_spec);
  printf("%-12s %-7s %-12s %s\n", "N x K", "winner", "geo-ratio", "M: plain_us / preshuffled_us");
  cli_rng rng;
  cli_rng_seed(&rng, 99);
  for (int s = 0; s < shape_count; s++) {
    if (!first_of_its_shape(shapes, s)) continue;
    cli_shape merged = shapes[s];
    for (int t = s + 1; t < shape_count; t++) {
      if (shapes[t].N != merged.N || shapes[t].K != merged.K) continue;
      for (size_t i = 0; i < shapes[t].m_count; i++) {
        int dup = 0;
        for (size_t j = 0; j < merged.m_count; j++) dup |= merged.m_values[j] == shapes[t].m_values[i];
        if (!dup && merged.m_count < sizeof merged.m_values / sizeof merged.m_values[0])
          merged.m_values[merged.m_count++] = shapes[t].m_values[i];
      }
    }
    const size_t N = merged.N, K = merged.K;
    cli_layer L;
    if ((st = cli_layer_make(host_ctx, &rng, N, K, &L)) != FP8GEMM_OK)
      return cli_fail("tune", "synthetic layer", st);
    cli_weights weights[2];
    const fp8gemm_layout layouts[2] = {FP8GEMM_LAYOUT_PLAIN, fp8gemm_context_preshuffled_layout(ctx)};
    for (int v = 0; v < 2; v++) {
      if ((st = cli_weights_create(ctx, &L, layouts[v], &weights[v])) != FP8GEMM_OK)
        fprintf(stderr, "fp8gemm tune: %zux%zu: %s layout refused (%s); keeping plain\n", N, K,
                fp8gemm_layout_name(layouts[v]), fp8gemm_last_error());
    }
    double times[2][32] = {{0}};
    double log_ratio = 0;
    for (size_t i = 0; i < merged.m_count; i++) {
      const size_t M = merged.m_values[i];
      float *x = malloc(M * K * sizeof(float));
      for (size_t j = 0; j < M * K; j++) x[j] = cli_normal(&rng);
      for (int v = 0; v < 2; v++) {
        times[v][i] = INFINITY;
        if (weights[v].count &&
            (st = time_at(ctx, &weights[v], M, x_dtype, x, budget, &times[v][i])) != FP8GEMM_OK)
          return cli_fail("tune", "forward", st);
      }
      log_ratio += log(times[1][i] / times[0][i]);
      free(x);
    }
    const double geo_ratio = exp(log_ratio / (double)merged.m_count);
    const int preshuffled_wins = weights[1].count && geo_ratio <= 1.0;

    /* Small-M against large-M kernel, winning layout, rung by rung. */
    char crossover[24] = "default";
    double family_times[2][MAX_RUNGS];
    int rungs_timed = 0;
    if (measure_crossover) {
      cli_weights family_w[2];
      const fp8gemm_layout layout = layouts[preshuffled_wins];
      for (int f = 0; f < 2; f++)
        if ((st = cli_weights_create(family_ctx[f], &L, layout, &family_w[f])) != FP8GEMM_OK)
          return cli_fail("tune", "weight for the kernel comparison", st);
      size_t crossover_m = 0;
      int small_leads = 1;
      for (; rungs_timed < rung_count && small_leads; rungs_timed++) {
        const size_t M = rungs[rungs_timed];
        float *x = malloc(M * K * sizeof(float));
        for (size_t j = 0; j < M * K; j++) x[j] = cli_normal(&rng);
        for (int f = 0; f < 2; f++)
          if ((st = time_at(family_ctx[f], &family_w[f], M, x_dtype, x, budget,
                            &family_times[f][rungs_timed])) != FP8GEMM_OK)
            return cli_fail("tune", "forward (kernel comparison)", st);
        free(x);
        small_leads = family_times[0][rungs_timed] <= family_times[1][rungs_timed];
        if (small_leads) crossover_m = M;
      }
      snprintf(crossover, sizeof crossover, "%zu", crossover_m);
      cli_weights_destroy(&family_w[0]);
      cli_weights_destroy(&family_w[1]);
    }
    fprintf(out, "%s,%s,%zu,%zu,%s,fp8gemm_linear,%s,", fp8gemm_backend_name((fp8gemm_backend)backend),
            device, N, K, preshuffled_wins ? "preshuffled" : "plain", crossover);
    for (int part = 0; part < 3; part++) {
      for (size_t i = 0; i < merged.m_count; i++) {
        if (part == 0) fprintf(out, "%s%zu", i ? " " : "", merged.m_values[i]);
        else fprintf(out, "%s%.2f", i ? " " : "", isfinite(times[part - 1][i]) ? times[part - 1][i] * 1e6 : 0.0);
      }
      fprintf(out, part < 2 ? "," : "\n");
    }
    char name[32];
    snprintf(name, sizeof name, "%zux%zu", N, K);
    printf("%-12s %-7s %-12.3f", name, preshuffled_wins ? "presh" : "plain", geo_ratio);
    for (size_t i = 0; i < merged.m_count; i++)
      printf(" %zu: %.0f/%.0f", merged.m_values[i], times[0][i] * 1e6, times[1][i] * 1e6);
    printf("\n");
    if (measure_crossover) {
      printf("%-12s crossover_m %s (M: small-M / large-M kernel us)", "", crossover);
      for (int r = 0; r < rungs_timed; r++)
        printf(" %zu: %.1f/%.1f", rungs[r], family_times[0][r] * 1e6, family_times[1][r] * 1e6);
      printf("\n");
    }
    fflush(stdout);
    cli_weights_destroy(&weights[0]);
    cli_weights_destroy(&weights[1]);
    cli_layer_free(&L);
  }
  if (fclose(out) != 0 || rename(out_tmp, out_path) != 0) {
    perror(out_path);
    return 1;
  }
  printf("wrote %s\n", out_path);
  free(out_tmp);
  free(shapes);
  fp8gemm_context_destroy(host_ctx);
  fp8gemm_context_destroy(ctx);
  if (family_ctx[0]) fp8gemm_context_destroy(family_ctx[0]);
  if (family_ctx[1]) fp8gemm_context_destroy(family_ctx[1]);
  return 0;
}
