#!/usr/bin/env bash
# fp8gemm_linear on the Hopper machine, building nothing: the GPU tests
# (graph: the one-launch linear against two launches, byte for byte; gemm;
# ops), then the linear from bf16 x timed as one launch (forced up to M = 32),
# two launches and the default, against the GEMM alone on pre-quantized x,
# in one process (bench/cuda_variants.py).
#
#   bash bench/gpu_linear.sh ARTIFACTS      (writes under $OUT)
#   STEPS="tests bench"  SHAPES="M,N,K;..."
set -u
source "$(dirname "$0")/gpu_common.sh"
STEPS=${STEPS:-"tests bench"}
gpu_setup "${1:-}" /tmp/fp8gemm-linear
SHAPES=${SHAPES:-"1,4096,7168;4,4096,7168;8,4096,7168;16,4096,7168;32,4096,7168;64,4096,7168;1,24576,1536;8,24576,1536;16,24576,1536;32,24576,1536;4,32768,512;16,32768,512;32,32768,512;1,2112,7168;8,2112,7168;16,2112,7168;32,2112,7168;64,2112,7168;1,7168,2048;8,7168,2048;16,7168,2048;32,7168,2048;64,7168,2048;1,7168,16384;8,7168,16384;16,7168,16384;64,7168,16384"}
if has tests; then
  for t in graph gemm ops; do step tests.log 300 "$ART/cuda_test_$t"; done
  grep -E "FAILED|\[  ERROR|rel err .* >" "$OUT/tests.log" | head -20
fi
if has bench; then
  V="python3 bench/cuda_variants.py --lib $ART/libfp8gemm.so --layouts sm90 --no-peer"
  step bench.log 200 $V --linear --shapes "$SHAPES" --out "$OUT/linear.json" --variants \
    "one:FP8GEMM_CUDA_FUSED_MAX_M=32;two:FP8GEMM_CUDA_FUSED_MAX_M=0;auto:"
  step bench.log 100 $V --shapes "$SHAPES" --out "$OUT/gemm.json" --variants "gemm:"
  grep "^|" "$OUT/bench.log"
fi
exit $status
