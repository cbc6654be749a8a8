#!/usr/bin/env bash
# The panel decode kernel (weight as wgmma's A, gemm_slice.cu) on the Hopper
# machine, building nothing: (1) the GPU GEMM test, quick sets (step
# test), and compute-sanitizer memcheck and racecheck of it (sanitize); (2) an interleaved A/B
# of the decode kernels forced (the 128-row kernel, row slices, panels)
# and the default dispatch, both layouts, torch in the same process; (3)
# the probe build's trace of slices and panels.
#
#   PROBES=1 bash bench/pack_gpu.sh .gpuart      here, then on the device:
#   bash bench/gpu_panels.sh .gpuart              (writes under $OUT)
#   STEPS="test sanitize ab trace"  AB_SHAPES="M,N,K;..."  TRACE_SHAPES  AB_REPS
set -u
source "$(dirname "$0")/gpu_common.sh"
STEPS=${STEPS:-"test ab trace"}
gpu_setup "${1:-}" /tmp/fp8gemm-panels
DECODE="FP8GEMM_CUDA_CROSSOVER=1000000"
if has test; then
  # A failure (or a hang) stops the pass: the timings would not count.
  if ! step test.log 150 env FP8GEMM_TEST_QUICK=1 "$ART/cuda_test_gemm"; then
    grep -E "FAILED|\[  ERROR|rel err .* >|forced" "$OUT/test.log" | tail -30
    exit 1
  fi
fi
if has sanitize; then
  step test.log 240 env FP8GEMM_TEST_QUICK=1 compute-sanitizer --tool memcheck --error-exitcode 99 \
    "$ART/cuda_test_gemm"
  step test.log 300 env FP8GEMM_TEST_QUICK=1 compute-sanitizer --tool racecheck --error-exitcode 99 \
    "$ART/cuda_test_gemm"
  grep -E "FAILED|PASSED|\[  ERROR|rel err .* >|ERROR SUMMARY|RACECHECK SUMMARY|HAZARD" "$OUT/test.log" | sort | uniq -c
fi
if has ab; then
  step ab.log 330 python3 bench/cuda_variants.py --lib "$ART/libfp8gemm.so" \
    --shapes "${AB_SHAPES:-1,4096,7168;16,4096,7168;32,4096,7168;64,4096,7168;1,7168,2048;64,7168,2048;64,2112,7168;64,7168,16384}" \
    --variants "default:;stream:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=0;slices:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=1,FP8GEMM_CUDA_SLICE_PANEL=0;panels:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=1,FP8GEMM_CUDA_SLICE_PANEL=1" \
    --layouts plain,sm90 --reps "${AB_REPS:-7}" --out "$OUT/panels-ab.json"
  grep -E "^\|" "$OUT/ab.log"
fi
if has trace; then
  [ -f "$ART/probe/libfp8gemm.so" ] || { echo "no $ART/probe: PROBES=1 bash bench/pack_gpu.sh"; exit 1; }
  step trace.log 200 python3 bench/cuda_variants.py --lib "$ART/probe/libfp8gemm.so" \
    --once "${TRACE_SHAPES:-1,4096,7168;64,4096,7168}" --layouts plain,sm90 \
    --variants "slices:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=1,FP8GEMM_CUDA_SLICE_PANEL=0,FP8GEMM_CUDA_SLICE_TRACE=1;panels:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=1,FP8GEMM_CUDA_SLICE_PANEL=1,FP8GEMM_CUDA_SLICE_TRACE=1"
  grep -E "trace" "$OUT/trace.log" | cut -c1-600
fi
exit $status
