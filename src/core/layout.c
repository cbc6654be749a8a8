/* Weight layouts: one place defines each byte order, through its index
 * function (n, k) -> byte offset. The reference kernel and the generic
 * shuffles read through these; the backends' fast shuffles are tested
 * against them. */
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static const char *const layout_names[FP8GEMM_LAYOUT_COUNT] = {
    [FP8GEMM_LAYOUT_PLAIN] = "plain",
    [FP8GEMM_LAYOUT_PRESHUFFLED_CPU] = "preshuffled_cpu",
    [FP8GEMM_LAYOUT_PRESHUFFLED_SM90] = "preshuffled_sm90",
    [FP8GEMM_LAYOUT_AITER16X16] = "aiter16x16",
};

static bool layout_is_known(fp8gemm_layout layout) {
  return (unsigned)layout < FP8GEMM_LAYOUT_COUNT;
}

const char *fp8gemm_layout_name(fp8gemm_layout layout) {
  return layout_is_known(layout) ? layout_names[layout] : "unknown";
}

fp8gemm_status fp8gemm_layout_from_name(const char *name, fp8gemm_layout *layout) {
  FP8GEMM_CHECK_NOT_NULL(name);
  FP8GEMM_CHECK_NOT_NULL(layout);
  for (int i = 0; i < FP8GEMM_LAYOUT_COUNT; i++) {
    if (!strcmp(name, layout_names[i])) {
      *layout = (fp8gemm_layout)i;
      return FP8GEMM_OK;
    }
  }
  return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                           "layout name '%s' is not one of plain, preshuffled_cpu, "
                           "preshuffled_sm90, aiter16x16",
                           name);
}

fp8gemm_status fp8gemm_layout_check(fp8gemm_layout layout, size_t N, size_t K) {
  if (!layout_is_known(layout))
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "layout %d is not a known layout",
                             (int)layout);
  if (N == 0 || K == 0 || N > FP8GEMM_MAX_DIM || K > FP8GEMM_MAX_DIM)
    return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                             "weight shape N=%zu, K=%zu: each must be in [1, 2^31]", N, K);
  switch (layout) {
    case FP8GEMM_LAYOUT_PLAIN:
    case FP8GEMM_LAYOUT_PRESHUFFLED_CPU: return FP8GEMM_OK;
    case FP8GEMM_LAYOUT_PRESHUFFLED_SM90: return fp8gemm_layout_sm90_check(N, K);
    case FP8GEMM_LAYOUT_AITER16X16:
      if (N % 16 != 0)
        return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                                 "layout aiter16x16 needs N %% 16 == 0, got N=%zu", N);
      if (K % 32 != 0)
        return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT,
                                 "layout aiter16x16 needs K %% 32 == 0, got K=%zu", K);
      return FP8GEMM_OK;
  }
  return FP8GEMM_ERROR_INTERNAL;
}

size_t fp8gemm_layout_offset_unchecked(fp8gemm_layout layout, size_t N, size_t K, size_t n,
                                       size_t k) {
  switch (layout) {
    case FP8GEMM_LAYOUT_PLAIN: return n * K + k;
    case FP8GEMM_LAYOUT_PRESHUFFLED_CPU: {
      /* 16-row panels, k-major inside; the last panel is N % 16 rows wide. */
      const size_t panel = n / 16;
      const size_t rows = (N - panel * 16) < 16 ? (N - panel * 16) : 16;
      return panel * 16 * K + k * rows + n % 16;
    }
    case FP8GEMM_LAYOUT_PRESHUFFLED_SM90: return fp8gemm_layout_sm90_offset(N, K, n, k);
    case FP8GEMM_LAYOUT_AITER16X16:
      /* REFERENCE section 3: tiles of 16 rows x 32 bytes (512 contiguous
       * bytes), inside a tile two 16-wide K halves of 16 rows x 16 bytes. */
      return (n / 16) * 16 * K + (k / 32) * 512 + ((k / 16) % 2) * 256 + (n % 16) * 16 + (k % 16);
  }
  return SIZE_MAX;
}

size_t fp8gemm_layout_offset(fp8gemm_layout layout, size_t N, size_t K, size_t n, size_t k) {
  if (fp8gemm_layout_check(layout, N, K) != FP8GEMM_OK || n >= N || k >= K) return SIZE_MAX;
  return fp8gemm_layout_offset_unchecked(layout, N, K, n, k);
}

fp8gemm_status fp8gemm_shuffle_host_generic(size_t N, size_t K, fp8gemm_layout from,
                                            const uint8_t *src, fp8gemm_layout to, uint8_t *dst) {
  const uint8_t *source = src;
  uint8_t *copy = NULL;
  if (src == dst) {
    copy = malloc(N * K);
    if (!copy) return fp8gemm_set_error(FP8GEMM_ERROR_OUT_OF_MEMORY, "shuffle scratch of %zu bytes", N * K);
    memcpy(copy, src, N * K);
    source = copy;
  }
  for (size_t n = 0; n < N; n++)
    for (size_t k = 0; k < K; k++)
      dst[fp8gemm_layout_offset_unchecked(to, N, K, n, k)] =
          source[fp8gemm_layout_offset_unchecked(from, N, K, n, k)];
  free(copy);
  return FP8GEMM_OK;
}
