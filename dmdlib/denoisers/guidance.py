"""Classifier-free guidance for the real denoiser (Ho & Salimans 2022; docs/method.md), and the guidance scale as a
network input."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from dmdlib.denoisers.base import Denoiser, expand


class _Wrapping(Denoiser):
    """A denoiser around another one: same noise levels, shape, classes, grid and loss weighting."""

    def __init__(self, denoiser: Denoiser):
        super().__init__()
        self.denoiser = denoiser
        self.sigma_min, self.sigma_max, self.sigma_data = denoiser.sigma_min, denoiser.sigma_max, denoiser.sigma_data
        self.sample_shape, self.num_classes = denoiser.sample_shape, denoiser.num_classes
        self.scheduler_config, self.flow = denoiser.scheduler_config, denoiser.flow

    def sigma_grid(self):
        return self.denoiser.sigma_grid()

    def prior_scale(self, sigma):
        return self.denoiser.prior_scale(sigma)

    def loss_weight(self, sigma):
        return self.denoiser.loss_weight(sigma)

    def enable_gradient_checkpointing(self):
        self.denoiser.enable_gradient_checkpointing()


class GuidedDenoiser(_Wrapping):
    """D_uncond + w * (D_cond - D_uncond), both halves in one batched call (Ho & Salimans 2022).

    `scale` is a number or a [batch] tensor (one guidance scale per sample).
    """

    def __init__(self, denoiser: Denoiser, uncond: torch.Tensor, scale: float | torch.Tensor):
        super().__init__(denoiser)
        self.register_buffer("null_cond", uncond, persistent=False)
        self.scale = scale

    def denoise(self, x, sigma, cond):
        uncond = self.null_cond.expand(x.shape[0], *self.null_cond.shape[1:])
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([uncond, cond]))
        denoised_uncond, denoised_cond = both.chunk(2)
        scale = torch.as_tensor(self.scale, dtype=x.dtype, device=x.device)
        scale = expand(scale.expand(x.shape[0]), x) if scale.ndim else scale
        return denoised_uncond + scale * (denoised_cond - denoised_uncond)


class EmbeddedGuidance(_Wrapping):
    """A real denoiser guided through its own guidance-scale input (FLUX.1-dev): one pass, as FluxPipeline does."""

    def __init__(self, denoiser: Denoiser, scale: float):
        super().__init__(denoiser)
        self.scale = float(scale)

    def denoise(self, x, sigma, cond):
        return self.denoiser.denoise(x, sigma, cond, guidance=self.scale)


class GuidanceEmbedding(nn.Module):
    """Adds an embedding of the guidance scale to a network's noise-level embedding (through a forward hook).

    The last layer starts at zero, so a network given this input first computes exactly what it did before.
    """

    def __init__(self, low: float, high: float, width: int, hidden: int = 64):
        super().__init__()
        self.low, self.high, self.width = float(low), float(high), int(width)
        self.net = nn.Sequential(nn.Linear(1, hidden), nn.SiLU(), nn.Linear(hidden, width))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.scale: torch.Tensor | None = None  # [batch] scales of the forward in progress

    def attach(self, module: nn.Module) -> None:
        module.register_forward_hook(self._add)

    @contextlib.contextmanager
    def at(self, scale: float | torch.Tensor, x: torch.Tensor) -> Iterator[None]:
        """Forwards inside this block see guidance `scale` (a number or one per sample of x)."""
        self.scale = torch.as_tensor(scale, dtype=torch.float32, device=x.device).expand(x.shape[0])
        try:
            yield
        finally:
            self.scale = None

    def _add(self, _module, _args, output: torch.Tensor) -> torch.Tensor:
        if self.scale is None:
            raise RuntimeError("a guidance-conditioned network was called without a scale")
        position = ((self.scale - self.low) / max(self.high - self.low, 1e-8)).to(output)
        return output + self.net(position[:, None])


class ScaleConditionedDenoiser(_Wrapping):
    """A denoiser that also reads the guidance scale in `scale` (one per sample): the fake denoiser of a
    guidance-conditioned generator, so it models the generator's distribution at each scale separately."""

    def __init__(self, denoiser: Denoiser, low: float, high: float):
        super().__init__(denoiser)
        self.guidance = GuidanceEmbedding(low, high, denoiser.time_embedding()[1])
        self.guidance.attach(denoiser.time_embedding()[0])
        self.scale: float | torch.Tensor = low

    def denoise(self, x, sigma, cond):
        with self.guidance.at(self.scale, x):
            return self.denoiser(x, sigma, cond)
