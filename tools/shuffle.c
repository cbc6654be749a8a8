/* fp8gemm shuffle: reorders the FP8 weights of a checkpoint into a layout
 * and records each tensor's layout in __metadata__
 * ("fp8gemm.layout.<tensor>", absent = plain).
 *
 * Every 2-D F8_E4M3 tensor is a weight. Its current layout is the one the
 * input records; it is reordered through fp8gemm_shuffle (parallel, on a
 * CPU context) into the target layout: the asked one, or with --tuned the
 * asked one only where the tuned table assigns the preshuffled kernel and
 * plain elsewhere (the rule of SGLang's bpreshuffle path). A weight already
 * in its target layout is left alone; a shape the layout cannot take is
 * reported and left as it is. Other tensors and metadata are copied. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli_util.h"
#include "commands.h"
#include "fp8gemm.h"

static void usage(FILE *out) {
  fprintf(out,
          "usage: fp8gemm shuffle --layout LAYOUT [options] IN.safetensors OUT.safetensors\n"
          "\n"
          "  --layout L       aiter16x16 | preshuffled | plain | preshuffled_cpu |\n"
          "                   preshuffled_sm90 ('preshuffled' = the backend's own order;\n"
          "                   'plain' undoes any shuffle bit-exactly)\n"
          "  --tuned T.csv    shuffle only the (N, K) that the table assigns to the\n"
          "                   preshuffled kernel of --backend; the others become plain\n"
          "  --backend B      cpu | cuda: whose table rows and preshuffled order (default cpu)\n"
          "  --threads N      worker threads (default: all cores)\n"
          "  -q, --quiet      print only the summary\n");
}

typedef struct shuffle_job {
  fp8gemm_context *context;
  fp8gemm_tensor_view source;
  fp8gemm_layout from, to;
} shuffle_job;

static fp8gemm_status fill_shuffled(void *user, void *dst, size_t bytes) {
  shuffle_job *job = user;
  (void)bytes; /* == N * K */
  return fp8gemm_shuffle(job->context, job->source.shape[0], job->source.shape[1], job->from,
                         job->source.data, job->to, dst);
}

static fp8gemm_status set_layout_metadata(fp8gemm_safetensors_writer *writer, const char *name,
                                          fp8gemm_layout layout) {
  size_t len = strlen(FP8GEMM_ST_META_LAYOUT_PREFIX) + strlen(name) + 1;
  char *key = malloc(len);
  if (!key) return FP8GEMM_ERROR_OUT_OF_MEMORY;
  snprintf(key, len, "%s%s", FP8GEMM_ST_META_LAYOUT_PREFIX, name);
  /* Plain is the absence of the key, so a round trip gives the original. */
  fp8gemm_status status = fp8gemm_safetensors_writer_set_metadata(
      writer, key, layout == FP8GEMM_LAYOUT_PLAIN ? NULL : fp8gemm_layout_name(layout));
  free(key);
  return status;
}

