/* Helpers the subcommands share (not subcommands themselves): shape lists,
 * timing, seeded data, backend names. */
#ifndef FP8GEMM_CLI_UTIL_H
#define FP8GEMM_CLI_UTIL_H

#include <stddef.h>
#include <stdint.h>

#include "fp8gemm.h"

typedef struct cli_shape {
  char set[32];
  size_t N, K;
  size_t m_count;
  size_t m_values[32];
} cli_shape;

/* Parses either a shapes file (set,N,K,"M values") or an inline list
 * "M,N,K;M,N,K". Returns the count, or -1 with a message on stderr. */
int cli_load_shapes(const char *spec, cli_shape **shapes);

/* Monotonic seconds. */
double cli_now(void);

/* 1 when both paths name the same existing file (an output must never be
 * its own input). */
int cli_same_file(const char *a, const char *b);

/* splitmix64 + Box-Muller; deterministic for a seed. */
typedef struct cli_rng {
  uint64_t state;
} cli_rng;
void cli_rng_seed(cli_rng *rng, uint64_t seed);
float cli_normal(cli_rng *rng);

/* "cpu" | "cuda" | "auto" -> backend; -1 if unknown. */
int cli_parse_backend(const char *name);

/* "f32" | "bf16" | "f16" -> activation / output dtype; -1 if unknown. */
int cli_parse_dtype(const char *name);

/* Prints "fp8gemm <cmd>: <what>: <status> (<message>)" and returns 1. */
int cli_fail(const char *cmd, const char *what, fp8gemm_status status);

/* A layer's quantized weight on the host (plain) with its scales. */
typedef struct cli_layer {
  size_t N, K, groups;
  uint8_t *wq;
  float *w_scale;
} cli_layer;

/* A synthetic layer: weights 0.02 * N(0,1) from `rng`, quantized 128x128
 * by `host_ctx`. cli_layer_free releases it. */
fp8gemm_status cli_layer_make(fp8gemm_context *host_ctx, cli_rng *rng, size_t N, size_t K,
                              cli_layer *L);
void cli_layer_free(cli_layer *L);
/* A weight handle on `ctx` from the layer's plain bytes, in `layout`. */
fp8gemm_status cli_weight_create(fp8gemm_context *ctx, const cli_layer *L, fp8gemm_layout layout,
                                 fp8gemm_weight **weight);

/* Relative error of y [M, N] (host fp32, row stride N) on up to 8 sampled
 * rows, against the fp64 reference on the same rows of x [M, K] quantized
 * by `host_ctx`. INFINITY if anything is NaN or fails. */
double cli_check_rows(fp8gemm_context *host_ctx, const cli_layer *L, size_t M, const float *x,
                      const float *y);

/* Timed calls cycle through copies of a weight that together exceed
 * CLI_ROTATION_BYTES (more than the CPUs' L3 and the H100's 50 MB L2), so a
 * call finds its weight in memory, as in a model's forward, where each
 * layer's weight is read once per pass. */
#define CLI_ROTATION_BYTES ((size_t)96 << 20)
#define CLI_MAX_COPIES 8
/* Copies of a weight of `weight_bytes` to cycle through (1 .. CLI_MAX_COPIES). */
int cli_copies_for(size_t weight_bytes);

typedef struct cli_weights {
  fp8gemm_weight *w[CLI_MAX_COPIES];
  int count;
} cli_weights;
/* cli_copies_for(N * K) handles of the layer's weight on `ctx`, in `layout`;
 * none are left on failure. cli_weights_destroy releases them. */
fp8gemm_status cli_weights_create(fp8gemm_context *ctx, const cli_layer *L, fp8gemm_layout layout,
                                  cli_weights *weights);
void cli_weights_destroy(cli_weights *weights);
/* The copy for the next call (weights->w[*next]), advancing *next in turn. */
const fp8gemm_weight *cli_next_weight(const cli_weights *weights, int *next);

/* Median seconds of one fp8gemm_linear (x in x_dtype, y in the same; backend
 * memory), the calls cycling through `weights`, after a warm-up, over
 * batches of back-to-back calls with one synchronization each (a batch lasts
 * about 1 ms), repeating for about `budget` seconds (3 batches at least). */
fp8gemm_status cli_time_linear(fp8gemm_context *ctx, const cli_weights *weights, size_t M,
                               fp8gemm_dtype x_dtype, const void *x, void *y, void *ws,
                               size_t ws_bytes, double budget, double *seconds);

#endif
