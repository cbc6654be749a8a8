/* Weight handles straight from an FP8 block checkpoint (safetensors).
 *
 * Naming (DeepSeek-V3): <name>.weight F8_E4M3 [N, K], <name>.weight_scale_inv
 * F32 [ceil(N/128), ceil(K/128)], optional <name>.bias [N]. fp8gemm's own
 * __metadata__ keys (see fp8gemm.h, "Checkpoints") say the format and, per
 * tensor, the byte order the weight was stored in. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

/* A file that says it is some other format is refused instead of being
 * read as 128x128 blocks; a file that says nothing (DeepSeek's own) is
 * taken as the DeepSeek convention. */
static fp8gemm_status check_format(const fp8gemm_safetensors *file) {
  const char *format = fp8gemm_safetensors_metadata(file, FP8GEMM_ST_META_FORMAT);
  if (format && strcmp(format, FP8GEMM_ST_FORMAT_BLOCK128))
    return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                             "metadata '%s' is '%.64s'; only '%s' is supported",
                             FP8GEMM_ST_META_FORMAT, format, FP8GEMM_ST_FORMAT_BLOCK128);
  const char *block = fp8gemm_safetensors_metadata(file, FP8GEMM_ST_META_BLOCK);
  if (block && strcmp(block, FP8GEMM_ST_BLOCK128))
    return fp8gemm_set_error(FP8GEMM_ERROR_UNSUPPORTED,
                             "metadata '%s' is '%.64s'; only '%s' is supported",
                             FP8GEMM_ST_META_BLOCK, block, FP8GEMM_ST_BLOCK128);
  return FP8GEMM_OK;
}

static fp8gemm_status expect_shape(const fp8gemm_tensor_view *view, size_t rank,
                                   const size_t *expected) {
  int same = view->rank == rank;
  for (size_t i = 0; same && i < rank; i++) same = view->shape[i] == expected[i];
  if (same) return FP8GEMM_OK;
  char got[160] = "", want[160] = "";
  size_t used = 0;
  for (size_t i = 0; i < view->rank && used < sizeof got; i++)
    used += (size_t)snprintf(got + used, sizeof got - used, "%s%zu", i ? ", " : "",
                             view->shape[i]);
  used = 0;
  for (size_t i = 0; i < rank && used < sizeof want; i++)
    used += (size_t)snprintf(want + used, sizeof want - used, "%s%zu", i ? ", " : "",
                             expected[i]);
  return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                           "tensor '%s': field 'shape' is [%s], expected [%s]", view->name, got,
                           want);
}

/* Zero-copy views may be misaligned for their element type (the format
 * does not align tensors); such data is copied to aligned memory. */
static const void *aligned_or_copy(const fp8gemm_tensor_view *view, size_t alignment,
                                   void **copy) {
  *copy = NULL;
  if ((uintptr_t)view->data % alignment == 0) return view->data;
  *copy = malloc(view->bytes ? view->bytes : 1);
  if (*copy) memcpy(*copy, view->data, view->bytes);
  return *copy;
}

