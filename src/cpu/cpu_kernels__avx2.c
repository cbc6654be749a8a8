/* AVX2 + FMA + F16C kernels (compiled with -mavx2 -mfma -mf16c; chosen at
 * run time). Contracts in cpu_internal.h.
 *
 * FP8 decode (REFERENCE section 1): sign-extend each byte to 16 bits, shift
 * left by 7 and clear bit 14; the 16 bits are then the fp16 encoding of
 * value/256 for every finite e4m3fn code, subnormals included, and
 * vcvtph2ps widens them exactly. (Sign-extension puts the sign in bits 15
 * and 14 after the shift; bits 13..7 get exponent and mantissa.) NaN codes
 * decode to finite numbers this way, which is why weights are checked once
 * at creation and activations carry a NaN scale. */
#if defined(__x86_64__) || defined(__i386__)

#include <immintrin.h>
#include <math.h>
#include <string.h>

#include "cpu_internal.h"

#define GROUP FP8GEMM_BLOCK
#define ALWAYS_INLINE static inline __attribute__((always_inline))

/* 16 FP8 bytes -> 16 floats (value/256), in two halves. */
ALWAYS_INLINE void decode16(const uint8_t *src, __m256 *lo, __m256 *hi) {
  const __m128i bytes = _mm_loadu_si128((const __m128i *)src);
  __m256i h = _mm256_cvtepi8_epi16(bytes);
  h = _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16((short)0xBFFF));
  *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

/* ---- large-M micro-kernel ------------------------------------------------ */

/* Flushes one row of the 6x16 tile: C = s * acc (+ C). */
ALWAYS_INLINE void flush_row(float *c, __m256 s, __m256 acc0, __m256 acc1, int accumulate) {
  if (accumulate) {
    _mm256_storeu_ps(c, _mm256_fmadd_ps(s, acc0, _mm256_loadu_ps(c)));
    _mm256_storeu_ps(c + 8, _mm256_fmadd_ps(s, acc1, _mm256_loadu_ps(c + 8)));
  } else {
    _mm256_storeu_ps(c, _mm256_mul_ps(s, acc0));
    _mm256_storeu_ps(c + 8, _mm256_mul_ps(s, acc1));
  }
}

static void f8f32_gemm_6x16__avx2(size_t kc, const float *a, const float *a_scale,
                                  const float *b, const float *b_scale, float *c, size_t ldc,
                                  int accumulate) {
  /* The tile's C lines are touched once per group: bring them in early. */
  for (int i = 0; i < CPU_GEMM_MR; i++) {
    _mm_prefetch((const char *)(c + (size_t)i * ldc), _MM_HINT_T0);
    _mm_prefetch((const char *)(c + (size_t)i * ldc + 15), _MM_HINT_T0);
  }
  /* A is row-major [6][kc]: six sequential streams, one per row. */
  const float *a0 = a, *a1 = a + kc, *a2 = a + 2 * kc, *a3 = a + 3 * kc, *a4 = a + 4 * kc,
              *a5 = a + 5 * kc;
  for (size_t k0 = 0; k0 < kc; k0 += GROUP) {
    const size_t kend = kc - k0 < GROUP ? kc : k0 + GROUP;
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (size_t k = k0; k < kend; k++) {
      const __m256 b0 = _mm256_load_ps(b + k * CPU_GEMM_NR), b1 = _mm256_load_ps(b + k * CPU_GEMM_NR + 8);
      __m256 ai = _mm256_broadcast_ss(a0 + k);
      c00 = _mm256_fmadd_ps(ai, b0, c00);
      c01 = _mm256_fmadd_ps(ai, b1, c01);
      ai = _mm256_broadcast_ss(a1 + k);
      c10 = _mm256_fmadd_ps(ai, b0, c10);
      c11 = _mm256_fmadd_ps(ai, b1, c11);
      ai = _mm256_broadcast_ss(a2 + k);
      c20 = _mm256_fmadd_ps(ai, b0, c20);
      c21 = _mm256_fmadd_ps(ai, b1, c21);
      ai = _mm256_broadcast_ss(a3 + k);
      c30 = _mm256_fmadd_ps(ai, b0, c30);
      c31 = _mm256_fmadd_ps(ai, b1, c31);
      ai = _mm256_broadcast_ss(a4 + k);
      c40 = _mm256_fmadd_ps(ai, b0, c40);
      c41 = _mm256_fmadd_ps(ai, b1, c41);
      ai = _mm256_broadcast_ss(a5 + k);
      c50 = _mm256_fmadd_ps(ai, b0, c50);
      c51 = _mm256_fmadd_ps(ai, b1, c51);
    }
    const __m256 sb = _mm256_broadcast_ss(b_scale++);
    flush_row(c + 0 * ldc, _mm256_mul_ps(_mm256_broadcast_ss(a_scale + 0), sb), c00, c01, accumulate);
    flush_row(c + 1 * ldc, _mm256_mul_ps(_mm256_broadcast_ss(a_scale + 1), sb), c10, c11, accumulate);
    flush_row(c + 2 * ldc, _mm256_mul_ps(_mm256_broadcast_ss(a_scale + 2), sb), c20, c21, accumulate);
    flush_row(c + 3 * ldc, _mm256_mul_ps(_mm256_broadcast_ss(a_scale + 3), sb), c30, c31, accumulate);
    flush_row(c + 4 * ldc, _mm256_mul_ps(_mm256_broadcast_ss(a_scale + 4), sb), c40, c41, accumulate);
    flush_row(c + 5 * ldc, _mm256_mul_ps(_mm256_broadcast_ss(a_scale + 5), sb), c50, c51, accumulate);
    a_scale += CPU_GEMM_MR;
    accumulate = 1;
  }
}

