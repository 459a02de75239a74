"""The generator's objectives (`distill.objective`): each maps the run's parts to named loss terms
(`objectives.terms`), so a new objective is one file and its params."""

from __future__ import annotations

from dataclasses import dataclass

from dmdlib.denoisers.base import Denoiser
from dmdlib.training.gan import GANHead
from dmdlib.training.objectives.dmd import DistributionMatching, dmd_terms
from dmdlib.training.objectives.sid import ScoreIdentity, sid_terms, sida_terms
from dmdlib.training.objectives.terms import Adversarial, Regression, RegressionLoss, Term, TermInputs

OBJECTIVES = {"dmd": dmd_terms, "sid": sid_terms, "sida": sida_terms}


@dataclass
class ObjectiveParts:
    """What the terms are built from: the denoisers, the DM noise range, the regression distance (None without
    pairs) and the GAN head (None without the GAN term)."""

    real_denoiser: Denoiser
    fake_denoiser: Denoiser
    sigma_fractions: tuple[float, float]
    regression_loss: RegressionLoss | None = None
    gan_head: GANHead | None = None


def generator_terms(objective: str, params, parts: ObjectiveParts) -> dict[str, Term]:
    """The named loss terms of `objective` (`OBJECTIVES`) at params' weights."""
    return OBJECTIVES[objective](params, parts)


__all__ = [
    "OBJECTIVES",
    "Adversarial",
    "DistributionMatching",
    "ObjectiveParts",
    "Regression",
    "RegressionLoss",
    "ScoreIdentity",
    "Term",
    "TermInputs",
    "generator_terms",
]
