"""Classifier-free guidance, for the real denoiser only (DESIGN.md section 1)."""

from __future__ import annotations

import torch

from dmdlib.denoisers.base import Denoiser, expand


class GuidedDenoiser(Denoiser):
    """D_uncond + w * (D_cond - D_uncond), both halves in one batched call (Ho & Salimans 2022).

    `scale` is a number or a [batch] tensor (one guidance scale per sample).
    """

    def __init__(self, denoiser: Denoiser, uncond: torch.Tensor, scale: float | torch.Tensor):
        super().__init__()
        self.denoiser = denoiser
        self.register_buffer("null_cond", uncond, persistent=False)
        self.scale = scale
        self.sigma_min, self.sigma_max, self.sigma_data = denoiser.sigma_min, denoiser.sigma_max, denoiser.sigma_data
        self.sample_shape, self.scheduler_config = denoiser.sample_shape, denoiser.scheduler_config

    def denoise(self, x, sigma, cond):
        uncond = self.null_cond.expand(x.shape[0], *self.null_cond.shape[1:])
        both = self.denoiser(torch.cat([x, x]), torch.cat([sigma, sigma]), torch.cat([uncond, cond]))
        denoised_uncond, denoised_cond = both.chunk(2)
        scale = torch.as_tensor(self.scale, dtype=x.dtype, device=x.device)
        scale = expand(scale.expand(x.shape[0]), x) if scale.ndim else scale
        return denoised_uncond + scale * (denoised_cond - denoised_uncond)

    def sigma_grid(self):
        return self.denoiser.sigma_grid()

    def prior_scale(self, sigma):
        return self.denoiser.prior_scale(sigma)

    def loss_weight(self, sigma):
        return self.denoiser.loss_weight(sigma)