/* ---- B packing ------------------------------------------------------------- */

static void f8_pack_b_16_preshuffled__avx2(size_t kc, size_t rows, const uint8_t *src, float *b,
                                           const float *lut) {
  if (rows != CPU_GEMM_NR) {
    f8_pack_b_16_preshuffled__scalar(kc, rows, src, b, lut);
    return;
  }
  for (size_t k = 0; k < kc; k++) {
    __m256 lo, hi;
    decode16(src + k * 16, &lo, &hi);
    _mm256_store_ps(b + k * 16, lo);
    _mm256_store_ps(b + k * 16 + 8, hi);
  }
}

/* In-register transpose of 16 rows of 16 bytes, lane-wise on 256-bit
 * vectors (each 128-bit lane holds its own 16x16 block). In: r[i] = row i.
 * Out: col[j] = byte j of every row, rows in order. Four rounds of unpacks
 * double the width of the interleaved unit each time (8, 16, 32, 64 bits). */
#define DEFINE_TRANSPOSE_16X16(NAME, VEC, UNLO8, UNHI8, UNLO16, UNHI16, UNLO32, UNHI32, UNLO64, UNHI64) \
  ALWAYS_INLINE void NAME(const VEC r[16], VEC col[16]) {                                            \
    VEC a[8], b[8], q[4][4], e[2][8];                                                               \
    for (int g = 0; g < 8; g++) {                                                                   \
      a[g] = UNLO8(r[2 * g], r[2 * g + 1]); /* k 0-7, rows 2g, 2g+1 */                             \
      b[g] = UNHI8(r[2 * g], r[2 * g + 1]); /* k 8-15 */                                           \
    }                                                                                               \
    for (int h = 0; h < 4; h++) {                                                                   \
      q[h][0] = UNLO16(a[2 * h], a[2 * h + 1]); /* k 0-3, rows 4h..4h+3 */                         \
      q[h][1] = UNHI16(a[2 * h], a[2 * h + 1]); /* k 4-7 */                                        \
      q[h][2] = UNLO16(b[2 * h], b[2 * h + 1]); /* k 8-11 */                                       \
      q[h][3] = UNHI16(b[2 * h], b[2 * h + 1]); /* k 12-15 */                                      \
    }                                                                                               \
    for (int o = 0; o < 2; o++)                                                                     \
      for (int j = 0; j < 4; j++) {                                                                 \
        e[o][2 * j] = UNLO32(q[2 * o][j], q[2 * o + 1][j]);     /* k 4j, 4j+1, rows 8o.. */       \
        e[o][2 * j + 1] = UNHI32(q[2 * o][j], q[2 * o + 1][j]); /* k 4j+2, 4j+3 */                \
      }                                                                                             \
    for (int i = 0; i < 8; i++) {                                                                   \
      col[2 * i] = UNLO64(e[0][i], e[1][i]);                                                        \
      col[2 * i + 1] = UNHI64(e[0][i], e[1][i]);                                                    \
    }                                                                                               \
  }

