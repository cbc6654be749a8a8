#!/usr/bin/env bash
# Builds here the A/B of the large-M GEMM's scheduling hints
# (cmake/sass_hints.c) for bench/gpu_sass_hints.sh: one build with its device
# code uncompressed, copied three times into DEST/hints as gzip files:
#   base.so  as ptxas wrote it;
#   all.so   every FFMA of the promotion's runs may yield (what
#            -DFP8GEMM_CUDA_SASS_HINTS=ON ships);
#   half.so  the first half of each run only.
# The three differ only in those hint bits (fp8gemm_sass_hints prints how many).
#
#   bash bench/pack_sass_hints.sh [DEST] [BUILD_DIR]     (DEST default .gpuart)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.gpuart}
build=${2:-build-sass}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DFP8GEMM_OPENBLAS=OFF -DFP8GEMM_CUDA=ON \
  -DFP8GEMM_CUDA_FATBIN_COMPRESS=OFF -DFP8GEMM_CUDA_SASS_HINTS=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" --target fp8gemm fp8gemm_sass_hints >/dev/null
mkdir -p "$dest/hints"
tmp=$(mktemp -d)
cp -L "$build/libfp8gemm.so" "$tmp/base.so"
cp "$tmp/base.so" "$tmp/all.so"
cp "$tmp/base.so" "$tmp/half.so"
"$build/fp8gemm_sass_hints" "$tmp/all.so"
"$build/fp8gemm_sass_hints" --share 0.5 "$tmp/half.so"
for v in base all half; do gzip -c "$tmp/$v.so" >"$dest/hints/$v.so.gz"; done
rm -rf "$tmp"
du -sh "$dest/hints"
