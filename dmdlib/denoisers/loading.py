"""Load real teachers from local folders with their own libraries' loaders (nothing is downloaded)."""

from __future__ import annotations

import os
from pathlib import Path

from dmdlib.denoisers.discrete import DDPMDenoiser
from dmdlib.errors import TeacherError


def _model_folder(folder: Path, subfolder: str) -> Path:
    return folder / subfolder if (folder / subfolder).is_dir() else folder


def load_diffusers_ddpm(folder: str | os.PathLike) -> DDPMDenoiser:
    """A diffusers `UNet2DModel` and its scheduler config, laid out as `google/ddpm-cifar10-32` (files at the
    top) or as `DDPMPipeline.save_pretrained` writes it (`unet/` and `scheduler/` sub-folders)."""
    from diffusers import DDPMScheduler, UNet2DModel

    folder = Path(folder)
    unet_dir, scheduler_dir = _model_folder(folder, "unet"), _model_folder(folder, "scheduler")
    expected = (
        "expected config.json, diffusion_pytorch_model.safetensors (or .bin) and scheduler_config.json, either at "
        "the top of the folder or in unet/ and scheduler/ sub-folders; download the weights beforehand "
        "(e.g. `huggingface-cli download google/ddpm-cifar10-32 --local-dir FOLDER`)"
    )
    for required in (unet_dir / "config.json", scheduler_dir / "scheduler_config.json"):
        if not required.is_file():
            raise TeacherError(f"{folder}: missing {required.relative_to(folder) if folder in required.parents else required}; {expected}")
    try:
        unet = UNet2DModel.from_pretrained(unet_dir, local_files_only=True)
        scheduler = DDPMScheduler.from_pretrained(scheduler_dir, local_files_only=True)
    except (OSError, ValueError) as err:
        raise TeacherError(f"{folder}: could not load the DDPM teacher ({err}); {expected}") from None
    denoiser = DDPMDenoiser(unet, scheduler.alphas_cumprod, scheduler.config.prediction_type, dict(scheduler.config))
    size = unet.config.sample_size
    denoiser.sample_shape = (unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
    denoiser.num_classes = int(unet.config.num_class_embeds or 0)
    return denoiser
