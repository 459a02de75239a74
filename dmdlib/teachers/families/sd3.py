"""Stable Diffusion 3 (`StableDiffusion3Pipeline`): a rectified-flow transformer prompted through both CLIPs'
penultimate states, zero-padded to T5's width and followed by T5's tokens, with both pooled projections."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dmdlib.denoisers.flow import flow_shift
from dmdlib.denoisers.flow_transformers import SD3Denoiser
from dmdlib.teachers.diffusers import load_network_and_scheduler, one_step_scheduler, vae_scale_factor
from dmdlib.teachers.family import Family

T5_TOKENS = 256  # StableDiffusion3Pipeline's default max_sequence_length


def load(reference) -> SD3Denoiser:
    folder, network, scheduler = load_network_and_scheduler(reference, FAMILY)
    side = reference.resolution // vae_scale_factor(folder) if reference.resolution else network.config.sample_size
    side = 2 * (side // 2)  # patches of patch_size (2)
    shift = flow_shift(dict(scheduler.config), (side // 2) ** 2)
    denoiser = SD3Denoiser(network, shift, scheduler.config.num_train_timesteps)
    denoiser.scheduler_config = dict(scheduler.config)
    denoiser.sample_shape = (network.config.in_channels, side, side)
    return denoiser


def encode_prompts(encoder, prompts: list[str]):
    t5 = encoder.text_encoders[2](encoder.tokens(2, prompts, T5_TOKENS))[0].float()
    (first, pooled_1), (second, pooled_2) = encoder.clip_penultimate(0, prompts), encoder.clip_penultimate(1, prompts)
    clip = torch.cat([first, second], dim=-1).float()
    tokens = torch.cat([F.pad(clip, (0, t5.shape[-1] - clip.shape[-1])), t5], dim=-2)
    return tokens, torch.cat([pooled_1, pooled_2], -1).float()


FAMILY = Family(
    kind="sd3",
    summary="a StableDiffusion3Pipeline folder",
    load=load,
    pipeline_class="StableDiffusion3Pipeline",
    network_folder="transformer",
    text_encoders=("", "_2", "_3"),
    encode_prompts=encode_prompts,
    latent=True,
    one_step_scheduler=one_step_scheduler,
    export_call='pipe("a prompt", num_inference_steps=1, guidance_scale=1.0, sigmas=[{time}])',
    options=("resolution",),
)
