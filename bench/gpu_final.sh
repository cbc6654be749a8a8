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
#   STEPS="sass tests sanitize run pytest"  or  STEPS="bench tune"
set -u
ART=$(cd "${1:?artifacts folder}" && pwd)
OUT=${OUT:-/tmp/fp8gemm-final}
STEPS=${STEPS:-"sass tests sanitize run pytest bench tune"}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$ART:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
status=0
has() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
step() { # name timeout command...
  local name=$1 limit=$2
  shift 2
  local start=$(date +%s)
  timeout "$limit" "$@" >>"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc ($(( $(date +%s) - start )) s)" | tee -a "$OUT/$name.log"
  [ $rc -eq 0 ] || status=1
}
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm,power.limit --format=csv
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

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
  for t in "$ART"/cuda_test_*; do step tests 300 "$t"; done
  grep -E "FAILED|\[  ERROR|rel err .* >" "$OUT/tests.log" | head -20
fi
if has sanitize; then
  for t in "$ART"/cuda_test_*; do
    step sanitize 200 env FP8GEMM_TEST_QUICK=1 compute-sanitizer --tool memcheck --error-exitcode 99 "$t"
  done
  step sanitize 300 env FP8GEMM_TEST_QUICK=1 compute-sanitizer --tool racecheck --error-exitcode 99 \
    "$ART/cuda_test_gemm"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|HAZARD" "$OUT/sanitize.log" | sort | uniq -c
fi
if has run; then
  step run 120 "$ART/fp8gemm" run
  tail -n 30 "$OUT/run.log"
fi
if has pytest; then
  step pytest 240 env FP8GEMM_LIBRARY="$ART/libfp8gemm.so" FP8GEMM_CLI="$ART/fp8gemm" \
    PYTHONPATH="$PWD/python" python3 -m pytest -q -rs -p no:cacheprovider python/tests
  tail -n 5 "$OUT/pytest.log"
fi
if has bench; then
  step bench 330 python3 bench/cuda_bench.py --lib "$ART/libfp8gemm.so" --shapes "$ART/shapes.csv" \
    --out "$OUT/cuda-bench.json" --png "$OUT/cuda-bench.png"
  grep -E "^\|" "$OUT/bench.log" | head -90
fi
if has tune; then
  grep -E "^deepseek" "$ART/shapes.csv" >/tmp/deepseek.csv
  step tune 150 "$ART/fp8gemm" tune --backend cuda --device '*' --shapes /tmp/deepseek.csv \
    -o "$OUT/cuda.csv" --budget 0.03
  tail -n 10 "$OUT/tune.log"
fi
exit $status
