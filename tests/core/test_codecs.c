/* FP8 codecs against an independent model written here from the format
 * definitions: all 256 codes decoded, and encoding checked at every value,
 * every midpoint (ties to even), just off every midpoint, specials and
 * random floats. */
#include <float.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

typedef struct format_model {
  const char *name;
  int bias;
  double max;
  double values[256]; /* NAN for NaN codes */
  float (*decode)(uint8_t);
  uint8_t (*encode)(float);
  int fnuz;
} format_model;

static void build_model(format_model *f) {
  for (int c = 0; c < 256; c++) {
    int sign = c >> 7, e = (c >> 3) & 15, m = c & 7;
    double v;
    if (!f->fnuz && e == 15 && m == 7) v = NAN;
    else if (f->fnuz && c == 0x80) v = NAN;
    else if (e == 0) v = (m / 8.0) * pow(2.0, 1 - f->bias);
    else v = (1.0 + m / 8.0) * pow(2.0, e - f->bias);
    f->values[c] = sign ? -v : v;
  }
}

/* Nearest code by brute force; ties to the code with an even mantissa. */
static uint8_t model_encode(const format_model *f, double v) {
  if (isnan(v)) return f->fnuz ? 0x80 : (signbit(v) ? 0xFF : 0x7F);
  if (v > f->max) v = f->max;
  if (v < -f->max) v = -f->max;
  int best = -1;
  double best_d = INFINITY;
  for (int c = 0; c < 256; c++) {
    if (isnan(f->values[c])) continue;
    if (!signbit(v) != !signbit(f->values[c]) && f->values[c] != 0) continue;
    double d = fabs(f->values[c] - v);
    if (d < best_d || (d == best_d && (c & 1) == 0 && (best & 1) == 1)) {
      best_d = d;
      best = c;
    }
  }
  uint8_t code = (uint8_t)best;
  if (f->values[code] == 0) code = (!f->fnuz && signbit(v)) ? 0x80 : 0x00;
  return code;
}

static void check_encode(const format_model *f, float v) {
  uint8_t got = f->encode(v), want = model_encode(f, (double)v);
  if (got != want) fail_msg("%s encode(%a = %g): got 0x%02X, want 0x%02X", f->name, (double)v, (double)v, got, want);
}

static void run_format(format_model *f) {
  build_model(f);
  int nan_codes = 0;
  for (int c = 0; c < 256; c++) {
    float got = f->decode((uint8_t)c);
    if (isnan(f->values[c])) {
      nan_codes++;
      if (!isnan(got)) fail_msg("%s decode(0x%02X) = %g, want NaN", f->name, c, (double)got);
      continue;
    }
    if ((double)got != f->values[c] || !signbit(got) != !signbit(f->values[c]))
      fail_msg("%s decode(0x%02X) = %g, want %g", f->name, c, (double)got, f->values[c]);
    /* Every finite code round-trips (except -0 on fnuz, which has none). */
    check_encode(f, got);
  }
  assert_int_equal(nan_codes, f->fnuz ? 1 : 2);
  /* Midpoints between neighbours, and one float ulp either side. */
  double sorted[256];
  int count = 0;
  for (int c = 0; c < 128; c++)
    if (!isnan(f->values[c])) sorted[count++] = f->values[c];
  for (int i = 0; i + 1 < count; i++) {
    float mid = (float)((sorted[i] + sorted[i + 1]) / 2);
    for (int s = -1; s <= 1; s += 2) {
      check_encode(f, s * mid);
      check_encode(f, s * nextafterf(mid, 0));
      check_encode(f, s * nextafterf(mid, INFINITY));
    }
  }
  const float specials[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 1e-45f, -1e-45f, 1e-38f,
                            1e30f, -1e30f, (float)f->max, -(float)f->max, 464.0f, 465.0f, 241.0f,
                            248.0f, 1.0f / 1024, 1.0f / 512, 3.0f / 1024, 0.0009765625f};
  for (size_t i = 0; i < sizeof specials / sizeof specials[0]; i++) check_encode(f, specials[i]);
  tu_rng rng = tu_rng_make(tu_seed());
  for (int i = 0; i < 200000; i++) {
    float v = tu_normal(&rng) * ldexpf(1.0f, (int)(tu_next(&rng) % 30) - 15);
    check_encode(f, v);
  }
}

static void test_e4m3fn(void **state) {
  (void)state;
  static format_model f = {"e4m3fn", 7, 448.0, {0}, fp8gemm_e4m3fn_to_float, fp8gemm_e4m3fn_from_float, 0};
  run_format(&f);
  assert_int_equal(fp8gemm_e4m3fn_from_float(NAN), 0x7F);
  assert_int_equal(fp8gemm_e4m3fn_from_float(-NAN), 0xFF);
  assert_int_equal(fp8gemm_e4m3fn_from_float(INFINITY), 0x7E);
  assert_int_equal(fp8gemm_e4m3fn_from_float(-INFINITY), 0xFE);
}

