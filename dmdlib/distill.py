"""The DMD training loop: checkpointed, resumable, data-parallel across processes (paper Algorithm 1)."""

from __future__ import annotations

import contextlib
import copy
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from k_diffusion.utils import ema_update
from tqdm.auto import tqdm

from dmdlib.denoisers import Denoiser, GuidedDenoiser, ScaleConditionedDenoiser, denoise_capturing, trainable_copy
from dmdlib.dmd import GAN, Pairs, RealBatch, RegressionLoss, fake_denoiser_step, generator_step
from dmdlib.gan import GANHead
from dmdlib.generator import Generator
from dmdlib.io import atomic_output
from dmdlib.pairs import PairDataset
from dmdlib.params import DistillParams

log = logging.getLogger(__name__)

StepCallback = Callable[[int, dict[str, float], Generator], None]  # (step, losses, generator or EMA)


@dataclass
class Processes:
    """Where this process runs and how it talks to the others (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    autocast: Callable[[], contextlib.AbstractContextManager] = contextlib.nullcontext  # e.g. accelerate's, for bf16

    def average_gradients(self, module: torch.nn.Module) -> None:
        """Mean of each gradient over processes, so every process takes the same optimizer step."""
        if self.world_size == 1:
            return
        for parameter in module.parameters():
            if parameter.grad is not None:
                torch.distributed.all_reduce(parameter.grad)
                parameter.grad /= self.world_size


@dataclass
class Conditions:
    """What `cond` can be: `count` conditions (classes, or training prompts), `lookup` turns ids into `cond`."""

    count: int
    lookup: Callable[[torch.Tensor], torch.Tensor] = lambda ids: ids  # class labels are their own cond

    @classmethod
    def of(cls, denoiser: Denoiser) -> "Conditions | None":
        """The class labels of a class-conditional teacher, else None (unconditional)."""
        return cls(denoiser.num_classes) if denoiser.num_classes else None


def step_rng(seed: int, rank: int, step: int) -> torch.Generator:
    """The random stream of one step on one process: a function of (seed, rank, step), so resuming repeats it."""
    return torch.Generator().manual_seed((seed * 1_000_003 + rank) * 10_000_019 + step)


def bounded_fractions(
    grid: torch.Tensor, fractions: tuple[float, float], key: str, sigma_min: float | None = None, sigma_max: float | None = None
) -> tuple[float, float]:
    """A grid range (fractions of an ascending sigma grid) kept within [sigma_min, sigma_max] where given."""
    low, high = fractions
    if sigma_min is not None:
        low = max(low, int(torch.searchsorted(grid, torch.tensor(sigma_min))) / len(grid))
    if sigma_max is not None:
        high = min(high, int(torch.searchsorted(grid, torch.tensor(sigma_max), right=True)) / len(grid))
    if high <= low:
        raise ValueError(f"distill.{key} leaves no noise level of the grid ({float(grid[0]):.3g} to {float(grid[-1]):.3g}) "
                         f"between the {low:.0%} and {high:.0%} points")
    return low, high


def dm_sigma_fractions(grid: torch.Tensor, params: DistillParams) -> tuple[float, float]:
    """The grid range for DM noise levels: params' fractions, capped at dm_sigma_max when given."""
    return bounded_fractions(grid, params.dm_sigma_fractions, "dm_sigma_max", sigma_max=params.dm_sigma_max)


