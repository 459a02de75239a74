"""The DVC experiments of `scripts/experiments.sh` (listed in scripts/experiments.yaml) next to the default run, as one
table.

    python benchmarks/experiments_table.py [--metrics metrics/eval.json]
    python benchmarks/experiments_table.py --files RUN.json ...   evaluate-stage metrics files, named by their stems

Reads `dvc exp show --json` (the committed run is the baseline) or the files (the first is the baseline) and
prints, for the baseline and every experiment, the params it changed and each generator row of its metrics: FID/KID in
the pipeline's
feature space (mean ± standard error over `evaluate.sample_sets` sets, and the ratio to the teacher's FID on the same
sets), recall, the smallest class-share ratio, NFE, images/s and the speed-up over the teacher.
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

from dmdlib.data.checkpoints import flat_settings

GENERATOR_ROW = ("dmd_", "teacher_guidance_")  # per-model rows of metrics/eval.json besides the baseline ones


def runs(node, found: list) -> list:
    """(name, params, metrics) of every revision in `dvc exp show --json`, in its order."""
    if isinstance(node, list):
        for item in node:
            runs(item, found)
    elif isinstance(node, dict):
        data = node.get("data")
        if isinstance(data, dict) and "params" in data:
            params = flat_settings(data["params"].get("params.yaml", {}).get("data", {}))
            metrics = {path: entry.get("data", {}) for path, entry in (data.get("metrics") or {}).items()}
            found.append((node.get("name") or node.get("rev"), params, metrics))
        for key in ("experiments", "revs"):
            if node.get(key) and (node.get("executor") or {}).get("state") not in ("running", "queued"):
                runs(node[key], found)  # a running experiment shows its baseline's metrics until it finishes
    return found


def spread(row: dict, key: str, digits: int = 3) -> str:
    """`mean ± standard error` over the sample sets when the run measured several, else the value; '-' when absent."""
    if key not in row:
        return "-"
    error = row.get(f"{key}_se", 0)
    return f"{row[key]:.{digits}f}" + (f" ± {error:.{digits}f}" if error else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--metrics", default="metrics/eval.json", help="The evaluate stage's metrics file.")
    parser.add_argument(
        "--files", nargs="+", type=Path, help="Metrics files to show instead of `dvc exp show` (no params)."
    )
    args = parser.parse_args()
    if args.files:
        found = [(path.stem, {}, {args.metrics: json.loads(path.read_text())}) for path in args.files]
    else:
        shown = subprocess.run(["dvc", "exp", "show", "--json"], check=True, capture_output=True, text=True).stdout
        found = [
            run
            for run in runs(json.loads(shown), [])
            if run[0] != "workspace" and "teacher" in run[2].get(args.metrics, {})
        ]
    if not found:
        raise SystemExit(f"no run with {args.metrics} in `dvc exp show`; run `make repro`, then scripts/experiments.sh")
    _, base_params, base_metrics = found[0]
    base = base_metrics[args.metrics]
    extractor = next(key for key in base["teacher"] if key.startswith("fid_")).removeprefix("fid_")
    print(
        f"FID/KID in the `{extractor}` feature space, {base.get('sample_sets', 1)} set(s) of {base['samples']} samples "
        f"per row; baseline: {found[0][0] if args.files else 'the committed run ' + found[0][0][:7]}\n"
    )
    print(
        "| run | changed params | model | NFE | FID | FID / teacher's | (FID - floor) / (teacher's - floor) | KID | "
        "recall | min class share ratio | images/s | speed-up |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, params, metrics in found:
        results = metrics[args.metrics]
        changed = ", ".join(f"{k}={params[k]}" for k in params if params[k] != base_params.get(k)) or (
            "(defaults)" if params else "-"
        )
        teacher_speed = results["teacher"]["images_per_s"]
        label = "baseline" if name == found[0][0] and not args.files else name
        for model, row in results.items():
            if not (isinstance(row, dict) and model.startswith(GENERATOR_ROW)):
                continue
            speed = row["images_per_s"]
            print(
                f"| {label} | {changed} | {model} | {row['nfe']} | {spread(row, f'fid_{extractor}')} | "
                f"{spread(row, f'fid_{extractor}_vs_teacher', 2)} | "
                f"{spread(row, f'fid_{extractor}_above_floor_vs_teacher', 2)} | "
                f"{row[f'kid_{extractor}']:.4f} | {row['recall_classifier']:.3f} | "
                f"{row.get('min_class_share_ratio', '-')} | "
                f"{speed:,.0f} | {speed / teacher_speed:.0f}x |"
            )
    print(f"\nteacher (baseline run): FID {spread(base['teacher'], f'fid_{extractor}')}, {base['teacher']['nfe']} NFE")


if __name__ == "__main__":
    main()
