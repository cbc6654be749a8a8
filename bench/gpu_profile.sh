#!/usr/bin/env bash
# Profiling pass on the Hopper machine (builds nothing): Nsight Compute on
# the large-M kernel (4096x7168x2048) and the small-M kernel (M=1,
# 2112x7168), then bench/cuda_variants.py over VARIANTS and SHAPES.
#   bench/gpu_profile.sh ART      ART: flat dir with libfp8gemm.so* and the .so files it needs
#   STEPS="ncu variants"  NCU_SET=full  NCU_WHICH="large small"
set -u
ART=${1:-.gpuart}
OUT=${OUT:-/tmp/fp8gemm-prof}
mkdir -p "$OUT"
export LD_LIBRARY_PATH="$ART:${LD_LIBRARY_PATH:-}"
export PYTHONUNBUFFERED=1
LIB=$(ls "$ART"/libfp8gemm.so* | head -1)
STEPS=${STEPS:-"ncu variants"}
has() { case " $STEPS " in *" $1 "*) return 0 ;; esac; return 1; }
HERE=$(dirname "$0")
{ date -u; nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.max.sm --format=csv; } >"$OUT/env.txt" 2>&1
if has ncu; then
  for spec in "large 4096,7168,2048 FP8GEMM_CUDA_CROSSOVER=0 gemm_large" "small 1,2112,7168 FP8GEMM_CUDA_CROSSOVER=1000 gemm_small"; do
    set -- $spec
    case " ${NCU_WHICH:-large small} " in *" $1 "*) ;; *) continue ;; esac
    timeout 200 ncu --set ${NCU_SET:-full} --import-source yes -k regex:"$4" -c 1 -s 1 -f -o /tmp/prof_$1 \
      python3 "$HERE/cuda_variants.py" --lib "$LIB" --once "$2" --variants "v:$3" >"$OUT/ncu_$1.log" 2>&1
    ncu -i /tmp/prof_$1.ncu-rep --page details >"$OUT/ncu_$1.txt" 2>&1
    ncu -i /tmp/prof_$1.ncu-rep --page source --csv --print-source sass >/tmp/src_$1.csv 2>&1
    gzip -c /tmp/src_$1.csv >"$OUT/src_$1.csv.gz"
    grep -E "Duration|Compute \(SM\) Throughput|Memory Throughput|L2 Cache Throughput|DRAM Throughput|Tensor|Issue Slots|Eligible|Active Warps|Stall|Registers|Shared Memory Config|Waves" "$OUT/ncu_$1.txt" | head -40
  done
fi
if has variants; then
  timeout 400 python3 "$HERE/cuda_variants.py" --lib "$LIB" --shapes "${SHAPES:-4096,7168,2048}" \
    --variants "${VARIANTS:-base:}" --layouts "${LAYOUTS:-plain}" --out "$OUT/variants.json" 2>&1 | tee "$OUT/variants.log" | grep -v '^{'
fi
