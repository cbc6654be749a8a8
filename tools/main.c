/* fp8gemm: dispatches to one subcommand per source file. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "fp8gemm.h"

typedef struct subcommand {
  const char *name;
  int (*fn)(int argc, char **argv);
  const char *summary;
} subcommand;

static const subcommand subcommands[] = {
    {"run", fp8gemm_cmd_run, "the main job: DeepSeek-V3 layers, plain vs preshuffled, checked"},
    {"bench", fp8gemm_cmd_bench, "time kernels on shapes against the peer, write JSON"},
    {"verify", fp8gemm_cmd_verify, "check every kernel against the fp64 reference on shapes"},
    {"tune", fp8gemm_cmd_tune, "measure plain vs preshuffled per (N, K), write a tuned table"},
    {"quantize", fp8gemm_cmd_quantize, "bf16/fp32 safetensors -> FP8 block checkpoint"},
    {"shuffle", fp8gemm_cmd_shuffle, "reorder FP8 weights of a checkpoint into a layout"},
    {"inspect", fp8gemm_cmd_inspect, "list tensors, formats, layouts and scale statistics"},
};

static void usage(FILE *out) {
  fprintf(out, "fp8gemm %s: FP8 block-scaled GEMM\n\nusage: fp8gemm <command> [options]\n\n",
          fp8gemm_version_string());
  for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
    fprintf(out, "  %-9s %s\n", subcommands[i].name, subcommands[i].summary);
  fprintf(out, "\n'fp8gemm <command> --help' describes a command's options.\n");
}

int main(int argc, char **argv) {
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    usage(stdout);
    return 0;
  }
  if (!strcmp(argv[1], "--version")) {
    printf("fp8gemm %s\n", fp8gemm_version_string());
    return 0;
  }
  for (size_t i = 0; i < sizeof subcommands / sizeof subcommands[0]; i++)
    if (!strcmp(argv[1], subcommands[i].name)) return subcommands[i].fn(argc - 1, argv + 1);
  fprintf(stderr, "fp8gemm: unknown command '%s'\n\n", argv[1]);
  usage(stderr);
  return 2;
}