fp8gemm_status fp8gemm_weight_create_from_safetensors(fp8gemm_context *context,
                                                      const fp8gemm_safetensors *file,
                                                      const char *name,
                                                      fp8gemm_weight **weight) {
  FP8GEMM_CHECK_NOT_NULL(context);
  FP8GEMM_CHECK_NOT_NULL(file);
  FP8GEMM_CHECK_NOT_NULL(name);
  FP8GEMM_CHECK_NOT_NULL(weight);
  *weight = NULL;
  FP8GEMM_RETURN_IF_ERROR(check_format(file));

  size_t name_len = strlen(name) + sizeof ".weight_scale_inv";
  char *weight_name = malloc(name_len), *scale_name = malloc(name_len),
       *bias_name = malloc(name_len);
  void *scale_copy = NULL, *bias_copy = NULL;
  fp8gemm_status status = FP8GEMM_OK;
  if (!weight_name || !scale_name || !bias_name) {
    status = fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "%s: no memory", __func__);
    goto done;
  }
  snprintf(weight_name, name_len, "%s.weight", name);
  snprintf(scale_name, name_len, "%s.weight_scale_inv", name);
  snprintf(bias_name, name_len, "%s.bias", name);

  fp8gemm_tensor_view w, s, b;
  status = fp8gemm_safetensors_find(file, weight_name, &w);
  if (status != FP8GEMM_OK) goto done;
  if (w.dtype != FP8GEMM_ST_F8_E4M3 || w.rank != 2) {
    status = fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                               "tensor '%s': is %s of rank %zu, expected F8_E4M3 [N, K]",
                               weight_name, fp8gemm_st_dtype_name(w.dtype), w.rank);
    goto done;
  }
  const size_t N = w.shape[0], K = w.shape[1];

  status = fp8gemm_safetensors_find(file, scale_name, &s);
  if (status != FP8GEMM_OK) goto done;
  if (s.dtype != FP8GEMM_ST_F32) {
    status = fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                               "tensor '%s': field 'dtype' is %s, expected F32", scale_name,
                               fp8gemm_st_dtype_name(s.dtype));
    goto done;
  }
  const size_t scale_shape[2] = {fp8gemm_ceil_div(N, FP8GEMM_BLOCK),
                                 fp8gemm_ceil_div(K, FP8GEMM_BLOCK)};
  status = expect_shape(&s, 2, scale_shape);
  if (status != FP8GEMM_OK) goto done;

  fp8gemm_layout layout;
  status = fp8gemm_safetensors_tensor_layout(file, weight_name, &layout);
  if (status != FP8GEMM_OK) goto done;

  fp8gemm_weight_desc desc;
  fp8gemm_weight_desc_init(&desc);
  desc.N = N;
  desc.K = K;
  desc.dtype = FP8GEMM_DTYPE_E4M3FN;
  desc.data = w.data;
  desc.layout = layout;
  desc.memory = FP8GEMM_MEMORY_HOST;
  desc.target_layout = FP8GEMM_LAYOUT_AUTO;
  desc.scale_inv = aligned_or_copy(&s, sizeof(float), &scale_copy);
  if (!desc.scale_inv) {
    status = fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "tensor '%s': no memory", scale_name);
    goto done;
  }

  if (fp8gemm_safetensors_contains(file, bias_name)) {
    status = fp8gemm_safetensors_find(file, bias_name, &b);
    if (status != FP8GEMM_OK) goto done;
    if (b.dtype == FP8GEMM_ST_F32)
      desc.bias_dtype = FP8GEMM_DTYPE_F32;
    else if (b.dtype == FP8GEMM_ST_BF16)
      desc.bias_dtype = FP8GEMM_DTYPE_BF16;
    else if (b.dtype == FP8GEMM_ST_F16)
      desc.bias_dtype = FP8GEMM_DTYPE_F16;
    else {
      status = fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                                 "tensor '%s': field 'dtype' is %s, expected F32, BF16 or F16",
                                 bias_name, fp8gemm_st_dtype_name(b.dtype));
      goto done;
    }
    const size_t bias_shape[1] = {N};
    status = expect_shape(&b, 1, bias_shape);
    if (status != FP8GEMM_OK) goto done;
    desc.bias = aligned_or_copy(&b, fp8gemm_st_dtype_size(b.dtype), &bias_copy);
    if (!desc.bias) {
      status = fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "tensor '%s': no memory", bias_name);
      goto done;
    }
  }

  status = fp8gemm_weight_create(context, &desc, weight);
  if (status != FP8GEMM_OK) {
    char cause[768];
    snprintf(cause, sizeof cause, "%s", fp8gemm_last_error());
    status = fp8gemm_set_error(status, "tensor '%s' (layout %s): %s", weight_name,
                               fp8gemm_layout_name(layout), cause);
  }

done:
  free(scale_copy);
  free(bias_copy);
  free(weight_name);
  free(scale_name);
  free(bias_name);
  return status;
}
