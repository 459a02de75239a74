"""Stable Diffusion v1.5 (`StableDiffusionPipeline`): a latent UNet on a DDPM schedule, prompted through CLIP's last
hidden states."""

from __future__ import annotations

from dmdlib.denoisers import LatentDenoiser
from dmdlib.teachers.diffusers import discrete_pipeline_teacher, one_step_scheduler
from dmdlib.teachers.family import Family


def encode_prompts(encoder, prompts: list[str]):
    return encoder.text_encoders[0](encoder.tokens(0, prompts))[0].float(), None


FAMILY = Family(
    kind="stable_diffusion",
    summary="a StableDiffusionPipeline folder",
    load=lambda reference: discrete_pipeline_teacher(reference, FAMILY, LatentDenoiser),
    pipeline_class="StableDiffusionPipeline",
    network_folder="unet",
    text_encoders=("",),
    encode_prompts=encode_prompts,
    latent=True,
    one_step_scheduler=one_step_scheduler,
    export_call='pipe("a prompt", num_inference_steps=1, guidance_scale=1.0)',
    options=("resolution",),
)
