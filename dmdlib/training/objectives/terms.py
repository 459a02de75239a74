"""What every generator objective is made of: named loss terms, each one small unit that the generator step sums
(weighted) and the training loop logs without knowing what it is."""

from __future__ import annotations

import abc
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from dmdlib.denoisers.base import Denoiser, expand
from dmdlib.generators.draws import Draws, as_draws
from dmdlib.training.gan import GANHead, denoise_with_logits, generator_gan_loss, without_parameter_grads
from dmdlib.training.losses import sample_sigmas

RegressionLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x, target) -> per-sample loss


@dataclass
class TermInputs:
    """What one generator step made: samples x (with gradients) and their cond; for the regression term, the
    generator's outputs from the pairs' noise and the pairs' targets."""

    x: torch.Tensor
    cond: torch.Tensor | None = None
    x_ref: torch.Tensor | None = None
    target: torch.Tensor | None = None


def noise_draws(
    denoiser: Denoiser, x: torch.Tensor, fractions: tuple[float, float], rng: Draws | torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(sigma, noise) for x: noise levels drawn uniformly between `fractions` of the denoiser's grid, then unit noise
    shaped like x, in that order from `rng`."""
    sigma = sample_sigmas(denoiser.sigma_grid(), len(x), *fractions, generator=rng).to(x.device)
    return sigma, as_draws(rng).randn(x.shape).to(x.device)


@dataclass(kw_only=True)
class Term(abc.ABC):
    """One weighted loss term of the generator, on from `start_step` on. `__call__` gives the loss and the other
    figures it reports (`reports` names them, logged as 0 while the term is off)."""

    weight: float = 1.0
    start_step: int = 0
    uses_pairs: bool = field(default=False, init=False)  # the generator also runs on the pairs' noise for it
    uses_fake: bool = field(default=False, init=False)  # it reads the fake denoiser, which then trains each step
    reports: tuple[str, ...] = field(default=(), init=False)
    keys: tuple[str, ...] = field(default=(), init=False)  # the distill params that set it, beside generator_lr

    @abc.abstractmethod
    def __call__(self, inputs: TermInputs, rng: Draws | torch.Generator | None) -> tuple[torch.Tensor, dict]:
        """(loss, {figure: value}) of one generator step."""


@dataclass(kw_only=True)
class Regression(Term):
    """Paper eq. 9: the distance of G's output from the teacher's ODE output on the same noise."""

    distance: RegressionLoss  # e.g. `dmdlib.training.regression.make_regression_loss`'s
    uses_pairs: bool = field(default=True, init=False)
    keys: tuple[str, ...] = field(default=("lambda_reg", "regression_loss"), init=False)

    def __call__(self, inputs, rng):
        return self.distance(inputs.x_ref, inputs.target).mean(), {}


@dataclass(kw_only=True)
class Adversarial(Term):
    """DMD2 eq. 5, generator side: softplus(-logit) of the GAN head on the fake denoiser's bottleneck, x noised at
    random levels of the fake denoiser's grid; the head and D_fake learn in their own step only."""

    fake_denoiser: Denoiser
    head: GANHead
    uses_fake: bool = field(default=True, init=False)
    keys: tuple[str, ...] = field(default=("gan_generator_weight",), init=False)

    def __call__(self, inputs, rng):
        x = inputs.x
        sigma, noise = noise_draws(self.fake_denoiser, x, (0.0, 1.0), rng)
        with without_parameter_grads(self.fake_denoiser, self.head):
            _, logits = denoise_with_logits(
                self.fake_denoiser, self.head, x + expand(sigma, x) * noise, sigma, inputs.cond
            )
        return generator_gan_loss(logits), {}
