/*
 * fp8gemm: FP8 block-scaled matrix multiplication (DeepSeek-V3 convention).
 *
 * Weights are e4m3 bytes W[N, K] with one fp32 scale per 128x128 block
 * (weight_scale_inv[ceil(N/128), ceil(K/128)], row-major). Activations are
 * quantized per token per 128 values along K. The product is
 *
 *   y[m, n] = sum_g sx(m, g) * sw[n/128][g] * sum_{k in group g} xq[m, k] * wq[n, k]
 *
 * A weight is prepared once (fp8gemm_weight_create*): the tuned table picks
 * its layout (plain, or the backend's preshuffled order), the bytes are
 * reordered once, and the layout travels with the handle. Every forward
 * (fp8gemm_linear, fp8gemm_gemm) reads the layout from the handle.
 *
 * Conventions
 *  - Every function returns an fp8gemm_status; on failure a message naming
 *    the argument and value at fault is kept per thread (fp8gemm_last_error).
 *  - Handles are opaque. Nothing is global: all state lives in a context.
 *  - A context may be used by several threads at once for forwards on weights
 *    that are already created (weights are read-only after creation); each
 *    calling thread must pass its own workspace (or none: then the call
 *    allocates). Creating and destroying handles is not synchronized with
 *    forwards on the same handle.
 *  - Sizes are size_t, leading dimensions are in elements.
 */
#ifndef FP8GEMM_H
#define FP8GEMM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FP8GEMM_API __declspec(dllexport)
#elif defined(__GNUC__)
#define FP8GEMM_API __attribute__((visibility("default")))
#else
#define FP8GEMM_API
#endif

#define FP8GEMM_VERSION_MAJOR 0
#define FP8GEMM_VERSION_MINOR 1
#define FP8GEMM_VERSION_PATCH 0

/* Block size of the DeepSeek-style format, on N and K for weights and on K
 * for activations. */
#define FP8GEMM_BLOCK 128

/* ------------------------------------------------------------------------ */
/* Status and errors                                                         */
/* ------------------------------------------------------------------------ */

typedef enum fp8gemm_status {
  FP8GEMM_OK = 0,
  FP8GEMM_ERROR_INVALID_ARGUMENT = 1, /* a null pointer, a bad size, a bad value */
  FP8GEMM_ERROR_UNSUPPORTED = 2,      /* valid, but not implemented for this backend/layout */
  FP8GEMM_ERROR_OUT_OF_MEMORY = 3,
  FP8GEMM_ERROR_LAYOUT_MISMATCH = 4,  /* data in one layout handed to code for another */
  FP8GEMM_ERROR_IO = 5,               /* a file could not be read or written */
  FP8GEMM_ERROR_PARSE = 6,            /* a file's content is malformed */
  FP8GEMM_ERROR_BACKEND = 7,          /* the backend (CUDA) reported an error */
  FP8GEMM_ERROR_NO_DEVICE = 8,        /* the asked backend is not built in or has no device */
  FP8GEMM_ERROR_INTERNAL = 9
} fp8gemm_status;

/* A constant string naming the status ("invalid argument", ...). */
FP8GEMM_API const char *fp8gemm_status_string(fp8gemm_status status);

/* The message of the last failed call on this thread ("" if none). The
 * pointer stays valid until the next fp8gemm call on this thread. */
FP8GEMM_API const char *fp8gemm_last_error(void);

FP8GEMM_API const char *fp8gemm_version_string(void);

/* ------------------------------------------------------------------------ */
/* Types                                                                     */
/* ------------------------------------------------------------------------ */

typedef enum fp8gemm_dtype {
  FP8GEMM_DTYPE_F32 = 0,
  FP8GEMM_DTYPE_BF16 = 1,
  FP8GEMM_DTYPE_F16 = 2,
  FP8GEMM_DTYPE_E4M3FN = 3,   /* OCP FP8: bias 7, max 448, NaN 0x7F/0xFF */
  FP8GEMM_DTYPE_E4M3FNUZ = 4  /* AMD gfx942: bias 8, max 240, NaN 0x80 */
} fp8gemm_dtype;

FP8GEMM_API const char *fp8gemm_dtype_name(fp8gemm_dtype dtype);
/* Bytes per element; 0 for an unknown dtype. */
FP8GEMM_API size_t fp8gemm_dtype_size(fp8gemm_dtype dtype);

