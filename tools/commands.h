/* The fp8gemm command-line tool: one source file per subcommand. Each
 * subcommand receives argv with argv[0] = its own name and returns the
 * process exit status (0 success, 1 failure, 2 usage error). */
#ifndef FP8GEMM_TOOLS_COMMANDS_H
#define FP8GEMM_TOOLS_COMMANDS_H

int fp8gemm_cmd_run(int argc, char **argv);      /* run.c: the main job */
int fp8gemm_cmd_bench(int argc, char **argv);    /* bench.c */
int fp8gemm_cmd_verify(int argc, char **argv);   /* verify.c */
int fp8gemm_cmd_tune(int argc, char **argv);     /* tune.c */
int fp8gemm_cmd_quantize(int argc, char **argv); /* quantize.c */
int fp8gemm_cmd_shuffle(int argc, char **argv);  /* shuffle.c */
int fp8gemm_cmd_inspect(int argc, char **argv);  /* inspect.c */

#endif
