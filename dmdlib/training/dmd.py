"""One iteration as two plain functions (paper Algorithm 1): a generator step on any objective's terms, then a
fake-score step."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dmdlib.denoisers.base import Denoiser, denoising_loss, expand, weighted_denoising_error
from dmdlib.generators.draws import Draws, as_draws
from dmdlib.generators.generator import Generator
from dmdlib.training.gan import GANHead, denoise_with_logits, head_gan_loss
from dmdlib.training.losses import sample_sigmas
from dmdlib.training.objectives.terms import Term, TermInputs


@dataclass
class Pairs:
    """A batch of regression pairs: noise z, the teacher's ODE output y from z, and conditioning."""

    noise: torch.Tensor
    target: torch.Tensor
    cond: torch.Tensor | None = None
    scale: torch.Tensor | None = None  # the guidance scale the pairs were made with, for a guidance-conditioned G


@dataclass
class RealBatch:
    """Real images (and their conditioning) in memory: the GAN head's positives. Anything with `len` and
    `batch(index) -> (images, cond)` serves as well (e.g. `dmdlib.data.prepared.PreparedImageReader`, from disk)."""

    images: torch.Tensor
    cond: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.images)

    def batch(self, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        return self.images[index], (self.cond[index] if self.cond is not None else None)


@dataclass
class GAN:
    """DMD2's GAN term: the head on the fake denoiser's bottleneck, the two loss weights, and the real images."""

    head: GANHead
    generator_weight: float
    head_weight: float
    real_images: RealBatch | None = None  # all of them (or a reader): each fake step draws as many as it generated


@dataclass
class GeneratorBatch:
    """The draws of one generator step: noise, its cond, ladder step and guidance scales, and a batch of pairs."""

    z: torch.Tensor
    cond: torch.Tensor | None = None
    step_index: int = 0  # the ladder step the DM samples come from (0: from pure noise)
    scale: torch.Tensor | None = None  # per-sample guidance scales, for a guidance-conditioned generator
    pairs: Pairs | None = None


@dataclass
class Update:
    """One network's optimizer and the paper's update rule around it: clip at max_grad_norm.

    Under DDP or FSDP (`dmdlib.training.parallel`) backward itself leaves the gradients averaged over processes.
    """

    optimizer: torch.optim.Optimizer
    max_grad_norm: float | None = 10.0

    def step(self, module: nn.Module, loss: torch.Tensor) -> None:
        """Backward, clip, step."""
        self.begin()
        self.add(loss)
        self.finish(module)

    def begin(self) -> None:
        """Clear the gradients before a step's first backward."""
        self.optimizer.zero_grad(set_to_none=True)

    def add(self, loss: torch.Tensor, share: float = 1.0) -> None:
        """Backward of one micro-batch's loss, weighted by its share of the step's batch (gradients add up)."""
        (loss * share if share != 1.0 else loss).backward()

    def finish(self, module: nn.Module) -> None:
        """Clip the summed gradients and step."""
        if self.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(module.parameters(), self.max_grad_norm)
        self.optimizer.step()


@dataclass
class GeneratorStepResult:
    x: torch.Tensor  # the generator samples of this step, detached, for the fake-score step
    metrics: dict[str, float]  # `loss_<term>` of every term given, and the other figures they report


def generator_step(
    generator: Generator,
    update: Update,
    batch: GeneratorBatch,
    rng: Draws | torch.Generator | None = None,
    *,
    terms: dict[str, Term],
) -> GeneratorStepResult:
    """Algorithm 1 lines 3-10, for any objective: update G on the weighted sum of `terms` (`objectives`).

    The samples come from ladder step `batch.step_index`, whose input G makes itself without gradients (DMD2's
    backward simulation); the pairs, when a term regresses on them, always start from pure noise. G runs once on
    both together, so a data-parallel wrapper sees one forward.
    """
    loss, result = generator_loss(generator, batch, rng, terms=terms)
    update.step(generator, loss)
    return result


def generator_loss(
    generator: Generator, batch: GeneratorBatch, rng: Draws | torch.Generator | None = None, *, terms: dict[str, Term]
) -> tuple[torch.Tensor, GeneratorStepResult]:
    """The weighted sum of `terms` on one (micro-)batch, to backward, and what `generator_step` returns."""
    uses_pairs = batch.pairs is not None and any(term.uses_pairs for term in terms.values())
    x, x_ref = _generate(generator, batch, rng, use_pairs=uses_pairs)
    inputs = TermInputs(x, batch.cond, x_ref, batch.pairs.target if uses_pairs else None)
    loss, metrics = torch.zeros((), device=x.device), {}
    for name, term in terms.items():
        value, reported = term(inputs, rng)
        loss = loss + term.weight * value
        metrics[f"loss_{name}"] = float(value.detach())
        metrics.update(reported)
    return loss, GeneratorStepResult(x=x.detach(), metrics=metrics)


def _generate(
    generator: Generator, batch: GeneratorBatch, rng, use_pairs: bool
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(samples, regression outputs or None) from one generator forward over both inputs."""
    z, pairs = batch.z, batch.pairs if use_pairs else None
    x_in = generator.noisy_input(z, batch.cond, batch.step_index, batch.scale, rng)
    sigma_in = torch.full((len(z),), generator.sigmas[batch.step_index], device=z.device)
    cond_all, scale_all = batch.cond, batch.scale
    if pairs is not None:
        x_in = torch.cat([x_in, pairs.noise * generator.denoiser.prior_scale(generator.sigma)])
        sigma_in = torch.cat([sigma_in, torch.full((len(pairs.noise),), generator.sigma, device=z.device)])
        cond_all, scale_all = _cat_cond(batch.cond, pairs.cond), _cat_cond(batch.scale, pairs.scale)
    x_all = generator.denoise(x_in, sigma_in, cond_all, scale_all)
    return x_all[: len(z)], (x_all[len(z) :] if pairs is not None else None)


def _cat_cond(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if (a is None) != (b is None):
        raise ValueError(
            "the DM batch and the pairs must both have conditioning (and guidance scales) or both have none"
        )
    return None if a is None else torch.cat([a, b])


def fake_denoiser_step(
    fake_denoiser: Denoiser,
    update: Update,
    x: torch.Tensor,
    cond: torch.Tensor | None,
    rng: Draws | torch.Generator | None = None,
    *,
    gan: GAN | None = None,
) -> tuple[float, float]:
    """Algorithm 1 lines 11-14: denoising loss of the fake denoiser on detached generator samples.

    With DMD2's GAN term the same forward also classifies the noisy samples, and as many real images,
    noised at their own random sigmas, join the batch as positives; D_fake and the head step together
    (the head's loss reaches D_fake's weights too, as in DMD2). Returns (denoising loss, head loss).
    """
    loss, denoising, head = fake_denoiser_loss(fake_denoiser, x, cond, rng, gan=gan)
    update.step(fake_trained(fake_denoiser, gan), loss)
    return denoising, head


def fake_trained(fake_denoiser: Denoiser, gan: GAN | None) -> nn.Module:
    """What a fake-score step trains (and clips): the fake denoiser, with the GAN head when there is one."""
    return fake_denoiser if gan is None else nn.ModuleList([fake_denoiser, gan.head])


def fake_denoiser_loss(
    fake_denoiser: Denoiser,
    x: torch.Tensor,
    cond: torch.Tensor | None,
    rng: Draws | torch.Generator | None = None,
    *,
    gan: GAN | None = None,
) -> tuple[torch.Tensor, float, float]:
    """`fake_denoiser_step`'s loss on one (micro-)batch, to backward, with its denoising and head parts."""
    x = x.detach()
    real = _draw_real(gan.real_images, len(x), rng, x.device) if gan is not None else None
    grid = fake_denoiser.sigma_grid()
    sigma = sample_sigmas(grid, len(x), generator=rng).to(x.device)
    noise = as_draws(rng).randn(x.shape).to(x.device)
    if gan is None:
        loss = denoising_loss(fake_denoiser, x, sigma, noise, cond)
        return loss, float(loss.detach()), 0.0
    real_sigma = sample_sigmas(grid, len(real.images), generator=rng).to(x.device)
    real_noise = as_draws(rng).randn(real.images.shape).to(x.device)
    noisy = torch.cat([x + expand(sigma, x) * noise, real.images + expand(real_sigma, real.images) * real_noise])
    denoised, logits = denoise_with_logits(
        fake_denoiser, gan.head, noisy, torch.cat([sigma, real_sigma]), _cat_cond(cond, real.cond)
    )
    loss_denoising = weighted_denoising_error(fake_denoiser, denoised[: len(x)], x, sigma)
    loss_head = head_gan_loss(logits[len(x) :], logits[: len(x)])
    return loss_denoising + gan.head_weight * loss_head, float(loss_denoising.detach()), float(loss_head.detach())


def _draw_real(real_images: RealBatch | None, count: int, rng, device) -> RealBatch:
    """`count` real images (with their cond) drawn at random: the GAN head's positives of one fake step."""
    if real_images is None:
        raise ValueError("the GAN term needs real images (GAN.real_images)")
    images, cond = real_images.batch(as_draws(rng).randint(0, len(real_images), count))
    return RealBatch(images.to(device), cond.to(device) if cond is not None else None)
