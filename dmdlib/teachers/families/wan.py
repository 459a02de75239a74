"""Wan 2.1 / 2.2 text-to-video (`WanPipeline`): a flow-matching `WanTransformer3DModel` on `AutoencoderKLWan` latents
[channels, frames, height, width], its times shifted by the scheduler's flow_shift, prompted through UMT5's last
hidden states (zero past each prompt's tokens). The pipeline's own UniPC scheduler, with flow sigmas, takes the
one-step generator's step in the export (`unipc_one_step_scheduler`)."""

from __future__ import annotations

import json

import torch

from dmdlib.denoisers.flow import flow_shift
from dmdlib.denoisers.video_transformers import WanDenoiser
from dmdlib.errors import TeacherError
from dmdlib.teachers.diffusers import load_network_and_scheduler, unipc_one_step_scheduler
from dmdlib.teachers.family import Family
from dmdlib.teachers.latents import VideoDecoder

TOKENS = 512  # WanPipeline's default max_sequence_length
FRAMES, RESOLUTION = 81, 480  # WanPipeline's default clip length; its default height (the side distilled at)


def load(reference) -> WanDenoiser:
    folder, network, scheduler = load_network_and_scheduler(reference, FAMILY)
    index = json.loads((folder / "model_index.json").read_text())
    if (index.get("transformer_2") or [None, None])[1] is not None:
        raise TeacherError(
            f"{folder}: a two-expert Wan 2.2 pipeline (transformer_2, boundary_ratio); distil one expert's folder "
            "(its transformer alone), or a one-transformer Wan 2.1 / Wan 2.2 TI2V-5B pipeline"
        )
    vae = json.loads((folder / "vae" / "config.json").read_text())
    temporal, spatial = vae.get("scale_factor_temporal") or 4, vae.get("scale_factor_spatial") or 8
    config = dict(scheduler.config)
    shift = float(config["flow_shift"]) if "flow_shift" in config else flow_shift(config)
    patch = network.config.patch_size[1]
    side = (reference.resolution or RESOLUTION) // spatial // patch * patch
    frames = ((reference.frames or FRAMES) - 1) // temporal + 1
    denoiser = WanDenoiser(network, shift, config["num_train_timesteps"])
    # what a FlowMatch sampler needs for its pairs: the shift under its own name
    denoiser.scheduler_config = {**config, "shift": shift, "use_dynamic_shifting": False}
    denoiser.sample_shape = (network.config.in_channels, frames, side, side)
    denoiser.video_size = ((frames - 1) * temporal + 1, side * spatial, side * spatial)  # frames, height, width
    return denoiser


def encode_prompts(encoder, prompts: list[str]):
    """UMT5's last hidden states of the cleaned prompts, kept for each prompt's tokens and zero after them."""
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    tokenizer, text_encoder = encoder.tokenizers[0], encoder.text_encoders[0]
    inputs = tokenizer(
        [prompt_clean(p) for p in prompts],
        padding="max_length",
        max_length=TOKENS,
        truncation=True,
        add_special_tokens=True,
        return_attention_mask=True,
        return_tensors="pt",
    )
    hidden = text_encoder(inputs.input_ids, inputs.attention_mask).last_hidden_state.float()
    return hidden * inputs.attention_mask[..., None], None


def decoder(vae) -> VideoDecoder:
    """WanPipeline's decoding: latents * std + mean, per channel, then the VAE."""
    mean = torch.tensor(vae.config.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(vae.config.latents_std).view(1, -1, 1, 1, 1)
    return VideoDecoder(vae, lambda latents: latents * std.to(latents.device) + mean.to(latents.device))


FAMILY = Family(
    kind="wan",
    summary="a WanPipeline folder (Wan 2.1 T2V 1.3B / 14B, Wan 2.2 TI2V 5B)",
    load=load,
    pipeline_class="WanPipeline",
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
