#!/usr/bin/env bash
# The row-slice kernel checked and timed in under two minutes of device time
# (for a session short of it): the decode-path GPU tests, an interleaved A/B
# against an older build (.gpuart/old/libfp8gemm.so: BASELINE=REV bash
# bench/pack_gpu.sh .gpuart) and the 128-row kernel on 13 decode rows, then
# racecheck and memcheck over the quick set. Run from the repository root
# with OUT set:  OUT=/tmp/o bash bench/gpu_slices_quick.sh
# VARIANTS and SHAPES (cuda_variants.py's --variants / --shapes) replace the
# A/B's defaults; without .gpuart/old the A/B times this build only.
A=.gpuart; export LD_LIBRARY_PATH=$PWD/$A PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader > $OUT/env.txt
D=FP8GEMM_CUDA_CROSSOVER=1000000
SHAPES=${SHAPES:-"1,4096,7168;16,4096,7168;64,4096,7168;1,4608,7168;64,4608,7168;1,7168,2304;64,7168,2304;1,2112,7168;64,2112,7168;1,24576,1536;64,24576,1536;1,7168,16384;64,7168,16384"}
VARIANTS=${VARIANTS:-"stream:$D,FP8GEMM_CUDA_DECODE_SLICES=0;slices:$D,FP8GEMM_CUDA_DECODE_SLICES=1"}
ALT=(); [ -f $A/old/libfp8gemm.so ] && ALT=(--alt-lib old=$PWD/$A/old/libfp8gemm.so)
timeout 60 env $D $A/cuda_test_gemm > $OUT/tests.log 2>&1; echo "tests rc=$?"; grep -E "PASSED|FAILED" $OUT/tests.log | tail -3
timeout 80 python3 bench/cuda_variants.py --lib $A/libfp8gemm.so "${ALT[@]}" --shapes "$SHAPES" --variants "$VARIANTS" --layouts plain,sm90 --reps 7 --warmup-s 0.5 --out $OUT/ab.json > $OUT/ab.log 2>&1; echo "ab rc=$?"; grep "^|" $OUT/ab.log
timeout 70 env FP8GEMM_TEST_QUICK=1 $D compute-sanitizer --tool racecheck --error-exitcode 99 $A/cuda_test_gemm > $OUT/race.log 2>&1; echo "race rc=$?"; grep SUMMARY $OUT/race.log
timeout 25 env FP8GEMM_TEST_QUICK=1 $D compute-sanitizer --tool memcheck --error-exitcode 99 $A/cuda_test_gemm > $OUT/mem.log 2>&1; echo "mem rc=$?"; grep SUMMARY $OUT/mem.log
