/* fp8gemm verify: every kernel of a backend (plain and preshuffled weights,
 * fp32 and bf16 out) against the fp64 reference on sampled rows, over a
 * shapes file or inline shapes. Exit status 1 on any error above bound. */
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: fp8gemm verify [--backend auto|cpu|cuda] --shapes FILE|\"M,N,K;...\"\n"
          "  Bounds: fp32 out 1e-5 on the CPU, 2e-3 on CUDA; bf16 out 8e-3.\n");
}

int fp8gemm_cmd_verify(int argc, char **argv) {
  int backend = FP8GEMM_BACKEND_AUTO;
  const char *shapes_spec = NULL;
  static const struct option long_options[] = {{"backend", required_argument, 0, 'b'},
                                               {"shapes", required_argument, 0, 's'},
                                               {"help", no_argument, 0, 'h'},
                                               {0, 0, 0, 0}};
  int c;
  optind = 1;
  while ((c = getopt_long(argc, argv, "b:s:h", long_options, NULL)) != -1) {
    switch (c) {
      case 'b':
        if ((backend = cli_parse_backend(optarg)) < 0) {
          fprintf(stderr, "fp8gemm verify: --backend '%s' is not auto, cpu or cuda\n", optarg);
          return 2;
        }
        break;
      case 's': shapes_spec = optarg; break;
      case 'h': usage(stdout); return 0;
      default: usage(stderr); return 2;
    }
  }
  if (!shapes_spec || optind != argc) {
    usage(stderr);
    return 2;
  }
  cli_shape *shapes;
  const int shape_count = cli_load_shapes(shapes_spec, &shapes);
  if (shape_count < 0) return 1;
  fp8gemm_context_options o;
  fp8gemm_context_options_init(&o);
  o.backend = (fp8gemm_backend)backend;
  fp8gemm_context *ctx, *host_ctx;
  fp8gemm_status st = fp8gemm_context_create(&o, &ctx);
  if (st != FP8GEMM_OK) return cli_fail("verify", "context", st);
  if ((st = fp8gemm_context_create(NULL, &host_ctx)) != FP8GEMM_OK) return cli_fail("verify", "host context", st);
  const int cuda = fp8gemm_context_backend(ctx) == FP8GEMM_BACKEND_CUDA;
  printf("fp8gemm verify: backend %s (%s)\n", fp8gemm_backend_name(fp8gemm_context_backend(ctx)),
         fp8gemm_context_device(ctx));
  int failures = 0, checks = 0;
  cli_rng rng;
  cli_rng_seed(&rng, 7);
  for (int s = 0; s < shape_count; s++) {
    cli_layer L;
    if ((st = cli_layer_make(host_ctx, &rng, shapes[s].N, shapes[s].K, &L)) != FP8GEMM_OK)
      return cli_fail("verify", "synthetic layer", st);
    const fp8gemm_layout layouts[2] = {FP8GEMM_LAYOUT_PLAIN, fp8gemm_context_preshuffled_layout(ctx)};
    for (int v = 0; v < 2; v++) {
      fp8gemm_weight *weight;
      if ((st = cli_weight_create(ctx, &L, layouts[v], &weight)) != FP8GEMM_OK) {
        printf("%zux%zu %-16s refused: %s\n", L.N, L.K, fp8gemm_layout_name(layouts[v]), fp8gemm_last_error());
        continue;
      }
      for (size_t mi = 0; mi < shapes[s].m_count; mi++) {
        const size_t M = shapes[s].m_values[mi];
        float *x = malloc(M * L.K * sizeof(float)), *y = malloc(M * L.N * sizeof(float));
        uint16_t *y16 = malloc(M * L.N * sizeof(uint16_t));
        for (size_t i = 0; i < M * L.K; i++) x[i] = cli_normal(&rng);
        void *dx = x, *dy = y;
        if (cuda) {
          fp8gemm_memory_alloc(ctx, M * L.K * sizeof(float), &dx);
          fp8gemm_memory_alloc(ctx, M * L.N * sizeof(float), &dy);
          fp8gemm_memory_copy(ctx, dx, x, M * L.K * sizeof(float), FP8GEMM_COPY_HOST_TO_BACKEND);
        }
        double err[2] = {INFINITY, INFINITY};
        for (int out = 0; out < 2; out++) {
          const fp8gemm_dtype yt = out ? FP8GEMM_DTYPE_BF16 : FP8GEMM_DTYPE_F32;
          st = fp8gemm_linear(ctx, weight, M, FP8GEMM_DTYPE_F32, dx, L.K, (int)yt, dy, L.N, NULL, 0);
          if (st != FP8GEMM_OK) {
            cli_fail("verify", "linear", st);
            continue;
          }
          const size_t bytes = M * L.N * fp8gemm_dtype_size(yt);
          void *host_y = out ? (void *)y16 : (void *)y;
          if (cuda) fp8gemm_memory_copy(ctx, host_y, dy, bytes, FP8GEMM_COPY_BACKEND_TO_HOST);
          else if (out) memcpy(y16, y, bytes);
          if (out)
            for (size_t i = 0; i < M * L.N; i++) y[i] = fp8gemm_bf16_to_float(y16[i]);
          err[out] = cli_check_rows(host_ctx, &L, M, x, y);
        }
        const double bound_f32 = cuda ? 2e-3 : 1e-5;
        const int ok = err[0] <= bound_f32 && err[1] <= 8e-3;
        failures += !ok;
        checks++;
        printf("%5zu x %5zu x %5zu %-16s f32 %.2e bf16 %.2e %s\n", M, L.N, L.K,
               fp8gemm_layout_name(layouts[v]), err[0], err[1], ok ? "ok" : "FAIL");
        if (cuda) {
          fp8gemm_memory_free(ctx, dx);
          fp8gemm_memory_free(ctx, dy);
        }
        free(x);
        free(y);
        free(y16);
      }
      fp8gemm_weight_destroy(weight);
    }
    cli_layer_free(&L);
  }
  printf("%d passed, %d failed\n", checks - failures, failures);
  free(shapes);
  fp8gemm_context_destroy(host_ctx);
  fp8gemm_context_destroy(ctx);
  return failures ? 1 : 0;
}