/* Byte orders of an e4m3 weight [N, K]. All keep one byte per weight and
 * the same total size, so they convert in place. */
typedef enum fp8gemm_layout {
  /* Row-major [N, K], as stored in checkpoints. */
  FP8GEMM_LAYOUT_PLAIN = 0,
  /* The CPU kernels' panel order: panels of 16 rows; inside a panel, for
   * each k, the panel's 16 bytes of column k (the last panel holds N % 16
   * rows). Name: "preshuffled_cpu". */
  FP8GEMM_LAYOUT_PRESHUFFLED_CPU = 1,
  /* The Hopper kernels' order (see README). Name: "preshuffled_sm90". */
  FP8GEMM_LAYOUT_PRESHUFFLED_SM90 = 2,
  /* AITER's (16,16) shuffle for AMD's bpreshuffle kernel; needs N % 16 == 0
   * and K % 32 == 0. No kernel here computes from it except the reference.
   * Name: "aiter16x16". */
  FP8GEMM_LAYOUT_AITER16X16 = 3
} fp8gemm_layout;

#define FP8GEMM_LAYOUT_COUNT 4

FP8GEMM_API const char *fp8gemm_layout_name(fp8gemm_layout layout);
/* Parses a layout name. "preshuffled" is not accepted here (it depends on a
 * backend: see fp8gemm_context_preshuffled_layout). */
FP8GEMM_API fp8gemm_status fp8gemm_layout_from_name(const char *name, fp8gemm_layout *layout);

/* Layout of an activation scale [M, ceil(K/128)]:
 *  ROW_MAJOR: scale(m, g) at m * ld + g, ld >= ceil(K/128)
 *  M_MAJOR:   scale(m, g) at g * ld + m, ld >= M   (what AMD's preshuffled
 *             kernel and cuBLASLt's 1x128 blockwise scaling read) */
typedef enum fp8gemm_scale_layout {
  FP8GEMM_SCALE_ROW_MAJOR = 0,
  FP8GEMM_SCALE_M_MAJOR = 1
} fp8gemm_scale_layout;

typedef enum fp8gemm_backend {
  FP8GEMM_BACKEND_CPU = 0,
  FP8GEMM_BACKEND_CUDA = 1,
  FP8GEMM_BACKEND_AUTO = 2 /* CUDA when built in and a Hopper GPU is present, else CPU */
} fp8gemm_backend;

FP8GEMM_API const char *fp8gemm_backend_name(fp8gemm_backend backend);
/* 1 when the backend is built in and usable on this machine. */
FP8GEMM_API int fp8gemm_backend_available(fp8gemm_backend backend);

/* Where a pointer handed to the library lives. */
typedef enum fp8gemm_memory {
  FP8GEMM_MEMORY_HOST = 0,
  FP8GEMM_MEMORY_DEVICE = 1
} fp8gemm_memory;

/* ------------------------------------------------------------------------ */
/* Backend memory (so C callers of the CUDA backend need not link cudart)   */
/* ------------------------------------------------------------------------ */

typedef struct fp8gemm_context fp8gemm_context;

typedef enum fp8gemm_copy_kind {
  FP8GEMM_COPY_HOST_TO_BACKEND = 0,
  FP8GEMM_COPY_BACKEND_TO_HOST = 1,
  FP8GEMM_COPY_BACKEND_TO_BACKEND = 2
} fp8gemm_copy_kind;

/* Memory of the context's backend (host memory on the CPU, device memory on
 * CUDA), aligned to 64 bytes at least. */
FP8GEMM_API fp8gemm_status fp8gemm_memory_alloc(fp8gemm_context *context, size_t bytes,
                                                void **ptr);
FP8GEMM_API void fp8gemm_memory_free(fp8gemm_context *context, void *ptr);
/* Synchronous with respect to the host (waits for the context's stream). */
FP8GEMM_API fp8gemm_status fp8gemm_memory_copy(fp8gemm_context *context, void *dst,
                                               const void *src, size_t bytes,
                                               fp8gemm_copy_kind kind);

/* ------------------------------------------------------------------------ */
/* FP8 codecs (scalar and bulk; exact for all 256 codes)                    */
/* ------------------------------------------------------------------------ */

