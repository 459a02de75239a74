"""The DMD losses as pure functions over explicit arguments (paper Algorithm 1; docs/method.md)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from dmdlib.denoisers.base import Denoiser, expand
from dmdlib.generators.draws import Draws, as_draws

DM_MIN_FRACTION, DM_MAX_FRACTION = 0.02, 0.98  # paper: T_min = 0.02 T, T_max = 0.98 T


def grid_range(grid: torch.Tensor, low: float, high: float) -> tuple[int, int]:
    """Indices [first, last) of an ascending grid between fractions low and high (at least one)."""
    first = round(low * len(grid))
    return first, max(round(high * len(grid)), first + 1)


def sample_sigmas(
    grid: torch.Tensor,
    count: int,
    low: float = 0.0,
    high: float = 1.0,
    generator: Draws | torch.Generator | None = None,
) -> torch.Tensor:
    """Draw `count` sigmas uniformly over the indices of an ascending grid between fractions low and high."""
    first, last = grid_range(grid, low, high)
    index = as_draws(generator).randint(first, last, count).to(grid.device)
    return grid[index]


@dataclass
class DistributionMatching:
    """The DM loss and what it was made of, for logging."""

    loss: torch.Tensor
    grad: torch.Tensor  # the per-pixel update direction sent into x (before the mean's 1/numel)
    weight: torch.Tensor  # per-sample normaliser 1 / mean|x - mu_real|


def distribution_matching_loss(
    x: torch.Tensor,
    real_denoiser: Denoiser,
    fake_denoiser: Denoiser,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    cond: torch.Tensor | None = None,
) -> DistributionMatching:
    """Paper eq. 7-8: moves x along s_real - s_fake, with the per-sample weight of eq. 8.

    grad = (mu_fake - mu_real) / mean_chw|x - mu_real|, NaN/Inf set to 0, and the loss is
    0.5 * mean((x - stopgrad(x - grad))^2), so d loss / d x = grad / x.numel(). The mean (as in
    the official code) keeps the scale that lambda_reg = 0.25 was tuned against.
    """
    with torch.no_grad():
        x_detached = x.detach()
        noisy = x_detached + expand(sigma, x) * noise
        mu_real = real_denoiser(noisy, sigma, cond)
        mu_fake = fake_denoiser(noisy, sigma, cond)
        weight = 1.0 / (x_detached - mu_real).abs().flatten(1).mean(1).clamp_min(1e-12)
        grad = torch.nan_to_num((mu_fake - mu_real) * expand(weight, x), nan=0.0, posinf=0.0, neginf=0.0)
    loss = 0.5 * F.mse_loss(x, (x_detached - grad), reduction="mean")
    return DistributionMatching(loss=loss, grad=grad, weight=weight)


@dataclass
class ScoreIdentity:
    """The SiD loss and what it was made of, for logging."""

    loss: torch.Tensor
    weight: torch.Tensor  # per-sample normaliser 1 / mean|x - mu_real|


def score_identity_loss(
    x: torch.Tensor,
    real_denoiser: Denoiser,
    fake_denoiser: Denoiser,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    cond: torch.Tensor | None = None,
    alpha: float = 1.2,
) -> ScoreIdentity:
    """SiD's generator loss (Zhou et al. 2024, eq. 8 with the normaliser of its code), at x_s = x + sigma n:

    mean over pixels of (mu_real - mu_fake) . ((mu_real - x) - alpha (mu_real - mu_fake)) / mean_chw|x - mu_real|.

    Unlike DMD's, its gradient flows through x and, through x_s, through both denoisers (the caller keeps it out of
    their weights); a sample whose terms are not finite is left out, as SiD does.
    """
    noisy = x + expand(sigma, x) * noise
    mu_real, mu_fake = real_denoiser(noisy, sigma, cond), fake_denoiser(noisy, sigma, cond)
    with torch.no_grad():
        weight = 1.0 / (x - mu_real).abs().flatten(1).mean(1).clamp_min(1e-5)
    difference = mu_real - mu_fake
    per_pixel = (difference * ((mu_real - x) - alpha * difference)).flatten(1) * weight[:, None]
    finite = torch.isfinite(per_pixel).all(dim=1)
    loss = per_pixel[finite].mean() if finite.any() else (x * 0).sum()
    return ScoreIdentity(loss=loss, weight=weight)
