/* fp8gemm inspect: what a safetensors checkpoint holds, and whether its
 * FP8 block weights are consistent.
 *
 * Lists the metadata and every tensor (dtype, shape, bytes; for FP8 weights
 * the recorded layout and block format), then the statistics of every
 * *_scale_inv tensor. The exit status is 1 when the file is not valid
 * safetensors (the reader's checks) or its FP8 block weights are
 * inconsistent: an unknown or unfitting layout, a scale of the wrong dtype
 * or shape, a scale that is not finite and positive. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "fp8gemm.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: fp8gemm inspect [-q] FILE.safetensors\n"
          "\n"
          "Lists tensors, dtypes, shapes, block formats, layouts and scale statistics;\n"
          "exits 1 if the file is invalid or its FP8 block weights are inconsistent.\n"
          "  -q, --quiet   print only problems and the summary\n");
}

static void format_shape(const fp8gemm_tensor_view *v, char *out, size_t size) {
  size_t used = (size_t)snprintf(out, size, "[");
  for (size_t i = 0; i < v->rank && used < size; i++)
    used += (size_t)snprintf(out + used, size - used, "%s%zu", i ? ", " : "", v->shape[i]);
  if (used < size) snprintf(out + used, size - used, "]");
}

static int ends_with(const char *s, const char *suffix) {
  size_t ls = strlen(s), lx = strlen(suffix);
  return ls >= lx && !strcmp(s + ls - lx, suffix);
}

typedef struct scale_stats {
  double min, max, sum;
  size_t count, bad; /* bad: not finite or <= 0 */
} scale_stats;

static scale_stats scale_statistics(const fp8gemm_tensor_view *v) {
  scale_stats s = {.min = INFINITY, .max = -INFINITY, .sum = 0, .count = v->elements, .bad = 0};
  const unsigned char *bytes = v->data;
  for (size_t i = 0; i < v->elements; i++) {
    float x;
    memcpy(&x, bytes + 4 * i, 4); /* views are not necessarily aligned */
    if (!isfinite(x) || x <= 0) {
      s.bad++;
      continue;
    }
    if (x < s.min) s.min = x;
    if (x > s.max) s.max = x;
    s.sum += x;
  }
  return s;
}