/* Encode: round to nearest even, saturate to +-max (also +-Inf), NaN -> NaN
 * (e4m3fn: 0x7F or 0xFF with the sign; e4m3fnuz: 0x80). e4m3fnuz has no
 * negative zero: -0 encodes to 0x00. */
FP8GEMM_API uint8_t fp8gemm_e4m3fn_from_float(float value);
FP8GEMM_API float fp8gemm_e4m3fn_to_float(uint8_t code);
FP8GEMM_API uint8_t fp8gemm_e4m3fnuz_from_float(float value);
FP8GEMM_API float fp8gemm_e4m3fnuz_to_float(uint8_t code);

/* 16-bit float helpers used at the API boundary (round to nearest even). */
FP8GEMM_API uint16_t fp8gemm_bf16_from_float(float value);
FP8GEMM_API float fp8gemm_bf16_to_float(uint16_t bits);
FP8GEMM_API uint16_t fp8gemm_f16_from_float(float value);
FP8GEMM_API float fp8gemm_f16_to_float(uint16_t bits);

/* ------------------------------------------------------------------------ */
/* Context                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct fp8gemm_context_options {
  fp8gemm_backend backend;      /* default FP8GEMM_BACKEND_CPU */
  int num_threads;              /* CPU: 0 = FP8GEMM_NUM_THREADS or all cores */
  const char *isa;              /* CPU: NULL = FP8GEMM_ISA or detected; "generic", "avx2" */
  int cuda_device;              /* CUDA: device ordinal (default 0) */
  void *cuda_stream;            /* CUDA: cudaStream_t (NULL = default stream) */
  const char *tuned_table_path; /* NULL = FP8GEMM_TUNED, else the shipped table */
} fp8gemm_context_options;

/* Fills the defaults above. */
FP8GEMM_API void fp8gemm_context_options_init(fp8gemm_context_options *options);

/* options may be NULL (all defaults). */
FP8GEMM_API fp8gemm_status fp8gemm_context_create(const fp8gemm_context_options *options,
                                                  fp8gemm_context **context);
FP8GEMM_API void fp8gemm_context_destroy(fp8gemm_context *context);

FP8GEMM_API fp8gemm_backend fp8gemm_context_backend(const fp8gemm_context *context);
/* "avx2", "generic" for the CPU; the device name for CUDA. */
FP8GEMM_API const char *fp8gemm_context_device(const fp8gemm_context *context);
FP8GEMM_API int fp8gemm_context_num_threads(const fp8gemm_context *context);
/* The layout that "preshuffled" means on this context's backend. */
FP8GEMM_API fp8gemm_layout fp8gemm_context_preshuffled_layout(const fp8gemm_context *context);
/* CUDA: the stream later calls run on (NULL = default stream). */
FP8GEMM_API fp8gemm_status fp8gemm_context_set_stream(fp8gemm_context *context, void *cuda_stream);
/* Waits for all work queued on the context (no-op on the CPU). */
FP8GEMM_API fp8gemm_status fp8gemm_context_synchronize(fp8gemm_context *context);

/* The layout the context's tuned table assigns to a weight of (N, K), after
 * the rules in README ("Tuned table"); always a layout the backend has
 * kernels for. */
FP8GEMM_API fp8gemm_status fp8gemm_context_choose_layout(const fp8gemm_context *context,
                                                         size_t N, size_t K,
                                                         fp8gemm_layout *layout);

/* ------------------------------------------------------------------------ */
/* Quantization (on the context's backend; pointers in its memory)         */
/* ------------------------------------------------------------------------ */

/* Activations 1x128: x [M, K] (row stride ldx) in f32/bf16/f16 to e4m3fn
 * xq [M, K] (row stride ldq) and fp32 scales in the asked layout:
 *   s(m, g) = max(amax(x[m, 128g : 128g+128]), 1e-10) / 448,
 *   xq = saturate(round(x / s)).
 * K must be a multiple of 16; a last group narrower than 128 is allowed.
 * A group holding NaN or +-Inf gets scale NaN (its row's outputs become
 * NaN, never a silently finite value) and its codes are NaN. */
FP8GEMM_API fp8gemm_status fp8gemm_quantize_activations(
    fp8gemm_context *context, size_t M, size_t K, fp8gemm_dtype x_dtype, const void *x,
    size_t ldx, uint8_t *xq, size_t ldq, float *x_scale, fp8gemm_scale_layout scale_layout,
    size_t scale_ld);