DEFINE_TRANSPOSE_16X16(transpose_16x16_xmm, __m128i, _mm_unpacklo_epi8, _mm_unpackhi_epi8,
                       _mm_unpacklo_epi16, _mm_unpackhi_epi16, _mm_unpacklo_epi32,
                       _mm_unpackhi_epi32, _mm_unpacklo_epi64, _mm_unpackhi_epi64)
DEFINE_TRANSPOSE_16X16(transpose_16x16_ymm, __m256i, _mm256_unpacklo_epi8, _mm256_unpackhi_epi8,
                       _mm256_unpacklo_epi16, _mm256_unpackhi_epi16, _mm256_unpacklo_epi32,
                       _mm256_unpackhi_epi32, _mm256_unpacklo_epi64, _mm256_unpackhi_epi64)

/* 16 FP8 bytes already in a register -> 16 floats. */
ALWAYS_INLINE void decode16_reg(__m128i bytes, __m256 *lo, __m256 *hi) {
  __m256i h = _mm256_cvtepi8_epi16(bytes);
  h = _mm256_and_si256(_mm256_slli_epi16(h, 7), _mm256_set1_epi16((short)0xBFFF));
  *lo = _mm256_cvtph_ps(_mm256_castsi256_si128(h));
  *hi = _mm256_cvtph_ps(_mm256_extracti128_si256(h, 1));
}

static void f8_pack_b_16_plain__avx2(size_t kc, size_t rows, const uint8_t *src, size_t ld,
                                     float *b, const float *lut) {
  if (rows != CPU_GEMM_NR || kc % 16 != 0) {
    f8_pack_b_16_plain__scalar(kc, rows, src, ld, b, lut);
    return;
  }
  for (size_t k0 = 0; k0 < kc; k0 += 16) {
    __m128i r[16], col[16];
    for (int i = 0; i < 16; i++) r[i] = _mm_loadu_si128((const __m128i *)(src + i * ld + k0));
    transpose_16x16_xmm(r, col);
    for (int j = 0; j < 16; j++) {
      __m256 lo, hi;
      decode16_reg(col[j], &lo, &hi);
      _mm256_store_ps(b + (k0 + j) * 16, lo);
      _mm256_store_ps(b + (k0 + j) * 16 + 8, hi);
    }
  }
}

/* ---- small-M kernels ---------------------------------------------------------- */

/* Preshuffled GEMV on one 16-row panel for R rows of x, K unrolled by U with
 * independent accumulators (so a lone row still has 2U chains in flight). */
ALWAYS_INLINE void gemv_preshuffled_rows(const size_t R, const size_t U, size_t K,
                                         const uint8_t *panel, const float *xd, size_t ldxd,
                                         const float *xs, size_t ldxs, const float *ws,
                                         float *out) {
  __m256 y0[CPU_GEMV_MAX_ROWS], y1[CPU_GEMV_MAX_ROWS];
#pragma GCC unroll 6
  for (size_t r = 0; r < R; r++) y0[r] = y1[r] = _mm256_setzero_ps();
  for (size_t k0 = 0, g = 0; k0 < K; k0 += GROUP, g++) {
    const size_t kend = K - k0 < GROUP ? K : k0 + GROUP;
    __m256 acc0[CPU_GEMV_MAX_ROWS][4], acc1[CPU_GEMV_MAX_ROWS][4];
#pragma GCC unroll 6
    for (size_t r = 0; r < R; r++)
#pragma GCC unroll 4
      for (size_t u = 0; u < U; u++) acc0[r][u] = acc1[r][u] = _mm256_setzero_ps();
    for (size_t k = k0; k < kend; k += U) {
#pragma GCC unroll 4
      for (size_t u = 0; u < U; u++) {
        __m256 w0, w1;
        decode16(panel + (k + u) * 16, &w0, &w1);
#pragma GCC unroll 6
        for (size_t r = 0; r < R; r++) {
          const __m256 xv = _mm256_broadcast_ss(xd + r * ldxd + k + u);
          acc0[r][u] = _mm256_fmadd_ps(xv, w0, acc0[r][u]);
          acc1[r][u] = _mm256_fmadd_ps(xv, w1, acc1[r][u]);
        }
      }
    }
#pragma GCC unroll 6
    for (size_t r = 0; r < R; r++) {
#pragma GCC unroll 4
      for (size_t u = 1; u < U; u++) {
        acc0[r][0] = _mm256_add_ps(acc0[r][0], acc0[r][u]);
        acc1[r][0] = _mm256_add_ps(acc1[r][0], acc1[r][u]);
      }
      const __m256 s = _mm256_set1_ps(xs[r * ldxs + g] * ws[g]);
      y0[r] = _mm256_fmadd_ps(s, acc0[r][0], y0[r]);
      y1[r] = _mm256_fmadd_ps(s, acc1[r][0], y1[r]);
    }
  }
#pragma GCC unroll 6
  for (size_t r = 0; r < R; r++) {
    _mm256_storeu_ps(out + r * 16, y0[r]);
    _mm256_storeu_ps(out + r * 16 + 8, y1[r]);
  }
}

