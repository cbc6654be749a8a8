/* The public compute entry points: argument checks, workspace carving, and
 * the calls into the backend. Nothing here reads data: that is the
 * backends' job. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static bool is_activation_dtype(int dtype) {
  return dtype == FP8GEMM_DTYPE_F32 || dtype == FP8GEMM_DTYPE_BF16 || dtype == FP8GEMM_DTYPE_F16;
}

static fp8gemm_status check_rows(const char *fn, const char *what, size_t rows) {
  if (rows == 0 || rows > FP8GEMM_MAX_DIM)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: %s=%zu must be in [1, 2^31]",
                             fn, what, rows);
  return FP8GEMM_OK;
}

static fp8gemm_status check_k(const char *fn, size_t K) {
  FP8GEMM_RETURN_IF_ERROR(check_rows(fn, "K", K));
  if (K % 16 != 0)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: K=%zu must be a multiple of 16",
                             fn, K);
  return FP8GEMM_OK;
}

static fp8gemm_status check_scale_desc(const char *fn, size_t M, size_t groups,
                                       fp8gemm_scale_layout layout, size_t ld) {
  if (layout == FP8GEMM_SCALE_ROW_MAJOR) {
    if (ld < groups)
      return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                               "%s: row-major scale_ld=%zu < ceil(K/128)=%zu", fn, ld, groups);
  } else if (layout == FP8GEMM_SCALE_M_MAJOR) {
    if (ld < M)
      return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: M-major scale_ld=%zu < M=%zu",
                               fn, ld, M);
  } else {
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: scale_layout=%d is unknown", fn,
                             (int)layout);
  }
  return FP8GEMM_OK;
}

fp8gemm_status fp8gemm_quantize_activations(fp8gemm_context *context, size_t M, size_t K,
                                            fp8gemm_dtype x_dtype, const void *x, size_t ldx,
                                            uint8_t *xq, size_t ldq, float *x_scale,
                                            fp8gemm_scale_layout scale_layout, size_t scale_ld) {
  FP8GEMM_CHECK_NOT_NULL(context);
  FP8GEMM_CHECK_NOT_NULL(x);
  FP8GEMM_CHECK_NOT_NULL(xq);
  FP8GEMM_CHECK_NOT_NULL(x_scale);
  FP8GEMM_RETURN_IF_ERROR(check_rows(__func__, "M", M));
  FP8GEMM_RETURN_IF_ERROR(check_k(__func__, K));
  if (!is_activation_dtype(x_dtype))
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "%s: x_dtype %s must be f32, bf16 or f16", __func__,
                             fp8gemm_dtype_name(x_dtype));
  if (ldx < K || ldq < K)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: ldx=%zu, ldq=%zu must be >= K=%zu",
                             __func__, ldx, ldq, K);
  FP8GEMM_RETURN_IF_ERROR(
      check_scale_desc(__func__, M, fp8gemm_ceil_div(K, FP8GEMM_BLOCK), scale_layout, scale_ld));
  return context->ops->quantize_activations(context, M, K, x_dtype, x, ldx, xq, ldq, x_scale,
                                            scale_layout, scale_ld);
}

fp8gemm_status fp8gemm_quantize_weight(fp8gemm_context *context, size_t N, size_t K,
                                       fp8gemm_dtype w_dtype, const void *w, size_t ldw,
                                       uint8_t *wq, float *weight_scale_inv) {
  FP8GEMM_CHECK_NOT_NULL(context);
  FP8GEMM_CHECK_NOT_NULL(w);
  FP8GEMM_CHECK_NOT_NULL(wq);
  FP8GEMM_CHECK_NOT_NULL(weight_scale_inv);
  FP8GEMM_RETURN_IF_ERROR(check_rows(__func__, "N", N));
  FP8GEMM_RETURN_IF_ERROR(check_k(__func__, K));
  if (!is_activation_dtype(w_dtype))
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "%s: w_dtype %s must be f32, bf16 or f16", __func__,
                             fp8gemm_dtype_name(w_dtype));
  if (ldw < K)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: ldw=%zu < K=%zu", __func__, ldw, K);
  return context->ops->quantize_weight(context, N, K, w_dtype, w, ldw, wq, weight_scale_inv);
}

fp8gemm_status fp8gemm_shuffle(fp8gemm_context *context, size_t N, size_t K, fp8gemm_layout from,
                               const uint8_t *src, fp8gemm_layout to, uint8_t *dst) {
  FP8GEMM_CHECK_NOT_NULL(context);
  FP8GEMM_CHECK_NOT_NULL(src);
  FP8GEMM_CHECK_NOT_NULL(dst);
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_layout_check(from, N, K));
  FP8GEMM_RETURN_IF_ERROR(fp8gemm_layout_check(to, N, K));
  if (src != dst && src < dst + N * K && dst < src + N * K)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "%s: src and dst overlap without being equal", __func__);
  return context->ops->shuffle(context, N, K, from, src, to, dst);
}

/* Workspace carve-up for a forward of M rows: [xq | scales | backend]. */
typedef struct workspace_plan {
  size_t xq_offset, xq_bytes;
  size_t scale_offset, scale_bytes;
  size_t backend_offset, backend_bytes;
  size_t total;
} workspace_plan;

