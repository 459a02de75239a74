"""One DMD iteration as two plain functions (paper Algorithm 1): a generator step, then a fake-score step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from dmdlib.denoisers.base import Denoiser, expand
from dmdlib.gan import GANHead, denoise_with_logits, generator_gan_loss, head_gan_loss, without_parameter_grads
from dmdlib.generator import Generator
from dmdlib.losses import (
    DM_MAX_FRACTION,
    DM_MIN_FRACTION,
    denoising_loss,
    distribution_matching_loss,
    grid_range,
    sample_sigmas,
    weighted_denoising_error,
)

RegressionLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Pairs:
    """A batch of regression pairs: noise z, the teacher's ODE output y from z, and conditioning."""

    noise: torch.Tensor
    target: torch.Tensor
    cond: torch.Tensor | None = None
    scale: torch.Tensor | None = None  # the guidance scale the pairs were made with, for a guidance-conditioned G


@dataclass
class RealBatch:
    """Real images (and their conditioning): the GAN head's positives."""

    images: torch.Tensor
    cond: torch.Tensor | None = None


@dataclass
class GAN:
    """DMD2's GAN term: the head on the fake denoiser's bottleneck and the two loss weights."""

    head: GANHead
    generator_weight: float
    head_weight: float
    sigma_fractions: tuple[float, float] = (0.0, 1.0)  # the range of the fake denoiser's grid the GAN noises at
    head_detached: bool = False  # the head's loss trains the head only; D_fake learns denoising alone


@dataclass
class GeneratorStepResult:
    x: torch.Tensor  # the generator samples of this step, detached, for the fake-score step
    loss_dm: float
    loss_reg: float
    grad_norm_dm: float  # mean per-sample norm of the DM update direction
    loss_gan: float = 0.0


def generator_step(
    generator: Generator,
    real_denoiser: Denoiser,
    fake_denoiser: Denoiser,
    optimizer: torch.optim.Optimizer,
    z: torch.Tensor,
    cond: torch.Tensor | None,
    pairs: Pairs | None,
    regression_loss: RegressionLoss | None,
    lambda_reg: float,
    dm_weight: float = 1.0,
    dm_sigma_fractions: tuple[float, float] = (DM_MIN_FRACTION, DM_MAX_FRACTION),
    rng: torch.Generator | None = None,
    max_grad_norm: float | None = 10.0,
    average_gradients: Callable[[torch.nn.Module], None] | None = None,
    step_index: int = 0,
    scale: torch.Tensor | None = None,
    gan: GAN | None = None,
) -> GeneratorStepResult:
    """Algorithm 1 lines 3-10: update G on dm_weight * L_DM + lambda_reg * L_reg (+ DMD2's GAN term).

    The DM samples come from ladder step `step_index`, whose input G makes itself without gradients
    (DMD2's backward simulation); the pairs always start from pure noise. G runs once on both
    together, so a data-parallel wrapper sees one forward. `scale`: per-sample guidance scales.
    """
    use_pairs = pairs is not None and lambda_reg > 0
    x_in = generator.noisy_input(z, cond, step_index, scale, rng)
    sigma_in = torch.full((len(z),), generator.sigmas[step_index], device=z.device)
    cond_all, scale_all = cond, scale
    if use_pairs:
        x_in = torch.cat([x_in, pairs.noise * generator.denoiser.prior_scale(generator.sigma)])
        sigma_in = torch.cat([sigma_in, torch.full((len(pairs.noise),), generator.sigma, device=z.device)])
        cond_all, scale_all = _cat_cond(cond, pairs.cond), _cat_cond(scale, pairs.scale)
    x_all = generator.denoise(x_in, sigma_in, cond_all, scale_all)
    x, x_ref = x_all[: len(z)], x_all[len(z) :]
    loss = loss_dm = loss_gan = grad_norm_dm = torch.zeros((), device=x.device)
    if dm_weight > 0:
        sigma = sample_sigmas(real_denoiser.sigma_grid(), len(z), *dm_sigma_fractions, generator=rng).to(x.device)
        noise = torch.randn(x.shape, generator=rng).to(x.device)
        dm = distribution_matching_loss(x, real_denoiser, fake_denoiser, sigma, noise, cond)
        loss, loss_dm = dm_weight * dm.loss, dm.loss
        grad_norm_dm = dm.grad.flatten(1).norm(dim=1).mean()
    if gan is not None and gan.generator_weight > 0:
        gan_sigma = sample_sigmas(fake_denoiser.sigma_grid(), len(x), *gan.sigma_fractions, generator=rng).to(x.device)
        gan_noise = torch.randn(x.shape, generator=rng).to(x.device)
        with without_parameter_grads(fake_denoiser, gan.head):  # the head and D_fake learn in their own step only
            _, logits = denoise_with_logits(fake_denoiser, gan.head, x + expand(gan_sigma, x) * gan_noise, gan_sigma, cond)
        loss_gan = generator_gan_loss(logits)
        loss = loss + gan.generator_weight * loss_gan
    loss_reg = torch.zeros(())
    if use_pairs:
        loss_reg = regression_loss(x_ref, pairs.target).mean()
        loss = loss + lambda_reg * loss_reg
    _update(generator, optimizer, loss, max_grad_norm, average_gradients)
    return GeneratorStepResult(
        x=x.detach(), loss_dm=float(loss_dm.detach()), loss_reg=float(loss_reg.detach()), grad_norm_dm=float(grad_norm_dm),
        loss_gan=float(loss_gan.detach()),
    )


