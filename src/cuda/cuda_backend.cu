/* The CUDA backend (Hopper, sm_90a): context state, memory, and the
 * dispatch of each forward to the small-M or large-M kernel family. Nothing
 * in gemm/linear_fused allocates or synchronizes with the host, so a forward
 * can be captured in a CUDA graph. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

extern "C" fp8gemm_status fp8gemm_cuda_small_prepare(fp8gemm_cuda_state *s);

/* Small-M (decode) kernel for M <= this when the tuned table gives no
 * crossover (FP8GEMM_CUDA_CROSSOVER overrides it and the table, for
 * benchmarks). Measured on H100, both kernels forced, 16 shapes
 * (bench/results/cuda-h100-2026-11-25-s3.md): the decode kernel beats the
 * large-M kernel up to M = 32 on all of them, and at M = 64 wherever the
 * weight has fewer 128-row blocks than SMs (K split across CTAs: 1-45%
 * faster); with at least as many rows as SMs it lost 5-6% at M = 64 on two
 * of three shapes. */
#define DEFAULT_CROSSOVER_M 32
#define DEFAULT_CROSSOVER_M_FEW_ROWS 64

extern "C" fp8gemm_status fp8gemm_cuda_check(cudaError_t err, const char *what) {
  if (err == cudaSuccess) return FP8GEMM_OK;
  return fp8gemm_set_error(FP8GEMM_ERROR_BACKEND, "CUDA: %s: %s (%s)", what, cudaGetErrorString(err),
                           cudaGetErrorName(err));
}

extern "C" unsigned long long fp8gemm_cuda_print_trace_events(const unsigned long long *host,
                                                              int ctas, int slots,
                                                              const int *order,
                                                              const char *const *names,
                                                              int count) {
  unsigned long long origin = ~0ull;
  for (int c = 0; c < ctas; c++)
    if (host[c * slots] && host[c * slots] < origin) origin = host[c * slots];
  for (int k = 0; k < count; k++) {
    const int e = order[k];
    double lo = 1e30, hi = -1e30, sum = 0;
    int n = 0;
    for (int c = 0; c < ctas; c++) {
      if (!host[c * slots + e]) continue;
      const double us = ((double)host[c * slots + e] - (double)origin) / 1000.0;
      lo = us < lo ? us : lo;
      hi = us > hi ? us : hi;
      sum += us;
      n++;
    }
    if (n) fprintf(stderr, " | %s %.2f/%.2f/%.2f", names[e], lo, sum / n, hi);
  }
  return origin;
}

extern "C" fp8gemm_status fp8gemm_cuda_max_active_clusters(const fp8gemm_cuda_state *s,
                                                           const void *fn, int threads,
                                                           size_t smem, int cluster,
                                                           int *clusters, const char *what) {
  cudaLaunchAttribute attr;
  attr.id = cudaLaunchAttributeClusterDimension;
  attr.val.clusterDim.x = (unsigned)cluster;
  attr.val.clusterDim.y = 1;
  attr.val.clusterDim.z = 1;
  cudaLaunchConfig_t config = {};
  config.gridDim = dim3((unsigned)(cluster * s->sm_count));
  config.blockDim = dim3((unsigned)threads);
  config.dynamicSmemBytes = smem;
  config.attrs = &attr;
  config.numAttrs = 1;
  *clusters = 0;
  return fp8gemm_cuda_check(cudaOccupancyMaxActiveClusters(clusters, fn, &config), what);
}

