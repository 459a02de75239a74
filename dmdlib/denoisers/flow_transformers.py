"""The flow-matching transformers of diffusers behind `FlowMatchDenoiser`: SD3 and FLUX, each called as its pipeline
calls it."""

from __future__ import annotations

import torch
from torch import nn

from dmdlib.denoisers.flow import FlowMatchDenoiser
from dmdlib.denoisers.text_condition import unpack


class _TextFlowDenoiser(FlowMatchDenoiser):
    """A text-conditioned flow transformer: `cond` packs token embeddings and the pooled projection
    (`text_condition`)."""

    pooled_width: int

    def split_cond(self, cond: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if cond is None:
            raise ValueError(f"{type(self).__name__} needs `cond`: the packed prompt embeddings from the prompts stage")
        return unpack(cond, self.pooled_width)

    def enable_gradient_checkpointing(self) -> None:
        self.network.enable_gradient_checkpointing()


class SD3Denoiser(_TextFlowDenoiser):
    """`SD3Transformer2DModel`: timestep t * 1000, CLIP + T5 tokens, pooled CLIP projections
    (StableDiffusion3Pipeline)."""

    def __init__(self, network: nn.Module, shift: float, train_timesteps: int):
        super().__init__(network, shift, train_timesteps)
        self.pooled_width = network.config.pooled_projection_dim

    def call_model(self, x_t, t, cond):
        tokens, pooled = self.split_cond(cond)
        return self.network(
            hidden_states=x_t,
            timestep=t * self.train_timesteps,
            encoder_hidden_states=tokens,
            pooled_projections=pooled,
        ).sample


class FluxDenoiser(_TextFlowDenoiser):
    """`FluxTransformer2DModel` as FluxPipeline calls it: latents packed into 2x2 patches with their position ids,
    timestep t, T5 tokens, pooled CLIP embedding, and (FLUX.1-dev) the guidance scale as an embedding input.

    `guidance` is the scale given to that input: `teacher.embedded_guidance` for the generator and fake denoiser;
    `guidance.EmbeddedGuidance` gives the real denoiser its own.
    """

    def __init__(self, network: nn.Module, shift: float, train_timesteps: int, guidance: float | None):
        super().__init__(network, shift, train_timesteps)
        self.pooled_width = network.config.pooled_projection_dim
        self.guidance = guidance if network.config.guidance_embeds else None

    def call_model(self, x_t, t, cond, guidance: float | None = None):
        from diffusers import FluxPipeline

        tokens, pooled = self.split_cond(cond)
        batch, channels, height, width = x_t.shape
        packed = FluxPipeline._pack_latents(x_t, batch, channels, height, width)
        image_ids = FluxPipeline._prepare_latent_image_ids(batch, height // 2, width // 2, x_t.device, x_t.dtype)
        text_ids = torch.zeros(tokens.shape[1], 3, device=x_t.device, dtype=x_t.dtype)
        scale = self.guidance if guidance is None else guidance
        guidance_input = None if self.guidance is None else torch.full((batch,), float(scale), device=x_t.device)
        velocity = self.network(
            hidden_states=packed,
            timestep=t,
            guidance=guidance_input,
            pooled_projections=pooled,
            encoder_hidden_states=tokens,
            txt_ids=text_ids,
            img_ids=image_ids,
        ).sample
        # FluxPipeline._unpack_latents works in pixels (it divides by the VAE factor); here the sizes are latent ones
        velocity = velocity.view(batch, height // 2, width // 2, channels, 2, 2).permute(0, 3, 1, 4, 2, 5)
        return velocity.reshape(batch, channels, height, width)
