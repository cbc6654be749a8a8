#!/usr/bin/env bash
# Builds libfp8gemm with the CUDA backend and runs the whole Python suite,
# GPU tests included, on a machine with a Hopper GPU, torch, numpy, ml_dtypes
# and pytest (the H100 device machine has all but libjansson).
#
#   bash python/tests/run_gpu_tests.sh [pytest options]
#
# Without a system libjansson (pkg-config jansson), the .deb files in
# .gpu-deps/ are unpacked to /tmp/jroot and used from there. Make them on the
# development machine once, from the repository root:
#   mkdir -p .gpu-deps && (cd .gpu-deps && apt-get download libjansson4 libjansson-dev)
#   echo /.gpu-deps/ >> .git/info/exclude      # then carry ".gpu-deps" with the run
# Logs go to $OUT when it is set (the device tool brings them back).
set -uo pipefail
cd "$(dirname "$0")/../.."
export PYTHONUNBUFFERED=1
logs=${OUT:-build-gpu}
mkdir -p "$logs" build-gpu
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader || true
python3 -c "import torch; print('torch', torch.__version__, 'cuda available:', torch.cuda.is_available())"
if ! pkg-config --exists jansson 2>/dev/null; then
  if ! ls .gpu-deps/libjansson*.deb >/dev/null 2>&1; then
    echo "no libjansson here and no .gpu-deps/libjansson*.deb: see the comment at the top of $0" >&2
    exit 2
  fi
  mkdir -p /tmp/jroot
  for f in .gpu-deps/libjansson*.deb; do dpkg -x "$f" /tmp/jroot; done
  export PKG_CONFIG_SYSROOT_DIR=/tmp/jroot
  export PKG_CONFIG_PATH=/tmp/jroot/usr/lib/x86_64-linux-gnu/pkgconfig
  export LD_LIBRARY_PATH=/tmp/jroot/usr/lib/x86_64-linux-gnu:${LD_LIBRARY_PATH:-}
fi
export PATH=$PATH:/usr/local/cuda/bin
# -Wno-error=maybe-uninitialized: the device's newer gcc flags tools/cli_util.c.
if ! { cmake -S . -B build-gpu -DFP8GEMM_CUDA=ON -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release \
         -DCMAKE_C_FLAGS="-Wno-error=maybe-uninitialized" &&
       cmake --build build-gpu -j"$(nproc)" --target fp8gemm fp8gemm_cli; } > "$logs/build.log" 2>&1; then
  tail -40 "$logs/build.log"
  exit 1
fi
export FP8GEMM_LIBRARY=$PWD/build-gpu/libfp8gemm.so FP8GEMM_CLI=$PWD/build-gpu/fp8gemm
export PYTHONPATH=$PWD/python${PYTHONPATH:+:$PYTHONPATH}
python3 -m pytest -v -rs -p no:cacheprovider "$@" python/tests 2>&1 | tee "$logs/pytest.log" | tail -60
exit "${PIPESTATUS[0]}"
