#!/usr/bin/env bash
# Decode-path pass on the Hopper machine, building nothing: the read roof
# (bench/read_roof.cu), the GPU tests with the decode kernel (gemm_stream) forced
# for every M (and the fused linear for M <= 32), compute-sanitizer on that
# configuration, and the decode rows (M <= 128) of the benchmark with each
# small-M kernel forced, against torch's blockwise scaled_mm.
#
#   bash bench/gpu_decode.sh ARTIFACTS     (flat folder: libfp8gemm.so, fp8gemm,
#                                           cuda_test_*, read_roof, shapes.csv,
#                                           libjansson/libcmocka)
#   STEPS="roof tests sanitize bench"      which steps (default all)
set -u
ART=$(cd "${1:?artifacts folder}" && pwd)
OUT=${OUT:-/tmp/fp8gemm-decode}
mkdir -p "$OUT"
STEPS=${STEPS:-"roof tests sanitize bench"}
export LD_LIBRARY_PATH="$ART:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
status=0
has() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
run() { # log timeout command... (env assignments go through `env`)
  local log=$1 limit=$2
  shift 2
  local start=$(date +%s)
  echo "=== $*" >>"$OUT/$log"
  timeout "$limit" "$@" >>"$OUT/$log" 2>&1
  local rc=$?
  echo "== rc=$rc ($(( $(date +%s) - start )) s): $*" | tee -a "$OUT/$log"
  [ $rc -eq 0 ] || status=1
}
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

if has roof; then
  run roof.log 60 "$ART/read_roof"
  cat "$OUT/roof.log"
fi
if has tests; then
  STREAM="FP8GEMM_CUDA_CROSSOVER=1000000 FP8GEMM_CUDA_FUSED_MAX_M=32"
  run tests.log 240 env $STREAM "$ART/cuda_test_gemm"
  run tests.log 120 env FP8GEMM_TEST_QUICK=1 "$ART/cuda_test_gemm"
  run tests.log 120 env FP8GEMM_TEST_QUICK=1 FP8GEMM_CUDA_SMALL_KERNEL=registers $STREAM "$ART/cuda_test_gemm"
  for t in ops graph; do
    run tests.log 120 env $STREAM "$ART/cuda_test_$t"
    run tests.log 120 "$ART/cuda_test_$t"
  done
  grep -E "FAILED|rc=[1-9]|Error" "$OUT/tests.log" | head -20
fi
if has sanitize; then
  for tool in memcheck racecheck; do
    run sanitizer.log 200 env FP8GEMM_TEST_QUICK=1 FP8GEMM_CUDA_CROSSOVER=1000000 FP8GEMM_CUDA_FUSED_MAX_M=32 \
      compute-sanitizer --tool $tool --error-exitcode 99 "$ART/cuda_test_gemm"
  done
  run sanitizer.log 200 env FP8GEMM_TEST_QUICK=1 FP8GEMM_CUDA_CROSSOVER=1000000 FP8GEMM_CUDA_FUSED_MAX_M=32 \
    compute-sanitizer --tool memcheck --error-exitcode 99 "$ART/cuda_test_ops"
  # Default dispatch: decode row splits, large-M split-K (cooperative), two streams at once.
  for tool in memcheck racecheck; do
    run sanitizer.log 200 env FP8GEMM_TEST_QUICK=1 \
      compute-sanitizer --tool $tool --error-exitcode 99 "$ART/cuda_test_graph"
  done
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer.log"
fi
if has bench; then
  run bench.log 300 python3 bench/cuda_bench.py --lib "$ART/libfp8gemm.so" --shapes "$ART/shapes.csv" \
    --out "$OUT/decode-bench.json" --max-m "${MAX_M:-128}"
  grep -E "^\||copy" "$OUT/bench.log" | tail -n 150
fi
exit $status
