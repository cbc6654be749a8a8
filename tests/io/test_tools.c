/* fp8gemm quantize | shuffle | inspect, end to end through the built CLI
 * (FP8GEMM_CLI_PATH) on a small synthetic checkpoint: what gets quantized,
 * bit-exact agreement with the library, layouts recorded, the plain round
 * trip, the --tuned rule, invalid files, failures that leave nothing, and
 * the tuned table `fp8gemm tune` writes. */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

#ifndef FP8GEMM_CLI_PATH
#error "FP8GEMM_CLI_PATH must name the built fp8gemm executable"
#endif

static char dir[64];
static char out_text[1 << 16]; /* stdout + stderr of the last run */

static const char *path_in(const char *name) {
  static char buffers[16][512]; /* a test holds at most 8 paths at once */
  static int next;
  char *p = buffers[next++ % 16];
  snprintf(p, sizeof buffers[0], "%s/%s", dir, name);
  return p;
}

/* Runs the CLI with a NULL-terminated argument list; returns its exit
 * status and keeps its output in out_text. */
static int run_cli(const char *first, ...) {
  char log[512];
  snprintf(log, sizeof log, "%s/cli.log", dir);
  va_list args;
  va_start(args, first);
  const int status = tu_run_program(FP8GEMM_CLI_PATH, log, out_text, sizeof out_text, first, args);
  va_end(args);
  return status;
}

#define EXPECT_OUTPUT(needle)                                                         \
  do {                                                                                \
    if (!strstr(out_text, (needle)))                                                  \
      fail_msg("output does not mention '%s':\n%s", (needle), out_text);              \
  } while (0)

static void write_bytes(const char *path, const void *bytes, size_t size) {
  FILE *f = fopen(path, "wb");
  assert_non_null(f);
  assert_int_equal(fwrite(bytes, 1, size, f), size);
  fclose(f);
}

static size_t count_entries(void) {
  DIR *d = opendir(dir);
  size_t n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

/* ---- the synthetic checkpoint ------------------------------------------------ */

typedef struct source_tensor {
  const char *name;
  fp8gemm_st_dtype dtype;
  size_t rank, shape[2];
  int quantized_by_default;
} source_tensor;

static const source_tensor source[] = {
    {"model.embed_tokens.weight", FP8GEMM_ST_BF16, 2, {64, 256}, 0},
    {"model.layers.0.input_layernorm.weight", FP8GEMM_ST_BF16, 1, {256, 0}, 0},
    {"model.layers.0.self_attn.q_proj.weight", FP8GEMM_ST_F32, 2, {256, 384}, 1},
    {"model.layers.0.self_attn.q_proj.bias", FP8GEMM_ST_F32, 1, {256, 0}, 0},
    {"model.layers.0.self_attn.o_proj.weight", FP8GEMM_ST_BF16, 2, {128, 40}, 0}, /* K % 16 */
    {"model.layers.0.mlp.down_proj.weight", FP8GEMM_ST_BF16, 2, {256, 384}, 1},
    {"model.layers.0.mlp.up_proj.weight", FP8GEMM_ST_F16, 2, {130, 256}, 1}, /* N % 16 */
    {"model.layers.0.mlp.gate_proj.weight", FP8GEMM_ST_BF16, 2, {160, 128}, 1},
    {"model.norm.weight", FP8GEMM_ST_F32, 1, {256, 0}, 0},
    {"lm_head.weight", FP8GEMM_ST_BF16, 2, {64, 256}, 0},
    {"position_ids", FP8GEMM_ST_I64, 2, {1, 16}, 0},
};
enum { SOURCE_COUNT = sizeof source / sizeof source[0] };

static void write_source(const char *path) {
  tu_rng rng = tu_rng_make(tu_seed());
  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, "format", "pt"));
  void *buffers[SOURCE_COUNT];
  for (size_t i = 0; i < SOURCE_COUNT; i++) {
    const source_tensor *t = &source[i];
    size_t count = t->shape[0] * (t->rank == 2 ? t->shape[1] : 1);
    float *values = tu_malloc(count * sizeof(float));
    tu_fill_normal(&rng, values, count, 0.02f * (float)(i + 1));
    size_t esize = fp8gemm_st_dtype_size(t->dtype);
    uint8_t *bytes = tu_malloc(count * esize);
    for (size_t j = 0; j < count; j++) {
      if (t->dtype == FP8GEMM_ST_BF16) {
        uint16_t v = fp8gemm_bf16_from_float(values[j]);
        memcpy(bytes + 2 * j, &v, 2);
      } else if (t->dtype == FP8GEMM_ST_F16) {
        uint16_t v = fp8gemm_f16_from_float(values[j]);
        memcpy(bytes + 2 * j, &v, 2);
      } else if (t->dtype == FP8GEMM_ST_F32) {
        memcpy(bytes + 4 * j, &values[j], 4);
      } else {
        int64_t v = (int64_t)j;
        memcpy(bytes + 8 * j, &v, 8);
      }
    }
    free(values);
    buffers[i] = bytes;
    TU_OK(fp8gemm_safetensors_writer_add(w, t->name, t->dtype, t->rank, t->shape, bytes));
  }
  TU_OK(fp8gemm_safetensors_writer_write(w, path));
  fp8gemm_safetensors_writer_destroy(w);
  for (size_t i = 0; i < SOURCE_COUNT; i++) free(buffers[i]);
}

