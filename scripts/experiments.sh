#!/usr/bin/env bash
# The experiments of scripts/experiments.yaml (the paper's ablations and the DMD2 options) as named DVC experiments.
# Each runs in a temporary copy, so the workspace keeps the default run; teacher and pairs come from the cache of a
# finished `make repro`, so only distill and evaluate run. Then print the comparison table.
#   bash scripts/experiments.sh                 all of them, one after another (about 6 hours on 2 CPU cores)
#   bash scripts/experiments.sh gan four-step   some of them
#   JOBS=2 bash scripts/experiments.sh ...      two at a time through `dvc queue`, one thread each
#   python benchmarks/experiments_table.py      the table again, from `dvc exp show`
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

# settings NAME: the experiment's `section.key=value` settings, one per line ("" and exit 2 for an unknown name)
settings() {
  python -c 'import sys, yaml
experiments = yaml.safe_load(open("scripts/experiments.yaml"))
name = sys.argv[1]
if name not in experiments:
    sys.exit(f"unknown experiment {name!r}; choose from: {chr(32).join(experiments)}")
print("\n".join(experiments[name]["settings"]))' "$1"
}

names=("$@")
[ ${#names[@]} -eq 0 ] && mapfile -t names < <(python -c 'import yaml; print("\n".join(yaml.safe_load(open("scripts/experiments.yaml"))))')
for name in "${names[@]}"; do settings "$name" >/dev/null || exit 2; done
JOBS=${JOBS:-1}
for name in "${names[@]}"; do
  dvc exp remove "$name" >/dev/null 2>&1 || true   # a re-run replaces the earlier result of the same name
  args=()
  while IFS= read -r setting; do args+=(-S "$setting"); done < <(settings "$name")
  echo "=== experiment $name: ${args[*]}"
  if [ "$JOBS" -gt 1 ]; then
    dvc exp run --queue -n "$name" "${args[@]}"
  else
    dvc exp run --temp -n "$name" "${args[@]}"
  fi
done
if [ "$JOBS" -gt 1 ]; then
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 dvc queue start -j "$JOBS"   # one thread per run: no oversubscription
  until [[ ! "$(dvc queue status)" =~ Queued|Running ]]; do sleep 30; done  # (grep -q would end the pipe early)
  dvc queue status
fi
python benchmarks/experiments_table.py