static void test_e4m3fnuz(void **state) {
  (void)state;
  static format_model f = {"e4m3fnuz", 8, 240.0, {0}, fp8gemm_e4m3fnuz_to_float, fp8gemm_e4m3fnuz_from_float, 1};
  run_format(&f);
  assert_int_equal(fp8gemm_e4m3fnuz_from_float(-0.0f), 0x00);
  assert_int_equal(fp8gemm_e4m3fnuz_from_float(NAN), 0x80);
  assert_int_equal(fp8gemm_e4m3fnuz_from_float(1e9f), 0x7F);
}

/* The AVX2 decode trick of REFERENCE section 1 (byte in the high half of a
 * 16-bit lane, arithmetic shift right 1, clear bit 14 = fp16 of value/256)
 * holds for every finite e4m3fn code: checked here in scalar form against
 * the decoder, since the CPU kernels rely on it. */
static void test_f16_trick_matches_decoder(void **state) {
  (void)state;
  for (int c = 0; c < 256; c++) {
    if ((c & 0x7F) == 0x7F) continue;
    int16_t lane = (int16_t)(uint16_t)(c << 8);
    uint16_t bits = (uint16_t)((uint16_t)(lane >> 1) & ~0x4000u);
    float v = fp8gemm_f16_to_float(bits) * 256.0f;
    float want = fp8gemm_e4m3fn_to_float((uint8_t)c);
    if (v != want) fail_msg("code 0x%02X: trick %g, decoder %g", c, (double)v, (double)want);
  }
}

static void test_bf16_f16(void **state) {
  (void)state;
  /* All 65536 16-bit patterns round-trip through float (NaNs stay NaN). */
  for (uint32_t b = 0; b < 65536; b++) {
    float fb = fp8gemm_bf16_to_float((uint16_t)b), fh = fp8gemm_f16_to_float((uint16_t)b);
    if (isnan(fb)) assert_true(isnan(fp8gemm_bf16_to_float(fp8gemm_bf16_from_float(fb))));
    else assert_int_equal(fp8gemm_bf16_from_float(fb), b);
    if (isnan(fh)) assert_true(isnan(fp8gemm_f16_to_float(fp8gemm_f16_from_float(fh))));
    else assert_int_equal(fp8gemm_f16_from_float(fh), b);
  }
  /* Rounding: nearest even, by comparing with the two neighbours. */
  tu_rng rng = tu_rng_make(tu_seed());
  for (int i = 0; i < 200000; i++) {
    uint32_t u = (uint32_t)tu_next(&rng);
    float v;
    memcpy(&v, &u, sizeof v);
    if (isnan(v)) continue;
    uint16_t h = fp8gemm_f16_from_float(v);
    double got = fp8gemm_f16_to_float(h);
    if (fabs((double)v) >= 65520.0) {
      assert_true(isinf(got));
      continue;
    }
    double lo = fp8gemm_f16_to_float((uint16_t)(h - 1)), hi = fp8gemm_f16_to_float((uint16_t)(h + 1));
    double d = fabs(got - v);
    if ((h & 0x7FFF) != 0 && (h & 0x7C00) != 0x7C00) {
      if (!isnan(lo) && !isinf(lo)) assert_true(d <= fabs(lo - v));
      if (!isnan(hi) && !isinf(hi)) assert_true(d <= fabs(hi - v));
    }
    uint16_t b = fp8gemm_bf16_from_float(v);
    double gb = fp8gemm_bf16_to_float(b);
    if (isinf(gb) && !isinf(v)) continue; /* rounds past the largest finite */
    if (fabsf(v) < 0x1.0p-126f) continue;  /* subnormal: absolute, not relative, steps */
    assert_true(fabs(gb - v) <= fabs(v) * 0x1.0p-8);
  }
  assert_int_equal(fp8gemm_bf16_from_float(1.0f + 0x1.0p-8f), 0x3F80); /* tie -> even */
  assert_int_equal(fp8gemm_bf16_from_float(1.0f + 0x1.8p-8f), 0x3F81);
  assert_int_equal(fp8gemm_f16_from_float(65504.0f), 0x7BFF);
  assert_int_equal(fp8gemm_f16_from_float(65520.0f), 0x7C00);
  assert_int_equal(fp8gemm_f16_from_float(0x1.0p-25f), 0x0000); /* tie -> even (0) */
  assert_int_equal(fp8gemm_f16_from_float(0x1.8p-24f), 0x0002);
}

static void test_dtype_names(void **state) {
  (void)state;
  assert_string_equal(fp8gemm_dtype_name(FP8GEMM_DTYPE_BF16), "bf16");
  assert_int_equal(fp8gemm_dtype_size(FP8GEMM_DTYPE_F32), 4);
  assert_int_equal(fp8gemm_dtype_size((fp8gemm_dtype)99), 0);
  assert_string_equal(fp8gemm_status_string(FP8GEMM_ERROR_LAYOUT_MISMATCH), "layout mismatch");
  for (int s = 0; s <= FP8GEMM_ERROR_INTERNAL; s++)
    assert_string_not_equal(fp8gemm_status_string((fp8gemm_status)s), "unknown status");
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_e4m3fn),          cmocka_unit_test(test_e4m3fnuz),
      cmocka_unit_test(test_f16_trick_matches_decoder), cmocka_unit_test(test_bf16_f16),
      cmocka_unit_test(test_dtype_names),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
