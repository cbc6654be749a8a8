/* Shared between the CUDA backend's files: the backend state and the host
 * launchers of each kernel family. Not installed, not seen by the core. */
#ifndef FP8GEMM_CUDA_INTERNAL_H
#define FP8GEMM_CUDA_INTERNAL_H

#include <cuda.h>
#include <cuda_runtime.h>

#include "core/internal.h"

/* Split-K tile counters kept in the context (zeroed once, each reset by the
 * CTA that consumes it), enough for every split launch: a launch splits K
 * only when it has fewer column tiles than this. */
#define FP8GEMM_CUDA_SPLIT_COUNTERS 4096

/* Largest M one small-M launch covers (16 n8 tiles of the mma). */
#define FP8GEMM_CUDA_SMALL_M_MAX 128

typedef CUresult (*fp8gemm_encode_tiled_fn)(CUtensorMap *, CUtensorMapDataType, cuuint32_t,
                                            void *, const cuuint64_t *, const cuuint64_t *,
                                            const cuuint32_t *, const cuuint32_t *,
                                            CUtensorMapInterleave, CUtensorMapSwizzle,
                                            CUtensorMapL2promotion, CUtensorMapFloatOOBfill);

/* A large-M kernel configuration: tile width (128, 192, 256) and cluster
 * size (CTAs along M sharing the weight tile). bn == 0: unset. */
typedef struct fp8gemm_cuda_large_config {
  int bn, cm;
  int pipelined; /* two partials, the next batch issued before a promotion */
} fp8gemm_cuda_large_config;

typedef struct fp8gemm_cuda_state {
  int device;
  cudaStream_t stream;
  char name[256];
  int sm_count;
  size_t smem_per_block_optin;
  unsigned int *split_counters; /* device, FP8GEMM_CUDA_SPLIT_COUNTERS, zero between launches */
  int *error_flag;              /* device scratch for load-time checks */
  unsigned long long *first_bad_index; /* device scratch for check_weight_codes */
  fp8gemm_encode_tiled_fn encode_tiled; /* cuTensorMapEncodeTiled through the runtime */
  size_t fused_max_m;           /* FP8GEMM_CUDA_FUSED_MAX_M: one launch for M <= this; 0 = off */
  int fused_forced;             /* that value was set (else the measured rule, see cuda_linear_fused) */
  size_t forced_crossover_m;    /* FP8GEMM_CUDA_CROSSOVER, or FP8GEMM_CROSSOVER_DEFAULT when unset */
  fp8gemm_cuda_large_config large_config; /* FP8GEMM_CUDA_LARGE_CONFIG forces one (benchmarks) */
  int large_max_clusters;       /* clusters of 2 large-M CTAs resident at once */
  int large_group_m;            /* FP8GEMM_CUDA_GROUP_M: M-blocks per rasterization group */
  int large_variant;            /* FP8GEMM_CUDA_LARGE_VARIANT: benchmark switch */
  int split_min_k_groups;       /* large-M K split only from this many K groups (FP8GEMM_CUDA_SPLIT_MIN_GROUPS) */
  int large_pipelined;          /* FP8GEMM_CUDA_LARGE_PIPE: 1 every large-M launch pipelined, 0 none, -1 built-in */
  int small_registers;          /* FP8GEMM_CUDA_SMALL_KERNEL=registers: the older small-M kernel */
  int overlap_launches;         /* decode GEMM with programmatic dependent launch (FP8GEMM_CUDA_PDL=0: off) */
  int stream_max_clusters[9];   /* [P], P = 2..8: clusters of P decode CTAs resident at once */
  unsigned long long *trace;    /* device, the decode kernels' timestamps (diagnostics only) */
  size_t trace_entries;
} fp8gemm_cuda_state;