/* Weights 128x128: w [N, K] (row stride ldw) in f32/bf16/f16 to e4m3fn wq
 * [N, K] row-major (plain) and weight_scale_inv [ceil(N/128), ceil(K/128)]
 * row-major; s = max(amax(block), 1e-10) / 448. Partial last blocks on N
 * and K. Non-finite input is refused (FP8GEMM_ERROR_INVALID_ARGUMENT). */
FP8GEMM_API fp8gemm_status fp8gemm_quantize_weight(fp8gemm_context *context, size_t N,
                                                   size_t K, fp8gemm_dtype w_dtype,
                                                   const void *w, size_t ldw, uint8_t *wq,
                                                   float *weight_scale_inv);

/* ------------------------------------------------------------------------ */
/* Layouts                                                                   */
/* ------------------------------------------------------------------------ */

/* FP8GEMM_OK when a weight [N, K] can take this layout. */
FP8GEMM_API fp8gemm_status fp8gemm_layout_check(fp8gemm_layout layout, size_t N, size_t K);

/* Byte offset of element (n, k) of a weight [N, K] stored in `layout`
 * (SIZE_MAX if the shape does not fit the layout or (n, k) is outside). */
FP8GEMM_API size_t fp8gemm_layout_offset(fp8gemm_layout layout, size_t N, size_t K, size_t n,
                                         size_t k);

/* Reorders a 1-byte weight [N, K] from one layout into another on the
 * context's backend (in parallel). src == dst is allowed (in place). */
FP8GEMM_API fp8gemm_status fp8gemm_shuffle(fp8gemm_context *context, size_t N, size_t K,
                                           fp8gemm_layout from, const uint8_t *src,
                                           fp8gemm_layout to, uint8_t *dst);

/* ------------------------------------------------------------------------ */
/* Weights                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct fp8gemm_weight fp8gemm_weight;

/* Layout request at creation. */
#define FP8GEMM_LAYOUT_AUTO (-1) /* the tuned table decides */

typedef struct fp8gemm_weight_desc {
  size_t N, K;                 /* weight [N, K]; K % 16 == 0 */
  fp8gemm_dtype dtype;         /* FP8GEMM_DTYPE_E4M3FN */
  const void *data;            /* N*K bytes in `layout` */
  fp8gemm_layout layout;       /* the order `data` is in (default plain) */
  fp8gemm_memory memory;       /* where data, scale_inv and bias live */
  const float *scale_inv;      /* [ceil(N/128), ceil(K/128)] row-major, finite, > 0 */
  const void *bias;            /* optional [N] */
  fp8gemm_dtype bias_dtype;    /* f32, bf16 or f16 */
  int target_layout;           /* FP8GEMM_LAYOUT_AUTO or an fp8gemm_layout to force */
} fp8gemm_weight_desc;

FP8GEMM_API void fp8gemm_weight_desc_init(fp8gemm_weight_desc *desc);

/* Creates a weight handle that owns a copy of the bytes, reordered into the
 * target layout (host data is uploaded once on the CUDA backend). */
FP8GEMM_API fp8gemm_status fp8gemm_weight_create(fp8gemm_context *context,
                                                 const fp8gemm_weight_desc *desc,
                                                 fp8gemm_weight **weight);

/* Like fp8gemm_weight_create, but the bytes stay in the caller's buffer
 * (`data` must point to memory of the context's backend and outlive the
 * handle): it is reordered there, in place, once, what the seed does at
 * model load. A buffer already in the target layout is used as is, never
 * shuffled twice. Scales and bias are copied. The buffer must not be
 * written while the handle lives: on CUDA a forward may start reading the
 * weight before the kernel ahead of it in the stream has finished. */
FP8GEMM_API fp8gemm_status fp8gemm_weight_create_in_place(fp8gemm_context *context,
                                                          const fp8gemm_weight_desc *desc,
                                                          void *data,
                                                          fp8gemm_weight **weight);

FP8GEMM_API void fp8gemm_weight_destroy(fp8gemm_weight *weight);

