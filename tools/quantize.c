/* fp8gemm quantize: a bf16/fp16/fp32 safetensors checkpoint -> FP8 block
 * checkpoint (DeepSeek-V3 convention).
 *
 * Each selected linear weight X.weight [N, K] becomes X.weight (F8_E4M3,
 * plain layout) plus X.weight_scale_inv (F32 [ceil(N/128), ceil(K/128)]),
 * through fp8gemm_quantize_weight on a CPU context (parallel). Everything
 * else is copied byte for byte. __metadata__ keeps the input's entries and
 * gains fp8gemm.format and fp8gemm.block. Output is written atomically;
 * the input is only read. */
#include <errno.h>
#include <regex.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "fp8gemm.h"

/* Embeddings, norms and the output head stay in their dtype by default,
 * as model loaders of FP8 checkpoints expect them. */
#define DEFAULT_KEEP_PATTERN "embed|norm|lm_head"
#define MAX_PATTERNS 32

static void usage(FILE *out) {
  fprintf(out,
          "usage: fp8gemm quantize [options] IN.safetensors OUT.safetensors\n"
          "\n"
          "Quantizes the 2-D weights of linear layers (tensors named *.weight, 2-D,\n"
          "F32/BF16/F16, K %% 16 == 0) to F8_E4M3 with 128x128 block scales\n"
          "(X.weight -> X.weight + X.weight_scale_inv); copies every other tensor.\n"
          "Names matching /%s/ (case-insensitive) are kept by default.\n"
          "\n"
          "  --include REGEX  quantize only weights whose name matches (POSIX extended;\n"
          "                   repeatable); replaces the default keep rule\n"
          "  --exclude REGEX  keep weights whose name matches (repeatable)\n"
          "  --threads N      worker threads (default: all cores)\n"
          "  -q, --quiet      print only the summary\n",
          DEFAULT_KEEP_PATTERN);
}

typedef struct pattern_list {
  regex_t regex[MAX_PATTERNS];
  const char *text[MAX_PATTERNS];
  int count;
} pattern_list;

static int add_pattern(pattern_list *list, const char *text, int flags) {
  if (list->count == MAX_PATTERNS) {
    fprintf(stderr, "fp8gemm quantize: more than %d patterns\n", MAX_PATTERNS);
    return 0;
  }
  int rc = regcomp(&list->regex[list->count], text, REG_EXTENDED | REG_NOSUB | flags);
  if (rc != 0) {
    char message[256];
    regerror(rc, &list->regex[list->count], message, sizeof message);
    fprintf(stderr, "fp8gemm quantize: bad pattern '%s': %s\n", text, message);
    return 0;
  }
  list->text[list->count++] = text;
  return 1;
}

static int matches_any(const pattern_list *list, const char *name) {
  for (int i = 0; i < list->count; i++)
    if (regexec(&list->regex[i], name, 0, NULL, 0) == 0) return 1;
  return 0;
}

static void free_patterns(pattern_list *list) {
  for (int i = 0; i < list->count; i++) regfree(&list->regex[i]);
  list->count = 0;
}

static int float_dtype(fp8gemm_st_dtype st, fp8gemm_dtype *dtype) {
  switch (st) {
    case FP8GEMM_ST_F32: *dtype = FP8GEMM_DTYPE_F32; return 1;
    case FP8GEMM_ST_BF16: *dtype = FP8GEMM_DTYPE_BF16; return 1;
    case FP8GEMM_ST_F16: *dtype = FP8GEMM_DTYPE_F16; return 1;
    default: return 0;
  }
}

static int ends_with(const char *s, const char *suffix) {
  size_t ls = strlen(s), lx = strlen(suffix);
  return ls >= lx && !strcmp(s + ls - lx, suffix);
}

/* One weight to quantize: the writer calls fill_weight, then fill_scale
 * (added right after), so the scales live only between the two. */
typedef struct quantize_job {
  fp8gemm_context *context;
  fp8gemm_tensor_view source;
  fp8gemm_dtype dtype;
  size_t N, K;
  char *scale_name;
  float *scales;
  size_t scale_bytes;
} quantize_job;

static fp8gemm_status fill_weight(void *user, void *dst, size_t bytes) {
  quantize_job *job = user;
  (void)bytes; /* == N * K, checked when the tensor was added */
  job->scales = malloc(job->scale_bytes);
  const void *source = job->source.data;
  void *aligned = NULL;
  /* The format does not align tensors; the quantizer reads whole elements. */
  if ((uintptr_t)source % fp8gemm_dtype_size(job->dtype) != 0) {
    aligned = malloc(job->source.bytes);
    if (aligned) memcpy(aligned, source, job->source.bytes);
    source = aligned;
  }
  fp8gemm_status status;
  if (!job->scales || !source) {
    fprintf(stderr, "fp8gemm quantize: %s: out of memory\n", job->source.name);
    status = FP8GEMM_ERROR_OUT_OF_MEMORY;
  } else {
    status = fp8gemm_quantize_weight(job->context, job->N, job->K, job->dtype, source, job->K,
                                     dst, job->scales);
  }
  free(aligned);
  return status;
}

