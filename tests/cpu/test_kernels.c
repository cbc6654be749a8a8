/* White-box tests of every CPU kernel, for each kernel table this machine
 * can run (scalar always, avx2 when detected), against plain fp64 or exact
 * scalar definitions: edge rows and columns, K remainder groups, tail
 * blocks, guard bytes around every output. */
#include "cpu_testing.h"

typedef struct table_entry {
  const char *name;
  const cpu_kernels *kern;
} table_entry;

static size_t kernel_tables(table_entry *out) {
  size_t n = 0;
  out[n++] = (table_entry){"scalar", &cpu_kernels_scalar};
#ifdef CPU_HAVE_AVX2_KERNELS
  if (cpu_detect_avx2()) out[n++] = (table_entry){"avx2", &cpu_kernels_avx2};
  else printf("# avx2 kernels not run: this CPU lacks AVX2/FMA/F16C\n");
#endif
  return n;
}

static float lut[256];

static void fill_decoded(tu_rng *rng, float *dst, size_t count) {
  for (size_t i = 0; i < count; i++) {
    uint8_t c;
    ct_fill_codes(rng, &c, 1);
    dst[i] = lut[c];
  }
}

/* Relative error of a against b with an absolute floor for tiny values. */
static void expect_close(double got, double want, double scale, double tol, const char *what,
                         size_t i, size_t j) {
  if (!(fabs(got - want) <= tol * scale))
    fail_msg("%s [%zu, %zu]: %.9g vs %.9g (scale %.3g)", what, i, j, got, want, scale);
}

static void test_gemm_6x16(void **state) {
  (void)state;
  tu_rng rng = tu_rng_make(tu_seed());
  table_entry tables[2];
  const size_t ntables = kernel_tables(tables);
  static const size_t kcs[] = {16, 112, 128, 144, 256, 272, 384};
  for (size_t t = 0; t < ntables; t++)
    for (size_t ki = 0; ki < sizeof kcs / sizeof kcs[0]; ki++)
      for (int accumulate = 0; accumulate < 2; accumulate++) {
        const size_t kc = kcs[ki], ng = (kc + 127) / 128, ldc = 21;
        float *a = aligned_alloc(64, kc * 6 * sizeof(float) + 64);
        float *b = aligned_alloc(64, kc * 16 * sizeof(float) + 64);
        float as[6 * 4], bs[4];
        fill_decoded(&rng, a, kc * 6);
        fill_decoded(&rng, b, kc * 16);
        for (size_t i = 0; i < 6 * ng; i++) as[i] = 1.0f + tu_uniform(&rng);
        for (size_t g = 0; g < ng; g++) bs[g] = 0.5f + tu_uniform(&rng) * 0.25f;
        float c[8 * 21], c0[8 * 21];
        for (size_t i = 0; i < 8 * ldc; i++) c0[i] = c[i] = tu_normal(&rng);
        tables[t].kern->gemm_6x16(kc, a, as, b, bs, c + ldc, ldc, accumulate);
        for (size_t i = 0; i < 8; i++)
          for (size_t j = 0; j < ldc; j++) {
            const int inside = i >= 1 && i <= 6 && j < 16;
            if (!inside) {
              if (memcmp(&c[i * ldc + j], &c0[i * ldc + j], 4))
                fail_msg("%s gemm_6x16 kc=%zu wrote outside C at [%zu, %zu]", tables[t].name, kc, i, j);
              continue;
            }
            double want = accumulate ? c0[i * ldc + j] : 0.0, scale = fabs(want);
            for (size_t g = 0; g < ng; g++) {
              double sum = 0, mag = 0;
              for (size_t k = g * 128; k < kc && k < (g + 1) * 128; k++) {
                sum += (double)a[(i - 1) * kc + k] * b[k * 16 + j];
                mag += fabs((double)a[(i - 1) * kc + k] * b[k * 16 + j]);
              }
              const double s = (double)as[g * 6 + i - 1] * bs[g];
              want += s * sum;
              scale += fabs(s) * mag;
            }
            expect_close(c[i * ldc + j], want, scale + 1e-30, 1e-5, tables[t].name, i - 1, j);
          }
        free(a);
        free(b);
      }
}

