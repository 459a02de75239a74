"""Deterministic multi-step samplers over the denoiser interface."""

from __future__ import annotations

import torch
from k_diffusion.sampling import get_sigmas_karras, sample_heun

from dmdlib.denoisers.base import Denoiser
from dmdlib.errors import ParamsError


def karras_sigmas(denoiser: Denoiser, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: `steps` sigmas from sigma_max down to sigma_min, then 0."""
    return get_sigmas_karras(steps, denoiser.sigma_min, denoiser.sigma_max, rho=rho)


@torch.no_grad()
def heun_sample(denoiser: Denoiser, noise: torch.Tensor, steps: int = 18, cond: torch.Tensor | None = None) -> torch.Tensor:
    """EDM's deterministic Heun sampler (Algorithm 1, S_churn = 0): 2 * steps - 1 evaluations of D."""
    sigmas = karras_sigmas(denoiser, steps).to(noise.device)
    return sample_heun(denoiser, noise * denoiser.prior_scale(sigmas[0]), sigmas, extra_args={"cond": cond}, disable=True)


@torch.no_grad()
def scheduler_sample(
    denoiser: Denoiser,
    noise: torch.Tensor,
    scheduler,
    steps: int,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """Run a diffusers scheduler (PNDM, DDIM, ...) over any discrete-time denoiser, through D(x, sigma).

    The scheduler works on VP samples x_t and epsilon; D works in sigma space, so each step maps
    x_t -> x = x_t sqrt(sigma_t^2 + 1), asks D, and hands eps = (x - D) / sigma back to the scheduler
    (which therefore must be configured with prediction_type 'epsilon').
    """
    scheduler.set_timesteps(steps)
    sigmas = denoiser.sigma_grid().to(noise.device)
    x_t = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x_t, t)
        sigma = sigmas[int(t)]
        x = model_input * (sigma**2 + 1).sqrt()
        eps = (x - denoiser(x, sigma, cond)) / sigma
        x_t = scheduler.step(eps, t, x_t).prev_sample
    return x_t


def make_scheduler(name: str, config: dict):
    """A diffusers scheduler class by name, from a teacher's scheduler config, predicting epsilon."""
    import diffusers

    scheduler_class = getattr(diffusers, name, None)
    if scheduler_class is None or not name.endswith("Scheduler"):
        raise ParamsError(f"pairs.sampler {name!r}: expected 'heun' or a diffusers scheduler class such as 'PNDMScheduler'")
    return scheduler_class.from_config({**config, "prediction_type": "epsilon"})