static fp8gemm_dtype lib_dtype(fp8gemm_st_dtype d) {
  return d == FP8GEMM_ST_F32 ? FP8GEMM_DTYPE_F32
         : d == FP8GEMM_ST_BF16 ? FP8GEMM_DTYPE_BF16
                                : FP8GEMM_DTYPE_F16;
}

static fp8gemm_context *cpu_context(void) {
  fp8gemm_context_options options;
  fp8gemm_context_options_init(&options);
  options.backend = FP8GEMM_BACKEND_CPU;
  fp8gemm_context *ctx;
  TU_OK(fp8gemm_context_create(&options, &ctx));
  return ctx;
}

/* Checks OUT against IN: `quantized` names (NULL-terminated) are F8_E4M3
 * equal to the library's own quantization, with their scales; every other
 * tensor of IN is there byte for byte. */
static void check_quantized(const char *in_path, const char *out_path,
                            const char *const *quantized) {
  fp8gemm_context *ctx = cpu_context();
  fp8gemm_safetensors *in, *out;
  TU_OK(fp8gemm_safetensors_open(in_path, &in));
  TU_OK(fp8gemm_safetensors_open(out_path, &out));
  size_t expected_count = fp8gemm_safetensors_count(in);
  for (const char *const *q = quantized; *q; q++) expected_count++;
  assert_int_equal(fp8gemm_safetensors_count(out), expected_count);
  assert_string_equal(fp8gemm_safetensors_metadata(out, "format"), "pt");
  assert_string_equal(fp8gemm_safetensors_metadata(out, FP8GEMM_ST_META_FORMAT),
                      FP8GEMM_ST_FORMAT_BLOCK128);
  assert_string_equal(fp8gemm_safetensors_metadata(out, FP8GEMM_ST_META_BLOCK), "128,128");
  for (size_t i = 0; i < fp8gemm_safetensors_count(in); i++) {
    fp8gemm_tensor_view a, b;
    TU_OK(fp8gemm_safetensors_tensor(in, i, &a));
    TU_OK(fp8gemm_safetensors_find(out, a.name, &b));
    int is_quantized = 0;
    for (const char *const *q = quantized; *q; q++) is_quantized |= !strcmp(*q, a.name);
    if (!is_quantized) {
      assert_int_equal(a.dtype, b.dtype);
      assert_int_equal(a.bytes, b.bytes);
      if (memcmp(a.data, b.data, a.bytes)) fail_msg("%s: copied bytes differ", a.name);
      continue;
    }
    const size_t N = a.shape[0], K = a.shape[1], sn = (N + 127) / 128, sk = (K + 127) / 128;
    assert_int_equal(b.dtype, FP8GEMM_ST_F8_E4M3);
    assert_int_equal(b.rank, 2);
    assert_int_equal(b.shape[0], N);
    assert_int_equal(b.shape[1], K);
    char scale_name[160];
    snprintf(scale_name, sizeof scale_name, "%s_scale_inv", a.name);
    fp8gemm_tensor_view s;
    TU_OK(fp8gemm_safetensors_find(out, scale_name, &s));
    assert_int_equal(s.dtype, FP8GEMM_ST_F32);
    assert_int_equal(s.shape[0], sn);
    assert_int_equal(s.shape[1], sk);
    uint8_t *wq = tu_malloc(N * K);
    float *scales = tu_malloc(sn * sk * sizeof(float));
    void *src = tu_malloc(a.bytes);
    memcpy(src, a.data, a.bytes);
    TU_OK(fp8gemm_quantize_weight(ctx, N, K, lib_dtype(a.dtype), src, K, wq, scales));
    if (memcmp(wq, b.data, N * K)) fail_msg("%s: codes differ from the library's", a.name);
    if (memcmp(scales, s.data, s.bytes)) fail_msg("%s: scales differ", scale_name);
    free(wq);
    free(scales);
    free(src);
  }
  fp8gemm_safetensors_close(in);
  fp8gemm_safetensors_close(out);
  fp8gemm_context_destroy(ctx);
}