static size_t align_up(size_t value) { return (value + 255) & ~(size_t)255; }

static workspace_plan plan_workspace(const fp8gemm_context *ctx, const fp8gemm_weight *w, size_t M) {
  workspace_plan plan;
  const size_t groups = fp8gemm_ceil_div(w->K, FP8GEMM_BLOCK);
  plan.xq_offset = 0;
  plan.xq_bytes = align_up(M * w->K);
  plan.scale_offset = plan.xq_bytes;
  plan.scale_bytes = align_up(M * groups * sizeof(float));
  plan.backend_offset = plan.scale_offset + plan.scale_bytes;
  plan.backend_bytes = align_up(ctx->ops->gemm_workspace(ctx, w, M));
  plan.total = plan.backend_offset + plan.backend_bytes;
  return plan;
}

static fp8gemm_status check_weight_on_context(const char *fn, const fp8gemm_context *ctx,
                                              const fp8gemm_weight *w) {
  if (w->backend != ctx->backend)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "%s: weight was created on backend %s, context is %s", fn,
                             fp8gemm_backend_name(w->backend), fp8gemm_backend_name(ctx->backend));
  return FP8GEMM_OK;
}

fp8gemm_status fp8gemm_linear_workspace_size(const fp8gemm_context *context,
                                             const fp8gemm_weight *weight, size_t M, size_t *bytes) {
  FP8GEMM_CHECK_NOT_NULL(context);
  FP8GEMM_CHECK_NOT_NULL(weight);
  FP8GEMM_CHECK_NOT_NULL(bytes);
  FP8GEMM_RETURN_IF_ERROR(check_rows(__func__, "M", M));
  FP8GEMM_RETURN_IF_ERROR(check_weight_on_context(__func__, context, weight));
  *bytes = plan_workspace(context, weight, M).total;
  return FP8GEMM_OK;
}

/* Points `*base` at a workspace of plan->total bytes: the caller's, or a new
 * allocation (*owned) when the caller gave none. */
static fp8gemm_status acquire_workspace(const char *fn, fp8gemm_context *ctx,
                                        const workspace_plan *plan, void *workspace,
                                        size_t workspace_bytes, uint8_t **base, bool *owned) {
  *owned = false;
  if (workspace) {
    if (workspace_bytes < plan->total)
      return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                               "%s: workspace_bytes=%zu < %zu needed (fp8gemm_linear_workspace_size)",
                               fn, workspace_bytes, plan->total);
    *base = workspace;
    return FP8GEMM_OK;
  }
  FP8GEMM_RETURN_IF_ERROR(ctx->ops->alloc(ctx, plan->total, (void **)base));
  *owned = true;
  return FP8GEMM_OK;
}

static fp8gemm_status check_output(const char *fn, const fp8gemm_weight *w, int y_dtype,
                                   const void *y, size_t ldy) {
  if (!y) return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: argument 'y' is NULL", fn);
  if (!is_activation_dtype(y_dtype))
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "%s: y_dtype %d must be f32, bf16 or f16", fn, y_dtype);
  if (ldy < w->N)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: ldy=%zu < N=%zu", fn, ldy, w->N);
  return FP8GEMM_OK;
}

fp8gemm_status fp8gemm_linear(fp8gemm_context *context, const fp8gemm_weight *weight, size_t M,
                              fp8gemm_dtype x_dtype, const void *x, size_t ldx, int y_dtype,
                              void *y, size_t ldy, void *workspace, size_t workspace_bytes) {
  FP8GEMM_CHECK_NOT_NULL(context);
  FP8GEMM_CHECK_NOT_NULL(weight);
  FP8GEMM_CHECK_NOT_NULL(x);
  FP8GEMM_RETURN_IF_ERROR(check_weight_on_context(__func__, context, weight));
  FP8GEMM_RETURN_IF_ERROR(check_rows(__func__, "M", M));
  if (!is_activation_dtype(x_dtype))
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "%s: x_dtype %s must be f32, bf16 or f16", __func__,
                             fp8gemm_dtype_name(x_dtype));
  if (ldx < weight->K)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: ldx=%zu < K=%zu", __func__, ldx,
                             weight->K);
  if (y_dtype == -1) y_dtype = (int)x_dtype;
  FP8GEMM_RETURN_IF_ERROR(check_output(__func__, weight, y_dtype, y, ldy));

  const workspace_plan plan = plan_workspace(context, weight, M);
  uint8_t *base;
  bool owned;
  FP8GEMM_RETURN_IF_ERROR(
      acquire_workspace(__func__, context, &plan, workspace, workspace_bytes, &base, &owned));
  if (context->ops->linear_fused) {
    /* One launch when the backend can (small M on CUDA); else two steps. */
    fp8gemm_status status =
        context->ops->linear_fused(context, weight, M, x_dtype, x, ldx, (fp8gemm_dtype)y_dtype, y,
                                   ldy, base + plan.backend_offset, plan.backend_bytes);
    if (status != FP8GEMM_ERROR_UNSUPPORTED) {
      if (owned) context->ops->free(context, base);
      return status;
    }
    fp8gemm_clear_error();
  }
  const size_t groups = fp8gemm_ceil_div(weight->K, FP8GEMM_BLOCK);
  fp8gemm_gemm_args args;
  args.M = M;
  args.xq = base + plan.xq_offset;
  args.ldq = weight->K;
  args.x_scale = (const float *)(base + plan.scale_offset);
  args.scale_layout = context->ops->gemm_scale_layout(context, weight, M);
  args.scale_ld = args.scale_layout == FP8GEMM_SCALE_M_MAJOR ? M : groups;
  args.y_dtype = (fp8gemm_dtype)y_dtype;
  args.y = y;
  args.ldy = ldy;
  fp8gemm_status status = context->ops->quantize_activations(
      context, M, weight->K, x_dtype, x, ldx, base + plan.xq_offset, weight->K,
      (float *)(base + plan.scale_offset), args.scale_layout, args.scale_ld);
  if (status == FP8GEMM_OK)
    status = context->ops->gemm(context, weight, &args, base + plan.backend_offset, plan.backend_bytes);
  if (owned) context->ops->free(context, base);
  return status;
}