FP8GEMM_API fp8gemm_layout fp8gemm_weight_layout(const fp8gemm_weight *weight);
FP8GEMM_API size_t fp8gemm_weight_n(const fp8gemm_weight *weight);
FP8GEMM_API size_t fp8gemm_weight_k(const fp8gemm_weight *weight);
FP8GEMM_API fp8gemm_backend fp8gemm_weight_backend(const fp8gemm_weight *weight);
/* The bytes as the kernels read them (device pointer on CUDA). */
FP8GEMM_API const void *fp8gemm_weight_data(const fp8gemm_weight *weight);

/* Writes the weight's bytes into `dst` (N*K bytes, host memory) in any
 * layout; exporting to the layout it came in is bit-exact. */
FP8GEMM_API fp8gemm_status fp8gemm_weight_export(const fp8gemm_weight *weight,
                                                 fp8gemm_layout layout, void *dst);

/* ------------------------------------------------------------------------ */
/* Forward                                                                   */
/* ------------------------------------------------------------------------ */

/* Workspace bytes fp8gemm_linear / fp8gemm_gemm need for M rows; a caller
 * that passes at least this much makes the call allocation-free. */
FP8GEMM_API fp8gemm_status fp8gemm_linear_workspace_size(const fp8gemm_context *context,
                                                         const fp8gemm_weight *weight, size_t M,
                                                         size_t *bytes);

/* y [M, N] = quantize_1x128(x [M, K]) * W^T (+ bias).
 * x_dtype: f32, bf16 or f16; y_dtype: f32, bf16, f16, or -1 for x's dtype.
 * Pointers are in the context's backend memory. workspace may be NULL. */
FP8GEMM_API fp8gemm_status fp8gemm_linear(fp8gemm_context *context, const fp8gemm_weight *weight,
                                          size_t M, fp8gemm_dtype x_dtype, const void *x,
                                          size_t ldx, int y_dtype, void *y, size_t ldy,
                                          void *workspace, size_t workspace_bytes);

/* The pre-quantized path: xq [M, K] e4m3fn (row stride ldq) with its scale
 * in the described layout; converted only if the kernel reads the other. */
FP8GEMM_API fp8gemm_status fp8gemm_gemm(fp8gemm_context *context, const fp8gemm_weight *weight,
                                        size_t M, const uint8_t *xq, size_t ldq,
                                        const float *x_scale, fp8gemm_scale_layout scale_layout,
                                        size_t scale_ld, fp8gemm_dtype y_dtype, void *y,
                                        size_t ldy, void *workspace, size_t workspace_bytes);

/* The oracle: scalar, fp64 accumulation, host memory, any weight layout
 * (read through fp8gemm_layout_offset), bias optional (fp32 or NULL).
 * y [M, N] in double, row stride ldy. */
FP8GEMM_API fp8gemm_status fp8gemm_gemm_reference(size_t M, size_t N, size_t K,
                                                  const uint8_t *xq, size_t ldq,
                                                  const float *x_scale,
                                                  fp8gemm_scale_layout scale_layout,
                                                  size_t scale_ld, const uint8_t *w,
                                                  fp8gemm_layout w_layout,
                                                  const float *weight_scale_inv,
                                                  const float *bias, double *y, size_t ldy);

/* ------------------------------------------------------------------------ */
/* Checkpoints (safetensors)                                                 */
/* ------------------------------------------------------------------------ */

/* safetensors: 8 bytes little-endian header length L, L bytes of JSON
 * {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]},
 *  "__metadata__": {"key": "value", ..}}, then the data section; offsets are
 * relative to the data section.
 *
 * The reader maps the file and validates all of it before handing anything
 * out: L <= 100,000,000 and L <= file size - 8; the JSON is one object
 * without duplicate keys; each tensor entry has exactly the fields dtype (a
 * known name), shape (non-negative integers, rank <= FP8GEMM_ST_MAX_RANK)
 * and data_offsets ([begin, end], begin <= end); product(shape) x element
 * size == end - begin; the spans cover the data section exactly, without
 * overlap, hole or trailing byte (as the format's specification demands);
 * __metadata__ maps strings to strings. Errors are FP8GEMM_ERROR_PARSE
 * (FP8GEMM_ERROR_IO for the file system) with a message naming the tensor
 * and field at fault.
 *
 * fp8gemm's metadata convention (keys in __metadata__):
 *   "fp8gemm.format": "fp8_e4m3fn_block128"  (FP8GEMM_ST_FORMAT_BLOCK128)
 *   "fp8gemm.block":  "128,128"
 *   "fp8gemm.layout.<tensor name>": "plain" | "preshuffled_cpu" |
 *        "preshuffled_sm90" | "aiter16x16"   (absent = plain)
 * An FP8 block weight X is the tensors X.weight (F8_E4M3 [N, K], in the
 * recorded layout), X.weight_scale_inv (F32 [ceil(N/128), ceil(K/128)]) and
 * optionally X.bias ([N], F32/BF16/F16), as in DeepSeek-V3 checkpoints. */

