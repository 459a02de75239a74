"""Teachers behind the denoiser interface: build the default one, load real ones, and describe either.

A *teacher reference* is a small JSON-able dict ({'kind': ..., ...}) that `load_teacher` turns back
into a frozen `Denoiser`, so later stages never need to know which kind of teacher it was.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from k_diffusion import config as kconfig
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from dmdlib.denoisers import Denoiser, KarrasDenoiser, LatentDenoiser, frozen
from dmdlib.denoisers.loading import load_diffusers_ddpm
from dmdlib.errors import TeacherError
from dmdlib.io import atomic_output

KDIFFUSION_KEYS = ("model_ema", "model")  # k-diffusion's train.py checkpoint keys, EMA first


UNCOND_CLASS = -1  # the label of "no class": a zero one-hot vector (trained by label dropout)


class OneHotClasses(nn.Module):
    """Feeds integer class labels to an `image_v1` model as a one-hot `mapping_cond`; UNCOND_CLASS gives zeros."""

    def __init__(self, inner_model: nn.Module, num_classes: int):
        super().__init__()
        self.inner_model = inner_model
        self.num_classes = num_classes

    def forward(self, x: torch.Tensor, sigma: torch.Tensor, class_cond: torch.Tensor | None = None) -> torch.Tensor:
        mapping_cond = None
        if class_cond is not None:
            known = class_cond.long() >= 0
            mapping_cond = (F.one_hot(class_cond.long().clamp_min(0), self.num_classes) * known[:, None]).to(x.dtype)
        return self.inner_model(x, sigma, mapping_cond=mapping_cond)


def kdiffusion_config(channels: int, resolution: int, widths: list[int], depths: list[int], mapping_width: int,
                      num_classes: int, sigma_data: float, sigma_min: float, sigma_max: float,
                      label_dropout: float = 0.0) -> dict[str, Any]:
    """A k-diffusion `image_v1` config dict for the default teacher (k-diffusion's own config format).

    `cond_dropout_rate` (k-diffusion's key) records label dropout: above 0 the model also serves
    UNCOND_CLASS, so classifier-free guidance can use it.
    """
    return {
        "model": {
            "type": "image_v1", "input_channels": channels, "input_size": [resolution, resolution],
            "mapping_out": mapping_width, "depths": depths, "channels": widths,
            "self_attn_depths": [False] * len(widths), "augment_wrapper": False,
            "mapping_cond_dim": num_classes, "sigma_data": sigma_data, "sigma_min": sigma_min, "sigma_max": sigma_max,
            "cond_dropout_rate": label_dropout,
        },
        "dataset": {"type": "imagefolder", "num_classes": num_classes},
    }


def build_kdiffusion(config: dict[str, Any]) -> KarrasDenoiser:
    """A `KarrasDenoiser` around the model that k-diffusion's `config.make_model` builds from `config`."""
    config = kconfig.load_config(config)
    inner = kconfig.make_model(config)
    model_config, num_classes = config["model"], config["dataset"]["num_classes"]
    cond_key = None
    if num_classes and model_config["type"] == "image_v1":
        inner, cond_key = OneHotClasses(inner, num_classes), "class_cond"
    elif num_classes:
        cond_key = "class_cond"
    denoiser = KarrasDenoiser(
        inner,
        sigma_data=model_config.get("sigma_data", 1.0),
        sigma_min=model_config.get("sigma_min", 0.002),
        sigma_max=model_config.get("sigma_max", 80.0),
        cond_key=cond_key,
    )
    denoiser.sample_shape = (model_config["input_channels"], *model_config["input_size"])
    denoiser.num_classes = num_classes
    if num_classes and model_config["type"] == "image_v1" and model_config.get("cond_dropout_rate", 0) > 0:
        denoiser.uncond = torch.tensor([UNCOND_CLASS])
    denoiser.config = config
    return denoiser


def save_kdiffusion(path: str | os.PathLike, denoiser: KarrasDenoiser, config: dict[str, Any]) -> None:
    """Weights as safetensors with the config in the file metadata (the layout k-diffusion reads back)."""
    state = {name: tensor.detach().contiguous() for name, tensor in denoiser.inner_model.state_dict().items()}
    with atomic_output(path) as tmp:
        save_file(state, str(tmp), metadata={"config": json.dumps(config)})


def load_kdiffusion(checkpoint: str | os.PathLike, config: str | os.PathLike | None = None) -> KarrasDenoiser:
    """A k-diffusion checkpoint: .safetensors (config in its metadata or given) or a train.py .pth + config JSON."""
    checkpoint = Path(checkpoint)
    if not checkpoint.is_file():
        raise TeacherError(
            f"{checkpoint}: k-diffusion checkpoint not found; expected a .safetensors file (config in its metadata) "
            "or a .pth from k-diffusion's train.py plus `config` (its JSON); download it beforehand"
        )
    if checkpoint.suffix == ".safetensors":
        with safe_open(str(checkpoint), "pt") as handle:
            embedded = (handle.metadata() or {}).get("config")
        state = load_file(str(checkpoint))
    else:
        embedded = None
        payload = torch.load(checkpoint, map_location="cpu", weights_only=True)
        key = next((k for k in KDIFFUSION_KEYS if isinstance(payload, dict) and k in payload), None)
        state = payload[key] if key else payload
    if config is not None:
        config_dict = json.loads(Path(config).read_text())
    elif embedded is not None:
        config_dict = json.loads(embedded)
    else:
        raise TeacherError(f"{checkpoint}: no config in the file; give the k-diffusion config JSON as `config`")
    denoiser = build_kdiffusion(config_dict)
    try:
        denoiser.inner_model.load_state_dict(state)
    except RuntimeError as err:
        raise TeacherError(f"{checkpoint}: weights do not match the config ({str(err).splitlines()[0]})") from None
    return denoiser


def load_stable_diffusion_unet(folder: str | os.PathLike) -> LatentDenoiser:
    """The UNet and scheduler of a `StableDiffusionPipeline` folder (diffusers layout)."""
    from diffusers import PNDMScheduler, UNet2DConditionModel

    folder = Path(folder)
    expected = ("expected a StableDiffusionPipeline folder in diffusers layout (model_index.json, unet/, scheduler/, "
                "vae/, text_encoder/, tokenizer/); download it beforehand, e.g. with `huggingface-cli download`")
    for required in ("model_index.json", "unet/config.json", "scheduler/scheduler_config.json"):
        if not (folder / required).is_file():
            raise TeacherError(f"{folder}: missing {required}; {expected}")
    try:
        unet = UNet2DConditionModel.from_pretrained(folder, subfolder="unet", local_files_only=True)
        scheduler = PNDMScheduler.from_pretrained(folder, subfolder="scheduler", local_files_only=True)
    except (OSError, ValueError) as err:
        raise TeacherError(f"{folder}: could not load the Stable Diffusion UNet ({err}); {expected}") from None
    denoiser = LatentDenoiser(unet, scheduler.alphas_cumprod, scheduler.config.prediction_type, dict(scheduler.config))
    size = unet.config.sample_size
    denoiser.sample_shape = (unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
    return denoiser


def teacher_digest(denoiser: nn.Module) -> str:
    """SHA-256 of a denoiser's weights and buffers (names, dtypes, shapes and bytes): which teacher made a file."""
    digest = hashlib.sha256()
    for name, tensor in sorted(denoiser.state_dict().items()):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def load_teacher(reference: dict[str, Any]) -> Denoiser:
    """A frozen denoiser from a teacher reference, whatever its kind."""
    kind = reference.get("kind")
    if kind == "kdiffusion":
        denoiser = load_kdiffusion(reference["path"], reference.get("config"))
    elif kind == "diffusers_ddpm":
        denoiser = load_diffusers_ddpm(reference["path"])
    elif kind == "stable_diffusion":
        denoiser = load_stable_diffusion_unet(reference["path"])
    else:
        raise TeacherError(f"teacher reference kind {kind!r}: expected kdiffusion, diffusers_ddpm or stable_diffusion; "
                           "re-run the `teacher` stage")
    return frozen(denoiser)
