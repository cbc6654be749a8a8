/* fp8gemm run: the main job. Builds the DeepSeek-V3 linear layers from
 * synthetic weights (fixed seed), quantizes them, prepares each once as a
 * plain and as a preshuffled weight, runs forwards for several M, checks
 * every result against the fp64 reference (on sampled rows), and prints a
 * table: plain vs preshuffled time, GFLOP/s, GB/s of weight bytes, error. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"

/* The DeepSeek-V3 layers of shared/shapes.csv (copied to bench/shapes.csv). */
static const size_t default_layers[][2] = {{2112, 7168}, {24576, 1536}, {32768, 512},
                                           {7168, 16384}, {4096, 7168},  {7168, 2048}};

typedef struct run_options {
  int backend;
  int quick;
  const char *shapes;
  const char *json;
  double tolerance; /* relative error bound for the check */
} run_options;

static void usage(FILE *out) {
  fprintf(out,
          "usage: fp8gemm run [--backend auto|cpu|cuda] [--quick] [--shapes FILE] [--json OUT]\n"
          "  Runs the DeepSeek-V3 layers plain vs preshuffled for M in {1,16,128,1024}\n"
          "  (--quick: M in {1,16,128}, three layers), checks each result against the\n"
          "  fp64 reference and prints a table. The backend defaults to auto: CUDA on a\n"
          "  Hopper GPU, else the CPU.\n");
}

