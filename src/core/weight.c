/* Weight handles: validated, placed in the layout the tuned table chose
 * (reordered once), and read-only from then on. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

void fp8gemm_weight_desc_init(fp8gemm_weight_desc *desc) {
  if (!desc) return;
  memset(desc, 0, sizeof *desc);
  desc->dtype = FP8GEMM_DTYPE_E4M3FN;
  desc->layout = FP8GEMM_LAYOUT_PLAIN;
  desc->memory = FP8GEMM_MEMORY_HOST;
  desc->bias_dtype = FP8GEMM_DTYPE_F32;
  desc->target_layout = FP8GEMM_LAYOUT_AUTO;
}

static fp8gemm_status check_desc(const fp8gemm_context *ctx, const fp8gemm_weight_desc *desc,
                                 const void *data) {
  if (desc->N == 0 || desc->K == 0 || desc->N > FP8GEMM_MAX_DIM || desc->K > FP8GEMM_MAX_DIM)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "weight desc: N=%zu, K=%zu: each must be in [1, 2^31]", desc->N,
                             desc->K);
  if (desc->K % 16 != 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "weight desc: K=%zu must be a multiple of 16", desc->K);
  if (desc->dtype != FP8GEMM_DTYPE_E4M3FN)
    return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                             "weight desc: dtype %s: only e4m3fn weights are supported",
                             fp8gemm_dtype_name(desc->dtype));
  if (!data)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "weight desc: data is NULL");
  if (!desc->scale_inv)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "weight desc: scale_inv is NULL");
  if (desc->memory != FP8GEMM_MEMORY_HOST && desc->memory != FP8GEMM_MEMORY_DEVICE)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "weight desc: memory=%d is unknown",
                             (int)desc->memory);
  if (desc->memory == FP8GEMM_MEMORY_DEVICE && ctx->backend == FP8GEMM_BACKEND_CPU)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "weight desc: memory=device on a cpu context");
  if (desc->bias && desc->bias_dtype != FP8GEMM_DTYPE_F32 && desc->bias_dtype != FP8GEMM_DTYPE_BF16 &&
      desc->bias_dtype != FP8GEMM_DTYPE_F16)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "weight desc: bias_dtype %s must be f32, bf16 or f16",
                             fp8gemm_dtype_name(desc->bias_dtype));
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_layout_check(desc->layout, desc->N, desc->K));
  if (desc->target_layout != FP8GEMM_LAYOUT_AUTO) {
    const fp8gemm_layout target = (fp8gemm_layout)desc->target_layout;
    if (target != FP8GEMM_LAYOUT_PLAIN && target != ctx->ops->preshuffled_layout)
      return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                               "weight desc: target_layout %s: backend %s computes from plain "
                               "or %s only",
                               fp8gemm_layout_name(target), ctx->ops->name,
                               fp8gemm_layout_name(ctx->ops->preshuffled_layout));
    FP8GEMM_RETURN_IF_ERROR(fp8gemm_layout_check(target, desc->N, desc->K));
  }
  return FP8GEMM_OK;
}

/* Copies desc's scales and bias into the handle: host copies first (to
 * validate), then backend copies. */
static fp8gemm_status attach_scales_and_bias(fp8gemm_context *ctx, const fp8gemm_weight_desc *desc,
                                             fp8gemm_weight *w) {
  const size_t rows = fp8gemm_ceil_div(desc->N, FP8GEMM_BLOCK);
  const size_t cols = fp8gemm_ceil_div(desc->K, FP8GEMM_BLOCK);
  const size_t scale_bytes = rows * cols * sizeof(float);
  const bool host_source = desc->memory == FP8GEMM_MEMORY_HOST;
  const bool cpu = ctx->backend == FP8GEMM_BACKEND_CPU;

  w->host_scale_inv = malloc(scale_bytes);
  if (!w->host_scale_inv)
    return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "weight scales: %zu bytes", scale_bytes);
  if (host_source)
    memcpy(w->host_scale_inv, desc->scale_inv, scale_bytes);
  else
    FP8GEMM_RETURN_IF_ERROR(ctx->ops->copy(ctx, w->host_scale_inv, desc->scale_inv, scale_bytes,
                                           FP8GEMM_COPY_BACKEND_TO_HOST));
  for (size_t i = 0; i < rows * cols; i++) {
    const float s = w->host_scale_inv[i];
    if (!isfinite(s) || !(s > 0.0f))
      return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                               "weight desc: scale_inv[%zu][%zu] = %g must be finite and > 0",
                               i / cols, i % cols, (double)s);
  }
  if (cpu) {
    w->scale_inv = w->host_scale_inv;
  } else {
    FP8GEMM_RETURN_IF_ERROR(ctx->ops->alloc(ctx, scale_bytes, (void **)&w->scale_inv));
    FP8GEMM_RETURN_IF_ERROR(ctx->ops->copy(ctx, w->scale_inv, w->host_scale_inv, scale_bytes,
                                           FP8GEMM_COPY_HOST_TO_BACKEND));
  }

  if (!desc->bias) return FP8GEMM_OK;
  const size_t bias_bytes = desc->N * fp8gemm_dtype_size(desc->bias_dtype);
  const void *host_bias = desc->bias;
  void *staged = NULL;
  if (!host_source) {
    staged = malloc(bias_bytes);
    if (!staged) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "bias staging");
    fp8gemm_status status =
        ctx->ops->copy(ctx, staged, desc->bias, bias_bytes, FP8GEMM_COPY_BACKEND_TO_HOST);
    if (status != FP8GEMM_OK) {
      free(staged);
      return status;
    }
    host_bias = staged;
  }
  float *bias32 = malloc(desc->N * sizeof(float));
  if (!bias32) {
    free(staged);
    return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "bias: %zu floats", desc->N);
  }
  for (size_t n = 0; n < desc->N; n++) bias32[n] = fp8gemm_load_as_float(desc->bias_dtype, host_bias, n);
  free(staged);
  if (cpu) {
    w->bias = bias32;
    return FP8GEMM_OK;
  }
  fp8gemm_status status = ctx->ops->alloc(ctx, desc->N * sizeof(float), (void **)&w->bias);
  if (status == FP8GEMM_OK)
    status = ctx->ops->copy(ctx, w->bias, bias32, desc->N * sizeof(float), FP8GEMM_COPY_HOST_TO_BACKEND);
  free(bias32);
  return status;
}

