/* Contexts: the backend (its kernels and state) and the tuned table. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

const char *fp8gemm_backend_name(fp8gemm_backend backend) {
  switch (backend) {
    case FP8GEMM_BACKEND_CPU: return "cpu";
    case FP8GEMM_BACKEND_CUDA: return "cuda";
    case FP8GEMM_BACKEND_AUTO: return "auto";
  }
  return "unknown";
}

int fp8gemm_backend_available(fp8gemm_backend backend) {
  switch (backend) {
    case FP8GEMM_BACKEND_CPU: return 1;
    case FP8GEMM_BACKEND_CUDA:
#ifdef FP8GEMM_HAVE_CUDA
      return fp8gemm_cuda_usable();
#else
      return 0;
#endif
    case FP8GEMM_BACKEND_AUTO: return 1;
  }
  return 0;
}

void fp8gemm_context_options_init(fp8gemm_context_options *options) {
  if (!options) return;
  memset(options, 0, sizeof *options);
  options->backend = FP8GEMM_BACKEND_CPU;
}

static fp8gemm_status load_table(fp8gemm_context *ctx, const char *path) {
  if (!path || !*path) path = getenv("FP8GEMM_TUNED");
  if (path && *path) return fp8gemm_tuned_table_load(path, &ctx->table);
  char origin[64];
  snprintf(origin, sizeof origin, "shipped:%s", fp8gemm_backend_name(ctx->backend));
  const char *text = fp8gemm_shipped_table(ctx->backend);
  return fp8gemm_tuned_table_parse(*text ? text
                                         : "backend,device,N,K,layout,kernel,crossover_m,"
                                           "m_values,plain_us,preshuffled_us\n",
                                   origin, &ctx->table);
}

fp8gemm_status fp8gemm_context_create(const fp8gemm_context_options *options,
                                      fp8gemm_context **context) {
  FP8GEMM_CHECK_NOT_NULL(context);
  *context = NULL;
  fp8gemm_context_options defaults;
  fp8gemm_context_options_init(&defaults);
  if (!options) options = &defaults;
  if (options->num_threads < 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "context options: num_threads=%d must be >= 0 (0 = all cores)",
                             options->num_threads);
  if (options->cuda_device < 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "context options: cuda_device=%d must be >= 0", options->cuda_device);
  fp8gemm_backend backend = options->backend;
  if (backend == FP8GEMM_BACKEND_AUTO)
    backend = fp8gemm_backend_available(FP8GEMM_BACKEND_CUDA) ? FP8GEMM_BACKEND_CUDA
                                                              : FP8GEMM_BACKEND_CPU;
  const fp8gemm_backend_ops *ops = NULL;
  switch (backend) {
    case FP8GEMM_BACKEND_CPU: ops = &fp8gemm_cpu_backend; break;
    case FP8GEMM_BACKEND_CUDA:
#ifdef FP8GEMM_HAVE_CUDA
      ops = &fp8gemm_cuda_backend;
      break;
#else
      return fp8gemm_set_error(FP8GEMM_ERROR_NO_DEVICE,
                               "context options: backend cuda is not built into this library "
                               "(configure with nvcc on PATH or -DFP8GEMM_CUDA=ON)");
#endif
    default:
      return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                               "context options: backend=%d is not cpu, cuda or auto",
                               (int)options->backend);
  }
  fp8gemm_context *ctx = calloc(1, sizeof *ctx);
  if (!ctx) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "context");
  ctx->backend = backend;
  ctx->ops = ops;
  fp8gemm_status status = load_table(ctx, options->tuned_table_path);
  if (status == FP8GEMM_OK) status = ops->init(ctx, options);
  if (status != FP8GEMM_OK) {
    fp8gemm_tuned_table_free(&ctx->table);
    free(ctx);
    return status;
  }
  *context = ctx;
  return FP8GEMM_OK;
}

void fp8gemm_context_destroy(fp8gemm_context *context) {
  if (!context) return;
  context->ops->fini(context);
  fp8gemm_tuned_table_free(&context->table);
  free(context);
}

fp8gemm_backend fp8gemm_context_backend(const fp8gemm_context *context) {
  return context ? context->backend : FP8GEMM_BACKEND_CPU;
}

const char *fp8gemm_context_device(const fp8gemm_context *context) {
  return context ? context->ops->device_name(context) : "";
}

int fp8gemm_context_num_threads(const fp8gemm_context *context) {
  return context && context->ops->num_threads ? context->ops->num_threads(context) : 1;
}

fp8gemm_layout fp8gemm_context_preshuffled_layout(const fp8gemm_context *context) {
  return context ? context->ops->preshuffled_layout : FP8GEMM_LAYOUT_PRESHUFFLED_CPU;
}

fp8gemm_status fp8gemm_context_set_stream(fp8gemm_context *context, void *cuda_stream) {
  FP8GEMM_CHECK_NOT_NULL(context);
  if (!context->ops->set_stream)
    return cuda_stream ? fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                                           "%s: backend %s has no streams", __func__,
                                           context->ops->name)
                       : FP8GEMM_OK;
  return context->ops->set_stream(context, cuda_stream);
}

fp8gemm_status fp8gemm_context_synchronize(fp8gemm_context *context) {
  FP8GEMM_CHECK_NOT_NULL(context);
  return context->ops->synchronize(context);
}

fp8gemm_status fp8gemm_context_choose_layout(const fp8gemm_context *context, size_t N, size_t K,
                                             fp8gemm_layout *layout) {
  FP8GEMM_CHECK_NOT_NULL(context);
  FP8GEMM_CHECK_NOT_NULL(layout);
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_layout_check(FP8GEMM_LAYOUT_PLAIN, N, K));
  const fp8gemm_tuned_entry *entry =
      fp8gemm_tuned_table_find(&context->table, context->ops->name,
                               context->ops->device_name(context), N, K);
  /* The seed's rule: a shape the table does not keep plain is preshuffled,
   * when the backend's preshuffled layout can hold it. */
  fp8gemm_layout chosen = entry ? entry->layout : context->ops->preshuffled_layout;
  if (chosen != FP8GEMM_LAYOUT_PLAIN && fp8gemm_layout_check(chosen, N, K) != FP8GEMM_OK) {
    fp8gemm_clear_error();
    chosen = FP8GEMM_LAYOUT_PLAIN;
  }
  *layout = chosen;
  return FP8GEMM_OK;
}

