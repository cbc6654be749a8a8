/* safetensors reader and writer: round trips, every validation rule of the
 * reader (each case is built to pass every other rule, so that removing
 * the rule under test makes the case open or fail with another message),
 * and atomic writes that leave nothing behind on failure. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "internal.h" /* fp8gemm_set_error, for a failing fill callback */
#include "testutil.h"

/* ---- helpers --------------------------------------------------------------- */

static char *make_temp_dir(void) {
  const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
  char *dir = tu_malloc(strlen(base) + 32);
  sprintf(dir, "%s/fp8gemm-io-XXXXXX", base);
  if (!mkdtemp(dir)) fail_msg("mkdtemp: %s", strerror(errno));
  return dir;
}

static char *join(const char *dir, const char *name) {
  char *path = tu_malloc(strlen(dir) + strlen(name) + 2);
  sprintf(path, "%s/%s", dir, name);
  return path;
}

static size_t count_entries(const char *dir) {
  DIR *d = opendir(dir);
  assert_non_null(d);
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static void remove_tree(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
    char *p = join(dir, e->d_name);
    struct stat st;
    if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
      remove_tree(p);
    else
      unlink(p);
    free(p);
  }
  closedir(d);
  rmdir(dir);
}

/* 8-byte length + header text + `data_size` bytes of a pattern. */
static uint8_t *make_bytes(const char *header, size_t data_size, size_t *size) {
  size_t h = strlen(header);
  *size = 8 + h + data_size;
  uint8_t *bytes = tu_malloc(*size + 1);
  for (int i = 0; i < 8; i++) bytes[i] = (uint8_t)((uint64_t)h >> (8 * i));
  memcpy(bytes + 8, header, h);
  for (size_t i = 0; i < data_size; i++) bytes[8 + h + i] = (uint8_t)(i * 7 + 1);
  return bytes;
}

/* ---- dtypes ------------------------------------------------------------------ */

static void test_dtype_names(void **state) {
  (void)state;
  for (int d = 0; d < FP8GEMM_ST_DTYPE_COUNT; d++) {
    const char *name = fp8gemm_st_dtype_name((fp8gemm_st_dtype)d);
    assert_non_null(name);
    fp8gemm_st_dtype back;
    TU_OK(fp8gemm_st_dtype_from_name(name, &back));
    assert_int_equal(back, d);
    size_t size = fp8gemm_st_dtype_size((fp8gemm_st_dtype)d);
    assert_true(size == 1 || size == 2 || size == 4 || size == 8);
  }
  assert_int_equal(fp8gemm_st_dtype_size(FP8GEMM_ST_BF16), 2);
  assert_int_equal(fp8gemm_st_dtype_size(FP8GEMM_ST_F8_E4M3), 1);
  assert_int_equal(fp8gemm_st_dtype_size(FP8GEMM_ST_F64), 8);
  assert_null(fp8gemm_st_dtype_name((fp8gemm_st_dtype)99));
  assert_int_equal(fp8gemm_st_dtype_size((fp8gemm_st_dtype)99), 0);
  fp8gemm_st_dtype d;
  TU_EXPECT_ERROR(fp8gemm_st_dtype_from_name("F128", &d), FP8GEMM_ERROR_INVALID_ARGUMENT, "F128");
  TU_EXPECT_ERROR(fp8gemm_st_dtype_from_name("F4", &d), FP8GEMM_ERROR_UNSUPPORTED, "sub-byte");
  TU_EXPECT_ERROR(fp8gemm_st_dtype_from_name(NULL, &d), FP8GEMM_ERROR_INVALID_ARGUMENT, "name");
}

/* ---- round trip ------------------------------------------------------------- */

typedef struct fill_state {
  int calls;
  uint8_t value;
} fill_state;

static fp8gemm_status fill_constant(void *user, void *dst, size_t bytes) {
  fill_state *s = user;
  s->calls++;
  memset(dst, s->value, bytes);
  return FP8GEMM_OK;
}