static fp8gemm_status resolve_target(fp8gemm_context *ctx, const fp8gemm_weight_desc *desc,
                                     fp8gemm_layout *target) {
  if (desc->target_layout != FP8GEMM_LAYOUT_AUTO) {
    *target = (fp8gemm_layout)desc->target_layout;
    return FP8GEMM_OK;
  }
  return fp8gemm_context_choose_layout(ctx, desc->N, desc->K, target);
}

/* Checks the bytes for NaN codes where they are: in host memory on the CPU,
 * in backend memory otherwise. */
static fp8gemm_status check_codes(fp8gemm_context *ctx, const fp8gemm_weight_desc *desc,
                                  const void *data) {
  if (desc->memory == FP8GEMM_MEMORY_HOST && ctx->backend != FP8GEMM_BACKEND_CPU)
    return fp8gemm_cpu_backend.check_weight_codes(ctx, data, desc->N, desc->K);
  return ctx->ops->check_weight_codes(ctx, data, desc->N, desc->K);
}

static fp8gemm_weight *new_weight(fp8gemm_context *ctx, const fp8gemm_weight_desc *desc) {
  fp8gemm_weight *w = calloc(1, sizeof *w);
  if (!w) return NULL;
  w->backend = ctx->backend;
  w->ops = ctx->ops;
  w->context = ctx;
  w->N = desc->N;
  w->K = desc->K;
  w->crossover_m = fp8gemm_context_crossover_m(ctx, desc->N, desc->K);
  return w;
}

fp8gemm_status fp8gemm_weight_create(fp8gemm_context *context, const fp8gemm_weight_desc *desc,
                                     fp8gemm_weight **weight) {
  FP8GEMM_CHECK_NOT_NULL(context);
  FP8GEMM_CHECK_NOT_NULL(desc);
  FP8GEMM_CHECK_NOT_NULL(weight);
  *weight = NULL;
  FP8GEMM_RETURN_IF_ERROR(check_desc(context, desc, desc->data));
  fp8gemm_layout target;
  FP8GEMM_RETURN_IF_ERROR(resolve_target(context, desc, &target));
  /* Where the backend can, the NaN-code check rides along the reordering
   * pass (one read of the caller's bytes instead of two); else first. */
  const bool checked_shuffle =
      context->backend == FP8GEMM_BACKEND_CPU && context->ops->shuffle_checked != NULL;
  if (!checked_shuffle) FP8GEMM_RETURN_IF_ERROR(check_codes(context, desc, desc->data));

  fp8gemm_weight *w = new_weight(context, desc);
  if (!w) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "weight handle");
  const size_t bytes = desc->N * desc->K;
  fp8gemm_status status = context->ops->alloc(context, bytes, (void **)&w->data);
  if (status == FP8GEMM_OK) {
    w->owns_data = true;
    if (checked_shuffle) {
      /* One pass: check and reorder straight from the caller's bytes into ours. */
      status = context->ops->shuffle_checked(context, desc->N, desc->K, desc->layout, desc->data,
                                             target, w->data);
    } else if (context->backend == FP8GEMM_BACKEND_CPU) {
      status = context->ops->shuffle(context, desc->N, desc->K, desc->layout, desc->data, target,
                                     w->data);
    } else {
      status = context->ops->copy(context, w->data, desc->data, bytes,
                                  desc->memory == FP8GEMM_MEMORY_HOST
                                      ? FP8GEMM_COPY_HOST_TO_BACKEND
                                      : FP8GEMM_COPY_BACKEND_TO_BACKEND);
      if (status == FP8GEMM_OK && desc->layout != target)
        status = context->ops->shuffle(context, desc->N, desc->K, desc->layout, w->data, target,
                                       w->data);
    }
  }
  w->layout = target;
  if (status == FP8GEMM_OK) status = attach_scales_and_bias(context, desc, w);
  if (status != FP8GEMM_OK) {
    fp8gemm_weight_destroy(w);
    return status;
  }
  *weight = w;
  return FP8GEMM_OK;
}

