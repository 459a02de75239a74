"""The one-step generator: a trainable copy of the teacher, evaluated once at its largest sigma."""

from __future__ import annotations

import torch
from torch import nn

from dmdlib.denoisers.base import Denoiser, trainable_copy


class OneStepGenerator(nn.Module):
    """G(z) = D_G(sigma_max * z, sigma_max, cond) (paper section 3: G = mu_base(z, T-1))."""

    def __init__(self, denoiser: Denoiser, sigma: float | None = None):
        super().__init__()
        self.denoiser = denoiser
        self.sigma = float(denoiser.sigma_max if sigma is None else sigma)

    @classmethod
    def from_teacher(cls, teacher: Denoiser, sigma: float | None = None) -> "OneStepGenerator":
        """Initialise from an independent trainable copy of the (unguided) teacher."""
        return cls(trainable_copy(teacher), sigma)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.denoiser(z * self.sigma, self.sigma, cond)
