"""Deterministic multi-step samplers over the denoiser interface."""

from __future__ import annotations

import torch
from k_diffusion.sampling import get_sigmas_karras, sample_heun

from dmdlib.denoisers.base import Denoiser


def karras_sigmas(denoiser: Denoiser, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: `steps` sigmas from sigma_max down to sigma_min, then 0."""
    return get_sigmas_karras(steps, denoiser.sigma_min, denoiser.sigma_max, rho=rho)


@torch.no_grad()
def heun_sample(denoiser: Denoiser, noise: torch.Tensor, steps: int = 18, cond: torch.Tensor | None = None) -> torch.Tensor:
    """EDM's deterministic Heun sampler (Algorithm 1, S_churn = 0): 2 * steps - 1 evaluations of D."""
    sigmas = karras_sigmas(denoiser, steps).to(noise.device)
    return sample_heun(denoiser, noise * sigmas[0], sigmas, extra_args={"cond": cond}, disable=True)
