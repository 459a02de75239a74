"""LTX-Video (`LTXPipeline`): a flow-matching `LTXVideoTransformer3DModel` on `AutoencoderKLLTXVideo` latents
[channels, frames, height, width] (packed into tokens for the transformer), its times shifted by the clip's token
count (dynamic shifting), prompted through T5's last hidden states with their attention mask (128 tokens)."""

from __future__ import annotations

import json

import torch

from dmdlib.denoisers.flow import flow_shift
from dmdlib.denoisers.video_transformers import LTXDenoiser
from dmdlib.teachers.diffusers import load_network_and_scheduler, unipc_one_step_scheduler
from dmdlib.teachers.family import Family
from dmdlib.teachers.latents import VideoDecoder

TOKENS = 128  # LTXPipeline's default max_sequence_length
FRAMES, RESOLUTION, FRAME_RATE = 161, 512, 25  # LTXPipeline's defaults: clip length, height, frame rate


def compression(vae: dict) -> tuple[int, int]:
    """(temporal, spatial) compression of an AutoencoderKLLTXVideo config, as the VAE computes it."""
    scaled = sum(vae.get("spatio_temporal_scaling", (True, True, True, False)))
    spatial = vae.get("spatial_compression_ratio") or vae.get("patch_size", 4) * 2**scaled
    return vae.get("temporal_compression_ratio") or vae.get("patch_size_t", 1) * 2**scaled, spatial


def load(reference) -> LTXDenoiser:
    folder, network, scheduler = load_network_and_scheduler(reference, FAMILY)
    temporal, spatial = compression(json.loads((folder / "vae" / "config.json").read_text()))
    side = (reference.resolution or RESOLUTION) // spatial
    frames = ((reference.frames or FRAMES) - 1) // temporal + 1
    config = dict(scheduler.config)
    shift = flow_shift(config, frames * side * side)  # exp(mu) of the clip's token count, as LTXPipeline computes mu
    denoiser = LTXDenoiser(
        network,
        shift,
        config["num_train_timesteps"],
        rope_scale=(temporal / FRAME_RATE, spatial, spatial),
        text_tokens=TOKENS,
    )
    # what a FlowMatch sampler needs for its pairs: the clip's shift, fixed
    denoiser.scheduler_config = {**config, "shift": shift, "use_dynamic_shifting": False}
    denoiser.sample_shape = (network.config.in_channels, frames, side, side)
    denoiser.video_size = ((frames - 1) * temporal + 1, side * spatial, side * spatial)  # frames, height, width
    return denoiser


def encode_prompts(encoder, prompts: list[str]):
    """T5's last hidden states (computed without the mask, as LTXPipeline does) and the mask, as extras."""
    inputs = encoder.tokenizers[0](
        prompts,
        padding="max_length",
        max_length=TOKENS,
        truncation=True,
        add_special_tokens=True,
        return_tensors="pt",
    )
    return encoder.text_encoders[0](inputs.input_ids)[0].float(), inputs.attention_mask.float()


def decoder(vae) -> VideoDecoder:
    """LTXPipeline's decoding: latents * std / scaling_factor + mean, per channel, then the VAE (at timestep 0 when
    it is timestep-conditioned, LTXPipeline's default decode_timestep)."""
    mean, std = vae.latents_mean.view(1, -1, 1, 1, 1), vae.latents_std.view(1, -1, 1, 1, 1)
    scale = vae.config.scaling_factor

    def to_vae(latents: torch.Tensor) -> torch.Tensor:
        return latents * std.to(latents.device) / scale + mean.to(latents.device)

    video_decoder = VideoDecoder(vae, to_vae)
    if vae.config.timestep_conditioning:
        video_decoder.decode_options = lambda latents: {"temb": torch.zeros(len(latents), device=latents.device)}
    return video_decoder


FAMILY = Family(
    kind="ltx",
    summary="an LTXPipeline folder (LTX-Video 0.9.x)",
    load=load,
    pipeline_class="LTXPipeline",
    network_folder="transformer",
    text_encoders=("",),
    encode_prompts=encode_prompts,
    one_step_scheduler=unipc_one_step_scheduler,
    decoder=decoder,
    latent=True,
    video=True,
    export_call='pipe("a prompt", num_inference_steps=1, guidance_scale=1.0, num_frames={frames}, height={height}, '
    "width={width})",
    options=("resolution", "frames"),
)
