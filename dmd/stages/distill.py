"""`distill` stage: DMD training of the one-step generator from the teacher (paper Algorithm 1).

One process by default; data-parallel (distill.data_parallel: DDP or FSDP) with `distill.processes: N` (the stage
launches N processes on this machine with torchrun, so `dvc repro` covers the run), or under an outside launcher
(`torchrun --nproc_per_node N -m dmd.stages.distill ...`, `accelerate launch`; CPU: gloo), on several machines with the
launcher's node rank and rendezvous options. Re-running the same command, or `dvc repro`, resumes from the
checkpoint.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
import typer

from dmd.stages.common import (
    PARAMS_OPTION,
    PROMPTS_OPTION,
    TEACHER_OPTION,
    code_of,
    open_live,
    setup_logging,
    user_errors,
)
from dmdlib.data.checkpoints import claim_checkpoint, fingerprint, resumable_step
from dmdlib.data.images import frames_of, save_grid, to_model_range, to_uint8
from dmdlib.data.io import check_writable, claim_folder, file_digest, single_writer
from dmdlib.data.prepared import TRAIN, PreparedImageReader, read_image_parquet, stratified_subset
from dmdlib.denoisers import Denoiser
from dmdlib.errors import ParamsError
from dmdlib.evaluation.classifier import load_classifier
from dmdlib.evaluation.monitor import DistillMonitor
from dmdlib.generators.generator import Generator, generate, save_generator
from dmdlib.generators.seeds import GRID_SEED, fixed_inputs
from dmdlib.params import DistillParams, load_params
from dmdlib.teachers.family import TeacherReference
from dmdlib.teachers.reference import check_teacher_fits_data, conditioning, image_decoder, is_latent, read_teacher
from dmdlib.training.distill import DistillInputs, Processes, distill
from dmdlib.training.pairs import PairReader, pair_metadata
from dmdlib.training.regression import decoded_regression, make_regression_loss

log = logging.getLogger("distill")
app = typer.Typer(add_completion=False, help=__doc__)


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    teacher: Path = TEACHER_OPTION,
    pairs: Path = typer.Option(
        Path("data/pairs"), help="Pair shards from the `pairs` stage (unused when lambda_reg is 0)."
    ),
    data: Path = typer.Option(
        Path("data/prepared.parquet"), help="Prepared data: real images for the diversity check and the GAN."
    ),
    classifier: Path | None = typer.Option(
        None,
        help="Feature classifier (`features` stage) for the class shares of the collapse check; without it the "
        "check measures feature diversity only.",
    ),
    out: Path = typer.Option(Path("models/generator"), help="Generator folder (generator.json + safetensors)."),
    samples: Path = typer.Option(
        Path("reports/distill"),
        help="Folder for sample grids (initial.png, final.png, step-N.png) and the training curves (curves.png).",
    ),
    checkpoint: Path = typer.Option(Path("checkpoints/distill.pt"), help="Resumable training checkpoint."),
    live: Path = typer.Option(Path("dvclive/distill"), help="dvclive folder for losses and diversity curves."),
    prompts: Path = PROMPTS_OPTION,
) -> None:
    """Distil the teacher into a one-step generator; write it with sample grids and training curves."""
    setup_logging()
    with user_errors():
        config = (all_params := load_params(params, "distill", "pairs")).distill
        check_writable(out, samples, checkpoint, live)
        if config.processes > 1 and "LOCAL_RANK" not in os.environ:
            raise typer.Exit(_launch(config.processes))
        accelerator, processes = _processes(config)
        with single_writer(checkpoint, processes.rank):  # a second run on this checkpoint would overwrite this one's
            teacher_denoiser, reference = read_teacher(teacher)
            check_teacher_fits_data(teacher_denoiser, reference, teacher, data)
            # The real denoiser guides with the pairs' scale (paper: the same cfg for pairs and DM); fake and G never
            # do.
            real_denoiser, conditions, texts = conditioning(
                teacher_denoiser, reference, all_params.pairs.guidance, prompts, config.guidance_range
            )
            expected_pairs = pair_metadata(teacher_denoiser, all_params.pairs, texts)
            inputs = DistillInputs(
                PairReader(pairs, expected_pairs) if config.reads_pairs else None,
                _regression_loss(config, reference, accelerator.device) if config.reads_pairs else None,
                real_denoiser,
                conditions,
                _real_images(data, reference) if config.gan_generator_weight > 0 else None,
                all_params.pairs.guidance,
            )
            settings = _settings(config, expected_pairs, inputs, data)
            resumed_step, monitor = _resumed_step(checkpoint, settings, config.steps, accelerator), None
            save_samples = _grid_writer(
                samples,
                teacher_denoiser,
                conditions,
                image_decoder(reference, config.preview_vae),
                fresh=not resumed_step and accelerator.is_main_process,
            )
            if accelerator.is_main_process:
                diversity = (
                    {} if is_latent(reference) else _diversity_inputs(data, classifier, teacher_denoiser, conditions)
                )
                curves = open_live(live, resumed_step, samples / "curves.png", all_params.tracker)
                monitor = _monitor(curves, config, teacher_denoiser, save_samples, diversity)
            generator, _ = distill(
                teacher_denoiser, config, checkpoint, inputs, settings=settings, processes=processes, on_step=monitor
            )
            if accelerator.is_main_process:
                save_samples("final.png", generator)
                save_generator(out, generator, reference, expected_pairs["teacher"])
                monitor.live.end()
                log.info("wrote %s; sample grids in %s (initial.png vs final.png, same noise)", out, samples)
            accelerator.wait_for_everyone()


def _settings(config: DistillParams, expected_pairs: dict, inputs: DistillInputs, data: Path) -> dict:
    """What the run learns from, as its checkpoint records it: the distill params but their run length, the teacher
    and pair settings, the pair set, the GAN's real images, and the code."""
    if inputs.pairs is None:  # the pairs' own settings (sampler, steps, dtype) do not touch a run that reads none
        expected_pairs = {key: expected_pairs[key] for key in ("teacher", "guidance", "conditions")}
    settings = {
        "distill": config.model_dump(mode="json", exclude=set(config.run_keys)),
        "pairs": expected_pairs,
        "code": code_of(__spec__.name),
    }
    if inputs.pairs is not None:
        settings["pair_set"] = inputs.pairs.description()
    if inputs.real_images is not None:
        settings["real_images"] = file_digest(data)
    return settings


