"""Teachers saved as diffusers folders (`save_pretrained` layout): the helpers every pipeline family's loader uses
(`dmdlib.teachers.families`), and the DDPM `UNet2DModel` folder.

A pipeline family checks the pipeline class in model_index.json, loads the network and scheduler the folder names with
diffusers' own classes (nothing downloaded, no remote code) and wraps them in the denoiser of its family.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from dmdlib.denoisers import Denoiser
from dmdlib.denoisers.discrete import DDPMDenoiser, DiscreteDenoiser
from dmdlib.denoisers.flow import FlowMatchDenoiser
from dmdlib.errors import TeacherError
from dmdlib.teachers.family import Family


def pipeline_index(folder: str | os.PathLike, family: Family, kinds: dict[str, str] | None = None) -> dict[str, Any]:
    """model_index.json of a diffusers pipeline folder, checked to be `family`'s pipeline class; `kinds` (pipeline
    class -> teacher.kind) lets the error name the kind that reads the folder instead."""
    folder = Path(folder).expanduser()
    index_file = folder / "model_index.json"
    known = f"; kinds for diffusers folders: {', '.join(f'{k} ({c})' for c, k in kinds.items())}" if kinds else ""
    if not index_file.is_file():
        found = sorted(p.name for p in folder.iterdir())[:12] if folder.is_dir() else "no such folder"
        raise TeacherError(
            f"{folder}: not a diffusers pipeline folder (no model_index.json; found {found}); teacher.kind "
            f"{family.kind!r} expects a {family.pipeline_class} saved with save_pretrained (download it beforehand, "
            f"e.g. `huggingface-cli download REPO --local-dir FOLDER`){known}"
        )
    index = json.loads(index_file.read_text())
    found = index.get("_class_name")
    if found != family.pipeline_class:
        hint = f"; set teacher.kind: {kinds[found]}" if kinds and found in kinds else known
        raise TeacherError(
            f"{folder}: model_index.json names a {found}, but teacher.kind {family.kind!r} expects a "
            f"{family.pipeline_class}{hint}"
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


def load_network_and_scheduler(reference, family: Family) -> tuple[Path, Any, Any]:
    """(folder, network, scheduler) of a pipeline folder of `family`, checked against its model_index.json."""
    folder = Path(reference.path).expanduser()
    index = pipeline_index(folder, family)
    return folder, load_component(folder, index, family.network_folder), load_component(folder, index, "scheduler")


def discrete_pipeline_teacher(reference, family: Family, denoiser_class: type[DiscreteDenoiser]) -> DiscreteDenoiser:
    """A UNet or DiT pipeline on a DDPM-style schedule (SD v1.5, SDXL, DiT), at reference.resolution pixels per side
    (default: the network's own sample size)."""
    folder, network, scheduler = load_network_and_scheduler(reference, family)
    denoiser = denoiser_class(
        network, scheduler.alphas_cumprod, scheduler.config.prediction_type, dict(scheduler.config)
    )
    resolution = reference.resolution
    side = resolution // vae_scale_factor(folder) if resolution else network.config.sample_size
    denoiser.sample_shape = (network.config.in_channels, side, side)
    return denoiser


def one_step_scheduler(denoiser: Denoiser, sigma: float, ddim_class: str = "DDIMScheduler"):
    """The scheduler with which the family's stock pipeline takes a one-step generator's single step.

    Discrete teachers: DDIM (or the family's own DDIM, `ddim_class`) with 'leading' spacing offset to the generator's
    timestep (or 'trailing', at the last timestep) and alpha 1 after it, so num_inference_steps=1 evaluates the
    network once at that timestep and returns its x0. Flow teachers: their own FlowMatchEulerDiscreteScheduler; the
    pipeline is called with sigmas=[1 - 1 / num_train_timesteps] (the unshifted time of the generator's sigma), whose
    Euler step to 0 returns x_t - t v.
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
    ddim = getattr(diffusers, ddim_class)
    return ddim.from_config({**config, **spacing, "set_alpha_to_one": True, "clip_sample": False})


def unipc_one_step_scheduler(denoiser: FlowMatchDenoiser, sigma: float):
    """For video flow teachers whose pipelines take no custom times (Wan, LTX-Video): UniPC with flow sigmas on a
    one-sigma Karras ladder at the generator's sigma. Its step evaluates the network at t = sigma / (1 + sigma)
    (timestep int(1000 t), as the family's denoiser passes it) and returns x_t - t v; the pipelines' default ladders
    start at t = 1 (or 1 - 1e-6), another time than the generator's."""
    import diffusers

    config = {
        key: value for key, value in denoiser.scheduler_config.items() if key not in ("shift", "use_dynamic_shifting")
    }
    config.update(
        use_flow_sigmas=True,
        use_karras_sigmas=True,
        sigma_max=float(sigma),
        sigma_min=denoiser.sigma_min,
        final_sigmas_type="zero",
        prediction_type="flow_prediction",
    )
    return diffusers.UniPCMultistepScheduler.from_config(config)


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
