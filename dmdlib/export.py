"""A distilled generator as a model other tools load: a stock diffusers pipeline folder for every family diffusers has
a pipeline for, else the generator folder itself; each with a model card."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from dmdlib.data.io import atomic_output
from dmdlib.errors import DataError
from dmdlib.generators.generator import generator_reference, load_generator
from dmdlib.teachers.diffusers import NETWORK_FOLDERS, PIPELINE_CLASSES, one_step_scheduler

# how each family's stock pipeline takes the generator's one step (the README's and the model card's call)
PIPELINE_CALLS = {
    "diffusers_ddpm": "pipe(num_inference_steps=1, generator=torch.Generator().manual_seed(0))",
    "stable_diffusion": 'pipe("a prompt", num_inference_steps=1, guidance_scale=1.0)',
    "sdxl": 'pipe("a prompt", num_inference_steps=1, guidance_scale=1.0)',
    "dit": "pipe([207, 360], num_inference_steps=1, guidance_scale=1.0)",
    "sd3": 'pipe("a prompt", num_inference_steps=1, guidance_scale=1.0, sigmas=[{time}])',
    "flux": 'pipe("a prompt", num_inference_steps=1, guidance_scale={guidance}, sigmas=[{time}])',
}  # flow families: the generator's time, 1 - 1 / num_train_timesteps, before the shift; FLUX: its embedded guidance


def export_generator(generator_folder: str | os.PathLike, out: str | os.PathLike, card: Callable[[str], str]) -> str:
    """Write `out` (atomically) with `card(how it loads)` as its README.md; return how it loads.

    Diffusers families (`PIPELINE_CALLS`): the teacher's pipeline with the generator's network and the one-step
    scheduler (`one_step_scheduler`), saved by diffusers itself (safetensors, model_index.json), so
    `DiffusionPipeline.from_pretrained(out)` makes the generator's images. A one-step generator without a guidance
    input only: the stock pipelines have no input for either. Other kinds (k-diffusion, EDM, EDM2) have no
    diffusers pipeline: the generator folder is copied, loaded with `load_generator`.
    """
    reference, generator = generator_reference(generator_folder), load_generator(generator_folder)
    kind = reference["kind"]
    with atomic_output(out) as tmp:
        if kind not in PIPELINE_CALLS:
            shutil.copytree(generator_folder, tmp)
            how = "from dmdlib.generators.generator import load_generator; generator = load_generator(folder)"
        else:
            if len(generator.sigmas) > 1 or generator.guidance is not None:
                raise DataError(
                    f"{generator_folder}: a {len(generator.sigmas)}-step generator"
                    f"{' with a guidance input' if generator.guidance is not None else ''} has no stock "
                    f"{_pipeline_class(kind)} form (it takes one step and a fixed guidance); sample it with "
                    "`dmd sample`"
                )
            pipeline = _diffusers_pipeline(generator, reference)
            pipeline.save_pretrained(tmp, safe_serialization=True)
            call = PIPELINE_CALLS[kind].format(
                time=1 - 1 / pipeline.scheduler.config.num_train_timesteps,
                guidance=reference.get("embedded_guidance") or 1.0,
            )
            how = f"pipe = DiffusionPipeline.from_pretrained(folder); {call}"
        (tmp / "README.md").write_text(card(how))
    return how


def _pipeline_class(kind: str) -> str:
    return "DDPMPipeline" if kind == "diffusers_ddpm" else PIPELINE_CLASSES[kind]


def _diffusers_pipeline(generator, reference: dict):
    """The family's stock pipeline around the generator's network, with the teacher's other components."""
    import diffusers

    denoiser = generator.denoiser
    scheduler = one_step_scheduler(denoiser, generator.sigma)
    if reference["kind"] == "diffusers_ddpm":
        if denoiser.num_classes:
            raise DataError(
                "a class-conditional DDPM generator has no stock DDPMPipeline form (it takes no class labels); "
                "load it with dmdlib's load_generator or sample it with `dmd sample`"
            )
        return diffusers.DDPMPipeline(unet=denoiser.network, scheduler=scheduler)
    pipeline_class = getattr(diffusers, PIPELINE_CLASSES[reference["kind"]])
    network = {NETWORK_FOLDERS[reference["kind"]]: denoiser.network}
    return pipeline_class.from_pretrained(reference["path"], local_files_only=True, scheduler=scheduler, **network)
