"""The one-step generator: a trainable copy of the teacher, evaluated once at its largest sigma."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from torch import nn

from dmdlib.denoisers.base import Denoiser, trainable_copy


class OneStepGenerator(nn.Module):
    """G(z) = D_G(sigma_max * z, sigma_max, cond) (paper section 3: G = mu_base(z, T-1)).

    For discrete-time teachers the noise is scaled by sqrt(sigma_max^2 + 1) instead, so z is exactly
    the x_T a diffusers pipeline starts from (`Denoiser.prior_scale`).
    """

    def __init__(self, denoiser: Denoiser, sigma: float | None = None):
        super().__init__()
        self.denoiser = denoiser
        self.sigma = float(denoiser.sigma_max if sigma is None else sigma)

    @classmethod
    def from_teacher(cls, teacher: Denoiser, sigma: float | None = None) -> "OneStepGenerator":
        """Initialise from an independent trainable copy of the (unguided) teacher."""
        return cls(trainable_copy(teacher), sigma)

    def forward(self, z: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.denoiser(z * self.denoiser.prior_scale(self.sigma), self.sigma, cond)


GENERATOR_FILE, WEIGHTS_FILE = "generator.json", "generator.safetensors"


def save_generator(folder: str | os.PathLike, generator: OneStepGenerator, teacher_reference: dict) -> None:
    """Write a generator folder atomically: weights (safetensors) and generator.json to rebuild it.

    A k-diffusion generator is self-contained (its config travels in the weights' metadata); a
    Stable Diffusion generator's UNet is saved in diffusers layout under `unet/`, so diffusers loads it
    directly; other kinds rebuild the architecture from the teacher reference and load the weights.
    """
    from safetensors.torch import save_model

    from dmdlib.io import atomic_output
    from dmdlib.teachers import save_kdiffusion

    with atomic_output(folder) as tmp:
        tmp.mkdir()
        if teacher_reference["kind"] == "kdiffusion":
            save_kdiffusion(tmp / WEIGHTS_FILE, generator.denoiser, generator.denoiser.config)
            description = {"sigma": generator.sigma, "teacher": {"kind": "kdiffusion", "path": WEIGHTS_FILE}}
        elif teacher_reference["kind"] == "stable_diffusion":
            generator.denoiser.unet.save_pretrained(tmp / "unet")
            description = {"sigma": generator.sigma, "teacher": teacher_reference, "unet": "unet"}
        else:
            save_model(generator.denoiser, str(tmp / WEIGHTS_FILE))
            description = {"sigma": generator.sigma, "teacher": teacher_reference, "weights": WEIGHTS_FILE}
        (tmp / GENERATOR_FILE).write_text(json.dumps(description, indent=2))


def load_generator(folder: str | os.PathLike) -> OneStepGenerator:
    """Load a distilled one-step generator (frozen) from a folder written by `save_generator`.

    Example::

        generator = load_generator("models/generator")
        z = torch.randn(16, *generator.denoiser.sample_shape)
        images = generator(z, cond=torch.arange(16) % 10)  # class labels for a class-conditional teacher
    """
    from safetensors.torch import load_model

    from dmdlib.teachers import load_teacher

    folder = Path(folder)
    description_file = folder / GENERATOR_FILE
    if not description_file.is_file():
        raise FileNotFoundError(f"{description_file}: not found; expected a generator folder written by the `distill` stage")
    description = json.loads(description_file.read_text())
    reference = dict(description["teacher"])
    if reference.get("path") and not Path(reference["path"]).is_absolute():
        reference["path"] = str(folder / reference["path"])
    denoiser = load_teacher(reference)
    if "weights" in description:
        load_model(denoiser, str(folder / description["weights"]))
    if "unet" in description:
        from diffusers import UNet2DConditionModel

        denoiser.unet = UNet2DConditionModel.from_pretrained(folder / description["unet"], local_files_only=True)
    return OneStepGenerator(denoiser, description["sigma"]).eval().requires_grad_(False)
