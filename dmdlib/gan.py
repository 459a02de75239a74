"""DMD2's GAN term: a real-vs-generated classifier head on the fake denoiser's bottleneck (DMD2 section 4.3)."""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from dmdlib.denoisers.base import Denoiser, denoise_capturing


class GANHead(nn.Module):
    """Bottleneck features [B, C, h, w] -> one logit per sample (positive: looks like real data).

    With `num_classes`, the logit also scores agreement with the class label: a projection
    discriminator (Miyato & Koyama, 2018), so a digit that is real-looking but of the wrong class is fake.
    """

    def __init__(self, channels: int, width: int = 64, num_classes: int = 0):
        super().__init__()
        groups = next(g for g in (32, 16, 8, 4, 2, 1) if width % g == 0)
        self.net = nn.Sequential(
            nn.Conv2d(channels, width, 3, padding=1), nn.GroupNorm(groups, width), nn.SiLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.GroupNorm(groups, width), nn.SiLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1),
        )
        self.class_embedding = nn.Embedding(num_classes, width) if num_classes else None
        if self.class_embedding is not None:  # starts as the class-blind head, so the head loss starts at chance
            nn.init.zeros_(self.class_embedding.weight)

    def forward(self, features: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        pooled = self.net[:-1](features)
        logit = self.net[-1](pooled).squeeze(1)
        if self.class_embedding is not None:
            logit = logit + (self.class_embedding(labels) * pooled).sum(1)
        return logit


def denoise_with_logits(
    fake_denoiser: Denoiser, head: GANHead, x: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor | None,
    detach_features: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(D_fake(x, sigma), head logit) from one forward of the fake denoiser: the head reads its bottleneck.

    `detach_features`: the head's loss then reaches the head alone, not the fake denoiser's weights.
    """
    denoised, features = denoise_capturing(fake_denoiser, fake_denoiser.bottleneck(), x, sigma, cond)
    features = features.detach() if detach_features else features
    return denoised, head(features, cond if head.class_embedding is not None else None)


def generator_gan_loss(fake_logits: torch.Tensor) -> torch.Tensor:
    """Non-saturating generator loss, softplus(-logit) (DMD2 eq. 5, generator side)."""
    return F.softplus(-fake_logits).mean()


def head_gan_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor) -> torch.Tensor:
    """Classifier loss, softplus(-logit_real) + softplus(logit_fake) (DMD2 eq. 5, discriminator side)."""
    # a batch can hold no negatives when gan_sigma_min/max leave out every generated sample's noise level
    fake = F.softplus(fake_logits).mean() if len(fake_logits) else fake_logits.sum()
    return F.softplus(-real_logits).mean() + fake


@contextlib.contextmanager
def without_parameter_grads(*modules: nn.Module) -> Iterator[None]:
    """Gradients flow through the modules to their inputs, but none lands on their own parameters."""
    parameters = [p for module in modules for p in module.parameters() if p.requires_grad]
    for parameter in parameters:
        parameter.requires_grad_(False)
    try:
        yield
    finally:
        for parameter in parameters:
            parameter.requires_grad_(True)