extern "C" void fp8gemm_cuda_launch_init(fp8gemm_cuda_launch *launch, const fp8gemm_cuda_state *s,
                                         unsigned grid, unsigned block, size_t smem,
                                         unsigned cluster, int cooperative) {
  memset(launch, 0, sizeof *launch);
  cudaLaunchConfig_t *config = &launch->config;
  config->gridDim = dim3(grid);
  config->blockDim = dim3(block);
  config->dynamicSmemBytes = smem;
  config->stream = s->stream;
  config->attrs = launch->attrs;
  if (cooperative) {
    cudaLaunchAttribute *a = &launch->attrs[config->numAttrs++];
    a->id = cudaLaunchAttributeCooperative;
    a->val.cooperative = 1;
  }
  if (cluster > 1) {
    cudaLaunchAttribute *a = &launch->attrs[config->numAttrs++];
    a->id = cudaLaunchAttributeClusterDimension;
    a->val.clusterDim.x = cluster;
    a->val.clusterDim.y = 1;
    a->val.clusterDim.z = 1;
  }
  if (s->overlap_launches) {
    cudaLaunchAttribute *a = &launch->attrs[config->numAttrs++];
    a->id = cudaLaunchAttributeProgrammaticStreamSerialization;
    a->val.programmaticStreamSerializationAllowed = 1;
  }
}

extern "C" fp8gemm_status fp8gemm_cuda_trace_buffer(fp8gemm_cuda_state *s, size_t entries,
                                                    unsigned long long **buffer) {
  if (s->trace_entries < entries) {
    if (s->trace) cudaFree(s->trace);
    s->trace = NULL;
    s->trace_entries = 0;
    FP8GEMM_CUDA_TRY(cudaMalloc((void **)&s->trace, entries * sizeof(*s->trace)), "trace buffer");
    s->trace_entries = entries;
  }
  FP8GEMM_CUDA_TRY(cudaMemsetAsync(s->trace, 0, entries * sizeof(*s->trace), s->stream),
                   "trace buffer");
  *buffer = s->trace;
  return FP8GEMM_OK;
}

static size_t crossover_of(const fp8gemm_cuda_state *s, const fp8gemm_weight *w);

extern "C" fp8gemm_status fp8gemm_cuda_encode_2d(const fp8gemm_cuda_state *s, CUtensorMap *map,
                                                 CUtensorMapDataType type, const void *base,
                                                 size_t inner, size_t outer, size_t row_bytes,
                                                 unsigned box_inner, unsigned box_rows,
                                                 const char *what) {
  const cuuint64_t dims[2] = {(cuuint64_t)inner, (cuuint64_t)outer};
  const cuuint64_t strides[1] = {(cuuint64_t)row_bytes};
  const cuuint32_t box[2] = {box_inner, box_rows};
  const cuuint32_t element_strides[2] = {1, 1};
  const CUresult r = s->encode_tiled(map, type, 2, const_cast<void *>(base), dims, strides, box,
                                     element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                     CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
  if (r != CUDA_SUCCESS)
    return fp8gemm_set_error(FP8GEMM_ERROR_BACKEND,
                             "cuTensorMapEncodeTiled for %s [%zu x %zu, row %zu bytes] failed (%d)",
                             what, outer, inner, row_bytes, (int)r);
  return FP8GEMM_OK;
}

static fp8gemm_cuda_state *state_of(const fp8gemm_context *ctx) {
  return static_cast<fp8gemm_cuda_state *>(ctx->state);
}

extern "C" fp8gemm_status fp8gemm_cuda_make_current(const fp8gemm_cuda_state *s) {
  int current = -1;
  FP8GEMM_CUDA_TRY(cudaGetDevice(&current), "cudaGetDevice");
  if (current != s->device) FP8GEMM_CUDA_TRY(cudaSetDevice(s->device), "cudaSetDevice");
  return FP8GEMM_OK;
}

extern "C" int fp8gemm_cuda_usable(void) {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  for (int d = 0; d < count; d++) {
    int major = 0, minor = 0;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, d) == cudaSuccess &&
        cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, d) == cudaSuccess &&
        major == 9 && minor == 0)
      return 1;
  }
  return 0;
}

static void release_state(fp8gemm_cuda_state *s) {
  if (!s) return;
  if (s->split_counters) cudaFree(s->split_counters);
  if (s->error_flag) cudaFree(s->error_flag);
  if (s->first_bad_index) cudaFree(s->first_bad_index);
  if (s->trace) cudaFree(s->trace);
  free(s);
}