def _cat_cond(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if (a is None) != (b is None):
        raise ValueError("the DM batch and the pairs must both have conditioning (and guidance scales) or both have none")
    return None if a is None else torch.cat([a, b])


def fake_denoiser_step(
    fake_denoiser: Denoiser,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    cond: torch.Tensor | None,
    rng: torch.Generator | None = None,
    max_grad_norm: float | None = 10.0,
    average_gradients: Callable[[torch.nn.Module], None] | None = None,
    gan: GAN | None = None,
    real: RealBatch | None = None,
) -> tuple[float, float]:
    """Algorithm 1 lines 11-14: denoising loss of the fake denoiser on detached generator samples.

    With DMD2's GAN term the same forward also classifies the noisy samples, and real images noised
    at their own random sigmas join the batch as positives; D_fake and the head step together (the
    head's loss reaches D_fake's weights too, as in DMD2, unless `gan.head_detached`).
    Returns (denoising loss, head loss).
    """
    x = x.detach()
    sigma = sample_sigmas(fake_denoiser.sigma_grid(), len(x), generator=rng).to(x.device)
    noise = torch.randn(x.shape, generator=rng).to(x.device)
    if gan is None:
        loss = denoising_loss(fake_denoiser, x, sigma, noise, cond)
        _update(fake_denoiser, optimizer, loss, max_grad_norm, average_gradients)
        return float(loss.detach()), 0.0
    grid = fake_denoiser.sigma_grid()
    real_sigma = sample_sigmas(grid, len(real.images), *gan.sigma_fractions, generator=rng).to(x.device)
    real_noise = torch.randn(real.images.shape, generator=rng).to(x.device)
    noisy = torch.cat([x + expand(sigma, x) * noise, real.images + expand(real_sigma, real.images) * real_noise])
    denoised, logits = denoise_with_logits(fake_denoiser, gan.head, noisy, torch.cat([sigma, real_sigma]), _cat_cond(cond, real.cond),
                                           gan.head_detached)
    loss_denoising = weighted_denoising_error(fake_denoiser, denoised[: len(x)], x, sigma)
    first, last = grid_range(grid, *gan.sigma_fractions)
    in_range = (sigma >= grid[first]) & (sigma <= grid[last - 1])  # samples D_fake denoises outside the GAN's range are not negatives
    loss_head = head_gan_loss(logits[len(x) :], logits[: len(x)][in_range])
    _update(_Both(fake_denoiser, gan.head), optimizer, loss_denoising + gan.head_weight * loss_head, max_grad_norm, average_gradients)
    return float(loss_denoising.detach()), float(loss_head.detach())


class _Both(torch.nn.Module):
    """Fake denoiser and GAN head as one module, for gradient averaging and clipping together."""

    def __init__(self, *modules: torch.nn.Module):
        super().__init__()
        self.parts = torch.nn.ModuleList(modules)


def _update(module, optimizer, loss, max_grad_norm, average_gradients) -> None:
    """Backward, average across processes (data-parallel), clip, step (paper: clipping at norm 10)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if average_gradients is not None:
        average_gradients(module)
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_grad_norm)
    optimizer.step()
