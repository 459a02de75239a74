"""One interface, D(x, sigma, cond) -> denoised, for every teacher (docs/method.md)."""

from dmdlib.denoisers.base import Denoiser, denoise_capturing, frozen, trainable_copy
from dmdlib.denoisers.discrete import DDPMDenoiser, DiscreteDenoiser, LatentDenoiser
from dmdlib.denoisers.flow import FlowMatchDenoiser
from dmdlib.denoisers.gmm import GaussianMixtureDenoiser
from dmdlib.denoisers.guidance import GuidanceEmbedding, GuidedDenoiser, ScaleConditionedDenoiser
from dmdlib.denoisers.karras import KarrasDenoiser

__all__ = [
    "DDPMDenoiser",
    "Denoiser",
    "DiscreteDenoiser",
    "FlowMatchDenoiser",
    "GaussianMixtureDenoiser",
    "GuidanceEmbedding",
    "GuidedDenoiser",
    "KarrasDenoiser",
    "LatentDenoiser",
    "ScaleConditionedDenoiser",
    "denoise_capturing",
    "frozen",
    "trainable_copy",
]
