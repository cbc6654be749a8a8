#!/usr/bin/env bash
# Checkpoint conversion speed against copying the same file with cp.
#
#   bench/io_speed.sh [CLI] [WORKDIR]
#
# Makes a synthetic bf16 checkpoint of 8 tensors [7168, 2048] (235 MB; numpy
# needed once), then times, each best of RUNS (default 3) with the input in
# the page cache:
#   cp of the bf16 file            vs  fp8gemm quantize  (bf16 -> fp8 + scales)
#   cp of the fp8 file             vs  fp8gemm shuffle --layout preshuffled / aiter16x16 / plain
# and prints each rate in MB/s of input and as a fraction of cp's rate. cp
# does not fsync; the fp8gemm commands do (their output is durable when they
# return), so "cp + sync FILE" is shown too. The goal is >= 50% of cp.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cli=${1:-$root/build/fp8gemm}
work=${2:-${TMPDIR:-/tmp}/fp8gemm-io-bench}
runs=${RUNS:-3}
mkdir -p "$work"
bf16="$work/bf16.safetensors"
fp8="$work/fp8.safetensors"

if [[ ! -s "$bf16" ]]; then
  python3 - "$bf16" <<'EOF'
import json, struct, sys
import numpy as np
path = sys.argv[1]
rng = np.random.default_rng(0)
N, K, count = 7168, 2048, 8
header, offset = {"__metadata__": {"format": "pt"}}, 0
for i in range(count):
    header[f"model.layers.{i}.mlp.down_proj.weight"] = {
        "dtype": "BF16", "shape": [N, K], "data_offsets": [offset, offset + N * K * 2]}
    offset += N * K * 2
text = json.dumps(header).encode()
text += b" " * (-(8 + len(text)) % 8)
with open(path, "wb") as f:
    f.write(struct.pack("<Q", len(text)) + text)
    for i in range(count):
        w = rng.standard_normal((N, K), dtype=np.float32) * 0.02
        f.write((w.view(np.uint32) >> 16).astype(np.uint16).tobytes())
EOF
fi

# Best wall time of `runs` runs of a command, in seconds.
best_of() {
  local best=""
  for _ in $(seq "$runs"); do
    local start end t
    start=$(date +%s.%N)
    "$@" > /dev/null
    end=$(date +%s.%N)
    t=$(echo "$end - $start" | bc -l)
    if [[ -z "$best" ]] || (($(echo "$t < $best" | bc -l))); then best=$t; fi
  done
  echo "$best"
}

cp_sync() { cp "$1" "$2" && sync "$2"; }

report() { # name seconds bytes cp_seconds cp_sync_seconds
  local rate cp_rate
  rate=$(echo "$3 / $2 / 1000000" | bc -l)
  cp_rate=$(echo "$3 / $4 / 1000000" | bc -l)
  printf "%-34s %7.3f s %7.0f MB/s   %5.0f%% of cp   %5.0f%% of cp+sync\n" "$1" "$2" "$rate" \
    "$(echo "100 * $4 / $2" | bc -l)" "$(echo "100 * $5 / $2" | bc -l)"
}

cat "$bf16" > /dev/null
"$cli" quantize -q "$bf16" "$fp8" > /dev/null
cat "$fp8" > /dev/null
bf16_bytes=$(stat -c %s "$bf16")
fp8_bytes=$(stat -c %s "$fp8")
echo "inputs: $bf16 ($((bf16_bytes / 1000000)) MB), $fp8 ($((fp8_bytes / 1000000)) MB); $(nproc) cores; best of $runs"

t_cp_bf16=$(best_of cp "$bf16" "$work/copy.safetensors")
t_cps_bf16=$(best_of cp_sync "$bf16" "$work/copy.safetensors")
t_quant=$(best_of "$cli" quantize -q "$bf16" "$work/q.safetensors")
report "cp bf16" "$t_cp_bf16" "$bf16_bytes" "$t_cp_bf16" "$t_cps_bf16"
report "cp + sync bf16" "$t_cps_bf16" "$bf16_bytes" "$t_cp_bf16" "$t_cps_bf16"
report "quantize bf16 -> fp8" "$t_quant" "$bf16_bytes" "$t_cp_bf16" "$t_cps_bf16"

t_cp_fp8=$(best_of cp "$fp8" "$work/copy.safetensors")
t_cps_fp8=$(best_of cp_sync "$fp8" "$work/copy.safetensors")
report "cp fp8" "$t_cp_fp8" "$fp8_bytes" "$t_cp_fp8" "$t_cps_fp8"
report "cp + sync fp8" "$t_cps_fp8" "$fp8_bytes" "$t_cp_fp8" "$t_cps_fp8"
"$cli" shuffle -q --layout aiter16x16 "$fp8" "$work/aiter.safetensors" > /dev/null
for layout in preshuffled aiter16x16; do
  t=$(best_of "$cli" shuffle -q --layout "$layout" "$fp8" "$work/s.safetensors")
  report "shuffle plain -> $layout" "$t" "$fp8_bytes" "$t_cp_fp8" "$t_cps_fp8"
done
t=$(best_of "$cli" shuffle -q --layout plain "$work/aiter.safetensors" "$work/s.safetensors")
report "shuffle aiter16x16 -> plain" "$t" "$fp8_bytes" "$t_cp_fp8" "$t_cps_fp8"
rm -f "$work/copy.safetensors" "$work/q.safetensors" "$work/s.safetensors" "$work/aiter.safetensors"
