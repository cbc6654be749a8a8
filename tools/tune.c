/* fp8gemm tune: measures plain vs preshuffled weights per (N, K) over the M
 * values of a shapes file and writes the tuned table (README "Tuned
 * table"): the layout whose times have the smaller geometric mean wins. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli_util.h"
#include "commands.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: fp8gemm tune [--backend cpu|cuda] --shapes FILE|\"M,N,K;...\" -o TABLE.csv\n"
          "                    [--device NAME|*] [--budget SECONDS]\n"
          "  Times fp8gemm_linear with plain and preshuffled weights for each (N, K) over\n"
          "  its M values and writes one table row per shape. --device defaults to the\n"
          "  context's device (the CPU ISA or the GPU name); '*' makes the rows apply to\n"
          "  any device of the backend.\n");
}

int fp8gemm_cmd_tune(int argc, char **argv) {
  int backend = FP8GEMM_BACKEND_CPU;
  const char *shapes_spec = NULL, *out_path = NULL, *device = NULL;
  double budget = 0.2;
  static const struct option long_options[] = {{"backend", required_argument, 0, 'b'},
                                               {"shapes", required_argument, 0, 's'},
                                               {"output", required_argument, 0, 'o'},
                                               {"device", required_argument, 0, 'd'},
                                               {"budget", required_argument, 0, 't'},
                                               {"help", no_argument, 0, 'h'},
                                               {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "b:s:o:d:t:h", long_options, NULL)) != -1) {
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
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (!shapes_spec || !out_path || optind != argc || !(budget > 0)) {
    usage(stderr);
    return 2;
  }
  cli_shape *shapes;
  const int shape_count = cli_load_shapes(shapes_spec, &shapes);
  if (shape_count < 0) return 1;

  fp8gemm_context_options o;
  fp8gemm_context_options_init(&o);
  o.backend = (fp8gemm_backend)backend;
  /* Measure with an empty table, so nothing but the forced layouts counts. */
  char empty_table[] = "/tmp/fp8gemm_tune_empty_XXXXXX";
  const int fd = mkstemp(empty_table);
  const char header[] = "backend,device,N,K,layout,kernel,crossover_m,m_values,plain_us,preshuffled_us\n";
  if (fd < 0 || write(fd, header, sizeof header - 1) != (ssize_t)(sizeof header - 1)) {
    perror("fp8gemm tune: temporary table");
    return 1;
  }
  close(fd);
  o.tuned_table_path = empty_table;
  fp8gemm_context *ctx, *host_ctx;
  fp8gemm_status st = fp8gemm_context_create(&o, &ctx);
  unlink(empty_table);
  if (st != FP8GEMM_OK) return cli_fail("tune", "context", st);
  if ((st = fp8gemm_context_create(NULL, &host_ctx)) != FP8GEMM_OK) return cli_fail("tune", "host context", st);
  const int cuda = backend == FP8GEMM_BACKEND_CUDA;
  if (!device) device = fp8gemm_context_device(ctx);

  /* Merge rows per (N, K): a shape may appear in several sets. */
  char *out_tmp = malloc(strlen(out_path) + 8);
  sprintf(out_tmp, "%s.tmp", out_path);
  FILE *out = fopen(out_tmp, "w");
  if (!out) {
    perror(out_tmp);
    return 1;
  }
  fprintf(out, "%s", header);
  printf("fp8gemm tune: backend %s, device %s\n", fp8gemm_backend_name((fp8gemm_backend)backend), device);
  printf("%-12s %-7s %-12s %s\n", "N x K", "winner", "geo-ratio", "M: plain_us / preshuffled_us");
  cli_rng rng;
  cli_rng_seed(&rng, 99);
  for (int s = 0; s < shape_count; s++) {
    int seen = 0;
    for (int t = 0; t < s; t++) seen |= shapes[t].N == shapes[s].N && shapes[t].K == shapes[s].K;
    if (seen) continue;
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
    fp8gemm_weight *weights[2];
    const fp8gemm_layout layouts[2] = {FP8GEMM_LAYOUT_PLAIN, fp8gemm_context_preshuffled_layout(ctx)};
    for (int v = 0; v < 2; v++) {
      if ((st = cli_weight_create(ctx, &L, layouts[v], &weights[v])) != FP8GEMM_OK) {
        fprintf(stderr, "fp8gemm tune: %zux%zu: %s layout refused (%s); keeping plain\n", N, K,
                fp8gemm_layout_name(layouts[v]), fp8gemm_last_error());
        weights[v] = NULL;
      }
    }
    double times[2][32] = {{0}};
    double log_ratio = 0;
    for (size_t i = 0; i < merged.m_count; i++) {
      const size_t M = merged.m_values[i];
      float *x = malloc(M * K * sizeof(float));
      for (size_t j = 0; j < M * K; j++) x[j] = cli_normal(&rng);
      void *dx = x, *dy = NULL, *wsp = NULL;
      size_t ws_bytes = 0;
      for (int v = 0; v < 2; v++) {
        size_t b = 0;
        if (weights[v]) fp8gemm_linear_workspace_size(ctx, weights[v], M, &b);
        if (b > ws_bytes) ws_bytes = b;
      }
      st = fp8gemm_memory_alloc(ctx, ws_bytes, &wsp);
      if (st == FP8GEMM_OK) st = fp8gemm_memory_alloc(ctx, M * N * sizeof(float), &dy);
      if (st == FP8GEMM_OK && cuda) {
        st = fp8gemm_memory_alloc(ctx, M * K * sizeof(float), &dx);
        if (st == FP8GEMM_OK) st = fp8gemm_memory_copy(ctx, dx, x, M * K * sizeof(float), FP8GEMM_COPY_HOST_TO_BACKEND);
      }
      if (st != FP8GEMM_OK) return cli_fail("tune", "buffers", st);
      for (int v = 0; v < 2; v++) {
        if (!weights[v]) {
          times[v][i] = INFINITY;
          continue;
        }
        if ((st = cli_time_linear(ctx, weights[v], M, dx, dy, wsp, ws_bytes, budget, &times[v][i])) != FP8GEMM_OK)
          return cli_fail("tune", "forward", st);
      }
      log_ratio += log(times[1][i] / times[0][i]);
      if (cuda) fp8gemm_memory_free(ctx, dx);
      fp8gemm_memory_free(ctx, dy);
      fp8gemm_memory_free(ctx, wsp);
      free(x);
    }
    const double geo_ratio = exp(log_ratio / (double)merged.m_count);
    const int preshuffled_wins = weights[1] && geo_ratio <= 1.0;
    fprintf(out, "%s,%s,%zu,%zu,%s,fp8gemm_linear,default,", fp8gemm_backend_name((fp8gemm_backend)backend),
            device, N, K, preshuffled_wins ? "preshuffled" : "plain");
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
    fflush(stdout);
    fp8gemm_weight_destroy(weights[0]);
    fp8gemm_weight_destroy(weights[1]);
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
  return 0;
}
