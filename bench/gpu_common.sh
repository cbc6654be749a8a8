# Shared by the scripts that run on the Hopper machine (gpu_final.sh,
# gpu_decode.sh, gpu_large.sh); sourced, never run. Building nothing:
# ARTIFACTS is the flat folder bench/pack_gpu.sh makes here.
#
#   gpu_setup ARTIFACTS DEFAULT_OUT   sets ART, OUT (unless set), LD_LIBRARY_PATH,
#                                     goes to the repository root, writes
#                                     $OUT/env.txt (card, driver, torch) and prints it
#   has STEP                          whether STEP is in $STEPS
#   step LOG LIMIT COMMAND...         runs COMMAND (env assignments through `env`)
#                                     under `timeout LIMIT`, appending to $OUT/LOG a
#                                     header and a "== rc=N (S s): COMMAND" line, also
#                                     printed; a failure sets status=1
status=0

gpu_setup() {
  ART=$(cd "${1:?artifacts folder}" && pwd)
  OUT=${OUT:-$2}
  mkdir -p "$OUT"
  export LD_LIBRARY_PATH="$ART:${LD_LIBRARY_PATH:-}" PYTHONUNBUFFERED=1
  cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
  {
    date -u
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit \
      --format=csv
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
  } >"$OUT/env.txt" 2>&1
  cat "$OUT/env.txt"
}

has() { case " ${STEPS:-} " in *" $1 "*) return 0 ;; esac; return 1; }

step() {
  local log=$1 limit=$2
  shift 2
  local start
  start=$(date +%s)
  echo "=== $*" >>"$OUT/$log"
  timeout "$limit" "$@" >>"$OUT/$log" 2>&1
  local rc=$?
  echo "== rc=$rc ($(( $(date +%s) - start )) s): $*" | tee -a "$OUT/$log"
  [ $rc -eq 0 ] || status=1
  return $rc
}