static fp8gemm_status cuda_init(fp8gemm_context *ctx, const fp8gemm_context_options *options) {
  const int device = options ? options->cuda_device : 0;
  int count = 0;
  cudaError_t err = cudaGetDeviceCount(&count);
  if (err != cudaSuccess || count == 0) {
    cudaGetLastError();
    return fp8gemm_set_error(FP8GEMM_ERROR_NO_DEVICE, "CUDA: no device visible (%s)",
                             err == cudaSuccess ? "0 devices" : cudaGetErrorString(err));
  }
  if (device < 0 || device >= count)
    return fp8gemm_set_error(FP8GEMM_ERROR_NO_DEVICE,
                             "CUDA: cuda_device=%d, but %d device(s) are visible", device, count);
  cudaDeviceProp prop;
  FP8GEMM_CUDA_TRY(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");
  if (prop.major != 9 || prop.minor != 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_NO_DEVICE,
                             "CUDA: device %d (%s) has compute capability %d.%d; the kernels are "
                             "built for 9.0 (sm_90a, Hopper)",
                             device, prop.name, prop.major, prop.minor);
  fp8gemm_cuda_state *s = static_cast<fp8gemm_cuda_state *>(calloc(1, sizeof *s));
  if (!s) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "CUDA backend state");
  s->device = device;
  s->stream = options ? static_cast<cudaStream_t>(options->cuda_stream) : NULL;
  snprintf(s->name, sizeof s->name, "%s", prop.name);
  s->sm_count = prop.multiProcessorCount;
  s->smem_per_block_optin = prop.sharedMemPerBlockOptin;
  /* fp8gemm_linear in one launch where it measured faster (see
   * cuda_linear_fused); FP8GEMM_CUDA_FUSED_MAX_M forces it on for M up to
   * that value (<= 32), or off (0): tests, benchmarks. */
  s->fused_max_m = 32;
  s->fused_forced = 0;
  const char *env = getenv("FP8GEMM_CUDA_FUSED_MAX_M");
  if (env && *env) {
    s->fused_max_m = (size_t)strtoull(env, NULL, 10);
    s->fused_forced = 1;
  }
  /* The decode and large-M GEMMs and the activation quantizer go out with
   * programmatic dependent launch: their CTAs start streaming the weight
   * (read-only while a handle lives) as the previous kernel's CTAs leave
   * the SMs, and wait for that kernel's end before reading anything it may
   * write. H200: 4096 x 7168 M = 1 9.4 us against 12.0 back to back
   * (bench/results/cuda-h200-2026-12-04-decode.md); large-M 256 x 7168 x
   * 2048 11.3 against 13.3 (...-largem-s6.md). FP8GEMM_CUDA_PDL=0 turns it
   * off. */
  env = getenv("FP8GEMM_CUDA_PDL");
  s->overlap_launches = !(env && *env == '0');
  s->forced_crossover_m = FP8GEMM_CROSSOVER_DEFAULT;
  env = getenv("FP8GEMM_CUDA_CROSSOVER");
  if (env && *env) s->forced_crossover_m = (size_t)strtoull(env, NULL, 10);
  /* Benchmark knobs of the large-M kernel (0: the built-in choice). */
  env = getenv("FP8GEMM_CUDA_LARGE_CONFIG");
  if (env && *env && !fp8gemm_cuda_parse_large_config(env, &s->large_config)) {
    free(s);
    char names[160];
    fp8gemm_cuda_large_config_names(names, sizeof names);
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "FP8GEMM_CUDA_LARGE_CONFIG=%s: expected one of %s", env, names);
  }
  env = getenv("FP8GEMM_CUDA_GROUP_M");
  if (env && *env) s->large_group_m = atoi(env);
  env = getenv("FP8GEMM_CUDA_LARGE_VARIANT");
  if (env && *env) s->large_variant = atoi(env);
  s->split_min_k_groups = 32;
  env = getenv("FP8GEMM_CUDA_SPLIT_MIN_GROUPS");
  if (env && *env) s->split_min_k_groups = atoi(env);
  env = getenv("FP8GEMM_CUDA_LARGE_PIPE");
  s->large_pipelined = env && *env ? atoi(env) != 0 : -1;
  env = getenv("FP8GEMM_CUDA_SMALL_KERNEL");
  s->small_registers = env && strcmp(env, "registers") == 0;

  fp8gemm_status status = fp8gemm_cuda_make_current(s);
  if (status == FP8GEMM_OK)
    status = fp8gemm_cuda_check(
        cudaMalloc((void **)&s->split_counters, FP8GEMM_CUDA_SPLIT_COUNTERS * sizeof(unsigned)),
        "split-K counters");
  if (status == FP8GEMM_OK)
    status = fp8gemm_cuda_check(
        cudaMemset(s->split_counters, 0, FP8GEMM_CUDA_SPLIT_COUNTERS * sizeof(unsigned)),
        "split-K counters");
  if (status == FP8GEMM_OK)
    status = fp8gemm_cuda_check(cudaMalloc((void **)&s->error_flag, sizeof(int)), "error flag");
  if (status == FP8GEMM_OK)
    status = fp8gemm_cuda_check(
        cudaMalloc((void **)&s->first_bad_index, sizeof(unsigned long long)), "check scratch");
  if (status == FP8GEMM_OK) status = fp8gemm_cuda_small_prepare(s);
  if (status == FP8GEMM_OK) status = fp8gemm_cuda_large_prepare(s);
  if (status == FP8GEMM_OK) status = fp8gemm_cuda_stream_prepare(s);
  if (status == FP8GEMM_OK) status = fp8gemm_cuda_slice_prepare(s);
  if (status == FP8GEMM_OK) status = fp8gemm_cuda_check(cudaDeviceSynchronize(), "init");
  if (status == FP8GEMM_OK) {
    /* Through the runtime, so the library does not link libcuda itself. */
    void *fn = NULL;
    cudaDriverEntryPointQueryResult query;
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &query) == cudaSuccess &&
        query == cudaDriverEntryPointSuccess)
      s->encode_tiled = reinterpret_cast<fp8gemm_encode_tiled_fn>(fn);
    else
      status = fp8gemm_set_error(FP8GEMM_ERROR_BACKEND,
                                 "CUDA: the driver does not provide cuTensorMapEncodeTiled");
  }
  if (status != FP8GEMM_OK) {
    release_state(s);
    return status;
  }
  ctx->state = s;
  return FP8GEMM_OK;
}