static void test_round_trip(void **state) {
  (void)state;
  char *dir = make_temp_dir();
  char *path = join(dir, "model.safetensors");
  float f32[3 * 5];
  for (int i = 0; i < 15; i++) f32[i] = (float)i * 0.5f - 3.0f;
  uint16_t bf16[2 * 2 * 2] = {1, 2, 3, 4, 5, 6, 7, 8};
  int64_t scalar = -42;
  uint8_t fp8[16 * 32];
  for (int i = 0; i < 16 * 32; i++) fp8[i] = (uint8_t)(i * 13);

  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, "format", "pt"));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, "note", "first"));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, "note", "replaced"));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, "gone", "x"));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, "gone", NULL));
  TU_OK(fp8gemm_safetensors_writer_add(w, "b.f32", FP8GEMM_ST_F32, 2, (size_t[]){3, 5}, f32));
  TU_OK(fp8gemm_safetensors_writer_add(w, "a.bf16", FP8GEMM_ST_BF16, 3, (size_t[]){2, 2, 2},
                                       bf16));
  TU_OK(fp8gemm_safetensors_writer_add(w, "empty", FP8GEMM_ST_U8, 1, (size_t[]){0}, NULL));
  TU_OK(fp8gemm_safetensors_writer_add(w, "scalar", FP8GEMM_ST_I64, 0, NULL, &scalar));
  TU_OK(fp8gemm_safetensors_writer_add(w, "w.weight", FP8GEMM_ST_F8_E4M3, 2, (size_t[]){16, 32},
                                       fp8));
  fill_state fs = {0, 0x5a};
  TU_OK(fp8gemm_safetensors_writer_add_deferred(w, "deferred", FP8GEMM_ST_U16, 1,
                                                (size_t[]){1000}, fill_constant, &fs));
  TU_OK(fp8gemm_safetensors_writer_write(w, path));
  assert_int_equal(fs.calls, 1);
  fp8gemm_safetensors_writer_destroy(w);
  assert_int_equal(count_entries(dir), 1); /* no temporary file left */

  size_t size;
  uint8_t *bytes = tu_read_file(path, &size);
  uint64_t header_len = 0;
  for (int i = 7; i >= 0; i--) header_len = header_len << 8 | bytes[i];
  assert_int_equal((8 + header_len) % 64, 0); /* data section aligned */

  for (int pass = 0; pass < 2; pass++) {
    fp8gemm_safetensors *f;
    if (pass == 0)
      TU_OK(fp8gemm_safetensors_open(path, &f));
    else
      TU_OK(fp8gemm_safetensors_open_memory(bytes, size, &f));
    assert_int_equal(fp8gemm_safetensors_count(f), 6);
    const char *order[] = {"b.f32", "a.bf16", "empty", "scalar", "w.weight", "deferred"};
    for (size_t i = 0; i < 6; i++) {
      fp8gemm_tensor_view v;
      TU_OK(fp8gemm_safetensors_tensor(f, i, &v));
      assert_string_equal(v.name, order[i]);
    }
    fp8gemm_tensor_view v;
    TU_OK(fp8gemm_safetensors_find(f, "b.f32", &v));
    assert_int_equal(v.dtype, FP8GEMM_ST_F32);
    assert_int_equal(v.rank, 2);
    assert_int_equal(v.shape[0], 3);
    assert_int_equal(v.shape[1], 5);
    assert_int_equal(v.elements, 15);
    assert_int_equal(v.bytes, sizeof f32);
    assert_int_equal(v.offset, 0);
    assert_memory_equal(v.data, f32, sizeof f32);
    TU_OK(fp8gemm_safetensors_find(f, "a.bf16", &v));
    assert_int_equal(v.rank, 3);
    assert_int_equal(v.offset, sizeof f32);
    assert_memory_equal(v.data, bf16, sizeof bf16);
    TU_OK(fp8gemm_safetensors_find(f, "empty", &v));
    assert_int_equal(v.bytes, 0);
    assert_int_equal(v.elements, 0);
    TU_OK(fp8gemm_safetensors_find(f, "scalar", &v));
    assert_int_equal(v.rank, 0);
    assert_int_equal(v.elements, 1);
    assert_memory_equal(v.data, &scalar, 8);
    TU_OK(fp8gemm_safetensors_find(f, "w.weight", &v));
    assert_int_equal(v.dtype, FP8GEMM_ST_F8_E4M3);
    assert_memory_equal(v.data, fp8, sizeof fp8);
    TU_OK(fp8gemm_safetensors_find(f, "deferred", &v));
    assert_int_equal(v.bytes, 2000);
    for (size_t i = 0; i < v.bytes; i++) assert_int_equal(((const uint8_t *)v.data)[i], 0x5a);

    assert_true(fp8gemm_safetensors_contains(f, "w.weight"));
    assert_false(fp8gemm_safetensors_contains(f, "w.bias"));
    assert_false(fp8gemm_safetensors_contains(f, NULL));
    TU_EXPECT_ERROR(fp8gemm_safetensors_find(f, "w.bias", &v), FP8GEMM_ERROR_INVALID_ARGUMENT,
                    "'w.bias'");
    TU_EXPECT_ERROR(fp8gemm_safetensors_tensor(f, 6, &v), FP8GEMM_ERROR_INVALID_ARGUMENT,
                    "out of range");

    assert_int_equal(fp8gemm_safetensors_metadata_count(f), 2);
    const char *key, *value;
    TU_OK(fp8gemm_safetensors_metadata_at(f, 0, &key, &value));
    assert_string_equal(key, "format");
    assert_string_equal(value, "pt");
    TU_OK(fp8gemm_safetensors_metadata_at(f, 1, &key, &value));
    assert_string_equal(key, "note");
    assert_string_equal(value, "replaced");
    assert_null(fp8gemm_safetensors_metadata(f, "gone"));
    TU_EXPECT_ERROR(fp8gemm_safetensors_metadata_at(f, 2, &key, &value),
                    FP8GEMM_ERROR_INVALID_ARGUMENT, "out of range");
    fp8gemm_layout layout;
    TU_OK(fp8gemm_safetensors_tensor_layout(f, "w.weight", &layout));
    assert_int_equal(layout, FP8GEMM_LAYOUT_PLAIN);
    fp8gemm_safetensors_close(f);
  }
  free(bytes);
  remove_tree(dir);
  free(path);
  free(dir);
}

