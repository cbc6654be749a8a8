#!/usr/bin/env bash
# Builds the safetensors reader fuzzer (clang, libFuzzer, ASan + UBSan) and
# runs it for SECONDS (default 60) on one worker, starting from the seed
# corpus in tests/fuzz/corpus. New inputs go to a scratch folder, never
# into the repository; a crash input is kept under $FUZZ_ARTIFACTS (default
# build-fuzz/artifacts) and the script exits non-zero.
#
#   tests/fuzz/run.sh 60                 # CI
#   nohup tests/fuzz/run.sh 1800 > fuzz.log 2>&1 &
#
# Environment: CC_FUZZ (clang to use), FP8GEMM_FUZZ_BUILD (build folder),
# FUZZ_ARTIFACTS, JOBS (build parallelism, default 2).
set -euo pipefail
seconds=${1:-60}
root=$(cd "$(dirname "$0")/../.." && pwd)
build=${FP8GEMM_FUZZ_BUILD:-$root/build-fuzz}
cc=${CC_FUZZ:-$(command -v clang-14 || command -v clang || true)}
if [[ -z "$cc" ]]; then
  echo "run.sh: no clang found (apt-get install -y clang-14 libclang-rt-14-dev)" >&2
  exit 1
fi
mkdir -p "$build"
cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="$cc" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DFP8GEMM_FUZZ=ON -DFP8GEMM_SANITIZE=ON -DFP8GEMM_CUDA=OFF > "$build/configure.log" 2>&1 ||
  { cat "$build/configure.log" >&2; exit 1; }
cmake --build "$build" --target fuzz_safetensors -j "${JOBS:-2}"

artifacts=${FUZZ_ARTIFACTS:-$build/artifacts}
scratch=$(mktemp -d "${TMPDIR:-/tmp}/fp8gemm-fuzz-corpus.XXXXXX")
trap 'rm -rf "$scratch"' EXIT
mkdir -p "$artifacts"
# The first folder receives new inputs; the seed corpus is only read.
"$build/tests/fuzz/fuzz_safetensors" \
  -max_total_time="$seconds" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
  -dict="$root/tests/fuzz/safetensors.dict" -print_final_stats=1 \
  -artifact_prefix="$artifacts/" "$scratch" "$root/tests/fuzz/corpus"