static void cuda_fini(fp8gemm_context *ctx) {
  fp8gemm_cuda_state *s = state_of(ctx);
  if (!s) return;
  fp8gemm_cuda_make_current(s);
  cudaStreamSynchronize(s->stream);
  release_state(s);
  ctx->state = NULL;
}

static const char *cuda_device_name(const fp8gemm_context *ctx) { return state_of(ctx)->name; }

static fp8gemm_status cuda_set_stream(fp8gemm_context *ctx, void *stream) {
  state_of(ctx)->stream = static_cast<cudaStream_t>(stream);
  return FP8GEMM_OK;
}

static fp8gemm_status cuda_synchronize(fp8gemm_context *ctx) {
  fp8gemm_cuda_state *s = state_of(ctx);
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_make_current(s));
  return fp8gemm_cuda_check(cudaStreamSynchronize(s->stream), "cudaStreamSynchronize");
}

static fp8gemm_status cuda_alloc(fp8gemm_context *ctx, size_t bytes, void **ptr) {
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_make_current(state_of(ctx)));
  const cudaError_t err = cudaMalloc(ptr, bytes ? bytes : 1);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "CUDA: cudaMalloc of %zu bytes: %s",
                             bytes, cudaGetErrorString(err));
  }
  return fp8gemm_cuda_check(err, "cudaMalloc");
}

static void cuda_free(fp8gemm_context *ctx, void *ptr) {
  if (fp8gemm_cuda_make_current(state_of(ctx)) == FP8GEMM_OK) cudaFree(ptr);
}