/* A file written by another writer (python's layout: 8-aligned, sorted
 * differently, with padding spaces) reads the same. */
static void test_reads_foreign_layout(void **state) {
  (void)state;
  const char *header =
      "{\"z\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[4,6]},"
      "\"__metadata__\":{\"format\":\"pt\"},"
      "\"a\":{\"shape\":[1],\"data_offsets\":[0,4],\"dtype\":\"F32\"}}      ";
  size_t size;
  uint8_t *bytes = make_bytes(header, 6, &size);
  fp8gemm_safetensors *f;
  TU_OK(fp8gemm_safetensors_open_memory(bytes, size, &f));
  fp8gemm_tensor_view v;
  TU_OK(fp8gemm_safetensors_tensor(f, 0, &v));
  assert_string_equal(v.name, "a"); /* file order is offset order */
  TU_OK(fp8gemm_safetensors_tensor(f, 1, &v));
  assert_string_equal(v.name, "z");
  assert_string_equal(fp8gemm_safetensors_metadata(f, "format"), "pt");
  fp8gemm_safetensors_close(f);
  /* A rank-0 tensor first (found by the fuzzer: the shape pool was NULL). */
  free(bytes);
  bytes = make_bytes("{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]},"
                     "\"e\":{\"dtype\":\"U8\",\"shape\":[0,5],\"data_offsets\":[8,8]}}",
                     8, &size);
  TU_OK(fp8gemm_safetensors_open_memory(bytes, size, &f));
  TU_OK(fp8gemm_safetensors_find(f, "s", &v));
  assert_int_equal(v.rank, 0);
  assert_non_null(v.shape);
  assert_int_equal(v.elements, 1);
  TU_OK(fp8gemm_safetensors_find(f, "e", &v));
  assert_int_equal(v.shape[1], 5);
  assert_int_equal(v.elements, 0);
  fp8gemm_safetensors_close(f);
  free(bytes);
  bytes = make_bytes("{\"s\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[0,8]}}", 8,
                     &size);
  TU_OK(fp8gemm_safetensors_open_memory(bytes, size, &f));
  TU_OK(fp8gemm_safetensors_find(f, "s", &v));
  assert_non_null(v.shape); /* a valid (empty) array, as for every view */
  fp8gemm_safetensors_close(f);
  /* An empty file of the format: just "{}". */
  free(bytes);
  bytes = make_bytes("{}", 0, &size);
  TU_OK(fp8gemm_safetensors_open_memory(bytes, size, &f));
  assert_int_equal(fp8gemm_safetensors_count(f), 0);
  assert_int_equal(fp8gemm_safetensors_metadata_count(f), 0);
  fp8gemm_safetensors_close(f);
  free(bytes);
}