size_t fp8gemm_context_crossover_m(const fp8gemm_context *context, size_t N, size_t K) {
  const fp8gemm_tuned_entry *entry =
      fp8gemm_tuned_table_find(&context->table, context->ops->name,
                               context->ops->device_name(context), N, K);
  return entry ? entry->crossover_m : FP8GEMM_CROSSOVER_DEFAULT;
}

fp8gemm_status fp8gemm_memory_alloc(fp8gemm_context *context, size_t bytes, void **ptr) {
  FP8GEMM_CHECK_NOT_NULL(context);
  FP8GEMM_CHECK_NOT_NULL(ptr);
  *ptr = NULL;
  if (bytes == 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: bytes=0", __func__);
  return context->ops->alloc(context, bytes, ptr);
}

void fp8gemm_memory_free(fp8gemm_context *context, void *ptr) {
  if (context && ptr) context->ops->free(context, ptr);
}

fp8gemm_status fp8gemm_memory_copy(fp8gemm_context *context, void *dst, const void *src,
                                   size_t bytes, fp8gemm_copy_kind kind) {
  FP8GEMM_CHECK_NOT_NULL(context);
  if (bytes == 0) return FP8GEMM_OK;
  FP8GEMM_CHECK_NOT_NULL(dst);
  FP8GEMM_CHECK_NOT_NULL(src);
  if ((unsigned)kind > FP8GEMM_COPY_BACKEND_TO_BACKEND)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: kind=%d is unknown", __func__,
                             (int)kind);
  return context->ops->copy(context, dst, src, bytes, (int)kind);
}