static fp8gemm_status cuda_copy(fp8gemm_context *ctx, void *dst, const void *src, size_t bytes,
                                int kind) {
  fp8gemm_cuda_state *s = state_of(ctx);
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_make_current(s));
  const cudaMemcpyKind k = kind == FP8GEMM_COPY_HOST_TO_BACKEND   ? cudaMemcpyHostToDevice
                           : kind == FP8GEMM_COPY_BACKEND_TO_HOST ? cudaMemcpyDeviceToHost
                                                                  : cudaMemcpyDeviceToDevice;
  FP8GEMM_CUDA_TRY(cudaMemcpyAsync(dst, src, bytes, k, s->stream), "cudaMemcpyAsync");
  return fp8gemm_cuda_check(cudaStreamSynchronize(s->stream), "copy: cudaStreamSynchronize");
}

static fp8gemm_status cuda_shuffle(fp8gemm_context *ctx, size_t N, size_t K, fp8gemm_layout from,
                                   const uint8_t *src, fp8gemm_layout to, uint8_t *dst) {
  fp8gemm_cuda_state *s = state_of(ctx);
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_make_current(s));
  return fp8gemm_cuda_shuffle(s, N, K, from, src, to, dst);
}

static fp8gemm_status cuda_check_weight_codes(fp8gemm_context *ctx, const uint8_t *data, size_t N,
                                              size_t K) {
  fp8gemm_cuda_state *s = state_of(ctx);
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_make_current(s));
  return fp8gemm_cuda_check_weight_codes(s, data, N, K);
}

static fp8gemm_status cuda_quantize_activations(fp8gemm_context *ctx, size_t M, size_t K,
                                                fp8gemm_dtype x_dtype, const void *x, size_t ldx,
                                                uint8_t *xq, size_t ldq, float *x_scale,
                                                fp8gemm_scale_layout scale_layout,
                                                size_t scale_ld) {
  fp8gemm_cuda_state *s = state_of(ctx);
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_make_current(s));
  return fp8gemm_cuda_quantize_activations(s, M, K, x_dtype, x, ldx, xq, ldq, x_scale,
                                           scale_layout, scale_ld);
}

static fp8gemm_status cuda_quantize_weight(fp8gemm_context *ctx, size_t N, size_t K,
                                           fp8gemm_dtype w_dtype, const void *w, size_t ldw,
                                           uint8_t *wq, float *weight_scale_inv) {
  fp8gemm_cuda_state *s = state_of(ctx);
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_make_current(s));
  return fp8gemm_cuda_quantize_weight(s, N, K, w_dtype, w, ldw, wq, weight_scale_inv);
}

static fp8gemm_status cuda_convert_scales(fp8gemm_context *ctx, size_t M, size_t groups,
                                          const float *src, fp8gemm_scale_layout src_layout,
                                          size_t src_ld, float *dst,
                                          fp8gemm_scale_layout dst_layout, size_t dst_ld) {
  fp8gemm_cuda_state *s = state_of(ctx);
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_make_current(s));
  return fp8gemm_cuda_convert_scales(s, M, groups, src, src_layout, src_ld, dst, dst_layout,
                                     dst_ld);
}

/* The small-M kernel serves M <= the crossover (0: never): the weight's
 * tuned-table value, the backend default when the table says nothing
 * (FP8GEMM_CROSSOVER_DEFAULT), and FP8GEMM_CUDA_CROSSOVER over both (for
 * benchmarks that force one kernel). */
static size_t crossover_of(const fp8gemm_cuda_state *s, const fp8gemm_weight *w) {
  if (s->forced_crossover_m != FP8GEMM_CROSSOVER_DEFAULT) return s->forced_crossover_m;
  if (w->crossover_m != FP8GEMM_CROSSOVER_DEFAULT) return w->crossover_m;
  return (w->N + 127) / 128 < (size_t)s->sm_count ? DEFAULT_CROSSOVER_M_FEW_ROWS
                                                  : DEFAULT_CROSSOVER_M;
}