#ifdef __cplusplus
extern "C" {
#endif

fp8gemm_status fp8gemm_cuda_check(cudaError_t err, const char *what);
#define FP8GEMM_CUDA_TRY(call, what) FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_check((call), (what)))
fp8gemm_status fp8gemm_cuda_make_current(const fp8gemm_cuda_state *state);
/* Trace probes (FP8GEMM_CUDA_STREAM_TRACE, _SLICE_TRACE): host[c * slots
 * + e] is CTA c's stamp of event e (0: none). Prints, on stderr, " | name
 * lo/mean/hi" for each event of `order`, in us from the earliest stamp of
 * event 0, over the CTAs that stamped it; returns that origin. */
unsigned long long fp8gemm_cuda_print_trace_events(const unsigned long long *host, int ctas,
                                                   int slots, const int *order,
                                                   const char *const *names, int count);
/* The context's trace buffer of at least `entries` stamps, zeroed on its
 * stream (allocated on first use, grown when a launch needs more). */
fp8gemm_status fp8gemm_cuda_trace_buffer(fp8gemm_cuda_state *s, size_t entries,
                                         unsigned long long **buffer);
/* How many clusters of `cluster` CTAs of kernel `fn` (threads, dynamic
 * shared memory smem) the device holds at once, into *clusters; `what`
 * names the kernel in the error message. */
fp8gemm_status fp8gemm_cuda_max_active_clusters(const fp8gemm_cuda_state *s, const void *fn,
                                                int threads, size_t smem, int cluster,
                                                int *clusters, const char *what);
/* A kernel launch as the backend makes them: on the state's stream, with
 * programmatic dependent launch unless FP8GEMM_CUDA_PDL=0, in clusters of
 * `cluster` CTAs along x when cluster > 1, cooperative when asked. The
 * config points at the struct's own attributes: fill it in place and pass
 * &launch.config to cudaLaunchKernelEx; never copy it. */
typedef struct fp8gemm_cuda_launch {
  cudaLaunchConfig_t config;
  cudaLaunchAttribute attrs[3];
} fp8gemm_cuda_launch;
void fp8gemm_cuda_launch_init(fp8gemm_cuda_launch *launch, const fp8gemm_cuda_state *s,
                              unsigned grid, unsigned block, size_t smem, unsigned cluster,
                              int cooperative);

/* quantize.cu */
fp8gemm_status fp8gemm_cuda_quantize_activations(fp8gemm_cuda_state *s, size_t M, size_t K,
                                                 fp8gemm_dtype x_dtype, const void *x, size_t ldx,
                                                 uint8_t *xq, size_t ldq, float *x_scale,
                                                 fp8gemm_scale_layout scale_layout,
                                                 size_t scale_ld);
fp8gemm_status fp8gemm_cuda_quantize_weight(fp8gemm_cuda_state *s, size_t N, size_t K,
                                            fp8gemm_dtype w_dtype, const void *w, size_t ldw,
                                            uint8_t *wq, float *weight_scale_inv);
fp8gemm_status fp8gemm_cuda_check_weight_codes(fp8gemm_cuda_state *s, const uint8_t *data,
                                               size_t N, size_t K);
fp8gemm_status fp8gemm_cuda_shuffle(fp8gemm_cuda_state *s, size_t N, size_t K,
                                    fp8gemm_layout from, const uint8_t *src, fp8gemm_layout to,
                                    uint8_t *dst);
fp8gemm_status fp8gemm_cuda_convert_scales(fp8gemm_cuda_state *s, size_t M, size_t groups,
                                           const float *src, fp8gemm_scale_layout src_layout,
                                           size_t src_ld, float *dst,
                                           fp8gemm_scale_layout dst_layout, size_t dst_ld);

/* What both GEMM families get: the weight and one forward's operands. The
 * activation is either pre-quantized (xq + x_scale at (m, g) ->
 * m*scale_stride_m + g*scale_stride_g) or, for the fused small-M path,
 * raw (x of x_dtype). */
typedef struct fp8gemm_cuda_problem {
  size_t M, N, K;
  const uint8_t *w;
  int w_preshuffled;
  const float *w_scale;
  const float *bias;
  const uint8_t *xq;
  size_t ldq;
  const float *x_scale;
  size_t scale_stride_m, scale_stride_g;
  const void *x;
  size_t ldx;
  fp8gemm_dtype x_dtype;
  int fused;
  void *y;
  size_t ldy;
  fp8gemm_dtype y_dtype;
} fp8gemm_cuda_problem;

/* gemm_large.cu: TMA + wgmma, warp-specialized, persistent. 1 when the
 * problem's pointers and strides suit the tensor-memory engine. */
int fp8gemm_cuda_large_supported(const fp8gemm_cuda_problem *p);
/* Shared-memory limits of every instantiation, clusters per device. */
fp8gemm_status fp8gemm_cuda_large_prepare(fp8gemm_cuda_state *s);
/* "BN[p][/CMx1]" (e.g. "256", "192p", "192/2x1") -> a built config; 0 otherwise. */
int fp8gemm_cuda_parse_large_config(const char *text, fp8gemm_cuda_large_config *out);
/* The configs that parse, comma-separated (for error messages). */
void fp8gemm_cuda_large_config_names(char *buf, size_t size);
/* Split-K partials when the launch has fewer tiles than SMs. */
size_t fp8gemm_cuda_large_workspace(const fp8gemm_cuda_state *s, size_t M, size_t N, size_t K);
fp8gemm_status fp8gemm_cuda_gemm_large(fp8gemm_cuda_state *s, const fp8gemm_cuda_problem *p,
                                       void *workspace, size_t workspace_bytes);

/* gemm_small.cu: weight streamed once into registers, mma.sync, split-K. */
size_t fp8gemm_cuda_small_workspace(const fp8gemm_cuda_state *s, size_t M, size_t N, size_t K);
fp8gemm_status fp8gemm_cuda_gemm_small(fp8gemm_cuda_state *s, const fp8gemm_cuda_problem *p,
                                       void *workspace, size_t workspace_bytes);

/* A 2-D tensor map of a row-major [outer][inner] array (row_bytes apart) for
 * tensor copies of box_inner x box_rows elements with the 128B swizzle;
 * `what` names the operand in the error message. */
fp8gemm_status fp8gemm_cuda_encode_2d(const fp8gemm_cuda_state *s, CUtensorMap *map,
                                      CUtensorMapDataType type, const void *base, size_t inner,
                                      size_t outer, size_t row_bytes, unsigned box_inner,
                                      unsigned box_rows, const char *what);

/* gemm_stream.cu: decode kernel, 16 KiB weight tiles through a TMA ring into
 * wgmma, K split across CTAs for few rows. Needs 16-byte aligned operands
 * (else the small kernel serves). */
int fp8gemm_cuda_stream_supported(const fp8gemm_cuda_state *s, const fp8gemm_cuda_problem *p);
size_t fp8gemm_cuda_stream_workspace(const fp8gemm_cuda_state *s, size_t M, size_t N, size_t K);
/* Activation groups (rows x K groups) one CTA of the fused decode kernel
 * quantizes before its first tile. */
size_t fp8gemm_cuda_stream_fused_items(const fp8gemm_cuda_state *s, size_t M, size_t N, size_t K);
fp8gemm_status fp8gemm_cuda_stream_prepare(fp8gemm_cuda_state *s);
fp8gemm_status fp8gemm_cuda_gemm_stream(fp8gemm_cuda_state *s, const fp8gemm_cuda_problem *p,
                                        void *workspace, size_t workspace_bytes);

/* gemm_slice.cu: decode kernels by row slices (M <= 64): S weight rows a CTA
 * over the whole of K, no row cut between CTAs, no workspace; or panels of
 * 64 rows (the weight as wgmma's A) whose K steps a cluster's CTAs share. */
int fp8gemm_cuda_slice_supported(const fp8gemm_cuda_state *s, const fp8gemm_cuda_problem *p);
/* Whether the panels serve this launch by default (where the measurements
 * put them ahead of the other decode kernels). */
int fp8gemm_cuda_panels_preferred(const fp8gemm_cuda_state *s, const fp8gemm_cuda_problem *p);
/* Rows a CTA takes for N (0: no kernel covers N in one wave). */
int fp8gemm_cuda_slice_rows(const fp8gemm_cuda_state *s, size_t N);
/* The ring a launch of slice width S gets for activation tiles of x_rows
 * rows and `groups` K groups (want_stages > 0: at most that many, and at
 * least the two the consumers need): its
 * stages (0: none fits) and, in *smem_bytes, the dynamic shared memory it
 * needs. Host arithmetic only (tests/cuda/test_plans.c). */
int fp8gemm_cuda_slice_ring(int S, int x_rows, int groups, int want_stages, size_t *smem_bytes);
/* The ring of a panel launch (weight as A, gemm_slice.cu) for activation
 * tiles of x_rows rows and a piece of at most max_groups K groups, as
 * above; *ring_bytes its stages' bytes, *handoff_bytes what the final sums
 * take of them. */
int fp8gemm_cuda_panel_ring(int x_rows, int max_groups, int want_stages, size_t *smem_bytes,
                            size_t *ring_bytes, size_t *handoff_bytes);
fp8gemm_status fp8gemm_cuda_slice_prepare(fp8gemm_cuda_state *s);
fp8gemm_status fp8gemm_cuda_gemm_slice(fp8gemm_cuda_state *s, const fp8gemm_cuda_problem *p);

#ifdef __cplusplus
}
#endif

#endif
