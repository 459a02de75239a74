"""The denoiser interface: D(x, sigma, cond) -> x0 estimate, in the variance-exploding sigma space."""

from __future__ import annotations

import abc
import copy
import functools
import types

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from dmdlib.errors import TeacherError

GRID_STEPS = 1000


def karras_ladder(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """Karras et al. (2022) eq. 5: `steps` sigmas from sigma_max down to sigma_min, evenly spaced in sigma^(1/rho),
    then 0."""
    ramp = torch.linspace(0, 1, steps)
    top, bottom = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return torch.cat([(top + ramp * (bottom - top)) ** rho, ramp.new_zeros(1)])


class Denoiser(nn.Module, abc.ABC):
    """D(x_sigma, sigma, cond) -> denoised, where x_sigma = x0 + sigma * n (EDM's D_theta).

    The score is (D(x, sigma) - x) / sigma**2. Subclasses implement `denoise`; by default the
    noise grid is Karras et al.'s rho=7 schedule and the training weighting is EDM's, which
    discrete-time adapters override.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    sample_shape: tuple[int, ...] = ()  # shape of one x, without the batch dimension; () when unknown
    num_classes: int = 0  # > 0 when `cond` is an integer class label
    scheduler_config: dict | None = None  # diffusers scheduler config, for discrete-time teachers
    uncond: torch.Tensor | None = None  # the `cond` of "no condition" when the model serves one (for guidance)
    flow: bool = False  # a flow-matching model: its diffusers samplers step on x_t = x / (1 + sigma) and velocity

    def forward(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.denoise(x, per_sample(sigma, x), cond)

    @abc.abstractmethod
    def denoise(self, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """D(x, sigma, cond) with `sigma` already a [batch] tensor."""

    def score(self, x: torch.Tensor, sigma: torch.Tensor | float, cond: torch.Tensor | None = None) -> torch.Tensor:
        """grad_x log p_sigma(x) = (D(x, sigma) - x) / sigma**2 (Tweedie)."""
        sigma = per_sample(sigma, x)
        return (self(x, sigma, cond) - x) / expand(sigma, x) ** 2

    def prior_scale(self, sigma: float) -> float:
        """Scale of unit noise that makes a sample of the noisiest marginal: sigma in VE space."""
        return sigma

    def sigma_grid(self) -> torch.Tensor:
        """The teacher's 1000-step noise grid, ascending (Karras rho=7 between sigma_min and sigma_max)."""
        return karras_ladder(GRID_STEPS, self.sigma_min, self.sigma_max)[:-1].flip(0)

    def loss_weight(self, sigma: torch.Tensor) -> torch.Tensor:
        """Weight of ||D - x0||^2 in the teacher's training loss: EDM's (sigma^2 + s_d^2) / (sigma * s_d)^2."""
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def bottleneck(self) -> nn.Module:
        """The module whose output is the network's lowest-resolution features (DMD2's GAN head reads them)."""
        raise TeacherError(f"{type(self).__name__} has no UNet bottleneck: the GAN loss needs a UNet teacher")

    def time_embedding(self) -> tuple[nn.Module, int]:
        """The module whose [batch, width] output embeds the noise level, and that width (guidance input adds to it)."""
        raise TeacherError(
            f"{type(self).__name__} has no noise-level embedding: guidance conditioning needs a UNet teacher"
        )

    def enable_gradient_checkpointing(self) -> None:
        """Recompute the network's block activations in backward instead of storing them
        (distill.gradient_checkpointing)."""
        raise TeacherError(
            f"distill.gradient_checkpointing: {type(self).__name__} teachers do not support it; "
            "it works for diffusers, k-diffusion, EDM and EDM2 teachers"
        )


def checkpoint_forward(module: nn.Module) -> None:
    """Run `module` through activation checkpointing whenever gradients are on (recomputed in backward).

    A bound method on the instance, so deep copies (the EMA) rebind to themselves; state-dict keys are unchanged.
    """
    module.forward = types.MethodType(_checkpointed_forward, module)


def _checkpointed_forward(self: nn.Module, *args, **kwargs):
    forward = functools.partial(type(self).forward, self)
    if torch.is_grad_enabled():
        return checkpoint(forward, *args, use_reentrant=False, **kwargs)
    return forward(*args, **kwargs)


def per_sample(sigma: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor:
    """Sigma as a [batch] tensor on x's device."""
    sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device)
    return sigma.expand(x.shape[0]) if sigma.ndim == 0 else sigma


def expand(sigma: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """[batch] -> [batch, 1, 1, ...] to broadcast against x."""
    return sigma.reshape(-1, *([1] * (x.ndim - 1))).to(x.dtype)


def denoise_capturing(
    denoiser: Denoiser,
    module: nn.Module,
    x: torch.Tensor,
    sigma: torch.Tensor | float,
    cond: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """D(x, sigma, cond) and the output of one of its modules (e.g. the bottleneck) in the same forward."""
    captured = []
    handle = module.register_forward_hook(lambda _module, _args, output: captured.append(output))
    try:
        denoised = denoiser(x, sigma, cond)
    finally:
        handle.remove()
    output = captured[-1]
    return denoised, output[0] if isinstance(output, tuple) else output


def frozen(module: nn.Module) -> nn.Module:
    """Eval mode and no gradients: the real denoiser never trains."""
    return module.eval().requires_grad_(False)


def trainable_copy(module: nn.Module) -> nn.Module:
    """An independent copy with gradients on: how the generator and fake denoiser start (paper section 3)."""
    return copy.deepcopy(module).train().requires_grad_(True)


def denoising_loss(
    denoiser: Denoiser,
    x0: torch.Tensor,
    sigma: torch.Tensor,
    noise: torch.Tensor,
    cond: torch.Tensor | None = None,
) -> torch.Tensor:
    """The teacher's own training loss, E[lambda(sigma) ||D(x0 + sigma n, sigma) - x0||^2].

    lambda comes from the denoiser (EDM: 1/c_out^2; epsilon: 1/sigma^2, which equals the
    epsilon MSE; v: (sigma^2+1)/sigma^2). Used for the fake denoiser on generator samples.
    """
    return weighted_denoising_error(denoiser, denoiser(x0 + expand(sigma, x0) * noise, sigma, cond), x0, sigma)


def weighted_denoising_error(
    denoiser: Denoiser, denoised: torch.Tensor, x0: torch.Tensor, sigma: torch.Tensor
) -> torch.Tensor:
    """mean over the batch of lambda(sigma) * mean_chw (denoised - x0)^2: `denoising_loss` from a given forward."""
    return ((denoised - x0).pow(2).flatten(1).mean(1) * denoiser.loss_weight(sigma)).mean()
