"""Learning curves of distillation runs side by side: the monitor's feature FID against generator steps and against
the run's wall-clock minutes, one line per run, as a PNG.

    python benchmarks/objective_curves.py OUT.png NAME=RUN_FOLDER [NAME=RUN_FOLDER ...]

A run folder is a project folder after `distill` (`dvclive/distill`, `reports/distill`). The stage logs
`diversity/feature_fid` every `distill.sample_every` steps (dmdlib/evaluation/monitor.py): the Fréchet distance, in
the feature classifier's space, of 500 fixed-noise generator samples from 500 class-stratified training images: one
small set, so a curve to compare shapes by, not a final figure. Wall-clock minutes are the times of the sample grids
the stage writes at the same steps (`step-NNNNNN.png`), from its `initial.png`; runs that shared the CPU with other
jobs ran slower than alone.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def curve(run: Path) -> tuple[list[int], list[float], list[float]]:
    """(steps, wall-clock minutes since the run's initial grid, feature FID) of one run folder."""
    grids = run / "reports" / "distill"
    start = (grids / "initial.png").stat().st_mtime
    rows = list(csv.DictReader(open(run / "dvclive/distill/plots/metrics/diversity/feature_fid.tsv"), delimiter="\t"))
    steps = [int(row["step"]) for row in rows]
    minutes = [((grids / f"step-{step:06d}.png").stat().st_mtime - start) / 60 for step in steps]
    return steps, minutes, [float(row["feature_fid"]) for row in rows]


def main(out: str, runs: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for run in runs:
        name, folder = run.split("=", 1)
        steps, minutes, fids = curve(Path(folder))
        by_step.plot(steps, fids, marker="o", markersize=3, label=name)
        by_time.plot(minutes, fids, marker="o", markersize=3, label=name)
        print(f"{name}: feature FID {fids[0]:.3f} at step {steps[0]} -> {fids[-1]:.3f} at step {steps[-1]}", end="")
        print(f", {minutes[-1]:.1f} min")
    by_step.set_xlabel("generator steps")
    by_time.set_xlabel("wall-clock minutes")
    by_step.set_ylabel("feature FID (500 samples, classifier space)")
    by_step.set_yscale("log")
    by_step.legend()
    figure.tight_layout()
    figure.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
