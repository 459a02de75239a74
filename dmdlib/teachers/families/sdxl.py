"""SDXL (`StableDiffusionXLPipeline`): a latent UNet on a DDPM schedule, prompted through both CLIP encoders'
penultimate hidden states side by side, the second's pooled projection and the size / crop ids."""

from __future__ import annotations

import torch

from dmdlib.denoisers.discrete import SDXLDenoiser
from dmdlib.denoisers.text_condition import pack
from dmdlib.teachers.diffusers import discrete_pipeline_teacher, one_step_scheduler
from dmdlib.teachers.family import Family


def time_ids(encoder, count: int) -> torch.Tensor:
    """Original size, crop corner and target size, all the sampled image's (StableDiffusionXLPipeline's default)."""
    side = encoder.pixels_per_side
    return torch.tensor([[side, side, 0, 0, side, side]], dtype=torch.float32).expand(count, -1)


def encode_prompts(encoder, prompts: list[str]):
    (first, _), (second, pooled) = encoder.clip_penultimate(0, prompts), encoder.clip_penultimate(1, prompts)
    return torch.cat([first, second], dim=-1).float(), torch.cat([pooled.float(), time_ids(encoder, len(prompts))], 1)


def negative(encoder) -> torch.Tensor:
    """Zeros where the folder sets force_zeros_for_empty_prompt (as the stock SDXL checkpoints are saved), else the
    empty prompt's embeddings."""
    tokens, extras = encode_prompts(encoder, [""])
    if encoder.index.get("force_zeros_for_empty_prompt", True):
        tokens, extras = (
            torch.zeros_like(tokens),
            torch.cat([torch.zeros_like(extras[:, :-6]), time_ids(encoder, 1)], 1),
        )
    return pack(tokens, extras)


FAMILY = Family(
    kind="sdxl",
    summary="a StableDiffusionXLPipeline folder",
    load=lambda reference: discrete_pipeline_teacher(reference, FAMILY, SDXLDenoiser),
    pipeline_class="StableDiffusionXLPipeline",
    network_folder="unet",
    text_encoders=("", "_2"),
    encode_prompts=encode_prompts,
    negative_prompt=negative,
    latent=True,
    one_step_scheduler=one_step_scheduler,
    export_call='pipe("a prompt", num_inference_steps=1, guidance_scale=1.0)',
    options=("resolution",),
)