fp8gemm_status fp8gemm_weight_create_in_place(fp8gemm_context *context,
                                              const fp8gemm_weight_desc *desc, void *data,
                                              fp8gemm_weight **weight) {
  FP8GEMM_CHECK_NOT_NULL(context);
  FP8GEMM_CHECK_NOT_NULL(desc);
  FP8GEMM_CHECK_NOT_NULL(weight);
  *weight = NULL;
  FP8GEMM_RETURN_IF_ERROR(check_desc(context, desc, data));
  if (context->backend == FP8GEMM_BACKEND_CUDA && desc->memory != FP8GEMM_MEMORY_DEVICE)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "%s: on a cuda context the buffer must be device memory "
                             "(desc->memory=device); use fp8gemm_weight_create to upload",
                             __func__);
  fp8gemm_layout target;
  FP8GEMM_RETURN_IF_ERROR(resolve_target(context, desc, &target));
  /* Check before touching the caller's bytes: a refused weight stays as it was. */
  FP8GEMM_RETURN_IF_ERROR(check_codes(context, desc, data));
  fp8gemm_weight *w = new_weight(context, desc);
  if (!w) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "weight handle");
  w->data = data;
  w->owns_data = false;
  w->layout = desc->layout;
  fp8gemm_status status = attach_scales_and_bias(context, desc, w);
  if (status == FP8GEMM_OK && desc->layout != target) {
    status = context->ops->shuffle(context, desc->N, desc->K, desc->layout, data, target, data);
    if (status == FP8GEMM_OK) w->layout = target;
    /* The weight's bytes are final when the handle is returned: a forward
     * may read them before the kernel ahead of it in the stream has ended
     * (the CUDA decode GEMM's programmatic dependent launch). */
    if (status == FP8GEMM_OK && context->ops->synchronize) status = context->ops->synchronize(context);
  }
  if (status != FP8GEMM_OK) {
    fp8gemm_weight_destroy(w);
    return status;
  }
  *weight = w;
  return FP8GEMM_OK;
}

void fp8gemm_weight_destroy(fp8gemm_weight *weight) {
  if (!weight) return;
  fp8gemm_context *ctx = weight->context;
  if (weight->owns_data && weight->data) ctx->ops->free(ctx, weight->data);
  if (weight->backend == FP8GEMM_BACKEND_CPU) {
    free(weight->bias);
  } else {
    if (weight->scale_inv) ctx->ops->free(ctx, weight->scale_inv);
    if (weight->bias) ctx->ops->free(ctx, weight->bias);
  }
  free(weight->host_scale_inv);
  free(weight);
}

fp8gemm_layout fp8gemm_weight_layout(const fp8gemm_weight *weight) {
  return weight ? weight->layout : FP8GEMM_LAYOUT_PLAIN;
}
size_t fp8gemm_weight_n(const fp8gemm_weight *weight) { return weight ? weight->N : 0; }
size_t fp8gemm_weight_k(const fp8gemm_weight *weight) { return weight ? weight->K : 0; }
fp8gemm_backend fp8gemm_weight_backend(const fp8gemm_weight *weight) {
  return weight ? weight->backend : FP8GEMM_BACKEND_CPU;
}
const void *fp8gemm_weight_data(const fp8gemm_weight *weight) { return weight ? weight->data : NULL; }

fp8gemm_status fp8gemm_weight_export(const fp8gemm_weight *weight, fp8gemm_layout layout, void *dst) {
  FP8GEMM_CHECK_NOT_NULL(weight);
  FP8GEMM_CHECK_NOT_NULL(dst);
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_layout_check(layout, weight->N, weight->K));
  fp8gemm_context *ctx = weight->context;
  if (weight->backend == FP8GEMM_BACKEND_CPU)
    return ctx->ops->shuffle(ctx, weight->N, weight->K, weight->layout, weight->data, layout, dst);
  FP8GEMM_RETURN_IF_ERROR(ctx->ops->copy(ctx, dst, weight->data, weight->N * weight->K,
                                         FP8GEMM_COPY_BACKEND_TO_HOST));
  if (layout == weight->layout) return FP8GEMM_OK;
  return fp8gemm_shuffle_host_generic(weight->N, weight->K, weight->layout, dst, layout, dst);
}
