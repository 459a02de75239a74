#!/usr/bin/env bash
# One GPU measurement run of the project on a CUDA machine with PyTorch but no network (benchmarks/gpu/README.md):
#   1. versions + import check of every stage module (exit at once if it fails)
#   2. tests/test_cuda.py                                  (foreground)
#   3. the embedded default pipeline, full default params  (background, started right after 1)
#   4. benchmarks/scale.py at real model sizes              (foreground, after 2)
# Env: INSTALL=1 installs .whl/*.whl into /tmp/site; QUICK=1 shrinks everything for a CPU dry run;
#      PY (python), OUT (results), WORK (scratch), PIPE_END / SCALE_END (deadlines, s since start), TEST_TIMEOUT.
set -u
T0=$SECONDS
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
SRC=${SRC:-$ROOT}  # the project checkout (the root above this folder)
OUT=${OUT:-/tmp/gpuchk/out}
QUICK=${QUICK:-0}
PY=${PY:-python3}
W=${WORK:-/tmp/dmdwork}
PIPE_END=${PIPE_END:-450}
SCALE_END=${SCALE_END:-450}
TEST_TIMEOUT=${TEST_TIMEOUT:-120}
EVAL_BY=${EVAL_BY:-$((PIPE_END - 100))}  # evaluate starts by then even if scale.py still runs
mkdir -p "$OUT"
rm -rf "$W"
mkdir -p "$W/logs"
S=$OUT/summary.txt
: >"$S"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 DO_NOT_TRACK=1
log() { echo "[$(date +%T) t=$((SECONDS - T0))s] $*" | tee -a "$S"; }
left() { echo $(($1 - (SECONDS - T0))); }
log "start: root=$ROOT quick=$QUICK py=$PY cores=$(nproc)"

