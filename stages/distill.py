"""`distill` stage: DMD training of the one-step generator from the teacher (paper Algorithm 1).

One process by default; data-parallel with `accelerate launch --num_processes N -m stages.distill ...`
(CPU: gloo) or `torchrun`. Re-running the same command, or `dvc repro`, resumes from the checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
import typer

from dmdlib.classifier import load_classifier
from dmdlib.data import TRAIN, read_image_parquet
from dmdlib.distill import Processes, distill
from dmdlib.dmd import RealBatch
from dmdlib.generator import Generator, save_generator
from dmdlib.images import save_grid, to_model_range, to_uint8
from dmdlib.io import resumable_step
from dmdlib.latents import decode, load_vae
from dmdlib.pairs import PairDataset, seeded_inputs
from dmdlib.params import load_params
from dmdlib.regression import make_regression_loss
from stages.common import PARAMS_OPTION, PROMPTS_OPTION, TEACHER_OPTION, conditioning, read_teacher, setup_logging, user_errors
from stages.distill_monitor import DistillMonitor
from stages.pairs import pair_metadata

log = logging.getLogger("distill")
app = typer.Typer(add_completion=False, help=__doc__)
GRID_SEED = 2_000_000  # fixed noise of every sample grid: seeds GRID_SEED + i


def fixed_inputs(shape, conditions, count: int, first_seed: int = GRID_SEED):
    """Seeded noise and cond (condition ids cycling 0..K-1) shared by every grid, so pictures compare sample by sample."""
    noise = torch.stack([seeded_inputs(first_seed + i, shape, 0)[0] for i in range(count)])
    cond = conditions.lookup(torch.arange(count) % conditions.count) if conditions is not None else None
    return noise, cond


@torch.no_grad()
def generate(generator: Generator, noise: torch.Tensor, cond: torch.Tensor | None, batch: int = 250,
             steps: int | None = None, scale: float | None = None) -> torch.Tensor:
    """`steps` generator evaluations per sample (default: its whole ladder), in batches on the generator's device;
    re-noising seeded per batch; samples come back on the CPU."""
    device = next(generator.parameters()).device
    outputs = []
    for start in range(0, len(noise), batch):
        part = None if cond is None else cond[start : start + batch].to(device)
        rng = torch.Generator().manual_seed(start)
        outputs.append(generator.sample(noise[start : start + batch].to(device), part, steps, scale, rng).float().cpu())
    return torch.cat(outputs)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    teacher: Path = TEACHER_OPTION,
    pairs: Path = typer.Option(Path("data/pairs"), help="Pair shards from the `pairs` stage (unused when lambda_reg is 0)."),
    data: Path = typer.Option(Path("data/prepared.parquet"), help="Prepared data: real images for the diversity check."),
    classifier: Path = typer.Option(Path("models/classifier.safetensors"), help="Feature classifier for class shares (optional)."),
    out: Path = typer.Option(Path("models/generator"), help="Generator folder (generator.json + safetensors)."),
    samples: Path = typer.Option(Path("reports/distill"), help="Folder for sample grids: initial.png, final.png, step-N.png."),
    checkpoint: Path = typer.Option(Path("checkpoints/distill.pt"), help="Resumable training checkpoint."),
    live: Path = typer.Option(Path("dvclive/distill"), help="dvclive folder for losses and diversity curves."),
    prompts: Path = PROMPTS_OPTION,
) -> None:
    """Distil the teacher into a one-step generator; write it with sample grids and training curves."""
    from accelerate import Accelerator

    setup_logging()
    with user_errors():
        all_params = load_params(params)
        config = all_params.distill
        accelerator = Accelerator(mixed_precision="no" if config.mixed_precision == "fp32" else config.mixed_precision,
                                  cpu=not torch.cuda.is_available())
        processes = Processes(accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator.autocast)
        main_process = accelerator.is_main_process
        teacher_denoiser, reference = read_teacher(teacher)
        # The real denoiser guides with the pairs' scale (paper: the same cfg for pairs and DM); fake and G never do.
        real_denoiser, conditions, texts = conditioning(teacher_denoiser, reference, all_params.pairs.guidance, prompts,
                                                        config.guidance_range)
        expected_pairs = pair_metadata(teacher_denoiser, all_params.pairs, texts)
        pair_set = PairDataset(pairs, expected_pairs) if config.lambda_reg > 0 else None
        regression = (make_regression_loss(config.regression_loss, config.lpips_net, config.lpips_fallback)
                      if config.lambda_reg > 0 else None)
        if regression is not None and hasattr(regression, "to"):
            regression = regression.to(accelerator.device)
        latent = reference["kind"] == "stable_diffusion"
        vae = None
        if latent:
            vae = load_vae(config.preview_vae, subfolder="") if config.preview_vae else load_vae(reference["path"])
        to_images = (lambda x: decode(vae, x)) if latent else (lambda x: x)
        if latent and regression is not None and config.regression_space == "decoded":
            regression = decoded_regression(regression, load_vae(reference["path"]).to(accelerator.device))
        fingerprint = hashlib.sha256(json.dumps([config.model_dump(mode="json"), expected_pairs]).encode()).hexdigest()
        shape = teacher_denoiser.sample_shape
        columns = min(conditions.count, 10) if conditions is not None else 8
        grid_noise, grid_cond = fixed_inputs(shape, conditions, 8 * columns)

        def save_samples(name: str, generator: Generator) -> None:
            save_grid(samples / name, to_uint8(to_images(generate(generator, grid_noise, grid_cond))), columns, scale=4)

        monitor = None
        if main_process:
            samples.mkdir(parents=True, exist_ok=True)
            save_samples("initial.png", Generator.from_teacher(teacher_denoiser))
            diversity = {} if latent else _diversity_inputs(data, classifier, shape, conditions)
            monitor = DistillMonitor(live, resumable_step(checkpoint, fingerprint) > 0, config.sample_every,
                                     config.steps, save_samples, **diversity)
        real_images = _real_images(data) if config.gan_generator_weight > 0 and not latent else None
        if config.gan_generator_weight > 0 and latent:
            raise ValueError("distill.gan_generator_weight: the GAN head needs real images; latent (text-to-image) teachers "
                             "are not supported yet")
        generator, _ = distill(teacher_denoiser, pair_set, regression, config, checkpoint, fingerprint, processes,
                               monitor, real_denoiser, conditions, real_images, all_params.pairs.guidance)
        if main_process:
            save_samples("final.png", generator)
            save_generator(out, generator, reference)
            monitor.close()
            log.info("wrote %s; sample grids in %s (initial.png vs final.png, same noise)", out, samples)
        accelerator.wait_for_everyone()


def decoded_regression(regression, vae):
    """The regression loss on VAE-decoded images (the paper's LPIPS on pixels); gradients flow through the decoder."""

    def loss(x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target_images = decode(vae, target)
        return regression(decode(vae, x), target_images)

    return loss


def _real_images(data: Path) -> RealBatch:
    """The training split in model range, with class labels as cond when the data has them: the GAN's positives."""
    dataset = read_image_parquet(data)
    train = dataset.subset(TRAIN)
    labels = torch.from_numpy(dataset.labels[train]).long() if dataset.class_names else None
    return RealBatch(to_model_range(dataset.images[train]), labels)


def _diversity_inputs(data: Path, classifier: Path, shape, conditions) -> dict:
    """Real images, the feature classifier and the data's class shares, for DistillMonitor's collapse check."""
    dataset = read_image_parquet(data)
    train = dataset.subset(TRAIN)
    labelled = bool(dataset.class_names)
    check_noise, check_cond = fixed_inputs(shape, conditions, 500, GRID_SEED + 10_000)
    shares = torch.bincount(torch.from_numpy(dataset.labels[train])).double() if labelled else None
    return {
        "diversity_samples": lambda generator: generate(generator, check_noise, check_cond),
        "real_images": to_model_range(dataset.images[train[:500]]),
        "classifier": load_classifier(classifier) if labelled and classifier.is_file() else None,
        "data_shares": shares / shares.sum() if labelled else None,
    }


if __name__ == "__main__":
    app()
