/* fp8gemm_sass_hints (cmake/sass_hints.c) on synthetic files: a CUDA ELF
 * image embedded after other bytes, with a matching kernel's .text holding
 * a long FFMA run, a short one and other instructions, and a kernel that
 * does not match. Only the hint bits of the long run's FFMAs may change;
 * --share, --check, files without device code and broken headers. */
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#ifndef FP8GEMM_SASS_HINTS_PATH
#error "FP8GEMM_SASS_HINTS_PATH must name the built fp8gemm_sass_hints tool"
#endif

enum { kPrefix = 333, kLongRun = 40, kShortRun = 7, kInstrs = kLongRun + 1 + kShortRun + 2 };
static const uint64_t kYield = 1ull << 45, kReuse = 0xFull << 58;

static char dir[64];
static unsigned char original[1 << 16];
static size_t original_size;
static size_t text_at[2]; /* file offsets of the matching / other kernel's code */

static void put16(unsigned char *p, uint16_t v) { p[0] = (unsigned char)v, p[1] = (unsigned char)(v >> 8); }
static void put32(unsigned char *p, uint32_t v) { put16(p, (uint16_t)v), put16(p + 2, (uint16_t)(v >> 16)); }
static void put64(unsigned char *p, uint64_t v) { put32(p, (uint32_t)v), put32(p + 4, (uint32_t)(v >> 32)); }
static uint64_t get64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* Instruction k of a kernel's code: FFMAs (opcode 0x223) with alternating
 * hints as ptxas writes them (even: stay + reuse flag; odd: neither), an
 * IMAD (0x224) after the long run, a short FFMA run, two FMULs (0xc20). */
static void instruction(int k, uint64_t *lo, uint64_t *hi) {
  uint64_t op = 0x223;
  if (k == kLongRun) op = 0x224;
  if (k > kLongRun + kShortRun) op = 0xc20;
  *lo = op | (uint64_t)(k * 0x1234567) << 16;
  *hi = 0x000fe200000000b0ull ^ ((uint64_t)k << 3);
  if (k % 2 == 0) *hi |= kYield | (2ull << 58);
  else *hi &= ~(kYield | kReuse);
}

/* junk, then an ELF64 image: header, .shstrtab, two .text sections, the
 * section header table. */
static void build_image(void) {
  unsigned char *d = original;
  memset(d, 0, sizeof original);
  for (int i = 0; i < kPrefix; i++) d[i] = (unsigned char)(i * 7 + 1);
  d[5] = 0x7f, d[6] = 'E', d[7] = 'L', d[8] = 'F'; /* a false start: not an image */
  unsigned char *h = d + kPrefix;
  h[0] = 0x7f, h[1] = 'E', h[2] = 'L', h[3] = 'F', h[4] = 2, h[5] = 1, h[6] = 1;
  put16(h + 18, 190);
  const char names[] = "\0.shstrtab\0.text.gemm_large_kernel_256\0.text.gemm_stream_kernel\0";
  const size_t names_at = 64, text0 = 256, text1 = text0 + 16 * kInstrs;
  const size_t shoff = text1 + 16 * kInstrs;
  memcpy(h + names_at, names, sizeof names);
  for (int s = 0; s < 2; s++)
    for (int k = 0; k < kInstrs; k++) {
      uint64_t lo, hi;
      instruction(k, &lo, &hi);
      put64(h + (s ? text1 : text0) + 16 * k, lo);
      put64(h + (s ? text1 : text0) + 16 * k + 8, hi);
    }
  put64(h + 0x28, shoff);
  put16(h + 0x3A, 64);
  put16(h + 0x3C, 4);
  put16(h + 0x3E, 1);
  const struct {
    uint32_t name;
    size_t off, size;
  } sec[4] = {{0, 0, 0}, {1, names_at, sizeof names}, {11, text0, 16 * kInstrs},
              {39, text1, 16 * kInstrs}};
  for (int s = 0; s < 4; s++) {
    unsigned char *e = h + shoff + 64 * s;
    put32(e, sec[s].name);
    put64(e + 0x18, sec[s].off);
    put64(e + 0x20, sec[s].size);
  }
  text_at[0] = kPrefix + text0;
  text_at[1] = kPrefix + text1;
  original_size = kPrefix + shoff + 4 * 64 + 100;
}

static const char *write_file(const char *name, const unsigned char *data, size_t size) {
  static char path[128];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(data, 1, size, f), size);
  assert_int_equal(fclose(f), 0);
  return path;
}

/* The file's bytes into data (it must fit in cap); its size. */
static size_t read_file(const char *path, unsigned char *data, size_t cap) {
  size_t size;
  unsigned char *bytes = tu_read_file(path, &size);
  assert_true(size <= cap);
  memcpy(data, bytes, size);
  free(bytes);
  return size;
}

/* Runs the tool with a NULL-terminated argument list; its exit status. */
static int run_tool(const char *first, ...) {
  va_list args;
  va_start(args, first);
  const int status = tu_run_program(FP8GEMM_SASS_HINTS_PATH, NULL, NULL, 0, first, args);
  va_end(args);
  return status;
}

