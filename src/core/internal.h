/* Internal definitions shared by the core and the backends. Not installed. */
#ifndef FP8GEMM_INTERNAL_H
#define FP8GEMM_INTERNAL_H

#include "fp8gemm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- errors ------------------------------------------------------------ */

/* Records a printf-style message for this thread and returns `status`. */
fp8gemm_status fp8gemm_set_error(fp8gemm_status status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
void fp8gemm_clear_error(void);

#define FP8GEMM_CHECK_NOT_NULL(ptr)                                                     \
  do {                                                                                  \
    if ((ptr) == NULL)                                                                  \
      return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: argument '%s' is NULL", \
                               __func__, #ptr);                                         \
  } while (0)

#define FP8GEMM_RETURN_IF_ERROR(expr)     \
  do {                                    \
    fp8gemm_status status_ = (expr);      \
    if (status_ != FP8GEMM_OK) return status_; \
  } while (0)

/* Largest dimension accepted (so that products of two dims and an element
 * size never overflow size_t). */
#define FP8GEMM_MAX_DIM ((size_t)1 << 31)

static inline size_t fp8gemm_ceil_div(size_t a, size_t b) { return (a + b - 1) / b; }

/* ---- 16-bit float conversions (inline for kernels) ---------------------- */

float fp8gemm_load_as_float(fp8gemm_dtype dtype, const void *base, size_t index);
void fp8gemm_store_from_float(fp8gemm_dtype dtype, void *base, size_t index, float value);

/* ---- tuned table ---------------------------------------------------------- */

typedef struct fp8gemm_tuned_entry {
  char backend[16];
  char device[64];
  size_t N, K;
  fp8gemm_layout layout; /* resolved: plain or the backend's preshuffled layout */
  char kernel[64];
  size_t crossover_m;    /* small-M kernel iff M <= this (0: never); or FP8GEMM_CROSSOVER_DEFAULT */
} fp8gemm_tuned_entry;

/* crossover_m when the table says nothing: the backend's own default. */
#define FP8GEMM_CROSSOVER_DEFAULT SIZE_MAX

typedef struct fp8gemm_tuned_table {
  fp8gemm_tuned_entry *entries;
  size_t count;
  char source[256]; /* path, or "shipped:<backend>" */
} fp8gemm_tuned_table;

/* Parses CSV text; `origin` names the source in error messages. */
fp8gemm_status fp8gemm_tuned_table_parse(const char *text, const char *origin,
                                         fp8gemm_tuned_table *table);
fp8gemm_status fp8gemm_tuned_table_load(const char *path, fp8gemm_tuned_table *table);
void fp8gemm_tuned_table_free(fp8gemm_tuned_table *table);
/* The entry for (backend, device, N, K), or NULL. A row whose device is "*"
 * matches any device; an exact device match wins over "*". */
const fp8gemm_tuned_entry *fp8gemm_tuned_table_find(const fp8gemm_tuned_table *table,
                                                    const char *backend, const char *device,
                                                    size_t N, size_t K);
/* The table's crossover M for (N, K) on the context's backend, or
 * FP8GEMM_CROSSOVER_DEFAULT. */
size_t fp8gemm_context_crossover_m(const fp8gemm_context *context, size_t N, size_t K);
/* The shipped default table text for a backend ("" when none). */
const char *fp8gemm_shipped_table(fp8gemm_backend backend);

/* ---- backend interface ------------------------------------------------------ */

struct fp8gemm_weight;

/* What a forward gets once arguments are checked. */
typedef struct fp8gemm_gemm_args {
  size_t M;
  const uint8_t *xq;
  size_t ldq;
  const float *x_scale;
  fp8gemm_scale_layout scale_layout;
  size_t scale_ld;
  fp8gemm_dtype y_dtype;
  void *y;
  size_t ldy;
} fp8gemm_gemm_args;

typedef struct fp8gemm_backend_ops {
  const char *name;
  fp8gemm_layout preshuffled_layout;
  /* Creates the backend state from the options; *state is owned by the context. */
  fp8gemm_status (*init)(fp8gemm_context *ctx, const fp8gemm_context_options *options);
  void (*fini)(fp8gemm_context *ctx);
  const char *(*device_name)(const fp8gemm_context *ctx);
  int (*num_threads)(const fp8gemm_context *ctx);                      /* may be NULL: 1 */
  fp8gemm_status (*set_stream)(fp8gemm_context *ctx, void *cuda_stream); /* may be NULL */
  fp8gemm_status (*synchronize)(fp8gemm_context *ctx);
  /* Memory in the backend's space. */
  fp8gemm_status (*alloc)(fp8gemm_context *ctx, size_t bytes, void **ptr);
  void (*free)(fp8gemm_context *ctx, void *ptr);
  /* Copies between host and backend memory (kind: 0 host->backend,
   * 1 backend->host, 2 backend->backend). */
  fp8gemm_status (*copy)(fp8gemm_context *ctx, void *dst, const void *src, size_t bytes,
                         int kind);
  /* dst may equal src. Arguments are valid; layouts fit the shape. */
  fp8gemm_status (*shuffle)(fp8gemm_context *ctx, size_t N, size_t K, fp8gemm_layout from,
                            const uint8_t *src, fp8gemm_layout to, uint8_t *dst);
  /* Refuses (FP8GEMM_ERROR_INVALID_ARGUMENT) a code that is NaN: the fast
   * decoders need finite weights. Called once at weight creation. */
  fp8gemm_status (*check_weight_codes)(fp8gemm_context *ctx, const uint8_t *data, size_t N,
                                       size_t K);
  fp8gemm_status (*quantize_activations)(fp8gemm_context *ctx, size_t M, size_t K,
                                         fp8gemm_dtype x_dtype, const void *x, size_t ldx,
                                         uint8_t *xq, size_t ldq, float *x_scale,
                                         fp8gemm_scale_layout scale_layout, size_t scale_ld);
  fp8gemm_status (*quantize_weight)(fp8gemm_context *ctx, size_t N, size_t K,
                                    fp8gemm_dtype w_dtype, const void *w, size_t ldw,
                                    uint8_t *wq, float *weight_scale_inv);
  /* The scale layout the GEMM for this weight and M reads. */
  fp8gemm_scale_layout (*gemm_scale_layout)(const fp8gemm_context *ctx,
                                            const struct fp8gemm_weight *w, size_t M);
  /* Workspace for a forward of M rows beyond xq and scales (kernel scratch). */
  size_t (*gemm_workspace)(const fp8gemm_context *ctx, const struct fp8gemm_weight *w, size_t M);
  fp8gemm_status (*gemm)(fp8gemm_context *ctx, const struct fp8gemm_weight *w,
                         const fp8gemm_gemm_args *args, void *workspace, size_t workspace_bytes);
  /* Rewrites an activation scale [M, groups] from one layout into the other
   * in backend memory; NULL: the core does it with a host loop (CPU). */
  fp8gemm_status (*convert_scales)(fp8gemm_context *ctx, size_t M, size_t groups,
                                   const float *src, fp8gemm_scale_layout src_layout,
                                   size_t src_ld, float *dst, fp8gemm_scale_layout dst_layout,
                                   size_t dst_ld);
  /* Optional fused quantize+GEMM; NULL or FP8GEMM_ERROR_UNSUPPORTED -> two steps. */
  fp8gemm_status (*linear_fused)(fp8gemm_context *ctx, const struct fp8gemm_weight *w, size_t M,
                                 fp8gemm_dtype x_dtype, const void *x, size_t ldx,
                                 fp8gemm_dtype y_dtype, void *y, size_t ldy, void *workspace,
                                 size_t workspace_bytes);
  /* Optional: shuffle (dst != src, both host memory) that refuses NaN codes of
   * src in the same pass, with check_weight_codes' error (the first such byte);
   * dst is then unspecified. NULL: the core checks, then shuffles. */
  fp8gemm_status (*shuffle_checked)(fp8gemm_context *ctx, size_t N, size_t K, fp8gemm_layout from,
                                    const uint8_t *src, fp8gemm_layout to, uint8_t *dst);
} fp8gemm_backend_ops;

extern const fp8gemm_backend_ops fp8gemm_cpu_backend;
#ifdef FP8GEMM_HAVE_CUDA
extern const fp8gemm_backend_ops fp8gemm_cuda_backend;
/* 1 when a device of compute capability 9.0 is visible. */
int fp8gemm_cuda_usable(void);
#endif

struct fp8gemm_context {
  fp8gemm_backend backend;
  const fp8gemm_backend_ops *ops;
  void *state; /* the backend's */
  fp8gemm_tuned_table table;
};

struct fp8gemm_weight {
  fp8gemm_backend backend;
  const fp8gemm_backend_ops *ops;
  fp8gemm_context *context; /* the context it was created on (for freeing) */
  size_t N, K;
  fp8gemm_layout layout;
  uint8_t *data;         /* N*K bytes in `layout`, backend memory */
  bool owns_data;
  float *scale_inv;      /* [ceil(N/128), ceil(K/128)] backend memory, owned */
  float *bias;           /* [N] fp32 backend memory, owned, or NULL */
  float *host_scale_inv; /* host copy of scale_inv (same pointer on the CPU) */
  size_t crossover_m;    /* from the tuned table, or FP8GEMM_CROSSOVER_DEFAULT */
};

/* ---- layouts -------------------------------------------------------------- */

/* One definition per layout: the index function the reference kernel and
 * the generic shuffles use. Shape already checked. */
size_t fp8gemm_layout_offset_unchecked(fp8gemm_layout layout, size_t N, size_t K, size_t n,
                                       size_t k);
/* The Hopper layout, defined in layout_sm90.c (compiled in every build so
 * the CPU reference can compute from it). */
fp8gemm_status fp8gemm_layout_sm90_check(size_t N, size_t K);
size_t fp8gemm_layout_sm90_offset(size_t N, size_t K, size_t n, size_t k);

/* Single-threaded reorder through the index functions, host memory; src ==
 * dst allowed (uses a temporary copy). For exports and tests. */
fp8gemm_status fp8gemm_shuffle_host_generic(size_t N, size_t K, fp8gemm_layout from,
                                            const uint8_t *src, fp8gemm_layout to, uint8_t *dst);

/* ---- CPU helpers shared with other backends' host code ----------------------- */

/* Host quantizers (scalar; the CPU backend's own entry points may be faster). */
void fp8gemm_quantize_activation_row_host(size_t K, fp8gemm_dtype x_dtype, const void *x_row,
                                          uint8_t *xq_row, float *scales, size_t scale_stride);

#ifdef __cplusplus
}
#endif

#endif