/* Both kernel families read the scale through (m, g) strides, so either
 * layout works without a copy; M-major is asked for because the large-M
 * kernel's warps then read 8 consecutive rows per load. */
static fp8gemm_scale_layout cuda_gemm_scale_layout(const fp8gemm_context *ctx,
                                                   const fp8gemm_weight *w, size_t M) {
  (void)ctx;
  (void)w;
  (void)M;
  return FP8GEMM_SCALE_M_MAJOR;
}

static size_t cuda_gemm_workspace(const fp8gemm_context *ctx, const fp8gemm_weight *w, size_t M) {
  const fp8gemm_cuda_state *s = state_of(ctx);
  /* Split-K partials of the small-M kernel; above the crossover the large
   * kernel needs none (and the small one, serving unaligned operands there,
   * then runs unsplit). */
  if (M > crossover_of(s, w)) return fp8gemm_cuda_large_workspace(s, M, w->N, w->K);
  const size_t small = fp8gemm_cuda_small_workspace(s, M, w->N, w->K);
  const size_t stream = fp8gemm_cuda_stream_workspace(s, M, w->N, w->K);
  return small > stream ? small : stream;
}

static fp8gemm_status check_weight_layout(const fp8gemm_weight *w) {
  if (w->layout != FP8GEMM_LAYOUT_PLAIN && w->layout != FP8GEMM_LAYOUT_PRESHUFFLED_SM90)
    return fp8gemm_set_error(FP8GEMM_ERROR_LAYOUT_MISMATCH,
                             "CUDA GEMM reads weights in layout plain or preshuffled_sm90, this "
                             "weight [N=%zu, K=%zu] is %s",
                             w->N, w->K, fp8gemm_layout_name(w->layout));
  if ((uintptr_t)w->data % 16 != 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "CUDA GEMM: weight data %p is not 16-byte aligned", (void *)w->data);
  return FP8GEMM_OK;
}

static void fill_weight(fp8gemm_cuda_problem *p, const fp8gemm_weight *w) {
  memset(p, 0, sizeof *p);
  p->N = w->N;
  p->K = w->K;
  p->w = w->data;
  p->w_preshuffled = w->layout == FP8GEMM_LAYOUT_PRESHUFFLED_SM90;
  p->w_scale = w->scale_inv;
  p->bias = w->bias;
}

/* The decode kernel (gemm_stream.cu) when the operands suit the tensor engine and
 * the workspace holds its partials; else the register-streaming small
 * kernel (any alignment, runs unsplit without a workspace). */
static bool use_stream(const fp8gemm_cuda_state *s, const fp8gemm_cuda_problem *p,
                       const void *workspace, size_t workspace_bytes) {
  return !s->small_registers && fp8gemm_cuda_stream_supported(s, p) && workspace &&
         workspace_bytes >= fp8gemm_cuda_stream_workspace(s, p->M, p->N, p->K);
}
static fp8gemm_status cuda_gemm(fp8gemm_context *ctx, const fp8gemm_weight *w,
                                const fp8gemm_gemm_args *a, void *workspace,
                                size_t workspace_bytes) {
  fp8gemm_cuda_state *s = state_of(ctx);
  FP8GEMM_RETURN_IF_ERROR(check_weight_layout(w));
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_make_current(s));
  fp8gemm_cuda_problem p;
  fill_weight(&p, w);
  p.M = a->M;
  p.xq = a->xq;
  p.ldq = a->ldq;
  p.x_scale = a->x_scale;
  p.scale_stride_m = a->scale_layout == FP8GEMM_SCALE_ROW_MAJOR ? a->scale_ld : 1;
  p.scale_stride_g = a->scale_layout == FP8GEMM_SCALE_ROW_MAJOR ? 1 : a->scale_ld;
  p.y = a->y;
  p.ldy = a->ldy;
  p.y_dtype = a->y_dtype;
  if (a->M > crossover_of(s, w) && fp8gemm_cuda_large_supported(&p))
    return fp8gemm_cuda_gemm_large(s, &p, workspace, workspace_bytes);
  if (use_stream(s, &p, workspace, workspace_bytes))
    return fp8gemm_cuda_gemm_stream(s, &p, workspace, workspace_bytes);
  return fp8gemm_cuda_gemm_small(s, &p, workspace, workspace_bytes);
}

