"""`evaluate` stage: FID/KID, precision/recall, class shares and speed of the teacher, the initial and the
distilled one-step generator, and the data's own noise floor; metrics JSON for `dvc metrics diff`, and pictures."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import typer

from dmd.stages.common import PARAMS_OPTION, PROMPTS_OPTION, TEACHER_OPTION, compute_device, setup_logging, user_errors
from dmdlib.data.images import make_grid, save_gif, save_grid
from dmdlib.data.io import atomic_output, check_writable
from dmdlib.data.prepared import read_image_parquet
from dmdlib.evaluation.classifier import load_classifier
from dmdlib.evaluation.rows import measure_all
from dmdlib.evaluation.text_to_image import evaluate_text_to_image
from dmdlib.generators.generator import check_generator_teacher, load_generator
from dmdlib.params import load_params
from dmdlib.teachers.families import family_of
from dmdlib.teachers.loading import teacher_digest
from dmdlib.teachers.reference import check_teacher_fits_data, read_teacher

log = logging.getLogger("evaluate")
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    data: Path = typer.Option(
        Path("data/prepared.parquet"), help="Prepared data: reference (train) and noise floor (held-out)."
    ),
    teacher: Path = TEACHER_OPTION,
    generator: Path = typer.Option(Path("models/generator"), help="Generator folder from the `distill` stage."),
    classifier: Path = typer.Option(
        Path("models/classifier.safetensors"), help="Offline feature network (`features` stage)."
    ),
    metrics: Path = typer.Option(Path("metrics/eval.json"), help="Metrics JSON (declared as DVC metrics)."),
    images: Path = typer.Option(Path("reports/eval"), help="Folder for sample grids and the side-by-side comparison."),
    prompts: Path = PROMPTS_OPTION,
) -> None:
    """Measure every model on the same seeds and sample counts; write metrics/eval.json and grids."""
    setup_logging()
    with user_errors():
        all_params = load_params(params, "evaluate", "pairs")
        check_writable(metrics, images)
        real_denoiser, reference = read_teacher(teacher)
        check_teacher_fits_data(real_denoiser, reference, teacher, data)
        check_generator_teacher(generator, teacher_digest(real_denoiser), teacher)
        device = compute_device()
        real_denoiser = real_denoiser.to(device)
        if family_of(reference.kind).text:
            _write(metrics, evaluate_text_to_image(all_params, real_denoiser, reference, generator, prompts, images))
            return
        distilled = load_generator(generator).to(device)
        results, measured = measure_all(
            all_params,
            real_denoiser,
            reference,
            distilled,
            read_image_parquet(data),
            load_classifier(classifier),
            device,
        )
        _save_pictures(images, {name: m.grid for name, m in measured.items()})
        _write(metrics, results)


HEADLINE = ("fid_", "clip_score", "precision_", "recall_", "images_per_s")


def _write(metrics: Path, results: dict) -> None:
    """The metrics file, and a line per model of its headline figures in the log (the file has the rest)."""
    with atomic_output(metrics) as tmp:
        tmp.write_text(json.dumps(results, indent=2))
    log.info("wrote %s; headline figures (mean over sets; errors and the rest in the file):", metrics)
    for name, row in results.items():
        if isinstance(row, dict) and any(key.startswith(HEADLINE) for key in row):
            shown = {
                key: value
                for key, value in row.items()
                if key.startswith(HEADLINE) and not key.endswith(("_std", "_se")) and not isinstance(value, dict)
            }
            log.info("  %s: %s", name, ", ".join(f"{key} {value}" for key, value in shown.items()))


def _save_pictures(folder: Path, grids: dict[str, np.ndarray]) -> None:
    """Each model's grid, and teacher | initial | distilled side by side (the same noise in the same place), as one
    folder replaced whole: no grid of an earlier run's model stays beside this run's."""
    panels = [make_grid(grid, columns=8, padding=1) for name, grid in grids.items() if "guidance" not in name]
    gap = np.full((panels[0].shape[0], 6, panels[0].shape[2]), 255, np.uint8)
    comparison = np.concatenate([part for panel in panels for part in (panel, gap)][:-1], axis=1)
    with atomic_output(folder) as tmp:
        tmp.mkdir()
        for name, grid in grids.items():
            save_grid(tmp / f"{name}.png", grid, columns=8, scale=4)
            if grid.shape[-1] not in (1, 3):  # grey clips: the grid's frame t at time t
                frames = grid.transpose(3, 0, 1, 2)[..., None]
                save_gif(tmp / f"{name}.gif", np.stack([make_grid(frame, columns=10) for frame in frames]), scale=4)
        save_grid(tmp / "comparison.png", comparison[None], columns=1, scale=4)


if __name__ == "__main__":
    app()
