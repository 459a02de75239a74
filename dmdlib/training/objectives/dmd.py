"""DMD's generator objective (paper Algorithm 1; DMD2's options): distribution matching, regression on the pairs,
and the GAN term."""

from __future__ import annotations

from dataclasses import dataclass, field

from dmdlib.denoisers.base import Denoiser
from dmdlib.training.losses import DM_MAX_FRACTION, DM_MIN_FRACTION, distribution_matching_loss
from dmdlib.training.objectives.terms import Adversarial, Regression, Term, noise_draws


@dataclass(kw_only=True)
class DistributionMatching(Term):
    """Paper eq. 7-8 (`losses.distribution_matching_loss`) at noise levels drawn between `sigma_fractions` of the
    real denoiser's grid; reports the mean per-sample norm of its update direction."""

    real_denoiser: Denoiser
    fake_denoiser: Denoiser
    sigma_fractions: tuple[float, float] = (DM_MIN_FRACTION, DM_MAX_FRACTION)
    uses_fake: bool = field(default=True, init=False)
    reports: tuple[str, ...] = field(default=("dm_grad_norm",), init=False)
    keys: tuple[str, ...] = field(default=("dm_weight", "dm_sigma_fractions"), init=False)

    def __call__(self, inputs, rng):
        x = inputs.x
        sigma, noise = noise_draws(self.real_denoiser, x, self.sigma_fractions, rng)
        dm = distribution_matching_loss(x, self.real_denoiser, self.fake_denoiser, sigma, noise, inputs.cond)
        return dm.loss, {"dm_grad_norm": float(dm.grad.flatten(1).norm(dim=1).mean())}


def dmd_terms(params, parts) -> dict[str, Term]:
    """dm_weight L_DM + gan_generator_weight L_GAN + lambda_reg L_reg; the first two wait for the regression warm-up,
    the GAN term also for gan_start_step."""
    warm_up = params.regression_warmup_steps if parts.regression_loss is not None else 0
    terms: dict[str, Term] = {}
    if params.dm_weight > 0:
        terms["dm"] = DistributionMatching(
            real_denoiser=parts.real_denoiser,
            fake_denoiser=parts.fake_denoiser,
            sigma_fractions=parts.sigma_fractions,
            weight=params.dm_weight,
            start_step=warm_up,
        )
    if parts.gan_head is not None:
        terms["gan_generator"] = Adversarial(
            fake_denoiser=parts.fake_denoiser,
            head=parts.gan_head,
            weight=params.gan_generator_weight,
            start_step=max(warm_up, params.gan_start_step),
        )
    if parts.regression_loss is not None:
        terms["reg"] = Regression(distance=parts.regression_loss, weight=params.lambda_reg)
    return terms
