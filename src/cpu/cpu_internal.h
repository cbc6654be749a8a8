/* The CPU backend's private interface: the thread pool, the per-context
 * state, and the kernel table that holds one implementation per ISA
 * (portable C "scalar" and AVX2+FMA+F16C "avx2"). Kernel names say what they
 * compute, their tile, and their ISA (XNNPACK style).
 *
 * Number conventions shared by every kernel:
 *  - Weight bytes are decoded exactly to value/256 (the F16C trick of
 *    REFERENCE section 1 yields value/256; the scalar path uses a table of
 *    the same numbers) and activation bytes to value*256 (once per call,
 *    off the hot loop), so a product of the two is exactly value*value and
 *    no scale needs a compensating factor (which could overflow).
 *  - Scales are applied once per 128-wide K group ("promotion"): each group
 *    is summed in fp32, then C += (sx(m,g) * sw(n/128,g)) * sum.
 *    This is the math of REFERENCE section 2, not a fold of the scales into
 *    the operands, which keeps the error well under 1e-5 at any K. */
#ifndef FP8GEMM_CPU_INTERNAL_H
#define FP8GEMM_CPU_INTERNAL_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "internal.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- thread pool ----------------------------------------------------------
 * A fixed set of worker threads; the caller of cpu_pool_run is thread 0.
 * One dispatch at a time: a caller that finds the pool busy (another thread
 * is in a forward on the same context) runs its task alone on its own thread
 * instead of waiting, so concurrent forwards are safe and never deadlock.
 * Workers join a task when they wake up, or not at all if the caller has
 * finished it by then: a task must hand out its work dynamically
 * (cpu_claim), never by thread index. */
typedef void (*cpu_task_fn)(void *arg, int thread_index, int thread_count);
typedef struct cpu_pool cpu_pool;

fp8gemm_status cpu_pool_create(int thread_count, cpu_pool **pool);
void cpu_pool_destroy(cpu_pool *pool);
int cpu_pool_size(const cpu_pool *pool);
/* Calls fn(arg, i, n) on the caller (i = 0) and on the workers that join in
 * time (distinct i in [1, n)), n = min(want_threads, pool size), or n = 1
 * when the pool is busy; returns when every call has returned. i indexes
 * per-thread scratch; n sizes the work split. */
void cpu_pool_run(cpu_pool *pool, int want_threads, cpu_task_fn fn, void *arg);

/* ---- ISA ---------------------------------------------------------------- */
typedef enum cpu_isa { CPU_ISA_GENERIC = 0, CPU_ISA_AVX2 = 1 } cpu_isa;

/* AVX2 + FMA + F16C present and enabled by the OS (XSAVE of YMM state). */
bool cpu_detect_avx2(void);

/* ---- large-M GEMM tiles ---------------------------------------------------- */
#define CPU_GEMM_MR 6   /* rows of x per micro-tile */
#define CPU_GEMM_NR 16  /* output columns per micro-tile = one weight panel */
#define CPU_GEMM_KC 256 /* K per packed block: two scale groups */
#define CPU_GEMM_MC 144 /* rows of x per packed A block (L2) */
#define CPU_GEMM_NC 2048 /* columns per packed B block (L3) */
/* With 16-bit outputs the fp32 accumulators live in a per-thread scratch of
 * CPU_GEMM_MCHUNK x CPU_GEMM_NC_SCRATCH floats. */
#define CPU_GEMM_MCHUNK 576
#define CPU_GEMM_NC_SCRATCH 1024

/* ---- small-M GEMV tiles ------------------------------------------------------ */
#define CPU_GEMV_MAX_ROWS 6 /* rows of x one kernel call handles */
#define CPU_GEMV_PLAIN_WROWS 4 /* weight rows one plain kernel call handles at most */
/* Small-M kernels up to this M by default (measured on the 2-core EPYC,
 * 7168 x 2048, CPU time of one thread: the GEMV kernels win up to M = 8 on
 * plain rows and up to M = 12 on preshuffled panels). */
#define CPU_DEFAULT_CROSSOVER_M_PLAIN 8
#define CPU_DEFAULT_CROSSOVER_M_PRESHUFFLED 12

