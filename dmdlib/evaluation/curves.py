"""Training curves as one PNG picture: a panel per logged value against the step."""

from __future__ import annotations

import math
import os

from dmdlib.data.io import atomic_output

Curve = tuple[list[int], list[float]]  # steps, values


def plot_curves(curves: dict[str, Curve], path: str | os.PathLike, title: str) -> None:
    """Each curve in its own panel (losses differ by orders of magnitude), log-scaled where all values are positive
    and span more than a decade; written atomically. Without curves, a picture of the title alone."""
    import matplotlib

    matplotlib.use("Agg")  # no screen: render to a file
    from matplotlib import pyplot as plt

    names = sorted(curves)
    columns = min(3, max(1, len(names)))
    rows = max(1, math.ceil(len(names) / columns))
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 2.8 * rows if names else 0.8), squeeze=False)
    for ax, name in zip(axes.flat, names):
        steps, values = curves[name]
        ax.plot(steps, values, linewidth=1.0)
        finite = [v for v in values if math.isfinite(v)]
        if finite and min(finite) > 0 and max(finite) > 10 * min(finite):
            ax.set_yscale("log")
        ax.set_title(name, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(names) :]:
        ax.axis("off")
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    with atomic_output(path) as tmp:
        figure.savefig(tmp, format="png", dpi=100)
    plt.close(figure)