int fp8gemm_cmd_shuffle(int argc, char **argv) {
  const char *layout_name = NULL, *tuned = NULL, *backend_name = "cpu";
  const char *paths[2];
  int npaths = 0, quiet = 0, threads = 0;
  for (int i = 1; i < argc; i++) {
    const char *arg = argv[i];
    int has_value = i + 1 < argc;
    if (!strcmp(arg, "-h") || !strcmp(arg, "--help")) {
      usage(stdout);
      return 0;
    } else if (!strcmp(arg, "--layout") && has_value) {
      layout_name = argv[++i];
    } else if (!strcmp(arg, "--tuned") && has_value) {
      tuned = argv[++i];
    } else if (!strcmp(arg, "--backend") && has_value) {
      backend_name = argv[++i];
    } else if (!strcmp(arg, "--threads") && has_value) {
      char *end = NULL;
      long n = strtol(argv[++i], &end, 10);
      if (n < 0 || n > 4096 || !end || *end) {
        fprintf(stderr, "fp8gemm shuffle: --threads needs a count >= 0\n");
        return 2;
      }
      threads = (int)n;
    } else if (!strcmp(arg, "-q") || !strcmp(arg, "--quiet")) {
      quiet = 1;
    } else if (arg[0] == '-' && arg[1]) {
      fprintf(stderr, "fp8gemm shuffle: unknown option '%s' (or missing value)\n", arg);
      usage(stderr);
      return 2;
    } else if (npaths < 2) {
      paths[npaths++] = arg;
    } else {
      fprintf(stderr, "fp8gemm shuffle: too many arguments\n");
      return 2;
    }
  }
  if (npaths != 2 || !layout_name) {
    usage(stderr);
    return 2;
  }
  fp8gemm_backend backend;
  if (!strcmp(backend_name, "cpu")) {
    backend = FP8GEMM_BACKEND_CPU;
  } else if (!strcmp(backend_name, "cuda")) {
    backend = FP8GEMM_BACKEND_CUDA;
  } else {
    fprintf(stderr, "fp8gemm shuffle: --backend must be cpu or cuda, not '%s'\n", backend_name);
    return 2;
  }
  int want_preshuffled = !strcmp(layout_name, "preshuffled");
  fp8gemm_layout asked = FP8GEMM_LAYOUT_PLAIN;
  if (!want_preshuffled && fp8gemm_layout_from_name(layout_name, &asked) != FP8GEMM_OK) {
    fprintf(stderr, "fp8gemm shuffle: --layout: %s (or 'preshuffled')\n", fp8gemm_last_error());
    return 2;
  }
  if (tuned && !want_preshuffled && asked == FP8GEMM_LAYOUT_PLAIN) {
    fprintf(stderr, "fp8gemm shuffle: --tuned picks which weights to shuffle; with --layout "
                    "plain there is nothing to pick\n");
    return 2;
  }
  if (cli_same_file(paths[0], paths[1])) {
    fprintf(stderr, "fp8gemm shuffle: %s is the input file; the input is never overwritten\n",
            paths[1]);
    return 2;
  }

  double start = cli_now();
  int rc = 1;
  fp8gemm_safetensors *in = NULL;
  fp8gemm_context *worker = NULL, *decider = NULL;
  fp8gemm_safetensors_writer *writer = NULL;
  shuffle_job *jobs = NULL;
  size_t njobs = 0, unchanged = 0, refused = 0, in_bytes = 0;

  /* The shuffles run on the CPU (the data is in host memory); the table
   * and the meaning of "preshuffled" come from the named backend. */
  fp8gemm_context_options options;
  fp8gemm_context_options_init(&options);
  options.backend = FP8GEMM_BACKEND_CPU;
  options.num_threads = threads;
  fp8gemm_status status = fp8gemm_context_create(&options, &worker);
  if (status != FP8GEMM_OK) goto fail;
  /* The table's rules need a context of that backend (for CUDA: a GPU). */
  if (tuned) {
    fp8gemm_context_options_init(&options);
    options.backend = backend;
    options.num_threads = 1;
    options.tuned_table_path = tuned;
    status = fp8gemm_context_create(&options, &decider);
    if (status != FP8GEMM_OK) goto fail;
  }
  const fp8gemm_context *rules = decider ? decider : worker;
  fp8gemm_layout preshuffled = decider ? fp8gemm_context_preshuffled_layout(decider)
                               : backend == FP8GEMM_BACKEND_CUDA
                                   ? FP8GEMM_LAYOUT_PRESHUFFLED_SM90
                                   : fp8gemm_context_preshuffled_layout(worker);
  if (want_preshuffled) asked = preshuffled;

  status = fp8gemm_safetensors_open(paths[0], &in);
  if (status != FP8GEMM_OK) goto fail;
  status = fp8gemm_safetensors_writer_create(&writer);
  if (status != FP8GEMM_OK) goto fail;
  for (size_t i = 0; i < fp8gemm_safetensors_metadata_count(in) && status == FP8GEMM_OK; i++) {
    const char *key, *value;
    status = fp8gemm_safetensors_metadata_at(in, i, &key, &value);
    if (status == FP8GEMM_OK) status = fp8gemm_safetensors_writer_set_metadata(writer, key, value);
  }
  if (status != FP8GEMM_OK) goto fail;

  size_t count = fp8gemm_safetensors_count(in);
  jobs = calloc(count ? count : 1, sizeof *jobs);
  if (!jobs) {
    fprintf(stderr, "fp8gemm shuffle: out of memory\n");
    goto cleanup;
  }
  for (size_t i = 0; i < count; i++) {
    fp8gemm_tensor_view v;
    status = fp8gemm_safetensors_tensor(in, i, &v);
    if (status != FP8GEMM_OK) goto fail;
    in_bytes += v.bytes;
    if (v.dtype != FP8GEMM_ST_F8_E4M3 || v.rank != 2) {
      status = fp8gemm_safetensors_writer_add(writer, v.name, v.dtype, v.rank, v.shape, v.data);
      if (status != FP8GEMM_OK) goto fail;
      continue;
    }
    const size_t N = v.shape[0], K = v.shape[1];
    fp8gemm_layout current, target = asked;
    status = fp8gemm_safetensors_tensor_layout(in, v.name, &current);
    if (status != FP8GEMM_OK) goto fail;
    const char *why = "asked";
    if (tuned) {
      fp8gemm_layout chosen;
      status = fp8gemm_context_choose_layout(rules, N, K, &chosen);
      if (status != FP8GEMM_OK) goto fail;
      int preshuffle = chosen == preshuffled;
      target = preshuffle ? asked : FP8GEMM_LAYOUT_PLAIN;
      why = preshuffle ? "table: preshuffled kernel" : "table: plain kernel";
    }
    fp8gemm_layout stored = current;
    if (target == current) {
      unchanged++;
      if (!quiet)
        printf("unchanged %-60s [%zu, %zu] already %s (%s)\n", v.name, N, K,
               fp8gemm_layout_name(current), why);
    } else if (fp8gemm_layout_check(target, N, K) != FP8GEMM_OK) {
      refused++;
      if (!quiet)
        printf("left      %-60s [%zu, %zu] %s: cannot take %s: %s\n", v.name, N, K,
               fp8gemm_layout_name(current), fp8gemm_layout_name(target), fp8gemm_last_error());
    } else {
      shuffle_job *job = &jobs[njobs++];
      *job = (shuffle_job){.context = worker, .source = v, .from = current, .to = target};
      stored = target;
      if (!quiet)
        printf("shuffle   %-60s [%zu, %zu] %s -> %s (%s)\n", v.name, N, K,
               fp8gemm_layout_name(current), fp8gemm_layout_name(target), why);
    }
    if (stored == current)
      status = fp8gemm_safetensors_writer_add(writer, v.name, v.dtype, 2, v.shape, v.data);
    else
      status = fp8gemm_safetensors_writer_add_deferred(writer, v.name, v.dtype, 2, v.shape,
                                                       fill_shuffled, &jobs[njobs - 1]);
    if (status == FP8GEMM_OK) status = set_layout_metadata(writer, v.name, stored);
    if (status != FP8GEMM_OK) goto fail;
  }

  status = fp8gemm_safetensors_writer_write(writer, paths[1]);
  if (status != FP8GEMM_OK) goto fail;
  double seconds = cli_now() - start;
  printf("shuffled %zu weights, %zu already in their layout, %zu left (shape), copied %zu "
         "other tensors; %.1f MB in %.3f s (%.0f MB/s); wrote %s\n",
         njobs, unchanged, refused, count - njobs - unchanged - refused, (double)in_bytes / 1e6,
         seconds, (double)in_bytes / 1e6 / seconds, paths[1]);
  rc = 0;
  goto cleanup;

fail:
  fprintf(stderr, "fp8gemm shuffle: %s: %s\n", fp8gemm_status_string(status),
          fp8gemm_last_error());
cleanup:
  free(jobs);
  fp8gemm_safetensors_writer_destroy(writer);
  fp8gemm_safetensors_close(in);
  fp8gemm_context_destroy(decider);
  fp8gemm_context_destroy(worker);
  return rc;
}
