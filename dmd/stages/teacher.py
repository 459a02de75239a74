"""`teacher` stage: train the default teacher on the prepared data, or import a real one from a local path."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import torch
import typer

from dmd.stages.common import PARAMS_OPTION, code_of, compute_device, open_live, setup_logging, user_errors
from dmdlib.data.checkpoints import claim_checkpoint, fingerprint
from dmdlib.data.images import GRID_CLASSES, save_grid, to_model_range, to_uint8
from dmdlib.data.io import atomic_output, check_writable, claim_folder, single_writer
from dmdlib.data.prepared import TRAIN, read_image_parquet
from dmdlib.denoisers.sampling import heun_sample
from dmdlib.errors import ParamsError
from dmdlib.evaluation.curves import plot_curves
from dmdlib.params import load_params
from dmdlib.teachers.families import family_of, load_teacher
from dmdlib.teachers.family import TeacherReference
from dmdlib.teachers.loading import (
    EDM_CONFIG_FILE,
    EDM_WEIGHTS_FILE,
    build_kdiffusion,
    check_takes_its_shape,
    convert_edm_snapshot,
    kdiffusion_config,
    save_kdiffusion,
    source_digest,
)
from dmdlib.teachers.reference import REFERENCE_FILE, check_teacher_fits_data, image_decoder, read_teacher
from dmdlib.teachers.training import train_teacher

log = logging.getLogger("teacher")
app = typer.Typer(add_completion=False, help=__doc__)
WEIGHTS_FILE = "model.safetensors"


@app.command()
def main(
    params: Path = PARAMS_OPTION,
    data: Path = typer.Option(
        Path("data/prepared.parquet"), help="Prepared data (kind 'train' trains on its train split)."
    ),
    out: Path = typer.Option(
        Path("models/teacher"), help=f"Teacher folder: {REFERENCE_FILE} (+ weights when trained)."
    ),
    samples: Path = typer.Option(
        Path("reports/teacher_samples.png"), help="PNG grid of Heun samples (image teachers)."
    ),
    checkpoint: Path = typer.Option(Path("checkpoints/teacher.pt"), help="Resumable training checkpoint."),
    live: Path = typer.Option(Path("dvclive/teacher"), help="dvclive folder for the training loss curve."),
    curves: Path = typer.Option(Path("reports/teacher_curves.png"), help="PNG of the training loss curve."),
) -> None:
    """Write the teacher reference every later stage loads, training the default teacher if asked."""
    setup_logging()
    with user_errors():
        config = (all_params := load_params(params, "teacher")).teacher
        check_writable(out, samples, checkpoint, live, curves)
        if config.kind == "train":
            _train(config.train, data, out, checkpoint, live, curves, all_params.tracker)
        else:  # an imported teacher was trained elsewhere: its curves (the stage's outputs all the same) say so
            claim_folder(live, clear=True)
            plot_curves({}, curves, f"teacher: imported ({config.kind}), trained elsewhere: no training curves here")
        family = None if config.kind == "train" else family_of(config.kind)
        if family is not None and family.snapshot:
            _convert_snapshot(config, out, _digest_cache(checkpoint), data)
        elif family is not None:
            reference = TeacherReference(
                kind=config.kind,
                path=_absolute(config.path),
                config=_absolute(config.config),
                **{option: getattr(config, option) for option in family.options},
            )
            denoiser = load_teacher(reference)  # fail now, with the loader's message, rather than in a later stage
            if not family.text:
                check_takes_its_shape(
                    denoiser,
                    config.path,
                    "set teacher.resolution to a size it takes"
                    if "resolution" in family.options
                    else "it is the network's own sample size: its config is wrong",
                )
            if data.is_file():  # here, not after `pairs` has done the teacher's ODE work
                check_teacher_fits_data(denoiser, reference, Path(config.path), data)
            # the files' digest: a teacher replaced at the same path changes this output, so every later stage re-runs
            reference = reference.model_copy(
                update={"source": source_digest(config.files(), _digest_cache(checkpoint))}
            )
            with atomic_output(out) as tmp:
                tmp.mkdir()
                (tmp / REFERENCE_FILE).write_text(json.dumps(reference.as_json(), indent=2))
        teacher, reference = read_teacher(out)
        _write_samples(teacher, reference, config.train.sample_steps, samples)


def _digest_cache(checkpoint: Path) -> Path:
    """Where the imported teacher's file digests are kept between runs (by size, time and inode), beside the
    checkpoint."""
    return checkpoint.with_name("source_files.json")


def _convert_snapshot(config, out: Path, digest_cache: Path, data: Path) -> None:
    """An NVlabs snapshot converted once into network.safetensors + network.json: no later stage opens the pickle;
    one that does not fit the prepared data is not written."""
    with atomic_output(out) as tmp:
        tmp.mkdir()
        encoder = convert_edm_snapshot(
            Path(config.path).expanduser(), config.kind, tmp / EDM_WEIGHTS_FILE, tmp / EDM_CONFIG_FILE
        )
        if encoder is not None and not config.vae:
            raise ParamsError(
                f"{config.path}: a latent EDM2 snapshot (encoder {encoder['class_name']}, VAE "
                f"{encoder['vae_name']}); set teacher.vae to a local diffusers AutoencoderKL folder of that VAE"
            )
        reference = TeacherReference(
            kind=config.kind,
            path=EDM_WEIGHTS_FILE,
            config=EDM_CONFIG_FILE,
            vae=_absolute(config.vae) if encoder is not None else None,
            encoder=encoder,
            source=source_digest(config.files(), digest_cache),
        )
        (tmp / REFERENCE_FILE).write_text(json.dumps(reference.as_json(), indent=2))
        if data.is_file():
            check_teacher_fits_data(*read_teacher(tmp), Path(config.path), data)
    log.info("converted %s (%s) into %s", config.path, config.kind, out)


def _absolute(path: str | None) -> str | None:
    return None if path is None else str(Path(path).expanduser().resolve())


def _train(
    train, data_path: Path, out: Path, checkpoint: Path, live_dir: Path, curves: Path, tracker: str | None
) -> None:
    """Train the default teacher and write its EMA weights and reference to `out`, its loss curve to `curves`."""
    data = read_image_parquet(data_path)
    train_index = data.subset(TRAIN)
    images = to_model_range(data.images[train_index])
    labelled = bool(data.class_names) and train.class_conditional
    labels = torch.from_numpy(data.labels[train_index]) if labelled else None
    model_config = kdiffusion_config(
        data.channels,
        data.resolution,
        train.channels,
        train.depths,
        train.mapping_width,
        len(data.class_names) if labelled else 0,
        train.sigma_data,
        train.sigma_min,
        train.sigma_max,
        train.label_dropout if labelled else 0.0,
    )
    torch.manual_seed(train.seed)  # the initial weights: without it two runs of the same params differ
    device = compute_device()
    denoiser = build_kdiffusion(model_config)
    levels = len(train.channels)
    check_takes_its_shape(
        denoiser,
        "teacher.train",
        f"prepare.resolution {data.resolution}: use a multiple of "
        f"{2 ** (levels - 1)} for its {levels} levels (teacher.train.channels)",
    )
    denoiser = denoiser.to(device)
    log.info(
        "teacher: k-diffusion image_v1, %.2fM parameters, %s, %d steps at batch %d on %s",
        sum(p.numel() for p in denoiser.parameters()) / 1e6,
        f"{len(data.class_names)} classes" if labelled else "unconditional",
        train.steps,
        train.batch_size,
        device,
    )
    # what the teacher learns from: its params but the run length, its network, the very images of the train split,
    # and the code
    split = hashlib.sha256(data.images[train_index].tobytes() + data.labels[train_index].tobytes()).hexdigest()
    settings = {
        "train": train.model_dump(mode="json", exclude=set(train.run_keys)),
        "model": model_config,
        "train_split": split,
        "code": code_of(__spec__.name),
    }
    trained = {"fingerprint": fingerprint(settings), "steps": train.steps}
    if _recorded(out).get("trained") == trained:  # e.g. a fresh clone's restored output, with no checkpoint
        log.info("%s already holds the teacher of these settings at %d steps: not trained again", out, train.steps)
        return
    with single_writer(checkpoint):  # a second run on this checkpoint would overwrite this one's
        resumed_step = claim_checkpoint(checkpoint, settings, train.steps, "teacher.train.steps")
        with open_live(live_dir, resumed_step, curves, tracker) as live:

            def log_loss(step: int, loss: float) -> None:
                if step % 10 == 0:
                    live.step = step
                    live.log_metric("loss", loss)

            ema = train_teacher(denoiser, images, labels, train, checkpoint, settings, on_step=log_loss)
        reference = TeacherReference(kind="kdiffusion", path=WEIGHTS_FILE, config=None, trained=trained)
        with atomic_output(out) as tmp:
            tmp.mkdir()
            save_kdiffusion(tmp / WEIGHTS_FILE, ema, model_config)
            (tmp / REFERENCE_FILE).write_text(json.dumps(reference.as_json(), indent=2))


def _recorded(out: Path) -> dict:
    """The teacher reference `out` holds, or {} when there is none to read."""
    try:
        return json.loads((out / REFERENCE_FILE).read_text())
    except (OSError, ValueError):
        return {}


def _write_samples(teacher, reference: TeacherReference, steps: int, path: Path) -> None:
    if family_of(reference.kind).text:
        log.info(
            "no sample grid for a %s teacher (text-conditioned: the evaluate stage shows its samples)", reference.kind
        )
        return
    decoder = image_decoder(reference)
    shape, classes, device = teacher.sample_shape, min(teacher.num_classes, GRID_CLASSES), compute_device()
    generator = torch.Generator().manual_seed(0)
    count = 8 * max(classes, 1)
    noise = torch.randn((count, *shape), generator=generator).to(device)
    cond = torch.arange(classes, device=device).repeat_interleave(8) if classes else None
    images = heun_sample(teacher.to(device), noise, steps=steps, cond=cond)
    images = (images if decoder is None else decoder.to(device)(images)).cpu()
    save_grid(path, to_uint8(images), columns=8, scale=4)  # one row per class (the first GRID_CLASSES)
    log.info("wrote %s: %d Heun-%d samples (%d network evaluations each)", path, count, steps, 2 * steps - 1)


if __name__ == "__main__":
    app()