static void test_pack_b(void **state) {
  (void)state;
  tu_rng rng = tu_rng_make(tu_seed());
  table_entry tables[2];
  const size_t ntables = kernel_tables(tables);
  static const size_t kcs[] = {16, 48, 256};
  for (size_t t = 0; t < ntables; t++)
    for (size_t ki = 0; ki < 3; ki++)
      for (size_t rows = 1; rows <= 16; rows++) {
        const size_t kc = kcs[ki], ld = kc + 32;
        uint8_t *src = tu_malloc(rows * ld);
        ct_fill_codes(&rng, src, rows * ld);
        float *b = aligned_alloc(64, (kc * 16 + 16) * sizeof(float));
        for (int layout = 0; layout < 2; layout++) {
          for (size_t i = 0; i < kc * 16 + 16; i++) b[i] = NAN;
          if (layout == 0)
            tables[t].kern->pack_b_plain(kc, rows, src, ld, b, lut);
          else
            tables[t].kern->pack_b_preshuffled(kc, rows, src, b, lut);
          for (size_t k = 0; k < kc; k++)
            for (size_t r = 0; r < 16; r++) {
              const float want =
                  r >= rows ? 0.0f : lut[layout == 0 ? src[r * ld + k] : src[k * rows + r]];
              if (memcmp(&b[k * 16 + r], &want, 4))
                fail_msg("%s pack_b_%s kc=%zu rows=%zu: b[%zu][%zu] = %g, want %g", tables[t].name,
                         layout ? "preshuffled" : "plain", kc, rows, k, r, b[k * 16 + r], want);
            }
          for (size_t i = kc * 16; i < kc * 16 + 16; i++)
            if (!isnan(b[i])) fail_msg("%s pack_b wrote past the panel", tables[t].name);
        }
        free(src);
        free(b);
      }
}

/* out[r][j] for the GEMV kernels, in fp64, and the sum of magnitudes. */
static void gemv_expect(size_t r, size_t j, size_t K, const uint8_t *wrow_or_panel, int preshuffled,
                        const float *xd, const float *xs, size_t groups, const float *ws,
                        double *want, double *scale) {
  *want = 0;
  *scale = 0;
  for (size_t g = 0; g < groups; g++) {
    double sum = 0, mag = 0;
    for (size_t k = g * 128; k < K && k < (g + 1) * 128; k++) {
      const uint8_t code = preshuffled ? wrow_or_panel[k * 16 + j] : wrow_or_panel[k];
      const double p = (double)xd[r * K + k] * lut[code];
      sum += p;
      mag += fabs(p);
    }
    const double s = (double)xs[r * groups + g] * ws[g];
    *want += s * sum;
    *scale += fabs(s) * mag;
  }
}

static void test_gemv(void **state) {
  (void)state;
  tu_rng rng = tu_rng_make(tu_seed());
  table_entry tables[2];
  const size_t ntables = kernel_tables(tables);
  static const size_t ks[] = {16, 128, 144, 384, 400};
  for (size_t t = 0; t < ntables; t++)
    for (size_t ki = 0; ki < sizeof ks / sizeof ks[0]; ki++)
      for (size_t rows = 1; rows <= CPU_GEMV_MAX_ROWS; rows++) {
        const size_t K = ks[ki], groups = (K + 127) / 128;
        uint8_t *w = tu_malloc(16 * K);
        float *xd = tu_malloc(rows * K * sizeof(float)), *xs = tu_malloc(rows * groups * sizeof(float));
        float ws[4];
        ct_fill_codes(&rng, w, 16 * K);
        fill_decoded(&rng, xd, rows * K);
        for (size_t i = 0; i < rows * groups; i++) xs[i] = 1.0f + tu_uniform(&rng);
        for (size_t g = 0; g < groups; g++) ws[g] = 1.0f + 0.5f * tu_uniform(&rng);
        float out[CPU_GEMV_MAX_ROWS * 16 + 8];
        for (size_t i = 0; i < sizeof out / sizeof out[0]; i++) out[i] = NAN;
        tables[t].kern->gemv_preshuffled(rows, K, w, xd, K, xs, groups, ws, out, lut);
        for (size_t r = 0; r < rows; r++)
          for (size_t j = 0; j < 16; j++) {
            double want, scale;
            gemv_expect(r, j, K, w, 1, xd, xs, groups, ws, &want, &scale);
            expect_close(out[r * 16 + j], want, scale + 1e-30, 1e-5, "gemv_preshuffled", r, j);
          }
        for (size_t i = rows * 16; i < sizeof out / sizeof out[0]; i++)
          if (!isnan(out[i])) fail_msg("%s gemv_preshuffled rows=%zu wrote past out", tables[t].name, rows);
        for (size_t wrows = 1; wrows <= CPU_GEMV_PLAIN_WROWS; wrows++) {
          for (size_t i = 0; i < sizeof out / sizeof out[0]; i++) out[i] = NAN;
          tables[t].kern->gemv_plain(rows, wrows, K, w, K, xd, K, xs, groups, ws, out, lut);
          for (size_t r = 0; r < rows; r++)
            for (size_t j = 0; j < wrows; j++) {
              double want, scale;
              gemv_expect(r, 0, K, w + j * K, 0, xd, xs, groups, ws, &want, &scale);
              expect_close(out[r * CPU_GEMV_PLAIN_WROWS + j], want, scale + 1e-30, 1e-5,
                           "gemv_plain", r, j);
            }
        }
        free(w);
        free(xd);
        free(xs);
      }
}