/* ---- validation: one case per rule ---------------------------------------- */

typedef struct bad_case {
  const char *what;
  const char *header;
  size_t data_size;
  const char *needle;
} bad_case;

#define T(extra) "{\"t\":{\"dtype\":\"F32\",\"shape\":[2]," extra "\"data_offsets\":[0,8]}}"

static const bad_case bad_cases[] = {
    {"leading space", " {\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
     "does not start with '{'"},
    {"broken JSON", "{\"t\":{\"dtype\":\"U8\",", 1, "not valid JSON"},
    {"trailing garbage", "{}x", 0, "not valid JSON"},
    {"invalid UTF-8", "{\"\xff\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1,
     "not valid JSON"},
    {"NUL in a name", "{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
     1, "not valid JSON"},
    {"integer too big",
     "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,99999999999999999999999]}}", 1,
     "not valid JSON"},
    {"duplicate tensor",
     "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
     "\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
     2, "duplicate"},
    {"entry not an object", "{\"t\":[1,2]}", 0, "tensor 't': entry is not an object"},
    {"unknown field", T("\"foo\":1,"), 8, "tensor 't': unknown field 'foo'"},
    {"dtype missing", "{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "tensor 't': field 'dtype' is missing"},
    {"dtype not a string", "{\"t\":{\"dtype\":4,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "tensor 't': field 'dtype' is not a string"},
    {"unknown dtype", "{\"t\":{\"dtype\":\"F128\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "tensor 't': field 'dtype': unknown dtype 'F128'"},
    {"sub-byte dtype", "{\"t\":{\"dtype\":\"F4\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
     "unsupported sub-byte dtype 'F4'"},
    {"shape missing", "{\"t\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8,
     "tensor 't': field 'shape' is missing"},
    {"shape not an array", "{\"t\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
     "tensor 't': field 'shape' is not an array"},
    {"rank too high",
     "{\"t\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1],"
     "\"data_offsets\":[0,1]}}",
     1, "rank 17"},
    {"negative dim", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2,-1],\"data_offsets\":[0,8]}}", 8,
     "field 'shape': entry 1 is not a non-negative integer"},
    {"real dim", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
     "field 'shape': entry 0 is not a non-negative integer"},
    {"string dim", "{\"t\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8,
     "field 'shape': entry 0 is not a non-negative integer"},
    {"offsets missing", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8,
     "tensor 't': field 'data_offsets' is missing"},
    {"offsets of 3", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8,
     "field 'data_offsets' is not [begin, end]"},
    {"offsets not an array", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":8}}", 8,
     "field 'data_offsets' is not [begin, end]"},
    {"negative offset",
     "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]},"
     "\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}",
     1, "field 'data_offsets' is not [begin, end]"},
    {"begin after end", "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8,
     "begin 8 > end 0"},
    {"end past data", "{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}", 8,
     "end 16 is past the data section (8 bytes)"},
    {"shape overflows",
     "{\"t\":{\"dtype\":\"U8\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,0]}}", 0,
     "tensor 't': field 'shape': size overflows"},
    {"size mismatch", "{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
     "spans 8 bytes but shape x F32 size is 12 bytes"},
    {"overlap",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[4,12]}}",
     12, "tensor 'b': field 'data_offsets' [4, 12] overlaps tensor 'a'"},
    {"empty tensor inside another",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
     "\"b\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,4]}}",
     8, "overlaps tensor 'a'"},
    {"hole",
     "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
     "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[6,10]}}",
     10, "tensor 'b': field 'data_offsets' begins at 6, leaving a hole after offset 4"},
    {"trailing bytes", "{\"t\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 9,
     "5 bytes of the data section after offset 4 belong to no tensor"},
    {"metadata not an object", "{\"__metadata__\":[\"a\"]}", 0,
     "'__metadata__' is not an object of strings"},
    {"metadata value not a string", "{\"__metadata__\":{\"k\":\"v\",\"n\":3}}", 0,
     "'__metadata__': value of key 'n' is not a string"},
};