typedef struct cpu_kernels {
  const char *isa_name;

  /* C[6][16] (+)= sum over the K groups inside kc of
   *   (a_scale[g][i] * b_scale[g]) * sum_{k in g} a[k][i] * b[k][j].
   * a: [6][kc] packed (row-major: each row of x decoded in place, no
   * transpose), a_scale: [groups][6], b: [kc][16] packed,
   * b_scale: [groups]. Groups are 128 wide except the last one of kc, which
   * may be narrower (a multiple of 16). accumulate = 0 overwrites C. */
  void (*gemm_6x16)(size_t kc, const float *a, const float *a_scale, const float *b,
                    const float *b_scale, float *c, size_t ldc, int accumulate);

  /* Decodes kc columns of one weight panel of `rows` (1..16) rows into
   * b[kc][16] (value/256, rows beyond `rows` zero).
   * preshuffled: src = panel base + k0*rows, byte (k, r) at src[k*rows + r].
   * plain: src = &w[n0*ld + k0], byte (k, r) at src[r*ld + k]. */
  void (*pack_b_preshuffled)(size_t kc, size_t rows, const uint8_t *src, float *b,
                             const float *lut);
  void (*pack_b_plain)(size_t kc, size_t rows, const uint8_t *src, size_t ld, float *b,
                       const float *lut);

  /* Small M. out[r][j] = sum_g (xs[r][g] * ws[g]) * sum_{k in g} xd[r][k] * W[j][k]
   * for r < rows (1..6), with xd the decoded x (value*256, row stride ldxd),
   * W the decoded weight (value/256), xs the x scales (row stride ldxs) and
   * ws the weight scales of the panel's 128-row block.
   * preshuffled: one full 16-row panel (16*K bytes, k-major), out [rows][16].
   * plain: wrows (1..4) weight rows at w (row stride ldw), out [rows][4]. */
  void (*gemv_preshuffled)(size_t rows, size_t K, const uint8_t *panel, const float *xd,
                           size_t ldxd, const float *xs, size_t ldxs, const float *ws, float *out,
                           const float *lut);
  void (*gemv_plain)(size_t rows, size_t wrows, size_t K, const uint8_t *w, size_t ldw,
                     const float *xd, size_t ldxd, const float *xs, size_t ldxs, const float *ws,
                     float *out, const float *lut);

  /* Decodes `count` activation bytes (count % 16 == 0) to value*256
   * (exact; NaN codes of the table path stay NaN). */
  void (*decode_row)(size_t count, const uint8_t *src, float *dst, const float *lut);

  /* y[i][j] = c[i][j] (+ bias[j]) converted to y_dtype, i < rows, j < cols. */
  void (*store_tile)(size_t rows, size_t cols, const float *c, size_t ldc, const float *bias,
                     fp8gemm_dtype y_dtype, void *y, size_t ldy);

  /* Transposes 16x16 byte blocks: dst[j*dst_ld + i] = src[i*src_ld + j] for
   * i, j < 16, for `blocks` blocks; block b starts at src + b*src_step and
   * dst + b*dst_step. */
  void (*transpose_16x16)(size_t blocks, const uint8_t *src, size_t src_ld, size_t src_step,
                          uint8_t *dst, size_t dst_ld, size_t dst_step);
  /* The same, for a dst written whole and in order (contiguous blocks):
   * may bypass the caches. */
  void (*transpose_16x16_stream)(size_t blocks, const uint8_t *src, size_t src_ld,
                                 size_t src_step, uint8_t *dst, size_t dst_ld, size_t dst_step);

  /* Index of the first byte with (b & 0x7F) == 0x7F (an e4m3fn NaN), or
   * SIZE_MAX. */
  size_t (*find_nan_code)(size_t count, const uint8_t *data);

  /* One row of activations: groups of 128 (last narrower), scale written to
   * scales[g * scale_stride]; bit-identical to the core's
   * fp8gemm_quantize_activation_row_host. */
  void (*quantize_row)(size_t K, fp8gemm_dtype x_dtype, const void *x_row, uint8_t *xq_row,
                       float *scales, size_t scale_stride);
  /* Weights: amax over `rows` x `cols` (cols % 16 == 0) of w (stride ldw, in
   * elements of w_dtype); returns false when a value is not finite. */
  bool (*block_amax)(size_t rows, size_t cols, fp8gemm_dtype w_dtype, const void *w,
                     size_t ldw, float *amax);
  /* q[j] = e4m3fn(w[j] / scale) for j < cols (cols % 16 == 0). */
  void (*quantize_span)(size_t cols, fp8gemm_dtype w_dtype, const void *w, float scale,
                        uint8_t *q);
} cpu_kernels;

