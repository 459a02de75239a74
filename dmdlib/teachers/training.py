"""Train an EDM-preconditioned teacher with the EDM loss, an EMA of its weights, and resumable checkpoints."""

from __future__ import annotations

import copy
import logging
import math
import os
from collections.abc import Callable
from pathlib import Path

import torch
from tqdm.auto import tqdm

from dmdlib.data.checkpoints import CORRUPT_CHECKPOINT, checkpoint_identity
from dmdlib.data.io import atomic_output, load_tensors
from dmdlib.denoisers import KarrasDenoiser
from dmdlib.denoisers.base import denoising_loss
from dmdlib.errors import DataError, DivergedError
from dmdlib.networks.ema import ema_update
from dmdlib.params import TeacherTrainParams
from dmdlib.teachers.loading import UNCOND_CLASS

log = logging.getLogger(__name__)

StepCallback = Callable[[int, float], None]


def sample_training_sigmas(count: int, params: TeacherTrainParams, rng: torch.Generator) -> torch.Tensor:
    """EDM's log-normal sigmas, with a share drawn log-uniform on [1, sigma_max] so the generator's sigma is trained."""
    log_normal = params.sigma_mean + params.sigma_std * torch.randn(count, generator=rng)
    log_uniform = torch.rand(count, generator=rng) * math.log(params.sigma_max)
    high = torch.rand(count, generator=rng) < params.high_sigma_share
    return torch.where(high, log_uniform, log_normal).exp().clamp(params.sigma_min, params.sigma_max)


def _save_checkpoint(
    path: Path, step: int, model, ema, optimizer, rng: torch.Generator, identity: dict[str, str]
) -> None:
    state = {
        "step": step,
        **identity,
        "rng": rng.get_state(),
        "model": model.state_dict(),
        "ema": ema.state_dict(),
        "optimizer": optimizer.state_dict(),
    }
    with atomic_output(path) as tmp, open(tmp, "wb") as handle:  # a Python file: a failed write is an OSError
        torch.save(state, handle)


def train_teacher(
    denoiser: KarrasDenoiser,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    params: TeacherTrainParams,
    checkpoint: str | os.PathLike,
    settings: dict | None = None,
    on_step: StepCallback | None = None,
) -> KarrasDenoiser:
    """Train `denoiser` on `images` ([-1, 1], NCHW) and return the EMA copy, on the denoiser's device.

    Resumes from `checkpoint` when it exists and was made with the same `settings` (params and data:
    `dmdlib.data.io.claim_checkpoint`); the data order, noise and sigmas come from one seeded generator whose state
    is checkpointed, so a resumed run repeats the uninterrupted one.
    """
    checkpoint = Path(checkpoint)
    device = next(denoiser.parameters()).device
    images = images.to(device)
    labels = None if labels is None else labels.to(device)
    # The random stream stays on the CPU, so a GPU run draws the same batches, sigmas and noise as a CPU run.
    rng = torch.Generator().manual_seed(params.seed)
    ema = copy.deepcopy(denoiser).requires_grad_(False)
    optimizer = torch.optim.AdamW(denoiser.parameters(), lr=params.lr, weight_decay=params.weight_decay)
    start, identity = 0, checkpoint_identity(settings or {}, params.steps)
    if checkpoint.is_file():
        state = load_tensors(checkpoint, DataError, CORRUPT_CHECKPOINT)
        if state.get("fingerprint") == identity["fingerprint"]:
            denoiser.load_state_dict(state["model"])
            ema.load_state_dict(state["ema"])
            optimizer.load_state_dict(state["optimizer"])
            rng.set_state(state["rng"])
            start = state["step"]
            log.info("resuming teacher training from %s at step %d", checkpoint, start)
        else:
            log.info("ignoring checkpoint %s: it was made with other params or data", checkpoint)

    denoiser.train()
    progress = tqdm(
        range(start, params.steps), initial=start, total=params.steps, desc="teacher", unit="step", mininterval=1.0
    )
    for step in progress:
        for group in optimizer.param_groups:
            group["lr"] = params.lr * min(1.0, (step + 1) / max(1, params.warmup_steps))
        index = torch.randint(0, len(images), (params.batch_size,), generator=rng).to(device)
        sigma = sample_training_sigmas(params.batch_size, params, rng).to(device)
        noise = torch.randn((params.batch_size, *images.shape[1:]), generator=rng).to(device)
        cond = None if labels is None else labels[index]
        if cond is not None and params.label_dropout > 0:  # teaches UNCOND_CLASS, for classifier-free guidance
            dropped = torch.rand(len(cond), generator=rng).to(device) < params.label_dropout
            cond = torch.where(dropped, UNCOND_CLASS, cond)
        loss = denoising_loss(denoiser, images[index], sigma, noise, cond)
        if not torch.isfinite(loss):
            raise DivergedError(f"teacher loss is {loss.item()} at step {step + 1}; lower teacher.train.lr")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        ema_update(denoiser, ema, min(params.ema_decay, (step + 1) / (step + 10)))
        done = step + 1
        progress.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
        if done % params.checkpoint_every == 0 or done == params.steps:
            _save_checkpoint(checkpoint, done, denoiser, ema, optimizer, rng, identity)
        if on_step is not None:
            on_step(done, loss.item())
    return ema.eval()