#define FP8GEMM_ST_MAX_RANK 16
#define FP8GEMM_ST_MAX_HEADER_BYTES 100000000u
#define FP8GEMM_ST_META_FORMAT "fp8gemm.format"
#define FP8GEMM_ST_FORMAT_BLOCK128 "fp8_e4m3fn_block128"
#define FP8GEMM_ST_META_BLOCK "fp8gemm.block"
#define FP8GEMM_ST_BLOCK128 "128,128"
#define FP8GEMM_ST_META_LAYOUT_PREFIX "fp8gemm.layout."

/* Element types of safetensors (the names are the format's). */
typedef enum fp8gemm_st_dtype {
  FP8GEMM_ST_BOOL = 0,
  FP8GEMM_ST_U8,
  FP8GEMM_ST_I8,
  FP8GEMM_ST_F8_E5M2,
  FP8GEMM_ST_F8_E4M3,
  FP8GEMM_ST_F8_E8M0,
  FP8GEMM_ST_I16,
  FP8GEMM_ST_U16,
  FP8GEMM_ST_F16,
  FP8GEMM_ST_BF16,
  FP8GEMM_ST_I32,
  FP8GEMM_ST_U32,
  FP8GEMM_ST_F32,
  FP8GEMM_ST_I64,
  FP8GEMM_ST_U64,
  FP8GEMM_ST_F64
} fp8gemm_st_dtype;

#define FP8GEMM_ST_DTYPE_COUNT 16

/* "F8_E4M3", ...; NULL for a value outside the enum. */
FP8GEMM_API const char *fp8gemm_st_dtype_name(fp8gemm_st_dtype dtype);
/* Bytes per element; 0 for a value outside the enum. */
FP8GEMM_API size_t fp8gemm_st_dtype_size(fp8gemm_st_dtype dtype);
FP8GEMM_API fp8gemm_status fp8gemm_st_dtype_from_name(const char *name, fp8gemm_st_dtype *dtype);

/* A read-only view of one tensor of an open file; valid until the file is
 * closed. `data` points into the mapping and is not necessarily aligned to
 * the element size. */
typedef struct fp8gemm_tensor_view {
  const char *name;
  fp8gemm_st_dtype dtype;
  size_t rank;
  const size_t *shape; /* rank entries */
  size_t elements;     /* product of shape (1 for rank 0) */
  const void *data;
  size_t offset; /* from the start of the data section */
  size_t bytes;
} fp8gemm_tensor_view;

typedef struct fp8gemm_safetensors fp8gemm_safetensors;

/* Maps and validates a file (read-only, never modified). The file must not
 * be truncated by anyone while it is open (that would fault on access). */
FP8GEMM_API fp8gemm_status fp8gemm_safetensors_open(const char *path, fp8gemm_safetensors **file);
/* The same over bytes in memory, which must outlive the handle. */
FP8GEMM_API fp8gemm_status fp8gemm_safetensors_open_memory(const void *bytes, size_t size,
                                                           fp8gemm_safetensors **file);
FP8GEMM_API void fp8gemm_safetensors_close(fp8gemm_safetensors *file);

/* Tensors in file order (increasing offsets). */
FP8GEMM_API size_t fp8gemm_safetensors_count(const fp8gemm_safetensors *file);
FP8GEMM_API fp8gemm_status fp8gemm_safetensors_tensor(const fp8gemm_safetensors *file,
                                                      size_t index, fp8gemm_tensor_view *view);
/* 1 when a tensor of that name exists, else 0 (also for NULL arguments). */
FP8GEMM_API int fp8gemm_safetensors_contains(const fp8gemm_safetensors *file, const char *name);
/* FP8GEMM_ERROR_INVALID_ARGUMENT naming the tensor when there is none. */
FP8GEMM_API fp8gemm_status fp8gemm_safetensors_find(const fp8gemm_safetensors *file,
                                                    const char *name, fp8gemm_tensor_view *view);

