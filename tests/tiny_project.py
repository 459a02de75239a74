"""A tiny labelled data set and k-diffusion teacher on disk, and the stage CLIs run over them in DAG order."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner


def write_tiny_project(folder: Path, teacher, params_text: str) -> None:
    """`k.safetensors` (the teacher), `data.parquet` (60 random 8x8 images in 3 classes) and `params.yaml`."""
    from dmdlib.data.prepared import ImageSet, split_train_heldout, write_image_parquet
    from dmdlib.teachers.loading import save_kdiffusion

    save_kdiffusion(folder / "k.safetensors", teacher, teacher.config)
    rng = torch.Generator().manual_seed(0)
    data = ImageSet(
        torch.randint(0, 256, (60, 8, 8, 1), generator=rng, dtype=torch.uint8).numpy(),
        (torch.arange(60) % 3).numpy(),
        split_train_heldout(60, 0.25, 0),
        ["a", "b", "c"],
    )
    write_image_parquet(folder / "data.parquet", data)
    (folder / "params.yaml").write_text(
        f"teacher:\n  kind: kdiffusion\n  path: {folder / 'k.safetensors'}\n  train:\n    sample_steps: 2\n"
        + params_text
    )


def pipeline_params(distill_extra: str = "") -> str:
    """Params small enough to run every stage in seconds; `distill_extra` adds lines to the distill section."""
    return (
        "features:\n  steps: 5\n  batch_size: 8\n"
        "pairs:\n  count: 6\n  shard_size: 3\n  batch_size: 3\n  steps: 2\n"
        "distill:\n  steps: 3\n  batch_size: 2\n  reg_batch_size: 2\n  regression_loss: l2\n  sample_every: 2\n"
        "  checkpoint_every: 2\n  ema_decay: 0.9\n"
        + distill_extra
        + "evaluate:\n  samples: 12\n  sample_sets: 2\n  speed_batch_size: 4\n  speed_repeats: 1\n"
    )


def run_stages(folder: Path, names: list[str]) -> None:
    """Invoke the named stage CLIs in order, each on the project's files; fail with the stage's output."""
    from dmd.stages.distill import app as distill_app
    from dmd.stages.evaluate import app as evaluate_app
    from dmd.stages.features import app as features_app
    from dmd.stages.pairs import app as pairs_app
    from dmd.stages.teacher import app as teacher_app

    p = lambda name: str(folder / name)
    stages = {
        "features": (
            features_app,
            ["--data", p("data.parquet"), "--out", p("classifier.safetensors"), "--metrics", p("classifier.json")],
        ),
        "teacher": (teacher_app, ["--out", p("teacher"), "--samples", p("t.png")]),
        "pairs": (pairs_app, ["--teacher", p("teacher"), "--out", p("pairs")]),
        "distill": (
            distill_app,
            [
                "--teacher",
                p("teacher"),
                "--pairs",
                p("pairs"),
                "--data",
                p("data.parquet"),
                "--classifier",
                p("classifier.safetensors"),
                "--out",
                p("generator"),
                "--samples",
                p("grids"),
                "--checkpoint",
                p("ck.pt"),
                "--live",
                p("live"),
            ],
        ),
        "evaluate": (
            evaluate_app,
            [
                "--data",
                p("data.parquet"),
                "--teacher",
                p("teacher"),
                "--generator",
                p("generator"),
                "--classifier",
                p("classifier.safetensors"),
                "--metrics",
                p("eval.json"),
                "--images",
                p("eval"),
            ],
        ),
    }
    runner = CliRunner()
    for name in names:
        app, args = stages[name]
        result = runner.invoke(app, ["--params", p("params.yaml"), *args])
        assert result.exit_code == 0, f"{name}: {result.output} {result.exception!r}"


class Killed(Exception):
    """Raised from a run's step callback: the run stops there, as a killed process would."""


def kill_at(step: int):
    """A step callback (its first argument the step just done) that raises Killed once `step` is done."""

    def callback(done, *_):
        if done == step:
            raise Killed

    return callback