static void f8f32_gemv_6x16_preshuffled__avx2(size_t rows, size_t K, const uint8_t *panel,
                                              const float *xd, size_t ldxd, const float *xs,
                                              size_t ldxs, const float *ws, float *out,
                                              const float *lut) {
  (void)lut;
  /* Group widths are multiples of 16, so any U in {1, 2, 4} divides them. */
  switch (rows) {
    case 1: gemv_preshuffled_rows(1, 4, K, panel, xd, ldxd, xs, ldxs, ws, out); break;
    case 2: gemv_preshuffled_rows(2, 2, K, panel, xd, ldxd, xs, ldxs, ws, out); break;
    case 3: gemv_preshuffled_rows(3, 2, K, panel, xd, ldxd, xs, ldxs, ws, out); break;
    case 4: gemv_preshuffled_rows(4, 1, K, panel, xd, ldxd, xs, ldxs, ws, out); break;
    case 5: gemv_preshuffled_rows(5, 1, K, panel, xd, ldxd, xs, ldxs, ws, out); break;
    default: gemv_preshuffled_rows(6, 1, K, panel, xd, ldxd, xs, ldxs, ws, out); break;
  }
}

ALWAYS_INLINE float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

/* Plain GEMV: WR weight rows (row-major) against R rows of x; dot products
 * along K in 8 lanes x 2 halves, the lanes summed once at the end. */
ALWAYS_INLINE void gemv_plain_rows(const size_t R, const size_t WR, size_t K, const uint8_t *w,
                                   size_t ldw, const float *xd, size_t ldxd, const float *xs,
                                   size_t ldxs, const float *ws, float *out) {
  __m256 y[CPU_GEMV_MAX_ROWS][CPU_GEMV_PLAIN_WROWS];
#pragma GCC unroll 6
  for (size_t r = 0; r < R; r++)
#pragma GCC unroll 4
    for (size_t j = 0; j < WR; j++) y[r][j] = _mm256_setzero_ps();
  for (size_t k0 = 0, g = 0; k0 < K; k0 += GROUP, g++) {
    const size_t kend = K - k0 < GROUP ? K : k0 + GROUP;
    __m256 acc0[CPU_GEMV_MAX_ROWS][CPU_GEMV_PLAIN_WROWS], acc1[CPU_GEMV_MAX_ROWS][CPU_GEMV_PLAIN_WROWS];
#pragma GCC unroll 6
    for (size_t r = 0; r < R; r++)
#pragma GCC unroll 4
      for (size_t j = 0; j < WR; j++) acc0[r][j] = acc1[r][j] = _mm256_setzero_ps();
    for (size_t k = k0; k < kend; k += 16) {
      /* The next WR rows, pulled in at the pace these are read: rows are
       * short streams (K bytes) that the hardware prefetcher barely learns. */
      _mm_prefetch((const char *)(w + WR * ldw + WR * k), _MM_HINT_T0);
#pragma GCC unroll 4
      for (size_t j = 0; j < WR; j++) {
        __m256 w0, w1;
        decode16(w + j * ldw + k, &w0, &w1);
#pragma GCC unroll 6
        for (size_t r = 0; r < R; r++) {
          acc0[r][j] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + r * ldxd + k), w0, acc0[r][j]);
          acc1[r][j] = _mm256_fmadd_ps(_mm256_loadu_ps(xd + r * ldxd + k + 8), w1, acc1[r][j]);
        }
      }
    }
