#!/usr/bin/env bash
# Where the row-slice decode kernel's time goes (src/cuda/gemm_slice.cu), on
# the Hopper machine, building nothing: (1) timestamps from the probe build
# (PROBES=1 bash bench/pack_gpu.sh: ARTIFACTS/probe/libfp8gemm.so), three
# eager calls a shape and layout, beside the 128-row kernel's own trace
# (FP8GEMM_CUDA_STREAM_TRACE=1) on the same shapes; (2) an interleaved A/B
# of ring depths and copy policies of the release build (graphs, torch in
# the same process).
#
#   bash bench/gpu_slice_trace.sh ARTIFACTS
#   STEPS="trace ab"  TRACE_SHAPES="M,N,K;..."  AB_SHAPES  AB_VARIANTS
set -u
source "$(dirname "$0")/gpu_common.sh"
STEPS=${STEPS:-"trace ab"}
gpu_setup "${1:-}" /tmp/fp8gemm-slice-trace
DECODE="FP8GEMM_CUDA_CROSSOVER=1000000"
TRACE_SHAPES=${TRACE_SHAPES:-"1,4096,7168;64,4096,7168;1,7168,16384;64,2112,7168"}

if has trace; then
  [ -f "$ART/probe/libfp8gemm.so" ] || { echo "no $ART/probe: PROBES=1 bash bench/pack_gpu.sh"; exit 1; }
  step trace.log 200 python3 bench/cuda_variants.py --lib "$ART/probe/libfp8gemm.so" \
    --once "$TRACE_SHAPES" --layouts plain,sm90 \
    --variants "slices:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=1,FP8GEMM_CUDA_SLICE_TRACE=1"
  step trace.log 200 python3 bench/cuda_variants.py --lib "$ART/libfp8gemm.so" \
    --once "$TRACE_SHAPES" --layouts plain,sm90 \
    --variants "stream:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=0,FP8GEMM_CUDA_STREAM_TRACE=1"
  grep -E "trace" "$OUT/trace.log" | cut -c1-400
fi
if has ab; then
  step ab.log 400 python3 bench/cuda_variants.py --lib "$ART/libfp8gemm.so" \
    --shapes "${AB_SHAPES:-1,4096,7168;16,4096,7168;64,4096,7168;1,2112,7168;64,2112,7168;1,7168,2304;64,7168,2304;1,7168,16384;64,7168,16384}" \
    --variants "${AB_VARIANTS:-stream:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=0;s:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=1;st16:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=1,FP8GEMM_CUDA_SLICE_STAGES=16;st8:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=1,FP8GEMM_CUDA_SLICE_STAGES=8;keep:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=1,FP8GEMM_CUDA_STREAM_EVICT=0;nopdl:$DECODE,FP8GEMM_CUDA_DECODE_SLICES=1,FP8GEMM_CUDA_PDL=0}" \
    --layouts plain,sm90 --reps "${AB_REPS:-9}" --out "$OUT/slice-ab.json"
  grep -E "^\|" "$OUT/ab.log"
fi
exit $status
