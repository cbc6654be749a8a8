#!/usr/bin/env bash
# Builds here what a run on the Hopper machine needs and lays it out flat in
# DEST (default .gpuart, ignored by git; name it in the device call's
# `carry`): libfp8gemm.so (and its soname), the fp8gemm tool, cuda_test_*,
# read_roof (bench/read_roof.cu), tma_roof (bench/tma_roof.cu), wgmma_rate (bench/wgmma_rate.cu),
# shapes.csv, and the shared libraries that
# machine lacks (libjansson, libcmocka). The build has no OpenBLAS (only the
# CPU benchmark uses it).
#
#   bash bench/pack_gpu.sh [DEST] [BUILD_DIR]      then on the device:
#   PROBES=1 bash bench/pack_gpu.sh ...  also DEST/probe/libfp8gemm.so, a build
#                                        with FP8GEMM_CUDA_PROBES (kernel timestamps)
#   BASELINE=REV bash bench/pack_gpu.sh  also DEST/old/libfp8gemm.so, the library
#                                        at git revision REV (for cuda_variants.py
#                                        --alt-lib old=DEST/old/libfp8gemm.so)
#   bash bench/gpu_final.sh DEST   (or gpu_large.sh / gpu_decode.sh DEST)
set -euo pipefail
cd "$(dirname "$0")/.."
dest=${1:-.gpuart}
build=${2:-build-gpu}
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DFP8GEMM_OPENBLAS=OFF -DFP8GEMM_CUDA=ON >/dev/null
cmake --build "$build" -j "$(nproc)" --target fp8gemm fp8gemm_cli cuda_test_gemm cuda_test_ops \
  cuda_test_graph >/dev/null
rm -rf "$dest"
mkdir -p "$dest"
soname=$(readelf -d "$build/libfp8gemm.so" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
# A build's library into a folder, under its file name and its soname.
copy_lib() {
  mkdir -p "$2"
  cp -L "$1/libfp8gemm.so" "$2/libfp8gemm.so"
  cp -L "$1/libfp8gemm.so" "$2/$soname"
}
copy_lib "$build" "$dest"
cp "$build/fp8gemm" "$build"/tests/cuda_test_* "$dest/"
nvcc -gencode=arch=compute_90a,code=sm_90a -O3 -o "$dest/read_roof" bench/read_roof.cu
nvcc -gencode=arch=compute_90a,code=sm_90a -O3 -Isrc/cuda -o "$dest/tma_roof" bench/tma_roof.cu
nvcc -gencode=arch=compute_90a,code=sm_90a -O3 -Isrc/cuda -o "$dest/wgmma_rate" bench/wgmma_rate.cu
cp ../shared/shapes.csv "$dest/shapes.csv" 2>/dev/null || cp bench/shapes.csv "$dest/shapes.csv"
for lib in libjansson.so.4 libcmocka.so.0; do
  cp -L "$(ldconfig -p | awk -v l="$lib" '$1 == l {print $NF; exit}')" "$dest/$lib"
done
if [ "${PROBES:-0}" = 1 ]; then
  cmake -S . -B "$build-probe" -DCMAKE_BUILD_TYPE=Release -DFP8GEMM_OPENBLAS=OFF -DFP8GEMM_CUDA=ON \
    -DFP8GEMM_CUDA_PROBES=ON -DFP8GEMM_BUILD_TOOLS=OFF >/dev/null
  cmake --build "$build-probe" -j "$(nproc)" --target fp8gemm >/dev/null
  copy_lib "$build-probe" "$dest/probe"
fi
if [ -n "${BASELINE:-}" ]; then
  tree=$(mktemp -d)
  git worktree add -q --detach "$tree" "$BASELINE"
  cmake -S "$tree" -B "$tree/build" -DCMAKE_BUILD_TYPE=Release -DFP8GEMM_OPENBLAS=OFF \
    -DFP8GEMM_CUDA=ON -DFP8GEMM_BUILD_TOOLS=OFF -DBUILD_TESTING=OFF >/dev/null
  cmake --build "$tree/build" -j "$(nproc)" --target fp8gemm >/dev/null
  copy_lib "$tree/build" "$dest/old"
  git worktree remove --force "$tree"
fi
du -sh "$dest"