#pragma GCC unroll 6
    for (size_t r = 0; r < R; r++) {
      const __m256 s = _mm256_set1_ps(xs[r * ldxs + g] * ws[g]);
#pragma GCC unroll 4
      for (size_t j = 0; j < WR; j++)
        y[r][j] = _mm256_fmadd_ps(s, _mm256_add_ps(acc0[r][j], acc1[r][j]), y[r][j]);
    }
  }
#pragma GCC unroll 6
  for (size_t r = 0; r < R; r++)
#pragma GCC unroll 4
    for (size_t j = 0; j < WR; j++) out[r * CPU_GEMV_PLAIN_WROWS + j] = hsum(y[r][j]);
}

/* Weight rows per pass for R rows of x: keeps 2*R*WR accumulators <= 8-12
 * so they stay in the 16 YMM registers. */
#define PLAIN_PASS(R, WR)                                                                          \
  do {                                                                                             \
    size_t j = 0;                                                                                  \
    for (; j + (WR) <= wrows; j += (WR))                                                           \
      gemv_plain_rows(R, WR, K, w + j * ldw, ldw, xd, ldxd, xs, ldxs, ws, out + j);                \
    for (; j < wrows; j++) gemv_plain_rows(R, 1, K, w + j * ldw, ldw, xd, ldxd, xs, ldxs, ws, out + j); \
  } while (0)

static void f8f32_gemv_6x4_plain__avx2(size_t rows, size_t wrows, size_t K, const uint8_t *w,
                                       size_t ldw, const float *xd, size_t ldxd, const float *xs,
                                       size_t ldxs, const float *ws, float *out,
                                       const float *lut) {
  (void)lut;
  switch (rows) {
    case 1: PLAIN_PASS(1, 4); break;
    case 2: PLAIN_PASS(2, 2); break;
    case 3: PLAIN_PASS(3, 1); break;
    case 4: PLAIN_PASS(4, 1); break;
    case 5: PLAIN_PASS(5, 1); break;
    default: PLAIN_PASS(6, 1); break;
  }
}

static void decode_row_avx2(size_t count, const uint8_t *src, float *dst, const float *lut) {
  /* value/256 from the F16C decode, times 2^16: value*256, exact. */
  const __m256 rescale = _mm256_set1_ps(65536.0f);
  size_t i = 0;
  for (; i + 16 <= count; i += 16) {
    __m256 lo, hi;
    decode16(src + i, &lo, &hi);
    _mm256_storeu_ps(dst + i, _mm256_mul_ps(lo, rescale));
    _mm256_storeu_ps(dst + i + 8, _mm256_mul_ps(hi, rescale));
  }
  for (; i < count; i++) dst[i] = lut[src[i]] * 65536.0f;
}

/* ---- output conversion ---------------------------------------------------------- */

/* fp32 -> bf16 exactly as fp8gemm_bf16_from_float: nearest even, NaN kept
 * quiet with its upper payload bits. */
ALWAYS_INLINE __m256i bf16_bits(__m256 v) {
  const __m256i u = _mm256_castps_si256(v);
  const __m256i upper = _mm256_srli_epi32(u, 16);
  const __m256i rounded = _mm256_srli_epi32(
      _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF),
                                           _mm256_and_si256(upper, _mm256_set1_epi32(1)))),
      16);
  const __m256i nan = _mm256_or_si256(upper, _mm256_set1_epi32(0x40));
  const __m256i is_nan = _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q));
  return _mm256_blendv_epi8(rounded, nan, is_nan);
}

