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
#   STEPS="roof tests sanitize bench"      which steps (default all; "ncu" on request:
#                                           Nsight Compute memory and warp-state sections of
#                                           the decode kernel, one launch per NCU_SHAPES entry)
#   DECODE_ENV="FP8GEMM_CUDA_STREAM_FIXUP=cluster"   more settings for the tests and
#                                           sanitizer runs with the decode kernel forced
set -u
source "$(dirname "$0")/gpu_common.sh"
STEPS=${STEPS:-"roof tests sanitize bench"}
gpu_setup "${1:-}" /tmp/fp8gemm-decode

if has roof; then
  step roof.log 60 "$ART/read_roof"
  cat "$OUT/roof.log"
fi
if has tests; then
  STREAM="FP8GEMM_CUDA_CROSSOVER=1000000 FP8GEMM_CUDA_FUSED_MAX_M=32 ${DECODE_ENV:-}"
  step tests.log 240 env $STREAM "$ART/cuda_test_gemm"
  step tests.log 120 env FP8GEMM_TEST_QUICK=1 "$ART/cuda_test_gemm"
  step tests.log 120 env FP8GEMM_TEST_QUICK=1 FP8GEMM_CUDA_SMALL_KERNEL=registers $STREAM "$ART/cuda_test_gemm"
  for t in ops graph; do
    step tests.log 120 env $STREAM "$ART/cuda_test_$t"
    step tests.log 120 "$ART/cuda_test_$t"
  done
  grep -E "FAILED|rc=[1-9]|Error" "$OUT/tests.log" | head -20
fi
if has sanitize; then
  for tool in memcheck racecheck; do
    step sanitizer.log 200 env FP8GEMM_TEST_QUICK=1 FP8GEMM_CUDA_CROSSOVER=1000000 FP8GEMM_CUDA_FUSED_MAX_M=32 ${DECODE_ENV:-} \
      compute-sanitizer --tool $tool --error-exitcode 99 "$ART/cuda_test_gemm"
  done
  step sanitizer.log 200 env FP8GEMM_TEST_QUICK=1 FP8GEMM_CUDA_CROSSOVER=1000000 FP8GEMM_CUDA_FUSED_MAX_M=32 ${DECODE_ENV:-} \
    compute-sanitizer --tool memcheck --error-exitcode 99 "$ART/cuda_test_ops"
  # Default dispatch: decode row splits, large-M split-K (cooperative), two streams at once.
  for tool in memcheck racecheck; do
    step sanitizer.log 200 env FP8GEMM_TEST_QUICK=1 \
      compute-sanitizer --tool $tool --error-exitcode 99 "$ART/cuda_test_graph"
  done
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer.log"
fi
if has ncu; then
  for shape in ${NCU_SHAPES:-16,7168,16384 64,7168,16384}; do
    step ncu.log 150 ncu --section SpeedOfLight --section MemoryWorkloadAnalysis \
      --section MemoryWorkloadAnalysis_Tables --section WarpStateStats --section SchedulerStats \
      -k regex:gemm_stream -c 1 -s 1 python3 bench/cuda_variants.py --lib "$ART/libfp8gemm.so" \
      --once "$shape" --layouts sm90 --variants "v:FP8GEMM_CUDA_CROSSOVER=1000000"
  done
  grep -E "gemm_stream_kernel<|^ +(Duration|SM Frequency|SM Active Cycles|Elapsed Cycles|DRAM Throughput|L2 Cache Throughput|L2 Hit Rate|Memory Throughput|One or More Eligible|Warp Cycles Per Issued)" \
    "$OUT/ncu.log" | head -80
fi
if has bench; then
  step bench.log 300 python3 bench/cuda_bench.py --lib "$ART/libfp8gemm.so" --shapes "$ART/shapes.csv" \
    --out "$OUT/decode-bench.json" --max-m "${MAX_M:-128}"
  grep -E "^\||copy" "$OUT/bench.log" | tail -n 150
fi
exit $status