int fp8gemm_cmd_inspect(int argc, char **argv) {
  const char *path = NULL;
  int quiet = 0;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(argv[i], "-q") || !strcmp(argv[i], "--quiet")) {
      quiet = 1;
    } else if (argv[i][0] == '-' && argv[i][1]) {
      fprintf(stderr, "fp8gemm inspect: unknown option '%s'\n", argv[i]);
      return 2;
    } else if (!path) {
      path = argv[i];
    } else {
      fprintf(stderr, "fp8gemm inspect: one file at a time\n");
      return 2;
    }
  }
  if (!path) {
    usage(stderr);
    return 2;
  }
  fp8gemm_safetensors *file = NULL;
  fp8gemm_status status = fp8gemm_safetensors_open(path, &file);
  if (status != FP8GEMM_OK) {
    fprintf(stderr, "fp8gemm inspect: invalid: %s: %s\n", fp8gemm_status_string(status),
            fp8gemm_last_error());
    return 1;
  }

  size_t count = fp8gemm_safetensors_count(file), total_bytes = 0, problems = 0;
  size_t fp8_weights = 0, block_weights = 0, per_layout[FP8GEMM_LAYOUT_COUNT] = {0};
  size_t dtype_count[FP8GEMM_ST_DTYPE_COUNT] = {0}, dtype_bytes[FP8GEMM_ST_DTYPE_COUNT] = {0};
  printf("%s: %zu tensors\n", path, count);

  size_t nmeta = fp8gemm_safetensors_metadata_count(file);
  size_t layout_prefix_len = strlen(FP8GEMM_ST_META_LAYOUT_PREFIX);
  printf("metadata (%zu entries; per-tensor layouts are shown with the tensors):\n", nmeta);
  for (size_t i = 0; i < nmeta; i++) {
    const char *key, *value;
    if (fp8gemm_safetensors_metadata_at(file, i, &key, &value) != FP8GEMM_OK) continue;
    if (!strncmp(key, FP8GEMM_ST_META_LAYOUT_PREFIX, layout_prefix_len)) {
      /* Shown in the tensor list; here only a key naming no FP8 weight. */
      const char *tensor = key + layout_prefix_len;
      fp8gemm_tensor_view v;
      if (fp8gemm_safetensors_find(file, tensor, &v) != FP8GEMM_OK ||
          v.dtype != FP8GEMM_ST_F8_E4M3 || v.rank != 2) {
        printf("  PROBLEM: %s = %s: no 2-D F8_E4M3 tensor of that name\n", key, value);
        problems++;
      }
      continue;
    }
    printf("  %s = %s\n", key, value);
  }
  const char *format = fp8gemm_safetensors_metadata(file, FP8GEMM_ST_META_FORMAT);
  const char *block = fp8gemm_safetensors_metadata(file, FP8GEMM_ST_META_BLOCK);
  if (format && strcmp(format, FP8GEMM_ST_FORMAT_BLOCK128))
    printf("  note: format '%s' is not one fp8gemm reads\n", format);
  if (block && strcmp(block, FP8GEMM_ST_BLOCK128))
    printf("  note: block '%s' is not 128,128\n", block);

  if (!quiet) printf("tensors:\n");
  for (size_t i = 0; i < count; i++) {
    fp8gemm_tensor_view v;
    if (fp8gemm_safetensors_tensor(file, i, &v) != FP8GEMM_OK) continue;
    total_bytes += v.bytes;
    dtype_count[v.dtype]++;
    dtype_bytes[v.dtype] += v.bytes;
    char shape[192];
    format_shape(&v, shape, sizeof shape);
    char detail[512] = "";
    if (v.dtype == FP8GEMM_ST_F8_E4M3 && v.rank == 2) {
      fp8_weights++;
      const size_t N = v.shape[0], K = v.shape[1];
      fp8gemm_layout layout = FP8GEMM_LAYOUT_PLAIN;
      const char *layout_text;
      if (fp8gemm_safetensors_tensor_layout(file, v.name, &layout) != FP8GEMM_OK) {
        printf("  PROBLEM: %s\n", fp8gemm_last_error());
        problems++;
        layout_text = "unknown";
      } else if (fp8gemm_layout_check(layout, N, K) != FP8GEMM_OK) {
        printf("  PROBLEM: %s %s: recorded layout %s does not fit: %s\n", v.name, shape,
               fp8gemm_layout_name(layout), fp8gemm_last_error());
        problems++;
        layout_text = fp8gemm_layout_name(layout);
      } else {
        per_layout[layout]++;
        layout_text = fp8gemm_layout_name(layout);
      }
      size_t name_len = strlen(v.name) + sizeof "_scale_inv";
      char *scale_name = malloc(name_len);
      fp8gemm_tensor_view s;
      const char *format_text = "no block scale (per-tensor FP8?)";
      if (scale_name) {
        snprintf(scale_name, name_len, "%s_scale_inv", v.name);
        if (fp8gemm_safetensors_find(file, scale_name, &s) == FP8GEMM_OK) {
          const size_t sn = (N + FP8GEMM_BLOCK - 1) / FP8GEMM_BLOCK;
          const size_t sk = (K + FP8GEMM_BLOCK - 1) / FP8GEMM_BLOCK;
          char scale_shape[192];
          format_shape(&s, scale_shape, sizeof scale_shape);
          if (s.dtype != FP8GEMM_ST_F32 || s.rank != 2 || s.shape[0] != sn || s.shape[1] != sk) {
            printf("  PROBLEM: %s is %s %s, expected F32 [%zu, %zu] for %s %s\n", scale_name,
                   fp8gemm_st_dtype_name(s.dtype), scale_shape, sn, sk, v.name, shape);
            problems++;
            format_text = "block scale MISMATCH";
          } else {
            block_weights++;
            format_text = "block 128x128";
          }
        }
      }
      free(scale_name);
      snprintf(detail, sizeof detail, "  layout %s, %s", layout_text, format_text);
    }
    if (!quiet)
      printf("  %-64s %-8s %-20s %12zu%s\n", v.name, fp8gemm_st_dtype_name(v.dtype), shape,
             v.bytes, detail);
  }

  size_t scales = 0;
  for (size_t i = 0; i < count; i++) {
    fp8gemm_tensor_view v;
    if (fp8gemm_safetensors_tensor(file, i, &v) != FP8GEMM_OK ||
        !ends_with(v.name, "_scale_inv"))
      continue;
    if (scales++ == 0 && !quiet) printf("scale statistics (min / max / mean):\n");
    if (v.dtype != FP8GEMM_ST_F32) {
      printf("  %-64s %s: not F32, no statistics\n", v.name, fp8gemm_st_dtype_name(v.dtype));
      continue;
    }
    scale_stats st = scale_statistics(&v);
    size_t good = st.count - st.bad;
    if (!quiet || st.bad)
      printf("  %-64s %.4g / %.4g / %.4g\n", v.name, good ? st.min : NAN, good ? st.max : NAN,
             good ? st.sum / (double)good : NAN);
    if (st.bad) {
      printf("  PROBLEM: %s: %zu of %zu scales are not finite and positive\n", v.name, st.bad,
             st.count);
      problems++;
    }
  }

  printf("summary: %zu tensors, %.1f MB;", count, (double)total_bytes / 1e6);
  for (int d = 0; d < FP8GEMM_ST_DTYPE_COUNT; d++)
    if (dtype_count[d])
      printf(" %s %zu (%.1f MB)", fp8gemm_st_dtype_name((fp8gemm_st_dtype)d), dtype_count[d],
             (double)dtype_bytes[d] / 1e6);
  printf("\n         %zu FP8 weights, %zu with 128x128 block scales; layouts:", fp8_weights,
         block_weights);
  for (int l = 0; l < FP8GEMM_LAYOUT_COUNT; l++)
    if (per_layout[l]) printf(" %s %zu", fp8gemm_layout_name((fp8gemm_layout)l), per_layout[l]);
  printf("\n");
  if (problems) printf("%zu PROBLEM(S) found\n", problems);
  fp8gemm_safetensors_close(file);
  return problems ? 1 : 0;
}
