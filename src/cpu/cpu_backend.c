/* The CPU backend: its state (thread pool, ISA, decode table), host memory,
 * and the table of entry points the core calls. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "cpu_internal.h"

#define CPU_MAX_THREADS 1024

void cpu_fill_decode_lut(float lut[256]) {
  for (int code = 0; code < 256; code++)
    lut[code] = fp8gemm_e4m3fn_to_float((uint8_t)code) * (1.0f / 256.0f); /* exact */
}

static fp8gemm_status parse_thread_count(const char *text, int *threads) {
  char *end = NULL;
  errno = 0;
  long value = strtol(text, &end, 10);
  if (errno || end == text || *end != '\0' || value < 1 || value > CPU_MAX_THREADS)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "cpu backend: FP8GEMM_NUM_THREADS='%s' must be an integer in [1, %d]",
                             text, CPU_MAX_THREADS);
  *threads = (int)value;
  return FP8GEMM_OK;
}

static fp8gemm_status choose_threads(const fp8gemm_context_options *options, int *threads) {
  if (options && options->num_threads > 0) {
    *threads = options->num_threads > CPU_MAX_THREADS ? CPU_MAX_THREADS : options->num_threads;
    return FP8GEMM_OK;
  }
  const char *env = getenv("FP8GEMM_NUM_THREADS");
  if (env && *env) return parse_thread_count(env, threads);
  long online = sysconf(_SC_NPROCESSORS_ONLN);
  *threads = online < 1 ? 1 : online > CPU_MAX_THREADS ? CPU_MAX_THREADS : (int)online;
  return FP8GEMM_OK;
}

static fp8gemm_status choose_isa(const fp8gemm_context_options *options, cpu_isa *isa) {
  const char *asked = options && options->isa ? options->isa : NULL;
  const char *source = "options->isa";
  if (!asked) {
    asked = getenv("FP8GEMM_ISA");
    source = "FP8GEMM_ISA";
    if (asked && !*asked) asked = NULL;
  }
  const bool have_avx2 = cpu_detect_avx2();
  if (!asked) {
    *isa = have_avx2 ? CPU_ISA_AVX2 : CPU_ISA_GENERIC;
    return FP8GEMM_OK;
  }
  if (!strcmp(asked, "generic")) {
    *isa = CPU_ISA_GENERIC;
    return FP8GEMM_OK;
  }
  if (!strcmp(asked, "avx2")) {
    if (!have_avx2)
      return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                               "cpu backend: %s='avx2' but this CPU (or OS) lacks AVX2, FMA, F16C "
                               "or YMM state saving",
                               source);
    *isa = CPU_ISA_AVX2;
    return FP8GEMM_OK;
  }
  return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                           "cpu backend: %s='%s' is not one of generic, avx2", source, asked);
}

static fp8gemm_status cpu_init(fp8gemm_context *ctx, const fp8gemm_context_options *options) {
  cpu_isa isa = CPU_ISA_GENERIC;
  int threads = 1;
  FP8GEMM_RETURN_IF_ERROR(choose_isa(options, &isa));
  FP8GEMM_RETURN_IF_ERROR(choose_threads(options, &threads));
  cpu_state *st = calloc(1, sizeof *st);
  if (!st) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "cpu backend state");
  st->isa = isa;
  st->num_threads = threads;
  st->kernels = &cpu_kernels_scalar;
#ifdef CPU_HAVE_AVX2_KERNELS
  if (isa == CPU_ISA_AVX2) st->kernels = &cpu_kernels_avx2;
#endif
  cpu_fill_decode_lut(st->decode_lut);
  fp8gemm_status status = cpu_pool_create(threads, &st->pool);
  if (status != FP8GEMM_OK) {
    free(st);
    return status;
  }
  ctx->state = st;
  return FP8GEMM_OK;
}

static void cpu_fini(fp8gemm_context *ctx) {
  cpu_state *st = cpu_state_of(ctx);
  if (!st) return;
  cpu_pool_destroy(st->pool);
  free(st);
  ctx->state = NULL;
}

static const char *cpu_device_name(const fp8gemm_context *ctx) {
  return cpu_state_of(ctx)->kernels->isa_name;
}

static int cpu_num_threads(const fp8gemm_context *ctx) { return cpu_state_of(ctx)->num_threads; }

static fp8gemm_status cpu_synchronize(fp8gemm_context *ctx) {
  (void)ctx; /* every CPU call is synchronous */
  return FP8GEMM_OK;
}

/* Large buffers (weights, big workspaces) get 2 MiB alignment and, on
 * Linux, transparent huge pages: first touch then costs one fault per 2 MiB
 * instead of per 4 KiB (a 117 MB weight: 57 faults, not 28,700), and
 * streaming a weight misses the TLB 512x less often. */
#define CPU_HUGE_PAGE ((size_t)2 << 20)
#define CPU_HUGE_THRESHOLD ((size_t)8 << 20)

static fp8gemm_status cpu_alloc(fp8gemm_context *ctx, size_t bytes, void **ptr) {
  (void)ctx;
  *ptr = NULL;
  if (bytes > SIZE_MAX - CPU_HUGE_PAGE)
    return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "cpu alloc: %zu bytes", bytes);
  const size_t alignment = bytes >= CPU_HUGE_THRESHOLD ? CPU_HUGE_PAGE : 64;
  /* aligned_alloc needs a multiple of the alignment; 0 bytes still gives a
   * pointer so callers can free it uniformly. */
  const size_t rounded = bytes ? (bytes + alignment - 1) & ~(alignment - 1) : alignment;
  void *p = aligned_alloc(alignment, rounded);
  if (!p) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "cpu alloc: %zu bytes", bytes);
#ifdef MADV_HUGEPAGE
  if (alignment == CPU_HUGE_PAGE) (void)madvise(p, rounded, MADV_HUGEPAGE); /* a hint only */
#endif
  *ptr = p;
  return FP8GEMM_OK;
}

static void cpu_free(fp8gemm_context *ctx, void *ptr) {
  (void)ctx;
  free(ptr);
}

static fp8gemm_status cpu_copy(fp8gemm_context *ctx, void *dst, const void *src, size_t bytes,
                               int kind) {
  (void)ctx;
  (void)kind; /* host and backend memory are the same on the CPU */
  if (bytes) memmove(dst, src, bytes);
  return FP8GEMM_OK;
}

const fp8gemm_backend_ops fp8gemm_cpu_backend = {
    .name = "cpu",
    .preshuffled_layout = FP8GEMM_LAYOUT_PRESHUFFLED_CPU,
    .init = cpu_init,
    .fini = cpu_fini,
    .device_name = cpu_device_name,
    .num_threads = cpu_num_threads,
    .set_stream = NULL,
    .synchronize = cpu_synchronize,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .copy = cpu_copy,
    .shuffle = cpu_shuffle,
    .check_weight_codes = cpu_check_weight_codes,
    .shuffle_checked = cpu_shuffle_checked,
    .quantize_activations = cpu_quantize_activations,
    .quantize_weight = cpu_quantize_weight,
    .gemm_scale_layout = cpu_gemm_scale_layout,
    .gemm_workspace = cpu_gemm_workspace,
    .gemm = cpu_gemm,
    .convert_scales = NULL,
    .linear_fused = NULL,
};
