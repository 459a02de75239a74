"""CogVideoX 2B / 5B / 1.5 text-to-video (`CogVideoXPipeline`): a `CogVideoXTransformer3DModel` predicting v on a
DDPM schedule whose SNR is shifted (`snr_shift_scale`, folded into the scheduler's alphas_cumprod), latents
[frames, channels, height, width] of `AutoencoderKLCogVideoX`, prompted through T5's last hidden states (226 tokens).
Its export takes the generator's step with CogVideoX's own DDIM."""

from __future__ import annotations

import json
from functools import partial

from dmdlib.denoisers.video_transformers import CogVideoXDenoiser
from dmdlib.teachers.diffusers import load_network_and_scheduler, one_step_scheduler, vae_scale_factor
from dmdlib.teachers.family import Family
from dmdlib.teachers.latents import VideoDecoder

TOKENS = 226  # CogVideoXPipeline's default max_sequence_length
FRAMES, RESOLUTION = 49, 480  # CogVideoXPipeline's default clip length and height (the side distilled at)


def load(reference) -> CogVideoXDenoiser:
    folder, network, scheduler = load_network_and_scheduler(reference, FAMILY)
    temporal = json.loads((folder / "vae" / "config.json").read_text()).get("temporal_compression_ratio", 4)
    spatial, config = vae_scale_factor(folder), network.config
    side = (reference.resolution or RESOLUTION) // spatial // config.patch_size * config.patch_size
    frames = ((reference.frames or FRAMES) - 1) // temporal + 1
    if config.patch_size_t:  # CogVideoX 1.5: the pipeline pads the latent frames to a multiple of patch_size_t
        frames = -(-frames // config.patch_size_t) * config.patch_size_t
    denoiser = CogVideoXDenoiser(
        network,
        scheduler.alphas_cumprod,
        scheduler.config.prediction_type,
        dict(scheduler.config),
        pixels_per_latent=spatial,
    )
    denoiser.sample_shape = (frames, config.in_channels, side, side)
    denoiser.video_size = ((frames - 1) * temporal + 1, side * spatial, side * spatial)  # frames, height, width
    return denoiser


def encode_prompts(encoder, prompts: list[str]):
    return encoder.text_encoders[0](encoder.tokens(0, prompts, TOKENS))[0].float(), None


def decoder(vae) -> VideoDecoder:
    """CogVideoXPipeline's decoding: frames after channels, divided by the VAE's scaling factor."""
    return VideoDecoder(vae, lambda latents: latents.transpose(1, 2) / vae.config.scaling_factor)


FAMILY = Family(
    kind="cogvideox",
    summary="a CogVideoXPipeline folder (CogVideoX 2B, 5B, 1.5-5B)",
    load=load,
    pipeline_class="CogVideoXPipeline",
    network_folder="transformer",
    text_encoders=("",),
    encode_prompts=encode_prompts,
    one_step_scheduler=partial(one_step_scheduler, ddim_class="CogVideoXDDIMScheduler"),
    decoder=decoder,
    latent=True,
    video=True,
    export_call='pipe("a prompt", num_inference_steps=1, guidance_scale=1.0, num_frames={frames}, height={height}, '
    "width={width})",
    options=("resolution", "frames"),
)
