"""Teachers saved as diffusers folders (`save_pretrained` layout): a DDPM `UNet2DModel`, and the pipelines of SD v1.5,
SDXL, DiT, SD3 and FLUX.

Each pipeline kind checks the pipeline class in model_index.json, loads the network and scheduler the folder names with
diffusers' own classes (nothing downloaded, no remote code) and wraps them in the denoiser of its family.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from dmdlib.denoisers import Denoiser, LatentDenoiser
from dmdlib.denoisers.discrete import DDPMDenoiser, DiTDenoiser, SDXLDenoiser
from dmdlib.denoisers.flow import FlowMatchDenoiser, flow_shift
from dmdlib.denoisers.flow_transformers import FluxDenoiser, SD3Denoiser
from dmdlib.errors import TeacherError

PIPELINE_CLASSES = {
    "stable_diffusion": "StableDiffusionPipeline",
    "sdxl": "StableDiffusionXLPipeline",
    "dit": "DiTPipeline",
    "sd3": "StableDiffusion3Pipeline",
    "flux": "FluxPipeline",
}
NETWORK_FOLDERS = {
    "stable_diffusion": "unet",
    "sdxl": "unet",
    "dit": "transformer",
    "sd3": "transformer",
    "flux": "transformer",
}
TEXT_TO_IMAGE_KINDS = ("stable_diffusion", "sdxl", "sd3", "flux")
FLUX_RESOLUTION = 1024  # FluxPipeline's default image side (its transformer config names none)


def supported_kinds() -> str:
    return ", ".join(f"{kind} ({name})" for kind, name in PIPELINE_CLASSES.items())


def pipeline_index(folder: str | os.PathLike, kind: str) -> dict[str, Any]:
    """model_index.json of a diffusers pipeline folder, checked to be the pipeline class `kind` expects."""
    folder = Path(folder).expanduser()
    index_file = folder / "model_index.json"
    if not index_file.is_file():
        found = sorted(p.name for p in folder.iterdir())[:12] if folder.is_dir() else "no such folder"
        raise TeacherError(
            f"{folder}: not a diffusers pipeline folder (no model_index.json; found {found}); teacher.kind "
            f"{kind!r} expects a {PIPELINE_CLASSES[kind]} saved with save_pretrained (download it beforehand, "
            f"e.g. `huggingface-cli download REPO --local-dir FOLDER`). Kinds for diffusers folders: "
            f"{supported_kinds()}, diffusers_ddpm (UNet2DModel / DDPMPipeline)"
        )
    index = json.loads(index_file.read_text())
    found = index.get("_class_name")
    if found != PIPELINE_CLASSES[kind]:
        other = next((k for k, name in PIPELINE_CLASSES.items() if name == found), None)
        hint = f"set teacher.kind: {other}" if other else f"the kinds supported are {supported_kinds()}"
        raise TeacherError(
            f"{folder}: model_index.json names a {found}, but teacher.kind {kind!r} expects a "
            f"{PIPELINE_CLASSES[kind]}; {hint}"
        )
    return index


def load_component(folder: Path, index: dict, name: str):
    """The pipeline component `name` (a sub-folder), loaded with the diffusers or transformers class that
    model_index.json names for it; None where the index lists it as absent."""
    import diffusers
    import transformers

    library, class_name = index.get(name) or (None, None)
    if name in index and class_name is None:
        return None
    module = {"diffusers": diffusers, "transformers": transformers}.get(library)
    component_class = getattr(module, class_name or "", None) if module else None
    if component_class is None:
        raise TeacherError(
            f"{folder}: model_index.json has no loadable component {name!r} (found {index.get(name)}); "
            "expected a diffusers or transformers class"
        )
    try:
        return component_class.from_pretrained(folder, subfolder=name, local_files_only=True)
    except (OSError, ValueError) as err:
        raise TeacherError(f"{folder / name}: could not load the {class_name} ({str(err).splitlines()[0]})") from None


def vae_scale_factor(folder: Path) -> int:
    """Pixels per latent along a side: 2 ** (number of VAE blocks - 1), as diffusers pipelines compute it."""
    config_file = folder / "vae" / "config.json"
    if not config_file.is_file():
        raise TeacherError(f"{folder}: missing vae/config.json; a latent pipeline folder needs its VAE")
    return 2 ** (len(json.loads(config_file.read_text())["block_out_channels"]) - 1)


def load_diffusers_pipeline(reference: dict[str, Any]) -> Denoiser:
    """The denoiser of a pipeline folder of kind reference['kind'] (see PIPELINE_CLASSES), at reference['resolution']
    pixels per side when given (default: the network's own sample size; FLUX 1024)."""
    kind, folder = reference["kind"], Path(reference["path"]).expanduser()
    index = pipeline_index(folder, kind)
    network = load_component(folder, index, NETWORK_FOLDERS[kind])
    scheduler = load_component(folder, index, "scheduler")
    config, factor = network.config, vae_scale_factor(folder)
    resolution = reference.get("resolution")
    if kind in ("sd3", "flux"):
        channels = config.in_channels // 4 if kind == "flux" else config.in_channels
        side = (
            (resolution or FLUX_RESOLUTION) // factor
            if kind == "flux"
            else (resolution // factor if resolution else config.sample_size)
        )
        side = 2 * (side // 2)  # FLUX packs 2x2 patches; SD3 patches by patch_size (2)
        shift = flow_shift(dict(scheduler.config), (side // 2) ** 2)
        train_timesteps = scheduler.config.num_train_timesteps
        denoiser = (
            FluxDenoiser(network, shift, train_timesteps, reference.get("embedded_guidance"))
            if kind == "flux"
            else SD3Denoiser(network, shift, train_timesteps)
        )
    else:
        denoiser_class = {"stable_diffusion": LatentDenoiser, "sdxl": SDXLDenoiser, "dit": DiTDenoiser}[kind]
        denoiser = denoiser_class(
            network, scheduler.alphas_cumprod, scheduler.config.prediction_type, dict(scheduler.config)
        )
        channels = config.in_channels
        side = resolution // factor if resolution else config.sample_size
    denoiser.scheduler_config = dict(scheduler.config)
    denoiser.sample_shape = (channels, side, side)
    if kind == "dit":
        denoiser.num_classes = int(config.num_embeds_ada_norm)
        denoiser.uncond = torch.tensor([denoiser.num_classes])  # the null class DiTPipeline guides with
    return denoiser


def save_one_step_scheduler(folder: Path, denoiser: Denoiser, sigma: float) -> None:
    """`one_step_scheduler`'s config, saved in `folder`."""
    one_step_scheduler(denoiser, sigma).save_pretrained(folder)


def one_step_scheduler(denoiser: Denoiser, sigma: float):
    """The scheduler with which the family's stock pipeline takes a one-step generator's single step.

    Discrete teachers: DDIM with 'leading' spacing offset to the generator's timestep (or 'trailing', at the last
    timestep) and alpha 1 after it, so num_inference_steps=1 evaluates the network once at that timestep and returns
    its x0. Flow teachers: their own
    FlowMatchEulerDiscreteScheduler; the pipeline is called with sigmas=[1 - 1 / num_train_timesteps] (the unshifted
    time of the generator's sigma), whose Euler step to 0 returns x_t - t v.
    """
    import diffusers

    config = dict(denoiser.scheduler_config)
    if isinstance(denoiser, FlowMatchDenoiser):
        return diffusers.FlowMatchEulerDiscreteScheduler.from_config(config)
    timestep = int(round(float(denoiser.timestep(torch.tensor([sigma]))[0])))
    # the last training timestep by 'trailing' spacing: StableDiffusionPipeline resets any steps_offset but 1
    spacing = (
        {"timestep_spacing": "trailing"}
        if timestep == config["num_train_timesteps"] - 1
        else {"timestep_spacing": "leading", "steps_offset": timestep}
    )
    return diffusers.DDIMScheduler.from_config({**config, **spacing, "set_alpha_to_one": True, "clip_sample": False})


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
            raise TeacherError(
                f"{folder}: missing "
                f"{required.relative_to(folder) if folder in required.parents else required}; {expected}"
            )
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