static void test_validation_errors(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof bad_cases / sizeof bad_cases[0]; i++) {
    const bad_case *c = &bad_cases[i];
    size_t size;
    uint8_t *bytes = make_bytes(c->header, c->data_size, &size);
    fp8gemm_safetensors *f = (fp8gemm_safetensors *)&size; /* must be reset to NULL */
    fp8gemm_status status = fp8gemm_safetensors_open_memory(bytes, size, &f);
    if (status != FP8GEMM_ERROR_PARSE || !strstr(fp8gemm_last_error(), c->needle))
      fail_msg("case '%s': got %s '%s', expected parse error with '%s'", c->what,
               fp8gemm_status_string(status), fp8gemm_last_error(), c->needle);
    assert_null(f);
    free(bytes);
  }
}

/* The length prefix: shorter than 8, over the limit, over the file. */
static void test_header_length(void **state) {
  (void)state;
  uint8_t small[7] = {0};
  fp8gemm_safetensors *f;
  TU_EXPECT_ERROR(fp8gemm_safetensors_open_memory(small, sizeof small, &f), FP8GEMM_ERROR_PARSE,
                  "shorter than the 8-byte header length");
  TU_EXPECT_ERROR(fp8gemm_safetensors_open_memory(small, 0, &f), FP8GEMM_ERROR_PARSE,
                  "0 bytes, shorter");

  size_t size;
  uint8_t *bytes = make_bytes("{}", 0, &size);
  bytes[0] = 3; /* claims 3 bytes, has 2 */
  TU_EXPECT_ERROR(fp8gemm_safetensors_open_memory(bytes, size, &f), FP8GEMM_ERROR_PARSE,
                  "header length 3 exceeds the file (2 bytes");
  /* 2^63 would wrap a signed or 8 + len computation. */
  memset(bytes, 0, 8);
  bytes[7] = 0x80;
  TU_EXPECT_ERROR(fp8gemm_safetensors_open_memory(bytes, size, &f), FP8GEMM_ERROR_PARSE,
                  "exceeds the limit");
  free(bytes);

  /* Over the limit while the file is large enough: only the limit stops
   * jansson from being handed 100 MB (a sparse file costs no disk). */
  char *dir = make_temp_dir();
  char *path = join(dir, "big.safetensors");
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  assert_true(fd >= 0);
  uint64_t len = FP8GEMM_ST_MAX_HEADER_BYTES + 1ull;
  uint8_t prefix[9];
  for (int i = 0; i < 8; i++) prefix[i] = (uint8_t)(len >> (8 * i));
  prefix[8] = '{';
  assert_int_equal(write(fd, prefix, 9), 9);
  assert_int_equal(ftruncate(fd, (off_t)(8 + len + 16)), 0);
  close(fd);
  TU_EXPECT_ERROR(fp8gemm_safetensors_open(path, &f), FP8GEMM_ERROR_PARSE,
                  "header length 100000001 exceeds the limit of 100000000 bytes");
  remove_tree(dir);
  free(path);
  free(dir);
}

static void test_open_errors(void **state) {
  (void)state;
  char *dir = make_temp_dir();
  fp8gemm_safetensors *f;
  char *missing = join(dir, "missing.safetensors");
  TU_EXPECT_ERROR(fp8gemm_safetensors_open(missing, &f), FP8GEMM_ERROR_IO, "cannot open");
  TU_EXPECT_ERROR(fp8gemm_safetensors_open(dir, &f), FP8GEMM_ERROR_IO, "not a regular file");
  char *empty = join(dir, "empty.safetensors");
  FILE *e = fopen(empty, "wb");
  fclose(e);
  TU_EXPECT_ERROR(fp8gemm_safetensors_open(empty, &f), FP8GEMM_ERROR_PARSE, "0 bytes");
  /* A truncated copy of a valid file: the last tensor runs past the end. */
  char *cut = join(dir, "cut.safetensors");
  size_t size;
  uint8_t *bytes = make_bytes("{\"t\":{\"dtype\":\"F32\",\"shape\":[4],\"data_offsets\":[0,16]}}",
                              16, &size);
  FILE *c = fopen(cut, "wb");
  fwrite(bytes, 1, size - 3, c);
  fclose(c);
  TU_EXPECT_ERROR(fp8gemm_safetensors_open(cut, &f), FP8GEMM_ERROR_PARSE, "tensor 't'");
  free(bytes);

  TU_EXPECT_ERROR(fp8gemm_safetensors_open(NULL, &f), FP8GEMM_ERROR_INVALID_ARGUMENT, "path");
  TU_EXPECT_ERROR(fp8gemm_safetensors_open(cut, NULL), FP8GEMM_ERROR_INVALID_ARGUMENT, "file");
  TU_EXPECT_ERROR(fp8gemm_safetensors_open_memory(NULL, 5, &f), FP8GEMM_ERROR_INVALID_ARGUMENT,
                  "bytes");
  fp8gemm_safetensors_close(NULL);
  assert_int_equal(fp8gemm_safetensors_count(NULL), 0);
  assert_null(fp8gemm_safetensors_metadata(NULL, "k"));
  remove_tree(dir);
  free(missing);
  free(empty);
  free(cut);
  free(dir);
}