static void f32_store_tile__avx2(size_t rows, size_t cols, const float *c, size_t ldc,
                                 const float *bias, fp8gemm_dtype y_dtype, void *y, size_t ldy) {
  if (cols != 16) {
    f32_store_tile__scalar(rows, cols, c, ldc, bias, y_dtype, y, ldy);
    return;
  }
  const __m256 b0 = bias ? _mm256_loadu_ps(bias) : _mm256_setzero_ps();
  const __m256 b1 = bias ? _mm256_loadu_ps(bias + 8) : _mm256_setzero_ps();
  for (size_t i = 0; i < rows; i++) {
    __m256 v0 = _mm256_loadu_ps(c + i * ldc), v1 = _mm256_loadu_ps(c + i * ldc + 8);
    if (bias) {
      v0 = _mm256_add_ps(v0, b0);
      v1 = _mm256_add_ps(v1, b1);
    }
    switch (y_dtype) {
      case FP8GEMM_DTYPE_F32: {
        float *yr = (float *)y + i * ldy;
        _mm256_storeu_ps(yr, v0);
        _mm256_storeu_ps(yr + 8, v1);
        break;
      }
      case FP8GEMM_DTYPE_BF16: {
        /* packus keeps 0..65535; the permute undoes its per-lane order. */
        const __m256i packed = _mm256_permute4x64_epi64(
            _mm256_packus_epi32(bf16_bits(v0), bf16_bits(v1)), 0xD8);
        _mm256_storeu_si256((__m256i *)((uint16_t *)y + i * ldy), packed);
        break;
      }
      case FP8GEMM_DTYPE_F16: {
        uint16_t *yr = (uint16_t *)y + i * ldy;
        _mm_storeu_si128((__m128i *)yr, _mm256_cvtps_ph(v0, _MM_FROUND_TO_NEAREST_INT));
        _mm_storeu_si128((__m128i *)(yr + 8), _mm256_cvtps_ph(v1, _MM_FROUND_TO_NEAREST_INT));
        break;
      }
      default: f32_store_tile__scalar(1, cols, c + i * ldc, ldc, bias, y_dtype,
                                      (char *)y + i * ldy * fp8gemm_dtype_size(y_dtype), ldy);
    }
  }
}

/* ---- layouts --------------------------------------------------------------------- */

ALWAYS_INLINE void transpose_blocks(size_t blocks, const uint8_t *src, size_t src_ld,
                                  size_t src_step, uint8_t *dst, size_t dst_ld, size_t dst_step,
                                  const bool stream) {
  size_t blk = 0;
  /* Two blocks per pass in the two 128-bit lanes. */
  for (; blk + 2 <= blocks; blk += 2) {
    const uint8_t *s0 = src + blk * src_step, *s1 = s0 + src_step;
    uint8_t *d0 = dst + blk * dst_step, *d1 = d0 + dst_step;
    __m256i r[16], col[16];
    for (int i = 0; i < 16; i++)
      r[i] = _mm256_inserti128_si256(
          _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(s0 + i * src_ld))),
          _mm_loadu_si128((const __m128i *)(s1 + i * src_ld)), 1);
    transpose_16x16_ymm(r, col);
    for (int j = 0; j < 16; j++) {
      if (stream) {
        _mm_stream_si128((__m128i *)(d0 + j * dst_ld), _mm256_castsi256_si128(col[j]));
        _mm_stream_si128((__m128i *)(d1 + j * dst_ld), _mm256_extracti128_si256(col[j], 1));
      } else {
        _mm_storeu_si128((__m128i *)(d0 + j * dst_ld), _mm256_castsi256_si128(col[j]));
        _mm_storeu_si128((__m128i *)(d1 + j * dst_ld), _mm256_extracti128_si256(col[j], 1));
      }
    }
  }
  for (; blk < blocks; blk++) {
    const uint8_t *s = src + blk * src_step;
    uint8_t *d = dst + blk * dst_step;
    __m128i r[16], col[16];
    for (int i = 0; i < 16; i++) r[i] = _mm_loadu_si128((const __m128i *)(s + i * src_ld));
    transpose_16x16_xmm(r, col);
    for (int j = 0; j < 16; j++) {
      if (stream)
        _mm_stream_si128((__m128i *)(d + j * dst_ld), col[j]);
      else
        _mm_storeu_si128((__m128i *)(d + j * dst_ld), col[j]);
    }
  }
}

static void transpose_16x16_avx2(size_t blocks, const uint8_t *src, size_t src_ld,
                                 size_t src_step, uint8_t *dst, size_t dst_ld, size_t dst_step) {
  transpose_blocks(blocks, src, src_ld, src_step, dst, dst_ld, dst_step, false);
}

/* Non-temporal stores when dst is written whole and sequentially (a panel
 * of preshuffled_cpu or aiter16x16 bytes): no read-for-ownership of lines
 * that are about to be overwritten, so a shuffle moves the bytes of a
 * memcpy, not 1.5x them. The sfence orders the streamed lines before the
 * pool reports the task done. */
