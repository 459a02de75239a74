"""One DMD iteration as two plain functions (paper Algorithm 1): a generator step, then a fake-score step."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from dmdlib.denoisers.base import Denoiser
from dmdlib.generator import OneStepGenerator
from dmdlib.losses import DM_MAX_FRACTION, DM_MIN_FRACTION, denoising_loss, distribution_matching_loss, sample_sigmas

RegressionLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class Pairs:
    """A batch of regression pairs: noise z, the teacher's ODE output y from z, and conditioning."""

    noise: torch.Tensor
    target: torch.Tensor
    cond: torch.Tensor | None = None


@dataclass
class GeneratorStepResult:
    x: torch.Tensor  # the generator samples of this step, detached, for the fake-score step
    loss_dm: float
    loss_reg: float
    grad_norm_dm: float  # mean per-sample norm of the DM update direction


def generator_step(
    generator: OneStepGenerator,
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
) -> GeneratorStepResult:
    """Algorithm 1 lines 3-10: update G on dm_weight * L_DM + lambda_reg * L_reg.

    G runs once on the DM noise and the pairs' noise together, so a data-parallel wrapper sees one forward.
    """
    use_pairs = pairs is not None and lambda_reg > 0
    z_all = torch.cat([z, pairs.noise]) if use_pairs else z
    cond_all = _cat_cond(cond, pairs.cond) if use_pairs else cond
    x_all = generator(z_all, cond_all)
    x, x_ref = x_all[: len(z)], x_all[len(z) :]
    loss = loss_dm = grad_norm_dm = torch.zeros((), device=x.device)
    if dm_weight > 0:
        sigma = sample_sigmas(real_denoiser.sigma_grid(), len(z), *dm_sigma_fractions, generator=rng).to(x.device)
        noise = torch.randn(x.shape, generator=rng).to(x.device)
        dm = distribution_matching_loss(x, real_denoiser, fake_denoiser, sigma, noise, cond)
        loss, loss_dm = dm_weight * dm.loss, dm.loss
        grad_norm_dm = dm.grad.flatten(1).norm(dim=1).mean()
    loss_reg = torch.zeros(())
    if use_pairs:
        loss_reg = regression_loss(x_ref, pairs.target).mean()
        loss = loss + lambda_reg * loss_reg
    _update(generator, optimizer, loss, max_grad_norm, average_gradients)
    return GeneratorStepResult(
        x=x.detach(), loss_dm=float(loss_dm.detach()), loss_reg=float(loss_reg.detach()), grad_norm_dm=float(grad_norm_dm)
    )


def _cat_cond(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    if (a is None) != (b is None):
        raise ValueError("the DM batch and the pairs must both have conditioning or both have none")
    return None if a is None else torch.cat([a, b])


def fake_denoiser_step(
    fake_denoiser: Denoiser,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    cond: torch.Tensor | None,
    rng: torch.Generator | None = None,
    max_grad_norm: float | None = 10.0,
    average_gradients: Callable[[torch.nn.Module], None] | None = None,
) -> float:
    """Algorithm 1 lines 11-14: denoising loss of the fake denoiser on detached generator samples."""
    sigma = sample_sigmas(fake_denoiser.sigma_grid(), len(x), generator=rng).to(x.device)
    noise = torch.randn(x.shape, generator=rng).to(x.device)
    loss = denoising_loss(fake_denoiser, x.detach(), sigma, noise, cond)
    _update(fake_denoiser, optimizer, loss, max_grad_norm, average_gradients)
    return float(loss.detach())


def _update(module, optimizer, loss, max_grad_norm, average_gradients) -> None:
    """Backward, average across processes (data-parallel), clip, step (paper: clipping at norm 10)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if average_gradients is not None:
        average_gradients(module)
    if max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_grad_norm)
    optimizer.step()