/* Expects `got` to be the original with the hints of the first `edited`
 * FFMAs of the matching kernel's long run cleared, and nothing else. */
static void expect_edited(const unsigned char *got, int edited) {
  for (size_t i = 0; i < original_size; i++) {
    const int in_hints = i >= text_at[0] && i < text_at[0] + 16 * (size_t)edited &&
                         (i - text_at[0]) % 16 >= 8;
    if (!in_hints && got[i] != original[i]) fail_msg("byte %zu changed", i);
  }
  for (int k = 0; k < edited; k++) {
    uint64_t lo, hi;
    instruction(k, &lo, &hi);
    const uint64_t now = get64(got + text_at[0] + 16 * k + 8);
    assert_int_equal(now, hi & ~(kYield | kReuse));
    assert_int_equal(get64(got + text_at[0] + 16 * k), lo);
  }
}

static void test_edits_the_long_runs_of_matching_kernels(void **state) {
  (void)state;
  static unsigned char got[sizeof original];
  const char *path = write_file("image.bin", original, original_size);
  assert_int_not_equal(run_tool("--check", path, NULL), 0); /* hints left to clear */
  assert_int_equal(run_tool(path, NULL), 0);
  assert_int_equal(read_file(path, got, sizeof got), original_size);
  expect_edited(got, kLongRun);
  assert_int_equal(run_tool("--check", path, NULL), 0);
  /* Idempotent. */
  assert_int_equal(run_tool(path, NULL), 0);
  assert_int_equal(read_file(path, got, sizeof got), original_size);
  expect_edited(got, kLongRun);
}

static void test_share_and_min_run(void **state) {
  (void)state;
  static unsigned char got[sizeof original];
  const char *path = write_file("share.bin", original, original_size);
  assert_int_equal(run_tool("--share", "0.5", path, NULL), 0);
  assert_int_equal(read_file(path, got, sizeof got), original_size);
  expect_edited(got, kLongRun / 2);
  assert_int_equal(run_tool("--share", "1.5", path, NULL), 2);
  assert_int_equal(run_tool("--share", "nan", path, NULL), 2);
  /* A run must be at least --min-run long: 41 is longer than the long run. */
  path = write_file("minrun.bin", original, original_size);
  assert_int_equal(run_tool("--min-run", "41", path, NULL), 0);
  assert_int_equal(read_file(path, got, sizeof got), original_size);
  expect_edited(got, 0);
  /* The other kernel, named. */
  path = write_file("other.bin", original, original_size);
  assert_int_equal(run_tool("--kernels", "gemm_stream_kernel", path, NULL), 0);
  assert_int_equal(read_file(path, got, sizeof got), original_size);
  for (size_t i = 0; i < text_at[1]; i++) assert_int_equal(got[i], original[i]);
  assert_int_equal(get64(got + text_at[1] + 8), 0x000fe200000000b0ull & ~(kYield | kReuse));
}

static void test_refuses_files_without_device_code(void **state) {
  (void)state;
  static unsigned char broken[sizeof original];
  const char *path = write_file("plain.bin", original, kPrefix); /* the junk alone */
  assert_int_equal(run_tool(path, NULL), 1);
  assert_int_equal(run_tool("--kernels", "no_such_kernel",
                            write_file("image2.bin", original, original_size), NULL), 1);
  /* Section headers past the end, a string table past the end, not CUDA,
   * truncated: no image found, nothing written, no crash. */
  for (int c = 0; c < 4; c++) {
    memcpy(broken, original, original_size);
    size_t size = original_size;
    unsigned char *h = broken + kPrefix;
    if (c == 0) put64(h + 0x28, 1ull << 40);
    if (c == 1) put64(h + get64(h + 0x28) + 64 + 0x18, 1ull << 33);
    if (c == 2) put16(h + 18, 62);
    if (c == 3) size = kPrefix + 40;
    path = write_file("broken.bin", broken, size);
    assert_int_equal(run_tool(path, NULL), 1);
    static unsigned char got[sizeof original];
    assert_int_equal(read_file(path, got, sizeof got), size);
    assert_memory_equal(got, broken, size);
  }
  assert_int_equal(run_tool(NULL), 2);
  assert_int_equal(run_tool("--bogus", path, NULL), 2);
  char missing[128];
  snprintf(missing, sizeof missing, "%s/missing.bin", dir);
  assert_int_equal(run_tool(missing, NULL), 1);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/fp8gemm-sass-XXXXXX");
  if (!mkdtemp(dir)) return 1;
  build_image();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_edits_the_long_runs_of_matching_kernels),
      cmocka_unit_test(test_share_and_min_run),
      cmocka_unit_test(test_refuses_files_without_device_code),
  };
  const int failed = cmocka_run_group_tests(tests, NULL, NULL);
  char cmd[160];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) return 1;
  return failed;
}
