#!/usr/bin/env bash
# On the Hopper machine: the large-M GEMM as ptxas scheduled it against the
# same build with the promotion's FFMA hints edited (bench/pack_sass_hints.sh),
# and torch's blockwise scaled_mm, in one process, interleaved
# (bench/cuda_variants.py --alt-lib): variants base/*, base@all/*,
# base@half/*. Their *_vs_first must be 0: the edit changes no result bit.
#
#   bash bench/gpu_sass_hints.sh ARTIFACTS      (writes under $OUT)
#   SHAPES="M,N,K;..." to choose the shapes.
set -u
source "$(dirname "$0")/gpu_common.sh"
gpu_setup "${1:-}" /tmp/fp8gemm-sass-hints
for v in base all half; do gunzip -c "$ART/hints/$v.so.gz" >"/tmp/fp8gemm-$v.so"; done
SHAPES=${SHAPES:-"8192,8192,8192;4096,4096,7168;4096,7168,16384;4096,7168,2048;4096,2112,7168;1024,7168,16384"}
step hints.log 300 python3 bench/cuda_variants.py --lib /tmp/fp8gemm-base.so \
  --alt-lib all=/tmp/fp8gemm-all.so,half=/tmp/fp8gemm-half.so --shapes "$SHAPES" \
  --layouts plain,sm90 --reps 11 --out "$OUT/sass-hints.json"
grep -E "^\|" "$OUT/hints.log"
exit $status
