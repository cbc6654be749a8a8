/* Number formats: names and sizes, the FP8 codecs, 16-bit floats. The FP8
 * codecs are written from the format definitions (sign, exponent with bias,
 * 3 mantissa bits), not from tables, so tests can check all 256 codes
 * against an independent implementation. */
#include <math.h>
#include <string.h>

#include "internal.h"

const char *fp8gemm_dtype_name(fp8gemm_dtype dtype) {
  switch (dtype) {
    case FP8GEMM_DTYPE_F32: return "f32";
    case FP8GEMM_DTYPE_BF16: return "bf16";
    case FP8GEMM_DTYPE_F16: return "f16";
    case FP8GEMM_DTYPE_E4M3FN: return "e4m3fn";
    case FP8GEMM_DTYPE_E4M3FNUZ: return "e4m3fnuz";
  }
  return "unknown";
}

size_t fp8gemm_dtype_size(fp8gemm_dtype dtype) {
  switch (dtype) {
    case FP8GEMM_DTYPE_F32: return 4;
    case FP8GEMM_DTYPE_BF16:
    case FP8GEMM_DTYPE_F16: return 2;
    case FP8GEMM_DTYPE_E4M3FN:
    case FP8GEMM_DTYPE_E4M3FNUZ: return 1;
  }
  return 0;
}

/* e4m3 with the given exponent bias: magnitude code (7 bits) of |value|,
 * which must be finite and <= the format's largest finite value. */
static uint8_t e4m3_magnitude_code(float magnitude, int bias) {
  if (magnitude == 0.0f) return 0;
  int exp2_plus_one;
  (void)frexpf(magnitude, &exp2_plus_one);
  int exponent = exp2_plus_one - 1; /* magnitude = 1.f * 2^exponent */
  const int min_normal_exponent = 1 - bias;
  if (exponent < min_normal_exponent) exponent = min_normal_exponent; /* subnormal range */
  /* Quantum of 3 mantissa bits at this exponent; the division is exact. */
  const float quantum = ldexpf(1.0f, exponent - 3);
  unsigned steps = (unsigned)rintf(magnitude / quantum); /* round half to even */
  if (steps < 8) return (uint8_t)steps;                   /* subnormal (exponent field 0) */
  unsigned field = (unsigned)(exponent + bias);
  if (steps == 16) { /* rounding carried into the next binade */
    steps = 8;
    field += 1;
  }
  return (uint8_t)((field << 3) | (steps - 8));
}

uint8_t fp8gemm_e4m3fn_from_float(float value) {
  const uint8_t sign = signbit(value) ? 0x80 : 0x00;
  if (isnan(value)) return sign | 0x7F;
  float magnitude = fabsf(value);
  if (magnitude > 448.0f) magnitude = 448.0f; /* saturate, +-Inf too */
  return sign | e4m3_magnitude_code(magnitude, 7);
}

float fp8gemm_e4m3fn_to_float(uint8_t code) {
  const int exponent_field = (code >> 3) & 0xF, mantissa = code & 0x7;
  float magnitude;
  if (exponent_field == 0xF && mantissa == 0x7)
    magnitude = NAN;
  else if (exponent_field == 0)
    magnitude = ldexpf((float)mantissa, -9); /* m/8 * 2^-6 */
  else
    magnitude = ldexpf(1.0f + (float)mantissa / 8.0f, exponent_field - 7);
  return (code & 0x80) ? -magnitude : magnitude;
}

uint8_t fp8gemm_e4m3fnuz_from_float(float value) {
  if (isnan(value)) return 0x80;
  float magnitude = fabsf(value);
  if (magnitude > 240.0f) magnitude = 240.0f;
  const uint8_t code = e4m3_magnitude_code(magnitude, 8);
  if (code == 0) return 0x00; /* no negative zero: 0x80 is NaN */
  return (signbit(value) ? 0x80 : 0x00) | code;
}