static int setup(void **state) {
  (void)state;
  snprintf(dir, sizeof dir, "/tmp/fp8gemm-tools-XXXXXX");
  if (!mkdtemp(dir)) return -1;
  write_source(path_in("model.safetensors"));
  return 0;
}

static int teardown(void **state) {
  (void)state;
  DIR *d = opendir(dir);
  struct dirent *e;
  while (d && (e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) unlink(path_in(e->d_name));
  if (d) closedir(d);
  rmdir(dir);
  return 0;
}

/* ---- quantize ------------------------------------------------------------------- */

static void test_quantize_default(void **state) {
  (void)state;
  const char *in = path_in("model.safetensors"), *out = path_in("fp8.safetensors");
  size_t in_size;
  void *before = tu_read_file(in, &in_size);
  assert_int_equal(run_cli("quantize", in, out, NULL), 0);
  EXPECT_OUTPUT("quantized 4 weights, kept 3 2-D weights");
  EXPECT_OUTPUT("model.layers.0.self_attn.o_proj.weight");
  EXPECT_OUTPUT("K is not a multiple of 16");
  EXPECT_OUTPUT("embedding/norm/lm_head");
  const char *const expected[] = {"model.layers.0.self_attn.q_proj.weight",
                                  "model.layers.0.mlp.down_proj.weight",
                                  "model.layers.0.mlp.up_proj.weight",
                                  "model.layers.0.mlp.gate_proj.weight", NULL};
  check_quantized(in, out, expected);
  /* The input is only read. */
  size_t after_size;
  void *after = tu_read_file(in, &after_size);
  assert_int_equal(after_size, in_size);
  assert_memory_equal(before, after, in_size);
  free(before);
  free(after);
  /* Quantizing again keeps what is already FP8 (no second scale). */
  assert_int_equal(run_cli("quantize", out, path_in("twice.safetensors"), NULL), 0);
  EXPECT_OUTPUT("quantized 0 weights");
  unlink(path_in("twice.safetensors"));
}

static void test_quantize_patterns(void **state) {
  (void)state;
  const char *in = path_in("model.safetensors"), *out = path_in("sel.safetensors");
  assert_int_equal(run_cli("quantize", "--exclude", "up_proj|gate", "-q", in, out, NULL), 0);
  const char *const only_two[] = {"model.layers.0.self_attn.q_proj.weight",
                                  "model.layers.0.mlp.down_proj.weight", NULL};
  check_quantized(in, out, only_two);
  /* --include replaces the default rule: lm_head becomes FP8. */
  assert_int_equal(run_cli("quantize", "--include", "^lm_head", in, out, NULL), 0);
  EXPECT_OUTPUT("not matched by --include");
  const char *const head[] = {"lm_head.weight", NULL};
  check_quantized(in, out, head);
  unlink(out);
  assert_int_equal(run_cli("quantize", "--include", "([", in, out, NULL), 2);
  EXPECT_OUTPUT("bad pattern");
  assert_int_equal(run_cli("quantize", in, NULL), 2);
  assert_int_equal(run_cli("quantize", "--bogus", in, out, NULL), 2);
  assert_int_equal(run_cli("quantize", in, in, NULL), 2);
  EXPECT_OUTPUT("never overwritten");
  assert_int_equal(run_cli("quantize", "--help", NULL), 0);
}

/* Failures: nothing at the destination, nothing beside it. */
static void test_quantize_failures_leave_nothing(void **state) {
  (void)state;
  size_t before = count_entries();
  assert_int_equal(run_cli("quantize", path_in("missing.safetensors"), path_in("o.safetensors"),
                           NULL),
                   1);
  EXPECT_OUTPUT("cannot open");
  assert_int_equal(run_cli("quantize", path_in("model.safetensors"),
                           path_in("no/such/dir/o.safetensors"), NULL),
                   1);
  EXPECT_OUTPUT("cannot create a temporary file");
  /* A NaN in a weight: the quantizer refuses, the message names it. */
  fp8gemm_safetensors_writer *w;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  float values[128 * 32];
  for (int i = 0; i < 128 * 32; i++) values[i] = 0.01f * (float)(i % 17);
  values[77] = NAN;
  TU_OK(fp8gemm_safetensors_writer_add(w, "bad.weight", FP8GEMM_ST_F32, 2, (size_t[]){128, 32},
                                       values));
  TU_OK(fp8gemm_safetensors_writer_write(w, path_in("nan.safetensors")));
  fp8gemm_safetensors_writer_destroy(w);
  assert_int_equal(run_cli("quantize", path_in("nan.safetensors"), path_in("o.safetensors"),
                           NULL),
                   1);
  EXPECT_OUTPUT("producing tensor 'bad.weight' failed");
  unlink(path_in("nan.safetensors"));
  assert_int_equal(count_entries(), before);
}

/* ---- shuffle ----------------------------------------------------------------------- */

static void expect_layout(const char *path, const char *tensor, fp8gemm_layout want) {
  fp8gemm_safetensors *f;
  TU_OK(fp8gemm_safetensors_open(path, &f));
  fp8gemm_layout got;
  TU_OK(fp8gemm_safetensors_tensor_layout(f, tensor, &got));
  if (got != want)
    fail_msg("%s: %s is %s, expected %s", path, tensor, fp8gemm_layout_name(got),
             fp8gemm_layout_name(want));
  fp8gemm_safetensors_close(f);
}

/* The bytes of `tensor` in B are those of A reordered from `from` to `to`. */
static void expect_shuffled(const char *a_path, const char *b_path, const char *tensor,
                            fp8gemm_layout from, fp8gemm_layout to) {
  fp8gemm_context *ctx = cpu_context();
  fp8gemm_safetensors *a, *b;
  TU_OK(fp8gemm_safetensors_open(a_path, &a));
  TU_OK(fp8gemm_safetensors_open(b_path, &b));
  fp8gemm_tensor_view va, vb;
  TU_OK(fp8gemm_safetensors_find(a, tensor, &va));
  TU_OK(fp8gemm_safetensors_find(b, tensor, &vb));
  uint8_t *want = tu_malloc(va.bytes);
  TU_OK(fp8gemm_shuffle(ctx, va.shape[0], va.shape[1], from, va.data, to, want));
  if (memcmp(want, vb.data, va.bytes))
    fail_msg("%s: bytes are not the %s -> %s shuffle", tensor, fp8gemm_layout_name(from),
             fp8gemm_layout_name(to));
  free(want);
  fp8gemm_safetensors_close(a);
  fp8gemm_safetensors_close(b);
  fp8gemm_context_destroy(ctx);
}

static void test_shuffle_round_trip(void **state) {
  (void)state;
  const char *in = path_in("model.safetensors"), *fp8 = path_in("rt-fp8.safetensors");
  const char *aiter = path_in("rt-aiter.safetensors"), *again = path_in("rt-again.safetensors");
  const char *plain = path_in("rt-plain.safetensors"), *cpu = path_in("rt-cpu.safetensors");
  const char *down = "model.layers.0.mlp.down_proj.weight";
  const char *up = "model.layers.0.mlp.up_proj.weight"; /* N = 130: no aiter16x16 */
  assert_int_equal(run_cli("quantize", "-q", in, fp8, NULL), 0);

  assert_int_equal(run_cli("shuffle", "--layout", "aiter16x16", fp8, aiter, NULL), 0);
  EXPECT_OUTPUT("shuffled 3 weights, 0 already in their layout, 1 left");
  EXPECT_OUTPUT("cannot take aiter16x16");
  expect_layout(aiter, down, FP8GEMM_LAYOUT_AITER16X16);
  expect_layout(aiter, up, FP8GEMM_LAYOUT_PLAIN);
  expect_shuffled(fp8, aiter, down, FP8GEMM_LAYOUT_PLAIN, FP8GEMM_LAYOUT_AITER16X16);
  expect_shuffled(fp8, aiter, up, FP8GEMM_LAYOUT_PLAIN, FP8GEMM_LAYOUT_PLAIN);

  /* Asking again changes nothing and says so. */
  assert_int_equal(run_cli("shuffle", "--layout", "aiter16x16", aiter, again, NULL), 0);
  EXPECT_OUTPUT("shuffled 0 weights, 3 already in their layout");
  EXPECT_OUTPUT("already aiter16x16");
  size_t sa, sb;
  void *ba = tu_read_file(aiter, &sa), *bb = tu_read_file(again, &sb);
  assert_int_equal(sa, sb);
  assert_memory_equal(ba, bb, sa);
  free(ba);
  free(bb);

  /* aiter16x16 -> preshuffled (the CPU's order) goes directly. */
  assert_int_equal(run_cli("shuffle", "--layout", "preshuffled", aiter, cpu, NULL), 0);
  expect_layout(cpu, down, FP8GEMM_LAYOUT_PRESHUFFLED_CPU);
  expect_shuffled(aiter, cpu, down, FP8GEMM_LAYOUT_AITER16X16, FP8GEMM_LAYOUT_PRESHUFFLED_CPU);

  /* plain undoes it bit-exactly: the whole file is the quantized one. */
  assert_int_equal(run_cli("shuffle", "--layout", "plain", cpu, plain, NULL), 0);
  void *original = tu_read_file(fp8, &sa), *restored = tu_read_file(plain, &sb);
  assert_int_equal(sa, sb);
  assert_memory_equal(original, restored, sa);
  free(original);
  free(restored);

  assert_int_equal(run_cli("shuffle", fp8, plain, NULL), 2); /* no --layout */
  assert_int_equal(run_cli("shuffle", "--layout", "spiral", fp8, plain, NULL), 2);
  assert_int_equal(run_cli("shuffle", "--layout", "plain", "--tuned", "t.csv", fp8, plain, NULL),
                   2);
  assert_int_equal(run_cli("shuffle", "--layout", "plain", fp8, fp8, NULL), 2);
  const char *files[] = {fp8, aiter, again, plain, cpu};
  for (size_t i = 0; i < 5; i++) unlink(files[i]);
}

/* --tuned: only what the table does not keep plain is shuffled (shapes
 * missing from the table are preshuffled: the seed's rule). */
static void test_shuffle_tuned_rule(void **state) {
  (void)state;
  const char *in = path_in("model.safetensors"), *fp8 = path_in("tu-fp8.safetensors");
  const char *out = path_in("tu-out.safetensors"), *table = path_in("table.csv");
  assert_int_equal(run_cli("quantize", "-q", in, fp8, NULL), 0);
  FILE *t = fopen(table, "w");
  fprintf(t, "backend,device,N,K,layout,kernel,crossover_m,m_values,plain_us,preshuffled_us\n"
             "cpu,*,256,384,plain,test,0,,,\n");
  fclose(t);
  assert_int_equal(
      run_cli("shuffle", "--layout", "aiter16x16", "--tuned", table, fp8, out, NULL), 0);
  /* q_proj and down_proj are (256, 384): kept plain by the table. */
  expect_layout(out, "model.layers.0.mlp.down_proj.weight", FP8GEMM_LAYOUT_PLAIN);
  expect_layout(out, "model.layers.0.self_attn.q_proj.weight", FP8GEMM_LAYOUT_PLAIN);
  EXPECT_OUTPUT("table: plain kernel");
  /* gate_proj (160, 128) is not in the table: preshuffled. */
  expect_layout(out, "model.layers.0.mlp.gate_proj.weight", FP8GEMM_LAYOUT_AITER16X16);
  expect_shuffled(fp8, out, "model.layers.0.mlp.gate_proj.weight", FP8GEMM_LAYOUT_PLAIN,
                  FP8GEMM_LAYOUT_AITER16X16);
  /* up_proj (130, 256): the table would preshuffle, the layout cannot. */
  expect_layout(out, "model.layers.0.mlp.up_proj.weight", FP8GEMM_LAYOUT_PLAIN);

  /* A table keeping everything plain turns a shuffled file back. */
  const char *back = path_in("tu-back.safetensors");
  t = fopen(table, "w");
  fprintf(t, "backend,device,N,K,layout,kernel,crossover_m,m_values,plain_us,preshuffled_us\n"
             "cpu,*,256,384,plain,test,0,,,\ncpu,*,160,128,plain,test,0,,,\n"
             "cpu,*,130,256,plain,test,0,,,\n");
  fclose(t);
  assert_int_equal(run_cli("shuffle", "--layout", "aiter16x16", "--tuned", table, out, back,
                           NULL),
                   0);
  expect_layout(back, "model.layers.0.mlp.gate_proj.weight", FP8GEMM_LAYOUT_PLAIN);
  expect_shuffled(fp8, back, "model.layers.0.mlp.gate_proj.weight", FP8GEMM_LAYOUT_PLAIN,
                  FP8GEMM_LAYOUT_PLAIN);

  assert_int_equal(run_cli("shuffle", "--layout", "aiter16x16", "--tuned",
                           path_in("missing.csv"), fp8, out, NULL),
                   1);
  unlink(fp8);
  unlink(out);
  unlink(back);
  unlink(table);
}

/* ---- inspect --------------------------------------------------------------------- */

static void test_inspect(void **state) {
  (void)state;
  const char *in = path_in("model.safetensors"), *fp8 = path_in("in-fp8.safetensors");
  const char *shuffled = path_in("in-shuf.safetensors"), *bad = path_in("in-bad.safetensors");
  assert_int_equal(run_cli("quantize", "-q", in, fp8, NULL), 0);
  assert_int_equal(run_cli("shuffle", "-q", "--layout", "aiter16x16", fp8, shuffled, NULL), 0);
  assert_int_equal(run_cli("inspect", shuffled, NULL), 0);
  EXPECT_OUTPUT("fp8gemm.format = fp8_e4m3fn_block128");
  EXPECT_OUTPUT("layout aiter16x16, block 128x128");
  EXPECT_OUTPUT("layout plain, block 128x128"); /* up_proj */
  EXPECT_OUTPUT("scale statistics");
  EXPECT_OUTPUT("model.layers.0.mlp.down_proj.weight_scale_inv");
  EXPECT_OUTPUT("4 FP8 weights, 4 with 128x128 block scales; layouts: plain 1 aiter16x16 3");
  assert_int_equal(run_cli("inspect", in, NULL), 0);
  EXPECT_OUTPUT("0 FP8 weights");

  /* Invalid: truncated, not safetensors, missing. */
  size_t size;
  uint8_t *bytes = tu_read_file(fp8, &size);
  write_bytes(bad, bytes, size - 1);
  assert_int_equal(run_cli("inspect", bad, NULL), 1);
  EXPECT_OUTPUT("invalid");
  write_bytes(bad, "not a checkpoint at all", 23);
  assert_int_equal(run_cli("inspect", bad, NULL), 1);
  assert_int_equal(run_cli("inspect", path_in("missing"), NULL), 1);
  assert_int_equal(run_cli("inspect", NULL), 2);

  /* Consistent safetensors, inconsistent FP8: wrong scale shape, bad scale
   * values, a layout that does not fit, an unknown layout. */
  fp8gemm_safetensors_writer *w;
  uint8_t codes[136 * 32];
  memset(codes, 0x30, sizeof codes);
  float scales[2] = {1.0f, 0.5f};
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_OK(fp8gemm_safetensors_writer_add(w, "a.weight", FP8GEMM_ST_F8_E4M3, 2, (size_t[]){136, 32},
                                       codes));
  TU_OK(fp8gemm_safetensors_writer_add(w, "a.weight_scale_inv", FP8GEMM_ST_F32, 2,
                                       (size_t[]){1, 2}, scales));
  TU_OK(fp8gemm_safetensors_writer_write(w, bad));
  fp8gemm_safetensors_writer_destroy(w);
  assert_int_equal(run_cli("inspect", bad, NULL), 1);
  EXPECT_OUTPUT("PROBLEM: a.weight_scale_inv is F32 [1, 2], expected F32 [2, 1]");

  scales[1] = -1.0f;
  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, "fp8gemm.layout.a.weight", "aiter16x16"));
  TU_OK(fp8gemm_safetensors_writer_add(w, "a.weight", FP8GEMM_ST_F8_E4M3, 2, (size_t[]){136, 32},
                                       codes));
  TU_OK(fp8gemm_safetensors_writer_add(w, "a.weight_scale_inv", FP8GEMM_ST_F32, 2,
                                       (size_t[]){2, 1}, scales));
  TU_OK(fp8gemm_safetensors_writer_write(w, bad));
  fp8gemm_safetensors_writer_destroy(w);
  assert_int_equal(run_cli("inspect", bad, NULL), 1);
  EXPECT_OUTPUT("recorded layout aiter16x16 does not fit");
  EXPECT_OUTPUT("1 of 2 scales are not finite and positive");

  TU_OK(fp8gemm_safetensors_writer_create(&w));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, "fp8gemm.layout.a.weight", "spiral"));
  TU_OK(fp8gemm_safetensors_writer_set_metadata(w, "fp8gemm.layout.ghost", "plain"));
  TU_OK(fp8gemm_safetensors_writer_add(w, "a.weight", FP8GEMM_ST_F8_E4M3, 2, (size_t[]){136, 32},
                                       codes));
  TU_OK(fp8gemm_safetensors_writer_write(w, bad));
  fp8gemm_safetensors_writer_destroy(w);
  assert_int_equal(run_cli("inspect", bad, NULL), 1);
  EXPECT_OUTPUT("unknown layout 'spiral'");
  EXPECT_OUTPUT("fp8gemm.layout.ghost = plain: no 2-D F8_E4M3 tensor");
  free(bytes);
  unlink(fp8);
  unlink(shuffled);
  unlink(bad);
}