static void convert_scales_host(size_t M, size_t groups, const float *src,
                                fp8gemm_scale_layout src_layout, size_t src_ld, float *dst,
                                fp8gemm_scale_layout dst_layout, size_t dst_ld) {
  for (size_t m = 0; m < M; m++)
    for (size_t g = 0; g < groups; g++) {
      const float s = src_layout == FP8GEMM_SCALE_ROW_MAJOR ? src[m * src_ld + g] : src[g * src_ld + m];
      if (dst_layout == FP8GEMM_SCALE_ROW_MAJOR)
        dst[m * dst_ld + g] = s;
      else
        dst[g * dst_ld + m] = s;
    }
}

fp8gemm_status fp8gemm_gemm(fp8gemm_context *context, const fp8gemm_weight *weight, size_t M,
                            const uint8_t *xq, size_t ldq, const float *x_scale,
                            fp8gemm_scale_layout scale_layout, size_t scale_ld,
                            fp8gemm_dtype y_dtype, void *y, size_t ldy, void *workspace,
                            size_t workspace_bytes) {
  FP8GEMM_CHECK_NOT_NULL(context);
  FP8GEMM_CHECK_NOT_NULL(weight);
  FP8GEMM_CHECK_NOT_NULL(xq);
  FP8GEMM_CHECK_NOT_NULL(x_scale);
  FP8GEMM_RETURN_IF_ERROR(check_weight_on_context(__func__, context, weight));
  FP8GEMM_RETURN_IF_ERROR(check_rows(__func__, "M", M));
  if (ldq < weight->K)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "%s: ldq=%zu < K=%zu", __func__, ldq,
                             weight->K);
  const size_t groups = fp8gemm_ceil_div(weight->K, FP8GEMM_BLOCK);
  FP8GEMM_RETURN_IF_ERROR(check_scale_desc(__func__, M, groups, scale_layout, scale_ld));
  FP8GEMM_RETURN_IF_ERROR(check_output(__func__, weight, (int)y_dtype, y, ldy));

  const workspace_plan plan = plan_workspace(context, weight, M);
  uint8_t *base;
  bool owned;
  FP8GEMM_RETURN_IF_ERROR(
      acquire_workspace(__func__, context, &plan, workspace, workspace_bytes, &base, &owned));
  fp8gemm_gemm_args args;
  args.M = M;
  args.xq = xq;
  args.ldq = ldq;
  args.x_scale = x_scale;
  args.scale_layout = scale_layout;
  args.scale_ld = scale_ld;
  args.y_dtype = y_dtype;
  args.y = y;
  args.ldy = ldy;
  fp8gemm_status status = FP8GEMM_OK;
  const fp8gemm_scale_layout wanted = context->ops->gemm_scale_layout(context, weight, M);
  if (wanted != scale_layout) {
    /* The kernel reads the other layout: rewrite the scales once. */
    float *converted = (float *)(base + plan.scale_offset);
    const size_t converted_ld = wanted == FP8GEMM_SCALE_M_MAJOR ? M : groups;
    if (context->ops->convert_scales)
      status = context->ops->convert_scales(context, M, groups, x_scale, scale_layout, scale_ld,
                                            converted, wanted, converted_ld);
    else
      convert_scales_host(M, groups, x_scale, scale_layout, scale_ld, converted, wanted,
                          converted_ld);
    args.x_scale = converted;
    args.scale_layout = wanted;
    args.scale_ld = converted_ld;
  }
  if (status == FP8GEMM_OK)
    status = context->ops->gemm(context, weight, &args, base + plan.backend_offset, plan.backend_bytes);
  if (owned) context->ops->free(context, base);
  return status;
}