float fp8gemm_e4m3fnuz_to_float(uint8_t code) {
  if (code == 0x80) return NAN;
  const int exponent_field = (code >> 3) & 0xF, mantissa = code & 0x7;
  float magnitude;
  if (exponent_field == 0)
    magnitude = ldexpf((float)mantissa, -10); /* m/8 * 2^-7 */
  else
    magnitude = ldexpf(1.0f + (float)mantissa / 8.0f, exponent_field - 8);
  return (code & 0x80) ? -magnitude : magnitude;
}

static uint32_t float_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

static float bits_float(uint32_t u) {
  float f;
  memcpy(&f, &u, sizeof f);
  return f;
}

uint16_t fp8gemm_bf16_from_float(float value) {
  uint32_t u = float_bits(value);
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (uint16_t)((u >> 16) | 0x0040); /* quiet NaN */
  u += 0x7FFFu + ((u >> 16) & 1u);                                          /* nearest even */
  return (uint16_t)(u >> 16);
}

float fp8gemm_bf16_to_float(uint16_t bits) { return bits_float((uint32_t)bits << 16); }

uint16_t fp8gemm_f16_from_float(float value) {
  const uint32_t u = float_bits(value);
  const uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
  const uint32_t magnitude_bits = u & 0x7FFFFFFFu;
  if (magnitude_bits > 0x7F800000u) return sign | 0x7E00 | (uint16_t)((magnitude_bits >> 13) & 0x3FF);
  if (magnitude_bits >= 0x477FF000u) return sign | 0x7C00; /* rounds to >= 65520: Inf */
  if (magnitude_bits < 0x38800000u) {                      /* below 2^-14: subnormal */
    /* Scaling by 2^24 is exact; rintf rounds half to even. 1024 encodes the
     * smallest normal, which is right. */
    return sign | (uint16_t)rintf(bits_float(magnitude_bits) * 16777216.0f);
  }
  uint32_t rebiased = magnitude_bits - 0x38000000u; /* exponent bias 127 -> 15 */
  rebiased += 0xFFFu + ((rebiased >> 13) & 1u);
  return sign | (uint16_t)(rebiased >> 13);
}

float fp8gemm_f16_to_float(uint16_t bits) {
  const uint32_t sign = (uint32_t)(bits & 0x8000u) << 16;
  const uint32_t exponent = (bits >> 10) & 0x1Fu, mantissa = bits & 0x3FFu;
  if (exponent == 0) {
    const float magnitude = ldexpf((float)mantissa, -24);
    return sign ? -magnitude : magnitude;
  }
  if (exponent == 0x1F) return bits_float(sign | 0x7F800000u | (mantissa << 13));
  return bits_float(sign | ((exponent + 112u) << 23) | (mantissa << 13));
}

float fp8gemm_load_as_float(fp8gemm_dtype dtype, const void *base, size_t index) {
  switch (dtype) {
    case FP8GEMM_DTYPE_F32: return ((const float *)base)[index];
    case FP8GEMM_DTYPE_BF16: return fp8gemm_bf16_to_float(((const uint16_t *)base)[index]);
    case FP8GEMM_DTYPE_F16: return fp8gemm_f16_to_float(((const uint16_t *)base)[index]);
    case FP8GEMM_DTYPE_E4M3FN: return fp8gemm_e4m3fn_to_float(((const uint8_t *)base)[index]);
    case FP8GEMM_DTYPE_E4M3FNUZ: return fp8gemm_e4m3fnuz_to_float(((const uint8_t *)base)[index]);
  }
  return NAN;
}

void fp8gemm_store_from_float(fp8gemm_dtype dtype, void *base, size_t index, float value) {
  switch (dtype) {
    case FP8GEMM_DTYPE_F32: ((float *)base)[index] = value; break;
    case FP8GEMM_DTYPE_BF16: ((uint16_t *)base)[index] = fp8gemm_bf16_from_float(value); break;
    case FP8GEMM_DTYPE_F16: ((uint16_t *)base)[index] = fp8gemm_f16_from_float(value); break;
    case FP8GEMM_DTYPE_E4M3FN: ((uint8_t *)base)[index] = fp8gemm_e4m3fn_from_float(value); break;
    case FP8GEMM_DTYPE_E4M3FNUZ: ((uint8_t *)base)[index] = fp8gemm_e4m3fnuz_from_float(value); break;
  }
}