/* Quantize + GEMM in one launch for small M (the activation is quantized
 * in shared memory by each CTA); larger M goes the two-launch way. */
static fp8gemm_status cuda_linear_fused(fp8gemm_context *ctx, const fp8gemm_weight *w, size_t M,
                                        fp8gemm_dtype x_dtype, const void *x, size_t ldx,
                                        fp8gemm_dtype y_dtype, void *y, size_t ldy,
                                        void *workspace, size_t workspace_bytes) {
  fp8gemm_cuda_state *s = state_of(ctx);
  /* Each fused CTA quantizes the activation groups its range reads before
   * its first tile; up to 32 of them that costs less than the quantize
   * launch it saves (H200, both paths with programmatic dependent launch:
   * M = 1 4096 x 7168 10.7 us against 11.6, 24576 x 1536 10.2 / 13.0,
   * M = 4 32768 x 512 7.9 / 9.3; 64 groups, 7168 x 16384 M = 1: 34.1 / 31.3;
   * M = 16 4096 x 7168, 224 groups: 21.1 / 14.8;
   * bench/results/cuda-h200-2026-12-04-decode.md). */
  const bool auto_ok = s->fused_forced || fp8gemm_cuda_stream_fused_items(s, M, w->N, w->K) <= 32;
  if (M > 32 || M > s->fused_max_m || M > crossover_of(s, w) || !auto_ok)
    return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                             "fused linear: M=%zu N=%zu K=%zu goes as two launches", M, w->N,
                             w->K);
  FP8GEMM_RETURN_IF_ERROR(check_weight_layout(w));
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_cuda_make_current(s));
  fp8gemm_cuda_problem p;
  fill_weight(&p, w);
  p.M = M;
  p.fused = 1;
  p.x = x;
  p.ldx = ldx;
  p.x_dtype = x_dtype;
  p.y = y;
  p.ldy = ldy;
  p.y_dtype = y_dtype;
  if (use_stream(s, &p, workspace, workspace_bytes))
    return fp8gemm_cuda_gemm_stream(s, &p, workspace, workspace_bytes);
  /* The register kernel's fused variant (f32 x, unaligned rows) only when
   * forced: measured, not chosen. */
  if (!s->fused_forced)
    return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                             "fused linear: x of M=%zu goes as two launches", M);
  return fp8gemm_cuda_gemm_small(s, &p, workspace, workspace_bytes);
}

extern "C" const fp8gemm_backend_ops fp8gemm_cuda_backend = {
    /* name */ "cuda",
    /* preshuffled_layout */ FP8GEMM_LAYOUT_PRESHUFFLED_SM90,
    /* init */ cuda_init,
    /* fini */ cuda_fini,
    /* device_name */ cuda_device_name,
    /* num_threads */ NULL,
    /* set_stream */ cuda_set_stream,
    /* synchronize */ cuda_synchronize,
    /* alloc */ cuda_alloc,
    /* free */ cuda_free,
    /* copy */ cuda_copy,
    /* shuffle */ cuda_shuffle,
    /* check_weight_codes */ cuda_check_weight_codes,
    /* quantize_activations */ cuda_quantize_activations,
    /* quantize_weight */ cuda_quantize_weight,
    /* gemm_scale_layout */ cuda_gemm_scale_layout,
    /* gemm_workspace */ cuda_gemm_workspace,
    /* gemm */ cuda_gemm,
    /* convert_scales */ cuda_convert_scales,
    /* linear_fused */ cuda_linear_fused,
    /* shuffle_checked */ NULL, /* weights reach the GPU after the host-side check */
};