static void test_decode_row(void **state) {
  (void)state;
  table_entry tables[2];
  const size_t ntables = kernel_tables(tables);
  uint8_t codes[272];
  float out[272 + 4];
  for (size_t i = 0; i < 272; i++) codes[i] = (uint8_t)(i * 37 + 11);
  for (size_t t = 0; t < ntables; t++) {
    for (size_t i = 0; i < 272 + 4; i++) out[i] = -1234.0f;
    tables[t].kern->decode_row(272, codes, out, lut);
    for (size_t i = 0; i < 272; i++) {
      if ((codes[i] & 0x7F) == 0x7F) continue; /* NaN codes: the fast path does not decode them */
      const float want = fp8gemm_e4m3fn_to_float(codes[i]) * 256.0f;
      if (memcmp(&out[i], &want, 4))
        fail_msg("%s decode_row: code 0x%02X -> %g, want %g", tables[t].name, codes[i], out[i], want);
    }
    for (size_t i = 272; i < 276; i++) assert_true(out[i] == -1234.0f);
  }
}

static void test_store_tile(void **state) {
  (void)state;
  tu_rng rng = tu_rng_make(tu_seed());
  table_entry tables[2];
  const size_t ntables = kernel_tables(tables);
  static const fp8gemm_dtype dtypes[] = {FP8GEMM_DTYPE_F32, FP8GEMM_DTYPE_BF16, FP8GEMM_DTYPE_F16};
  float c[6 * 20], bias[16];
  for (size_t t = 0; t < ntables; t++)
    for (size_t d = 0; d < 3; d++)
      for (int with_bias = 0; with_bias < 2; with_bias++)
        for (size_t ci = 0; ci < 7; ci++) {
          static const size_t col_counts[7] = {1, 2, 3, 7, 8, 15, 16};
          const size_t cols = col_counts[ci];
          for (size_t i = 0; i < 6 * 20; i++) c[i] = 100.0f * tu_normal(&rng);
          c[3] = NAN;
          c[21] = INFINITY;
          c[22] = 70000.0f; /* f16 overflow */
          c[40] = 1e-6f;    /* f16 subnormal */
          for (size_t j = 0; j < 16; j++) bias[j] = tu_normal(&rng);
          for (size_t rows = 1; rows <= 6; rows += 5) {
            ct_output y;
            ct_output_make(&y, rows, cols, 2, dtypes[d]);
            tables[t].kern->store_tile(rows, cols, c, 20, with_bias ? bias : NULL, dtypes[d],
                                       ct_output_ptr(&y), y.ld);
            ct_output_check_frame(&y, tables[t].name);
            for (size_t i = 0; i < rows; i++)
              for (size_t j = 0; j < cols; j++) {
                const float v = with_bias ? c[i * 20 + j] + bias[j] : c[i * 20 + j];
                unsigned char want[4];
                fp8gemm_store_from_float(dtypes[d], want, 0, v);
                if (memcmp((unsigned char *)ct_output_ptr(&y) + (i * y.ld + j) * y.elem, want, y.elem))
                  fail_msg("%s store_tile %s: [%zu, %zu] of %g differs from the core's conversion",
                           tables[t].name, fp8gemm_dtype_name(dtypes[d]), i, j, v);
              }
            ct_output_free(&y);
          }
        }
}

