"""A distilled generator as a model other tools load: a stock diffusers pipeline folder for every family diffusers has
a pipeline for, else the generator folder itself; each with a model card."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable

from dmdlib.data.io import atomic_output
from dmdlib.errors import DataError
from dmdlib.generators.generator import generator_reference, load_generator
from dmdlib.teachers.families import family_of


def export_generator(generator_folder: str | os.PathLike, out: str | os.PathLike, card: Callable[[str], str]) -> str:
    """Write `out` (atomically) with `card(how it loads)` as its README.md; return how it loads.

    Families with a stock pipeline (their `export_call`): the teacher's pipeline with the generator's network and
    the one-step scheduler (its family's `one_step_scheduler`), saved by diffusers itself (safetensors,
    model_index.json), so `DiffusionPipeline.from_pretrained(out)` makes the generator's images. A one-step generator
    without a guidance input only: the stock pipelines have no input for either. Other kinds (k-diffusion, EDM,
    EDM2) have no diffusers pipeline: the generator folder is copied, loaded with `load_generator`.
    """
    reference, generator = generator_reference(generator_folder), load_generator(generator_folder)
    family = family_of(reference.kind)
    with atomic_output(out) as tmp:
        if family.export_call is None:
            shutil.copytree(generator_folder, tmp)
            how = "from dmdlib.generators.generator import load_generator; generator = load_generator(folder)"
        else:
            if len(generator.sigmas) > 1 or generator.guidance is not None:
                raise DataError(
                    f"{generator_folder}: a {len(generator.sigmas)}-step generator"
                    f"{' with a guidance input' if generator.guidance is not None else ''} has no stock "
                    f"{family.pipeline_class} form (it takes one step and a fixed guidance); sample it with "
                    "`dmd sample`"
                )
            pipeline = _diffusers_pipeline(generator, reference)
            pipeline.save_pretrained(tmp, safe_serialization=True)
            # flow families: the generator's time, 1 - 1 / num_train_timesteps, before the shift; FLUX: its guidance
            frames, height, width = getattr(generator.denoiser, "video_size", (None, None, None))
            call = family.export_call.format(
                time=1 - 1 / pipeline.scheduler.config.num_train_timesteps,
                guidance=reference.embedded_guidance or 1.0,
                frames=frames,
                height=height,
                width=width,
            )
            how = f"pipe = DiffusionPipeline.from_pretrained(folder); {call}"
        (tmp / "README.md").write_text(card(how))
    return how


def _diffusers_pipeline(generator, reference):
    """The family's stock pipeline around the generator's network, with the teacher's other components."""
    import diffusers

    denoiser, family = generator.denoiser, family_of(reference.kind)
    scheduler = family.one_step_scheduler(denoiser, generator.sigma)
    if family.network_folder is None:  # DDPM: a bare UNet folder
        if denoiser.num_classes:
            raise DataError(
                "a class-conditional DDPM generator has no stock DDPMPipeline form (it takes no class labels); "
                "load it with dmdlib's load_generator or sample it with `dmd sample`"
            )
        return diffusers.DDPMPipeline(unet=denoiser.network, scheduler=scheduler)
    pipeline_class = getattr(diffusers, family.pipeline_class)
    network = {family.network_folder: denoiser.network}
    return pipeline_class.from_pretrained(reference.path, local_files_only=True, scheduler=scheduler, **network)
