"""`distill` stage: DMD training of the one-step generator from the teacher (paper Algorithm 1).

One process by default; data-parallel with `accelerate launch --num_processes N -m stages.distill ...`
(CPU: gloo) or `torchrun`. Re-running the same command, or `dvc repro`, resumes from the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path

import torch
import typer

from dmdlib.classifier import load_classifier
from dmdlib.data import TRAIN, read_image_parquet
from dmdlib.distill import Processes, distill
from dmdlib.io import resumable_step
from dmdlib.diversity import measure_diversity
from dmdlib.generator import OneStepGenerator, save_generator
from dmdlib.images import save_grid, to_model_range, to_uint8
from dmdlib.pairs import PairDataset, seeded_inputs
from dmdlib.params import load_params
from dmdlib.regression import make_regression_loss
from dmdlib.teachers import teacher_digest
from stages.common import PARAMS_OPTION, read_teacher, setup_logging, user_errors
from stages.pairs import pair_metadata

log = logging.getLogger("distill")
app = typer.Typer(add_completion=False, help=__doc__)
GRID_SEED = 2_000_000  # fixed noise of every sample grid: seeds GRID_SEED + i


def fixed_inputs(shape, classes: int, count: int, first_seed: int = GRID_SEED):
    """Seeded noise (and class labels cycling 0..K-1) shared by every grid, so pictures compare sample by sample."""
    noise = torch.stack([seeded_inputs(first_seed + i, shape, 0)[0] for i in range(count)])
    labels = torch.arange(count) % classes if classes else None
    return noise, labels


@torch.no_grad()
def generate(generator: OneStepGenerator, noise: torch.Tensor, labels: torch.Tensor | None, batch: int = 250) -> torch.Tensor:
    """One generator evaluation per image, in batches."""
    outputs = []
    for start in range(0, len(noise), batch):
        cond = labels[start : start + batch] if labels is not None else None
        outputs.append(generator(noise[start : start + batch], cond).float().cpu())
    return torch.cat(outputs)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    teacher: Path = typer.Option(Path("models/teacher"), help="Teacher folder from the `teacher` stage."),
    pairs: Path = typer.Option(Path("data/pairs"), help="Pair shards from the `pairs` stage (unused when lambda_reg is 0)."),
    data: Path = typer.Option(Path("data/prepared.parquet"), help="Prepared data: real images for the diversity check."),
    classifier: Path = typer.Option(Path("models/classifier.safetensors"), help="Feature classifier for class shares (optional)."),
    out: Path = typer.Option(Path("models/generator"), help="Generator folder (generator.json + safetensors)."),
    samples: Path = typer.Option(Path("reports/distill"), help="Folder for sample grids: initial.png, final.png, step-N.png."),
    checkpoint: Path = typer.Option(Path("checkpoints/distill.pt"), help="Resumable training checkpoint."),
    live: Path = typer.Option(Path("dvclive/distill"), help="dvclive folder for losses and diversity curves."),
) -> None:
    """Distil the teacher into a one-step generator; write it with sample grids and training curves."""
    from accelerate import Accelerator
    from dvclive import Live

    setup_logging()
    with user_errors():
        all_params = load_params(params)
        config = all_params.distill
        accelerator = Accelerator(mixed_precision=config.mixed_precision, cpu=not torch.cuda.is_available())
        processes = Processes(accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator.autocast)
        main_process = accelerator.is_main_process
        real_denoiser, reference = read_teacher(teacher)
        expected_pairs = pair_metadata(real_denoiser, all_params.pairs)
        pair_set = PairDataset(pairs, expected_pairs) if config.lambda_reg > 0 else None
        regression = (make_regression_loss(config.regression_loss, config.lpips_net, config.lpips_fallback)
                      if config.lambda_reg > 0 else None)
        if regression is not None and hasattr(regression, "to"):
            regression = regression.to(accelerator.device)
        dataset = read_image_parquet(data)
        real_images = to_model_range(dataset.images[dataset.subset(TRAIN)[:500]])
        shares = torch.bincount(torch.from_numpy(dataset.labels[dataset.subset(TRAIN)])).float()
        data_shares = shares / shares.sum() if dataset.class_names else None
        feature_net = load_classifier(classifier) if classifier.is_file() and dataset.class_names else None

        fingerprint = hashlib.sha256(json.dumps([config.model_dump(mode="json"), expected_pairs]).encode()).hexdigest()
        shape, classes = real_denoiser.sample_shape, real_denoiser.num_classes
        grid_noise, grid_labels = fixed_inputs(shape, classes, 8 * max(classes, 8))
        check_noise, check_labels = fixed_inputs(shape, classes, 500, GRID_SEED + 10_000)
        columns = max(classes, 8)
        if main_process:
            samples.mkdir(parents=True, exist_ok=True)
            initial = OneStepGenerator.from_teacher(real_denoiser)
            save_grid(samples / "initial.png", to_uint8(generate(initial, grid_noise, grid_labels)), columns, scale=4)

        resuming = resumable_step(checkpoint, fingerprint) > 0
        if main_process and not resuming:
            shutil.rmtree(live, ignore_errors=True)
        with Live(dir=str(live), resume=resuming, save_dvc_exp=False, dvcyaml=None, report=None) as tracker:

            def on_step(step: int, metrics: dict[str, float], current: OneStepGenerator) -> None:
                if not main_process:
                    return
                if step % 10 == 0:
                    tracker.step = step
                    for name, value in metrics.items():
                        tracker.log_metric(name, value)
                if step % config.sample_every == 0 or step == config.steps:
                    save_grid(samples / f"step-{step:06d}.png", to_uint8(generate(current, grid_noise, grid_labels)),
                              columns, scale=4)
                    diversity = measure_diversity(generate(current, check_noise, check_labels), real_images,
                                                  feature_net, data_shares)
                    tracker.step = step
                    tracker.log_metric("diversity/spread", diversity.spread)
                    if diversity.class_shares is not None:
                        tracker.log_metric("diversity/min_class_share", min(diversity.class_shares))
                    message = diversity.warning()
                    if message:
                        log.warning("step %d: %s", step, message)

            generator, _ = distill(real_denoiser, pair_set, regression, config, checkpoint, fingerprint, processes, on_step)
        if main_process:
            save_grid(samples / "final.png", to_uint8(generate(generator, grid_noise, grid_labels)), columns, scale=4)
            save_generator(out, generator, reference)
            log.info("wrote %s; sample grids in %s (initial.png vs final.png, same noise)", out, samples)
        accelerator.wait_for_everyone()


if __name__ == "__main__":
    app()
