"""DMD2's GAN term: a real-vs-generated classifier head on the fake denoiser's bottleneck (DMD2 section 4.3)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dmdlib.denoisers.base import Denoiser, denoise_capturing


class GANHead(nn.Module):
    """Bottleneck features [B, C, h, w] -> one logit per sample (positive: looks like real data)."""

    def __init__(self, channels: int, width: int = 64):
        super().__init__()
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if width % g == 0)
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1),
            nn.GroupNorm(groups, width),
            nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1),
            nn.GroupNorm(groups, width),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(width, 1),
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.net(features).squeeze(1)


def denoise_with_logits(
    fake_denoiser: Denoiser, head: GANHead, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(D_fake(x, sigma), head logit) from one forward of the fake denoiser: the head reads its bottleneck."""
    denoised, features = denoise_capturing(fake_denoiser, fake_denoiser.bottleneck(), x, sigma, cond)
    return denoised, head(features)


def generator_gan_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss, softplus(-logit) (DMD2 eq. 5, generator side)."""
    return F.softplus(-fake_logits).mean()


def head_gan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Classifier loss, softplus(-logit_real) + softplus(logit_fake) (DMD2 eq. 5, discriminator side)."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


@contextlib.contextmanager
def without_parameter_grads(*modules: nn.Module) -> Iterator[None]:
    """Gradients flow through the modules to their inputs, but none lands on their own parameters.

    A DDP-replicated module (`dmdlib.training.parallel`) also skips its gradient all-reduce for this backward.
    """
    parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
    replicated = [module for module in modules if hasattr(module, "set_requires_gradient_sync")]
    for parameter in parameters:
        parameter.requires_grad_(False)
    for module in replicated:
        module.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)
        for module in replicated:
            module.set_requires_gradient_sync(True)
