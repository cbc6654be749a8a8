#!/usr/bin/env bash
# Row-slice decode kernel (src/cuda/gemm_slice.cu) on the Hopper machine,
# building nothing: the GPU tests (default dispatch, then the decode path for
# every M), compute-sanitizer memcheck and racecheck over the quick set, and
# an interleaved A/B of the decode path with the slice kernel never taken
# (stream: the 128-row-tile kernel and its hand-offs) and always taken where
# it runs (slices), both layouts, against torch, plus the copy roof.
#
#   bash bench/gpu_slices.sh ARTIFACTS          (bench/pack_gpu.sh's folder)
#   STEPS="tests sanitize ab"                   which steps (default all)
#   AB_SHAPES="N,K N,K ..."  AB_MS="1 2 4 ..."   the A/B's weights and M values
#   AB_VARIANTS="name:ENV=V,...;..."             the A/B's variants
#   AB_EXTRA="--alt-lib old=DIR/libfp8gemm.so"   more cuda_variants.py arguments
set -u
source "$(dirname "$0")/gpu_common.sh"
STEPS=${STEPS:-"tests sanitize ab"}
gpu_setup "${1:-}" /tmp/fp8gemm-slices
DECODE="FP8GEMM_CUDA_CROSSOVER=1000000"

if has tests; then
  step tests.log 240 "$ART/cuda_test_gemm"
  step tests.log 240 env $DECODE "$ART/cuda_test_gemm"
  for t in ops graph; do step tests.log 120 "$ART/cuda_test_$t"; done
  grep -E "FAILED|rc=[1-9]|Error|row slices" "$OUT/tests.log" | head -30
  [ $status -eq 0 ] || exit $status # a failing (or hung) kernel: nothing to time
fi
if has sanitize; then
  for tool in memcheck racecheck; do
    step sanitizer.log 200 env FP8GEMM_TEST_QUICK=1 $DECODE \
      compute-sanitizer --tool $tool --error-exitcode 99 "$ART/cuda_test_gemm"
  done
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY" "$OUT/sanitizer.log"
fi
if has ab; then
  step roof.log 60 "$ART/read_roof"
  cat "$OUT/roof.log"
  shapes=""
  for nk in ${AB_SHAPES:-4096,7168 4608,7168 7168,2304 7168,2048 2112,7168 16384,1536 24576,1536 32768,512 7168,16384}; do
    for m in ${AB_MS:-1 2 4 8 16 32 64}; do shapes="$shapes;$m,$nk"; done
  done
  step ab.log 400 python3 bench/cuda_variants.py --lib "$ART/libfp8gemm.so" --shapes "${shapes#;}" \
    --variants "${AB_VARIANTS:-stream:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=0;slices:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=1}" \
    --layouts plain,sm90 --reps "${AB_REPS:-11}" --out "$OUT/slices-ab.json" ${AB_EXTRA:-}
  grep -E "^\|" "$OUT/ab.log"
fi
exit $status
