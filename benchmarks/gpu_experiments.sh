#!/usr/bin/env bash
# Distillation variants of the embedded default side by side on one CUDA GPU, from a finished run's teacher, pairs,
# classifier and prepared data, each for as many steps as fit in a time budget; then all evaluated.
#   bash benchmarks/gpu_experiments.sh INPUTS WORK SECONDS NAME:key=value;key=value ...
# INPUTS holds prepared.parquet, classifier.safetensors, teacher/ and pairs/ (the pipeline's outputs). Every variant
# first runs CALIBRATE steps (default 60), all at once, for its steps/s under that load; then each gets the steps that
# fit in what is left of SECONDS less EVAL_RESERVE seconds (default 120) for evaluation, at 85% of the measured rate.
# Variants with the same distill.fake_steps get the same step count (the slowest one's), so a GAN run and its
# control train equally long. Stage logs, step counts and times in WORK/summary.md, results in WORK/table.md.
# The GPU is shared, so the images/s of the table are not speed figures (benchmarks/gpu_default.sh measures those).
#   QUICK=1 bash benchmarks/gpu_experiments.sh ...   a dry run on the CPU with tiny step and sample counts
set -uo pipefail
IN=$1 W=$2 BUDGET=$3
shift 3
CALIBRATE=${CALIBRATE:-60} EVAL_RESERVE=${EVAL_RESERVE:-120}
mkdir -p "$W"
log() { echo "$(date +%T) $*" | tee -a "$W/summary.md"; }
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}  # several processes share the machine's cores

quick=()
[[ "${QUICK:-0}" == 1 ]] && quick=(evaluate.samples=100 evaluate.sample_sets=2 evaluate.speed_repeats=1 distill.sample_every=1000)
declare -A OVERRIDES FAKE_STEPS
names=()
for spec in "$@"; do
  name=${spec%%:*}
  names+=("$name")
  OVERRIDES[$name]=${spec#*:}
  fake=$(tr ";" '\n' <<<"${spec#*:}" | sed -n 's/^distill.fake_steps=//p')
  FAKE_STEPS[$name]=${fake:-1}
done
log "device: $(python3 -c 'import torch; print(torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu", torch.__version__)')"

# distill NAME STEPS TAG: one variant's distillation at STEPS steps, in the background
distill() {
  local name=$1 steps=$2 tag=$3
  IFS=";" read -ra overrides <<<"${OVERRIDES[$name]}"
  python3 benchmarks/params_variant.py "$W/$tag$name.yaml" "${quick[@]}" "${overrides[@]}" "distill.steps=$steps" || return 1
  timeout "${DISTILL_TIMEOUT:-100000}" python3 -m stages.distill --params "$W/$tag$name.yaml" --teacher "$IN/teacher" \
    --pairs "$IN/pairs" --data "$IN/prepared.parquet" --classifier "$IN/classifier.safetensors" --out "$W/generator_$tag$name" \
    --samples "$W/grids_$tag$name" --checkpoint "$W/$tag$name.pt" --live "$W/live_$tag$name" >"$W/distill_$tag$name.log" 2>&1
}

# steady steps/s from tqdm's readings in a log ("37/60 [00:12<"): from the first reading at a third of the steps
# or more (the first steps carry CUDA's warm-up) to the last
rate() {
  python3 - "$1" <<'PYTHON'
import re, sys
readings = [(int(n), int(total), int(m) * 60 + int(s))
            for n, total, m, s in re.findall(r"(\d+)/(\d+) \[(\d+):(\d\d)<", open(sys.argv[1]).read())]
first = next((r for r in readings if r[0] >= r[1] / 3), None)
if first and readings[-1][2] > first[2]:
    print(f"{(readings[-1][0] - first[0]) / (readings[-1][2] - first[2]):.2f}")
PYTHON
}

start=$SECONDS
for name in "${names[@]}"; do distill "$name" "$CALIBRATE" calibrate_ & done
wait
declare -A STEPS CALIBRATED
for name in "${names[@]}"; do
  measured=$([[ -f "$W/distill_calibrate_$name.log" ]] && rate "$W/distill_calibrate_$name.log")
  [[ -n "$measured" ]] || { log "$name: calibration failed"; tail -20 "$W/distill_calibrate_$name.log" 2>/dev/null; continue; }
  left=$((BUDGET - (SECONDS - start) - EVAL_RESERVE))
  steps=$(awk -v r="$measured" -v s="$left" 'BEGIN { n = int(r * s * 0.85 / 10) * 10; print (n < 10 ? 10 : n) }')
  group=${FAKE_STEPS[$name]}
  [[ -z "${STEPS[$group]:-}" || $steps -lt ${STEPS[$group]} ]] && STEPS[$group]=$steps
  CALIBRATED[$name]=1
  log "$name: $measured steps/s with every variant running ($CALIBRATE-step calibration)"
done
left=$((BUDGET - (SECONDS - start) - EVAL_RESERVE))
log "calibration took $((SECONDS - start)) s; $left s left for distillation"

run_names=()
for name in "${names[@]}"; do
  [[ -n "${CALIBRATED[$name]:-}" ]] || continue
  run_names+=("$name")
  log "$name: ${OVERRIDES[$name]}, ${STEPS[${FAKE_STEPS[$name]}]} steps"
  DISTILL_TIMEOUT=$((left + 60)) distill "$name" "${STEPS[${FAKE_STEPS[$name]}]}" "" &
done
wait
log "distillation ended after $((SECONDS - start)) s"

files=()
for name in "${run_names[@]}"; do
  if [[ ! -f "$W/generator_$name/generator.json" ]]; then
    log "$name: no generator (distillation failed or ran out of time)"; tail -5 "$W/distill_$name.log"; continue
  fi
  files+=("$W/metrics/$name.json")
  python3 -m stages.evaluate --params "$W/$name.yaml" --data "$IN/prepared.parquet" --teacher "$IN/teacher" \
    --generator "$W/generator_$name" --classifier "$IN/classifier.safetensors" --metrics "$W/metrics/$name.json" \
    --images "$W/eval_images_$name" >"$W/evaluate_$name.log" 2>&1 &
done
wait
log "evaluation ended after $((SECONDS - start)) s"
existing=()
for file in "${files[@]}"; do [[ -f "$file" ]] && existing+=("$file") || log "$(basename "$file"): evaluation failed"; done
[[ ${#existing[@]} -gt 0 ]] && python3 benchmarks/experiments_table.py --files "${existing[@]}" | tee "$W/table.md"