static void test_transpose_and_nan_scan(void **state) {
  (void)state;
  tu_rng rng = tu_rng_make(tu_seed());
  table_entry tables[2];
  const size_t ntables = kernel_tables(tables);
  uint8_t src[3 * 16 * 64], dst[3 * 16 * 64 + 64] __attribute__((aligned(64)));
  for (size_t i = 0; i < sizeof src; i++) src[i] = (uint8_t)tu_next(&rng);
  /* dst rows 20 apart and blocks 330 apart (unaligned), or the contiguous
   * aligned 16 x 256 of a preshuffled panel (the streaming stores). */
  static const size_t dst_geometry[2][2] = {{20, 330}, {16, 256}};
  for (size_t t = 0; t < ntables; t++)
    for (int streamed = 0; streamed < 2; streamed++)
      for (int geo = 0; geo < 2; geo++)
        for (size_t blocks = 1; blocks <= 3; blocks++) {
          const size_t ld = dst_geometry[geo][0], step = dst_geometry[geo][1];
          memset(dst, 0xA5, sizeof dst);
          /* src rows 64 apart, blocks 16 apart. */
          (streamed ? tables[t].kern->transpose_16x16_stream : tables[t].kern->transpose_16x16)(
              blocks, src, 64, 16, dst, ld, step);
          for (size_t b = 0; b < blocks; b++)
            for (size_t i = 0; i < 16; i++)
              for (size_t j = 0; j < 16; j++)
                if (dst[b * step + j * ld + i] != src[b * 16 + i * 64 + j])
                  fail_msg("%s transpose%s block %zu (%zu, %zu)", tables[t].name,
                           streamed ? "_stream" : "", b, i, j);
          for (size_t i = 0; i < sizeof dst; i++) {
            const size_t b = i / step, rest = i % step;
            const int inside = b < blocks && rest / ld < 16 && rest % ld < 16;
            if (!inside && dst[i] != 0xA5) fail_msg("%s transpose wrote byte %zu", tables[t].name, i);
          }
        }
  /* NaN scan: every position in a 1000-byte buffer, both NaN codes. */
  uint8_t *buf = tu_malloc(1000);
  for (size_t t = 0; t < ntables; t++) {
    for (size_t i = 0; i < 1000; i++) {
      uint8_t c = (uint8_t)tu_next(&rng);
      if ((c & 0x7F) == 0x7F) c = 0x7E;
      buf[i] = c;
    }
    assert_int_equal(tables[t].kern->find_nan_code(1000, buf), SIZE_MAX);
    for (size_t pos = 0; pos < 1000; pos += 7) {
      const uint8_t keep = buf[pos];
      buf[pos] = pos % 2 ? 0x7F : 0xFF;
      if (pos + 100 < 1000) buf[pos + 100] = 0x7F; /* a later one must not win */
      assert_int_equal(tables[t].kern->find_nan_code(1000, buf), pos);
      assert_int_equal(tables[t].kern->find_nan_code(pos, buf), SIZE_MAX);
      buf[pos] = keep;
      if (pos + 100 < 1000) buf[pos + 100] = 0x7E;
    }
  }
  free(buf);
}

/* Encoding: quantize_span with scale 1 against the core's scalar codec on a
 * dense stride through all fp32 bit patterns plus the edges. */
static void test_encode_exhaustive_stride(void **state) {
  (void)state;
  table_entry tables[2];
  const size_t ntables = kernel_tables(tables);
  enum { CHUNK = 4096 };
  float *values = tu_malloc(CHUNK * sizeof(float));
  uint8_t codes[CHUNK];
  static const float edges[] = {0.0f,      -0.0f,     448.0f,    -448.0f,   464.0f,  464.0001f,
                                480.0f,    1e30f,     INFINITY,  -INFINITY, NAN,     -NAN,
                                0x1p-6f,   0x1p-7f,   0x1p-9f,   0x1p-10f,  0x1.8p-10f, 0x1.7p-10f,
                                0x1.2p-6f, 0x1.1p-6f, 0x1.9p-1f, 1e-40f,    -1e-45f, 0x1.Fp8f,
                                0x1.E8p8f, 0x1.DFp8f, 0x1.C8p8f};
  for (size_t t = 0; t < ntables; t++) {
    uint64_t pattern = 0;
    size_t fill = 0;
    for (size_t i = 0; i < sizeof edges / sizeof edges[0]; i++) values[fill++] = edges[i];
    while (pattern <= 0xFFFFFFFFull) {
      while (fill < CHUNK && pattern <= 0xFFFFFFFFull) {
        const uint32_t bits = (uint32_t)pattern;
        memcpy(&values[fill++], &bits, 4);
        pattern += 1021; /* prime stride: ~4.2M patterns, all exponents and mantissa bits */
      }
      const size_t n = fill & ~(size_t)15;
      tables[t].kern->quantize_span(n, FP8GEMM_DTYPE_F32, values, 1.0f, codes);
      for (size_t i = 0; i < n; i++) {
        const uint8_t want = fp8gemm_e4m3fn_from_float(values[i] / 1.0f);
        if (codes[i] != want) {
          uint32_t bits;
          memcpy(&bits, &values[i], 4);
          fail_msg("%s encode 0x%08X (%g): 0x%02X, want 0x%02X", tables[t].name, bits,
                   (double)values[i], codes[i], want);
        }
      }
      memmove(values, values + n, (fill - n) * sizeof(float));
      fill -= n;
    }
  }
  free(values);
}

static int setup(void **state) {
  (void)state;
  cpu_fill_decode_lut(lut);
  return 0;
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gemm_6x16),       cmocka_unit_test(test_pack_b),
      cmocka_unit_test(test_gemv),            cmocka_unit_test(test_decode_row),
      cmocka_unit_test(test_store_tile),      cmocka_unit_test(test_transpose_and_nan_scan),
      cmocka_unit_test(test_encode_exhaustive_stride),
  };
  return cmocka_run_group_tests(tests, setup, NULL);
}
