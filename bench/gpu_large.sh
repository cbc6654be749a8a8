#!/usr/bin/env bash
# Large-M kernel configurations on the Hopper machine, building nothing: a
# short check of each configuration (`fp8gemm verify`, a hang or error drops
# it), the GPU tests (quick set; FULL=1 for the full sweeps), then
# bench/cuda_variants.py over the large-M shapes with each configuration
# forced (FP8GEMM_CUDA_LARGE_CONFIG) and torch's blockwise scaled_mm in the
# same process; BASE_LIB=path adds the same shapes on another build of the
# library (a separate process) for before/after.
#
#   bash bench/pack_gpu.sh .gpuart      (here)
#   bash bench/gpu_large.sh .gpuart     (device; writes under $OUT)
#   CONFIGS="name=256/2x1 ..."  SHAPES="M,N,K;..."  LAYOUTS=plain,sm90  TESTS=0 (no tests)
# A CONFIGS value holding '=' is a comma-separated list of FP8GEMM_CUDA_*
# settings instead (e.g. "s0=FP8GEMM_CUDA_LARGE_STAGGER=0,FP8GEMM_CUDA_LARGE_CONFIG=256").
set -u
source "$(dirname "$0")/gpu_common.sh"
gpu_setup "${1:-}" /tmp/fp8gemm-large
CONFIGS=${CONFIGS:-"c128=128 c192=192 c192m=192/2x1 c256=256 c256m=256/2x1 c128p=128p c192p=192p c256p=256p c224=224 c224p=224p default="}
SHAPES=${SHAPES:-"4096,7168,2048;4096,24576,1536;4096,4096,7168;4096,7168,16384;4096,2112,7168;8192,8192,8192;1024,7168,2048;4096,32768,512"}
LAYOUTS=${LAYOUTS:-plain,sm90}
# A short check of each configuration first (a hang or a wrong result
# drops it from the rest of the run instead of stalling the whole lease).
config_env() { # VALUE -> the settings it stands for, comma-separated
  case "$1" in *=*) echo "$1" ;; ?*) echo "FP8GEMM_CUDA_LARGE_CONFIG=$1" ;; esac
}
good="" all_good=1
: >"$OUT/smoke.log"
for c in $CONFIGS; do
  name=${c%%=*} value=${c#*=}
  [ -n "$value" ] || { good="$good $c"; continue; }
  # shellcheck disable=SC2046 # one word per setting
  env FP8GEMM_CUDA_CROSSOVER=0 $(config_env "$value" | tr , ' ') timeout 40 "$ART/fp8gemm" verify \
    --backend cuda --shapes "520,2112,400;300,1000,1024;129,8192,512" >/tmp/smoke.one 2>&1
  rc=$?
  cat /tmp/smoke.one >>"$OUT/smoke.log"
  echo "== smoke $name ($value) rc=$rc"
  if [ $rc -eq 0 ]; then good="$good $c"; else all_good=0 status=1; tail -5 /tmp/smoke.one; fi
done
CONFIGS=$good
: >"$OUT/tests.log"
for t in "$ART"/cuda_test_*; do
  [ "${TESTS:-1}" = 1 ] || break
  case "$t" in *gemm*) [ $all_good = 1 ] || { echo "== $(basename "$t") skipped (a configuration failed)"; continue; } ;; esac
  if [ "${FULL:-0}" = 1 ]; then
    step tests.log "${TEST_TIMEOUT:-400}" "$t"
  else
    step tests.log "${TEST_TIMEOUT:-200}" env FP8GEMM_TEST_QUICK=1 "$t"
  fi
done
grep -E "FAILED|\[  ERROR|rel err .* >" "$OUT/tests.log" | head -20

variants=""
for c in $CONFIGS; do
  name=${c%%=*} value=${c#*=}
  if [ -n "$value" ]; then
    variants="$variants$name:$(config_env "$value");"
  else
    variants="$variants$name:;"
  fi
done
timeout "${BENCH_TIMEOUT:-400}" python3 bench/cuda_variants.py --lib "$ART/libfp8gemm.so" \
  --shapes "$SHAPES" --variants "$variants" --layouts "$LAYOUTS" --out "$OUT/variants.json" \
  >"$OUT/variants.log" 2>&1 || status=1
grep -E "^\||Error|error" "$OUT/variants.log" | tail -30
if [ -n "${BASE_LIB:-}" ]; then
  timeout 300 python3 bench/cuda_variants.py --lib "$BASE_LIB" --shapes "$SHAPES" \
    --variants "base:" --layouts "$LAYOUTS" --out "$OUT/base.json" >"$OUT/base.log" 2>&1 || status=1
  grep -E "^\||Error|error" "$OUT/base.log" | tail -12
fi
exit $status
