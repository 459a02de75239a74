"""Rectified-flow teachers (SD3, FLUX): a velocity network seen as D(x, sigma) in the variance-exploding space.

The flow is x_t = (1 - t) x0 + t n with velocity v = n - x0, so x0 = x_t - t v. Dividing by 1 - t,
x_t / (1 - t) = x0 + sigma n with sigma = t / (1 - t): a VE input x at sigma is the flow's
x_t = x / (1 + sigma) at t = sigma / (1 + sigma) (docs/method.md).
"""

from __future__ import annotations

import abc
import math

import torch
from torch import nn

from dmdlib.denoisers.base import Denoiser, expand
from dmdlib.errors import TeacherError

TRAIN_TIMESTEPS = 1000  # diffusers' FlowMatchEulerDiscreteScheduler default num_train_timesteps


def shift_times(t: torch.Tensor, shift: float) -> torch.Tensor:
    """diffusers' timestep shift t' = s t / (1 + (s - 1) t) (SD3: s = 3), which moves times toward noise."""
    return shift * t / (1 + (shift - 1) * t)


def flow_shift(scheduler_config: dict, image_seq_len: int | None = None) -> float:
    """The shift s of a FlowMatchEulerDiscreteScheduler config: its `shift`, or with dynamic shifting (FLUX)
    exp(mu), mu linear in the image's token count between base_shift and max_shift (FluxPipeline's rule)."""
    if not scheduler_config.get("use_dynamic_shifting", False):
        return float(scheduler_config.get("shift", 1.0))
    if image_seq_len is None:
        raise TeacherError(
            "this flow teacher shifts its times by resolution (use_dynamic_shifting): give image_seq_len"
        )
    base_len, max_len = scheduler_config.get("base_image_seq_len", 256), scheduler_config.get("max_image_seq_len", 4096)
    base_shift, max_shift = scheduler_config.get("base_shift", 0.5), scheduler_config.get("max_shift", 1.15)
    slope = (max_shift - base_shift) / (max_len - base_len)
    return math.exp(image_seq_len * slope + base_shift - slope * base_len)


def sigma_of_time(t: torch.Tensor) -> torch.Tensor:
    return t / (1 - t)


def time_of_sigma(sigma: torch.Tensor) -> torch.Tensor:
    return sigma / (1 + sigma)


class FlowMatchDenoiser(Denoiser):
    """A velocity network v(x_t, t) as D(x, sigma) = x_t - t v(x_t, t), x_t = x / (1 + sigma).

    The noise grid is the scheduler's own training times, shifted (`shift`) and mapped to sigma, without
    t = 1 (sigma infinite): the generator starts at the largest finite one, where x_t differs from pure
    noise by a factor 1 / (1 + sigma). The training weighting is the velocity MSE's: ||v - v*||^2 =
    ||D - x0||^2 / t^2, so loss_weight = ((1 + sigma) / sigma)^2. Subclasses implement `call_model` with
    the network's timestep convention (SD3: t * 1000; FLUX: t).
    """

    flow = True

    def __init__(self, network: nn.Module, shift: float = 1.0, train_timesteps: int = TRAIN_TIMESTEPS):
        super().__init__()
        self.network, self.shift, self.train_timesteps = network, float(shift), train_timesteps
        grid = self.sigma_grid()
        self.sigma_min, self.sigma_max = float(grid[0]), float(grid[-1])
        self.sigma_data = 1.0

    @abc.abstractmethod
    def call_model(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """The network's velocity at x_t and flow time t in [0, 1] ([batch])."""

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None, **model_inputs) -> torch.Tensor:
        t = time_of_sigma(sigma.double()).float()
        x_t = x / expand(1 + sigma, x)
        return x_t - expand(t, x) * self.call_model(x_t, t, cond, **model_inputs).to(x.dtype)

    def sigma_grid(self) -> torch.Tensor:
        """The scheduler's training times i / N (i = 1..N-1: t = 1 has no finite sigma), shifted, as sigmas,
        ascending."""
        t = torch.arange(1, self.train_timesteps, dtype=torch.float64) / self.train_timesteps
        return sigma_of_time(shift_times(t, self.shift)).float()

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """1 / t^2 = ((1 + sigma) / sigma)^2: turns ||D - x0||^2 into the flow model's velocity MSE."""
        return ((1 + sigma) / sigma) ** 2

    def prior_scale(self, sigma: float) -> float:
        """1 + sigma: unit noise z is then exactly the flow's x_t = z at t = sigma / (1 + sigma) -> 1."""
        return 1.0 + sigma
