#!/usr/bin/env bash
# Large-M kernel variants (FP8GEMM_CUDA_* values read at context creation):
# GPU tests (quick set, large kernel forced, default and 256-wide tiles) per
# FP8GEMM_CUDA_LARGE_VARIANT value in TEST_VARIANTS, then the variant bench
# (VARIANTS, SHAPES) with torch in the same process.
#   bench/gpu_sched.sh ART   (flat dir: libfp8gemm.so, cuda_test_gemm, libjansson, libcmocka)
set -u
ART=${1:-.gpuart/large}
OUT=${OUT:-/tmp/fp8gemm-sched}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$ART:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv;
  python3 -c 'import torch; print("torch", torch.__version__)'; } >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"
if command -v cuobjdump >/dev/null; then
  cuobjdump -res-usage "$ART/libfp8gemm.so" 2>&1 | grep -A1 gemm_large | grep -o "REG:[0-9]* STACK:[0-9]*"
  cuobjdump -sass "$ART/libfp8gemm.so" | awk '/Function :/ {name=$3} /LDL|STL/ {n[name]++} END {for (k in n) print n[k], k}' | grep -i large
fi
: >"$OUT/tests.log"
for v in ${TEST_VARIANTS:-0}; do
  for bn in 0 256; do
    s=$(date +%s)
    FP8GEMM_TEST_QUICK=1 FP8GEMM_CUDA_CROSSOVER=0 FP8GEMM_CUDA_LARGE_BN=$bn FP8GEMM_CUDA_LARGE_VARIANT=$v \
      timeout 30 "$ART/cuda_test_gemm" >>"$OUT/tests.log" 2>&1
    echo "test variant=$v bn=$bn rc=$? ($(( $(date +%s) - s )) s)"
  done
done
grep -E "FAILED|PASSED" "$OUT/tests.log" | sort | uniq -c
timeout ${BENCH_TIMEOUT:-240} python3 bench/cuda_variants.py --lib "$ART/libfp8gemm.so" \
  --shapes "${SHAPES:-4096,7168,2048;4096,24576,1536;4096,4096,7168;8192,8192,8192;4096,2112,7168}" \
  --variants "${VARIANTS:-base:;base2:}" \
  --out "$OUT/variants.json" 2>&1 | tee "$OUT/variants.log" | grep -v '^{'
