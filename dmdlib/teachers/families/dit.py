"""DiT (`DiTPipeline`): a class-conditional latent transformer on a DDPM schedule; its null class serves guidance."""

from __future__ import annotations

import torch

from dmdlib.denoisers.discrete import DiTDenoiser
from dmdlib.teachers.diffusers import discrete_pipeline_teacher, one_step_scheduler
from dmdlib.teachers.family import Family


def load(reference) -> DiTDenoiser:
    denoiser = discrete_pipeline_teacher(reference, FAMILY, DiTDenoiser)
    denoiser.num_classes = int(denoiser.network.config.num_embeds_ada_norm)
    denoiser.uncond = torch.tensor([denoiser.num_classes])  # the null class DiTPipeline guides with
    return denoiser


FAMILY = Family(
    kind="dit",
    summary="a DiTPipeline folder",
    load=load,
    pipeline_class="DiTPipeline",
    network_folder="transformer",
    latent=True,
    one_step_scheduler=one_step_scheduler,
    export_call="pipe([207, 360], num_inference_steps=1, guidance_scale=1.0)",
    options=("resolution",),
)