static void test_layout_metadata(void **state) {
  (void)state;
  const char *header =
      "{\"__metadata__\":{\"fp8gemm.layout.a\":\"aiter16x16\",\"fp8gemm.layout.b\":\"zigzag\"},"
      "\"a\":{\"dtype\":\"F8_E4M3\",\"shape\":[16,32],\"data_offsets\":[0,512]},"
      "\"b\":{\"dtype\":\"F8_E4M3\",\"shape\":[16,32],\"data_offsets\":[512,1024]},"
      "\"c\":{\"dtype\":\"F8_E4M3\",\"shape\":[16,32],\"data_offsets\":[1024,1536]}}";
  size_t size;
  uint8_t *bytes = make_bytes(header, 1536, &size);
  fp8gemm_safetensors *f;
  TU_OK(fp8gemm_safetensors_open_memory(bytes, size, &f));
  fp8gemm_layout layout;
  TU_OK(fp8gemm_safetensors_tensor_layout(f, "a", &layout));
  assert_int_equal(layout, FP8GEMM_LAYOUT_AITER16X16);
  TU_OK(fp8gemm_safetensors_tensor_layout(f, "c", &layout));
  assert_int_equal(layout, FP8GEMM_LAYOUT_PLAIN);
  TU_EXPECT_ERROR(fp8gemm_safetensors_tensor_layout(f, "b", &layout), FP8GEMM_ERROR_PARSE,
                  "tensor 'b': metadata 'fp8gemm.layout.b' names unknown layout 'zigzag'");
  fp8gemm_safetensors_close(f);
  free(bytes);
}

/* ---- writer argument checks ---------------------------------------------------- */

static void test_writer_rejects(void **state) {
  (void)state;
  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  uint8_t data[4] = {0};
  TU_OK(fp8gemm_safetensors_writer_add(w, "t", FP8GEMM_ST_U8, 1, (size_t[]){4}, data));
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_add(w, "t", FP8GEMM_ST_U8, 1, (size_t[]){4}, data),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "tensor 't' is added twice");
  TU_EXPECT_ERROR(
      fp8gemm_safetensors_writer_add(w, "__metadata__", FP8GEMM_ST_U8, 1, (size_t[]){4}, data),
      FP8GEMM_ERROR_INVALID_ARGUMENT, "reserved");
  TU_EXPECT_ERROR(
      fp8gemm_safetensors_writer_add(w, "u", (fp8gemm_st_dtype)77, 1, (size_t[]){4}, data),
      FP8GEMM_ERROR_INVALID_ARGUMENT, "unknown dtype");
  size_t big[FP8GEMM_ST_MAX_RANK + 1];
  for (int i = 0; i <= FP8GEMM_ST_MAX_RANK; i++) big[i] = 1;
  TU_EXPECT_ERROR(
      fp8gemm_safetensors_writer_add(w, "u", FP8GEMM_ST_U8, FP8GEMM_ST_MAX_RANK + 1, big, data),
      FP8GEMM_ERROR_INVALID_ARGUMENT, "rank 17");
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_add(w, "u", FP8GEMM_ST_U8, 2,
                                                 (size_t[]){SIZE_MAX / 2, 4}, data),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "size overflows");
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_add(w, "u", FP8GEMM_ST_U8, 1, (size_t[]){4}, NULL),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "'data' is NULL");
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_add(w, "u", FP8GEMM_ST_U8, 1, NULL, data),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "'shape' is NULL");
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_add(w, "\xff\xfe", FP8GEMM_ST_U8, 1, (size_t[]){4},
                                                 data),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "UTF-8");
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_set_metadata(w, "k", "\xff"),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "UTF-8");
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_add_deferred(w, "u", FP8GEMM_ST_U8, 1,
                                                          (size_t[]){4}, NULL, NULL),
                  FP8GEMM_ERROR_INVALID_ARGUMENT, "fill");
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_write(w, ""), FP8GEMM_ERROR_INVALID_ARGUMENT,
                  "empty path");
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_write(NULL, "x"), FP8GEMM_ERROR_INVALID_ARGUMENT,
                  "writer");
  fp8gemm_safetensors_writer_destroy(w);
  fp8gemm_safetensors_writer_destroy(NULL);
}

