"""An analytic teacher: the exact posterior mean of a mixture of isotropic Gaussians."""

from __future__ import annotations

import math

import torch

from dmdlib.denoisers.base import Denoiser, expand


class GaussianMixtureDenoiser(Denoiser):
    """Exact E[x0 | x_sigma] for x0 ~ sum_k pi_k N(mu_k, s_k^2 I); conditioning is ignored.

    Under noise sigma the mixture is sum_k pi_k N(mu_k, (s_k^2 + sigma^2) I), so
    D(x) = sum_k r_k(x) [mu_k + s_k^2 / (s_k^2 + sigma^2) (x - mu_k)] with responsibilities r_k.
    """

    def __init__(
        self,
        means: torch.Tensor,
        stds: torch.Tensor,
        weights: torch.Tensor | None = None,
        sigma_min: float = 0.002,
        sigma_max: float = 80.0,
        sigma_data: float = 0.5,
    ):
        super().__init__()
        means = torch.as_tensor(means, dtype=torch.float32)
        count = means.shape[0]
        weights = (
            torch.full((count,), 1.0 / count) if weights is None else torch.as_tensor(weights, dtype=torch.float32)
        )
        self.register_buffer("means", means)
        self.register_buffer("stds", torch.as_tensor(stds, dtype=torch.float32).expand(count).clone())
        self.register_buffer("weights", weights / weights.sum())
        self.sigma_min, self.sigma_max, self.sigma_data = sigma_min, sigma_max, sigma_data
        self.sample_shape = tuple(means.shape[1:])

    @classmethod
    def ring(cls, modes: int = 8, radius: float = 2.0, std: float = 0.1, **kwargs) -> "GaussianMixtureDenoiser":
        """`modes` equal Gaussians evenly spaced on a circle in 2-D."""
        angles = torch.arange(modes) * (2 * math.pi / modes)
        return cls(radius * torch.stack([angles.cos(), angles.sin()], dim=1), torch.tensor(std), **kwargs)

    def responsibilities(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """r_k(x) = p(component k | x_sigma), [batch, K]."""
        flat = x.flatten(1)
        variance = self.stds**2 + sigma[:, None] ** 2  # [batch, K]
        sq_dist = torch.cdist(flat, self.means.flatten(1)) ** 2
        dims = flat.shape[1]
        logits = self.weights.log() - 0.5 * sq_dist / variance - 0.5 * dims * variance.log()
        return logits.softmax(dim=1)

    def denoise(self, x, sigma, cond):
        flat = x.flatten(1)
        variance = self.stds**2 + sigma[:, None] ** 2
        shrink = (self.stds**2 / variance)[..., None]  # [batch, K, 1]
        means = self.means.flatten(1)[None]
        posterior = means + shrink * (flat[:, None] - means)
        return (self.responsibilities(x, sigma)[..., None] * posterior).sum(1).view_as(x)

    def exact_score(self, x: torch.Tensor, sigma: torch.Tensor | float) -> torch.Tensor:
        """grad log p_sigma(x) = sum_k r_k (mu_k - x) / (s_k^2 + sigma^2), computed without D."""
        sigma = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1).expand(x.shape[0])
        flat = x.flatten(1)
        variance = self.stds**2 + sigma[:, None] ** 2
        pull = (self.means.flatten(1)[None] - flat[:, None]) / variance[..., None]
        return (self.responsibilities(x, sigma)[..., None] * pull).sum(1).view_as(x)

    def sample(self, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw `count` exact samples of x0."""
        component = torch.multinomial(self.weights, count, replacement=True, generator=generator)
        noise = torch.randn(count, *self.means.shape[1:], generator=generator)
        return self.means[component] + expand(self.stds[component], noise) * noise