def distill(
    teacher: Denoiser,
    pairs: PairDataset | None,
    regression_loss: RegressionLoss | None,
    params: DistillParams,
    checkpoint: str | os.PathLike,
    fingerprint: str = "",
    processes: Processes | None = None,
    on_step: StepCallback | None = None,
    real_denoiser: Denoiser | None = None,
    conditions: Conditions | None = None,
    real_images: RealBatch | None = None,
    pair_guidance: float = 1.0,
) -> tuple[Generator, Denoiser]:
    """Train a generator from `teacher`; return (generator or its EMA, fake denoiser).

    Generator and fake denoiser start as copies of the (unguided) teacher; the real denoiser is the
    teacher itself unless given (e.g. with classifier-free guidance: a `GuidedDenoiser`, needed for
    params.guidance_range). `conditions` says how to draw `cond` (default: the teacher's classes).
    `real_images` (all of them, with class labels as cond) feed the GAN head; `pair_guidance` is the
    scale the pairs were made with. Resumes from `checkpoint` when its fingerprint matches.
    A non-finite loss stops the run, keeping the last good checkpoint.
    """
    processes = processes or Processes()
    device, checkpoint = processes.device, Path(checkpoint)
    teacher = teacher.to(device)
    real_denoiser = (real_denoiser or teacher).to(device)
    conditions = conditions or Conditions.of(teacher)
    if params.guidance_range is not None and not isinstance(real_denoiser, GuidedDenoiser):
        raise ValueError("distill.guidance_range needs a teacher that serves classifier-free guidance "
                         "(the default teacher: teacher.train.label_dropout > 0)")
    torch.manual_seed(params.seed)  # initial weights of the guidance embeddings and the GAN head
    generator = Generator.from_teacher(teacher, params.generator_sigmas, params.guidance_range).to(device)
    if generator.sigma > teacher.sigma_max:
        raise ValueError(f"distill.generator_sigmas starts at {generator.sigma}, above the teacher's sigma_max {teacher.sigma_max}")
    fake_denoiser = trainable_copy(teacher)
    if params.guidance_range is not None:  # D_fake must model G's distribution at each scale, not their mixture
        fake_denoiser = ScaleConditionedDenoiser(fake_denoiser, *params.guidance_range)
    gan = None
    if params.gan_generator_weight > 0:
        if real_images is None:
            raise ValueError("distill.gan_generator_weight > 0 needs real images (the prepared data) for the GAN head")
        gan_fractions = bounded_fractions(fake_denoiser.sigma_grid(), (0.0, 1.0), "gan_sigma_min/gan_sigma_max",
                                          params.gan_sigma_min, params.gan_sigma_max)
        if params.gan_class_projection and not teacher.num_classes:
            raise ValueError("distill.gan_class_projection needs a class-conditional teacher (class labels to project)")
        head_classes = teacher.num_classes if params.gan_class_projection else 0
        head = make_gan_head(fake_denoiser, conditions, device, head_classes)
        gan = GAN(head, params.gan_generator_weight, params.gan_head_weight, gan_fractions, params.gan_head_detached)
    if params.gradient_checkpointing:
        for network in (generator.denoiser, fake_denoiser):
            unet = getattr(network, "unet", None)
            if unet is None or not hasattr(unet, "enable_gradient_checkpointing"):
                raise ValueError("distill.gradient_checkpointing needs a diffusers teacher (a UNet with enable_gradient_checkpointing)")
            unet.enable_gradient_checkpointing()
    ema = copy.deepcopy(generator).requires_grad_(False) if params.ema_decay is not None else None
    generator_groups = [{"params": list(generator.parameters()), "base_lr": params.generator_lr}]  # base_lr: before warm-up
    generator_optimizer = torch.optim.AdamW(generator_groups, params.generator_lr, params.betas, weight_decay=params.weight_decay)
    fake_groups = [{"params": list(fake_denoiser.parameters()), "base_lr": params.fake_lr}]
    if gan is not None:
        fake_groups.append({"params": list(gan.head.parameters()), "base_lr": params.gan_head_lr or params.fake_lr})
    fake_optimizer = torch.optim.AdamW(fake_groups, params.fake_lr, params.betas, weight_decay=params.weight_decay)
    start = _resume(checkpoint, fingerprint, generator, fake_denoiser, ema, generator_optimizer, fake_optimizer, gan)
    fractions = dm_sigma_fractions(real_denoiser.sigma_grid(), params)
    use_pairs = pairs is not None and params.lambda_reg > 0
    shape = teacher.sample_shape

    progress = tqdm(range(start, params.steps), initial=start, total=params.steps, desc="distill", unit="step",
                    disable=processes.rank != 0, mininterval=1.0)
    for step in progress:
        rng = step_rng(params.seed, processes.rank, step)
        for optimizer in (generator_optimizer, fake_optimizer):
            for group in optimizer.param_groups:
                group["lr"] = group["base_lr"] * min(1.0, (step + 1) / max(1, params.warmup_steps))
        z = torch.randn((params.batch_size, *shape), generator=rng).to(device)
        cond = None
        if conditions is not None:
            cond = conditions.lookup(torch.randint(0, conditions.count, (params.batch_size,), generator=rng)).to(device)
        # Draws below happen only when their option is on, so the default's random stream is unchanged.
        step_index = int(torch.randint(0, len(generator.sigmas), (), generator=rng)) if len(generator.sigmas) > 1 else 0
        scale = None
        if params.guidance_range is not None:
            low, high = params.guidance_range
            scale = (low + (high - low) * torch.rand(params.batch_size, generator=rng)).to(device)
            real_denoiser.scale = fake_denoiser.scale = scale
        batch = None
        if use_pairs:
            index = torch.randint(0, len(pairs), (params.reg_batch_size,), generator=rng)
            pair_cond = conditions.lookup(pairs.labels[index]).to(device) if conditions is not None else None
            pair_scale = torch.full((len(index),), pair_guidance, device=device) if scale is not None else None
            batch = Pairs(pairs.noise[index].to(device), pairs.target[index].to(device), pair_cond, pair_scale)
        warming_up = use_pairs and step < params.regression_warmup_steps  # regression alone first, if any
        dm_weight = 0.0 if warming_up else params.dm_weight
        generator_gan = None if warming_up or step < params.gan_start_step else gan
        with processes.autocast():
            result = generator_step(
                generator, real_denoiser, fake_denoiser, generator_optimizer, z, cond, batch, regression_loss,
                params.lambda_reg if use_pairs else 0.0, dm_weight, fractions, rng, params.max_grad_norm,
                processes.average_gradients, step_index, scale, generator_gan,
            )
        metrics = {"loss_dm": result.loss_dm, "loss_reg": result.loss_reg, "dm_grad_norm": result.grad_norm_dm}
        if gan is not None:
            metrics["loss_gan_generator"] = result.loss_gan
        if params.dm_weight > 0 or gan is not None:
            fake_losses, head_losses = [], []
            for _ in range(params.fake_steps):
                real = None
                if gan is not None:
                    index = torch.randint(0, len(real_images.images), (params.batch_size,), generator=rng)
                    real_cond = real_images.cond[index].to(device) if real_images.cond is not None else None
                    real = RealBatch(real_images.images[index].to(device), real_cond)
                with processes.autocast():
                    fake_loss, head_loss = fake_denoiser_step(fake_denoiser, fake_optimizer, result.x, cond, rng,
                                                              params.max_grad_norm, processes.average_gradients, gan, real)
                fake_losses.append(fake_loss)
                head_losses.append(head_loss)
            metrics["loss_fake"] = sum(fake_losses) / len(fake_losses)
            if gan is not None:
                metrics["loss_gan_head"] = sum(head_losses) / len(head_losses)
        for name, value in metrics.items():
            if not torch.isfinite(torch.tensor(value)):
                kept = f"step {step // params.checkpoint_every * params.checkpoint_every}" if checkpoint.exists() else "none"
                raise FloatingPointError(
                    f"distill: {name} is {value} at step {step + 1}; stopped (last good checkpoint: {kept}). "
                    "Lower distill.generator_lr / fake_lr or raise distill.regression_warmup_steps."
                )
        if ema is not None:
            ema_update(generator, ema, params.ema_decay)
        done = step + 1
        progress.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()}, refresh=False)
        if processes.rank == 0 and (done % params.checkpoint_every == 0 or done == params.steps):
            _save(checkpoint, done, fingerprint, generator, fake_denoiser, ema, generator_optimizer, fake_optimizer, gan)
        if on_step is not None:
            on_step(done, metrics, ema if ema is not None else generator)
    final = ema if ema is not None else generator
    return final.eval().requires_grad_(False), fake_denoiser.eval()