static fp8gemm_status fill_scale(void *user, void *dst, size_t bytes) {
  quantize_job *job = user;
  if (!job->scales || bytes != job->scale_bytes) return FP8GEMM_ERROR_INTERNAL;
  memcpy(dst, job->scales, bytes);
  free(job->scales);
  job->scales = NULL;
  return FP8GEMM_OK;
}

/* Why a 2-D float tensor named *.weight stays as it is (NULL: quantize). */
static const char *keep_reason(const fp8gemm_safetensors *in, const fp8gemm_tensor_view *v,
                               const pattern_list *include, const pattern_list *exclude,
                               const pattern_list *default_keep, const char *scale_name) {
  if (include->count ? !matches_any(include, v->name) : matches_any(default_keep, v->name))
    return include->count ? "not matched by --include" : "embedding/norm/lm_head";
  if (matches_any(exclude, v->name)) return "matched by --exclude";
  if (v->shape[0] == 0 || v->shape[1] == 0) return "empty";
  if (v->shape[1] % 16 != 0) return "K is not a multiple of 16";
  if (fp8gemm_safetensors_contains(in, scale_name)) return "a _scale_inv tensor already exists";
  return NULL;
}

int fp8gemm_cmd_quantize(int argc, char **argv) {
  pattern_list include = {.count = 0}, exclude = {.count = 0}, default_keep = {.count = 0};
  const char *paths[2];
  int npaths = 0, quiet = 0, threads = 0, rc = 1;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
      usage(stdout);
      rc = 0;
      goto out;
    } else if (!strcmp(arg, "--include") || !strcmp(arg, "--exclude")) {
      if (i + 1 >= argc) {
        fprintf(stderr, "fp8gemm quantize: %s needs a pattern\n", arg);
        rc = 2;
        goto out;
      }
      if (!add_pattern(arg[2] == 'i' ? &include : &exclude, argv[++i], 0)) {
        rc = 2;
        goto out;
      }
    } else if (!strcmp(arg, "--threads")) {
      char *end = NULL;
      long n = i + 1 < argc ? strtol(argv[++i], &end, 10) : -1;
      if (n < 0 || n > 4096 || !end || *end) {
        fprintf(stderr, "fp8gemm quantize: --threads needs a count >= 0\n");
        rc = 2;
        goto out;
      }
      threads = (int)n;
    } else if (!strcmp(arg, "-q") || !strcmp(arg, "--quiet")) {
      quiet = 1;
    } else if (arg[0] == '-' && arg[1]) {
      fprintf(stderr, "fp8gemm quantize: unknown option '%s'\n", arg);
      usage(stderr);
      rc = 2;
      goto out;
    } else if (npaths < 2) {
      paths[npaths++] = arg;
    } else {
      fprintf(stderr, "fp8gemm quantize: too many arguments\n");
      rc = 2;
      goto out;
    }
  }
  if (npaths != 2) {
    usage(stderr);
    rc = 2;
    goto out;
  }
  if (!add_pattern(&default_keep, DEFAULT_KEEP_PATTERN, REG_ICASE)) goto out;
  if (cli_same_file(paths[0], paths[1])) {
    fprintf(stderr, "fp8gemm quantize: %s is the input file; the input is never overwritten\n",
            paths[1]);
    rc = 2;
    goto out;
  }

  double start = cli_now();
  fp8gemm_safetensors *in = NULL;
  fp8gemm_context *context = NULL;
  fp8gemm_safetensors_writer *writer = NULL;
  quantize_job *jobs = NULL;
  size_t njobs = 0, kept_weights = 0, in_bytes = 0, out_bytes = 0;
  fp8gemm_status status = fp8gemm_safetensors_open(paths[0], &in);
  if (status != FP8GEMM_OK) goto fail;
  fp8gemm_context_options options;
  fp8gemm_context_options_init(&options);
  options.backend = FP8GEMM_BACKEND_CPU;
  options.num_threads = threads;
  status = fp8gemm_context_create(&options, &context);
  if (status != FP8GEMM_OK) goto fail;
  status = fp8gemm_safetensors_writer_create(&writer);
  if (status != FP8GEMM_OK) goto fail;

  size_t count = fp8gemm_safetensors_count(in);
  jobs = calloc(count ? count : 1, sizeof *jobs);
  if (!jobs) {
    fprintf(stderr, "fp8gemm quantize: out of memory\n");
    goto cleanup;
  }
  for (size_t i = 0; i < fp8gemm_safetensors_metadata_count(in) && status == FP8GEMM_OK; i++) {
    const char *key, *value;
    status = fp8gemm_safetensors_metadata_at(in, i, &key, &value);
    if (status == FP8GEMM_OK) status = fp8gemm_safetensors_writer_set_metadata(writer, key, value);
  }
  if (status == FP8GEMM_OK)
    status = fp8gemm_safetensors_writer_set_metadata(writer, FP8GEMM_ST_META_FORMAT,
                                                     FP8GEMM_ST_FORMAT_BLOCK128);
  if (status == FP8GEMM_OK)
    status =
        fp8gemm_safetensors_writer_set_metadata(writer, FP8GEMM_ST_META_BLOCK, FP8GEMM_ST_BLOCK128);
  if (status != FP8GEMM_OK) goto fail;

  for (size_t i = 0; i < count; i++) {
    fp8gemm_tensor_view v;
    status = fp8gemm_safetensors_tensor(in, i, &v);
    if (status != FP8GEMM_OK) goto fail;
    in_bytes += v.bytes;
    fp8gemm_dtype dtype;
    int candidate = v.rank == 2 && ends_with(v.name, ".weight") && float_dtype(v.dtype, &dtype);
    const char *reason = NULL;
    char *scale_name = NULL;
    if (candidate) {
      size_t len = strlen(v.name) + sizeof "_scale_inv";
      scale_name = malloc(len);
      if (!scale_name) {
        fprintf(stderr, "fp8gemm quantize: out of memory\n");
        goto cleanup;
      }
      snprintf(scale_name, len, "%s_scale_inv", v.name);
      reason = keep_reason(in, &v, &include, &exclude, &default_keep, scale_name);
    }
    if (!candidate || reason) {
      free(scale_name);
      if (candidate) {
        kept_weights++;
        if (!quiet)
          printf("kept      %-60s %s [%zu, %zu]: %s\n", v.name, fp8gemm_st_dtype_name(v.dtype),
                 v.shape[0], v.shape[1], reason);
      }
      status = fp8gemm_safetensors_writer_add(writer, v.name, v.dtype, v.rank, v.shape, v.data);
      if (status != FP8GEMM_OK) goto fail;
      out_bytes += v.bytes;
      continue;
    }
    quantize_job *job = &jobs[njobs++];
    job->context = context;
    job->source = v;
    job->dtype = dtype;
    job->N = v.shape[0];
    job->K = v.shape[1];
    job->scale_name = scale_name;
    const size_t scale_shape[2] = {(job->N + FP8GEMM_BLOCK - 1) / FP8GEMM_BLOCK,
                                   (job->K + FP8GEMM_BLOCK - 1) / FP8GEMM_BLOCK};
    job->scale_bytes = scale_shape[0] * scale_shape[1] * sizeof(float);
    status = fp8gemm_safetensors_writer_add_deferred(writer, v.name, FP8GEMM_ST_F8_E4M3, 2,
                                                     v.shape, fill_weight, job);
    if (status == FP8GEMM_OK)
      status = fp8gemm_safetensors_writer_add_deferred(writer, scale_name, FP8GEMM_ST_F32, 2,
                                                       scale_shape, fill_scale, job);
    if (status != FP8GEMM_OK) goto fail;
    out_bytes += job->N * job->K + job->scale_bytes;
    if (!quiet)
      printf("quantize  %-60s %s [%zu, %zu] -> F8_E4M3 + %s [%zu, %zu]\n", v.name,
             fp8gemm_st_dtype_name(v.dtype), job->N, job->K, scale_name, scale_shape[0],
             scale_shape[1]);
  }

  status = fp8gemm_safetensors_writer_write(writer, paths[1]);
  if (status != FP8GEMM_OK) goto fail;
  double seconds = cli_now() - start;
  printf("quantized %zu weights, kept %zu 2-D weights, copied %zu other tensors; %.1f MB -> "
         "%.1f MB in %.3f s (%.0f MB/s of input); wrote %s\n",
         njobs, kept_weights, count - njobs - kept_weights, (double)in_bytes / 1e6,
         (double)out_bytes / 1e6, seconds, (double)in_bytes / 1e6 / seconds, paths[1]);
  rc = 0;
  goto cleanup;

fail:
  fprintf(stderr, "fp8gemm quantize: %s: %s\n", fp8gemm_status_string(status),
          fp8gemm_last_error());
cleanup:
  if (jobs)
    for (size_t i = 0; i < njobs; i++) {
      free(jobs[i].scale_name);
      free(jobs[i].scales);
    }
  free(jobs);
  fp8gemm_safetensors_writer_destroy(writer);
  fp8gemm_context_destroy(context);
  fp8gemm_safetensors_close(in);
out:
  free_patterns(&include);
  free_patterns(&exclude);
  free_patterns(&default_keep);
  return rc;
}
