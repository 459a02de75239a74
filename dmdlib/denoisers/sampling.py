"""Deterministic multi-step samplers over the denoiser interface."""

from __future__ import annotations

import math

import numpy as np
import torch

from dmdlib.denoisers.base import Denoiser, expand, karras_ladder
from dmdlib.denoisers.flow import flow_shift, time_of_sigma
from dmdlib.errors import ParamsError

# EDM's sampler starts every model at sigma 80 (Karras et al. 2022, Table 1), whatever its own range reaches (VP's 152,
# a
# cosine-schedule DDPM's 20,290): the data is invisible up there, and an epsilon network's small error there, times
# the thousands of sigma it is integrated over, throws the trajectory off the noise level it is at (docs/method.md).
ODE_SIGMA_MAX = 80.0


def karras_sigmas(denoiser: Denoiser, steps: int, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: `steps` sigmas from min(sigma_max, 80) down to sigma_min, then 0."""
    return karras_ladder(steps, denoiser.sigma_min, min(denoiser.sigma_max, ODE_SIGMA_MAX), rho=rho)


@torch.no_grad()
def heun_sample(
    denoiser: Denoiser, noise: torch.Tensor, steps: int = 18, cond: torch.Tensor | None = None
) -> torch.Tensor:
    """EDM's deterministic Heun sampler (Algorithm 1, S_churn = 0): 2 * steps - 1 evaluations of D."""
    sigmas = karras_sigmas(denoiser, steps).to(noise.device)
    x = noise * denoiser.prior_scale(sigmas[0])
    ones = x.new_ones([x.shape[0]])
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:]):
        slope = (x - denoiser(x, sigma * ones, cond)) / expand(sigma * ones, x)  # dx/dsigma, EDM eq. 3
        x_next = x + slope * (sigma_next - sigma)
        if sigma_next > 0:  # Heun's correction, except on the last (Euler) step to sigma 0
            slope_next = (x_next - denoiser(x_next, sigma_next * ones, cond)) / expand(sigma_next * ones, x)
            x_next = x + (slope + slope_next) / 2 * (sigma_next - sigma)
        x = x_next
    return x


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
    alphas = getattr(scheduler, "alphas_cumprod", None)
    if alphas is not None and not torch.allclose(((1 - alphas) / alphas).sqrt().float(), sigmas.cpu(), rtol=1e-3):
        raise ParamsError(
            f"pairs.sampler {type(scheduler).__name__}: its noise schedule is not the teacher's (whose scheduler is "
            f"{denoiser.scheduler_config.get('_class_name', 'another class')}); use the teacher's own scheduler class"
        )
    x_t = noise * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x_t, t)
        sigma = sigmas[int(t)]
        x = model_input * (sigma**2 + 1).sqrt()
        eps = (x - denoiser(x, sigma, cond)) / sigma
        x_t = scheduler.step(eps, t, x_t).prev_sample
    return x_t


@torch.no_grad()
def flow_sample(
    denoiser: Denoiser, noise: torch.Tensor, scheduler, steps: int, cond: torch.Tensor | None = None
) -> torch.Tensor:
    """Run a FlowMatchEulerDiscreteScheduler over a flow-matching denoiser, through D(x, sigma).

    The scheduler's state is the flow's x_t; each step asks D at sigma = t / (1 - t) for x = x_t (1 + sigma) and hands
    back v = (x_t - D) / t. Time 1 (pure noise, sigma infinite) is evaluated at the grid's largest finite time, where
    x_t is the same noise. Times as the pipelines set them: the scheduler's own spacing, or with dynamic shifting
    (FLUX) FluxPipeline's linspace(1, 1 / steps) shifted by the resolution's mu.
    """
    options = {}
    if scheduler.config.get("use_dynamic_shifting"):
        tokens = denoiser.sample_shape[-1] * denoiser.sample_shape[-2] // 4  # packed 2x2 latent patches
        options = {
            "sigmas": np.linspace(1.0, 1 / steps, steps),
            "mu": math.log(flow_shift(dict(scheduler.config), tokens)),
        }
    scheduler.set_timesteps(steps, device=noise.device, **options)
    t_max = float(time_of_sigma(torch.tensor(denoiser.sigma_max, dtype=torch.float64)))
    x_t = noise
    for timestep, t in zip(scheduler.timesteps, scheduler.sigmas.tolist()):
        t = min(t, t_max)
        sigma = t / (1 - t)
        velocity = (x_t - denoiser(x_t * (1 + sigma), sigma, cond)) / t
        x_t = scheduler.step(velocity, timestep, x_t).prev_sample
    return x_t


def make_scheduler(name: str, config: dict, flow: bool = False):
    """A diffusers scheduler class by name, from a teacher's scheduler config: predicting epsilon for a discrete-time
    teacher, a FlowMatch scheduler (velocity) for a flow-matching one."""
    import diffusers

    scheduler_class = getattr(diffusers, name, None)
    if scheduler_class is None or not name.endswith("Scheduler"):
        raise ParamsError(
            f"pairs.sampler {name!r}: expected 'heun' or a diffusers scheduler class such as 'PNDMScheduler'"
        )
    if flow != name.startswith("FlowMatch"):
        expected = (
            "a FlowMatch scheduler (FlowMatchEulerDiscreteScheduler)" if flow else "'heun' or a discrete-time scheduler"
        )
        raise ParamsError(
            f"pairs.sampler {name!r}: this teacher is {'a flow-matching' if flow else 'not a flow-matching'} "
            f"model; expected {expected}"
        )
    return scheduler_class.from_config(config if flow else {**config, "prediction_type": "epsilon"})