/* fp8gemm tune: a row per (N, K) whose crossover_m is a measured rung (or
 * 0), a table the library loads; --crossover-m none leaves the backend's
 * default; malformed ladders are refused. */
static void test_tune_crossover(void **state) {
  (void)state;
  const char *table = path_in("tuned.csv");
  assert_int_equal(run_cli("tune", "--shapes", "1,256,512;3,200,272;16,256,512", "-o", table,
                           "--budget", "0.002", "--crossover-m", "1,8", NULL),
                   0);
  EXPECT_OUTPUT("crossover_m");
  FILE *f = fopen(table, "r");
  assert_non_null(f);
  char line[512];
  /* First how the table was made (the command as given, the device), then the columns. */
  assert_non_null(fgets(line, sizeof line, f));
  static const char provenance[] =
      "# Written by `fp8gemm tune --shapes '1,256,512;3,200,272;16,256,512' -o ";
  if (strncmp(line, provenance, strlen(provenance))) fail_msg("provenance line: %s", line);
  assert_non_null(strstr(line, "--crossover-m 1,8` on "));
  assert_non_null(strstr(line, fp8gemm_version_string()));
  int comments = 1;
  while (fgets(line, sizeof line, f) && line[0] == '#') comments++;
  assert_int_equal(comments, 6);
  assert_string_equal(line,
                      "backend,device,N,K,layout,kernel,crossover_m,m_values,plain_us,"
                      "preshuffled_us\n");
  const size_t expect_n[] = {256, 200};
  int rows = 0;
  while (fgets(line, sizeof line, f)) {
    size_t n, k;
    char crossover[32], m_values[64];
    assert_int_equal(sscanf(line, "cpu,%*[^,],%zu,%zu,%*[^,],fp8gemm_linear,%31[^,],%63[^,],", &n,
                            &k, crossover, m_values),
                     4);
    assert_true(rows < 2);
    assert_int_equal(n, expect_n[rows]);
    if (strcmp(crossover, "0") && strcmp(crossover, "1") && strcmp(crossover, "8"))
      fail_msg("crossover_m '%s' is not 0 or a rung of 1,8: %s", crossover, line);
    if (rows == 0) assert_string_equal(m_values, "1 16"); /* merged over the two 256x512 rows */
    rows++;
  }
  fclose(f);
  assert_int_equal(rows, 2);
  fp8gemm_context_options o;
  fp8gemm_context_options_init(&o);
  o.tuned_table_path = table;
  fp8gemm_context *ctx;
  TU_OK(fp8gemm_context_create(&o, &ctx));
  fp8gemm_context_destroy(ctx);

  assert_int_equal(run_cli("tune", "--shapes", "1,256,512", "-o", table, "--budget", "0.002",
                           "--crossover-m", "none", NULL),
                   0);
  f = fopen(table, "r");
  assert_non_null(f);
  int said_default = 0;
  do {
    assert_non_null(fgets(line, sizeof line, f));
    said_default |= strstr(line, "# crossover_m: default") != NULL;
  } while (line[0] == '#');
  assert_non_null(fgets(line, sizeof line, f)); /* past the column names */
  fclose(f);
  assert_true(said_default);
  if (!strstr(line, ",fp8gemm_linear,default,")) fail_msg("crossover_m not default: %s", line);

  /* bf16 activations (what engines pass on the GPU): a table as well. */
  assert_int_equal(run_cli("tune", "--shapes", "2,256,512", "-o", table, "--budget", "0.002",
                           "--crossover-m", "2", "--dtype", "bf16", NULL),
                   0);
  EXPECT_OUTPUT("x and y bf16");
  assert_int_equal(run_cli("tune", "--shapes", "2,256,512", "-o", table, "--dtype", "f8", NULL), 2);
  EXPECT_OUTPUT("--dtype 'f8'");

  const char *bad[] = {"8,4", "0", "4,x", "", "1,1"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    assert_int_equal(run_cli("tune", "--shapes", "1,256,512", "-o", table, "--crossover-m", bad[i],
                             NULL),
                     2);
    EXPECT_OUTPUT("--crossover-m");
  }
  unlink(table);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_quantize_default),
      cmocka_unit_test(test_quantize_patterns),
      cmocka_unit_test(test_quantize_failures_leave_nothing),
      cmocka_unit_test(test_shuffle_round_trip),
      cmocka_unit_test(test_shuffle_tuned_rule),
      cmocka_unit_test(test_inspect),
      cmocka_unit_test(test_tune_crossover),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
