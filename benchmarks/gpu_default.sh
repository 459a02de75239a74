#!/usr/bin/env bash
# The embedded default, every stage, on a CUDA GPU: fp32, then distill + evaluate again in bf16, with timings.
# No DVC: the stage CLIs in DAG order with the README's params, outputs under WORK; stage times in
# WORK/summary.md, the results table in WORK/table.md.
# Each VARIANT (name:key=value;key=value) is distilled and evaluated after them, from the same teacher and pairs.
#   bash benchmarks/gpu_default.sh [WORK [VARIANT...]]   QUICK=1 shrinks every step count for a dry run on the CPU
set -euo pipefail  # a failing step stops the script, not an empty table
W=${1:-/tmp/gpu_default}
shift || true
mkdir -p "$W"
log() { echo "$(date +%T) $*" | tee -a "$W/summary.md"; }

variant() { python3 benchmarks/params_variant.py "$@"; }  # params.yaml with `section.key=value` overrides

# stage NAME PARAMS ARGS...: run one stage CLI, log its wall time, keep its output in $W/NAME.log
stage() {
  local name=$1 params=$2 module=$3; shift 3
  local start=$SECONDS
  if python3 -m "stages.$module" --params "$params" "$@" >"$W/$name.log" 2>&1; then
    log "$name: $((SECONDS - start)) s"
  else
    log "$name: FAILED after $((SECONDS - start)) s"; tail -20 "$W/$name.log"; return 1
  fi
}

quick=()
[[ "${QUICK:-0}" != 1 ]] || quick=(teacher.train.steps=20 features.steps=20 pairs.count=200 distill.steps=10 evaluate.samples=100)
variant "$W/fp32.yaml" "${quick[@]}"
variant "$W/bf16.yaml" "${quick[@]}" distill.mixed_precision=bf16
runs=(fp32 bf16)
for spec in "$@"; do
  IFS=";" read -ra overrides <<<"${spec#*:}"
  variant "$W/${spec%%:*}.yaml" "${quick[@]}" "${overrides[@]}"
  runs+=("${spec%%:*}")
done
log "device: $(python3 -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", torch.__version__)')"

# the results of every finished run so far, in WORK/table.md (rewritten after each run, so a timeout keeps it)
summarise() {
  for run in "${runs[@]}"; do
    if [[ -f "$W/eval_$run.json" ]]; then
      echo "## $run"
      python3 benchmarks/dmd_report.py --metrics "$W/eval_$run.json" --repeats 0
    fi
  done >"$W/table.md"
}

stage prepare "$W/fp32.yaml" prepare --out "$W/prepared.parquet" --preview "$W/prepared.png" &&
stage teacher "$W/fp32.yaml" teacher --data "$W/prepared.parquet" --out "$W/teacher" --samples "$W/teacher.png" \
  --checkpoint "$W/teacher.pt" --live "$W/live_teacher" &&
stage features "$W/fp32.yaml" features --data "$W/prepared.parquet" --out "$W/classifier.safetensors" \
  --metrics "$W/classifier.json" &&
stage pairs "$W/fp32.yaml" pairs --teacher "$W/teacher" --out "$W/pairs" || exit 1

for run in "${runs[@]}"; do
  if ! { stage "distill_$run" "$W/$run.yaml" distill --teacher "$W/teacher" --pairs "$W/pairs" \
           --data "$W/prepared.parquet" --classifier "$W/classifier.safetensors" --out "$W/generator_$run" \
           --samples "$W/grids_$run" --checkpoint "$W/distill_$run.pt" --live "$W/live_$run" &&
         stage "evaluate_$run" "$W/$run.yaml" evaluate --data "$W/prepared.parquet" --teacher "$W/teacher" \
           --generator "$W/generator_$run" --classifier "$W/classifier.safetensors" \
           --metrics "$W/eval_$run.json" --images "$W/eval_$run"; }; then
    log "$run: failed; going on with the next run"
  fi
  summarise
done