# ---- 0. wheels -------------------------------------------------------------------------------------------------
BASEPP=${PYTHONPATH:-}
if [ "${INSTALL:-0}" = 1 ]; then
  whls=("$ROOT"/.whl/*.whl)
  sv=$($PY -c "import scipy; print(scipy.__version__)" 2>/dev/null || echo none)
  if [ "$sv" = none ] || $PY -c "import sys; v=tuple(int(x) for x in '$sv'.split('.')[:2]); sys.exit(0 if v >= (1, 18) else 1)"; then
    whls+=("$ROOT"/.whl/opt/scipy-*.whl)
    log "scipy $sv: installing the scipy<1.18 wheel from .whl/opt"
  else
    log "scipy $sv (<1.18): kept"
  fi
  if ! timeout 120 $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
    "${whls[@]}" >"$W/logs/pip.log" 2>&1; then
    log "pip install FAILED"
    tail -30 "$W/logs/pip.log" | tee -a "$S"
    exit 3
  fi
  BASEPP=/tmp/site${BASEPP:+:$BASEPP}
  log "wheels installed into /tmp/site (${#whls[@]} files)"
fi
pp() { echo "${BASEPP:+$BASEPP:}$1"; }  # PYTHONPATH for a project copy

# ---- 1. versions and import check ----------------------------------------------------------------------------
for d in pipe test scale; do  # the project without its environment, wheels, git data or checkpoints
  mkdir -p "$W/$d"
  tar -C "$SRC" --exclude=./.venv --exclude=./.whl --exclude=./.git --exclude=./checkpoints -cf - . | tar -C "$W/$d" -xf -
done
(
  cd "$W/pipe" && rm -rf metrics/eval.json metrics/classifier.json reports/eval reports/distill reports/teacher_samples.png \
    data/prepared.png
)
{
  echo "== nvidia-smi"
  nvidia-smi 2>&1 || echo "no nvidia-smi"
  echo "== python"
  $PY -VV
  PYTHONPATH=$(pp "$W/pipe") $PY - <<'EOF' 2>&1
import importlib, importlib.metadata as md
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available(),
      torch.cuda.get_device_name() if torch.cuda.is_available() else "-", "cudnn", torch.backends.cudnn.version(),
      "threads", torch.get_num_threads())
for name in ["numpy", "scipy", "pyarrow", "pandas", "scikit-learn", "transformers", "accelerate", "peft", "huggingface-hub",
             "safetensors", "typer", "click", "pydantic", "pydantic-core", "typing-extensions", "diffusers", "k-diffusion",
             "clean-fid", "lpips", "mlxtend", "dvclive", "dvc", "kornia", "jsonschema", "pillow", "pyyaml", "pytest",
             "torchvision", "torchdiffeq", "torchsde", "matplotlib", "einops"]:
    try:
        print(f"  {name} {md.version(name)}")
    except Exception as err:
        print(f"  {name} MISSING ({err})")
EOF
} >"$OUT/versions.txt" 2>&1
grep -E "^(torch|  numpy|  scipy|  pyarrow|  transformers|  diffusers|  dvc|  pydantic |  typing)" "$OUT/versions.txt" | tee -a "$S"

cd "$W/pipe" || exit 4
if ! PYTHONPATH=$(pp "$W/pipe") timeout 180 $PY - >"$W/logs/import_check.log" 2>&1 <<'EOF'; then
import os, tempfile, time
t = time.time()
import stages.prepare, stages.sources, stages.teacher, stages.features, stages.pairs, stages.distill, stages.evaluate
import stages.sample, stages.export
import dmdlib, k_diffusion, diffusers, cleanfid.fid, lpips, mlxtend.data, dvclive, pydantic, peft, accelerate
from diffusers import UNet2DConditionModel, DDPMScheduler
import numpy as np
from cleanfid.fid import frechet_distance
print("frechet_distance(eye, 2 eye) =", frechet_distance(np.zeros(3), np.eye(3), np.ones(3), 2 * np.eye(3)))
from dvclive import Live
live = Live(dir=tempfile.mkdtemp(), resume=False, save_dvc_exp=False, dvcyaml=None, report=None)
live.log_metric("x", 1.0); live.next_step(); live.end()
print("dmdlib from", dmdlib.__file__, "; imports + Live in %.1f s" % (time.time() - t))
EOF
  log "IMPORT CHECK FAILED"
  tail -40 "$W/logs/import_check.log" | tee -a "$S"
  cp "$W/logs/import_check.log" "$OUT/" 2>/dev/null
  exit 4
fi
tail -3 "$W/logs/import_check.log" | tee -a "$S"
log "import check ok"

# GPU monitor (ours; stopped at the end)
SMI_PID=
if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used,clocks.sm,power.draw --format=csv -l 5 \
    >"$W/logs/smi.csv" 2>&1 &
  SMI_PID=$!
fi

# ---- 3. the embedded default pipeline, in the background ---------------------------------------------------
if [ "$QUICK" = 1 ]; then
  PYTHONPATH=$(pp "$W/pipe") $PY - <<'EOF'
import yaml
p = yaml.safe_load(open("params.yaml"))
p["teacher"]["train"]["steps"] = 5; p["features"]["steps"] = 5; p["pairs"]["count"] = 100
p["distill"]["steps"] = 3; p["evaluate"].update(samples=100, speed_repeats=1, speed_batch_size=20)
yaml.safe_dump(p, open("params.yaml", "w"), sort_keys=False)
EOF
  log "QUICK: params shrunk"
fi
ST=$OUT/stage_times.tsv
printf "stage\trc\twall_s\n" >"$ST"
pipeline() {
  cd "$W/pipe" || return
  PYTHONPATH=$(pp "$W/pipe") $PY -c "
import yaml
for name, stage in yaml.safe_load(open('dvc.yaml'))['stages'].items():
    print(name + '\t' + ' '.join(stage['cmd'].split()))" >"$W/logs/stage_cmds.tsv"
  local name cmd t1 rc dt budget
  while IFS=$'\t' read -r name cmd; do
    budget=$(left "$PIPE_END")
    if [ "$budget" -lt 10 ]; then
      printf "%s\tnot started (deadline)\t-\n" "$name" >>"$ST"
      log "pipeline: $name not started (deadline)"
      break
    fi
    cmd=${cmd#python }
    if [ "$name" = evaluate ]; then  # measure speed alone on the GPU: wait for scale.py, at most until EVAL_BY
      local waited=$SECONDS
      while [ ! -f "$W/scale.done" ] && [ "$(left "$EVAL_BY")" -gt 0 ]; do sleep 2; done
      log "pipeline: evaluate waited $((SECONDS - waited)) s for scale.py ($([ -f "$W/scale.done" ] && echo done || echo 'still running'))"
      budget=$(left "$PIPE_END")
    fi
    t1=$(date +%s%N)
    # shellcheck disable=SC2086
    PYTHONPATH=$(pp "$W/pipe") timeout -k 5 "$budget" $PY $cmd >"$W/logs/stage_$name.log" 2>&1 </dev/null
    rc=$?
    ms=$((($(date +%s%N) - t1) / 1000000))
    dt=$(printf "%d.%01d" $((ms / 1000)) $((ms % 1000 / 100)))
    printf "%s\t%s\t%s\n" "$name" "$rc" "$dt" >>"$ST"
    log "pipeline: $name rc=$rc ${dt}s"
    if [ "$rc" != 0 ]; then
      tail -15 "$W/logs/stage_$name.log" | sed "s/^/    [$name] /" | tee -a "$S"
      break
    fi
  done <"$W/logs/stage_cmds.tsv"
  log "pipeline: done"
}
pipeline &
PIPE_PID=$!

# ---- 2. CUDA tests -----------------------------------------------------------------------------------------
cd "$W/test" || exit 5
log "tests: start"
PYTHONPATH=$(pp "$W/test") timeout -k 5 "$TEST_TIMEOUT" $PY -m pytest -x -q -p no:cacheprovider tests/test_cuda.py \
  >"$OUT/pytest.log" 2>&1
log "tests: rc=$? $(tail -1 "$OUT/pytest.log")"

# ---- 4. scale benchmark -----------------------------------------------------------------------------------
cd "$W/scale" || exit 6
if [ "$QUICK" = 1 ]; then
  SPECS=("cifar10-ddpmpp|1|base|1")
else
  SPECS=("sd15-unet|8 16|base all|3" "imagenet64-adm|32 64|base ckpt bf16|3" "cifar10-ddpmpp|64 128|base ckpt bf16|3")
fi
: >"$OUT/scale.log"
for spec in "${SPECS[@]}"; do
  IFS="|" read -r model batches options repeats <<<"$spec"
  budget=$(left "$SCALE_END")
  if [ "$budget" -lt 20 ]; then
    log "scale: $model skipped (deadline)"
    continue
  fi
  log "scale: $model batches [$batches] options [$options] (budget ${budget}s)"
  echo "### $model batches $batches options $options repeats $repeats" >>"$OUT/scale.log"
  # shellcheck disable=SC2086
  (
    set -o pipefail
    PYTHONPATH=$(pp "$W/scale") timeout -k 5 "$budget" $PY benchmarks/scale.py --models "$model" --batches $batches \
      --options $options --repeats "$repeats" --pairs 2>&1 </dev/null |
      while IFS= read -r line; do printf '%s %s\n' "$(date +%T)" "$line"; done >>"$OUT/scale.log"
  )
  log "scale: $model rc=$?"
done
touch "$W/scale.done"
grep -F "{'model'" "$OUT/scale.log" >"$W/logs/scale_rows.txt" || true
grep -F "failed" "$OUT/scale.log" | tee -a "$S"
log "scale: $(wc -l <"$W/logs/scale_rows.txt") configurations measured"

# ---- collect ------------------------------------------------------------------------------------------------
wait "$PIPE_PID"
[ -n "$SMI_PID" ] && kill "$SMI_PID" 2>/dev/null
cd "$W/pipe" || exit 7
cp metrics/eval.json "$OUT/eval.json" 2>/dev/null && log "eval.json copied"
if [ -f reports/eval/comparison.png ] && [ "$(stat -c %s reports/eval/comparison.png)" -lt 4000000 ]; then
  cp reports/eval/comparison.png "$OUT/comparison.png"
fi
tar --ignore-failed-read -czf "$OUT/logs.tgz" -C "$W" logs pipe/metrics pipe/reports pipe/dvclive pipe/data/prepared.png \
  2>/dev/null
cat "$ST" | tee -a "$S"
log "end"
