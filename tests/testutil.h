/* Shared test helpers: seeded random data (fresh each run, seed printed so
 * a failure can be replayed with FP8GEMM_TEST_SEED), error norms, and the
 * standard problem: random fp32 x and W quantized the library's way. */
#ifndef FP8GEMM_TESTUTIL_H
#define FP8GEMM_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fp8gemm.h"

typedef struct tu_rng {
  uint64_t state;
} tu_rng;

/* A seed from FP8GEMM_TEST_SEED, else from the clock; printed once. */
uint64_t tu_seed(void);
tu_rng tu_rng_make(uint64_t seed);
uint64_t tu_next(tu_rng *rng);
float tu_uniform(tu_rng *rng); /* [-1, 1) */
float tu_normal(tu_rng *rng);
void tu_fill_normal(tu_rng *rng, float *dst, size_t count, float scale);
void *tu_malloc(size_t bytes); /* fails the test on NULL */
/* The whole file (one spare byte after it); fails the test if it cannot be read. */
void *tu_read_file(const char *path, size_t *size);
/* Runs `program` with the NULL-terminated arguments `args` (at most 30),
 * its stdout and stderr into the file `log` (NULL: discarded). With a log
 * and `output`, the log's first output_cap - 1 bytes are copied there and
 * the log removed. Its exit status; -1 if it did not exit. */
int tu_run_program(const char *program, const char *log, char *output, size_t output_cap,
                   const char *first, va_list args);

/* Descriptor of an e4m3 weight [N, K] in host memory, stored in `layout`,
 * with fp32 block scales and an optional fp32 bias, to be created in
 * `target`. */
void tu_weight_desc(fp8gemm_weight_desc *d, size_t N, size_t K, const uint8_t *codes,
                    fp8gemm_layout layout, const float *scale_inv, const float *bias,
                    fp8gemm_layout target);
/* The weight of tu_weight_desc from plain codes, created in `target` (the
 * test fails unless it is created and reports that layout). */
fp8gemm_weight *tu_weight(fp8gemm_context *ctx, size_t N, size_t K, const uint8_t *plain_codes,
                          const float *scale_inv, const float *bias, fp8gemm_layout target);

/* ||y - ref|| / ||ref|| over an M x N block. */
double tu_rel_err(const float *y, size_t ldy, const double *ref, size_t ldr, size_t M, size_t N);
double tu_rel_err_f32(const float *a, size_t lda, const float *b, size_t ldb, size_t M, size_t N);

/* A quantized problem: x [M, K] fp32 random, xq/x_scale (row-major), W [N, K]
 * fp32 random with block-varying magnitudes, wq (plain) and scales. */
typedef struct tu_problem {
  size_t M, N, K, groups;
  float *x;
  uint8_t *xq;
  float *x_scale;
  float *w;
  uint8_t *wq;
  float *w_scale;
  float *bias; /* NULL unless asked */
} tu_problem;

void tu_problem_make(fp8gemm_context *ctx, tu_rng *rng, size_t M, size_t N, size_t K,
                     int with_bias, tu_problem *p);
void tu_problem_free(tu_problem *p);
/* The fp64 reference on the problem's quantized data, into a new array. */
double *tu_reference(const tu_problem *p);

/* Fails the test with the library's message when status != OK. */
#define TU_OK(expr)                                                                       \
  do {                                                                                   \
    fp8gemm_status tu_status_ = (expr);                                                  \
    if (tu_status_ != FP8GEMM_OK)                                                        \
      fail_msg("%s -> %s: %s", #expr, fp8gemm_status_string(tu_status_), fp8gemm_last_error()); \
  } while (0)

/* Asserts a status and that the message mentions `needle`. */
#define TU_EXPECT_ERROR(expr, want, needle)                                                  \
  do {                                                                                      \
    fp8gemm_status tu_status_ = (expr);                                                     \
    if (tu_status_ != (want))                                                               \
      fail_msg("%s -> %s, expected %s (%s)", #expr, fp8gemm_status_string(tu_status_),     \
               fp8gemm_status_string(want), fp8gemm_last_error());                          \
    if (!strstr(fp8gemm_last_error(), (needle)))                                            \
      fail_msg("%s: message '%s' does not mention '%s'", #expr, fp8gemm_last_error(), (needle)); \
  } while (0)

#endif