def make_gan_head(fake_denoiser: Denoiser, conditions: Conditions | None, device, num_classes: int = 0) -> GANHead:
    """A GAN head sized to the fake denoiser's bottleneck (found by one forward); num_classes > 0: class projection."""
    x = torch.zeros((1, *fake_denoiser.sample_shape), device=device)
    cond = conditions.lookup(torch.zeros(1, dtype=torch.long)).to(device) if conditions is not None else None
    with torch.no_grad():
        _, features = denoise_capturing(fake_denoiser, fake_denoiser.bottleneck(), x, fake_denoiser.sigma_max, cond)
    return GANHead(features.shape[1], num_classes=num_classes).to(device)


def _save(path: Path, step, fingerprint, generator, fake_denoiser, ema, generator_optimizer, fake_optimizer, gan) -> None:
    state = {
        "step": step, "fingerprint": fingerprint, "generator": generator.state_dict(),
        "fake_denoiser": fake_denoiser.state_dict(), "generator_optimizer": generator_optimizer.state_dict(),
        "fake_optimizer": fake_optimizer.state_dict(), "ema": ema.state_dict() if ema is not None else {},
        "gan_head": gan.head.state_dict() if gan is not None else {},
    }
    with atomic_output(path) as tmp:
        torch.save(state, tmp)


def _resume(path: Path, fingerprint, generator, fake_denoiser, ema, generator_optimizer, fake_optimizer, gan) -> int:
    if not path.is_file():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("fingerprint") != fingerprint:
        log.info("ignoring checkpoint %s: it was made with other params, teacher or pairs", path)
        return 0
    generator.load_state_dict(state["generator"])
    fake_denoiser.load_state_dict(state["fake_denoiser"])
    generator_optimizer.load_state_dict(state["generator_optimizer"])
    fake_optimizer.load_state_dict(state["fake_optimizer"])
    if ema is not None:
        ema.load_state_dict(state["ema"])
    if gan is not None:
        gan.head.load_state_dict(state["gan_head"])
    log.info("resuming distillation from %s at step %d", path, state["step"])
    return int(state["step"])