def _monitor(curves, config: DistillParams, teacher: Denoiser, save_samples, diversity: dict) -> DistillMonitor:
    """The monitor over the training curves, with the start's grid and diversity measured: where the generator
    starts is the teacher at its first sigma."""
    monitor = DistillMonitor(curves, config.sample_every, config.steps, save_samples, **diversity)
    initial = Generator.from_teacher(teacher, (config.generator_sigmas or [])[:1])
    save_samples("initial.png", initial)
    monitor.measure_start(initial)
    return monitor


def _resumed_step(checkpoint: Path, settings: dict, steps: int, accelerator) -> int:
    """The main process claims the checkpoint for these settings (`claim_checkpoint`); then each reads the step it
    resumes from (0: a fresh run)."""
    if accelerator.is_main_process:
        claim_checkpoint(checkpoint, settings, steps, "distill.steps")
    accelerator.wait_for_everyone()
    return resumable_step(checkpoint, fingerprint(settings))


def _launch(processes: int) -> int:
    """This very command again as `processes` data-parallel processes on this machine (torchrun picks a free port);
    their exit code."""
    log.info(
        "launching %d processes: torchrun --standalone --nproc_per_node %d -m %s", processes, processes, __spec__.name
    )
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(processes)]
    return subprocess.run([*command, "-m", __spec__.name, *sys.argv[1:]]).returncode


def _processes(config: DistillParams):
    """accelerate's Accelerator (bf16 autocast if asked) and the Processes view of it that `distill` takes."""
    from accelerate import Accelerator

    accelerator = Accelerator(
        mixed_precision="no" if config.mixed_precision == "fp32" else config.mixed_precision,
        cpu=not torch.cuda.is_available(),
    )
    return accelerator, Processes(
        accelerator.process_index, accelerator.num_processes, accelerator.device, accelerator.autocast
    )


def _grid_writer(folder: Path, teacher: Denoiser, conditions, decoder, fresh: bool) -> Callable[[str, Generator], None]:
    """save(name, generator): a PNG grid of the generator's samples from the same fixed noise and conditions every time.
    A fresh (not resumed) run owns the folder: the grids of an earlier run go, so none is mistaken for this run's."""
    columns = min(conditions.count, 10) if conditions is not None else 8
    noise, cond = fixed_inputs(teacher.sample_shape, conditions, 8 * columns)
    claim_folder(folder, clear=fresh)

    def save(name: str, generator: Generator) -> None:
        images = generate(generator, noise, cond)
        save_grid(folder / name, to_uint8(decoder(images).cpu() if decoder is not None else images), columns, scale=4)

    return save


def _regression_loss(config: DistillParams, reference: TeacherReference, device: torch.device):
    """The configured regression loss on `device`, on decoded images when asked for a latent teacher."""
    regression = make_regression_loss(config.regression_loss, config.lpips_net, config.lpips_fallback)
    if hasattr(regression, "to"):
        regression = regression.to(device)
    decoder = image_decoder(reference) if config.regression_space == "decoded" else None
    if decoder is not None:
        regression = decoded_regression(regression, decoder.to(device))
    return regression


def _real_images(data: Path, reference: TeacherReference) -> PreparedImageReader:
    """The training split, read from disk as drawn, with class labels as cond when the data has them: the GAN's
    positives."""
    if is_latent(reference):
        raise ParamsError(
            "distill.gan_generator_weight: the GAN head needs real images in the teacher's space; latent "
            "teachers are not supported yet"
        )
    return PreparedImageReader(data, TRAIN)


def _diversity_inputs(data: Path, classifier: Path | None, teacher: Denoiser, conditions) -> dict:
    """Real images, the feature classifier and the data's class shares, for DistillMonitor's collapse check."""
    dataset = read_image_parquet(data)
    train, frames = dataset.subset(TRAIN), dataset.frames  # video data: checked frame by frame
    labelled = bool(dataset.class_names)
    check_noise, check_cond = fixed_inputs(teacher.sample_shape, conditions, 500, GRID_SEED + 10_000)
    shares = torch.bincount(torch.from_numpy(dataset.labels[train])).double() if labelled else None
    real = to_model_range(dataset.images[train[stratified_subset(dataset.labels[train], 500)]])
    return {
        "diversity_samples": lambda generator: frames_of(generate(generator, check_noise, check_cond), frames),
        "real_images": frames_of(real, frames),
        "classifier": load_classifier(classifier) if labelled and classifier is not None else None,
        "data_shares": shares / shares.sum() if labelled else None,
    }


if __name__ == "__main__":
    app()
