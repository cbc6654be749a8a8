#!/usr/bin/env bash
# Compiler launcher for the library's CUDA sources, which compile with
# ptxas -v: passes the compiler's messages through (less ptxas's per-kernel
# resource report) and fails the compile when ptxas says it serialized
# wgmma instructions (C7510-C7519: a non-wgmma instruction touching the
# accumulators of one in flight, too few registers for the pipeline).
# ptxas only reports those as information, so without this a build passes
# while a kernel silently loses its tensor-core overlap.
#
# With FP8GEMM_SASS_HINTS set (the path of cmake/sass_hints.c's tool), the
# object of gemm_large.cu is then edited by it: the large-M GEMM's
# promotion lets warps switch (see that file).
out=$("$@" 2>&1)
rc=$?
printf '%s\n' "$out" | grep -v -E '^ptxas info +: [^(]|^ +[0-9]+ bytes stack frame|^$' >&2 || true
if [ $rc -eq 0 ] && printf '%s\n' "$out" | grep -q 'C751[0-9]'; then
  echo "error: ptxas serialized wgmma instructions (the C751x messages above)" >&2
  exit 1
fi
if [ $rc -eq 0 ] && [ -n "${FP8GEMM_SASS_HINTS:-}" ]; then
  src='' obj=''
  while [ $# -gt 0 ]; do
    case $1 in
      -o) obj=$2; shift ;;
      *gemm_large.cu) src=$1 ;;
    esac
    shift
  done
  if [ -n "$src" ] && [ -n "$obj" ]; then
    "$FP8GEMM_SASS_HINTS" "$obj" >/dev/null || exit 1
  fi
fi
exit $rc
