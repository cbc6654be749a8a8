#!/usr/bin/env bash
# The release pass on the Hopper machine, building nothing: which kernels
# hold tensor-core instructions (QGMMA) and local-memory traffic, the GPU
# tests (full sweeps), compute-sanitizer (memcheck on every GPU test, racecheck on
# the GEMM test, quick sets), the main job `fp8gemm run` on the GPU, the
# Python suite with its GPU tests, the benchmark against torch's blockwise
# scaled_mm over shapes.csv, and `fp8gemm tune --backend cuda`. Artifacts: a
# flat folder made here by bench/pack_gpu.sh. STEPS picks steps (to split
# the pass over two device calls, each under the 10-minute limit).
#
#   bash bench/gpu_final.sh ARTIFACTS     (writes under $OUT)
#   STEPS="sass tests sanitize run pytest"  or  STEPS="tune bench"
#   BENCH_SHAPES=bench/shapes_decode.csv MAX_M=128   the benchmark's rows (default
#                                         ARTIFACTS/shapes.csv, every M); after a tune
#                                         step it runs on the table the tune wrote
set -u
source "$(dirname "$0")/gpu_common.sh"
STEPS=${STEPS:-"sass tests sanitize run pytest bench tune"}
gpu_setup "${1:-}" /tmp/fp8gemm-final

if has sass && command -v cuobjdump >/dev/null; then
  {
    echo "# QGMMA (wgmma) instructions per kernel"
    cuobjdump -sass "$ART/libfp8gemm.so" | awk '/Function :/ {name=$3} /QGMMA/ {n[name]++} END {for (k in n) print n[k], k}' | sort -k2
    echo "# local-memory accesses (LDL/STL) per kernel"
    cuobjdump -sass "$ART/libfp8gemm.so" | awk '/Function :/ {name=$3} /LDL|STL/ {n[name]++} END {for (k in n) print n[k], k}' | sort -k2
  } >"$OUT/sass.txt" 2>&1
  grep -c . "$OUT/sass.txt"
fi
if has tests; then
  for t in "$ART"/cuda_test_*; do step tests.log 300 "$t"; done
  grep -E "FAILED|\[  ERROR|rel err .* >" "$OUT/tests.log" | head -20
fi
if has sanitize; then
  for t in "$ART"/cuda_test_*; do
    step sanitize.log 200 env FP8GEMM_TEST_QUICK=1 compute-sanitizer --tool memcheck --error-exitcode 99 "$t"
  done
  step sanitize.log 300 env FP8GEMM_TEST_QUICK=1 compute-sanitizer --tool racecheck --error-exitcode 99 \
    "$ART/cuda_test_gemm"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|HAZARD" "$OUT/sanitize.log" | sort | uniq -c
fi
if has run; then
  step run.log 120 "$ART/fp8gemm" run
  tail -n 30 "$OUT/run.log"
fi
if has pytest; then
  step pytest.log 240 env FP8GEMM_LIBRARY="$ART/libfp8gemm.so" FP8GEMM_CLI="$ART/fp8gemm" \
    PYTHONPATH="$PWD/python" python3 -m pytest -q -rs -p no:cacheprovider python/tests
  tail -n 5 "$OUT/pytest.log"
fi
if has tune; then
  grep -E "^deepseek" "$ART/shapes.csv" >/tmp/deepseek.csv
  step tune.log 150 "$ART/fp8gemm" tune --backend cuda --device '*' --shapes /tmp/deepseek.csv \
    -o "$OUT/cuda.csv" --budget 0.02
  tail -n 10 "$OUT/tune.log"
fi
if has bench; then
  # With the tune step in the same pass, the benchmark runs on the table it wrote.
  TUNED=(); [ -s "$OUT/cuda.csv" ] && TUNED=(env FP8GEMM_TUNED="$OUT/cuda.csv")
  step bench.log 330 "${TUNED[@]}" python3 bench/cuda_bench.py --lib "$ART/libfp8gemm.so" \
    --shapes "${BENCH_SHAPES:-$ART/shapes.csv}" --max-m "${MAX_M:-0}" \
    --out "$OUT/cuda-bench.json" --png "$OUT/cuda-bench.png"
  grep -E "^\|" "$OUT/bench.log" | head -90
fi
exit $status