/* ---- atomic writes ------------------------------------------------------------ */

/* Writes a small valid file to `path` (the "previous version"). */
static void write_previous(const char *path) {
  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  uint8_t data[3] = {1, 2, 3};
  TU_OK(fp8gemm_safetensors_writer_add(w, "old", FP8GEMM_ST_U8, 1, (size_t[]){3}, data));
  TU_OK(fp8gemm_safetensors_writer_write(w, path));
  fp8gemm_safetensors_writer_destroy(w);
}

static void assert_is_previous(const char *path) {
  fp8gemm_safetensors *f;
  TU_OK(fp8gemm_safetensors_open(path, &f));
  assert_int_equal(fp8gemm_safetensors_count(f), 1);
  assert_true(fp8gemm_safetensors_contains(f, "old"));
  fp8gemm_safetensors_close(f);
}

static fp8gemm_status fill_fails(void *user, void *dst, size_t bytes) {
  (void)user;
  memset(dst, 0, bytes / 2);
  return fp8gemm_set_error(FP8GEMM_ERROR_INVALID_ARGUMENT, "the producer gave up");
}

static void test_write_fill_failure(void **state) {
  (void)state;
  char *dir = make_temp_dir();
  char *path = join(dir, "out.safetensors");
  write_previous(path);
  static uint8_t big[6 << 20]; /* past the staging buffer: real writes happen first */
  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_OK(fp8gemm_safetensors_writer_add(w, "big", FP8GEMM_ST_U8, 1, (size_t[]){sizeof big}, big));
  TU_OK(fp8gemm_safetensors_writer_add_deferred(w, "bad", FP8GEMM_ST_F32, 1, (size_t[]){16},
                                                fill_fails, NULL));
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_write(w, path), FP8GEMM_ERROR_INVALID_ARGUMENT,
                  "producing tensor 'bad' failed: the producer gave up");
  fp8gemm_safetensors_writer_destroy(w);
  assert_int_equal(count_entries(dir), 1);
  assert_is_previous(path);
  remove_tree(dir);
  free(path);
  free(dir);
}

static void test_write_missing_dir(void **state) {
  (void)state;
  char *dir = make_temp_dir();
  char *path = join(dir, "no/such/dir/out.safetensors");
  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_write(w, path), FP8GEMM_ERROR_IO,
                  "cannot create a temporary file beside it: No such file or directory");
  fp8gemm_safetensors_writer_destroy(w);
  assert_int_equal(count_entries(dir), 0);
  remove_tree(dir);
  free(path);
  free(dir);
}

static void test_write_onto_directory(void **state) {
  (void)state;
  char *dir = make_temp_dir();
  char *path = join(dir, "taken");
  assert_int_equal(mkdir(path, 0755), 0);
  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_EXPECT_ERROR(fp8gemm_safetensors_writer_write(w, path), FP8GEMM_ERROR_IO,
                  "renaming the temporary file failed");
  fp8gemm_safetensors_writer_destroy(w);
  assert_int_equal(count_entries(dir), 1); /* only the directory: no temporary file */
  remove_tree(dir);
  free(path);
  free(dir);
}

/* A destination name near NAME_MAX still gets a temporary file beside it. */
static void test_write_long_name(void **state) {
  (void)state;
  char *dir = make_temp_dir();
  char name[256];
  memset(name, 'a', 250);
  strcpy(name + 250, ".st");
  char *path = join(dir, name);
  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_OK(fp8gemm_safetensors_writer_write(w, path));
  fp8gemm_safetensors_writer_destroy(w);
  assert_int_equal(count_entries(dir), 1);
  fp8gemm_safetensors *f;
  TU_OK(fp8gemm_safetensors_open(path, &f));
  fp8gemm_safetensors_close(f);
  remove_tree(dir);
  free(path);
  free(dir);
}

