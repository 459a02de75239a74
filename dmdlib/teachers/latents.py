"""Latent-space teachers: the VAE that turns latents into images for previews, LPIPS and evaluation."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

from dmdlib.errors import TeacherError

VAE_CLASSES = (
    "AutoencoderKL",
    "AutoencoderTiny",
    "AutoencoderKLWan",
    "AutoencoderKLCogVideoX",
    "AutoencoderKLLTXVideo",
)


def load_vae(folder: str | os.PathLike, subfolder: str = "vae"):
    """The VAE of a diffusers pipeline folder, or a standalone VAE folder (subfolder=''): AutoencoderKL,
    AutoencoderTiny (e.g. TAESD) to decode previews with far less memory and time, or a video family's."""
    import diffusers

    path = Path(folder).expanduser() / subfolder if subfolder else Path(folder).expanduser()
    config = path / "config.json"
    if not config.is_file():
        raise TeacherError(f"{path}: no VAE (config.json); expected a diffusers {' or '.join(VAE_CLASSES)} folder")
    class_name = json.loads(config.read_text()).get("_class_name")
    if class_name not in VAE_CLASSES:
        raise TeacherError(f"{config}: _class_name {class_name!r}, expected one of {VAE_CLASSES}")
    return getattr(diffusers, class_name).from_pretrained(path, local_files_only=True).eval().requires_grad_(False)


class LatentDecoder(nn.Module):
    """Images in [-1, 1] from a teacher's latents z: VAE.decode((z - bias) / scale), its output mapped from
    `vae_range`. Stable Diffusion: scale = the VAE's scaling_factor, bias 0, range [-1, 1]; EDM2: the snapshot's
    per-channel scale and bias, and its VAE decodes to [0, 1] (EDM2 encodes pixels / 255)."""

    def __init__(
        self,
        vae,
        scale: float | Sequence[float],
        bias: float | Sequence[float] = 0.0,
        vae_range: tuple[float, float] = (-1.0, 1.0),
    ):
        super().__init__()
        self.vae = vae
        self.register_buffer(
            "scale", torch.as_tensor(scale, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False
        )
        self.register_buffer("bias", torch.as_tensor(bias, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        self.vae_range = vae_range

    @classmethod
    def diffusers(cls, vae) -> "LatentDecoder":
        """As diffusers pipelines decode: VAE.decode(z / scaling_factor + shift_factor) (shift: SD3, FLUX)."""
        scale = vae.config.scaling_factor
        return cls(vae, scale, -(getattr(vae.config, "shift_factor", None) or 0.0) * scale)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents.to(self.scale.device)
        images = self.vae.decode(((latents - self.bias) / self.scale).to(self.vae.dtype)).sample.float()
        low, high = self.vae_range
        return (images.clamp(low, high) - low) / (high - low) * 2 - 1


class VideoDecoder(nn.Module):
    """Frames in [-1, 1] from a video teacher's latents: `to_vae(latents)` turns them into what the video VAE decodes
    ([batch, channels, frames, height, width], its family's scaling undone); the clips come back as their frames one
    after another, [batch * frames, 3, height, width], so grids, LPIPS and per-frame metrics take them as images."""

    def __init__(self, vae, to_vae: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.vae, self.to_vae = vae, to_vae
        self.decode_options = lambda latents: {}  # e.g. LTX-Video's decode timestep

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        latents = self.to_vae(latents.to(self.vae.device)).to(self.vae.dtype)
        video = self.vae.decode(latents, **self.decode_options(latents)).sample.float()
        return video.clamp(-1, 1).transpose(1, 2).flatten(0, 1)
