#!/usr/bin/env bash
# The release pass on the Hopper machine, building nothing: GPU tests (quick
# set; the full sweeps run in bench/gpu_run.sh), the main job `fp8gemm run`
# on the GPU, the Python suite with its GPU tests, the benchmark against
# torch's blockwise scaled_mm, and `fp8gemm tune --backend cuda`. Artifacts:
# a flat folder with libfp8gemm.so, the fp8gemm tool, cuda_test_* and the
# shared libraries the device lacks (libjansson, libcmocka).
#
#   bash bench/gpu_final.sh ARTIFACTS        (writes under $OUT)
set -u
ART=$(cd "${1:?artifacts folder}" && pwd)
OUT=${OUT:-/tmp/fp8gemm-final}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$ART:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
cd "$(dirname "$0")/.."
status=0
step() { # name timeout command...
  local name=$1 limit=$2
  shift 2
  local start=$(date +%s)
  timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "== $name rc=$rc ($(( $(date +%s) - start )) s)"
  [ $rc -eq 0 ] || status=1
}
{
  date -u
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv
  python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} >"$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

step tests 150 bash -c "for t in $ART/cuda_test_*; do echo == \$t; FP8GEMM_TEST_QUICK=1 \$t || exit 1; done"
tail -3 "$OUT/tests.log"
step run 120 "$ART/fp8gemm" run
tail -n 30 "$OUT/run.log"
step pytest 200 env FP8GEMM_LIBRARY="$ART/libfp8gemm.so" FP8GEMM_CLI="$ART/fp8gemm" PYTHONPATH="$PWD/python" \
  python3 -m pytest -q -rs -p no:cacheprovider python/tests
tail -n 5 "$OUT/pytest.log"
step bench 300 python3 bench/cuda_bench.py --lib "$ART/libfp8gemm.so" --shapes "$ART/shapes.csv" \
  --out "$OUT/cuda-bench.json" --png "$OUT/cuda-bench.png"
grep -E "^\|" "$OUT/bench.log" | head -90
grep -E "^deepseek" "$ART/shapes.csv" > /tmp/deepseek.csv
step tune 120 "$ART/fp8gemm" tune --backend cuda --device '*' --shapes /tmp/deepseek.csv \
  -o "$OUT/cuda.csv" --budget 0.03
tail -n 10 "$OUT/tune.log"
exit $status