extern const cpu_kernels cpu_kernels_scalar;
#if defined(__x86_64__) || defined(__i386__)
#define CPU_HAVE_AVX2_KERNELS 1
extern const cpu_kernels cpu_kernels_avx2;
#endif

/* The scalar micro-kernels, exported for the AVX2 table's edge cases and
 * for tests. */
void f8f32_gemm_6x16__scalar(size_t kc, const float *a, const float *a_scale, const float *b,
                             const float *b_scale, float *c, size_t ldc, int accumulate);
void f8_pack_b_16_preshuffled__scalar(size_t kc, size_t rows, const uint8_t *src, float *b,
                                      const float *lut);
void f8_pack_b_16_plain__scalar(size_t kc, size_t rows, const uint8_t *src, size_t ld, float *b,
                                const float *lut);
void f32_store_tile__scalar(size_t rows, size_t cols, const float *c, size_t ldc,
                            const float *bias, fp8gemm_dtype y_dtype, void *y, size_t ldy);
void f8f32_gemv_6x16_preshuffled__scalar(size_t rows, size_t K, const uint8_t *panel,
                                         const float *xd, size_t ldxd, const float *xs,
                                         size_t ldxs, const float *ws, float *out,
                                         const float *lut);
void f8f32_gemv_6x4_plain__scalar(size_t rows, size_t wrows, size_t K, const uint8_t *w,
                                  size_t ldw, const float *xd, size_t ldxd, const float *xs,
                                  size_t ldxs, const float *ws, float *out, const float *lut);

/* ---- context state -------------------------------------------------------- */
typedef struct cpu_state {
  cpu_isa isa;
  int num_threads;
  cpu_pool *pool;
  const cpu_kernels *kernels;
  float decode_lut[256]; /* e4m3fn code -> value/256; NaN codes -> NaN */
} cpu_state;

static inline cpu_state *cpu_state_of(const fp8gemm_context *ctx) {
  return (cpu_state *)ctx->state;
}

/* Fills lut[code] = e4m3fn value / 256 from the core's decoder. */
void cpu_fill_decode_lut(float lut[256]);

/* Backend entry points implemented in separate files. */
fp8gemm_status cpu_shuffle(fp8gemm_context *ctx, size_t N, size_t K, fp8gemm_layout from,
                           const uint8_t *src, fp8gemm_layout to, uint8_t *dst);
fp8gemm_status cpu_check_weight_codes(fp8gemm_context *ctx, const uint8_t *data, size_t N,
                                      size_t K);
fp8gemm_status cpu_shuffle_checked(fp8gemm_context *ctx, size_t N, size_t K, fp8gemm_layout from,
                                   const uint8_t *src, fp8gemm_layout to, uint8_t *dst);
fp8gemm_status cpu_quantize_activations(fp8gemm_context *ctx, size_t M, size_t K,
                                        fp8gemm_dtype x_dtype, const void *x, size_t ldx,
                                        uint8_t *xq, size_t ldq, float *x_scale,
                                        fp8gemm_scale_layout scale_layout, size_t scale_ld);
fp8gemm_status cpu_quantize_weight(fp8gemm_context *ctx, size_t N, size_t K,
                                   fp8gemm_dtype w_dtype, const void *w, size_t ldw, uint8_t *wq,
                                   float *weight_scale_inv);
fp8gemm_scale_layout cpu_gemm_scale_layout(const fp8gemm_context *ctx,
                                           const struct fp8gemm_weight *w, size_t M);
size_t cpu_gemm_workspace(const fp8gemm_context *ctx, const struct fp8gemm_weight *w, size_t M);
fp8gemm_status cpu_gemm(fp8gemm_context *ctx, const struct fp8gemm_weight *w,
                        const fp8gemm_gemm_args *args, void *workspace, size_t workspace_bytes);

/* The small-M / large-M boundary used for this weight on this context. */
size_t cpu_crossover_m(const struct fp8gemm_weight *w);

/* Takes the next `chunk` items of [0, total) from a counter shared by the
 * threads of a task (the pool's tasks must hand out work this way). */
static inline bool cpu_claim(atomic_size_t *next, size_t chunk, size_t total, size_t *begin,
                             size_t *end) {
  const size_t first = atomic_fetch_add_explicit(next, chunk, memory_order_relaxed);
  if (first >= total) return false;
  *begin = first;
  *end = total - first < chunk ? total : first + chunk;
  return true;
}

#ifdef __cplusplus
}
#endif

#endif
