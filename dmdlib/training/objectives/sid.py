"""Score identity Distillation (Zhou et al., ICML 2024) and its adversarial form SiDA (Zhou et al., ICLR 2025):
data-free, from the teacher and the fake denoiser alone; SiDA adds a GAN term on real images."""

from __future__ import annotations

from dataclasses import dataclass, field

from dmdlib.denoisers.base import Denoiser
from dmdlib.training.gan import without_parameter_grads
from dmdlib.training.losses import score_identity_loss
from dmdlib.training.objectives.terms import Adversarial, Term, noise_draws

SID_ALPHA = 1.2  # the papers' alpha


@dataclass(kw_only=True)
class ScoreIdentity(Term):
    """SiD's loss (`losses.score_identity_loss`) at noise levels drawn between `sigma_fractions` of the real
    denoiser's grid; gradients reach G through both denoisers' inputs, none lands on the fake denoiser's weights."""

    real_denoiser: Denoiser
    fake_denoiser: Denoiser
    sigma_fractions: tuple[float, float]
    alpha: float = SID_ALPHA
    uses_fake: bool = field(default=True, init=False)
    keys: tuple[str, ...] = field(default=("sid_alpha", "dm_sigma_fractions"), init=False)

    def __call__(self, inputs, rng):
        x = inputs.x
        sigma, noise = noise_draws(self.real_denoiser, x, self.sigma_fractions, rng)
        with without_parameter_grads(self.fake_denoiser):
            sid = score_identity_loss(x, self.real_denoiser, self.fake_denoiser, sigma, noise, inputs.cond, self.alpha)
        return sid.loss, {}


def sid_terms(params, parts) -> dict[str, Term]:
    """SiD: the score identity term alone (no pairs: data-free)."""
    return {
        "sid": ScoreIdentity(
            real_denoiser=parts.real_denoiser,
            fake_denoiser=parts.fake_denoiser,
            sigma_fractions=parts.sigma_fractions,
            alpha=params.sid_alpha,
        )
    }


def sida_terms(params, parts) -> dict[str, Term]:
    """SiDA: SiD plus the GAN term of the head on the fake denoiser (gan_generator_weight, from gan_start_step)."""
    return {
        **sid_terms(params, parts),
        "gan_generator": Adversarial(
            fake_denoiser=parts.fake_denoiser,
            head=parts.gan_head,
            weight=params.gan_generator_weight,
            start_step=params.gan_start_step,
        ),
    }
