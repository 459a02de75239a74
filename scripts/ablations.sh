#!/usr/bin/env bash
# The paper's ablations on the embedded default, as DVC experiments (each in a temporary copy, so the
# workspace keeps the full-DMD run). Needs a finished `make repro` (the teacher and pairs come from its cache).
#   bash scripts/ablations.sh          then compare:  dvc exp show --md --only-changed
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
dvc exp run --temp -n no-regression -S distill.lambda_reg=0      # DM loss only (paper: "w/o L_reg")
dvc exp run --temp -n no-dm -S distill.dm_weight=0               # regression only (paper: "w/o L_KL")
dvc exp show --md --only-changed --drop 'Created|dvclive.*' 2>/dev/null || dvc exp show --md
