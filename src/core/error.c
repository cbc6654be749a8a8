/* Status strings and the per-thread last-error message. */
#include <stdarg.h>
#include <stdio.h>

#include "internal.h"

/* One message per thread: the library holds no global mutable state. */
static _Thread_local char last_error[1024];

fp8gemm_status fp8gemm_set_error(fp8gemm_status status, const char *fmt, ...) {
  va_list args;
  va_start(args, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, args);
  va_end(args);
  return status;
}

void fp8gemm_clear_error(void) { last_error[0] = '\0'; }

const char *fp8gemm_last_error(void) { return last_error; }

const char *fp8gemm_status_string(fp8gemm_status status) {
  switch (status) {
    case FP8GEMM_OK: return "ok";
    case FP8GEMM_ERROR_INVALID_ARGUMENT: return "invalid argument";
    case FP8GEMM_ERROR_UNSUPPORTED: return "unsupported";
    case FP8GEMM_ERROR_OUT_OF_MEMORY: return "out of memory";
    case FP8GEMM_ERROR_LAYOUT_MISMATCH: return "layout mismatch";
    case FP8GEMM_ERROR_IO: return "i/o error";
    case FP8GEMM_ERROR_PARSE: return "parse error";
    case FP8GEMM_ERROR_BACKEND: return "backend error";
    case FP8GEMM_ERROR_NO_DEVICE: return "backend or device not available";
    case FP8GEMM_ERROR_INTERNAL: return "internal error";
  }
  return "unknown status";
}

#define FP8GEMM_STR2(x) #x
#define FP8GEMM_STR(x) FP8GEMM_STR2(x)
const char *fp8gemm_version_string(void) {
  return FP8GEMM_STR(FP8GEMM_VERSION_MAJOR) "." FP8GEMM_STR(FP8GEMM_VERSION_MINOR) "." FP8GEMM_STR(
      FP8GEMM_VERSION_PATCH);
}
