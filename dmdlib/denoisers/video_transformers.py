"""The video transformers of diffusers behind the denoiser interface, each called as its pipeline calls it: Wan and
LTX-Video (flow matching, latents [channels, frames, height, width]) and CogVideoX (v-prediction on a DDPM schedule,
latents [frames, channels, height, width])."""

from __future__ import annotations

import types

import torch
from torch import nn

from dmdlib.denoisers.discrete import DiscreteDenoiser
from dmdlib.denoisers.flow import FlowMatchDenoiser
from dmdlib.denoisers.text_condition import unpack


def _needs(cond: torch.Tensor | None, name: str) -> torch.Tensor:
    if cond is None:
        raise ValueError(f"{name} needs `cond`: the packed prompt embeddings from the prompts stage")
    return cond


def integer_timestep(t: torch.Tensor, train_timesteps: int) -> torch.Tensor:
    """t * 1000 cast to an integer toward zero, as UniPC and DPM-Solver with flow sigmas pass it: the timestep the
    exported pipeline's one-step scheduler (`unipc_one_step_scheduler`) gives the network."""
    return (t.double() * train_timesteps).long()


class WanDenoiser(FlowMatchDenoiser):
    """`WanTransformer3DModel` as WanPipeline calls it: latents [batch, channels, frames, height, width], the integer
    timestep its UniPC scheduler passes, UMT5 token embeddings (zero past each prompt)."""

    def call_model(self, x_t, t, cond):
        tokens = _needs(cond, "Wan").to(x_t.dtype)
        timestep = integer_timestep(t, self.train_timesteps)
        return self.network(hidden_states=x_t, timestep=timestep, encoder_hidden_states=tokens).sample

    def enable_gradient_checkpointing(self) -> None:
        self.network.enable_gradient_checkpointing()


class LTXDenoiser(FlowMatchDenoiser):
    """`LTXVideoTransformer3DModel` as LTXPipeline calls it: latents packed into tokens [batch, frames * height *
    width, channels], T5 tokens with their attention mask (packed after them as the extras), and the rotary
    positions' scale from the VAE's compression and the frame rate. The timestep is an integer, as UniPC passes it
    (`integer_timestep`): LTXPipeline's own Euler ladder cannot start at the generator's time, the export's UniPC can
    (its default Euler passes t * 1000 unrounded, a difference below one of its 1000 training steps)."""

    def __init__(
        self,
        network: nn.Module,
        shift: float,
        train_timesteps: int,
        rope_scale: tuple[float, float, float],
        text_tokens: int,
    ):
        super().__init__(network, shift, train_timesteps)
        self.rope_scale, self.text_tokens = tuple(rope_scale), text_tokens

    def call_model(self, x_t, t, cond):
        tokens, mask = unpack(_needs(cond, "LTX-Video"), self.text_tokens)
        batch, channels, frames, height, width = x_t.shape
        packed = x_t.permute(0, 2, 3, 4, 1).reshape(batch, frames * height * width, channels)
        output = self.network(
            hidden_states=packed,
            encoder_hidden_states=tokens.to(x_t.dtype),
            timestep=integer_timestep(t, self.train_timesteps),
            encoder_attention_mask=mask.round(),
            num_frames=frames,
            height=height,
            width=width,
            rope_interpolation_scale=self.rope_scale,
        ).sample
        return output.reshape(batch, frames, height, width, channels).permute(0, 4, 1, 2, 3)

    def enable_gradient_checkpointing(self) -> None:
        self.network.enable_gradient_checkpointing()


class CogVideoXDenoiser(DiscreteDenoiser):
    """`CogVideoXTransformer3DModel` as CogVideoXPipeline calls it: latents [batch, frames, channels, height, width],
    the timestep, T5 token embeddings and (CogVideoX 1.5, 5B) rotary position embeddings of the video's size in
    pixels (`pixels_per_latent` per latent along a side)."""

    def __init__(self, network: nn.Module, *args, pixels_per_latent: int, **kwargs):
        super().__init__(network, *args, **kwargs)
        self.pixels_per_latent = pixels_per_latent

    def rotary_embeddings(self, frames: int, height: int, width: int, device: torch.device):
        if not self.network.config.use_rotary_positional_embeddings:
            return None
        from diffusers import CogVideoXPipeline

        # the pipeline's own method reads only its transformer's config and VAE factor
        owner = types.SimpleNamespace(transformer=self.network, vae_scale_factor_spatial=self.pixels_per_latent)
        pixels = self.pixels_per_latent
        return CogVideoXPipeline._prepare_rotary_positional_embeddings(
            owner, height * pixels, width * pixels, frames, device
        )

    def call_model(self, x_t, t, cond):
        tokens = _needs(cond, "CogVideoX").to(x_t.dtype)
        batch, frames, channels, height, width = x_t.shape
        return self.network(
            hidden_states=x_t,
            encoder_hidden_states=tokens,
            timestep=t,
            image_rotary_emb=self.rotary_embeddings(frames, height, width, x_t.device),
        ).sample

    def bottleneck(self) -> nn.Module:
        return super(DiscreteDenoiser, self).bottleneck()

    def time_embedding(self) -> tuple[nn.Module, int]:
        return super(DiscreteDenoiser, self).time_embedding()
