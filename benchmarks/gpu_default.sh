#!/usr/bin/env bash
# The embedded default on a CUDA GPU as DVC experiments, each in a temporary copy: fp32 (params.yaml as it is), bf16,
# then each VARIANT (name:key=value;key=value); their wall times in WORK/summary.md and, in WORK/table.md, the table of
# benchmarks/experiments_table.py (the committed run, measured on the CPU, is its baseline row).
#   bash benchmarks/gpu_default.sh [WORK [VARIANT...]]      QUICK=1: every step count shrunk, a dry run on the CPU
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-/tmp/gpu_default}
shift || true
mkdir -p "$W"
log() { echo "$(date +%T) $*" | tee -a "$W/summary.md"; }

quick=()
[[ "${QUICK:-0}" != 1 ]] || quick=(-S teacher.train.steps=20 -S features.steps=20 -S pairs.count=200 -S distill.steps=10
                                   -S evaluate.samples=100)
log "device: $(python3 -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", torch.__version__)')"

# run NAME [-S key=value ...]: one experiment, its output in WORK/NAME.log; a failed one is logged and the next runs
run() {
  local name=$1 start=$SECONDS
  shift
  dvc exp remove "$name" >/dev/null 2>&1 || true  # a re-run replaces the earlier result of the same name
  if dvc exp run --temp -n "$name" "${quick[@]}" "$@" >"$W/$name.log" 2>&1; then
    log "$name: $((SECONDS - start)) s"
  else
    log "$name: FAILED after $((SECONDS - start)) s"
    tail -20 "$W/$name.log"
  fi
}

run fp32
run bf16 -S distill.mixed_precision=bf16
for spec in "$@"; do
  IFS=";" read -ra settings <<<"${spec#*:}"
  args=()
  for setting in "${settings[@]}"; do args+=(-S "$setting"); done
  run "${spec%%:*}" "${args[@]}"
done
python3 benchmarks/experiments_table.py >"$W/table.md"