int fp8gemm_cmd_run(int argc, char **argv) {
  run_options opt = {FP8GEMM_BACKEND_AUTO, 0, NULL, NULL, 0};
  static const struct option long_options[] = {{"backend", required_argument, 0, 'b'},
                                               {"quick", no_argument, 0, 'q'},
                                               {"shapes", required_argument, 0, 's'},
                                               {"json", required_argument, 0, 'j'},
                                               {"help", no_argument, 0, 'h'},
                                               {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "b:qs:j:h", long_options, NULL)) != -1) {
    switch (c) {
      case 'b':
        opt.backend = cli_parse_backend(optarg);
        if (opt.backend < 0) {
          fprintf(stderr, "fp8gemm run: --backend '%s' is not auto, cpu or cuda\n", optarg);
          return 2;
        }
        break;
      case 'q': opt.quick = 1; break;
      case 's': opt.shapes = optarg; break;
      case 'j': opt.json = optarg; break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (optind != argc) {
    usage(stderr);
    return 2;
  }

  size_t layer_count = 0;
  size_t (*layers)[2] = NULL;
  if (opt.shapes) {
    cli_shape *shapes;
    int n = cli_load_shapes(opt.shapes, &shapes);
    if (n < 0) return 1;
    layers = malloc((size_t)n * sizeof *layers);
    for (int i = 0; i < n; i++) {
      if (strcmp(shapes[i].set, "deepseek-v3") && strcmp(shapes[i].set, "inline")) continue;
      layers[layer_count][0] = shapes[i].N;
      layers[layer_count][1] = shapes[i].K;
      layer_count++;
    }
    free(shapes);
  } else {
    layer_count = opt.quick ? 3 : sizeof default_layers / sizeof default_layers[0];
    layers = malloc(layer_count * sizeof *layers);
    memcpy(layers, default_layers, layer_count * sizeof *layers);
  }
  const size_t m_full[] = {1, 16, 128, 1024}, m_quick[] = {1, 16, 128};
  const size_t *m_values = opt.quick ? m_quick : m_full;
  const size_t m_count = opt.quick ? 3 : 4;

  fp8gemm_context_options o;
  fp8gemm_context_options_init(&o);
  o.backend = (fp8gemm_backend)opt.backend;
  fp8gemm_context *ctx, *host_ctx;
  fp8gemm_status st = fp8gemm_context_create(&o, &ctx);
  if (st != FP8GEMM_OK) {
    free(layers);
    return cli_fail("run", "context", st);
  }
  st = fp8gemm_context_create(NULL, &host_ctx);
  if (st != FP8GEMM_OK) {
    fp8gemm_context_destroy(ctx);
    free(layers);
    return cli_fail("run", "host context", st);
  }
  const int cuda = fp8gemm_context_backend(ctx) == FP8GEMM_BACKEND_CUDA;
  const double tolerance = cuda ? 2e-3 : 1e-5; /* fp32 out: CPU fp32 accumulation, GPU tensor cores */
  printf("fp8gemm run: backend %s (%s)%s, %d thread(s), %s\n", fp8gemm_backend_name(fp8gemm_context_backend(ctx)),
         fp8gemm_context_device(ctx),
         opt.backend == FP8GEMM_BACKEND_AUTO ? (cuda ? ": Hopper GPU found" : ": no Hopper GPU, using the CPU") : "",
         fp8gemm_context_num_threads(ctx), opt.quick ? "quick" : "full");
  printf("%-14s %5s  %-16s %11s %11s %8s %9s %9s %9s\n", "layer NxK", "M", "preshuffled", "plain_us",
         "presh_us", "speedup", "GFLOP/s", "GB/s_w", "rel_err");
  FILE *json = opt.json ? fopen(opt.json, "w") : NULL;
  if (opt.json && !json) perror(opt.json);
  if (json) fprintf(json, "[\n");
  int failures = 0, json_rows = 0;
  const double t_start = cli_now();
  cli_rng rng;
  for (size_t l = 0; l < layer_count; l++) {
    cli_layer L;
    cli_rng_seed(&rng, 1234 + l);
    if ((st = cli_layer_make(host_ctx, &rng, layers[l][0], layers[l][1], &L)) != FP8GEMM_OK)
      return cli_fail("run", "synthetic layer", st);
    cli_weights weights[2];
    fp8gemm_layout chosen;
    fp8gemm_context_choose_layout(ctx, L.N, L.K, &chosen);
    const fp8gemm_layout layouts[2] = {FP8GEMM_LAYOUT_PLAIN, fp8gemm_context_preshuffled_layout(ctx)};
    for (int v = 0; v < 2; v++)
      if ((st = cli_weights_create(ctx, &L, layouts[v], &weights[v])) != FP8GEMM_OK)
        return cli_fail("run", "weight create", st);
    for (size_t mi = 0; mi < m_count; mi++) {
      const size_t M = m_values[mi];
      float *x = malloc(M * L.K * sizeof(float));
      float *y = malloc(M * L.N * sizeof(float));
      for (size_t i = 0; i < M * L.K; i++) x[i] = cli_normal(&rng);
      void *dx = x, *dy = y, *ws = NULL;
      size_t ws_bytes = 0;
      fp8gemm_linear_workspace_size(ctx, weights[0].w[0], M, &ws_bytes);
      size_t ws1;
      fp8gemm_linear_workspace_size(ctx, weights[1].w[0], M, &ws1);
      if (ws1 > ws_bytes) ws_bytes = ws1;
      st = fp8gemm_memory_alloc(ctx, ws_bytes, &ws);
      if (st == FP8GEMM_OK && cuda) {
        st = fp8gemm_memory_alloc(ctx, M * L.K * sizeof(float), &dx);
        if (st == FP8GEMM_OK) st = fp8gemm_memory_alloc(ctx, M * L.N * sizeof(float), &dy);
        if (st == FP8GEMM_OK)
          st = fp8gemm_memory_copy(ctx, dx, x, M * L.K * sizeof(float), FP8GEMM_COPY_HOST_TO_BACKEND);
      }
      if (st != FP8GEMM_OK) return cli_fail("run", "buffers", st);
      double seconds[2], err[2];
      const double budget = opt.quick ? 0.05 : 0.25;
      for (int v = 0; v < 2; v++) {
        st = cli_time_linear(ctx, &weights[v], M, FP8GEMM_DTYPE_F32, dx, dy, ws, ws_bytes, budget,
                             &seconds[v]);
        if (st != FP8GEMM_OK) return cli_fail("run", "forward", st);
        if (cuda) fp8gemm_memory_copy(ctx, y, dy, M * L.N * sizeof(float), FP8GEMM_COPY_BACKEND_TO_HOST);
        err[v] = cli_check_rows(host_ctx, &L, M, x, y);
      }
      const double flops = 2.0 * (double)M * (double)L.N * (double)L.K;
      const double worst = err[0] > err[1] ? err[0] : err[1];
      const int ok = worst <= tolerance;
      failures += !ok;
      char name[32];
      snprintf(name, sizeof name, "%zux%zu", L.N, L.K);
      printf("%-14s %5zu  %-16s %11.1f %11.1f %7.2fx %9.1f %9.1f %9.2e%s\n", name, M,
             chosen == FP8GEMM_LAYOUT_PLAIN ? "plain (table)" : "preshuffled",
             seconds[0] * 1e6, seconds[1] * 1e6, seconds[0] / seconds[1], flops / seconds[1] * 1e-9,
             (double)(L.N * L.K) / seconds[1] * 1e-9, worst, ok ? "" : "  FAIL");
      fflush(stdout);
      if (json)
        fprintf(json,
                "%s  {\"backend\": \"%s\", \"device\": \"%s\", \"N\": %zu, \"K\": %zu, \"M\": %zu, "
                "\"plain_us\": %.3f, \"preshuffled_us\": %.3f, \"rel_err_plain\": %.3e, "
                "\"rel_err_preshuffled\": %.3e}",
                json_rows++ ? ",\n" : "", fp8gemm_backend_name(fp8gemm_context_backend(ctx)),
                fp8gemm_context_device(ctx), L.N, L.K, M, seconds[0] * 1e6, seconds[1] * 1e6,
                err[0], err[1]);
      if (cuda) {
        fp8gemm_memory_free(ctx, dx);
        fp8gemm_memory_free(ctx, dy);
      }
      fp8gemm_memory_free(ctx, ws);
      free(x);
      free(y);
    }
    cli_weights_destroy(&weights[0]);
    cli_weights_destroy(&weights[1]);
    cli_layer_free(&L);
  }
  if (json) {
    fprintf(json, "\n]\n");
    fclose(json);
  }
  printf("%s: %d check(s) failed (bound %.0e), %.1f s\n", failures ? "FAILED" : "OK", failures,
         tolerance, cli_now() - t_start);
  fp8gemm_context_destroy(host_ctx);
  fp8gemm_context_destroy(ctx);
  free(layers);
  return failures ? 1 : 0;
}