/* Runs `body` in a child process (it changes process-wide limits or the
 * user), which exits 0 when the write failed as expected. */
static int run_child(void (*body)(const char *path), const char *path) {
  fflush(NULL);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    body(path);
    _exit(0);
  }
  int status;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 100 + WTERMSIG(status);
}

/* Disk full, simulated: the file-size limit makes write(2) come back short
 * and then fail with EFBIG, as a full disk returns short then ENOSPC. */
static void disk_full_child(const char *path) {
  signal(SIGXFSZ, SIG_IGN);
  struct rlimit limit = {.rlim_cur = (5 << 20) + 123, .rlim_max = RLIM_INFINITY};
  if (setrlimit(RLIMIT_FSIZE, &limit) != 0) _exit(10);
  static uint8_t big[8 << 20];
  fp8gemm_safetensors_writer *w;
  if (fp8gemm_safetensors_writer_create(&w) != FP8GEMM_OK) _exit(11);
  if (fp8gemm_safetensors_writer_add(w, "big", FP8GEMM_ST_U8, 1, (size_t[]){sizeof big}, big) !=
      FP8GEMM_OK)
    _exit(12);
  fp8gemm_status status = fp8gemm_safetensors_writer_write(w, path);
  fprintf(stderr, "  (child) write: %s\n", fp8gemm_last_error());
  if (status != FP8GEMM_ERROR_IO) _exit(13);
  if (!strstr(fp8gemm_last_error(), "writing tensor 'big' (data bytes 0..8388608) failed: File too large"))
    _exit(14);
  fp8gemm_safetensors_writer_destroy(w);
}

static void test_write_disk_full(void **state) {
  (void)state;
  char *dir = make_temp_dir();
  char *path = join(dir, "out.safetensors");
  write_previous(path);
  assert_int_equal(run_child(disk_full_child, path), 0);
  assert_int_equal(count_entries(dir), 1);
  assert_is_previous(path);
  remove_tree(dir);
  free(path);
  free(dir);
}

/* A folder the writer may not write to. Root ignores permission bits, so
 * the child drops to an unprivileged user; others make the folder 0555. */
static void unwritable_child(const char *path) {
  if (geteuid() == 0) {
    if (setgid(65534) != 0 || setuid(65534) != 0) _exit(20);
  }
  fp8gemm_safetensors_writer *w;
  if (fp8gemm_safetensors_writer_create(&w) != FP8GEMM_OK) _exit(21);
  fp8gemm_status status = fp8gemm_safetensors_writer_write(w, path);
  fprintf(stderr, "  (child) write: %s\n", fp8gemm_last_error());
  if (status != FP8GEMM_ERROR_IO) _exit(22);
  if (!strstr(fp8gemm_last_error(), "cannot create a temporary file beside it: Permission denied"))
    _exit(23);
  fp8gemm_safetensors_writer_destroy(w);
}

static void test_write_unwritable_dir(void **state) {
  (void)state;
  char *dir = make_temp_dir();
  char *sub = join(dir, "readonly");
  assert_int_equal(mkdir(sub, 0755), 0);
  char *path = join(sub, "out.safetensors");
  write_previous(path);
  assert_int_equal(chmod(dir, 0755), 0); /* the child must reach `sub` */
  if (geteuid() != 0) assert_int_equal(chmod(sub, 0555), 0);
  assert_int_equal(run_child(unwritable_child, path), 0);
  chmod(sub, 0755);
  assert_int_equal(count_entries(sub), 1);
  assert_is_previous(path);
  remove_tree(dir);
  free(path);
  free(sub);
  free(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_dtype_names),
      cmocka_unit_test(test_round_trip),
      cmocka_unit_test(test_reads_foreign_layout),
      cmocka_unit_test(test_validation_errors),
      cmocka_unit_test(test_header_length),
      cmocka_unit_test(test_open_errors),
      cmocka_unit_test(test_layout_metadata),
      cmocka_unit_test(test_writer_rejects),
      cmocka_unit_test(test_write_fill_failure),
      cmocka_unit_test(test_write_missing_dir),
      cmocka_unit_test(test_write_onto_directory),
      cmocka_unit_test(test_write_long_name),
      cmocka_unit_test(test_write_disk_full),
      cmocka_unit_test(test_write_unwritable_dir),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