static void transpose_16x16_stream_avx2(size_t blocks, const uint8_t *src, size_t src_ld,
                                        size_t src_step, uint8_t *dst, size_t dst_ld,
                                        size_t dst_step) {
  if (((uintptr_t)dst | dst_ld | dst_step) & 15) {
    transpose_blocks(blocks, src, src_ld, src_step, dst, dst_ld, dst_step, false);
    return;
  }
  transpose_blocks(blocks, src, src_ld, src_step, dst, dst_ld, dst_step, true);
  _mm_sfence();
}

static size_t find_nan_code_avx2(size_t count, const uint8_t *data) {
  const __m256i low7 = _mm256_set1_epi8(0x7F);
  size_t i = 0;
  for (; i + 128 <= count; i += 128) {
    __m256i hit = _mm256_setzero_si256();
    for (int v = 0; v < 4; v++) {
      const __m256i bytes = _mm256_loadu_si256((const __m256i *)(data + i + 32 * v));
      hit = _mm256_or_si256(hit, _mm256_cmpeq_epi8(_mm256_and_si256(bytes, low7), low7));
    }
    if (!_mm256_testz_si256(hit, hit)) break; /* the scalar tail finds which byte */
  }
  for (; i < count; i++)
    if ((data[i] & 0x7F) == 0x7F) return i;
  return SIZE_MAX;
}

/* ---- quantization -------------------------------------------------------------------- */

/* 8 values of x (f32, bf16 or f16) at index i -> floats, exactly. */
ALWAYS_INLINE __m256 load8_as_float(fp8gemm_dtype dtype, const void *x, size_t i) {
  switch (dtype) {
    case FP8GEMM_DTYPE_BF16:
      return _mm256_castsi256_ps(_mm256_slli_epi32(
          _mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)((const uint16_t *)x + i))), 16));
    case FP8GEMM_DTYPE_F16:
      return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)((const uint16_t *)x + i)));
    default: return _mm256_loadu_ps((const float *)x + i);
  }
}

/* fp32 -> e4m3fn codes (one per 32-bit lane), as fp8gemm_e4m3fn_from_float:
 * round to nearest even, saturate to +-448 (Inf too), NaN -> 0x7F | sign.
 * Normal results (|v| >= 2^-6) round the fp32 mantissa to 3 bits in the
 * integer domain and rebias the exponent (127 -> 7); subnormal results
 * round by adding 2^14, whose ulp is the e4m3 subnormal step 2^-9. */
ALWAYS_INLINE __m256i e4m3fn_codes(__m256 v) {
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i magnitude = _mm256_and_si256(bits, _mm256_set1_epi32(0x7FFFFFFF));
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(magnitude, 20), _mm256_set1_epi32(1));
  const __m256i rounded =
      _mm256_add_epi32(magnitude, _mm256_add_epi32(_mm256_set1_epi32(0x7FFFF), lsb));
  __m256i normal = _mm256_sub_epi32(_mm256_srli_epi32(rounded, 20), _mm256_set1_epi32(120 << 3));
  normal = _mm256_min_epi32(normal, _mm256_set1_epi32(0x7E));
  const __m256 shifted = _mm256_add_ps(_mm256_castsi256_ps(magnitude), _mm256_set1_ps(16384.0f));
  const __m256i subnormal =
      _mm256_sub_epi32(_mm256_castps_si256(shifted), _mm256_set1_epi32(0x46800000));
  const __m256i is_subnormal = _mm256_cmpgt_epi32(_mm256_set1_epi32(0x3C800000), magnitude);
  __m256i code = _mm256_blendv_epi8(normal, subnormal, is_subnormal);
  const __m256i is_nan = _mm256_cmpgt_epi32(magnitude, _mm256_set1_epi32(0x7F800000));
  code = _mm256_blendv_epi8(code, _mm256_set1_epi32(0x7F), is_nan);
  const __m256i sign = _mm256_srli_epi32(_mm256_andnot_si256(_mm256_set1_epi32(0x7FFFFFFF), bits), 24);
  return _mm256_or_si256(code, sign);
}

/* 16 codes in two vectors of 32-bit lanes -> 16 bytes in order. */
ALWAYS_INLINE void store_codes16(uint8_t *dst, __m256i lo, __m256i hi) {
  const __m256i words = _mm256_permute4x64_epi64(_mm256_packus_epi32(lo, hi), 0xD8);
  _mm_storeu_si128((__m128i *)dst, _mm_packus_epi16(_mm256_castsi256_si128(words),
                                                    _mm256_extracti128_si256(words, 1)));
}

