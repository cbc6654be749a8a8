#!/usr/bin/env bash
# One pass on the Hopper machine, building nothing: SASS check, the GPU
# tests, compute-sanitizer (memcheck + racecheck) on the quick set, and the
# benchmark against torch's blockwise scaled_mm. Everything lands in $OUT
# (at most 8 files: env.txt sass.txt tests.log sanitizer.log bench.log
# cuda-bench.json cuda-bench.png).
#
#   bench/gpu_run.sh [ARTIFACTS]        ARTIFACTS: a build dir (default build)
#                                       or a flat dir with libfp8gemm.so,
#                                       cuda_test_* and extra .so files
#   STEPS="sass tests sanitize bench"   which steps (default all)
#   BENCH_ARGS="--quick"                passed to bench/cuda_bench.py
#   SHAPES=path/to/shapes.csv           default: ../shared/shapes.csv, then
#                                       ARTIFACTS/shapes.csv
set -u
ART=${1:-build}
OUT=${OUT:-/tmp/fp8gemm-gpu}
mkdir -p "$OUT"
STEPS=${STEPS:-"sass tests sanitize bench"}
TESTS_DIR=$ART/tests
[ -d "$TESTS_DIR" ] || TESTS_DIR=$ART
LIB=$ART/libfp8gemm.so
[ -e "$LIB" ] || LIB=$(ls "$ART"/libfp8gemm.so* 2>/dev/null | head -1)
SHAPES=${SHAPES:-../shared/shapes.csv}
[ -f "$SHAPES" ] || SHAPES=$ART/shapes.csv
# The GPU machine lacks libjansson/libcmocka: the artifacts carry them.
export LD_LIBRARY_PATH="$ART:${LD_LIBRARY_PATH:-}"
export PYTHONUNBUFFERED=1
status=0
has() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }

{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv
  nvcc --version | tail -2
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} >"$OUT/env.txt" 2>&1

if has sass; then
  {
    echo "# SASS of $LIB: wgmma (QGMMA) and mma.sync fp8 (QMMA / HMMA) per kernel"
    cuobjdump -sass "$LIB" | awk '/Function :/ {name=$3} /QGMMA|QMMA|HMMA/ {n[name]++} END {for (k in n) print n[k], k}' | sort -k2
    echo "QGMMA total: $(cuobjdump -sass "$LIB" | grep -c QGMMA)"
    echo "local memory (LDL/STL) in the large-M kernel:"
    cuobjdump -sass "$LIB" | awk '/Function :/ {name=$3} /LDL|STL/ {n[name]++} END {for (k in n) print n[k], k}'
  } >"$OUT/sass.txt" 2>&1
  head -20 "$OUT/sass.txt"
fi

if has tests; then
  : >"$OUT/tests.log"
  for t in "$TESTS_DIR"/cuda_test_*; do
    [ -x "$t" ] || continue
    echo "=== $(basename "$t")" | tee -a "$OUT/tests.log"
    start=$(date +%s)
    timeout "${TEST_TIMEOUT:-300}" "$t" >>"$OUT/tests.log" 2>&1
    rc=$?
    echo "=== $(basename "$t") rc=$rc ($(( $(date +%s) - start )) s)" | tee -a "$OUT/tests.log"
    [ $rc -eq 0 ] || status=1
  done
  grep -E "^# |FAILED|PASSED|Error|error" "$OUT/tests.log" | tail -40
fi

if has sanitize; then
  : >"$OUT/sanitizer.log"
  for tool in memcheck racecheck; do
    for t in "$TESTS_DIR"/cuda_test_*; do
      [ -x "$t" ] || continue
      # racecheck on the GEMM test only (shared-memory traffic of both kernels).
      [ $tool = racecheck ] && case "$t" in *gemm*) ;; *) continue ;; esac
      echo "=== $tool $(basename "$t")" | tee -a "$OUT/sanitizer.log"
      start=$(date +%s)
      FP8GEMM_TEST_QUICK=1 timeout 400 compute-sanitizer --tool $tool --error-exitcode 99 \
        "$t" >>"$OUT/sanitizer.log" 2>&1
      rc=$?
      echo "=== $tool $(basename "$t") rc=$rc ($(( $(date +%s) - start )) s)" | tee -a "$OUT/sanitizer.log"
      [ $rc -eq 0 ] || status=1
    done
  done
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|rc=" "$OUT/sanitizer.log"
fi

if has bench; then
  timeout "${BENCH_TIMEOUT:-480}" python3 "$(dirname "$0")/cuda_bench.py" --lib "$LIB" --shapes "$SHAPES" \
    --out "$OUT/cuda-bench.json" --png "$OUT/cuda-bench.png" ${BENCH_ARGS:-} >"$OUT/bench.log" 2>&1
  rc=$?
  echo "bench rc=$rc"
  [ $rc -eq 0 ] || status=1
  tail -n 120 "$OUT/bench.log" | grep -E "^\||Error|error" | tail -110
fi
exit $status