/* __metadata__ entries, in the file's order. */
FP8GEMM_API size_t fp8gemm_safetensors_metadata_count(const fp8gemm_safetensors *file);
FP8GEMM_API fp8gemm_status fp8gemm_safetensors_metadata_at(const fp8gemm_safetensors *file,
                                                           size_t index, const char **key,
                                                           const char **value);
/* The value for a key, or NULL when absent. */
FP8GEMM_API const char *fp8gemm_safetensors_metadata(const fp8gemm_safetensors *file,
                                                     const char *key);

/* The layout recorded for a tensor ("fp8gemm.layout.<name>"; plain when
 * absent); FP8GEMM_ERROR_PARSE for an unknown layout name. */
FP8GEMM_API fp8gemm_status fp8gemm_safetensors_tensor_layout(const fp8gemm_safetensors *file,
                                                             const char *name,
                                                             fp8gemm_layout *layout);

/* Writer: collects tensors and metadata, then writes the whole file at once
 * and atomically: a temporary file in the destination's folder, fsync,
 * rename over the destination, fsync of the folder. On any failure nothing
 * is left at the destination or beside it (an existing destination is kept
 * as it was) and the message says which step failed and why. Tensors are
 * written in the order they were added. */
typedef struct fp8gemm_safetensors_writer fp8gemm_safetensors_writer;

/* Fills `bytes` bytes of a tensor's data at `dst` when the file is written.
 * An error status stops the write; the writer's message names the tensor
 * and quotes fp8gemm_last_error() as the callback left it. */
typedef fp8gemm_status (*fp8gemm_tensor_fill_fn)(void *user, void *dst, size_t bytes);

FP8GEMM_API fp8gemm_status fp8gemm_safetensors_writer_create(fp8gemm_safetensors_writer **writer);
FP8GEMM_API void fp8gemm_safetensors_writer_destroy(fp8gemm_safetensors_writer *writer);
/* Adds or replaces a __metadata__ entry; value NULL removes the key. */
FP8GEMM_API fp8gemm_status fp8gemm_safetensors_writer_set_metadata(
    fp8gemm_safetensors_writer *writer, const char *key, const char *value);
/* A tensor whose bytes (product(shape) x element size) are read from `data`
 * at write time: `data` must stay valid until then. Names are unique and
 * not "__metadata__". */
FP8GEMM_API fp8gemm_status fp8gemm_safetensors_writer_add(fp8gemm_safetensors_writer *writer,
                                                          const char *name, fp8gemm_st_dtype dtype,
                                                          size_t rank, const size_t *shape,
                                                          const void *data);
/* A tensor whose bytes a callback produces at write time (into a buffer
 * the writer owns), so a converted checkpoint never holds all of its
 * output in memory. */
FP8GEMM_API fp8gemm_status fp8gemm_safetensors_writer_add_deferred(
    fp8gemm_safetensors_writer *writer, const char *name, fp8gemm_st_dtype dtype, size_t rank,
    const size_t *shape, fp8gemm_tensor_fill_fn fill, void *user);
FP8GEMM_API fp8gemm_status fp8gemm_safetensors_writer_write(fp8gemm_safetensors_writer *writer,
                                                            const char *path);

/* Creates a weight handle from the tensors <name>.weight (F8_E4M3 [N, K]),
 * <name>.weight_scale_inv (F32 [ceil(N/128), ceil(K/128)]) and, when
 * present, <name>.bias ([N], F32/BF16/F16) of an open file. The bytes are
 * read in the layout recorded in __metadata__ and put in the layout the
 * context's tuned table picks (fp8gemm_weight_create), so a checkpoint
 * shuffled for this backend by the same table is copied, not reordered.
 * A file whose fp8gemm.format / fp8gemm.block say another format is
 * refused (FP8GEMM_ERROR_UNSUPPORTED). */
FP8GEMM_API fp8gemm_status fp8gemm_weight_create_from_safetensors(
    fp8gemm_context *context, const fp8gemm_safetensors *file, const char *name,
    fp8gemm_weight **weight);

#ifdef __cplusplus
}
#endif

#endif /* FP8GEMM_H */
