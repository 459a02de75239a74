"""Latent-space teachers: the VAE that turns latents into images for previews, LPIPS and evaluation."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from dmdlib.errors import TeacherError

VAE_CLASSES = ("AutoencoderKL", "AutoencoderTiny")


def load_vae(folder: str | os.PathLike, subfolder: str = "vae"):
    """The VAE of a diffusers pipeline folder, or a standalone VAE folder (subfolder=''): AutoencoderKL,
    or AutoencoderTiny (e.g. TAESD) to decode previews with far less memory and time."""
    import diffusers

    path = Path(folder).expanduser() / subfolder if subfolder else Path(folder).expanduser()
    config = path / "config.json"
    if not config.is_file():
        raise TeacherError(f"{path}: no VAE (config.json); expected a diffusers {' or '.join(VAE_CLASSES)} folder")
    class_name = json.loads(config.read_text()).get("_class_name")
    if class_name not in VAE_CLASSES:
        raise TeacherError(f"{config}: _class_name {class_name!r}, expected one of {VAE_CLASSES}")
    return getattr(diffusers, class_name).from_pretrained(path, local_files_only=True).eval().requires_grad_(False)


def decode(vae, latents: torch.Tensor) -> torch.Tensor:
    """Images in [-1, 1], on the VAE's device, from Stable Diffusion latents (scaled by the VAE's scaling_factor)."""
    return vae.decode(latents.to(vae.device) / vae.config.scaling_factor).sample.clamp(-1, 1)
