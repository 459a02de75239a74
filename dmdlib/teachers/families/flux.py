"""FLUX.1 (`FluxPipeline`): a rectified-flow transformer on 2x2-packed latents, shifted by resolution, prompted through
T5's tokens and CLIP's pooled output; FLUX.1-dev takes its guidance scale through an embedding."""

from __future__ import annotations

from dmdlib.denoisers.flow import flow_shift
from dmdlib.denoisers.flow_transformers import FluxDenoiser
from dmdlib.teachers.diffusers import load_network_and_scheduler, one_step_scheduler, vae_scale_factor
from dmdlib.teachers.family import Family

T5_TOKENS = 512  # FluxPipeline's default max_sequence_length
RESOLUTION = 1024  # FluxPipeline's default image side (its transformer config names none)


def load(reference) -> FluxDenoiser:
    folder, network, scheduler = load_network_and_scheduler(reference, FAMILY)
    side = 2 * ((reference.resolution or RESOLUTION) // vae_scale_factor(folder) // 2)  # packed as 2x2 patches
    denoiser = FluxDenoiser(
        network,
        flow_shift(dict(scheduler.config), (side // 2) ** 2),
        scheduler.config.num_train_timesteps,
        reference.embedded_guidance,
    )
    denoiser.scheduler_config = dict(scheduler.config)
    denoiser.sample_shape = (network.config.in_channels // 4, side, side)
    return denoiser


def encode_prompts(encoder, prompts: list[str]):
    t5 = encoder.text_encoders[1](encoder.tokens(1, prompts, T5_TOKENS))[0].float()
    return t5, encoder.text_encoders[0](encoder.tokens(0, prompts)).pooler_output.float()


FAMILY = Family(
    kind="flux",
    summary="a FluxPipeline folder",
    load=load,
    pipeline_class="FluxPipeline",
    network_folder="transformer",
    text_encoders=("", "_2"),
    encode_prompts=encode_prompts,
    latent=True,
    one_step_scheduler=one_step_scheduler,
    export_call='pipe("a prompt", num_inference_steps=1, guidance_scale={guidance}, sigmas=[{time}])',
    options=("resolution", "embedded_guidance"),
)
