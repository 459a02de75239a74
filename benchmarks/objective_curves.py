"""Learning curves of distillation runs side by side: the monitor's feature FID against generator steps and against
the minutes those steps cost, one line per run, as a PNG.

    python benchmarks/objective_curves.py OUT.png NAME=RUN_FOLDER@SECONDS_PER_STEP [...]

A run folder is a project folder after `distill` (`dvclive/distill`). The stage logs `diversity/feature_fid` every
`distill.sample_every` steps (dmdlib/evaluation/monitor.py): the Fréchet distance, in the feature classifier's
space, of 500 fixed-noise generator samples from 500 class-stratified training images: one small set, so a curve to
compare shapes by, not a final figure. Minutes are steps times the objective's measured seconds per step (one
process alone on the same machine): the runs' own clocks are not comparable when they shared the CPU or were
resumed in another session.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path


def curve(run: Path) -> tuple[list[int], list[float]]:
    """(steps, feature FID) of one run folder."""
    rows = list(csv.DictReader(open(run / "dvclive/distill/plots/metrics/diversity/feature_fid.tsv"), delimiter="\t"))
    return [int(row["step"]) for row in rows], [float(row["feature_fid"]) for row in rows]


def main(out: str, runs: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (by_step, by_time) = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for run in runs:
        name, spec = run.split("=", 1)
        folder, seconds_per_step = spec.rsplit("@", 1)
        steps, fids = curve(Path(folder))
        minutes = [step * float(seconds_per_step) / 60 for step in steps]
        by_step.plot(steps, fids, marker="o", markersize=3, label=name)
        by_time.plot(minutes, fids, marker="o", markersize=3, label=name)
        print(f"{name}: feature FID {fids[0]:.3f} at step {steps[0]} -> {fids[-1]:.3f} at step {steps[-1]}", end="")
        print(f", {minutes[-1]:.1f} min")
    by_step.set_xlabel("generator steps")
    by_time.set_xlabel("minutes at the measured step cost (1 thread)")
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