ALWAYS_INLINE float hmax(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_movehdup_ps(m));
  return _mm_cvtss_f32(m);
}

/* amax of n values (n % 8 == 0); false when one is not finite. */
ALWAYS_INLINE bool amax_span(size_t n, fp8gemm_dtype dtype, const void *x, __m256 *amax) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF));
  const __m256i exponent = _mm256_set1_epi32(0x7F800000);
  __m256i nonfinite = _mm256_setzero_si256();
  __m256 m = *amax;
  for (size_t i = 0; i < n; i += 8) {
    const __m256 v = load8_as_float(dtype, x, i);
    const __m256i e = _mm256_and_si256(_mm256_castps_si256(v), exponent);
    nonfinite = _mm256_or_si256(nonfinite, _mm256_cmpeq_epi32(e, exponent));
    m = _mm256_max_ps(m, _mm256_and_ps(v, abs_mask));
  }
  *amax = m;
  return _mm256_testz_si256(nonfinite, nonfinite);
}

static void quantize_span_avx2(size_t cols, fp8gemm_dtype dtype, const void *x, float scale,
                               uint8_t *q) {
  const __m256 s = _mm256_set1_ps(scale);
  for (size_t i = 0; i < cols; i += 16) {
    /* Division, not a reciprocal multiply: bit-identical to x / s. */
    const __m256i lo = e4m3fn_codes(_mm256_div_ps(load8_as_float(dtype, x, i), s));
    const __m256i hi = e4m3fn_codes(_mm256_div_ps(load8_as_float(dtype, x, i + 8), s));
    store_codes16(q + i, lo, hi);
  }
}

static void quantize_row_avx2(size_t K, fp8gemm_dtype dtype, const void *x_row, uint8_t *xq_row,
                              float *scales, size_t scale_stride) {
  const size_t elem = fp8gemm_dtype_size(dtype);
  for (size_t k0 = 0, g = 0; k0 < K; k0 += GROUP, g++) {
    const size_t kg = K - k0 < GROUP ? K - k0 : GROUP;
    const void *xg = (const char *)x_row + k0 * elem;
    __m256 amax_v = _mm256_setzero_ps();
    if (!amax_span(kg, dtype, xg, &amax_v)) {
      /* Same result as the core's scalar quantizer: NaN scale, NaN codes. */
      scales[g * scale_stride] = NAN;
      memset(xq_row + k0, 0x7F, kg);
      continue;
    }
    const float amax = hmax(amax_v);
    const float scale = (amax > 1e-10f ? amax : 1e-10f) / 448.0f;
    scales[g * scale_stride] = scale;
    quantize_span_avx2(kg, dtype, xg, scale, xq_row + k0);
  }
}

static bool block_amax_avx2(size_t rows, size_t cols, fp8gemm_dtype dtype, const void *w,
                            size_t ldw, float *amax) {
  const size_t elem = fp8gemm_dtype_size(dtype);
  __m256 m = _mm256_setzero_ps();
  for (size_t r = 0; r < rows; r++)
    if (!amax_span(cols, dtype, (const char *)w + r * ldw * elem, &m)) return false;
  *amax = hmax(m);
  return true;
}

const cpu_kernels cpu_kernels_avx2 = {
    .isa_name = "avx2",
    .gemm_6x16 = f8f32_gemm_6x16__avx2,
    .pack_b_preshuffled = f8_pack_b_16_preshuffled__avx2,
    .pack_b_plain = f8_pack_b_16_plain__avx2,
    .gemv_preshuffled = f8f32_gemv_6x16_preshuffled__avx2,
    .gemv_plain = f8f32_gemv_6x4_plain__avx2,
    .decode_row = decode_row_avx2,
    .store_tile = f32_store_tile__avx2,
    .transpose_16x16 = transpose_16x16_avx2,
    .transpose_16x16_stream = transpose_16x16_stream_avx2,
    .find_nan_code = find_nan_code_avx2,
    .quantize_row = quantize_row_avx2,
    .block_amax = block_amax_avx2,
    .quantize_span = quantize_span_avx2,
};

#endif /* x86 */
